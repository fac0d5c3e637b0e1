//! # braid-soak: a bounded soak test of braid's sessions and streams
//!
//! [`run`] starts, for every protocol at once (smux v1, smux v2, yamux), one braid
//! client session and one server session over a loopback TCP connection, all in the
//! caller's tokio runtime. On both sides of every pair, [`Options::concurrency`]
//! workers open streams one after the other until the deadline, each stream doing one
//! operation drawn from a seeded random generator:
//!
//! - **transfer**: random-sized data (0 bytes to [`Options::max_transfer`],
//!   log-uniform) one way or both ways; each side writes, half-closes
//!   (`shutdown`), and reads the peer's data to EOF, verifying every byte;
//! - **slow**: one way, with a paced reader (small reads with pauses) or a trickling
//!   writer (tiny writes with pauses), so that flow control stalls and resumes;
//! - **reset**: one way; the sender resets after writing `cut` bytes, or the receiver
//!   resets after reading `cut` bytes;
//! - **drop**: the same, but the handle is dropped instead (a close without
//!   `shutdown`).
//!
//! The opener sends the operation's plan as a 56-byte header; the content of each
//! direction is a deterministic pattern of the plan's seed and the byte offset, so
//! every received chunk is checked on arrival and a mismatch names its offset. Both
//! ends check how the stream ends against what braid promises for the protocol (see
//! the table in the `ops` module source): every byte of a completed transfer, the exact
//! prefix before a drop, at most the prefix before a reset, `ConnectionReset` for a
//! yamux RST, EOF for smux's FIN, and never a clean EOF where data is missing.
//!
//! Every few seconds (about [`Options::session_drop_interval`]) a session dropper kills
//! one pair's TCP connection abruptly (RST) from one side. Both sessions must end
//! promptly with a connection error, every operation on them must end with a
//! connection error (after verified data only) within [`Options::drop_bound`], and
//! their stream counts must fall to zero; then a new pair is built and the workers
//! go on.
//!
//! At the end the run drains (every operation is bounded by
//! [`Options::op_timeout`]), then asserts: `Session::num_streams()` is zero on both
//! sides of every live session, every opened stream was accepted, the sessions close
//! gracefully, every spawned task (workers, drivers, accept loops, stream handlers) has
//! finished and none panicked, RSS grew by less than [`Options::rss_growth_limit`]
//! between the warm-up and the end, and every kind of operation (and a session drop)
//! happened on every protocol. Any failed assertion is returned as a [`Failure`] in
//! [`SoakError::Failed`], together with the [`Report`].
//!
//! ```no_run
//! # async fn soak() -> Result<(), braid_soak::SoakError> {
//! let opts = braid_soak::Options {
//!     duration: std::time::Duration::from_secs(10),
//!     seed: 7,
//!     ..Default::default()
//! };
//! let report = braid_soak::run(opts).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod engine;
mod ops;
mod pattern;
mod plan;
mod report;
mod state;
mod tasks;
mod transport;

pub use plan::{Actor, OpKind, Pace, Plan, Role, HEADER_LEN};
pub use report::{
    protocol_name, Bytes, Failure, OpInfo, Progress, Report, Residue, SoakError, Totals,
};

use braid::Protocol;
use std::time::Duration;

/// At most this many failures are kept (the count goes on).
pub const MAX_FAILURES: usize = 100;

