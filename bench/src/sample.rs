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
    /// Wall-clock seconds of the measured part (first open to last reply, or the whole
    /// ping-pong / churn loop).
    pub elapsed_s: f64,
    /// Payload bytes moved (bulk).
    pub bytes: u64,
    /// Streams used: opened and completed (bulk, churn) or 1 (latency).
    pub streams: u64,
    /// Payload throughput in MB/s (10^6 bytes per second), bulk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    /// Completed round trips (latency).
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
    /// User + system CPU seconds the child spent during the measured part (client and
    /// server together).
    pub cpu_s: f64,
    /// Peak resident set size of the child process in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
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

/// User + system CPU seconds of this process so far, from `/proc/self/stat` (0 where
/// unavailable). The resolution is one clock tick (10 ms).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the parenthesised command name; utime and stime are fields 14 and
    // 15 of the whole line, so 11 and 12 after the name and the state.
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

/// Peak resident set size of this process in KiB, from `/proc/self/status` (0 where
/// unavailable).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
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
    fn absent_fields_stay_out_of_the_json_and_default_when_read() {
        let s = Sample {
            ok: true,
            elapsed_s: 1.5,
            mb_per_s: Some(10.0),
            ..Sample::default()
        };
        let line = serde_json::to_string(&s).unwrap();
        assert!(!line.contains("p50_us"));
        let back: Sample = serde_json::from_str(&line).unwrap();
        assert_eq!(back.mb_per_s, Some(10.0));
        assert_eq!(back.p50_us, None);
        let sparse: Sample = serde_json::from_str(r#"{"ok":false,"error":"boom"}"#).unwrap();
        assert_eq!(sparse.error.as_deref(), Some("boom"));
    }

    #[test]
    fn process_measurements_are_plausible() {
        assert!(cpu_seconds() >= 0.0);
        assert!(peak_rss_kib() > 0);
    }
}
