//! braid soak test program: random stream traffic over smux v1, smux v2 and yamux at
//! once, with integrity, leak and hang checks. See `soak/README.md`.
//!
//! ```text
//! cargo run --release -p braid-soak -- [--secs 60] [--seed N] [--concurrency N] \
//!     [--proto smux1,smux2,yamux] [--max-size 4M] [--session-drop-secs 10] ...
//! ```
//!
//! Exit code 0 when every assertion held, 1 with the failures otherwise.

use braid_soak::{parse_protocol, Options, SoakError};
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// Soak test: random opens, transfers, half-closes, resets, drops and session drops
/// over every protocol at once; asserts every byte verified, stream counts back to
/// zero, every task finished and bounded RSS growth.
#[derive(Parser, Debug)]
#[command(name = "braid-soak", version)]
struct Args {
    /// Seconds of traffic (the drain and checks come after).
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Seed of every random choice (default: drawn from the clock, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Workers per side per protocol (each runs one stream at a time).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Protocols, comma-separated: smux1, smux2, yamux.
    #[arg(long, default_value = "smux1,smux2,yamux", value_delimiter = ',')]
    proto: Vec<String>,
    /// Largest data per direction of one stream (suffixes K, M, G: binary units).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    max_size: u64,
    /// Mean seconds between session drops per protocol; 0 disables them.
    #[arg(long, default_value_t = 10.0)]
    session_drop_secs: f64,
    /// Seconds one operation may take before it counts as hung.
    #[arg(long, default_value_t = 60)]
    op_timeout_secs: u64,
    /// Seconds an operation may go without moving a byte before it counts as hung.
    #[arg(long, default_value_t = 10)]
    stall_secs: u64,
    /// Seconds after a session drop within which everything on it must have ended.
    #[arg(long, default_value_t = 10)]
    drop_bound_secs: u64,
    /// Allowed RSS growth between the warm-up and the end, in MiB.
    #[arg(long, default_value_t = 32)]
    rss_limit_mib: u64,
    /// Seconds of warm-up before the first RSS sample (default: a quarter of the run,
    /// at most 15).
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    progress_secs: f64,
    /// Keep the traffic going after a failure (default: stop at the first).
    #[arg(long)]
    keep_going: bool,
    /// Do not fail when some kind of operation never completed.
    #[arg(long)]
    allow_idle: bool,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("unknown unit in {s:?} (use K, M or G)")),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

fn seconds(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: {s} is not a duration"))
}

fn options(args: &Args) -> Result<Options, String> {
    let mut protocols = Vec::new();
    for name in &args.proto {
        protocols.push(
            parse_protocol(name)
                .ok_or_else(|| format!("unknown protocol {name:?} (smux1, smux2, yamux)"))?,
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    let session_drop_interval = if args.session_drop_secs == 0.0 {
        None
    } else {
        Some(seconds(args.session_drop_secs, "--session-drop-secs")?)
    };
    Ok(Options {
        duration: Duration::from_secs(args.secs),
        seed,
        protocols,
        concurrency: args.concurrency,
        max_transfer: args.max_size,
        session_drop_interval,
        op_timeout: Duration::from_secs(args.op_timeout_secs),
        stall_timeout: Duration::from_secs(args.stall_secs),
        drop_bound: Duration::from_secs(args.drop_bound_secs),
        warmup: args
            .warmup_secs
            .map(|s| seconds(s, "--warmup-secs"))
            .transpose()?,
        rss_growth_limit: args.rss_limit_mib << 20,
        require_every_kind: !args.allow_idle,
        keep_going: args.keep_going,
        progress_interval: seconds(args.progress_secs, "--progress-secs")?,
        ..Options::default()
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("braid-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("braid-soak: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<&str> = opts
        .protocols
        .iter()
        .map(|p| braid_soak::protocol_name(*p))
        .collect();
    println!(
        "braid-soak: {} s over {} with {} workers per side, seed {} (replay: --seed {})",
        opts.duration.as_secs(),
        names.join(","),
        opts.concurrency,
        opts.seed,
        opts.seed
    );
    let result = rt.block_on(braid_soak::run_with_progress(opts, |p| println!("{p}")));
    match result {
        Ok(report) => {
            println!("{report}");
            println!("soak PASSED");
            ExitCode::SUCCESS
        }
        Err(e @ SoakError::Failed { .. }) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("braid-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4T").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn arguments_make_options() {
        let args = Args::parse_from(["braid-soak", "--secs", "5", "--proto", "yamux,smux1"]);
        let opts = options(&args).unwrap();
        assert_eq!(opts.duration, Duration::from_secs(5));
        assert_eq!(
            opts.protocols,
            vec![braid::Protocol::Yamux, braid::Protocol::SmuxV1]
        );
        let args = Args::parse_from(["braid-soak", "--proto", "smux3"]);
        assert!(options(&args).is_err());
    }
}
