//! `braid-bench compare`: runs every (library, workload) pair in its own child process,
//! repeated and interleaved, and prints one table per workload with medians relative to
//! raw TCP.

use crate::sample::Sample;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A library as the comparison names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Lib {
    /// Raw TCP, one connection per stream: the baseline (always measured).
    #[value(name = "tcp")]
    #[serde(rename = "tcp")]
    Tcp,
    /// braid, smux v1.
    #[value(name = "braid-smux1")]
    #[serde(rename = "braid-smux1")]
    BraidSmux1,
    /// braid, smux v2.
    #[value(name = "braid-smux2")]
    #[serde(rename = "braid-smux2")]
    BraidSmux2,
    /// braid, yamux.
    #[value(name = "braid-yamux")]
    #[serde(rename = "braid-yamux")]
    BraidYamux,
    /// The `yamux` crate 0.14.
    #[value(name = "yamux")]
    #[serde(rename = "yamux")]
    Yamux,
    /// The `tokio-yamux` crate 0.3.
    #[value(name = "tokio-yamux")]
    #[serde(rename = "tokio-yamux")]
    TokioYamux,
    /// The `async_smux` crate 0.4.
    #[value(name = "async_smux")]
    #[serde(rename = "async_smux")]
    AsyncSmux,
    /// The `tokio_smux` crate 0.2.
    #[value(name = "tokio_smux")]
    #[serde(rename = "tokio_smux")]
    TokioSmux,
    /// Go xtaci/smux, protocol version 1.
    #[value(name = "go-smux1")]
    #[serde(rename = "go-smux1")]
    GoSmux1,
    /// Go xtaci/smux, protocol version 2.
    #[value(name = "go-smux2")]
    #[serde(rename = "go-smux2")]
    GoSmux2,
    /// Go hashicorp/yamux.
    #[value(name = "go-yamux")]
    #[serde(rename = "go-yamux")]
    GoYamux,
}

impl Lib {
    /// Every library, in table order.
    pub const ALL: [Lib; 11] = [
        Lib::Tcp,
        Lib::BraidSmux1,
        Lib::BraidSmux2,
        Lib::BraidYamux,
        Lib::Yamux,
        Lib::TokioYamux,
        Lib::AsyncSmux,
        Lib::TokioSmux,
        Lib::GoSmux1,
        Lib::GoSmux2,
        Lib::GoYamux,
    ];

    /// The name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Lib::Tcp => "tcp",
            Lib::BraidSmux1 => "braid-smux1",
            Lib::BraidSmux2 => "braid-smux2",
            Lib::BraidYamux => "braid-yamux",
            Lib::Yamux => "yamux",
            Lib::TokioYamux => "tokio-yamux",
            Lib::AsyncSmux => "async_smux",
            Lib::TokioSmux => "tokio_smux",
            Lib::GoSmux1 => "go-smux1",
            Lib::GoSmux2 => "go-smux2",
            Lib::GoYamux => "go-yamux",
        }
    }

    /// The `--lib` value of the child: the Rust peer's name, or the Go peer's.
    fn peer_name(self) -> &'static str {
        match self {
            Lib::Tcp => "tcp",
            Lib::BraidSmux1 => "braid-smux1",
            Lib::BraidSmux2 => "braid-smux2",
            Lib::BraidYamux => "braid-yamux",
            Lib::Yamux => "yamux",
            Lib::TokioYamux => "tokio-yamux",
            Lib::AsyncSmux => "async-smux",
            Lib::TokioSmux => "tokio-smux",
            Lib::GoSmux1 => "smux1",
            Lib::GoSmux2 => "smux2",
            Lib::GoYamux => "yamux",
        }
    }

    fn is_go(self) -> bool {
        matches!(self, Lib::GoSmux1 | Lib::GoSmux2 | Lib::GoYamux)
    }
}

/// A workload of the comparison.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 1 stream x 2 GB.
    Bulk1,
    /// 16 streams x 100 MB.
    Bulk16,
    /// 1000 streams x 2 MB.
    Bulk1000,
    /// 64-byte ping-pong on one stream, 100k round trips.
    Latency,
    /// Open, echo 1 byte, close, for 10 s.
    Churn,
}

