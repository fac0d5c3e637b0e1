//! braid-attack: hostile peers against a real `braid server` process; see
//! `soak/README.md`.
//!
//! ```text
//! cargo build --release -p braid-cli -p braid-soak
//! target/release/braid-attack --server-bin target/release/braid --scale full
//! ```
//!
//! Exit code 0 when every check held, 1 when some did not, 2 on a usage error.

use braid_soak::attack::{self, Attack, Options, Scale};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Attacks a `braid server` process over loopback (floods of 1-byte frames, SYN and ping
/// floods, window-credit drip, silent connections, stream churn, slow-read shutdown)
/// and reports its peak RSS, fds, CPU and whether a normal client is still served.
#[derive(Parser, Debug)]
#[command(name = "braid-attack", version)]
struct Args {
    /// Attacks, comma-separated, or `all`: flood-yamux, flood-smux1, syn-yamux,
    /// syn-smux1, ping, drip, silent, churn, slow-read-tls, slow-read-tcp.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    attack: Vec<String>,
    /// short: seconds per attack against a 1 MiB receive budget (CI); full: the sizes
    /// of issue 13 with the server's defaults.
    #[arg(long, default_value = "full", value_parser = ["short", "full"])]
    scale: String,
    /// The braid binary to start for each attack (`braid server ...`).
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Attack a server already running here instead (it must forward to --target-addr).
    #[arg(long, value_name = "ADDR", requires = "target_addr")]
    addr: Option<SocketAddr>,
    /// Where our target listens (with --addr).
    #[arg(long, value_name = "ADDR")]
    target_addr: Option<SocketAddr>,
    /// The pid of the --addr server, for its RSS, fds and CPU.
    #[arg(long)]
    pid: Option<u32>,
    /// Streams the churn opens (default: 1,000,000 full, 3,000 short).
    #[arg(long)]
    streams: Option<u64>,
    /// --max-receive-buffer for the server, bytes (default: its own at full scale,
    /// 1 MiB short).
    #[arg(long, value_name = "BYTES")]
    receive_buffer: Option<u64>,
    /// --detect-timeout for the server in ms, when it has that flag (default: its own
    /// at full scale, 2000 short).
    #[arg(long, value_name = "MS")]
    detect_timeout_ms: Option<u64>,
    /// Stop pushing data once the server's RSS passes this many MiB.
    #[arg(long, default_value_t = 4096)]
    rss_cap_mib: u64,
    /// Seconds a normal client's probe may take before it counts as not served.
    #[arg(long, default_value_t = 5)]
    probe_timeout_secs: u64,
    /// Print the outcomes as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the outcomes as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut attacks = Vec::new();
    for name in &args.attack {
        if name == "all" {
            attacks.extend(Attack::ALL);
        } else if let Some(a) = Attack::parse(name) {
            attacks.push(a);
        } else {
            eprintln!("braid-attack: unknown attack {name:?}");
            return ExitCode::from(2);
        }
    }
    let opts = Options {
        attacks,
        scale: if args.scale == "full" {
            Scale::Full
        } else {
            Scale::Short
        },
        server_bin: args.server_bin,
        addr: args.addr,
        target_addr: args.target_addr,
        pid: args.pid,
        churn_streams: args.streams,
        receive_buffer: args.receive_buffer,
        detect_timeout: args.detect_timeout_ms.map(Duration::from_millis),
        rss_cap: args.rss_cap_mib << 20,
        probe_timeout: Duration::from_secs(args.probe_timeout_secs),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("braid-attack: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let json_out = args.json_out.clone();
    let result = runtime.block_on(attack::run(opts, |o| {
        if !json {
            eprintln!(
                "{}: done in {:.1} s{}",
                o.attack,
                o.secs,
                if o.checks.iter().all(|c| c.pass) {
                    ""
                } else {
                    " (some checks failed)"
                }
            );
        }
    }));
    // Connections the attacks left to the runtime are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(outcomes) => {
            if let Some(path) = &json_out {
                let written = serde_json::to_string_pretty(&outcomes)
                    .map_err(|e| e.to_string())
                    .and_then(|s| std::fs::write(path, s).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("braid-attack: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if json {
                match serde_json::to_string_pretty(&outcomes) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("braid-attack: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", attack::table(&outcomes));
            }
            if outcomes.iter().all(|o| o.checks.iter().all(|c| c.pass)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("braid-attack: {e}");
            ExitCode::from(2)
        }
    }
}
