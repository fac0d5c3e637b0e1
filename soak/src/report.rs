//! What a soak run reports: totals, progress snapshots, failures.

use crate::plan::{OpKind, Plan, Role};
use braid::{Protocol, Side};
use std::fmt;
use std::time::Duration;

/// Short name of a protocol, as the command line spells it.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::SmuxV1 => "smux1",
        Protocol::SmuxV2 => "smux2",
        Protocol::Yamux => "yamux",
        _ => "auto",
    }
}

/// Counters of a run, for one protocol or for all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Streams opened with `Session::open_stream` (by either side).
    pub streams_opened: u64,
    /// Streams taken with `Session::accept_stream`.
    pub streams_accepted: u64,
    /// Data bytes received and checked against their content, both directions.
    pub bytes_verified: u64,
    /// Operations that ended exactly as their plan says, per [`OpKind`] (index
    /// `OpKind as usize`), counted once per stream by its opener.
    pub ops: [u64; 4],
    /// Sessions killed abruptly and rebuilt.
    pub session_drops: u64,
    /// Operations cut short by a session drop (ended with the expected connection
    /// error instead of their plan's end).
    pub ops_cut_by_drop: u64,
    /// Operations that failed (see the failures).
    pub ops_failed: u64,
}

impl Totals {
    /// Completed operations of one kind.
    pub fn ops_of(&self, kind: OpKind) -> u64 {
        self.ops[kind.index()]
    }

    pub(crate) fn add(&mut self, other: &Totals) {
        self.streams_opened += other.streams_opened;
        self.streams_accepted += other.streams_accepted;
        self.bytes_verified += other.bytes_verified;
        for (a, b) in self.ops.iter_mut().zip(other.ops) {
            *a += b;
        }
        self.session_drops += other.session_drops;
        self.ops_cut_by_drop += other.ops_cut_by_drop;
        self.ops_failed += other.ops_failed;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "opened {} accepted {} verified {}",
            self.streams_opened,
            self.streams_accepted,
            Bytes(self.bytes_verified)
        )?;
        for kind in OpKind::ALL {
            write!(f, " {} {}", kind.name(), self.ops_of(kind))?;
        }
        write!(
            f,
            " session-drops {} cut-by-drop {} failed {}",
            self.session_drops, self.ops_cut_by_drop, self.ops_failed
        )
    }
}

/// A byte count printed with a binary unit.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if self.0 >= 1 << 30 {
            write!(f, "{:.2} GiB", b / (1u64 << 30) as f64)
        } else if self.0 >= 1 << 20 {
            write!(f, "{:.1} MiB", b / (1u64 << 20) as f64)
        } else if self.0 >= 1 << 10 {
            write!(f, "{:.1} KiB", b / 1024.0)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

/// A periodic progress snapshot.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// Streams the live sessions track (`Session::num_streams`, both sides summed).
    pub streams_open: usize,
    /// Operations running now (openers and acceptors).
    pub ops_running: u64,
    /// Totals so far, all protocols.
    pub totals: Totals,
    /// Resident set size now, if known.
    pub rss: Option<u64>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "[{:6.1}s] streams {:4} running {:4} | verified {:>10} |",
            self.elapsed.as_secs_f64(),
            self.streams_open,
            self.ops_running,
            Bytes(t.bytes_verified).to_string()
        )?;
        for kind in OpKind::ALL {
            write!(f, " {} {}", kind.name(), t.ops_of(kind))?;
        }
        write!(
            f,
            " | session-drops {} cut {}",
            t.session_drops, t.ops_cut_by_drop
        )?;
        if let Some(rss) = self.rss {
            write!(f, " | rss {}", Bytes(rss))?;
        }
        if t.ops_failed > 0 {
            write!(f, " | FAILED {}", t.ops_failed)?;
        }
        Ok(())
    }
}

/// The final report of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed: pass it again (`--seed`) to replay the same operations.
    pub seed: u64,
    /// The protocols that ran.
    pub protocols: Vec<Protocol>,
    /// How long traffic ran (up to the deadline or an early stop).
    pub traffic_time: Duration,
    /// From the deadline until every running operation had ended.
    pub drain_time: Duration,
    /// The longest any one end of an operation took.
    pub longest_op: Duration,
    /// Whole run, including setup, draining and closing.
    pub total_time: Duration,
    /// Totals over all protocols.
    pub totals: Totals,
    /// Totals of each protocol.
    pub per_protocol: Vec<(Protocol, Totals)>,
    /// Streams still tracked by live sessions after the drain (must be 0).
    pub streams_left: usize,
    /// Tasks spawned by the soak (workers, drivers, accept loops, handlers).
    pub tasks_spawned: u64,
    /// Of those, finished by the end (must equal `tasks_spawned`).
    pub tasks_finished: u64,
    /// RSS after the warm-up period.
    pub rss_warmup: Option<u64>,
    /// RSS after the drain, all streams closed, sessions still open.
    pub rss_end: Option<u64>,
    /// The allowed growth from `rss_warmup` to `rss_end`.
    pub rss_limit: u64,
}

