//! `braid-bench peer`: runs one workload with one Rust library (client and server in this
//! process) and prints one JSON line with the result. The runner starts it as a child.

use crate::libs::{self, Acceptor, Opener};
use crate::sample::Sample;
use crate::workload;
use std::io;
use std::time::Duration;

/// The Rust libraries `peer` can run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RustLib {
    /// Raw TCP: one loopback connection per stream (the baseline).
    Tcp,
    /// braid speaking smux v1.
    BraidSmux1,
    /// braid speaking smux v2.
    BraidSmux2,
    /// braid speaking yamux.
    BraidYamux,
    /// The `yamux` crate 0.14 (libp2p).
    Yamux,
    /// The `tokio-yamux` crate 0.3 (tentacle).
    TokioYamux,
    /// The `async_smux` crate 0.4.
    AsyncSmux,
    /// The `tokio_smux` crate 0.2.
    TokioSmux,
}

/// A workload as a child runs it (the runner turns `bulk16` into `bulk --streams 16`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerWorkload {
    /// Streams that each send a block of bytes and wait for a one-byte reply.
    Bulk,
    /// Ping-pong of small messages on one stream.
    Latency,
    /// Open, echo one byte, close, as fast as possible.
    Churn,
}

/// Options of `braid-bench peer` (the Go peer takes the same flags).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Library to run.
    #[arg(long, value_enum)]
    pub lib: RustLib,
    /// Workload to run.
    #[arg(long, value_enum)]
    pub workload: PeerWorkload,
    /// bulk: number of streams.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// bulk: bytes per stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub bytes: u64,
    /// bulk: size of each write.
    #[arg(long, default_value_t = 128 * 1024)]
    pub chunk: usize,
    /// latency: number of round trips.
    #[arg(long, default_value_t = 1000)]
    pub round_trips: u64,
    /// latency: message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// churn: how long to run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
}

/// Runs the workload and prints its [`Sample`] as one JSON line. Failures are reported in
/// the line, never as a panic; the exit status is 0 whenever the line was printed.
pub fn run(args: PeerArgs) -> io::Result<()> {
    let sample = match check(&args) {
        Err(e) => Sample::failed(e),
        Ok(()) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(dispatch(&args))
                .unwrap_or_else(|e| Sample::failed(e.to_string()))
        }
    };
    println!(
        "{}",
        serde_json::to_string(&sample).map_err(io::Error::other)?
    );
    Ok(())
}

fn check(args: &PeerArgs) -> Result<(), String> {
    if args.workload == PeerWorkload::Bulk && (args.streams == 0 || args.chunk == 0) {
        return Err("--streams and --chunk must be at least 1".into());
    }
    if args.workload == PeerWorkload::Latency && (args.size == 0 || args.round_trips == 0) {
        return Err("--size and --round-trips must be at least 1".into());
    }
    Ok(())
}

async fn dispatch(args: &PeerArgs) -> io::Result<Sample> {
    use braid::Protocol;
    match args.lib {
        RustLib::Tcp => with(libs::tcp().await?, args).await,
        RustLib::BraidSmux1 => with(libs::braid(Protocol::SmuxV1).await?, args).await,
        RustLib::BraidSmux2 => with(libs::braid(Protocol::SmuxV2).await?, args).await,
        RustLib::BraidYamux => with(libs::braid(Protocol::Yamux).await?, args).await,
        RustLib::Yamux => {
            let mut sample = with(libs::yamux().await?, args).await?;
            if let Some(note) = &mut sample.note {
                note.push_str(&format!(
                    ": a connection with {} streams open ends",
                    libs::YAMUX_MAX_STREAMS + 1
                ));
            }
            Ok(sample)
        }
        RustLib::TokioYamux => {
            let mut sample = with(libs::tokio_yamux().await?, args).await?;
            if args.workload == PeerWorkload::Bulk {
                sample.note = Some(
                    "writers also poll the read side (else a write-only stream stalls)".into(),
                );
            }
            Ok(sample)
        }
        RustLib::AsyncSmux => with(libs::async_smux().await?, args).await,
        RustLib::TokioSmux => {
            let mut sample = with(libs::tokio_smux().await?, args).await?;
            if args.workload == PeerWorkload::Bulk {
                sample.note = Some("no half-close: 8-byte length prefix; 64 KiB messages".into());
            }
            Ok(sample)
        }
    }
}

async fn with<O: Opener, A: Acceptor>(
    (opener, acceptor): (O, A),
    args: &PeerArgs,
) -> io::Result<Sample> {
    match args.workload {
        PeerWorkload::Bulk => {
            workload::bulk(opener, acceptor, args.streams, args.bytes, args.chunk).await
        }
        PeerWorkload::Latency => {
            workload::latency(opener, acceptor, args.round_trips, args.size).await
        }
        PeerWorkload::Churn => {
            workload::churn(opener, acceptor, Duration::from_millis(args.duration_ms)).await
        }
    }
}