/// Size of each bulk write.
const BULK_CHUNK: u64 = 128 * 1024;
/// Latency message size.
const PING_SIZE: u64 = 64;

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 5] = [
        Workload::Bulk1,
        Workload::Bulk16,
        Workload::Bulk1000,
        Workload::Latency,
        Workload::Churn,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Bulk1 => "bulk1",
            Workload::Bulk16 => "bulk16",
            Workload::Bulk1000 => "bulk1000",
            Workload::Latency => "latency",
            Workload::Churn => "churn",
        }
    }

    /// (streams, bytes per stream) of a bulk workload at full scale.
    fn bulk_shape(self) -> Option<(u64, u64)> {
        match self {
            Workload::Bulk1 => Some((1, 2_000_000_000)),
            Workload::Bulk16 => Some((16, 100_000_000)),
            Workload::Bulk1000 => Some((1000, 2_000_000)),
            _ => None,
        }
    }

    /// The child's workload flags at `scale`, and how long it may take.
    fn plan(self, scale: f64) -> (Vec<String>, Duration) {
        let scaled = |v: u64, min: u64| ((v as f64 * scale).round() as u64).max(min);
        match self {
            Workload::Latency => {
                let round_trips = scaled(100_000, 100);
                let args = vec![
                    "--workload".into(),
                    "latency".into(),
                    "--round-trips".into(),
                    round_trips.to_string(),
                    "--size".into(),
                    PING_SIZE.to_string(),
                ];
                // 1 ms per round trip is 20x what any library here needs on loopback.
                (
                    args,
                    Duration::from_secs(60) + Duration::from_millis(round_trips),
                )
            }
            Workload::Churn => {
                let ms = scaled(10_000, 100);
                let args = vec![
                    "--workload".into(),
                    "churn".into(),
                    "--duration-ms".into(),
                    ms.to_string(),
                ];
                (args, Duration::from_secs(60) + Duration::from_millis(ms))
            }
            bulk => {
                let (streams, per_stream) = bulk.bulk_shape().expect("a bulk workload");
                let per_stream = scaled(per_stream, 1);
                let args = vec![
                    "--workload".into(),
                    "bulk".into(),
                    "--streams".into(),
                    streams.to_string(),
                    "--bytes".into(),
                    per_stream.to_string(),
                    "--chunk".into(),
                    BULK_CHUNK.to_string(),
                ];
                // Allow for 10 MB/s, far below the slowest library here.
                let secs = (streams * per_stream) as f64 / 10e6;
                (
                    args,
                    Duration::from_secs(60) + Duration::from_secs_f64(secs),
                )
            }
        }
    }
}

/// Options of `braid-bench compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Libraries to compare (comma-separated); raw TCP is always measured as the
    /// baseline.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub libs: Vec<Lib>,
    /// Workloads to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Runs of each (library, workload); the tables show medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Multiplies byte counts, round trips and the churn duration (1.0: the full sizes).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seconds one child may run before it is killed and reported as timed out
    /// (default: 60 s plus a generous allowance for the workload's size).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Print the results as JSON (every run and the summary) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One run as the runner records it.
#[derive(Debug, Serialize)]
struct Run {
    lib: Lib,
    workload: Workload,
    repeat: usize,
    sample: Sample,
}

/// Why no Go peer can run.
#[derive(Debug, Clone)]
enum GoUnavailable {
    /// Not applicable on this machine (no Go toolchain).
    NotApplicable(String),
    /// The Go peer exists but could not be built or found.
    Failed(String),
}

