//! `braid bench`: workloads through raw TCP and through braid, side by side, over real
//! loopback TCP in one process.
//!
//! - bulk ([`bulk`]): N streams (TCP: N connections) each write `bytes / N`, then
//!   half-close; MB/s, CPU and peak RSS.
//! - latency ([`latency`]): 64-byte ping-pong on one stream (TCP: one connection);
//!   p50 and p99 round trip.
//! - churn ([`churn`]): open a stream, echo one byte, close, in a loop for a fixed time
//!   (TCP: a new connection each time); streams per second.
//! - idle ([`idle`]): open many idle streams in one session; RSS per stream (no TCP
//!   baseline). Each run is a fresh child process so that memory freed by earlier runs
//!   does not hide what the streams take.
//!
//! Runs are repeated and interleaved (TCP, smux1, smux2, yamux, TCP, ...) so that a noisy
//! machine affects all alike; the tables show medians.
//!
//! The default sizes keep a default run around 20-30 s on two cores. The performance
//! issue's sizes: `--round-trips 100000`, `--churn-secs 10`, `--idle-streams 100000`,
//! `--workload bulk --streams 1000 --bytes 2000MB`.

mod bulk;
mod churn;
mod idle;
mod latency;
mod report;

use braid::{Config, Protocol, Session, Side};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Options of `braid bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run (comma-separated): bulk, latency, churn, idle.
    #[arg(long, value_delimiter = ',', default_value = "bulk,latency,churn,idle")]
    workload: Vec<Workload>,
    /// Protocols to measure besides raw TCP (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "smux1,smux2,yamux")]
    proto: Vec<Proto>,
    /// bulk: stream counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    streams: Vec<usize>,
    /// bulk: bytes per run, all streams together (units: K, M, G, KiB, MiB, GiB).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    bytes: u64,
    /// bulk: size of each write (same units).
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    chunk: u64,
    /// latency: 64-byte round trips per run (the performance issue's size: 100000).
    #[arg(long, default_value_t = 5_000)]
    round_trips: usize,
    /// churn: seconds of open/echo/close per run (the issue's: 10).
    #[arg(long, default_value_t = 0.3)]
    churn_secs: f64,
    /// churn: client tasks opening streams at the same time (1: one after the other).
    #[arg(long, default_value_t = 32)]
    churn_workers: usize,
    /// idle: streams opened per run (the issue's: 100000).
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Runs per configuration; the tables show the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Run client and server on one thread (tokio's current-thread runtime) instead of
    /// two worker threads: no task hops between cores, which is what latency shows most.
    #[arg(long)]
    current_thread: bool,
    /// Internal: measure one idle run in this process and print its RSS as JSON.
    #[arg(long, hide = true)]
    idle_child: Option<Proto>,
}

/// A workload of `braid bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Bulk transfer over 1 or more streams.
    Bulk,
    /// Ping-pong round trips on one stream.
    Latency,
    /// Stream open/echo/close rate.
    Churn,
    /// Memory per idle stream.
    Idle,
}

/// What a run measures through.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Proto {
    /// Raw TCP, one connection per stream: the baseline.
    #[value(skip)]
    Tcp,
    /// smux version 1.
    Smux1,
    /// smux version 2.
    Smux2,
    /// yamux.
    Yamux,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Smux1 => "smux1",
            Proto::Smux2 => "smux2",
            Proto::Yamux => "yamux",
        }
    }

    fn protocol(self) -> Option<Protocol> {
        match self {
            Proto::Tcp => None,
            Proto::Smux1 => Some(Protocol::SmuxV1),
            Proto::Smux2 => Some(Protocol::SmuxV2),
            Proto::Yamux => Some(Protocol::Yamux),
        }
    }
}

/// Parses a byte count with an optional unit (K, M, G decimal; KiB, MiB, GiB binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512MiB, 1G, 65536)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use K, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    let v = (n * mult as f64) as u64;
    if v == 0 {
        return Err(format!("size '{s}' must be at least 1 byte"));
    }
    Ok(v)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Checks the options that clap cannot.
fn validate(args: &BenchArgs) -> io::Result<()> {
    if args.repeat == 0 {
        return Err(invalid("--repeat must be >= 1"));
    }
    if args.workload.contains(&Workload::Bulk) {
        if args.streams.contains(&0) {
            return Err(invalid("--streams must be >= 1"));
        }
        if args.streams.iter().any(|&n| args.bytes < n as u64) {
            return Err(invalid("--bytes must be at least one byte per stream"));
        }
    }
    if args.round_trips == 0 {
        return Err(invalid("--round-trips must be >= 1"));
    }
    if args.churn_workers == 0 {
        return Err(invalid("--churn-workers must be at least 1"));
    }
    if !(args.churn_secs > 0.0 && args.churn_secs.is_finite()) {
        return Err(invalid("--churn-secs must be a positive number"));
    }
    if args.idle_streams == 0 {
        return Err(invalid("--idle-streams must be >= 1"));
    }
    Ok(())
}

