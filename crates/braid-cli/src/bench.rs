//! `braid bench`: the same bulk workload through raw TCP and through braid, side by side,
//! over real loopback TCP in one process.
//!
//! Workload: N streams (TCP: N connections) each write `bytes / N` in `chunk`-sized writes,
//! then half-close; the receiving side reads each to the end and replies one byte. The
//! time is from the first open to the last reply. Runs are repeated and interleaved
//! (TCP, smux1, smux2, yamux, TCP, ...) so that a noisy machine affects all alike; the table
//! shows medians.

use braid::{Config, Protocol, Session, Side};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Options of `braid bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Protocols to measure besides raw TCP (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "smux1,smux2,yamux")]
    proto: Vec<Proto>,
    /// Stream counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    streams: Vec<usize>,
    /// Bytes per run, all streams together (units: K, M, G, KiB, MiB, GiB).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    bytes: u64,
    /// Size of each write (same units).
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    chunk: u64,
    /// Runs per configuration; the table shows the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
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

/// One measured run.
#[derive(Debug, Clone, Serialize)]
struct Run {
    proto: Proto,
    streams: usize,
    bytes: u64,
    secs: f64,
    cpu_secs: f64,
    peak_rss_kib: u64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// One row of the result table (medians over the repeats).
#[derive(Debug, Serialize)]
struct Row {
    proto: Proto,
    streams: usize,
    mb_per_s: f64,
    pct_of_tcp: f64,
    cpu_secs_per_gb: f64,
    peak_rss_mib: f64,
    runs: usize,
}

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

pub fn run(args: BenchArgs) -> io::Result<()> {
    if args.streams.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--streams must be >= 1",
        ));
    }
    if args.repeat == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--repeat must be >= 1",
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut targets = vec![Proto::Tcp];
    targets.extend(args.proto.iter().copied().filter(|p| *p != Proto::Tcp));
    let total_runs = (args.repeat * args.streams.len() * targets.len()) as u64;
    let bar = ProgressBar::new(total_runs);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"),
    );
    let mut runs = Vec::new();
    for _ in 0..args.repeat {
        for &streams in &args.streams {
            for &proto in &targets {
                bar.set_message(format!("{} x{streams}", proto.name()));
                let run = rt.block_on(measure(proto, streams, args.bytes, args.chunk as usize))?;
                runs.push(run);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let rows = summarize(&runs, &targets, &args.streams);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializable")
        );
    } else {
        print_table(&rows, args.bytes, args.chunk, args.repeat);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(runs: &[Run], targets: &[Proto], streams: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in streams {
        let tcp = median(
            runs.iter()
                .filter(|r| r.proto == Proto::Tcp && r.streams == n)
                .map(Run::mb_per_s)
                .collect(),
        );
        for &proto in targets {
            let these: Vec<&Run> = runs
                .iter()
                .filter(|r| r.proto == proto && r.streams == n)
                .collect();
            let mbps = median(these.iter().map(|r| r.mb_per_s()).collect());
            rows.push(Row {
                proto,
                streams: n,
                mb_per_s: mbps,
                pct_of_tcp: 100.0 * mbps / tcp,
                cpu_secs_per_gb: median(
                    these
                        .iter()
                        .map(|r| r.cpu_secs / (r.bytes as f64 / 1e9))
                        .collect(),
                ),
                peak_rss_mib: median(
                    these
                        .iter()
                        .map(|r| r.peak_rss_kib as f64 / 1024.0)
                        .collect(),
                ),
                runs: these.len(),
            });
        }
    }
    rows
}

fn print_table(rows: &[Row], bytes: u64, chunk: u64, repeat: usize) {
    println!(
        "bulk: {} MB per run in {} KiB writes, loopback TCP, median of {repeat}",
        bytes / 1_000_000,
        chunk / 1024
    );
    println!(
        "{:<8} {:>7} {:>10} {:>9} {:>12} {:>13}",
        "proto", "streams", "MB/s", "% of TCP", "CPU s / GB", "peak RSS MiB"
    );
    for r in rows {
        println!(
            "{:<8} {:>7} {:>10.0} {:>8.0}% {:>12.2} {:>13.1}",
            r.proto.name(),
            r.streams,
            r.mb_per_s,
            r.pct_of_tcp,
            r.cpu_secs_per_gb,
            r.peak_rss_mib
        );
    }
    let worst = rows
        .iter()
        .filter(|r| r.proto != Proto::Tcp)
        .min_by(|a, b| a.pct_of_tcp.total_cmp(&b.pct_of_tcp));
    if let Some(w) = worst {
        println!(
            "summary: braid reaches at least {:.0}% of raw TCP (lowest: {} with {} streams)",
            w.pct_of_tcp,
            w.proto.name(),
            w.streams
        );
    }
}

/// Runs one measurement in a fresh listener and connection(s).
async fn measure(proto: Proto, streams: usize, bytes: u64, chunk: usize) -> io::Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let per_stream = bytes / streams as u64;
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let start;
    match proto.protocol() {
        None => {
            let server = tokio::spawn(async move {
                let mut tasks = Vec::new();
                for _ in 0..streams {
                    let (tcp, _) = listener.accept().await?;
                    tcp.set_nodelay(true)?;
                    tasks.push(tokio::spawn(drain_and_reply(tcp, chunk)));
                }
                for t in tasks {
                    t.await.expect("task")?;
                }
                io::Result::Ok(())
            });
            start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                tasks.push(tokio::spawn(send_and_wait(tcp, per_stream, chunk)));
            }
            for t in tasks {
                t.await.expect("task")?;
            }
            server.await.expect("task")?;
        }
        Some(protocol) => {
            let config = Config::new(protocol);
            let server_config = config.clone();
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await?;
                let session = Session::from_tcp(tcp, server_config, Side::Server)?;
                let mut tasks = Vec::new();
                for _ in 0..streams {
                    let stream = session.accept_stream().await.ok_or_else(|| {
                        io::Error::new(io::ErrorKind::ConnectionAborted, "session ended")
                    })?;
                    tasks.push(tokio::spawn(drain_and_reply(stream, chunk)));
                }
                for t in tasks {
                    t.await.expect("task")?;
                }
                io::Result::Ok(session)
            });
            let session = Session::from_tcp(TcpStream::connect(addr).await?, config, Side::Client)?;
            start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let stream = session.open_stream().await?;
                tasks.push(tokio::spawn(send_and_wait(stream, per_stream, chunk)));
            }
            for t in tasks {
                t.await.expect("task")?;
            }
            let secs = start.elapsed();
            let server_session = server.await.expect("task")?;
            session.close().await;
            server_session.closed().await;
            return Ok(finish(proto, streams, per_stream, secs, cpu0));
        }
    }
    Ok(finish(proto, streams, per_stream, start.elapsed(), cpu0))
}

fn finish(proto: Proto, streams: usize, per_stream: u64, secs: Duration, cpu0: f64) -> Run {
    Run {
        proto,
        streams,
        bytes: per_stream * streams as u64,
        secs: secs.as_secs_f64(),
        cpu_secs: cpu_seconds() - cpu0,
        peak_rss_kib: peak_rss_kib(),
    }
}

async fn send_and_wait<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    bytes: u64,
    chunk: usize,
) -> io::Result<()> {
    let buf = vec![0x5au8; chunk];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut reply = [0u8; 1];
    s.read_exact(&mut reply).await?;
    Ok(())
}

async fn drain_and_reply<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    chunk: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    while s.read(&mut buf).await? > 0 {}
    s.write_all(&[1]).await?;
    s.shutdown().await?;
    Ok(())
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

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
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
    }
}
