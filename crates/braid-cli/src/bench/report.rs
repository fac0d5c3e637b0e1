//! Medians over the repeats, ratios to raw TCP and to the best peer of the same protocol,
//! and the output: a table per workload and a one-line summary, or JSON.

use super::runner::{Lib, Run, Spec, PING_SIZE};
use super::sample::Sample;
use super::{median, BenchArgs, Proto};
use serde::Serialize;
use std::io;

/// One (workload, library) with the medians of its successful runs.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The workload and its size.
    #[serde(flatten)]
    pub spec: Spec,
    /// The library.
    pub lib: Lib,
    /// The protocol it speaks (none for raw TCP).
    pub protocol: Option<Proto>,
    /// Runs made.
    pub runs: usize,
    /// Runs that succeeded.
    pub ok_runs: usize,
    /// Why the library cannot do this workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub na: Option<String>,
    /// Why a run failed (the first one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// A workaround a run needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The main figure: MB/s (bulk), p50 µs (latency), streams/s (churn), bytes per
    /// stream (idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The main figure relative to raw TCP's (latency: a multiple of its time; others: a
    /// fraction of its rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_tcp: Option<f64>,
    /// For braid: the main figure relative to the best peer of the same protocol (for
    /// latency and idle a multiple of its time or memory, else a multiple of its rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_best_peer: Option<f64>,
    /// That peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_peer: Option<Lib>,
    /// Tunnel with authentication: the main figure relative to the same tunnel without
    /// (1 - this is the cost of authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_plain: Option<f64>,
    /// Latency: p99 round trip in µs, and as a multiple of TCP's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    /// p99 as a multiple of raw TCP's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_vs_tcp: Option<f64>,
    /// CPU seconds (user + system, whole process) of the measured part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// Bulk: CPU seconds per GB moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    /// Peak RSS of the process, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// Whether a smaller main figure is better (latency, idle memory).
fn lower_is_better(spec: &Spec) -> bool {
    matches!(spec, Spec::Latency { .. } | Spec::Idle { .. })
}

/// The main figure of one run.
fn value(spec: &Spec, s: &Sample) -> Option<f64> {
    match spec {
        Spec::Bulk { .. } | Spec::Tunnel { .. } => s.mb_per_s,
        Spec::Latency { .. } => s.p50_us,
        Spec::Churn { .. } => s.streams_per_s,
        Spec::Idle { .. } => s
            .rss_growth_kib
            .map(|kib| kib as f64 * 1024.0 / s.streams.max(1) as f64),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Medians and ratios for every (spec, library), in spec then library order.
pub fn summarize(specs: &[Spec], libs: &[Lib], runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let first = rows.len();
        for &lib in libs.iter().filter(|&&l| spec.applies_to(l)) {
            let all: Vec<&Sample> = runs
                .iter()
                .filter(|r| r.spec == i && r.lib == lib)
                .map(|r| &r.sample)
                .collect();
            let ok: Vec<&Sample> = all.iter().copied().filter(|s| s.ok).collect();
            let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
                median(ok.iter().filter_map(|s| f(s)).collect())
            };
            rows.push(Row {
                spec: spec.clone(),
                lib,
                protocol: lib.protocol(),
                runs: all.len(),
                ok_runs: ok.len(),
                na: all.iter().find_map(|s| s.na.clone()),
                failure: all
                    .iter()
                    .find(|s| !s.ok && s.na.is_none())
                    .map(|s| s.error.clone().unwrap_or_else(|| "unknown".into())),
                note: ok.iter().find_map(|s| s.note.clone()),
                value: med(&|s| value(spec, s)),
                vs_tcp: None,
                vs_best_peer: None,
                best_peer: None,
                vs_plain: None,
                p99_us: med(&|s| s.p99_us),
                p99_vs_tcp: None,
                cpu_s: med(&|s| Some(s.cpu_s)),
                cpu_s_per_gb: match spec {
                    Spec::Bulk { .. } | Spec::Tunnel { .. } => {
                        med(&|s| Some(s.cpu_s / (s.bytes.max(1) as f64 / 1e9)))
                    }
                    _ => None,
                },
                peak_rss_mib: med(&|s| Some(s.peak_rss_kib as f64 / 1024.0)),
            });
        }
        let these = &mut rows[first..];
        let tcp = these
            .iter()
            .find(|r| r.lib == Lib::Tcp)
            .map(|r| (r.value, r.p99_us));
        let lower = lower_is_better(spec);
        let best_peer = |p: Proto, rows: &[Row]| -> Option<(Lib, f64)> {
            rows.iter()
                .filter(|r| r.lib.is_peer() && r.protocol == Some(p))
                .filter_map(|r| r.value.map(|v| (r.lib, v)))
                .reduce(|a, b| if (b.1 < a.1) == lower { b } else { a })
        };
        let bests: Vec<Option<(Lib, f64)>> = these
            .iter()
            .map(|r| match r.protocol {
                Some(p) if !r.lib.is_peer() => best_peer(p, these),
                _ => None,
            })
            .collect();
        let plain: Vec<Option<f64>> = these
            .iter()
            .map(|r| {
                let base = r.lib.unauthenticated()?;
                these.iter().find(|p| p.lib == base)?.value
            })
            .collect();
        for ((row, best), plain) in these.iter_mut().zip(bests).zip(plain) {
            row.vs_plain = ratio(row.value, plain);
            if let Some((tcp_value, tcp_p99)) = tcp {
                row.vs_tcp = ratio(row.value, tcp_value);
                row.p99_vs_tcp = ratio(row.p99_us, tcp_p99);
            }
            if let Some((lib, v)) = best {
                row.best_peer = Some(lib);
                row.vs_best_peer = ratio(row.value, Some(v));
            }
        }
    }
    rows
}

