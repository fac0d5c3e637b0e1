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
