//! The result of one child run (one JSON line on the child's stdout) and the process
//! measurements that go into it.
//!
//! The Go peer (`bench/go/main.go`) prints the same fields, so the runner reads both
//! alike. Fields a workload does not produce are left out of the JSON.

use serde::{Deserialize, Serialize};

/// One run of one workload by one library, as a child process reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    /// True when the run completed and every check passed.
    pub ok: bool,
    /// Why the run failed (when `ok` is false and `na` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the library cannot do this workload at all ("n/a").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub na: Option<String>,
    /// A workaround or deviation from the workload that this run needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall-clock seconds of the measured part.
    pub elapsed_s: f64,
    /// Payload bytes moved (bulk).
    pub bytes: u64,
    /// Streams used: opened (bulk, idle), completed (churn) or 1 (latency).
    pub streams: u64,
    /// Payload throughput in MB/s (10^6 bytes per second), bulk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    /// Timed round trips (latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trips: Option<u64>,
    /// Median round-trip time in microseconds (latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    /// 99th-percentile round-trip time in microseconds (latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    /// Streams opened, echoed and closed per second (churn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_per_s: Option<f64>,
    /// Growth of the resident set while the idle streams were opened, in KiB (idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_growth_kib: Option<u64>,
    /// User + system CPU seconds of the whole process (client and server together)
    /// during the measured part.
    pub cpu_s: f64,
    /// Peak resident set size of the process in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Bytes received per stream over time (bulk, when the runner asked for samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
}

/// Cumulative bytes each receiving stream had read at each sampling time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// Seconds since the start of the measured part, ascending; the last one is its end.
    pub t_s: Vec<f64>,
    /// One row per stream (in accept order): bytes read by `t_s[i]`.
    pub bytes: Vec<Vec<u64>>,
}

impl Sample {
    /// A failed run.
    pub fn failed(error: impl Into<String>) -> Sample {
        Sample {
            error: Some(error.into()),
            ..Sample::default()
        }
    }

    /// A workload the library cannot do.
    pub fn not_applicable(reason: impl Into<String>) -> Sample {
        Sample {
            na: Some(reason.into()),
            ..Sample::default()
        }
    }
}

/// User + system CPU seconds of this process so far (all threads), from
/// `/proc/self/stat` (0 where unavailable). The resolution is one clock tick (10 ms).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds from a `/proc/PID/stat` file (0 where unavailable).
pub fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the
    // parenthesised command name (which may hold spaces) and the state.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
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

/// A field of `/proc/self/status` in KiB (0 where unavailable).
fn status_kib(field: &str) -> u64 {
    status_kib_of("/proc/self/status", field)
}

/// A field of a `/proc/PID/status` file in KiB (0 where unavailable).
pub fn status_kib_of(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resident set size of this process now, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_stay_out_of_the_json_and_default_when_read() {
        let s = Sample {
            ok: true,
            elapsed_s: 1.5,
            mb_per_s: Some(10.0),
            ..Sample::default()
        };
        let line = serde_json::to_string(&s).unwrap();
        assert!(
            !line.contains("p50_us") && !line.contains("series"),
            "{line}"
        );
        let back: Sample = serde_json::from_str(&line).unwrap();
        assert_eq!(back.mb_per_s, Some(10.0));
        assert_eq!(back.p50_us, None);
        let sparse: Sample = serde_json::from_str(r#"{"ok":false,"error":"boom"}"#).unwrap();
        assert_eq!(sparse.error.as_deref(), Some("boom"));
    }

    #[test]
    fn process_measurements_are_plausible() {
        assert!(cpu_seconds() >= 0.0);
        let now = rss_kib();
        assert!(now > 0 && peak_rss_kib() >= now);
    }
}
