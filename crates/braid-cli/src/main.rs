//! The `braid` command-line tool.

use braid_cli::bench;
use braid_cli::tunnel::{self, Client, ClientArgs, Server, ServerArgs};
use clap::{Parser, Subcommand};

/// braid: many streams over one connection (smux v1/v2 and yamux, compatible with Go).
#[derive(Parser, Debug)]
#[command(name = "braid", version, about)]
struct Cli {
    /// Log more: -v info, -vv debug (default: warnings and errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure braid against raw TCP over loopback (and with --peers, the other Rust and
    /// Go multiplexers): bulk throughput, latency, stream churn and memory per idle stream.
    Bench(bench::BenchArgs),
    /// Internal: one benchmark run in this process (what `braid bench` starts as a child).
    #[command(hide = true)]
    BenchChild(bench::child::ChildArgs),
    /// Tunnel server: accept multiplexed connections, forward each stream to --target.
    Server(ServerArgs),
    /// Tunnel client: accept local TCP connections, carry each as a stream to --server.
    Client(ClientArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Bench(args) => match bench::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("braid: {e}");
                1
            }
        },
        Command::BenchChild(args) => match bench::child::run(args, bench::child::builtin) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("braid: {e}");
                1
            }
        },
        Command::Server(args) => run_tunnel(cli.verbose, async move {
            let server = Server::bind(args.resolve()?).await?;
            println!("listening on {}", server.local_addr());
            server.run(tunnel::shutdown_on_signals()).await
        }),
        Command::Client(args) => run_tunnel(cli.verbose, async move {
            let client = Client::bind(args.resolve()?).await?;
            println!("listening on {}", client.local_addr());
            client.run(tunnel::shutdown_on_signals()).await
        }),
    };
    std::process::exit(code);
}

/// Sets up logging and the runtime, runs a tunnel command, and returns the exit code.
fn run_tunnel(
    verbose: u8,
    command: impl std::future::Future<Output = Result<(), tunnel::Error>>,
) -> i32 {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("braid: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("braid: {e}");
            e.exit_code()
        }
    }
}
