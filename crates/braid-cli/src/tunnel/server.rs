//! `braid server`: accepts carrier connections and forwards each stream to the target.

use super::auth::BoxIo;
use super::limits::{self, protocol_name, Throttle};
use super::metrics::Metrics;
use super::pipe::End;
use super::stats::Stats;
use super::{
    accept_until, bind_listener, bind_metrics, drain, io_reason, metrics_addr, pipe_logged,
    spawn_reporting, Error, ServerSettings, CLOSE_BOUND,
};
use braid::{ConnectionError, Protocol, Session, Stream};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// A bound `braid server`; [`Server::run`] serves until shut down.
pub struct Server {
    listener: Listener,
    metrics_listener: Option<TcpListener>,
    settings: ServerSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

/// Where carriers arrive.
enum Listener {
    Tcp(TcpListener),
    Kcp(braid_kcp::KcpListener),
}

/// Refusals (over a limit) are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What every connection and stream task shares.
struct Ctx {
    settings: ServerSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    /// One permit per carrier connection (`--max-sessions`).
    sessions: Arc<Semaphore>,
    /// Fired by the shutdown signal: accept nothing new.
    stop: CancellationToken,
    /// Fired when the grace period is over: cut the streams that are left.
    kill: CancellationToken,
    /// Fired once the streams are cut: close the sessions.
    close: CancellationToken,
    /// Forwarding tasks, waited for during the grace period.
    pipes: TaskTracker,
}

impl Server {
    /// Binds the listening socket (`settings.listen`), and the metrics one if asked.
    pub async fn bind(settings: ServerSettings) -> Result<Server, Error> {
        let listener = match &settings.kcp {
            None => Listener::Tcp(bind_listener(&settings.listen).await?),
            Some(kcp) => Listener::Kcp(super::kcp::bind(&settings.listen, kcp).await?),
        };
        let metrics_listener = bind_metrics(settings.metrics.as_deref()).await?;
        Ok(Server {
            listener,
            metrics_listener,
            metrics: Arc::new(Metrics::default().with(super::kcp::collector(&settings.kcp))),
            settings,
            stats: Arc::default(),
        })
    }

