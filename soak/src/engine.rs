//! The run: session pairs per protocol, workers on both sides, accept loops, session
//! drops, the drain and the final checks.

use crate::ops::{self, Env, OpResult, Outcome};
use crate::pattern::mix;
use crate::plan::{OpKind, Plan, Role};
use crate::report::{protocol_name, Failure, OpInfo, Progress, Report, Residue, SoakError, Totals};
use crate::state::{
    config, lock, other, rss, wait_until, Counters, Ctx, OpTrace, Pair, RegKey, Slot,
};
use crate::tasks::Tasks;
use crate::transport::{KillSwitch, Killable, KILLED};
use crate::Options;
use braid::{ConnectionError, Protocol, Session, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

impl Ctx {
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
