//! Counters for the stats line: sessions, streams, bytes each way.

use super::units::human_bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Live counters of a tunnel end. "Up" is from the client's applications towards the
/// target, "down" the way back.
#[derive(Debug, Default)]
pub struct Stats {
    sessions: AtomicU64,
    streams: AtomicU64,
    streams_total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Carrier sessions up now.
    pub sessions: u64,
    /// Streams being forwarded now.
    pub streams: u64,
    /// Streams forwarded since start.
    pub streams_total: u64,
    /// Bytes carried from the applications to the target.
    pub bytes_up: u64,
    /// Bytes carried from the target to the applications.
    pub bytes_down: u64,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions={} streams={} streams_total={} up={} ({}) down={} ({})",
            self.sessions,
            self.streams,
            self.streams_total,
            self.bytes_up,
            human_bytes(self.bytes_up),
            self.bytes_down,
            human_bytes(self.bytes_down),
        )
    }
}

/// Which way bytes go, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    Up,
    Down,
}

impl Stats {
    /// Reads the counters.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions: self.sessions.load(Relaxed),
            streams: self.streams.load(Relaxed),
            streams_total: self.streams_total.load(Relaxed),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
        }
    }

    pub(crate) fn bytes(&self, way: Way) -> &AtomicU64 {
        match way {
            Way::Up => &self.bytes_up,
            Way::Down => &self.bytes_down,
        }
    }

    /// Counts a session until the guard drops.
    pub(crate) fn session(self: &Arc<Self>) -> Gauge {
        Gauge::new(self.clone(), |s| &s.sessions)
    }

    /// Counts a stream until the guard drops.
    pub(crate) fn stream(self: &Arc<Self>) -> Gauge {
        self.streams_total.fetch_add(1, Relaxed);
        Gauge::new(self.clone(), |s| &s.streams)
    }

    /// Prints a stats line to stdout every `every` until `stop`.
    pub(crate) fn spawn_reporter(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = tick.tick() => println!("stats: {}", stats.snapshot()),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

/// Holds one count of a gauge (sessions or streams) while alive.
pub(crate) struct Gauge {
    stats: Arc<Stats>,
    field: fn(&Stats) -> &AtomicU64,
}

impl Gauge {
    fn new(stats: Arc<Stats>, field: fn(&Stats) -> &AtomicU64) -> Gauge {
        field(&stats).fetch_add(1, Relaxed);
        Gauge { stats, field }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.field)(&self.stats).fetch_sub(1, Relaxed);
    }
}
