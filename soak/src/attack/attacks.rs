//! The smaller attacks (SYN flood, ping flood, window-credit drip, silent
//! connections), the dispatch, and the write helper they share.

use super::{churn, flood, procfs, slowread, wire, Attack, Attacked, Check, Ctx};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) async fn run(attack: Attack, ctx: &Ctx) -> Result<Attacked, String> {
    match attack {
        Attack::FloodYamux => flood::run(ctx, false).await,
        Attack::FloodSmux => flood::run(ctx, true).await,
        Attack::SynYamux => syn(ctx, false).await,
        Attack::SynSmux => syn(ctx, true).await,
        Attack::Ping => ping(ctx).await,
        Attack::Drip => drip(ctx).await,
        Attack::Silent => silent(ctx).await,
        Attack::Churn => churn::run(ctx).await,
        Attack::SlowReadTls => slowread::run(ctx, true).await,
        Attack::SlowReadTcp => slowread::run(ctx, false).await,
    }
}

/// Why [`push`] stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The socket took nothing for the stall time.
    Blocked,
    /// The write failed (the server closed the connection).
    Failed(std::io::Error),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Blocked => write!(f, "the socket blocked"),
            Stop::Failed(e) => write!(f, "write failed: {e}"),
        }
    }
}

/// Writes `buf`; `written` counts the bytes the socket took. Stops when a write makes no
/// progress for `stall`.
pub(crate) async fn push<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    stall: Duration,
    written: &mut usize,
) -> Result<(), Stop> {
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout(stall, w.write(&buf[off..])).await {
            Ok(Ok(0)) => return Err(Stop::Failed(std::io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => {
                off += n;
                *written += n;
            }
            Ok(Err(e)) => return Err(Stop::Failed(e)),
            Err(_) => return Err(Stop::Blocked),
        }
    }
    Ok(())
}

/// How long a socket may take nothing before an attack counts it as blocked.
pub(crate) fn stall(ctx: &Ctx) -> Duration {
    if ctx.full() {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(1)
    }
}

/// Waits (at most 30 s) until the server has taken in everything our socket `local`
/// sent it: the socket's send queue is empty.
pub(crate) async fn drained(local: std::net::SocketAddr, server: std::net::SocketAddr) {
    let start = Instant::now();
    while procfs::tcp_tx_queue(local, server).unwrap_or(0) > 0
        && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 10 s) until `want` of the target's connections have started sending.
pub(crate) async fn sourcing(ctx: &Ctx, want: u64) {
    let start = Instant::now();
    while ctx.target.sourcing.load(Ordering::Relaxed) < want
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `f` has given the same value for `quiet` (at most `limit`); returns it.
pub(crate) async fn settle(mut f: impl FnMut() -> u64, quiet: Duration, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = f();
    let mut since = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v = f();
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

async fn syn(ctx: &Ctx, smux: bool) -> Result<Attacked, String> {
    let n: u32 = if ctx.full() { 10_000 } else { 500 };
    let mut tcp = TcpStream::connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for i in 0..n {
        let id = 2 * i + 3;
        if smux {
            wire::smux(&mut buf, 1, wire::S_SYN, id, &[]);
        } else {
            wire::yamux(&mut buf, wire::Y_WINDOW, wire::F_SYN, id, 0);
        }
    }
    let accepted0 = ctx.target.attackers();
    let mut written = 0;
    let stop = push(&mut tcp, &buf, stall(ctx), &mut written).await.err();
    // Let the server work through what it took: until the target sees no new connection
    // for a second.
    let accepted = settle(
        || ctx.target.attackers(),
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await
        - accepted0;
    let mut a = Attacked {
        did: format!(
            "{n} {} SYNs ({} KiB), never read",
            if smux { "smux v1" } else { "yamux" },
            written / 1024
        ),
        ..Default::default()
    };
    a.notes.push(format!(
        "the server connected {accepted} streams to the target (which never reads)"
    ));
    if let Some(s) = stop {
        a.notes.push(format!("stopped early: {s}"));
    }
    Ok(a)
}

async fn ping(ctx: &Ctx) -> Result<Attacked, String> {
    let n: u32 = if ctx.full() { 200_000 } else { 20_000 };
    let mut tcp = TcpStream::connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(n as usize * wire::Y_HEADER);
    for i in 0..n {
        wire::yamux(&mut buf, wire::Y_PING, wire::F_SYN, 0, i);
    }
    let mut written = 0;
    let stop = push(&mut tcp, &buf, stall(ctx), &mut written).await.err();
    // Give the server a moment to answer what it read (we never read it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut a = Attacked {
        did: format!(
            "{} yamux pings, replies never read",
            written / wire::Y_HEADER
        ),
        ..Default::default()
    };
    if let Some(s) = stop {
        a.notes.push(format!("stopped early: {s}"));
    }
    Ok(a)
}

async fn drip(ctx: &Ctx) -> Result<Attacked, String> {
    let streams: u32 = if ctx.full() { 64 } else { 32 };
    let updates: u32 = if ctx.full() { 2_000_000 } else { 100_000 };
    let tcp = TcpStream::connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    let (local, remote) = (tcp.local_addr().map_err(|e| e.to_string())?, ctx.server);
    let (mut rd, mut tcp) = tcp.into_split();
    let mut buf = Vec::new();
    for i in 0..streams {
        wire::yamux(&mut buf, wire::Y_WINDOW, wire::F_SYN, 2 * i + 1, 0);
    }
    let sourcing0 = ctx.target.sourcing.load(Ordering::Relaxed);
    tcp.write_all(&buf).await.map_err(|e| e.to_string())?;
    // This attack reads (and drops) what braid sends, so that braid's writes are held
    // by the window we grant and not by the socket: first every stream's initial
    // window, then one byte per update.
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut sink).await {
            g.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    // The target sends on every stream: wait until braid stops sending (its windows
    // are spent, its send buffers fill).
    sourcing(ctx, sourcing0 + u64::from(streams)).await;
    let queued = settle(
        || got.load(Ordering::Relaxed),
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    let before = ctx.sample();
    buf.clear();
    for i in 0..updates {
        wire::yamux(&mut buf, wire::Y_WINDOW, 0, 2 * (i % streams) + 1, 1);
    }
    let start = Instant::now();
    let mut written = 0;
    let stop = push(&mut tcp, &buf, stall(ctx), &mut written).await.err();
    drained(local, remote).await;
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.sample();
    let dripped = got.load(Ordering::Relaxed) - queued;
    reader.abort();
    let mut a = Attacked {
        did: format!(
            "{streams} yamux streams (target sends), {} 1-byte window updates",
            written / wire::Y_HEADER
        ),
        ..Default::default()
    };
    a.notes.push(format!(
        "{queued} bytes received before the drip (the initial windows), {dripped} during it; the server took the updates in {secs:.1} s"
    ));
    if let (Some(b), Some(e)) = (before, after) {
        let growth = e.rss as f64 - b.rss as f64;
        a.checks.push(Check::new(
            "drip RSS growth",
            "<= 8 MiB over the drip",
            format!("{:.1} MiB", growth / (1 << 20) as f64),
            growth <= (8 << 20) as f64,
        ));
        a.notes.push(format!(
            "server CPU during the drip: {:.1} s",
            e.cpu - b.cpu
        ));
    }
    if let Some(s) = stop {
        a.notes.push(format!("stopped early: {s}"));
    }
    Ok(a)
}

async fn silent(ctx: &Ctx) -> Result<Attacked, String> {
    let n: usize = if ctx.full() { 2_000 } else { 50 };
    let (detect, by_flag) = ctx.detect;
    let deadline = if ctx.full() {
        Duration::from_secs(90).max(detect + Duration::from_secs(5))
    } else {
        detect + Duration::from_secs(3)
    };
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let tcp = TcpStream::connect(ctx.server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let t0 = Instant::now();
        tasks.spawn(async move {
            let mut tcp = tcp;
            let mut b = [0u8; 1];
            // Reading only to see the close: braid sends nothing to an undetected peer.
            let _ = tcp.read(&mut b).await;
            t0.elapsed()
        });
    }
    let connected = start.elapsed();
    let mut closed = Vec::new();
    let _ = tokio::time::timeout_at((start + deadline).into(), async {
        while let Some(Ok(t)) = tasks.join_next().await {
            closed.push(t);
        }
    })
    .await;
    tasks.abort_all();
    closed.sort();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mut a = Attacked {
        did: format!("{n} TCP connections that never send a byte"),
        ..Default::default()
    };
    a.notes.push(format!(
        "connected in {}; {} closed by the server within {} (first {}, median {}, last {})",
        secs(connected),
        closed.len(),
        secs(deadline),
        closed.first().map_or("-".into(), |d| secs(*d)),
        closed
            .get(closed.len() / 2)
            .map_or("-".into(), |d| secs(*d)),
        closed.last().map_or("-".into(), |d| secs(*d)),
    ));
    let bound = detect + Duration::from_secs(1);
    let in_time = closed.iter().filter(|d| **d <= bound).count();
    a.checks.push(Check::new(
        "silent closed",
        format!(
            "all closed within the detection timeout {} + 1 s{}",
            secs(detect),
            if by_flag {
                " (--detect-timeout)"
            } else {
                " (no --detect-timeout given, or the server has none: the default)"
            }
        ),
        format!("{in_time} of {n}"),
        in_time == n,
    ));
    Ok(a)
}
