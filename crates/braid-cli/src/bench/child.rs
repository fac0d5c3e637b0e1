//! One run in its own process: `braid bench-child ...` (raw TCP and braid) or
//! `braid-bench child ...` (the other Rust crates) runs one workload with one library,
//! client and server in this process, and prints one JSON line ([`Sample`]). The runner
//! starts it; the Go peer (`bench/go`) takes the same flags.

use super::libs::{self, Acceptor, Opener};
use super::sample::Sample;
use super::workload;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

/// A workload as a child runs it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildWorkload {
    /// Streams that each send a block of bytes and wait for a one-byte reply.
    Bulk,
    /// Ping-pong of small messages on one stream.
    Latency,
    /// Open, echo one byte, close, as fast as possible.
    Churn,
    /// Open many streams and hold them idle.
    Idle,
    /// Connections through a tunnel (separate processes) to a sink (see
    /// [`super::tunnel`]); `--lib` names the carrier.
    Tunnel,
}

/// Flags of a child run (the Go peer takes the same ones).
#[derive(clap::Args, Debug, Clone)]
pub struct ChildArgs {
    /// Library to run (e.g. tcp, braid-smux1, yamux).
    #[arg(long)]
    pub lib: String,
    /// Workload to run.
    #[arg(long, value_enum)]
    pub workload: ChildWorkload,
    /// bulk, idle: number of streams.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// bulk: bytes per stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub bytes: u64,
    /// bulk: size of each write and of each read buffer.
    #[arg(long, default_value_t = 128 * 1024)]
    pub chunk: usize,
    /// latency: number of timed round trips.
    #[arg(long, default_value_t = 1000)]
    pub round_trips: u64,
    /// latency: message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// churn: how long to run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    /// churn: client tasks opening streams at the same time.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// bulk: record each stream's received bytes every this many milliseconds (0: off).
    #[arg(long, default_value_t = 0)]
    pub sample_ms: u64,
    /// Run on tokio's current-thread runtime instead of two worker threads.
    #[arg(long)]
    pub current_thread: bool,
    /// tunnel: the Go interop peer, whose tunnel modes the `go-*` carriers run.
    #[arg(long, value_name = "PATH")]
    pub go_peer: Option<std::path::PathBuf>,
}

/// A library's run of the workload in `args`, or `None` when this binary does not know
/// the library.
pub type Dispatch =
    for<'a> fn(&'a ChildArgs) -> Option<Pin<Box<dyn Future<Output = io::Result<Sample>> + 'a>>>;

/// Runs the workload with `lib` and prints its [`Sample`] as one JSON line. Failures
/// are reported in the line, never as a panic; the exit status is 0 whenever the line
/// was printed.
pub fn run(args: ChildArgs, dispatch: Dispatch) -> io::Result<()> {
    let sample = match check(&args) {
        Err(e) => Sample::failed(e),
        Ok(()) => {
            let rt = if args.current_thread {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?
            };
            match dispatch(&args) {
                None => Sample::failed(format!("unknown library '{}'", args.lib)),
                Some(run) => rt
                    .block_on(run)
                    .unwrap_or_else(|e| Sample::failed(e.to_string())),
            }
        }
    };
    println!(
        "{}",
        serde_json::to_string(&sample).map_err(io::Error::other)?
    );
    Ok(())
}

fn check(args: &ChildArgs) -> Result<(), String> {
    match args.workload {
        ChildWorkload::Bulk if args.streams == 0 || args.chunk == 0 => {
            Err("--streams and --chunk must be at least 1".into())
        }
        ChildWorkload::Latency if args.size == 0 || args.round_trips == 0 => {
            Err("--size and --round-trips must be at least 1".into())
        }
        ChildWorkload::Idle if args.streams == 0 => Err("--streams must be at least 1".into()),
        ChildWorkload::Tunnel if args.streams == 0 || args.chunk == 0 => {
            Err("--streams and --chunk must be at least 1".into())
        }
        _ => Ok(()),
    }
}

/// Runs the workload in `args` with one library's (opener, acceptor) pair.
pub async fn with<O: Opener, A: Acceptor>(
    (opener, acceptor): (O, A),
    args: &ChildArgs,
) -> io::Result<Sample> {
    match args.workload {
        ChildWorkload::Bulk => {
            let every = (args.sample_ms > 0).then(|| Duration::from_millis(args.sample_ms));
            workload::bulk(
                opener,
                acceptor,
                args.streams,
                args.bytes,
                args.chunk,
                every,
            )
            .await
        }
        ChildWorkload::Latency => {
            workload::latency(opener, acceptor, args.round_trips, args.size).await
        }
        ChildWorkload::Churn => {
            let duration = Duration::from_millis(args.duration_ms);
            workload::churn(opener, acceptor, duration, args.workers).await
        }
        ChildWorkload::Idle => workload::idle(opener, acceptor, args.streams).await,
        ChildWorkload::Tunnel => Err(io::Error::other(
            "the tunnel workload runs its own processes, not a library pair",
        )),
    }
}

/// The libraries of the `braid` binary: `tcp`, `braid-smux1`, `braid-smux2`,
/// `braid-yamux`; and for the tunnel workload the carriers of [`Carrier::from_lib`].
///
/// [`Carrier::from_lib`]: super::tunnel::Carrier::from_lib
pub fn builtin(args: &ChildArgs) -> Option<Pin<Box<dyn Future<Output = io::Result<Sample>> + '_>>> {
    use braid::Protocol;
    if args.workload == ChildWorkload::Tunnel {
        let carrier = super::tunnel::Carrier::from_lib(&args.lib)?;
        return Some(Box::pin(super::tunnel::run(
            carrier,
            args.streams,
            args.bytes,
            args.chunk,
            args.go_peer.clone(),
        )));
    }
    let protocol = match args.lib.as_str() {
        "tcp" => {
            return Some(Box::pin(
                async move { with(libs::tcp().await?, args).await },
            ))
        }
        "braid-smux1" => Protocol::SmuxV1,
        "braid-smux2" => Protocol::SmuxV2,
        "braid-yamux" => Protocol::Yamux,
        _ => return None,
    };
    Some(Box::pin(async move {
        with(libs::braid(protocol).await?, args).await
    }))
}
