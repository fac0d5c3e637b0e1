//! Streams opened and closed in turn over ONE yamux session: SYN and FIN written
//! together, the target echoes (nothing) and closes, braid's FIN ends the stream. A few
//! streams are in flight at a time. This attack reads what braid sends: to know when a
//! stream has ended, and to answer keepalive pings (else braid would end the session).

use super::{procfs, wire, Attacked, Check, Ctx, MIB};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// Streams in flight.
const IN_FLIGHT: usize = 64;
/// A stream ending later than this after the previous one: the churn is stuck.
const STUCK: Duration = Duration::from_secs(10);

pub(crate) async fn run(ctx: &Ctx) -> Result<Attacked, String> {
    let n = ctx
        .opts
        .churn_streams
        .unwrap_or(if ctx.full() { 1_000_000 } else { 3_000 });
    let every = if ctx.full() { 10_000 } else { (n / 10).max(1) };
    let tcp = TcpStream::connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = tcp.into_split();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u32>();
    let resets = Arc::new(AtomicU64::new(0));
    let pid = ctx.pid;

    // Reader: frees a slot per ended stream, samples every `every` streams.
    let progress = Arc::new(Mutex::new((0u64, Vec::new())));
    let (s, r, prog) = (slots.clone(), resets.clone(), progress.clone());
    let reader = tokio::spawn(async move {
        let mut ended = vec![false; n as usize];
        let mut done = 0u64;
        let mut header = [0u8; wire::Y_HEADER];
        let mut sink = vec![0u8; 64 * 1024];
        if let Some(p) = pid.and_then(procfs::sample) {
            prog.lock()
                .unwrap()
                .1
                .push((0, p.rss as f64 / MIB as f64, p.cpu));
        }
        while done < n {
            if rd.read_exact(&mut header).await.is_err() {
                return;
            }
            let h = wire::parse_yamux(&header);
            if h.kind == wire::Y_DATA {
                let mut left = h.length as usize;
                while left > 0 {
                    let k = left.min(sink.len());
                    if rd.read_exact(&mut sink[..k]).await.is_err() {
                        return;
                    }
                    left -= k;
                }
            }
            if h.kind == wire::Y_PING && h.flags & wire::F_SYN != 0 {
                let _ = pong_tx.send(h.length);
            }
            let end = h.flags & (wire::F_FIN | wire::F_RST) != 0;
            if end && h.id % 2 == 1 {
                let i = (h.id / 2) as usize;
                if i < ended.len() && !ended[i] {
                    ended[i] = true;
                    done += 1;
                    prog.lock().unwrap().0 = done;
                    if h.flags & wire::F_RST != 0 {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    s.add_permits(1);
                    if done.is_multiple_of(every) {
                        if let Some(p) = pid.and_then(procfs::sample) {
                            let rss = p.rss as f64 / MIB as f64;
                            prog.lock().unwrap().1.push((done, rss, p.cpu));
                        }
                    }
                }
            }
        }
    });

    let start = std::time::Instant::now();
    let mut opened = 0u64;
    let mut buf = Vec::new();
    let mut stuck = false;
    while opened < n {
        buf.clear();
        tokio::select! {
            permit = tokio::time::timeout(STUCK, slots.acquire()) => {
                match permit {
                    Ok(Ok(p)) => p.forget(),
                    _ => { stuck = true; break; }
                }
                let mut k = 1;
                while opened + k < n && slots.try_acquire().map(|p| p.forget()).is_ok() {
                    k += 1;
                }
                for _ in 0..k {
                    let id = (2 * opened + 1) as u32;
                    wire::yamux(&mut buf, wire::Y_WINDOW, wire::F_SYN, id, 0);
                    wire::yamux(&mut buf, wire::Y_WINDOW, wire::F_FIN, id, 0);
                    opened += 1;
                }
            }
            Some(v) = pong_rx.recv() => {
                wire::yamux(&mut buf, wire::Y_PING, wire::F_ACK, 0, v);
            }
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
    }
    // The last streams' ends (bounded: a stuck session ends the wait).
    let waited = tokio::time::timeout(STUCK, async {
        while slots.available_permits() < IN_FLIGHT {
            tokio::select! {
                Some(v) = pong_rx.recv() => {
                    buf.clear();
                    wire::yamux(&mut buf, wire::Y_PING, wire::F_ACK, 0, v);
                    let _ = wr.write_all(&buf).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    drop(wr);
    reader.abort();
    let (done, series) = std::mem::take(&mut *progress.lock().unwrap());
    let mut a = Attacked {
        did: format!("{opened} yamux streams opened and closed in turn on one session ({IN_FLIGHT} in flight)"),
        ..Default::default()
    };
    a.notes.push(format!(
        "{done} ended in {secs:.1} s ({:.0} streams/s), {} of them by RST",
        done as f64 / secs,
        resets.load(Ordering::Relaxed)
    ));
    if stuck || waited.is_err() {
        a.notes.push(format!(
            "stuck: no stream ended for {STUCK:?} after {done} streams"
        ));
    }
    // Flat RSS: from the first sample after warm-up (the first step) to the last.
    if series.len() >= 3 {
        let (first, last) = (series[1], series[series.len() - 1]);
        let growth = last.1 - first.1;
        a.checks.push(Check::new(
            "churn RSS flat",
            format!("growth <= 8 MiB from {} to {} streams", first.0, last.0),
            format!(
                "{growth:.1} MiB ({:.0} bytes per stream)",
                growth * MIB as f64 / (last.0 - first.0) as f64
            ),
            growth <= 8.0,
        ));
        let step = |i: usize| series[i].2 - series[i - 1].2;
        a.notes.push(format!(
            "server CPU per {every} streams: first step {:.2} s, last {:.2} s",
            step(1),
            step(series.len() - 1)
        ));
    }
    a.series = series;
    Ok(a)
}