/// Runs the comparison.
pub fn run(args: CompareArgs) -> io::Result<()> {
    if args.repeat == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--repeat must be at least 1",
        ));
    }
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--scale must be a positive number",
        ));
    }
    let mut libs = if args.libs.is_empty() {
        Lib::ALL.to_vec()
    } else {
        args.libs.clone()
    };
    libs.push(Lib::Tcp);
    libs.sort();
    libs.dedup();
    let mut workloads = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workloads.clone()
    };
    workloads.sort();
    workloads.dedup();

    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build measures debug children: use cargo run --release");
    }
    let exe = std::env::current_exe()?;
    let go = if libs.iter().any(|l| l.is_go()) {
        eprintln!("building the Go peer ...");
        Some(go_peer(&exe))
    } else {
        None
    };

    let total = args.repeat * workloads.len() * libs.len();
    let mut runs = Vec::with_capacity(total);
    let started = Instant::now();
    for repeat in 0..args.repeat {
        for &workload in &workloads {
            let (flags, default_timeout) = workload.plan(args.scale);
            let timeout = args
                .timeout
                .map(Duration::from_secs_f64)
                .unwrap_or(default_timeout);
            for &lib in &libs {
                let t0 = Instant::now();
                let sample = if lib.is_go() {
                    match go.as_ref().expect("resolved when a Go library is selected") {
                        Ok(bin) => run_child(bin, &[], lib, &flags, timeout),
                        Err(GoUnavailable::NotApplicable(why)) => Sample::not_applicable(why),
                        Err(GoUnavailable::Failed(why)) => Sample::failed(why.clone()),
                    }
                } else {
                    run_child(&exe, &["peer"], lib, &flags, timeout)
                };
                eprintln!(
                    "[{:>3}/{total}] {:<9} {:<12} {:>6.1} s  {}",
                    runs.len() + 1,
                    workload.name(),
                    lib.name(),
                    t0.elapsed().as_secs_f64(),
                    brief(&sample)
                );
                runs.push(Run {
                    lib,
                    workload,
                    repeat,
                    sample,
                });
            }
        }
    }
    eprintln!("{total} runs in {:.0} s", started.elapsed().as_secs_f64());

    let rows = summarize(&runs, &libs, &workloads);
    if args.json {
        #[derive(Serialize)]
        struct Output<'a> {
            scale: f64,
            repeat: usize,
            rows: &'a [Row],
            runs: &'a [Run],
        }
        let out = Output {
            scale: args.scale,
            repeat: args.repeat,
            rows: &rows,
            runs: &runs,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(io::Error::other)?
        );
    } else {
        print_tables(&rows, &workloads, args.scale, args.repeat);
    }
    Ok(())
}

/// A one-line summary of a run for the progress output.
fn brief(s: &Sample) -> String {
    if let Some(na) = &s.na {
        return format!("n/a: {na}");
    }
    if !s.ok {
        return format!("failed: {}", s.error.as_deref().unwrap_or("unknown"));
    }
    if let Some(v) = s.mb_per_s {
        return format!("{v:.0} MB/s");
    }
    if let (Some(p50), Some(p99)) = (s.p50_us, s.p99_us) {
        return format!("p50 {p50:.1} us, p99 {p99:.1} us");
    }
    if let Some(v) = s.streams_per_s {
        return format!("{v:.0} streams/s");
    }
    "ok".into()
}

