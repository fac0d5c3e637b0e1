//! `braid client`: carries local TCP connections as streams over carrier connections.

use super::limits::protocol_name;
use super::metrics::Metrics;
use super::pipe::End;
use super::stats::{Gauge, Stats};
use super::{
    accept_until, bind_listener, bind_metrics, drain, io_reason, metrics_addr, pipe_logged,
    spawn_reporting, ClientSettings, Error, CLOSE_BOUND,
};
use braid::{Session, Stream};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// First wait before reconnecting; doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A bound `braid client`; [`Client::run`] serves until shut down.
pub struct Client {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    first: Option<Session>,
    settings: ClientSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
}

/// What every task shares.
struct Ctx {
    settings: ClientSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
    /// Fired by the shutdown signal: accept nothing new, stop reconnecting.
    stop: CancellationToken,
    /// Fired when the grace period is over: cut what is left.
    kill: CancellationToken,
}

impl Client {
    /// Binds the local listener (`settings.listen`) and, unless
    /// `settings.wait_for_server`, makes the first carrier connection, so that an
    /// unreachable server or a TLS mistake is reported at once.
    pub async fn bind(settings: ClientSettings) -> Result<Client, Error> {
        let listener = bind_listener(&settings.listen).await?;
        let metrics_listener = bind_metrics(settings.metrics.as_deref()).await?;
        let first = if settings.wait_for_server {
            None
        } else {
            let session = connect(&settings).await.map_err(|e| {
                Error::Runtime(format!("cannot reach server {}: {e}", settings.server))
            })?;
            Some(session)
        };
        let metrics = Arc::new(Metrics::for_client().with(super::kcp::collector(&settings.kcp)));
        Ok(Client {
            listener,
            metrics_listener,
            first,
            pool: Arc::new(Pool::new(settings.conns)),
            settings,
            stats: Arc::default(),
            metrics,
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
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// How many carrier connections are up, as it changes.
    pub fn carriers(&self) -> watch::Receiver<usize> {
        self.pool.up.subscribe()
    }

    /// Serves until `shutdown` fires, then stops accepting, lets active connections
    /// finish for the grace period, cuts the rest and closes the carriers.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let listen = self.local_addr();
        let Client {
            listener,
            metrics_listener,
            mut first,
            settings,
            stats,
            metrics,
            pool,
        } = self;
        let ctx = Arc::new(Ctx {
            settings,
            stats,
            metrics,
            pool,
            stop: shutdown.clone(),
            kill: CancellationToken::new(),
        });
        let s = &ctx.settings;
        info!(%listen, server = %s.server, protocol = ?s.config.protocol, conns = s.conns,
              auth = s.auth.describe(), "client started");
        spawn_reporting(
            &ctx.stats,
            s.stats,
            &ctx.metrics,
            metrics_listener,
            s.kcp.as_ref(),
            &ctx.kill,
        );
        let keepers = TaskTracker::new();
        for slot in 0..s.conns {
            keepers.spawn(keep_connected(slot, first.take(), ctx.clone()));
        }
        let pipes = TaskTracker::new();
        accept_until(listener, &shutdown, &pipes, |tcp, peer| {
            carry(tcp, peer, ctx.clone())
        })
        .await;
        drain(&pipes, ctx.settings.grace, &ctx.stats).await;
        ctx.kill.cancel();
        let _ = timeout(CLOSE_BOUND, pipes.wait()).await;
        keepers.close();
        keepers.wait().await;
        let closing = TaskTracker::new();
        for session in ctx.pool.sessions() {
            closing.spawn(async move { session.close().await });
        }
        closing.close();
        let _ = timeout(CLOSE_BOUND, closing.wait()).await;
        info!("client stopped");
        Ok(())
    }
}

/// How long a TLS client waits for the server's verdict on its certificate (see
/// `tls::await_verdict`).
const TLS_VERDICT_WAIT: Duration = Duration::from_secs(1);

/// Makes one carrier connection: TCP, TLS or Noise if configured, and the session.
async fn connect(s: &ClientSettings) -> io::Result<Session> {
    let attempt = async {
        if let Some(kcp) = &s.kcp {
            return super::kcp::connect(&s.server, kcp, s.config.clone()).await;
        }
        let tcp = TcpStream::connect(&s.server).await?;
        s.auth
            .connect(tcp, s.config.clone(), TLS_VERDICT_WAIT)
            .await
    };
    match timeout(s.connect_timeout, attempt).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(io::Error::new(e.kind(), io_reason(&e))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {:?}", s.connect_timeout),
        )),
    }
}

