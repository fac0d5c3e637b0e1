//! What the run's tasks share: the context ([`Ctx`]), the session pairs, the counters
//! and the traces of running operations. The engine ([`crate::engine`]) drives the run;
//! the operations ([`crate::ops`]) use this state, so neither imports the other.

use crate::plan::{Plan, Role};
use crate::report::{protocol_name, Failure, OpInfo, Residue, Totals};
use crate::tasks::Tasks;
use crate::transport::KillSwitch;
use crate::{Options, MAX_FAILURES};
use braid::{Config, Protocol, Session, Side};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// The session configuration: Go's defaults for the protocol, with keepalives frequent
/// enough to run many times during a soak.
pub(crate) fn config(protocol: Protocol) -> Config {
    let mut config = Config::new(protocol);
    config.keep_alive_interval = Duration::from_secs(2);
    config.keep_alive_timeout = Duration::from_secs(15);
    config
}

/// Waits until `cond` holds, checking every few milliseconds, for at most `bound`.
pub(crate) async fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads VmRSS from /proc/self/status (Linux), in bytes.
pub(crate) fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Counters of one protocol.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) verified: AtomicU64,
    pub(crate) ops: [AtomicU64; 4],
    pub(crate) session_drops: AtomicU64,
    pub(crate) cut: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl Counters {
    pub(crate) fn add_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_verified(&self, n: u64) {
        self.verified.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            streams_opened: get(&self.opened),
            streams_accepted: get(&self.accepted),
            bytes_verified: get(&self.verified),
            ops: [
                get(&self.ops[0]),
                get(&self.ops[1]),
                get(&self.ops[2]),
                get(&self.ops[3]),
            ],
            session_drops: get(&self.session_drops),
            ops_cut_by_drop: get(&self.cut),
            ops_failed: get(&self.failed),
        }
    }
}

/// Identifies a stream across sessions: the registry of plans is keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RegKey {
    pub(crate) protocol: usize,
    pub(crate) generation: u64,
    pub(crate) opener: Side,
    pub(crate) stream_id: u32,
}

/// A running operation, readable from outside for diagnostics.
pub(crate) struct OpTrace {
    pub(crate) id: u64,
    pub(crate) protocol: Protocol,
    pub(crate) generation: u64,
    pub(crate) opener: Side,
    pub(crate) role: Role,
    pub(crate) started: Instant,
    pub(crate) stream_id: AtomicU64,
    pub(crate) plan: Mutex<Option<Plan>>,
    pub(crate) written: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) phase: Mutex<&'static str>,
    /// When the operation last moved (a byte written or read, a new phase), in
    /// microseconds since `started`.
    pub(crate) moved_us: AtomicU64,
    /// Already reported as stalled.
    pub(crate) stalled: AtomicBool,
}

const NO_STREAM: u64 = u64::MAX;

impl OpTrace {
    pub(crate) fn moved(&self) {
        let now = self.started.elapsed().as_micros() as u64;
        self.moved_us.store(now, Ordering::Relaxed);
    }