/// Prints `{"rows": [...], "runs": [...]}`.
pub fn print_json(rows: &[Row], runs: &[Run]) -> io::Result<()> {
    #[derive(Serialize)]
    struct Output<'a> {
        rows: &'a [Row],
        runs: &'a [Run],
    }
    let text = serde_json::to_string_pretty(&Output { rows, runs }).map_err(io::Error::other)?;
    println!("{text}");
    Ok(())
}

/// Bytes in the units people read (decimal, as the sizes are given).
pub fn human_bytes(b: u64) -> String {
    // Decimal when the count is round in decimal (2G, 100M), binary when round in binary
    // (512MiB, 128KiB).
    let (v, unit) = match b {
        _ if b >= 1_000_000_000 && b.is_multiple_of(100_000_000) => (b as f64 / 1e9, "GB"),
        _ if b >= 1_000_000 && b.is_multiple_of(100_000) => (b as f64 / 1e6, "MB"),
        _ if b >= 1_000 && b.is_multiple_of(100) => (b as f64 / 1e3, "KB"),
        _ if b >= 1 << 30 && b.is_multiple_of(1 << 20) => (b as f64 / (1u64 << 30) as f64, "GiB"),
        _ if b >= 1 << 20 && b.is_multiple_of(1 << 10) => (b as f64 / (1u64 << 20) as f64, "MiB"),
        _ if b >= 1 << 10 && b.is_multiple_of(1 << 10) => (b as f64 / 1024.0, "KiB"),
        _ if b >= 1_000_000_000 => (b as f64 / 1e9, "GB"),
        _ if b >= 1_000_000 => (b as f64 / 1e6, "MB"),
        _ if b >= 1_000 => (b as f64 / 1e3, "KB"),
        _ => (b as f64, "B"),
    };
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
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

/// Prints one table per spec, then the summary line.
pub fn print_tables(rows: &[Row], specs: &[Spec], args: &BenchArgs) {
    let repeat = args.repeat;
    println!(
        "runtime: tokio {}, client and server in one fresh process per run, median of {repeat}",
        if args.current_thread {
            "current-thread (one thread)"
        } else {
            "multi-thread, 2 workers"
        }
    );
    let any_peer = rows.iter().any(|r| r.lib.is_peer());
    for spec in specs {
        let rows: Vec<&Row> = rows.iter().filter(|r| &r.spec == spec).collect();
        println!();
        let cols: [&str; 7] = match spec {
            Spec::Bulk {
                streams,
                per_stream,
                chunk,
            } => {
                println!(
                    "bulk: {streams} stream(s) x {} in {} writes, a 1-byte reply each",
                    human_bytes(*per_stream),
                    human_bytes(*chunk as u64)
                );
                [
                    "MB/s", "% TCP", "x peer", "CPU s", "CPU s/GB", "RSS MiB", "",
                ]
            }
            Spec::Latency { round_trips } => {
                println!(
                    "latency: {PING_SIZE}-byte ping-pong on one stream, {round_trips} round trips \
                     (x: multiple of the time)"
                );
                [
                    "p50 us",
                    "p99 us",
                    "p50 xTCP",
                    "p99 xTCP",
                    "p50 xpeer",
                    "CPU s",
                    "",
                ]
            }
            Spec::Churn {
                duration_ms,
                workers,
            } => {
                println!(
                    "churn: open, echo 1 byte, close, {workers} at a time for {} s \
                     (TCP: a connection each)",
                    *duration_ms as f64 / 1e3
                );
                ["streams/s", "% TCP", "x peer", "CPU s", "RSS MiB", "", ""]
            }
            Spec::Idle { streams } => {
                println!(
                    "idle: {streams} idle streams in one session, RSS growth of the process \
                     (both ends)"
                );
                ["B/stream", "x peer", "grown MiB", "RSS MiB", "", "", ""]
            }
            Spec::Tunnel {
                conns,
                per_conn,
                chunk,
            } => {
                println!(
                    "tunnel: {conns} parallel TCP connection(s) x {} in {} writes through \
                     client and server processes to a sink (tcp: direct); CPU and RSS: the two \
                     tunnel processes; x peer: against the Go tunnel; x plain: against the same \
                     tunnel without authentication",
                    human_bytes(*per_conn),
                    human_bytes(*chunk as u64)
                );
                [
                    "MB/s", "% TCP", "x peer", "x plain", "CPU s", "CPU s/GB", "RSS MiB",
                ]
            }
        };
        // Without peers the peer column would be all dashes.
        let shown: Vec<bool> = cols
            .iter()
            .map(|c| !c.is_empty() && (any_peer || !c.contains("peer")))
            .collect();
        let w = rows.iter().map(|r| r.lib.name().len()).fold(12, usize::max);
        print!("{:<w$}", "library");
        for (c, _) in cols.iter().zip(&shown).filter(|(_, &s)| s) {
            print!(" {c:>9}");
        }
        println!(" {:>5}", "runs");
        for r in &rows {
            let cells: Vec<String> = match spec {
                Spec::Tunnel { .. } => vec![
                    fmt(r.value, 0),
                    pct(r.vs_tcp),
                    fmt(r.vs_best_peer, 2),
                    fmt(r.vs_plain, 2),
                    fmt(r.cpu_s, 2),
                    fmt(r.cpu_s_per_gb, 2),
                    fmt(r.peak_rss_mib, 1),
                ],
                Spec::Bulk { .. } => vec![
                    fmt(r.value, 0),
                    pct(r.vs_tcp),
                    fmt(r.vs_best_peer, 2),
                    fmt(r.cpu_s, 2),
                    fmt(r.cpu_s_per_gb, 2),
                    fmt(r.peak_rss_mib, 1),
                ],
                Spec::Latency { .. } => vec![
                    fmt(r.value, 1),
                    fmt(r.p99_us, 1),
                    fmt(r.vs_tcp, 2),
                    fmt(r.p99_vs_tcp, 2),
                    fmt(r.vs_best_peer, 2),
                    fmt(r.cpu_s, 2),
                ],
                Spec::Churn { .. } => vec![
                    fmt(r.value, 0),
                    pct(r.vs_tcp),
                    fmt(r.vs_best_peer, 2),
                    fmt(r.cpu_s, 2),
                    fmt(r.peak_rss_mib, 1),
                ],
                Spec::Idle { .. } => vec![
                    fmt(r.value, 0),
                    fmt(r.vs_best_peer, 2),
                    fmt(
                        r.value
                            .map(|v| v * r.spec_streams() as f64 / (1 << 20) as f64),
                        1,
                    ),
                    fmt(r.peak_rss_mib, 1),
                ],
            };
            match missing(r) {
                Some(text) => println!("{:<w$} {text}", r.lib.name()),
                None => {
                    print!("{:<w$}", r.lib.name());
                    for (c, _) in cells.iter().zip(&shown).filter(|(_, &s)| s) {
                        print!(" {c:>9}");
                    }
                    println!(" {:>5}", format!("{}/{}", r.ok_runs, r.runs));
                }
            }
        }
        let mut bests: Vec<String> = rows
            .iter()
            .filter_map(|r| Some(format!("{} {}", r.protocol?.name(), r.best_peer?.name())))
            .collect();
        bests.dedup();
        if !bests.is_empty() {
            println!(
                "  x peer: braid against the best peer of its protocol ({})",
                bests.join(", ")
            );
        } else if any_peer {
            println!("  x peer: no peer of the same protocol succeeded");
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
    println!();
    println!("summary: {}", summary(rows).join("; "));
}

impl Row {
    fn spec_streams(&self) -> usize {
        match self.spec {
            Spec::Bulk { streams, .. } | Spec::Idle { streams } => streams,
            Spec::Tunnel { conns, .. } => conns,
            _ => 1,
        }
    }
}

/// The one-line summary: braid's worst figure per workload against TCP and, where peers
/// ran, against the best peer.
fn summary(rows: &[Row]) -> Vec<String> {
    let braid = || {
        rows.iter()
            .filter(|r| !r.lib.is_peer() && r.lib != Lib::Tcp)
    };
    let worst = |kind: fn(&Spec) -> bool,
                 field: fn(&Row) -> Option<f64>,
                 higher_worse: bool|
     -> Option<(&Row, f64)> {
        braid()
            .filter(|r| kind(&r.spec))
            .filter_map(|r| field(r).map(|v| (r, v)))
            .reduce(|a, b| if (b.1 > a.1) == higher_worse { b } else { a })
    };
    let is_bulk = |s: &Spec| matches!(s, Spec::Bulk { .. });
    let is_latency = |s: &Spec| matches!(s, Spec::Latency { .. });
    let is_churn = |s: &Spec| matches!(s, Spec::Churn { .. });
    let is_idle = |s: &Spec| matches!(s, Spec::Idle { .. });
    let is_tunnel = |s: &Spec| matches!(s, Spec::Tunnel { .. });
    let mut out = Vec::new();
    if let Some((r, v)) = worst(is_bulk, |r| r.vs_tcp, false) {
        out.push(format!(
            "bulk >= {:.0}% of TCP (lowest: {} x{})",
            v * 100.0,
            r.lib.name(),
            r.spec_streams()
        ));
    }
    if let Some((r, v)) = worst(is_bulk, |r| r.vs_best_peer, false) {
        out.push(format!(
            "bulk >= {v:.2}x the best same-protocol peer (lowest: {} x{} against {})",
            r.lib.name(),
            r.spec_streams(),
            r.best_peer.map_or("-", Lib::name)
        ));
    }
    if let Some((r, v)) = worst(is_latency, |r| r.vs_tcp, true) {
        out.push(format!("latency p50 <= {v:.2}x TCP ({})", r.lib.name()));
    }
    if let Some((r, v)) = worst(is_churn, |r| r.vs_tcp, false) {
        out.push(format!(
            "churn >= {:.0}% of TCP ({})",
            v * 100.0,
            r.lib.name()
        ));
    }
    if let Some((r, v)) = worst(is_idle, |r| r.value, true) {
        out.push(format!("idle <= {v:.0} B/stream ({})", r.lib.name()));
    }
    let plain_tunnel = |r: &Row| (!r.lib.is_authenticated()).then_some(r.vs_tcp).flatten();
    if let Some((r, v)) = worst(is_tunnel, plain_tunnel, false) {
        out.push(format!(
            "tunnel >= {:.0}% of direct TCP (lowest: {} x{})",
            v * 100.0,
            r.lib.name(),
            r.spec_streams()
        ));
    }
    let plain_vs_go = |r: &Row| {
        (!r.lib.is_authenticated())
            .then_some(r.vs_best_peer)
            .flatten()
    };
    if let Some((r, v)) = worst(is_tunnel, plain_vs_go, false) {
        out.push(format!(
            "tunnel >= {v:.2}x the Go tunnel (lowest: {} x{})",
            r.lib.name(),
            r.spec_streams()
        ));
    }
    if let Some((r, v)) = worst(is_tunnel, |r| r.vs_plain, false) {
        out.push(format!(
            "authentication costs <= {:.0}% (most: {} x{})",
            (1.0 - v) * 100.0,
            r.lib.name(),
            r.spec_streams()
        ));
    }
    if out.is_empty() {
        out.push("no braid run succeeded".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: usize, lib: Lib, mb_per_s: f64) -> Run {
        Run {
            spec,
            lib,
            repeat: 0,
            sample: Sample {
                ok: true,
                bytes: 1_000_000_000,
                mb_per_s: Some(mb_per_s),
                cpu_s: 2.0,
                peak_rss_kib: 2048,
                ..Sample::default()
            },
        }
    }

    #[test]
    fn rows_compare_with_tcp_and_the_best_peer() {
        let spec = Spec::Bulk {
            streams: 1,
            per_stream: 1_000_000_000,
            chunk: 131072,
        };
        let libs = [
            Lib::Tcp,
            Lib::BraidSmux1,
            Lib::GoSmux1,
            Lib::AsyncSmux,
            Lib::GoYamux,
        ];
        let mut runs = vec![
            run(0, Lib::Tcp, 200.0),
            run(0, Lib::BraidSmux1, 150.0),
            run(0, Lib::BraidSmux1, 100.0),
            run(0, Lib::BraidSmux1, 50.0),
            run(0, Lib::GoSmux1, 50.0),
            run(0, Lib::AsyncSmux, 80.0),
            run(0, Lib::GoYamux, 500.0),
        ];
        runs.push(Run {
            sample: Sample::not_applicable("go not installed"),
            ..run(0, Lib::GoYamux, 0.0)
        });
        let rows = summarize(&[spec], &libs, &runs);
        assert_eq!(rows.len(), 5);
        let smux1 = &rows[1];
        assert_eq!((smux1.runs, smux1.ok_runs), (3, 3));
        assert_eq!(smux1.value, Some(100.0));
        assert_eq!(smux1.vs_tcp, Some(0.5));
        // The best smux v1 peer (async_smux at 80), not the faster yamux one.
        assert_eq!(smux1.best_peer, Some(Lib::AsyncSmux));
        assert_eq!(smux1.vs_best_peer, Some(1.25));
        assert_eq!(smux1.cpu_s_per_gb, Some(2.0));
        assert_eq!(rows[2].vs_best_peer, None, "peers get no peer ratio");
        assert_eq!(missing(&rows[1]), None);
        let go_yamux = &rows[4];
        assert_eq!(go_yamux.na.as_deref(), Some("go not installed"));
    }

    #[test]
    fn latency_peers_compare_by_lowest_time() {
        let spec = Spec::Latency { round_trips: 10 };
        let lat = |lib, p50| Run {
            spec: 0,
            lib,
            repeat: 0,
            sample: Sample {
                ok: true,
                p50_us: Some(p50),
                p99_us: Some(p50 * 2.0),
                ..Sample::default()
            },
        };
        let runs = [
            lat(Lib::Tcp, 10.0),
            lat(Lib::BraidYamux, 15.0),
            lat(Lib::GoYamux, 30.0),
            lat(Lib::TokioYamux, 12.0),
        ];
        let libs = [Lib::Tcp, Lib::BraidYamux, Lib::GoYamux, Lib::TokioYamux];
        let rows = summarize(&[spec], &libs, &runs);
        assert_eq!(rows[1].vs_tcp, Some(1.5));
        assert_eq!(rows[1].p99_vs_tcp, Some(1.5));
        assert_eq!(rows[1].best_peer, Some(Lib::TokioYamux));
        assert_eq!(rows[1].vs_best_peer, Some(1.25));
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(2_000_000_000), "2 GB");
        assert_eq!(human_bytes(100_000_000), "100 MB");
        assert_eq!(human_bytes(131072), "128 KiB");
        assert_eq!(human_bytes(7), "7 B");
        assert_eq!(human_bytes(256_000), "256 KB");
        assert_eq!(human_bytes(1_234_567), "1.23 MB");
    }
}
