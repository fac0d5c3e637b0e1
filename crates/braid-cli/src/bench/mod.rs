//! `braid bench`: the benchmark engine. Raw TCP, braid's three protocols and (with
//! `--peers`) the other Rust multiplexers and the Go libraries braid speaks to, on the
//! same workloads, every run in a fresh child process.
//!
//! - bulk: N streams at once over one loopback TCP connection (raw TCP: N connections),
//!   each writes its bytes in 128 KiB writes and waits for a 1-byte reply once the
//!   server has read them all; MB/s, CPU seconds, peak RSS.
//! - latency: 64-byte ping-pong on one stream; p50 and p99 round trip.
//! - churn: open a stream, echo one byte, close, for a fixed time; streams per second.
//! - idle: many idle streams in one session; RSS per stream.
//! - tunnel (not in the default list): port forwarding in separate processes, `braid
//!   server` + `braid client` per protocol (and with a pre-shared key and with mutual
//!   TLS), against direct TCP and, with `--peers`, the Go tunnel of interop/go; N
//!   parallel TCP connections push bytes through to a sink; MB/s, and CPU seconds and
//!   peak RSS of the two tunnel processes. See [`tunnel`].
//!
//! Every run is its own child process (a fresh process is what a user's program is;
//! memory kept by an earlier run cannot hide what a later one takes), client and server
//! in that one process on a 2-worker tokio runtime (`--current-thread`: one thread).
//! Runs are interleaved (for each repeat, for each workload, every library once) and the
//! tables show medians, as ratios to raw TCP and to the best peer of the same protocol.
//!
//! Modules: [`libs`] (the traits libraries are adapted to, TCP and braid), [`workload`]
//! (the four library workloads, generic), [`tunnel`] (the tunnel workload), [`child`] (one run in a child process), [`runner`]
//! (children, interleaving, peers), [`report`] (medians, ratios, tables, JSON),
//! [`plot`] (`--plot`: throughput over time). The `braid-bench` crate adapts the other
//! Rust crates to [`libs`] and runs them through [`child`].

pub mod child;
pub mod libs;
pub mod plot;
pub mod report;
pub mod runner;
pub mod sample;
pub mod tunnel;
pub mod workload;

use indicatif::{ProgressBar, ProgressStyle};
use runner::{Lib, Needs, Programs, Run, Spec};
use serde::Serialize;
use std::io;
use std::path::PathBuf;

/// Options of `braid bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run (comma-separated): bulk, latency, churn, idle, tunnel.
    #[arg(long, value_delimiter = ',', default_value = "bulk,latency,churn,idle")]
    pub workload: Vec<Workload>,
    /// Protocols to measure besides raw TCP (comma-separated); with --peers, also the
    /// peers speaking them.
    #[arg(long, value_delimiter = ',', default_value = "smux1,smux2,yamux")]
    pub proto: Vec<Proto>,
    /// Also run the other Rust crates (yamux, tokio-yamux, async_smux, tokio_smux; built
    /// with cargo on first use) and the Go peers (built if `go` and Debian's smux/yamux
    /// are installed; for the tunnel workload the Go tunnel of interop/go); those that
    /// cannot run are skipped with a message.
    #[arg(long)]
    pub peers: bool,
    /// bulk: STREAMSxBYTES shapes (bytes per stream; units K, M, G, KiB, MiB, GiB),
    /// comma-separated. The performance issue's: 1x2G,16x100M,1000x2M.
    #[arg(long, value_delimiter = ',', default_value = "1x512MiB,16x32MiB,1000x512KiB", value_parser = parse_shape)]
    pub bulk: Vec<(usize, u64)>,
    /// bulk: size of each write and of each read buffer (same units).
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    pub chunk: u64,
    /// latency: timed 64-byte round trips per run (the performance issue's: 100000).
    #[arg(long, default_value_t = 5_000)]
    pub round_trips: u64,
    /// churn: seconds of open/echo/close per run (the issue's: 10).
    #[arg(long, default_value_t = 0.3)]
    pub churn_secs: f64,
    /// churn: client tasks opening streams at the same time (1: one after the other).
    #[arg(long, default_value_t = 1)]
    pub churn_workers: usize,
    /// idle: streams opened per run (the issue's: 100000).
    #[arg(long, default_value_t = 10_000)]
    pub idle_streams: usize,
    /// tunnel: numbers of parallel TCP connections through the tunnel, comma-separated
    /// (each a table).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub tunnel_conns: Vec<usize>,
    /// tunnel: bytes all the connections of one run send together, split evenly
    /// (units as for --bulk).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub tunnel_bytes: u64,
    /// Runs per (library, workload), each a fresh process; the tables show the median.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print the results as JSON (the rows with medians and ratios, and every run)
    /// instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Run client and server on one thread (tokio's current-thread runtime; Go peers with
    /// GOMAXPROCS=1) instead of two worker threads.
    #[arg(long)]
    pub current_thread: bool,
    /// Draw each bulk run's throughput over time, per stream and per library, into this
    /// SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// With --plot: how often each stream's received bytes are sampled, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub sample_ms: u64,
}

