//! `braid-bench child`: one benchmark run with one of the other Rust multiplexers
//! (yamux 0.14, tokio-yamux 0.3, async_smux 0.4, tokio_smux 0.2), or raw TCP and braid,
//! client and server in this process; prints one JSON line.
//!
//! `braid bench --peers` starts it as a child. The engine (workloads, runner, tables,
//! plot) is braid-cli's `bench` module; this binary exists so that the peer crates stay
//! out of the `braid` binary's build. See bench/README.md.

mod libs;

use braid_cli::bench::child::{self, ChildArgs};
use braid_cli::bench::sample::Sample;
use clap::{Parser, Subcommand};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitCode;

/// Command line of `braid-bench`.
#[derive(Parser, Debug)]
#[command(name = "braid-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one workload with one library and print one JSON line (what `braid bench
    /// --peers` starts as a child).
    Child(ChildArgs),
}

/// The peer crates, then the `braid` binary's own libraries.
fn dispatch(args: &ChildArgs) -> Option<Pin<Box<dyn Future<Output = io::Result<Sample>> + '_>>> {
    Some(match args.lib.as_str() {
        "yamux" => Box::pin(async move {
            let mut sample = child::with(libs::yamux().await?, args).await?;
            if let Some(note) = &mut sample.note {
                note.push_str(&format!(
                    ": a connection with {} streams open ends",
                    libs::YAMUX_MAX_STREAMS + 1
                ));
            }
            Ok(sample)
        }),
        "tokio-yamux" => Box::pin(async move {
            let mut sample = child::with(libs::tokio_yamux().await?, args).await?;
            if args.workload == child::ChildWorkload::Bulk {
                sample.note = Some(
                    "writers also poll the read side (else a write-only stream stalls)".into(),
                );
            }
            Ok(sample)
        }),
        "async_smux" => Box::pin(async move { child::with(libs::async_smux().await?, args).await }),
        "tokio_smux" => Box::pin(async move {
            let mut sample = child::with(libs::tokio_smux().await?, args).await?;
            if args.workload == child::ChildWorkload::Bulk {
                sample.note = Some("message API: 64 KiB messages, each copied into a Vec".into());
            }
            Ok(sample)
        }),
        _ => return child::builtin(args),
    })
}

fn main() -> ExitCode {
    let Cmd::Child(args) = Cli::parse().command;
    match child::run(args, dispatch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braid-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_cli::bench::child::ChildWorkload;
    use clap::Parser;

    fn args(lib: &str, workload: &[&str]) -> ChildArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ChildArgs,
        }
        let mut argv = vec!["child", "--lib", lib, "--workload"];
        argv.extend_from_slice(workload);
        Wrap::parse_from(argv).args
    }

    /// Every peer crate's adapter passes the engine's checks at tiny sizes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_peer_runs_bulk_latency_and_churn_at_tiny_sizes() {
        for lib in ["yamux", "tokio-yamux", "async_smux", "tokio_smux"] {
            let bulk = args(
                lib,
                &[
                    "bulk",
                    "--streams",
                    "3",
                    "--bytes",
                    "300000",
                    "--sample-ms",
                    "1",
                ],
            );
            let s = dispatch(&bulk).unwrap().await.unwrap();
            assert!(s.ok && s.bytes == 900_000, "{lib}: {s:?}");
            assert_eq!(s.series.unwrap().bytes.len(), 3, "{lib}");
            let latency = args(lib, &["latency", "--round-trips", "20"]);
            assert_eq!(latency.workload, ChildWorkload::Latency);
            let s = dispatch(&latency).unwrap().await.unwrap();
            assert_eq!(s.round_trips, Some(20), "{lib}");
            // tokio_smux's churn sometimes stalls for good inside the crate (the runner's
            // timeout reports it as failed), so it is left out here.
            if lib != "tokio_smux" {
                let churn = args(lib, &["churn", "--duration-ms", "30", "--workers", "2"]);
                let s = dispatch(&churn).unwrap().await.unwrap();
                assert!(s.streams > 0, "{lib}: {s:?}");
            }
        }
        // yamux 0.14 cannot hold 1000 streams: opened in waves, or n/a for idle.
        let wide = args("yamux", &["bulk", "--streams", "600", "--bytes", "1000"]);
        let s = dispatch(&wide).unwrap().await.unwrap();
        assert!(s.note.unwrap().contains("waves of 256"));
        let idle = args("yamux", &["idle", "--streams", "1000"]);
        let s = dispatch(&idle).unwrap().await.unwrap();
        assert_eq!(s.na.as_deref(), Some("at most 512 streams per connection"));
        assert!(dispatch(&args("nonesuch", &["bulk"])).is_none());
    }
}