/// Finds or builds the Go peer: `$BRAID_BENCH_GO` if set, else `go build` of
/// `bench/go` into `<target>/go/braid-bench-go` (GOPATH mode against Debian's packages
/// in /usr/share/gocode, or `$BRAID_BENCH_GOPATH`).
fn go_peer(exe: &Path) -> Result<PathBuf, GoUnavailable> {
    if let Some(bin) = std::env::var_os("BRAID_BENCH_GO") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(GoUnavailable::Failed(format!(
                "BRAID_BENCH_GO={} is not a file",
                bin.display()
            )))
        };
    }
    match Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(GoUnavailable::NotApplicable("go not installed".into()))
        }
        Err(e) => return Err(GoUnavailable::Failed(format!("go version: {e}"))),
        Ok(_) => {}
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    // <target>/release/braid-bench -> <target>/go/
    let out_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("go"))
        .ok_or_else(|| GoUnavailable::Failed("cannot place the Go peer".into()))?;
    let bin = out_dir.join("braid-bench-go");
    if !src.join("main.go").is_file() {
        // A relocated binary without its sources: use a peer built earlier, if any.
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(GoUnavailable::Failed(format!(
                "no Go sources at {} and no peer at {}",
                src.display(),
                bin.display()
            )))
        };
    }
    let gopath =
        std::env::var_os("BRAID_BENCH_GOPATH").unwrap_or_else(|| "/usr/share/gocode".into());
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", out_dir.join("cache"));
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(bin),
        Ok(out) => Err(GoUnavailable::Failed(format!(
            "go build: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(GoUnavailable::Failed(format!("go build: {e}"))),
    }
}

/// Runs one child (`program pre_args --lib <lib> <flags>`) and reads its JSON line; a
/// child that fails, prints no result or outlives `timeout` yields a failed sample.
fn run_child(
    program: &Path,
    pre_args: &[&str],
    lib: Lib,
    flags: &[String],
    timeout: Duration,
) -> Sample {
    let mut child = match Command::new(program)
        .args(pre_args)
        .arg("--lib")
        .arg(lib.peer_name())
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Sample::failed(format!("cannot start {}: {e}", program.display())),
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let mut bytes = Vec::new();
                let _ = p.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Sample::failed(format!("waiting for the child: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Sample::failed(format!("timed out after {:.1} s", timeout.as_secs_f64()));
    };
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    match line.map(serde_json::from_str::<Sample>) {
        Some(Ok(sample)) => sample,
        Some(Err(e)) => Sample::failed(format!("unreadable result ({e}): {}", line.unwrap_or(""))),
        None => {
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            Sample::failed(format!("{status}: {last}"))
        }
    }
}

/// Medians of one (library, workload) over its successful runs.
#[derive(Debug, Serialize)]
struct Row {
    lib: Lib,
    workload: Workload,
    /// Successful runs / all runs.
    ok_runs: usize,
    runs: usize,
    /// Why every run was n/a, or why the runs failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    na: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    streams_per_s: Option<f64>,
    /// Throughput or stream rate in % of raw TCP's median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pct_of_tcp: Option<f64>,
    /// Latency: p50 and p99 as multiples of raw TCP's.
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_vs_tcp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_vs_tcp: Option<f64>,
    /// CPU seconds per GB (bulk) or microseconds per round trip / stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<f64>,
    peak_rss_mib: Option<f64>,
}

/// The median of the values (`None` for none).
fn median(mut v: Vec<f64>) -> Option<f64> {
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

fn summarize(runs: &[Run], libs: &[Lib], workloads: &[Workload]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &workload in workloads {
        let mut by_lib: BTreeMap<Lib, Row> = BTreeMap::new();
        for &lib in libs {
            let all: Vec<&Sample> = runs
                .iter()
                .filter(|r| r.lib == lib && r.workload == workload)
                .map(|r| &r.sample)
                .collect();
            let ok: Vec<&Sample> = all.iter().copied().filter(|s| s.ok).collect();
            let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
                median(ok.iter().filter_map(|s| f(s)).collect())
            };
            let na = all.iter().find_map(|s| s.na.clone());
            let failure = all
                .iter()
                .filter(|s| !s.ok && s.na.is_none())
                .map(|s| s.error.clone().unwrap_or_else(|| "unknown".into()))
                .next();
            let mut notes: Vec<String> = ok.iter().filter_map(|s| s.note.clone()).collect();
            notes.dedup();
            let cpu = match workload {
                Workload::Latency => {
                    med(&|s| Some(s.cpu_s * 1e6 / s.round_trips.unwrap_or(1).max(1) as f64))
                }
                Workload::Churn => med(&|s| Some(s.cpu_s * 1e6 / s.streams.max(1) as f64)),
                _ => med(&|s| Some(s.cpu_s / (s.bytes.max(1) as f64 / 1e9))),
            };
            by_lib.insert(
                lib,
                Row {
                    lib,
                    workload,
                    ok_runs: ok.len(),
                    runs: all.len(),
                    na,
                    failure,
                    note: notes.first().cloned(),
                    mb_per_s: med(&|s| s.mb_per_s),
                    p50_us: med(&|s| s.p50_us),
                    p99_us: med(&|s| s.p99_us),
                    streams_per_s: med(&|s| s.streams_per_s),
                    pct_of_tcp: None,
                    p50_vs_tcp: None,
                    p99_vs_tcp: None,
                    cpu,
                    peak_rss_mib: med(&|s| Some(s.peak_rss_kib as f64 / 1024.0)),
                },
            );
        }
        let tcp = by_lib
            .get(&Lib::Tcp)
            .map(|r| (r.mb_per_s, r.streams_per_s, r.p50_us, r.p99_us));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        for &lib in libs {
            let mut row = by_lib.remove(&lib).expect("inserted above");
            if let Some((mbps, sps, p50, p99)) = tcp {
                row.pct_of_tcp = ratio(row.mb_per_s, mbps)
                    .or(ratio(row.streams_per_s, sps))
                    .map(|r| r * 100.0);
                row.p50_vs_tcp = ratio(row.p50_us, p50);
                row.p99_vs_tcp = ratio(row.p99_us, p99);
            }
            rows.push(row);
        }
    }
    rows
}

fn fmt_opt(v: Option<f64>, decimals: usize, suffix: &str) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}{suffix}"),
        None => "-".into(),
    }
}