/// One measurement to make.
#[derive(Clone, Copy)]
enum Job {
    Bulk(Proto, usize),
    Latency(Proto),
    Churn(Proto),
    Idle(Proto),
}

impl Job {
    fn label(self) -> String {
        match self {
            Job::Bulk(p, n) => format!("bulk {} x{n}", p.name()),
            Job::Latency(p) => format!("latency {}", p.name()),
            Job::Churn(p) => format!("churn {}", p.name()),
            Job::Idle(p) => format!("idle {}", p.name()),
        }
    }
}

/// Every run made, by workload.
#[derive(Default)]
struct Runs {
    bulk: Vec<bulk::Run>,
    latency: Vec<latency::Run>,
    churn: Vec<churn::Run>,
    idle: Vec<idle::Run>,
}

/// Runs `braid bench`.
pub fn run(args: BenchArgs) -> io::Result<()> {
    validate(&args)?;
    if let Some(proto) = args.idle_child {
        return idle::child(proto, args.idle_streams);
    }
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
    let mut targets = vec![Proto::Tcp];
    targets.extend(args.proto.iter().copied().filter(|p| *p != Proto::Tcp));
    let mut workloads: Vec<Workload> = Vec::new();
    for &w in &args.workload {
        if !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    // One round of every configuration; rounds are repeated.
    let mut round = Vec::new();
    for &w in &workloads {
        match w {
            Workload::Bulk => {
                for &n in &args.streams {
                    round.extend(targets.iter().map(|&p| Job::Bulk(p, n)));
                }
            }
            Workload::Latency => round.extend(targets.iter().map(|&p| Job::Latency(p))),
            Workload::Churn => round.extend(targets.iter().map(|&p| Job::Churn(p))),
            // No TCP baseline: a connection's memory is mostly in the kernel.
            Workload::Idle => round.extend(targets[1..].iter().map(|&p| Job::Idle(p))),
        }
    }
    let bar = ProgressBar::new((args.repeat * round.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"),
    );
    let mut runs = Runs::default();
    for _ in 0..args.repeat {
        for &job in &round {
            bar.set_message(job.label());
            match job {
                Job::Bulk(p, n) => {
                    let run = rt.block_on(bulk::measure(p, n, args.bytes, args.chunk as usize));
                    runs.bulk.push(run?);
                }
                Job::Latency(p) => {
                    runs.latency
                        .push(rt.block_on(latency::measure(p, args.round_trips))?);
                }
                Job::Churn(p) => {
                    let secs = Duration::from_secs_f64(args.churn_secs);
                    runs.churn
                        .push(rt.block_on(churn::measure(p, secs, args.churn_workers))?);
                }
                Job::Idle(p) => runs
                    .idle
                    .push(idle::measure_in_child(p, args.idle_streams)?),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let rows = report::Rows {
        bulk: bulk::summarize(&runs.bulk, &targets, &args.streams),
        latency: latency::summarize(&runs.latency, &targets),
        churn: churn::summarize(&runs.churn, &targets),
        idle: idle::summarize(&runs.idle, &targets),
    };
    if args.json {
        report::print_json(&rows);
    } else {
        report::print_tables(&rows, &args);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A listener on an ephemeral loopback port.
async fn listener() -> io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

/// A connected loopback TCP pair (client, server) with `TCP_NODELAY`.
async fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = listener().await?;
    let (client, accepted) = tokio::join!(TcpStream::connect(listener.local_addr()?), async {
        listener.accept().await
    });
    let (client, (server, _)) = (client?, accepted?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// A braid session pair (client, server) over loopback TCP, default configs.
async fn session_pair(protocol: Protocol) -> io::Result<(Session, Session)> {
    let (client, server) = tcp_pair().await?;
    let config = Config::new(protocol);
    Ok((
        Session::from_tcp(client, config.clone(), Side::Client)?,
        Session::from_tcp(server, config, Side::Server)?,
    ))
}

/// The error for a session that ended while the benchmark still needed it.
fn session_ended() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "session ended")
}

/// Waits for a spawned task and passes its result on.
async fn join<T>(task: tokio::task::JoinHandle<io::Result<T>>) -> io::Result<T> {
    task.await.map_err(io::Error::other)?
}

/// User + system CPU seconds of this process, from /proc (0 where unavailable).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux configuration in practice.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the peak resident set size so that each run reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A field of /proc/self/status in KiB (0 where unavailable).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The peak resident set size since the last [`reset_peak_rss`].
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// The resident set size now.
fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("128KiB"), Ok(128 * 1024));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
