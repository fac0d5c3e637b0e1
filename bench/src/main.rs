//! `braid-bench`: compares braid with raw TCP, other Rust multiplexers and the Go
//! libraries it is wire-compatible with, on the same workloads.
//!
//! `braid-bench compare` is the runner: every (library, workload) pair runs in its own
//! child process (`braid-bench peer ...` for the Rust libraries, the Go program in
//! `bench/go` for the Go ones), repeated and interleaved; the runner prints one table per
//! workload with medians relative to raw TCP. See `bench/README.md`.

mod libs;
mod peer;
mod runner;
mod sample;
mod workload;

use clap::{Parser, Subcommand};
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
    /// Run the comparison and print the tables (the usual entry point).
    Compare(runner::CompareArgs),
    /// Run one workload with one Rust library and print one JSON line (what `compare`
    /// starts as a child).
    Peer(peer::PeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Compare(args) => runner::run(args),
        Cmd::Peer(args) => peer::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braid-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