/// The cell text for a row without successful runs, or `None`.
fn missing(row: &Row) -> Option<String> {
    if row.ok_runs > 0 {
        return None;
    }
    Some(match (&row.na, &row.failure) {
        (Some(na), _) => format!("n/a: {na}"),
        (None, Some(f)) => format!("failed: {f}"),
        (None, None) => "no runs".into(),
    })
}

fn print_tables(rows: &[Row], workloads: &[Workload], scale: f64, repeat: usize) {
    println!(
        "braid-bench compare: scale {scale}, median of {repeat} run(s) each, loopback TCP, \
         client and server in one process per run"
    );
    for &workload in workloads {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        println!();
        match workload.bulk_shape() {
            Some((streams, per_stream)) => {
                let per = ((per_stream as f64 * scale).round() as u64).max(1);
                println!(
                    "{}: {streams} stream(s) x {} in {} KiB writes, then a 1-byte reply",
                    workload.name(),
                    human_bytes(per),
                    BULK_CHUNK / 1024
                );
                println!(
                    "{:<12} {:>9} {:>9} {:>10} {:>9} {:>5}",
                    "library", "MB/s", "% of TCP", "CPU s/GB", "RSS MiB", "runs"
                );
                for r in &rows {
                    match missing(r) {
                        Some(text) => println!("{:<12} {text}", r.lib.name()),
                        None => println!(
                            "{:<12} {:>9} {:>9} {:>10} {:>9} {:>5}",
                            r.lib.name(),
                            fmt_opt(r.mb_per_s, 0, ""),
                            fmt_opt(r.pct_of_tcp, 0, "%"),
                            fmt_opt(r.cpu, 2, ""),
                            fmt_opt(r.peak_rss_mib, 1, ""),
                            format!("{}/{}", r.ok_runs, r.runs)
                        ),
                    }
                }
            }
            None if workload == Workload::Latency => {
                let n = ((100_000.0 * scale).round() as u64).max(100);
                println!(
                    "latency: {PING_SIZE}-byte ping-pong on one stream, {n} round trips \
                     (x TCP: multiple of raw TCP's time)"
                );
                println!(
                    "{:<12} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>5}",
                    "library",
                    "p50 us",
                    "p99 us",
                    "p50 xTCP",
                    "p99 xTCP",
                    "CPU us/RT",
                    "RSS MiB",
                    "runs"
                );
                for r in &rows {
                    match missing(r) {
                        Some(text) => println!("{:<12} {text}", r.lib.name()),
                        None => println!(
                            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>5}",
                            r.lib.name(),
                            fmt_opt(r.p50_us, 1, ""),
                            fmt_opt(r.p99_us, 1, ""),
                            fmt_opt(r.p50_vs_tcp, 2, ""),
                            fmt_opt(r.p99_vs_tcp, 2, ""),
                            fmt_opt(r.cpu, 1, ""),
                            fmt_opt(r.peak_rss_mib, 1, ""),
                            format!("{}/{}", r.ok_runs, r.runs)
                        ),
                    }
                }
            }
            None => {
                let ms = ((10_000.0 * scale).round() as u64).max(100);
                println!(
                    "churn: open a stream, echo 1 byte, close, one after another for {:.1} s \
                     (TCP: a new connection each time)",
                    ms as f64 / 1e3
                );
                println!(
                    "{:<12} {:>10} {:>9} {:>13} {:>9} {:>5}",
                    "library", "streams/s", "% of TCP", "CPU us/strm", "RSS MiB", "runs"
                );
                for r in &rows {
                    match missing(r) {
                        Some(text) => println!("{:<12} {text}", r.lib.name()),
                        None => println!(
                            "{:<12} {:>10} {:>9} {:>13} {:>9} {:>5}",
                            r.lib.name(),
                            fmt_opt(r.streams_per_s, 0, ""),
                            fmt_opt(r.pct_of_tcp, 0, "%"),
                            fmt_opt(r.cpu, 1, ""),
                            fmt_opt(r.peak_rss_mib, 1, ""),
                            format!("{}/{}", r.ok_runs, r.runs)
                        ),
                    }
                }
            }
        }
        for r in &rows {
            if let Some(note) = &r.note {
                println!("  note {}: {note}", r.lib.name());
            }
            if r.ok_runs > 0 && r.ok_runs < r.runs {
                println!(
                    "  note {}: {} of {} runs failed: {}",
                    r.lib.name(),
                    r.runs - r.ok_runs,
                    r.runs,
                    r.failure.as_deref().unwrap_or("unknown")
                );
            }
        }
    }
}