    /// The address metrics are served on, with `--metrics`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        metrics_addr(self.metrics_listener.as_ref())
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().expect("a bound listener has an address"),
            Listener::Kcp(l) => l.local_addr(),
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` fires, then stops accepting (new streams on existing
    /// sessions are reset), lets active streams finish for the grace period, cuts the
    /// rest and closes the sessions.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let listen = self.local_addr();
        let Server {
            listener,
            metrics_listener,
            settings,
            stats,
            metrics,
        } = self;
        let ctx = Arc::new(Ctx {
            sessions: Arc::new(Semaphore::new(settings.limits.max_sessions)),
            settings,
            stats,
            metrics,
            stop: shutdown.clone(),
            kill: CancellationToken::new(),
            close: CancellationToken::new(),
            pipes: TaskTracker::new(),
        });
        let s = &ctx.settings;
        info!(%listen, target = %s.target, protocol = ?s.config.protocol,
              auth = s.auth.describe(), limits = ?s.limits, "server started");
        spawn_reporting(
            &ctx.stats,
            s.stats,
            &ctx.metrics,
            metrics_listener,
            s.kcp.as_ref(),
            &ctx.kill,
        );
        let sessions = TaskTracker::new();
        match listener {
            Listener::Tcp(listener) => {
                let mut refusals = Throttle::new(REFUSAL_LOG_EVERY);
                accept_until(listener, &shutdown, &sessions, |tcp, peer| {
                    let permit = ctx.sessions.clone().try_acquire_owned().ok();
                    if permit.is_none() {
                        ctx.metrics.refused_session();
                        let _ = tcp.set_zero_linger();
                        if let Some(more) = refusals.event() {
                            warn!(%peer, "connection refused: already serving --max-sessions {} connections{}",
                                  ctx.settings.limits.max_sessions, also(more));
                        }
                    }
                    let ctx = ctx.clone();
                    async move {
                        if let Some(permit) = permit {
                            serve_connection(tcp, peer, ctx, permit).await;
                        }
                    }
                })
                .await;
            }
            Listener::Kcp(listener) => accept_kcp(listener, &shutdown, &sessions, &ctx).await,
        }
        drain(&ctx.pipes, ctx.settings.grace, &ctx.stats).await;
        // Cut streams first (yamux: RST, so that clients see a cut, not an end), then
        // close the sessions, which flushes the resets.
        ctx.kill.cancel();
        let _ = timeout(CLOSE_BOUND, ctx.pipes.wait()).await;
        ctx.close.cancel();
        sessions.close();
        let _ = timeout(CLOSE_BOUND, sessions.wait()).await;
        info!("server stopped");
        Ok(())
    }
}

/// ", N more since the last report" for a throttled log line.
fn also(more: u64) -> String {
    match more {
        0 => String::new(),
        n => format!(" ({n} more since the last report)"),
    }
}

/// Runs one carrier connection: handshake, session, and a forwarding task per stream
/// (up to `--max-streams` at once).
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    _permit: OwnedSemaphorePermit,
) {
    // A second descriptor keeps the socket open until a failure is counted and logged,
    // so that whoever sees the connection close also sees it in the metrics.
    let hold = tcp.as_fd().try_clone_to_owned().ok();
    let (session, proto) = match start_session(tcp, &ctx).await {
        Ok(started) => started,
        Err(e) => {
            ctx.metrics.handshake_failure();
            warn!(%peer, "connection refused: {e}");
            drop(hold);
            return;
        }
    };
    drop(hold);
    serve_session(session, proto, peer, ctx).await;
}

/// Accepts KCP sessions until `shutdown` (up to `--max-sessions` at once), each served
/// as a carrier.
async fn accept_kcp(
    mut listener: braid_kcp::KcpListener,
    shutdown: &CancellationToken,
    sessions: &TaskTracker,
    ctx: &Arc<Ctx>,
) {
    let mut refusals = Throttle::new(REFUSAL_LOG_EVERY);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            stream = listener.accept() => match stream {
                Ok(stream) => stream,
                Err(_) => return,
            },
        };
        let peer = stream.peer_addr();
        let Ok(permit) = ctx.sessions.clone().try_acquire_owned() else {
            ctx.metrics.refused_session();
            if let Some(more) = refusals.event() {
                warn!(%peer, "session refused: already serving --max-sessions {} sessions{}",
                      ctx.settings.limits.max_sessions, also(more));
            }
            continue;
        };
        let kcp = ctx
            .settings
            .kcp
            .as_ref()
            .expect("a KCP listener has KCP settings");
        let config = ctx.settings.config.clone();
        let proto = protocol_name(config.protocol);
        match super::kcp::session(stream, kcp, config) {
            Ok(session) => {
                let ctx = ctx.clone();
                sessions.spawn(async move {
                    serve_session(session, proto, peer, ctx).await;
                    drop(permit);
                });
            }
            Err(e) => warn!(%peer, "{e}"),
        }
    }
}

/// Serves one carrier session: a forwarding task per stream (up to `--max-streams` at
/// once).
async fn serve_session(session: Session, proto: &'static str, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _gauge = ctx.stats.session();
    let _counted = ctx.metrics.session(proto, &session);
    if ctx.settings.config.protocol == Protocol::Auto {
        info!(%peer, protocol = proto, "session opened (protocol detected: {proto})");
    } else {
        info!(%peer, protocol = proto, "session opened");
    }
    let max_streams = ctx.settings.limits.max_streams;
    let streams = Arc::new(Semaphore::new(max_streams));
    let mut refusals = Throttle::new(REFUSAL_LOG_EVERY);
    let reason = loop {
        let stream = tokio::select! {
            stream = session.accept_stream() => stream,
            _ = ctx.close.cancelled() => {
                let _ = timeout(CLOSE_BOUND, session.close()).await;
                break ConnectionError::LocallyClosed;
            }
        };
        let Some(stream) = stream else {
            break session.closed().await;
        };
        if ctx.stop.is_cancelled() {
            debug!(%peer, stream = stream.id().0, "shutting down: stream reset");
            stream.reset();
            ctx.metrics.refused_stream(proto);
            continue;
        }
        let Ok(permit) = streams.clone().try_acquire_owned() else {
            stream.reset();
            ctx.metrics.refused_stream(proto);
            if let Some(more) = refusals.event() {
                warn!(%peer, "stream refused: already forwarding --max-streams {max_streams} streams for this connection{}", also(more));
            }
            continue;
        };
        let task = forward(stream, session.clone(), peer, proto, ctx.clone());
        ctx.pipes.spawn(async move {
            task.await;
            drop(permit);
        });
    };
    let hint = match ctx.settings.kcp {
        Some(_) => super::kcp::hint(&reason),
        None => "",
    };
    info!(%peer, "session closed: {reason}{hint}");
}

/// The handshake (`--handshake-timeout`), protocol detection under `--proto auto`
/// (`--detect-timeout`), and the session; with the protocol's name.
async fn start_session(tcp: TcpStream, ctx: &Ctx) -> Result<(Session, &'static str), String> {
    let s = &ctx.settings;
    let _ = tcp.set_nodelay(true); // frames are batched already
    let io = s.auth.handshake(tcp, s.limits.handshake_timeout).await?;
    let mut config = s.config.clone();
    let io: BoxIo = if config.protocol == Protocol::Auto {
        let (detected, io) = limits::detect(io, s.limits.detect_timeout).await?;
        config = config.detected(detected);
        super::config::detected_window(&mut config);
        Box::new(io)
    } else {
        io
    };
    let proto = protocol_name(config.protocol);
    let session = Session::server(io, config).map_err(|e| e.to_string())?;
    Ok((session, proto))
}

/// Connects to the target and pipes the stream to it; resets the stream if the target
/// cannot be reached.
async fn forward(
    stream: Stream,
    session: Session,
    peer: SocketAddr,
    proto: &'static str,
    ctx: Arc<Ctx>,
) {
    let s = &ctx.settings;
    let id = stream.id().0;
    let _counted = ctx.metrics.stream(proto);
    let tcp = match timeout(s.connect_timeout, TcpStream::connect(&s.target)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            ctx.metrics.target_failure(proto);
            warn!(%peer, stream = id, "cannot connect to target {}: {}", s.target, io_reason(&e));
            stream.reset();
            return;
        }
        Err(_) => {
            ctx.metrics.target_failure(proto);
            warn!(%peer, stream = id, "target {} did not answer within {:?}", s.target, s.connect_timeout);
            stream.reset();
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    debug!(%peer, stream = id, "forwarding to {}", s.target);
    pipe_logged(
        stream,
        &session,
        tcp,
        End::Server,
        &ctx.stats,
        &ctx.kill,
        peer,
    )
    .await;
}