impl Report {
    /// RSS growth from the warm-up to the end (negative: it shrank).
    pub fn rss_growth(&self) -> Option<i64> {
        Some(self.rss_end? as i64 - self.rss_warmup? as i64)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.protocols.iter().map(|p| protocol_name(*p)).collect();
        writeln!(
            f,
            "soak report: seed {} protocols {} traffic {:.1}s drain {:.1}s total {:.1}s, \
             longest operation {:.2}s",
            self.seed,
            names.join(","),
            self.traffic_time.as_secs_f64(),
            self.drain_time.as_secs_f64(),
            self.total_time.as_secs_f64(),
            self.longest_op.as_secs_f64()
        )?;
        writeln!(f, "  all    {}", self.totals)?;
        for (p, t) in &self.per_protocol {
            writeln!(f, "  {:6} {}", protocol_name(*p), t)?;
        }
        writeln!(
            f,
            "  streams left {}, tasks spawned {} finished {}",
            self.streams_left, self.tasks_spawned, self.tasks_finished
        )?;
        match (self.rss_warmup, self.rss_end) {
            (Some(w), Some(e)) => write!(
                f,
                "  rss after warm-up {}, at end {}, growth {:+.1} MiB (limit {})",
                Bytes(w),
                Bytes(e),
                (e as f64 - w as f64) / (1u64 << 20) as f64,
                Bytes(self.rss_limit)
            ),
            _ => write!(f, "  rss not measured"),
        }
    }
}

/// Where an operation was when it failed.
#[derive(Debug, Clone)]
pub struct OpInfo {
    /// The run-wide operation number.
    pub id: u64,
    /// The protocol.
    pub protocol: Protocol,
    /// Which session of that protocol (0 first, +1 after each session drop).
    pub generation: u64,
    /// The side that opened the stream.
    pub opener: Side,
    /// This end's role.
    pub role: Role,
    /// The stream id, once known.
    pub stream_id: Option<u32>,
    /// The plan, once known (an acceptor learns it from the header).
    pub plan: Option<Plan>,
    /// Data bytes this end wrote (after the header).
    pub written: u64,
    /// Data bytes this end read and verified.
    pub read: u64,
    /// What it was doing.
    pub phase: &'static str,
    /// Time since the operation started.
    pub age: Duration,
    /// Time since it last moved (wrote or read a byte, or changed phase).
    pub idle: Duration,
}

impl OpInfo {
    pub(crate) fn protocol_index(&self, protocols: &[Protocol]) -> usize {
        protocols
            .iter()
            .position(|p| *p == self.protocol)
            .unwrap_or(0)
    }
}

impl fmt::Display for OpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op #{} {} gen {} opened by {:?}, {} end",
            self.id,
            protocol_name(self.protocol),
            self.generation,
            self.opener,
            self.role
        )?;
        match self.stream_id {
            Some(id) => write!(f, ", stream {id}")?,
            None => write!(f, ", no stream yet")?,
        }
        match &self.plan {
            Some(p) => write!(f, ", plan [{p}]")?,
            None => write!(f, ", plan not known yet")?,
        }
        write!(
            f,
            ", written {} read {}, {} after {:.2}s (idle {:.2}s)",
            self.written,
            self.read,
            self.phase,
            self.age.as_secs_f64(),
            self.idle.as_secs_f64()
        )
    }
}

/// What a session still holds: `Session::num_streams` and the buffered bytes of
/// `Session::stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Residue {
    /// Streams tracked.
    pub streams: usize,
    /// Received bytes not read.
    pub buffered_recv: usize,
    /// Written bytes not sent.
    pub buffered_send: usize,
}

impl fmt::Display for Residue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} streams, {} B received unread, {} B written unsent",
            self.streams, self.buffered_recv, self.buffered_send
        )
    }
}

