//! The run: session pairs per protocol, workers on both sides, accept loops, session
//! drops, the drain and the final checks.

use crate::ops::{self, Env, OpResult, Outcome};
use crate::pattern::mix;
use crate::plan::{OpKind, Plan, Role};
use crate::report::{protocol_name, Failure, OpInfo, Progress, Report, Residue, SoakError, Totals};
use crate::tasks::Tasks;
use crate::transport::{KillSwitch, Killable, KILLED};
use crate::{Options, MAX_FAILURES};
use braid::{Config, ConnectionError, Protocol, Session, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// The session configuration: Go's defaults for the protocol, with keepalives frequent
/// enough to run many times during a soak.
fn config(protocol: Protocol) -> Config {
    let mut config = Config::new(protocol);
    config.keep_alive_interval = Duration::from_secs(2);
    config.keep_alive_timeout = Duration::from_secs(15);
    config
}

/// Waits until `cond` holds, checking every few milliseconds, for at most `bound`.
async fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
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
    opened: AtomicU64,
    accepted: AtomicU64,
    verified: AtomicU64,
    ops: [AtomicU64; 4],
    session_drops: AtomicU64,
    cut: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    pub(crate) fn add_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_verified(&self, n: u64) {
        self.verified.fetch_add(n, Ordering::Relaxed);
    }

    fn totals(&self) -> Totals {
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
    pub protocol: usize,
    pub generation: u64,
    pub opener: Side,
    pub stream_id: u32,
}

/// A running operation, readable from outside for diagnostics.
pub(crate) struct OpTrace {
    id: u64,
    protocol: Protocol,
    generation: u64,
    opener: Side,
    role: Role,
    started: Instant,
    stream_id: AtomicU64,
    plan: Mutex<Option<Plan>>,
    written: AtomicU64,
    read: AtomicU64,
    phase: Mutex<&'static str>,
    /// When the operation last moved (a byte written or read, a new phase), in
    /// microseconds since `started`.
    moved_us: AtomicU64,
    /// Already reported as stalled.
    stalled: AtomicBool,
}

const NO_STREAM: u64 = u64::MAX;

impl OpTrace {
    fn moved(&self) {
        let now = self.started.elapsed().as_micros() as u64;
        self.moved_us.store(now, Ordering::Relaxed);
    }

    /// How long since the operation last moved.
    fn idle(&self) -> Duration {
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

    fn info(&self) -> OpInfo {
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
    pub protocol: Protocol,
    /// The protocol's index in `Options::protocols`.
    pub index: usize,
    /// 0 for the first pair, +1 for each rebuild after a session drop.
    pub generation: u64,
    client: Session,
    server: Session,
    kill_client: Arc<KillSwitch>,
    kill_server: Arc<KillSwitch>,
    /// Set just before the soak kills the connection.
    dead: AtomicBool,
    /// Operations (either end) running on this pair.
    running: AtomicU64,
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

    fn name(&self) -> String {
        format!("{} gen {}", protocol_name(self.protocol), self.generation)
    }

    fn num_streams(&self) -> (usize, usize) {
        (self.client.num_streams(), self.server.num_streams())
    }

    /// What each session still holds: streams and buffered bytes.
    fn residue(&self) -> (Residue, Residue) {
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
struct Slot {
    protocol: Protocol,
    index: usize,
    listener: TcpListener,
    current: watch::Sender<Arc<Pair>>,
}

/// Everything the run's tasks share.
pub(crate) struct Ctx {
    opts: Options,
    start: Instant,
    tasks: Arc<Tasks>,
    stop: watch::Sender<bool>,
    counters: Vec<Counters>,
    failures: Mutex<Vec<Failure>>,
    failure_count: AtomicU64,
    next_op: AtomicU64,
    /// Operations running, all pairs.
    ops_running: AtomicU64,
    /// Workers and session droppers still running.
    actors_running: AtomicU64,
    /// Plans of opened streams, until the acceptor has read them.
    registry: Mutex<HashMap<RegKey, Plan>>,
    /// Running operations, for diagnostics.
    traces: Mutex<HashMap<u64, Arc<OpTrace>>>,
    /// The final close has begun: sessions may end.
    closing: AtomicBool,
    /// The longest operation end so far, in microseconds.
    longest_op_us: AtomicU64,
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

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn fail(&self, failure: Failure) {
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

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.add(&c.totals());
        }
        t
    }

    fn new_trace(&self, pair: &Pair, opener: Side, role: Role, plan: Option<Plan>) -> Arc<OpTrace> {
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

    /// Runs one end of an operation under the operation bound and books its outcome.
    async fn run_op<F>(&self, pair: &Arc<Pair>, trace: Arc<OpTrace>, _running: Running, op: F)
    where
        F: std::future::Future<Output = OpResult>,
    {
        // Once the run stops, an operation already reported as stalled is abandoned
        // (its streams dropped) instead of being waited for until its timeout.
        let give_up = async {
            let mut stop = self.stop.subscribe();
            let _ = stop.wait_for(|s| *s).await;
            while !trace.stalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let res = tokio::select! {
            res = timeout(self.opts.op_timeout, op) => res.map_err(|_| false),
            () = give_up => Err(true),
        };
        let took = trace.started.elapsed().as_micros() as u64;
        self.longest_op_us.fetch_max(took, Ordering::Relaxed);
        lock(&self.traces).remove(&trace.id);
        let counters = self.counters(pair);
        let plan = *lock(&trace.plan);
        match res {
            Ok(Ok(outcome)) => {
                // Counted once per stream, by the opener.
                if trace.role == Role::Opener {
                    match (outcome, plan) {
                        (Outcome::Done, Some(plan)) => {
                            counters.ops[plan.kind.index()].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            counters.cut.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(Err(message)) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                self.fail(Failure::Op {
                    op: trace.info(),
                    message,
                });
            }
            // Abandoned, or timed out after the stall was reported: reported already.
            Err(_) if trace.stalled.load(Ordering::Relaxed) => {}
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                self.fail(Failure::OpTimeout {
                    op: trace.info(),
                    bound: self.opts.op_timeout,
                });
            }
        }
    }

    fn running_ops_of(&self, pair: &Pair, max: usize) -> Vec<String> {
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
    fn check_stalls(&self) {
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

    fn all_running_ops(&self, max: usize) -> Vec<OpInfo> {
        let traces = lock(&self.traces);
        let mut ops: Vec<_> = traces.values().map(|t| t.info()).collect();
        ops.sort_by_key(|o| o.id);
        ops.truncate(max);
        ops
    }
}

/// Counts an operation as running on its pair and in the run while alive: from before
/// its task is spawned until it is booked.
struct Running {
    ctx: Arc<Ctx>,
    pair: Arc<Pair>,
}

impl Running {
    fn new(ctx: &Arc<Ctx>, pair: &Arc<Pair>) -> Running {
        ctx.ops_running.fetch_add(1, Ordering::SeqCst);
        pair.running.fetch_add(1, Ordering::SeqCst);
        Running {
            ctx: ctx.clone(),
            pair: pair.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.pair.running.fetch_sub(1, Ordering::SeqCst);
        self.ctx.ops_running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a worker or session dropper as running while alive.
struct Actor(Arc<Ctx>);

impl Actor {
    fn new(ctx: &Arc<Ctx>) -> Actor {
        ctx.actors_running.fetch_add(1, Ordering::SeqCst);
        Actor(ctx.clone())
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.0.actors_running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connects a new pair for `slot` over loopback and starts its drivers and accept
/// loops.
async fn connect(
    ctx: &Arc<Ctx>,
    listener: &TcpListener,
    protocol: Protocol,
    index: usize,
    generation: u64,
) -> io::Result<Arc<Pair>> {
    let addr = listener.local_addr()?;
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, server) = (client?, server?.0);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let kill_client = Arc::new(KillSwitch::default());
    let kill_server = Arc::new(KillSwitch::default());
    let config = config(protocol);
    let (client, client_driver) = Session::new(
        Killable::new(client, kill_client.clone()),
        config.clone(),
        Side::Client,
    )?;
    let (server, server_driver) = Session::new(
        Killable::new(server, kill_server.clone()),
        config,
        Side::Server,
    )?;
    let pair = Arc::new(Pair {
        protocol,
        index,
        generation,
        client,
        server,
        kill_client,
        kill_server,
        dead: AtomicBool::new(false),
        running: AtomicU64::new(0),
    });
    for (side, driver) in [(Side::Client, client_driver), (Side::Server, server_driver)] {
        ctx.tasks
            .spawn(format!("{} {side:?} driver", pair.name()), async move {
                // How it ended is checked through `Session::closed`.
                let _ = driver.await;
            });
        let (c, p) = (ctx.clone(), pair.clone());
        ctx.tasks.spawn(
            format!("{} {side:?} accept loop", pair.name()),
            accept_loop(c, p, side),
        );
    }
    Ok(pair)
}

/// Accepts the peer's streams and plays the acceptor's part on each; when the session
/// ends, checks that it was meant to.
async fn accept_loop(ctx: Arc<Ctx>, pair: Arc<Pair>, side: Side) {
    let session = pair.session(side).clone();
    while let Some(stream) = session.accept_stream().await {
        ctx.counters(&pair).accepted.fetch_add(1, Ordering::Relaxed);
        let running = Running::new(&ctx, &pair);
        let trace = ctx.new_trace(&pair, other(side), Role::Acceptor, None);
        let name = format!(
            "{} {side:?} acceptor of stream {} (op #{})",
            pair.name(),
            stream.id().0,
            trace.id
        );
        let (c, p) = (ctx.clone(), pair.clone());
        ctx.tasks.spawn(name, async move {
            let env_trace = trace.clone();
            let op = async {
                let env = Env {
                    ctx: &c,
                    pair: &p,
                    trace: &env_trace,
                };
                ops::acceptor(&env, other(side), stream).await
            };
            c.run_op(&p, trace, running, op).await;
        });
    }
    let reason = session.closed().await;
    if !pair.is_dead() && !ctx.closing.load(Ordering::SeqCst) {
        ctx.fail(Failure::SessionEnded {
            protocol: pair.protocol,
            generation: pair.generation,
            side,
            reason: reason.to_string(),
        });
    }
}

/// Opens streams on `side` of the protocol's current pair, one operation after the
/// other, until the run stops.
async fn worker(ctx: Arc<Ctx>, mut pairs: watch::Receiver<Arc<Pair>>, side: Side, seed: u64) {
    let _actor = Actor::new(&ctx);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stop = ctx.stop.subscribe();
    loop {
        if ctx.stopping() {
            return;
        }
        let pair = loop {
            let pair = pairs.borrow_and_update().clone();
            if !pair.is_dead() {
                break pair;
            }
            // Wait for the session dropper to build the next pair.
            tokio::select! {
                changed = pairs.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        let plan = Plan::random(&mut rng, ctx.opts.max_transfer);
        let running = Running::new(&ctx, &pair);
        let trace = ctx.new_trace(&pair, side, Role::Opener, Some(plan));
        let op = async {
            let env = Env {
                ctx: &ctx,
                pair: &pair,
                trace: &trace,
            };
            ops::opener(&env, side, plan).await
        };
        ctx.run_op(&pair, trace.clone(), running, op).await;
    }
}

/// Now and then kills the protocol's connection abruptly, checks that everything on it
/// ends promptly with connection errors, and builds a new pair.
async fn session_dropper(ctx: Arc<Ctx>, slot: Arc<Slot>, seed: u64) {
    let _actor = Actor::new(&ctx);
    let Some(mean) = ctx.opts.session_drop_interval else {
        return;
    };
    // At least one drop per protocol even in short runs (the first comes within half
    // the run), none in the last tenth.
    let mean = mean.min(ctx.opts.duration / 3);
    let last = ctx.start + ctx.opts.duration.mul_f64(0.9);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stop = ctx.stop.subscribe();
    loop {
        let at = Instant::now() + mean.mul_f64(rng.gen_range(0.5..1.5));
        let victim = if rng.gen_bool(0.5) {
            Side::Client
        } else {
            Side::Server
        };
        if at > last {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let pair = slot.current.borrow().clone();
        drop_session(&ctx, &pair, victim).await;
        ctx.counters[slot.index]
            .session_drops
            .fetch_add(1, Ordering::Relaxed);
        // Plans of streams the dropped sessions never accepted.
        lock(&ctx.registry)
            .retain(|k, _| !(k.protocol == slot.index && k.generation == pair.generation));
        match connect(
            &ctx,
            &slot.listener,
            slot.protocol,
            slot.index,
            pair.generation + 1,
        )
        .await
        {
            Ok(next) => {
                slot.current.send_replace(next);
            }
            Err(e) => {
                ctx.fail(Failure::Reconnect {
                    protocol: slot.protocol,
                    message: e.to_string(),
                });
                return;
            }
        }
    }
}

/// Kills `victim`'s end of the connection and checks the aftermath.
async fn drop_session(ctx: &Ctx, pair: &Pair, victim: Side) {
    let bound = ctx.opts.drop_bound;
    let fail = |message: String| {
        ctx.fail(Failure::SessionDrop {
            protocol: pair.protocol,
            generation: pair.generation,
            message,
        })
    };
    let started = Instant::now();
    pair.dead.store(true, Ordering::SeqCst);
    match victim {
        Side::Client => pair.kill_client.kill(),
        Side::Server => pair.kill_server.kill(),
    }
    // Both sessions end: the victim with the killed transport's error, the peer with
    // the RST (or the end of file) it received.
    match timeout(bound, async {
        tokio::join!(pair.client.closed(), pair.server.closed())
    })
    .await
    {
        Err(_) => fail(format!(
            "{victim:?} side killed, but after {:.0}s the sessions are not both closed \
             (client closed: {}, server closed: {})",
            bound.as_secs_f64(),
            pair.client.is_closed(),
            pair.server.is_closed()
        )),
        Ok((client, server)) => {
            let (killed, peer) = match victim {
                Side::Client => (client, server),
                Side::Server => (server, client),
            };
            let killed_ok = matches!(&killed, ConnectionError::Transport { kind, message }
                if *kind == io::ErrorKind::ConnectionReset && message.contains(KILLED));
            if !killed_ok {
                fail(format!(
                    "the killed {victim:?} session ended with \"{killed}\", expected the \
                     killed transport's ConnectionReset"
                ));
            }
            let peer_ok = match &peer {
                ConnectionError::TransportClosed => true,
                ConnectionError::Transport { kind, .. } => matches!(
                    kind,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                _ => false,
            };
            if !peer_ok {
                fail(format!(
                    "the {:?} session whose peer was killed ended with \"{peer}\", expected \
                     a connection reset or end of file",
                    other(victim)
                ));
            }
        }
    }
    // Every operation on the pair ends, with an error, promptly.
    let remaining = bound.saturating_sub(started.elapsed());
    if !wait_until(remaining, || pair.running.load(Ordering::SeqCst) == 0).await {
        fail(format!(
            "{} operations still running {:.0}s after the kill: {}",
            pair.running.load(Ordering::SeqCst),
            bound.as_secs_f64(),
            ctx.running_ops_of(pair, 5).join("; ")
        ));
    }
    // With every handle gone, the dead sessions track no stream.
    if !wait_until(ctx.opts.settle_timeout, || pair.num_streams() == (0, 0)).await {
        let (client, server) = pair.residue();
        fail(format!(
            "streams still tracked after every operation ended: client {client}, server {server}"
        ));
    }
}

/// See [`crate::run_with_progress`].
pub(crate) async fn run(
    opts: Options,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Report, SoakError> {
    opts.validate().map_err(SoakError::Options)?;
    let start = Instant::now();
    let (stop, _) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        counters: opts.protocols.iter().map(|_| Counters::default()).collect(),
        opts: opts.clone(),
        start,
        tasks: Arc::new(Tasks::default()),
        stop,
        failures: Mutex::new(Vec::new()),
        failure_count: AtomicU64::new(0),
        next_op: AtomicU64::new(0),
        ops_running: AtomicU64::new(0),
        actors_running: AtomicU64::new(0),
        registry: Mutex::new(HashMap::new()),
        traces: Mutex::new(HashMap::new()),
        closing: AtomicBool::new(false),
        longest_op_us: AtomicU64::new(0),
    });

    // One listener and one pair per protocol.
    let mut slots = Vec::new();
    for (index, &protocol) in opts.protocols.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SoakError::Setup)?;
        let pair = connect(&ctx, &listener, protocol, index, 0)
            .await
            .map_err(SoakError::Setup)?;
        let (current, _) = watch::channel(pair);
        slots.push(Arc::new(Slot {
            protocol,
            index,
            listener,
            current,
        }));
    }

    // Workers on both sides of every protocol, and a session dropper per protocol.
    for slot in &slots {
        for side in [Side::Client, Side::Server] {
            for w in 0..opts.concurrency {
                let tag = ((slot.index as u64) << 40)
                    | (u64::from(side == Side::Server) << 32)
                    | w as u64;
                let seed = mix(opts.seed ^ mix(tag));
                ctx.tasks.spawn(
                    format!("{} {side:?} worker {w}", protocol_name(slot.protocol)),
                    worker(ctx.clone(), slot.current.subscribe(), side, seed),
                );
            }
        }
        let seed = mix(opts.seed ^ mix(0xD50F_0000 + slot.index as u64));
        ctx.tasks.spawn(
            format!("{} session dropper", protocol_name(slot.protocol)),
            session_dropper(ctx.clone(), slot.clone(), seed),
        );
    }

    // Traffic until the deadline (or the first failure), with progress lines and the
    // warm-up RSS sample.
    let deadline = start + opts.duration;
    let warmup_at = start + opts.warmup_time();
    let mut rss_warmup = None;
    let mut next_tick = start + opts.progress_interval;
    let watch_every =
        (opts.stall_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut next_watch = start + watch_every;
    let mut stop_rx = ctx.stop.subscribe();
    let progress = |ctx: &Ctx, slots: &[Arc<Slot>]| Progress {
        elapsed: start.elapsed(),
        streams_open: slots
            .iter()
            .map(|s| {
                let pair = s.current.borrow().clone();
                let (c, sv) = pair.num_streams();
                c + sv
            })
            .sum(),
        ops_running: ctx.ops_running.load(Ordering::SeqCst),
        totals: ctx.totals(),
        rss: rss(),
    };
    loop {
        let mut wake = next_tick.min(deadline).min(next_watch);
        if rss_warmup.is_none() && warmup_at < deadline {
            wake = wake.min(warmup_at);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        if rss_warmup.is_none() && now >= warmup_at && warmup_at < deadline {
            rss_warmup = rss();
        }
        if now >= deadline {
            break;
        }
        if now >= next_watch {
            ctx.check_stalls();
            next_watch = now + watch_every;
        }
        if now >= next_tick {
            on_progress(&progress(&ctx, &slots));
            next_tick += opts.progress_interval;
        }
    }
    let traffic_time = start.elapsed();
    ctx.stop.send_replace(true);
    let drain_start = Instant::now();

    // Drain: every worker finishes its operation, every acceptor its stream. Each
    // operation is bounded on its own; this bound only guards the soak itself.
    let drain = opts.op_timeout + opts.drop_bound * 2 + opts.settle_timeout;
    let drained = wait_until(drain, || {
        ctx.check_stalls();
        ctx.actors_running.load(Ordering::SeqCst) == 0
            && ctx.ops_running.load(Ordering::SeqCst) == 0
    })
    .await;
    if !drained {
        for op in ctx.all_running_ops(10) {
            ctx.fail(Failure::OpTimeout { op, bound: drain });
        }
    }
    let drain_time = drain_start.elapsed();
    on_progress(&progress(&ctx, &slots));

    // Every stream closed: the live sessions track none.
    let mut streams_left = 0;
    for slot in &slots {
        let pair = slot.current.borrow().clone();
        if pair.is_dead() {
            continue;
        }
        // Nothing held: no stream, and no received or written byte left in a buffer.
        let clean = (Residue::default(), Residue::default());
        if !wait_until(opts.settle_timeout, || pair.residue() == clean).await {
            let (client, server) = pair.residue();
            streams_left += client.streams + server.streams;
            ctx.fail(Failure::StreamsLeft {
                protocol: pair.protocol,
                generation: pair.generation,
                client,
                server,
            });
        }
    }
    // Every opened stream was accepted by its peer, except that a yamux stream reset
    // before its SYN went out is never announced (braid sends only the RST, which the
    // peer ignores for a stream it does not know).
    let unaccepted: Vec<(RegKey, Plan)> = lock(&ctx.registry)
        .drain()
        .filter(|(key, plan)| {
            !(opts.protocols[key.protocol] == Protocol::Yamux && plan.header_may_be_lost())
        })
        .collect();
    for (key, plan) in unaccepted.into_iter().take(10) {
        ctx.fail(Failure::Op {
            op: OpInfo {
                id: 0,
                protocol: opts.protocols[key.protocol],
                generation: key.generation,
                opener: key.opener,
                role: Role::Acceptor,
                stream_id: Some(key.stream_id),
                plan: Some(plan),
                written: 0,
                read: 0,
                phase: "never accepted",
                age: Duration::ZERO,
                idle: Duration::ZERO,
            },
            message: "the stream was opened but its peer never accepted it".into(),
        });
    }
    let rss_end = rss();

    // Close every session gracefully; then every task (drivers, accept loops) ends.
    ctx.closing.store(true, Ordering::SeqCst);
    let close_bound = Duration::from_secs(15);
    for slot in &slots {
        let pair = slot.current.borrow().clone();
        let closed = timeout(close_bound, async {
            tokio::join!(pair.client.close(), pair.server.close())
        })
        .await;
        if closed.is_err() {
            ctx.fail(Failure::CloseHang {
                protocol: pair.protocol,
                bound: close_bound,
            });
        }
    }
    drop(slots);
    let tasks = ctx.tasks.clone();
    if !wait_until(opts.settle_timeout, || tasks.finished() == tasks.spawned()).await {
        ctx.fail(Failure::TasksLeft {
            spawned: tasks.spawned(),
            finished: tasks.finished(),
            running: tasks.running(10),
        });
    }
    for (task, message) in tasks.take_panics() {
        ctx.fail(Failure::Panic { task, message });
    }

    // Memory: growth after the warm-up bounded.
    if let (Some(warmup), Some(end)) = (rss_warmup, rss_end) {
        if end > warmup + opts.rss_growth_limit {
            ctx.fail(Failure::RssGrowth {
                warmup,
                end,
                limit: opts.rss_growth_limit,
            });
        }
    }

    let per_protocol: Vec<(Protocol, Totals)> = opts
        .protocols
        .iter()
        .zip(&ctx.counters)
        .map(|(p, c)| (*p, c.totals()))
        .collect();
    // A soak that did nothing fails: every kind of operation happened on every
    // protocol (unless the run stopped early on a failure anyway).
    if opts.require_every_kind && ctx.failure_count.load(Ordering::SeqCst) == 0 {
        for (protocol, t) in &per_protocol {
            let mut missing: Vec<&'static str> = OpKind::ALL
                .iter()
                .filter(|k| t.ops_of(**k) == 0)
                .map(|k| k.name())
                .collect();
            if t.bytes_verified == 0 {
                missing.push("verified byte");
            }
            if opts.session_drop_interval.is_some() && t.session_drops == 0 {
                missing.push("session drop");
            }
            for what in missing {
                ctx.fail(Failure::NothingDone {
                    protocol: *protocol,
                    what,
                });
            }
        }
    }

    let report = Report {
        seed: opts.seed,
        protocols: opts.protocols.clone(),
        traffic_time,
        drain_time,
        longest_op: Duration::from_micros(ctx.longest_op_us.load(Ordering::Relaxed)),
        total_time: start.elapsed(),
        totals: ctx.totals(),
        per_protocol,
        streams_left,
        tasks_spawned: tasks.spawned(),
        tasks_finished: tasks.finished(),
        rss_warmup,
        rss_end,
        rss_limit: opts.rss_growth_limit,
    };
    let failures = std::mem::take(&mut *lock(&ctx.failures));
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(SoakError::Failed {
            failures,
            report: Box::new(report),
        })
    }
}
