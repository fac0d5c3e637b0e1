//! The `braid` command-line tool.

mod bench;

use clap::{Parser, Subcommand};

/// braid: many streams over one connection (smux v1/v2, compatible with Go).
#[derive(Parser, Debug)]
#[command(name = "braid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure braid against raw TCP over loopback: a bulk transfer through each.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
    };
    if let Err(e) = result {
        eprintln!("braid: {e}");
        std::process::exit(1);
    }
}