/// A workload of `braid bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Bulk transfer over 1 or more streams.
    Bulk,
    /// Ping-pong round trips on one stream.
    Latency,
    /// Stream open/echo/close rate.
    Churn,
    /// Memory per idle stream.
    Idle,
    /// Port forwarding through braid's (and Go's) tunnel processes.
    Tunnel,
}

/// A multiplexing protocol.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// smux version 1.
    Smux1,
    /// smux version 2.
    Smux2,
    /// yamux.
    Yamux,
}

impl Proto {
    /// The name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Smux1 => "smux1",
            Proto::Smux2 => "smux2",
            Proto::Yamux => "yamux",
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

/// Parses a bulk shape `STREAMSxBYTES` (bytes per stream, with units), e.g. `16x100M`.
pub fn parse_shape(s: &str) -> Result<(usize, u64), String> {
    let (streams, bytes) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}' is not STREAMSxBYTES (e.g. 16x100M)"))?;
    let streams: usize = streams
        .trim()
        .parse()
        .map_err(|_| format!("'{streams}' is not a stream count"))?;
    if streams == 0 {
        return Err("a bulk shape needs at least 1 stream".into());
    }
    Ok((streams, parse_size(bytes)?))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Checks the options that clap cannot.
fn validate(args: &BenchArgs) -> io::Result<()> {
    if args.repeat == 0 {
        return Err(invalid("--repeat must be >= 1"));
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
    if args.tunnel_conns.contains(&0) || args.tunnel_conns.is_empty() {
        return Err(invalid("--tunnel-conns: each count must be >= 1"));
    }
    if let Some(&most) = args.tunnel_conns.iter().max() {
        if args.tunnel_bytes < most as u64 {
            return Err(invalid(
                "--tunnel-bytes must be at least one byte per connection",
            ));
        }
    }
    if args.plot.is_some() && args.sample_ms == 0 {
        return Err(invalid("--sample-ms must be >= 1"));
    }
    if args.plot.is_some() && !args.workload.contains(&Workload::Bulk) {
        return Err(invalid(
            "--plot draws the bulk runs: add bulk to --workload",
        ));
    }
    Ok(())
}

/// The measurements of one invocation, in run order.
fn specs(args: &BenchArgs) -> Vec<Spec> {
    let mut workloads: Vec<Workload> = Vec::new();
    for &w in &args.workload {
        if !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    let mut specs = Vec::new();
    for w in workloads {
        match w {
            Workload::Bulk => {
                specs.extend(args.bulk.iter().map(|&(streams, per_stream)| Spec::Bulk {
                    streams,
                    per_stream,
                    chunk: args.chunk as usize,
                }))
            }
            Workload::Latency => specs.push(Spec::Latency {
                round_trips: args.round_trips,
            }),
            Workload::Churn => specs.push(Spec::Churn {
                duration_ms: (args.churn_secs * 1e3).round().max(1.0) as u64,
                workers: args.churn_workers,
            }),
            Workload::Idle => specs.push(Spec::Idle {
                streams: args.idle_streams,
            }),
            Workload::Tunnel => {
                let mut conns = args.tunnel_conns.clone();
                conns.dedup();
                specs.extend(conns.into_iter().map(|conns| Spec::Tunnel {
                    conns,
                    per_conn: args.tunnel_bytes / conns as u64,
                    chunk: args.chunk as usize,
                }))
            }
        }
    }
    specs
}

/// Runs `braid bench`.
pub fn run(args: BenchArgs) -> io::Result<()> {
    validate(&args)?;
    if cfg!(debug_assertions) {
        eprintln!("braid bench: a debug build measures debug code: use cargo run --release");
    }
    let needs = Needs {
        libraries: args.workload.iter().any(|&w| w != Workload::Tunnel),
        tunnel: args.workload.contains(&Workload::Tunnel),
    };
    let programs = Programs::find(args.peers, needs)?;
    let libs: Vec<Lib> = Lib::ALL
        .into_iter()
        .filter(|&lib| match lib.protocol() {
            None => true,
            Some(p) => args.proto.contains(&p) && (!lib.is_peer() || programs.has(lib)),
        })
        .collect();
    let specs = specs(&args);
    let sample_ms = if args.plot.is_some() {
        args.sample_ms
    } else {
        0
    };
    let per_round: usize = specs
        .iter()
        .map(|s| libs.iter().filter(|&&l| s.applies_to(l)).count())
        .sum();
    let bar = ProgressBar::new((args.repeat * per_round) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"),
    );
    let mut runs = Vec::new();
    for repeat in 0..args.repeat {
        for (i, spec) in specs.iter().enumerate() {
            for &lib in libs.iter().filter(|&&l| spec.applies_to(l)) {
                bar.set_message(format!("{} {}", spec.label(), lib.name()));
                let sample = programs.run(lib, spec, sample_ms, args.current_thread);
                runs.push(Run {
                    spec: i,
                    lib,
                    repeat,
                    sample,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    if let Some(path) = &args.plot {
        plot::draw(path, &specs, &libs, &runs)?;
        eprintln!("braid bench: plot written to {}", path.display());
    }
    for run in &mut runs {
        // Plotted already; too bulky for the JSON.
        run.sample.series = None;
    }
    let rows = report::summarize(&specs, &libs, &runs);
    if args.json {
        report::print_json(&rows, &runs)?;
    } else {
        report::print_tables(&rows, &specs, &args);
    }
    // A failing peer is a finding about the peer; a failing braid or TCP run is a bug.
    let own_failures: Vec<String> = runs
        .iter()
        .filter(|r| !r.lib.is_peer() && !r.sample.ok)
        .map(|r| {
            let why = (r.sample.error.as_ref().or(r.sample.na.as_ref()))
                .map_or("unknown", |s| s.as_str());
            format!("{} {}: {why}", specs[r.spec].label(), r.lib.name())
        })
        .collect();
    if let Some(first) = own_failures.first() {
        return Err(io::Error::other(format!(
            "{} run(s) of braid or TCP failed, first: {first}",
            own_failures.len()
        )));
    }
    Ok(())
}

/// The median of the values (`None` for none).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shapes_parse_with_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("128KiB"), Ok(128 * 1024));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_shape("16x100M"), Ok((16, 100_000_000)));
        assert_eq!(parse_shape("1X2G"), Ok((1, 2_000_000_000)));
        assert!(parse_shape("0x1M").is_err());
        assert!(parse_shape("16").unwrap_err().contains("STREAMSxBYTES"));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
