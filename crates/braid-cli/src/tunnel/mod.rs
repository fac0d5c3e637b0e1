//! `braid server` and `braid client`: TCP port forwarding over multiplexed connections.
//!
//! ```text
//!  app ──TCP──▶ braid client ══ one TCP (or TLS) connection, many streams ══▶ braid server ──TCP──▶ target
//! ```
//!
//! The client accepts local TCP connections and carries each as a stream over one of
//! `--conns` multiplexed connections ("carriers") to the server, reconnecting with
//! exponential backoff when the server goes away. The server forwards each stream to a
//! new TCP connection to its target. Bytes are copied both ways independently, and a
//! half-close (FIN) on one side becomes a half-close on the other.
//!
//! ```no_run
//! use braid_cli::tunnel::{Server, ServerArgs};
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     args: ServerArgs,
//! }
//!
//! # async fn run() -> Result<(), braid_cli::tunnel::Error> {
//! let cli = Cli::parse_from(["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:80"]);
//! let server = Server::bind(cli.args.resolve()?).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

mod auth;
mod client;
mod config;
mod kcp;
mod limits;
mod metrics;
mod noise;
mod pipe;
mod read_bufs;
mod server;
mod stats;
mod tls;
mod units;

pub use auth::{ClientAuth, ServerAuth};
pub use client::Client;
pub use config::{ClientArgs, ClientSettings, Proto, ServerArgs, ServerSettings, Tuning};
pub use kcp::{KcpArgs, KcpSettings, Transport};
pub use limits::{LimitArgs, Limits};
pub use metrics::Metrics;
pub use noise::{NoiseStream, Psk};
pub use server::Server;
pub use stats::{Snapshot, Stats};
pub use tls::ClientTls;
pub use units::{parse_duration, parse_size};

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a tunnel command failed, in one line (printed as `braid: {error}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad flags, config file, or TLS files: exit code 2.
    Usage(String),
    /// The network or the system failed (port in use, server unreachable): exit code 1.
    Runtime(String),
}

impl Error {
    /// The process exit code for this error: 2 for usage, 1 for runtime.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// How long closing a session may take once the grace period is over.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// A token cancelled on the first SIGINT or SIGTERM; a second one exits at once.
/// Call inside a tokio runtime.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::warn!("cannot listen for SIGTERM: only Ctrl-C shuts down cleanly");
            let _ = tokio::signal::ctrl_c().await;
            cancel.cancel();
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("shutting down (again to quit at once)");
        cancel.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    token
}

/// Waits up to `grace` for the tasks of `pipes` to end.
async fn drain(pipes: &tokio_util::task::TaskTracker, grace: Duration, stats: &Stats) {
    pipes.close();
    let active = stats.snapshot().streams;
    if active > 0 {
        tracing::warn!("shutting down: waiting up to {grace:?} for {active} active stream(s)");
    }
    if tokio::time::timeout(grace, pipes.wait()).await.is_err() {
        tracing::warn!(
            "grace period over: cutting {} stream(s)",
            stats.snapshot().streams
        );
    }
}

/// Binds a TCP listener, with a one-line error naming the address.
async fn bind_listener(addr: &str) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Runtime(format!("cannot listen on {addr}: {}", io_reason(&e))))
}

/// Binds the `--metrics` listener, if one is asked for.
async fn bind_metrics(addr: Option<&str>) -> Result<Option<tokio::net::TcpListener>, Error> {
    match addr {
        Some(addr) => bind_listener(addr)
            .await
            .map(Some)
            .map_err(|e| Error::Runtime(format!("{e} (--metrics)"))),
        None => Ok(None),
    }
}

/// The address a `--metrics` listener is bound to.
fn metrics_addr(listener: Option<&tokio::net::TcpListener>) -> Option<std::net::SocketAddr> {
    listener.and_then(|l| l.local_addr().ok())
}

/// Starts the `--stats` reporter (every `every`) and the `--metrics` server (on
/// `listener`), both of which end when `kill` fires.
fn spawn_reporting(
    stats: &std::sync::Arc<Stats>,
    every: Option<Duration>,
    metrics: &std::sync::Arc<Metrics>,
    listener: Option<tokio::net::TcpListener>,
    kcp: Option<&kcp::KcpSettings>,
    kill: &CancellationToken,
) {
    if let Some(every) = every {
        stats.spawn_reporter(every, kill.clone());
        if let Some(kcp) = kcp {
            kcp::spawn_reporter(kcp, every, kill.clone());
        }
    }
    if let Some(l) = listener {
        tokio::spawn(metrics::serve(l, metrics.clone(), kill.clone()));
    }
}

/// Pipes `stream` and `tcp` (the connection from or to `peer`) together until both
/// directions end, and logs how it ended.
async fn pipe_logged(
    stream: braid::Stream,
    session: &braid::Session,
    tcp: tokio::net::TcpStream,
    end: pipe::End,
    stats: &std::sync::Arc<Stats>,
    kill: &CancellationToken,
    peer: std::net::SocketAddr,
) {
    let id = stream.id().0;
    match pipe::pipe(stream, session, tcp, end, stats.clone(), kill.clone()).await {
        Ok(()) => tracing::debug!(%peer, stream = id, "stream done"),
        Err(e) => tracing::info!(%peer, stream = id, "stream aborted: {e}"),
    }
}

/// Accepts TCP connections until `shutdown`, handing each to `serve` on `tasks`. After
/// an accept error (out of file descriptors and the like) it backs off, logging at most
/// once per interval. The listener is closed on return.
async fn accept_until<F>(
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
    mut serve: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr) -> F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = limits::AcceptBackoff::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff.succeeded();
                    tasks.spawn(serve(tcp, peer));
                }
                Err(e) => {
                    let delay = backoff.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
        }
    }
}

/// An I/O error's message without Rust's " (os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
