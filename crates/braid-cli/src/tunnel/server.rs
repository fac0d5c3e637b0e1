//! `braid server`: accepts carrier connections and forwards each stream to the target.

use super::pipe::{pipe, End};
use super::stats::Stats;
use super::{accept_until, bind_listener, drain, io_reason, Error, ServerSettings, CLOSE_BOUND};
use braid::{ConnectionError, Session, Side, Stream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// A bound `braid server`; [`Server::run`] serves until shut down.
pub struct Server {
    listener: Listener,
    settings: ServerSettings,
    stats: Arc<Stats>,
}

/// Where carriers arrive.
enum Listener {
    Tcp(TcpListener),
    Kcp(braid_kcp::KcpListener),
}

/// What every connection and stream task shares.
struct Ctx {
    settings: ServerSettings,
    stats: Arc<Stats>,
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
    /// Binds the listening socket (`settings.listen`).
    pub async fn bind(settings: ServerSettings) -> Result<Server, Error> {
        let listener = match &settings.kcp {
            None => Listener::Tcp(bind_listener(&settings.listen).await?),
            Some(kcp) => Listener::Kcp(super::kcp::bind(&settings.listen, kcp).await?),
        };
        Ok(Server {
            listener,
            settings,
            stats: Arc::default(),
        })
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
            settings,
            stats,
        } = self;
        let ctx = Arc::new(Ctx {
            settings,
            stats,
            stop: shutdown.clone(),
            kill: CancellationToken::new(),
            close: CancellationToken::new(),
            pipes: TaskTracker::new(),
        });
        let s = &ctx.settings;
        info!(%listen, target = %s.target, protocol = ?s.config.protocol,
              tls = s.tls.is_some(), "server started");
        if let Some(every) = s.stats {
            ctx.stats.spawn_reporter(every, ctx.kill.clone());
        }
        let sessions = TaskTracker::new();
        match listener {
            Listener::Tcp(listener) => {
                accept_until(listener, &shutdown, &sessions, |tcp, peer| {
                    serve_connection(tcp, peer, ctx.clone())
                })
                .await
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

/// Runs one carrier connection: (TLS,) session, and a forwarding task per stream.
async fn serve_connection(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let session = match start_session(tcp, &ctx).await {
        Ok(session) => session,
        Err(e) => {
            warn!(%peer, "{e}");
            return;
        }
    };
    serve_session(session, peer, ctx).await;
}

/// Accepts KCP sessions until `shutdown`, each served as a carrier.
async fn accept_kcp(
    mut listener: braid_kcp::KcpListener,
    shutdown: &CancellationToken,
    sessions: &TaskTracker,
    ctx: &Arc<Ctx>,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            stream = listener.accept() => match stream {
                Ok(stream) => stream,
                Err(_) => return,
            },
        };
        let peer = stream.peer_addr();
        let kcp = ctx
            .settings
            .kcp
            .as_ref()
            .expect("a KCP listener has KCP settings");
        match super::kcp::session(stream, kcp, ctx.settings.config.clone()) {
            Ok(session) => {
                sessions.spawn(serve_session(session, peer, ctx.clone()));
            }
            Err(e) => warn!(%peer, "{e}"),
        }
    }
}

/// Serves one carrier session: a forwarding task per stream.
async fn serve_session(session: Session, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _gauge = ctx.stats.session();
    info!(%peer, "session opened");
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
            debug!(%peer, stream = stream.id(), "shutting down: stream reset");
            stream.reset();
            continue;
        }
        ctx.pipes
            .spawn(forward(stream, session.clone(), peer, ctx.clone()));
    };
    let hint = match ctx.settings.kcp {
        Some(_) => super::kcp::hint(&reason),
        None => "",
    };
    info!(%peer, "session closed: {reason}{hint}");
}

async fn start_session(tcp: TcpStream, ctx: &Ctx) -> Result<Session, String> {
    let config = ctx.settings.config.clone();
    let Some(acceptor) = &ctx.settings.tls else {
        return Session::from_tcp(tcp, config, Side::Server).map_err(|e| e.to_string());
    };
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let tls = match timeout(ctx.settings.connect_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    Session::server(tls, config).map_err(|e| e.to_string())
}

/// Connects to the target and pipes the stream to it; resets the stream if the target
/// cannot be reached.
async fn forward(stream: Stream, session: Session, peer: SocketAddr, ctx: Arc<Ctx>) {
    let s = &ctx.settings;
    let id = stream.id();
    let tcp = match timeout(s.connect_timeout, TcpStream::connect(&s.target)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            warn!(%peer, stream = id, "cannot connect to target {}: {}", s.target, io_reason(&e));
            stream.reset();
            return;
        }
        Err(_) => {
            warn!(%peer, stream = id, "target {} did not answer within {:?}", s.target, s.connect_timeout);
            stream.reset();
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    debug!(%peer, stream = id, "forwarding to {}", s.target);
    match pipe(
        stream,
        &session,
        tcp,
        End::Server,
        ctx.stats.clone(),
        ctx.kill.clone(),
    )
    .await
    {
        Ok(()) => debug!(%peer, stream = id, "stream done"),
        Err(e) => info!(%peer, stream = id, "stream aborted: {e}"),
    }
}