/// Keeps carrier `slot` connected until `stop`: reconnects with exponential backoff
/// (100 ms doubling to 5 s; back to 100 ms after a session that lasted 5 s).
async fn keep_connected(slot: usize, mut next: Option<Session>, ctx: Arc<Ctx>) {
    let s = &ctx.settings;
    let mut delay = BACKOFF_MIN;
    loop {
        let attempt = match next.take() {
            Some(session) => Ok(session),
            None => tokio::select! {
                attempt = connect(s) => attempt,
                _ = ctx.stop.cancelled() => return,
            },
        };
        match attempt {
            Ok(session) => {
                let gauge: Gauge = ctx.stats.session();
                let _counted = ctx
                    .metrics
                    .session(protocol_name(s.config.protocol), &session);
                let since = Instant::now();
                ctx.pool.set(slot, Some(session.clone()));
                info!(carrier = slot, "connected to {}", s.server);
                tokio::select! {
                    reason = session.closed() => {
                        let hint = if s.kcp.is_some() { super::kcp::hint(&reason) } else { "" };
                        warn!(carrier = slot, "connection to {} lost: {reason}{hint}", s.server)
                    }
                    // Stays in the pool for the final close.
                    _ = ctx.stop.cancelled() => return,
                    // KCP's --autoexpire: a new session for new streams, at once.
                    _ = super::kcp::expired(&s.kcp) => {
                        info!(carrier = slot, "session expired (--autoexpire): replacing it");
                        ctx.pool.set(slot, None);
                        super::kcp::retire(session, &s.kcp, ctx.kill.clone(), gauge);
                        delay = BACKOFF_MIN;
                        continue;
                    }
                }
                ctx.pool.set(slot, None);
                if since.elapsed() >= BACKOFF_MAX {
                    delay = BACKOFF_MIN;
                }
            }
            Err(e) => {
                ctx.metrics.handshake_failure();
                warn!(
                    carrier = slot,
                    "cannot connect to {}: {e}; retrying in {delay:?}", s.server
                )
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop.cancelled() => return,
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Carries one local connection: a stream on the least loaded carrier, then the pipe.
async fn carry(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + ctx.settings.connect_timeout;
    let stream = tokio::select! {
        stream = ctx.pool.open(deadline) => stream,
        _ = ctx.kill.cancelled() => return,
    };
    let (session, stream) = match stream {
        Ok(opened) => opened,
        Err(e) => {
            warn!(%peer, "connection dropped: {e}");
            let _ = tcp.set_zero_linger(); // a reset, not an end: nothing was carried
            return;
        }
    };
    let id = stream.id().0;
    let _counted = ctx
        .metrics
        .stream(protocol_name(ctx.settings.config.protocol));
    debug!(%peer, stream = id, "carrying");
    pipe_logged(
        stream,
        &session,
        tcp,
        End::Client,
        &ctx.stats,
        &ctx.kill,
        peer,
    )
    .await;
}

/// The carrier sessions, one slot per `--conns`, empty while reconnecting.
struct Pool {
    slots: watch::Sender<Vec<Option<Session>>>,
    /// How many slots hold a session.
    up: watch::Sender<usize>,
}

impl Pool {
    fn new(conns: usize) -> Pool {
        Pool {
            slots: watch::Sender::new(vec![None; conns]),
            up: watch::Sender::new(0),
        }
    }

    fn set(&self, slot: usize, session: Option<Session>) {
        self.slots.send_modify(|slots| slots[slot] = session);
        let up = self.slots.borrow().iter().flatten().count();
        self.up.send_replace(up);
    }

    fn sessions(&self) -> Vec<Session> {
        self.slots.borrow().iter().flatten().cloned().collect()
    }

    /// Opens a stream on the live session with the fewest streams; while none is live
    /// (reconnecting), waits for one until `deadline`.
    async fn open(&self, deadline: Instant) -> io::Result<(Session, Stream)> {
        let mut rx = self.slots.subscribe();
        let mut last_error = None;
        loop {
            let mut live: Vec<Session> = rx
                .borrow_and_update()
                .iter()
                .flatten()
                .filter(|s| !s.is_closed())
                .cloned()
                .collect();
            live.sort_by_cached_key(|s| s.num_streams());
            for session in live {
                match timeout_at(deadline, session.open_stream()).await {
                    Ok(Ok(stream)) => return Ok((session, stream)),
                    Ok(Err(e)) => last_error = Some(e),
                    Err(_) => return Err(no_carrier(last_error)),
                }
            }
            // Every carrier is down or refused: wait for a (re)connection.
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(no_carrier(last_error)),
            }
        }
    }
}

fn no_carrier(last_error: Option<io::Error>) -> io::Error {
    let msg = match last_error {
        Some(e) => format!("no connection to the server in time (last error: {e})"),
        None => "no connection to the server in time".to_string(),
    };
    io::Error::new(io::ErrorKind::TimedOut, msg)
}