/// A failed assertion.
#[derive(Debug, Clone)]
pub enum Failure {
    /// An operation ended differently from its plan (wrong data, wrong error, an error
    /// where none was expected, an early clean end).
    Op {
        /// The operation.
        op: OpInfo,
        /// What was wrong.
        message: String,
    },
    /// An operation did not move (no byte written or read) for `Options::stall_timeout`:
    /// reported while it waits, so that a hang is caught even if a session drop ends it
    /// later.
    Stall {
        /// The operation, as it was when the bound expired.
        op: OpInfo,
        /// The bound.
        bound: Duration,
    },
    /// An operation did not finish within `Options::op_timeout`.
    OpTimeout {
        /// The operation, as it was when the bound expired.
        op: OpInfo,
        /// The bound.
        bound: Duration,
    },
    /// A session ended although nobody dropped it.
    SessionEnded {
        /// The protocol.
        protocol: Protocol,
        /// The session's generation.
        generation: u64,
        /// The side whose session ended.
        side: Side,
        /// Why, as `Session::closed` reported it.
        reason: String,
    },
    /// After a session drop: the sessions, their streams or their operations did not
    /// end within `Options::drop_bound`, or ended with the wrong reason.
    SessionDrop {
        /// The protocol.
        protocol: Protocol,
        /// The dropped session's generation.
        generation: u64,
        /// What went wrong.
        message: String,
    },
    /// A new session could not be set up.
    Reconnect {
        /// The protocol.
        protocol: Protocol,
        /// The error.
        message: String,
    },
    /// A session still held streams or buffered bytes after every stream was closed.
    StreamsLeft {
        /// The protocol.
        protocol: Protocol,
        /// The session's generation.
        generation: u64,
        /// What the client session held.
        client: Residue,
        /// What the server session held.
        server: Residue,
    },
    /// `Session::close` did not return within its bound.
    CloseHang {
        /// The protocol.
        protocol: Protocol,
        /// The bound waited.
        bound: Duration,
    },
    /// Spawned tasks had not finished at the end.
    TasksLeft {
        /// Tasks spawned.
        spawned: u64,
        /// Tasks finished.
        finished: u64,
        /// Some of those still running.
        running: Vec<String>,
    },
    /// A task panicked.
    Panic {
        /// The task's name.
        task: String,
        /// The panic message.
        message: String,
    },
    /// RSS grew more than allowed between the warm-up and the end.
    RssGrowth {
        /// RSS after the warm-up.
        warmup: u64,
        /// RSS at the end.
        end: u64,
        /// The allowed growth.
        limit: u64,
    },
    /// No operation of some kind completed: the soak did not exercise it.
    NothingDone {
        /// The protocol.
        protocol: Protocol,
        /// The kind ("transfer", "slow", "reset", "drop", "session drop", "bytes").
        what: &'static str,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Op { op, message } => write!(f, "{op}: {message}"),
            Failure::Stall { op, bound } => write!(
                f,
                "{op}: stalled, nothing moved for {:.0}s (hang)",
                bound.as_secs_f64()
            ),
            Failure::OpTimeout { op, bound } => write!(
                f,
                "{op}: did not finish within {:.0}s (hang)",
                bound.as_secs_f64()
            ),
            Failure::SessionEnded {
                protocol,
                generation,
                side,
                reason,
            } => write!(
                f,
                "{} gen {generation}: the {side:?} session ended without a session drop: {reason}",
                protocol_name(*protocol)
            ),
            Failure::SessionDrop {
                protocol,
                generation,
                message,
            } => write!(
                f,
                "{} gen {generation} session drop: {message}",
                protocol_name(*protocol)
            ),
            Failure::Reconnect { protocol, message } => write!(
                f,
                "{}: could not set up a new session: {message}",
                protocol_name(*protocol)
            ),
            Failure::StreamsLeft {
                protocol,
                generation,
                client,
                server,
            } => write!(
                f,
                "{} gen {generation}: still held after every stream was closed: \
                 client {client}; server {server}",
                protocol_name(*protocol)
            ),
            Failure::CloseHang { protocol, bound } => write!(
                f,
                "{}: Session::close did not return within {:.0}s",
                protocol_name(*protocol),
                bound.as_secs_f64()
            ),
            Failure::TasksLeft {
                spawned,
                finished,
                running,
            } => write!(
                f,
                "{} of {spawned} spawned tasks still running at the end (finished {finished}): {}",
                spawned - finished,
                running.join(", ")
            ),
            Failure::Panic { task, message } => write!(f, "task {task} panicked: {message}"),
            Failure::RssGrowth { warmup, end, limit } => write!(
                f,
                "RSS grew from {} after the warm-up to {} at the end: {} more than the limit of {}",
                Bytes(*warmup),
                Bytes(*end),
                Bytes(end.saturating_sub(*warmup).saturating_sub(*limit)),
                Bytes(*limit)
            ),
            Failure::NothingDone { protocol, what } => write!(
                f,
                "{}: no {what} completed: the soak did not exercise it",
                protocol_name(*protocol)
            ),
        }
    }
}

/// Why a run failed.
#[derive(Debug)]
pub enum SoakError {
    /// Invalid options.
    Options(String),
    /// The run could not start (listening or connecting on loopback failed).
    Setup(std::io::Error),
    /// One or more assertions failed; the report of the run is attached.
    Failed {
        /// The failures, in the order they were found (capped at
        /// [`MAX_FAILURES`](crate::MAX_FAILURES)).
        failures: Vec<Failure>,
        /// The run's report.
        report: Box<Report>,
    },
}

impl fmt::Display for SoakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoakError::Options(m) => write!(f, "invalid options: {m}"),
            SoakError::Setup(e) => write!(f, "setup failed: {e}"),
            SoakError::Failed { failures, report } => {
                writeln!(f, "soak FAILED: {} failure(s)", failures.len())?;
                for (i, fail) in failures.iter().enumerate() {
                    writeln!(f, "  {}. {fail}", i + 1)?;
                }
                write!(f, "{report}")
            }
        }
    }
}

impl std::error::Error for SoakError {}
