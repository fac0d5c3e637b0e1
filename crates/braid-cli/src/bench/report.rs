//! Output of `braid bench`: a table per workload and a one-line summary, or JSON.

use super::{bulk, churn, idle, latency, BenchArgs, Proto};
use serde::Serialize;

/// The summarized results, by workload (empty for workloads not run).
pub(super) struct Rows {
    pub(super) bulk: Vec<bulk::Row>,
    pub(super) latency: Vec<latency::Row>,
    pub(super) churn: Vec<churn::Row>,
    pub(super) idle: Vec<idle::Row>,
}

/// One JSON object: a row with its workload's name.
#[derive(Serialize)]
#[serde(tag = "workload", rename_all = "lowercase")]
enum Tagged<'a> {
    Bulk(&'a bulk::Row),
    Latency(&'a latency::Row),
    Churn(&'a churn::Row),
    Idle(&'a idle::Row),
}

/// Prints a JSON array with one object per row: `workload` and that workload's fields.
pub(super) fn print_json(rows: &Rows) {
    let all: Vec<Tagged> = (rows.bulk.iter().map(Tagged::Bulk))
        .chain(rows.latency.iter().map(Tagged::Latency))
        .chain(rows.churn.iter().map(Tagged::Churn))
        .chain(rows.idle.iter().map(Tagged::Idle))
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&all).expect("serializable")
    );
}

/// Prints one table per workload run, then the summary line.
pub(super) fn print_tables(rows: &Rows, args: &BenchArgs) {
    let repeat = args.repeat;
    let mut summary = Vec::new();
    println!(
        "runtime: tokio {}, client and server in this process",
        if args.current_thread {
            "current-thread (one thread)"
        } else {
            "multi-thread, 2 workers"
        }
    );
    if !rows.bulk.is_empty() {
        println!(
            "bulk: {} MB per run in {} KiB writes, loopback TCP, median of {repeat}",
            args.bytes / 1_000_000,
            args.chunk / 1024
        );
        println!(
            "{:<8} {:>7} {:>10} {:>9} {:>12} {:>13}",
            "proto", "streams", "MB/s", "% of TCP", "CPU s / GB", "peak RSS MiB"
        );
        for r in &rows.bulk {
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
        if let Some(w) =
            braid_rows(&rows.bulk, |r| r.proto).min_by(|a, b| a.pct_of_tcp.total_cmp(&b.pct_of_tcp))
        {
            summary.push(format!(
                "bulk >= {:.0}% of TCP (lowest: {} x{})",
                w.pct_of_tcp,
                w.proto.name(),
                w.streams
            ));
        }
        println!();
    }
    if !rows.latency.is_empty() {
        println!(
            "latency: 64-byte ping-pong on one stream, {} round trips per run, median of {repeat}",
            args.round_trips
        );
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>10}",
            "proto", "p50 us", "p99 us", "p50 x TCP", "p99 x TCP"
        );
        for r in &rows.latency {
            println!(
                "{:<8} {:>10.1} {:>10.1} {:>10.2} {:>10.2}",
                r.proto.name(),
                r.p50_us,
                r.p99_us,
                r.p50_vs_tcp,
                r.p99_vs_tcp
            );
        }
        let rows = || braid_rows(&rows.latency, |r| r.proto);
        if let (Some(p50), Some(p99)) = (
            rows().max_by(|a, b| a.p50_vs_tcp.total_cmp(&b.p50_vs_tcp)),
            rows().max_by(|a, b| a.p99_vs_tcp.total_cmp(&b.p99_vs_tcp)),
        ) {
            summary.push(format!(
                "latency p50 <= {:.2}x TCP ({}), p99 <= {:.2}x ({})",
                p50.p50_vs_tcp,
                p50.proto.name(),
                p99.p99_vs_tcp,
                p99.proto.name()
            ));
        }
        println!();
    }
    if !rows.churn.is_empty() {
        println!(
            "churn: open, echo 1 byte, close, {} at a time for {} s per run (TCP: a connection each), median of {repeat}",
            args.churn_workers, args.churn_secs
        );
        println!("{:<8} {:>10} {:>9}", "proto", "streams/s", "% of TCP");
        for r in &rows.churn {
            println!(
                "{:<8} {:>10.0} {:>8.0}%",
                r.proto.name(),
                r.streams_per_s,
                r.pct_of_tcp
            );
        }
        if let Some(w) = braid_rows(&rows.churn, |r| r.proto)
            .min_by(|a, b| a.pct_of_tcp.total_cmp(&b.pct_of_tcp))
        {
            summary.push(format!(
                "churn >= {:.0}% of TCP ({})",
                w.pct_of_tcp,
                w.proto.name()
            ));
        }
        println!();
    }
    if !rows.idle.is_empty() {
        println!(
            "idle: {} idle streams in one session, RSS growth of the process (both ends), median of {repeat}",
            args.idle_streams
        );
        println!("{:<8} {:>12} {:>11}", "proto", "bytes/stream", "growth MiB");
        for r in &rows.idle {
            println!(
                "{:<8} {:>12.0} {:>11.1}",
                r.proto.name(),
                r.rss_bytes_per_stream,
                r.rss_growth_mib
            );
        }
        if let Some(w) = rows
            .idle
            .iter()
            .max_by(|a, b| a.rss_bytes_per_stream.total_cmp(&b.rss_bytes_per_stream))
        {
            summary.push(format!(
                "idle <= {:.0} B/stream ({})",
                w.rss_bytes_per_stream,
                w.proto.name()
            ));
        }
        println!();
    }
    if !summary.is_empty() {
        println!("summary: {}", summary.join("; "));
    }
}

/// The rows of braid's protocols (not the TCP baseline).
fn braid_rows<R>(rows: &[R], proto: impl Fn(&R) -> Proto) -> impl Iterator<Item = &R> {
    rows.iter().filter(move |r| proto(r) != Proto::Tcp)
}