/// What to run and what to assert.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long traffic runs. Default 60 s.
    pub duration: Duration,
    /// Seed of every random choice: the same seed draws the same operations (their
    /// interleaving still depends on scheduling). Default 1.
    pub seed: u64,
    /// The protocols, all run at once. Default: smux v1, smux v2, yamux.
    pub protocols: Vec<Protocol>,
    /// Workers per side per protocol: each runs one stream operation at a time.
    /// Default 4 (24 streams at once over three protocols).
    pub concurrency: usize,
    /// Largest data of one direction of one operation. Default 4 MiB.
    pub max_transfer: u64,
    /// Mean time between session drops per protocol (`None`: never drop). It is
    /// capped at a third of `duration`, so every protocol sees at least one drop;
    /// none happens in the last tenth of the run. Default 10 s.
    pub session_drop_interval: Option<Duration>,
    /// Bound of one operation; one that takes longer is a failure (a hang). Default
    /// 60 s.
    pub op_timeout: Duration,
    /// An operation that moves no byte for this long is a failure (a hang), reported
    /// while it waits: so a hang is caught even when a later session drop would end it
    /// with an error. Default 10 s.
    pub stall_timeout: Duration,
    /// After a session drop, everything on the dropped sessions must have ended
    /// within this. Default 10 s.
    pub drop_bound: Duration,
    /// Bound of the end-of-run waits for stream counts and tasks to settle. Default
    /// 10 s.
    pub settle_timeout: Duration,
    /// When the warm-up RSS sample is taken (`None`: a quarter of `duration`, at most
    /// 15 s).
    pub warmup: Option<Duration>,
    /// Allowed RSS growth between the warm-up sample and the end. Default 32 MiB.
    pub rss_growth_limit: u64,
    /// Fail unless every kind of operation, a verified byte and (if enabled) a session
    /// drop happened on every protocol. Default true.
    pub require_every_kind: bool,
    /// Go on after a failure instead of stopping the traffic at the first one.
    /// Default false.
    pub keep_going: bool,
    /// Time between progress callbacks. Default 5 s.
    pub progress_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            duration: Duration::from_secs(60),
            seed: 1,
            protocols: vec![Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux],
            concurrency: 4,
            max_transfer: 4 << 20,
            session_drop_interval: Some(Duration::from_secs(10)),
            op_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(10),
            drop_bound: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(10),
            warmup: None,
            rss_growth_limit: 32 << 20,
            require_every_kind: true,
            keep_going: false,
            progress_interval: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// The warm-up time in effect.
    pub fn warmup_time(&self) -> Duration {
        self.warmup
            .unwrap_or_else(|| (self.duration / 4).min(Duration::from_secs(15)))
    }

    fn validate(&self) -> Result<(), String> {
        if self.protocols.is_empty() {
            return Err("no protocol".into());
        }
        for (i, p) in self.protocols.iter().enumerate() {
            if !matches!(p, Protocol::SmuxV1 | Protocol::SmuxV2 | Protocol::Yamux) {
                return Err(format!("protocol {p:?} cannot be soaked (client side)"));
            }
            if self.protocols[..i].contains(p) {
                return Err(format!("protocol {} listed twice", protocol_name(*p)));
            }
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.max_transfer == 0 {
            return Err("max_transfer must be at least 1".into());
        }
        if self.duration.is_zero()
            || self.progress_interval.is_zero()
            || self.stall_timeout.is_zero()
        {
            return Err("duration, progress_interval and stall_timeout must be positive".into());
        }
        if self.session_drop_interval.is_some_and(|d| d.is_zero()) {
            return Err("session_drop_interval must be positive (or None)".into());
        }
        Ok(())
    }
}

/// Parses a protocol name: `smux1`, `smux2` or `yamux` (also `smuxv1`, `smuxv2`,
/// `v1`, `v2`).
pub fn parse_protocol(name: &str) -> Option<Protocol> {
    match name.trim().to_ascii_lowercase().as_str() {
        "smux1" | "smuxv1" | "v1" => Some(Protocol::SmuxV1),
        "smux2" | "smuxv2" | "v2" => Some(Protocol::SmuxV2),
        "yamux" => Some(Protocol::Yamux),
        _ => None,
    }
}

/// Runs the soak in the current tokio runtime (which should be multi-threaded) and
/// returns its report, or every failed assertion with the report.
pub async fn run(opts: Options) -> Result<Report, SoakError> {
    run_with_progress(opts, |_| {}).await
}

/// [`run`], calling `on_progress` every [`Options::progress_interval`] and once after
/// the drain.
pub async fn run_with_progress(
    opts: Options,
    mut on_progress: impl FnMut(&Progress) + Send,
) -> Result<Report, SoakError> {
    engine::run(opts, &mut on_progress).await
}

pub mod attack;