    /// How long since the operation last moved.
    pub(crate) fn idle(&self) -> Duration {
        let moved = Duration::from_micros(self.moved_us.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(moved)
    }

    pub(crate) fn set_phase(&self, phase: &'static str) {
        *lock(&self.phase) = phase;
        self.moved();
    }

    pub(crate) fn set_stream(&self, id: u32) {
        self.stream_id.store(id.into(), Ordering::Relaxed);
    }

    pub(crate) fn set_plan(&self, plan: Plan) {
        *lock(&self.plan) = Some(plan);
    }

    pub(crate) fn set_written(&self, n: u64) {
        self.written.store(n, Ordering::Relaxed);
        self.moved();
    }

    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub(crate) fn set_read(&self, n: u64) {
        self.read.store(n, Ordering::Relaxed);
        self.moved();
    }

    pub(crate) fn info(&self) -> OpInfo {
        let sid = self.stream_id.load(Ordering::Relaxed);
        OpInfo {
            id: self.id,
            protocol: self.protocol,
            generation: self.generation,
            opener: self.opener,
            role: self.role,
            stream_id: (sid != NO_STREAM).then_some(sid as u32),
            plan: *lock(&self.plan),
            written: self.written.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            phase: *lock(&self.phase),
            age: self.started.elapsed(),
            idle: self.idle(),
        }
    }
}

/// One client session and one server session of a protocol, over one loopback TCP
/// connection.
pub(crate) struct Pair {
    pub(crate) protocol: Protocol,
    /// The protocol's index in `Options::protocols`.
    pub(crate) index: usize,
    /// 0 for the first pair, +1 for each rebuild after a session drop.
    pub(crate) generation: u64,
    pub(crate) client: Session,
    pub(crate) server: Session,
    pub(crate) kill_client: Arc<KillSwitch>,
    pub(crate) kill_server: Arc<KillSwitch>,
    /// Set just before the soak kills the connection.
    pub(crate) dead: AtomicBool,
    /// Operations (either end) running on this pair.
    pub(crate) running: AtomicU64,
}

impl Pair {
    pub(crate) fn session(&self, side: Side) -> &Session {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    pub(crate) fn name(&self) -> String {
        format!("{} gen {}", protocol_name(self.protocol), self.generation)
    }

    pub(crate) fn num_streams(&self) -> (usize, usize) {
        (self.client.num_streams(), self.server.num_streams())
    }

    /// What each session still holds: streams and buffered bytes.
    pub(crate) fn residue(&self) -> (Residue, Residue) {
        let of = |s: &Session| {
            let stats = s.stats();
            Residue {
                streams: s.num_streams(),
                buffered_recv: stats.buffered_recv,
                buffered_send: stats.buffered_send,
            }
        };
        (of(&self.client), of(&self.server))
    }
}

/// A protocol's place in the run: its listener and its current pair.
pub(crate) struct Slot {
    pub(crate) protocol: Protocol,
    pub(crate) index: usize,
    pub(crate) listener: TcpListener,
    pub(crate) current: watch::Sender<Arc<Pair>>,
}

/// Everything the run's tasks share.
pub(crate) struct Ctx {
    pub(crate) opts: Options,
    pub(crate) start: Instant,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) counters: Vec<Counters>,
    pub(crate) failures: Mutex<Vec<Failure>>,
    pub(crate) failure_count: AtomicU64,
    pub(crate) next_op: AtomicU64,
    /// Operations running, all pairs.
    pub(crate) ops_running: AtomicU64,
    /// Workers and session droppers still running.
    pub(crate) actors_running: AtomicU64,
    /// Plans of opened streams, until the acceptor has read them.
    pub(crate) registry: Mutex<HashMap<RegKey, Plan>>,
    /// Running operations, for diagnostics.
    pub(crate) traces: Mutex<HashMap<u64, Arc<OpTrace>>>,
    /// The final close has begun: sessions may end.
    pub(crate) closing: AtomicBool,
    /// The longest operation end so far, in microseconds.
    pub(crate) longest_op_us: AtomicU64,
}

impl Ctx {
    pub(crate) fn counters(&self, pair: &Pair) -> &Counters {
        &self.counters[pair.index]
    }

    pub(crate) fn register(&self, key: RegKey, plan: Plan) {
        lock(&self.registry).insert(key, plan);
    }

    pub(crate) fn unregister(&self, key: RegKey) -> Option<Plan> {
        lock(&self.registry).remove(&key)
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) fn fail(&self, failure: Failure) {
        self.failure_count.fetch_add(1, Ordering::SeqCst);
        {
            let mut failures = lock(&self.failures);
            if failures.len() < MAX_FAILURES {
                failures.push(failure);
            }
        }
        if !self.opts.keep_going {
            self.stop.send_replace(true);
        }
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.add(&c.totals());
        }
        t
    }

    pub(crate) fn new_trace(
        &self,
        pair: &Pair,
        opener: Side,
        role: Role,
        plan: Option<Plan>,
    ) -> Arc<OpTrace> {
        let id = self.next_op.fetch_add(1, Ordering::Relaxed);
        let trace = Arc::new(OpTrace {
            id,
            protocol: pair.protocol,
            generation: pair.generation,
            opener,
            role,
            started: Instant::now(),
            stream_id: AtomicU64::new(NO_STREAM),
            plan: Mutex::new(plan),
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
            phase: Mutex::new("starting"),
            moved_us: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        lock(&self.traces).insert(id, trace.clone());
        trace
    }

    pub(crate) fn running_ops_of(&self, pair: &Pair, max: usize) -> Vec<String> {
        let traces = lock(&self.traces);
        let mut ops: Vec<_> = traces
            .values()
            .filter(|t| t.protocol == pair.protocol && t.generation == pair.generation)
            .map(|t| t.info())
            .collect();
        ops.sort_by_key(|o| o.id);
        ops.iter().take(max).map(|o| o.to_string()).collect()
    }

    /// Reports, once each, the operations that have not moved for the stall bound: a
    /// hang, caught even if a later session drop would end it with an error.
    pub(crate) fn check_stalls(&self) {
        let stalled: Vec<OpInfo> = lock(&self.traces)
            .values()
            .filter(|t| {
                t.idle() >= self.opts.stall_timeout && !t.stalled.swap(true, Ordering::Relaxed)
            })
            .map(|t| t.info())
            .collect();
        for op in stalled {
            self.counters[op.protocol_index(&self.opts.protocols)]
                .failed
                .fetch_add(1, Ordering::Relaxed);
            self.fail(Failure::Stall {
                op,
                bound: self.opts.stall_timeout,
            });
        }
    }

    pub(crate) fn all_running_ops(&self, max: usize) -> Vec<OpInfo> {
        let traces = lock(&self.traces);
        let mut ops: Vec<_> = traces.values().map(|t| t.info()).collect();
        ops.sort_by_key(|o| o.id);
        ops.truncate(max);
        ops
    }
}