fn human_bytes(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{} GB", b as f64 / 1e9)
    } else if b >= 1_000_000 {
        format!("{} MB", b as f64 / 1e6)
    } else if b >= 1_000 {
        format!("{} KB", b as f64 / 1e3)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn plans_scale_the_workloads() {
        let (args, _) = Workload::Bulk16.plan(0.5);
        let at = |name: &str| args[args.iter().position(|a| a == name).unwrap() + 1].clone();
        assert_eq!(at("--streams"), "16");
        assert_eq!(at("--bytes"), "50000000");
        let (args, _) = Workload::Latency.plan(1.0);
        assert!(args.contains(&"100000".to_string()));
        let (args, t) = Workload::Churn.plan(0.0001);
        assert!(args.contains(&"100".to_string()), "at least 100 ms");
        assert!(t >= Duration::from_secs(60));
    }

    #[test]
    fn rows_compare_with_tcp() {
        let sample = |mbps: f64| Sample {
            ok: true,
            bytes: 1_000_000_000,
            mb_per_s: Some(mbps),
            cpu_s: 2.0,
            peak_rss_kib: 2048,
            ..Sample::default()
        };
        let runs = vec![
            Run {
                lib: Lib::Tcp,
                workload: Workload::Bulk1,
                repeat: 0,
                sample: sample(200.0),
            },
            Run {
                lib: Lib::Yamux,
                workload: Workload::Bulk1,
                repeat: 0,
                sample: sample(100.0),
            },
            Run {
                lib: Lib::GoSmux1,
                workload: Workload::Bulk1,
                repeat: 0,
                sample: Sample::not_applicable("go not installed"),
            },
        ];
        let rows = summarize(
            &runs,
            &[Lib::Tcp, Lib::Yamux, Lib::GoSmux1],
            &[Workload::Bulk1],
        );
        assert_eq!(rows[1].pct_of_tcp, Some(50.0));
        assert_eq!(rows[1].cpu, Some(2.0));
        assert_eq!(rows[1].peak_rss_mib, Some(2.0));
        assert_eq!(missing(&rows[2]).as_deref(), Some("n/a: go not installed"));
    }
}
