//! The four workloads, generic over the library (see [`super::libs`]). Client and server
//! run in this one process over loopback TCP; each checks what it receives. The Go peer
//! (`bench/go/main.go`) implements the same four the same way.

use super::libs::{Acceptor, BenchStream, Opener};
use super::sample::{cpu_seconds, peak_rss_kib, rss_kib, Sample, Series};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The byte a bulk receiver replies with once it has read everything.
const REPLY: u8 = 0xA5;
/// Latency round trips before the timed ones.
pub const WARM_UP: u64 = 100;
/// How long to wait for the server's own error after the client failed, to report the
/// cause rather than its symptom.
const SERVER_ERROR_GRACE: Duration = Duration::from_secs(2);

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn join_error(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("task failed: {e}"))
}

fn ended(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, what)
}

/// Fills `buf` completely. `Ok(false)`: the stream ended before the first byte.
async fn read_full<S: BenchStream>(s: &mut S, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(invalid(format!(
                "stream ended after {got} of {} bytes",
                buf.len()
            )));
        }
        got += n;
    }
    Ok(true)
}

/// Waits briefly for the server task's error after the client failed with `client`.
async fn with_server_cause<T>(
    client: io::Error,
    server: tokio::task::JoinHandle<io::Result<T>>,
) -> io::Error {
    match tokio::time::timeout(SERVER_ERROR_GRACE, server).await {
        Ok(Ok(Err(e))) => io::Error::new(e.kind(), format!("server: {e}; client: {client}")),
        Ok(Err(e)) => io::Error::other(format!("server task: {e}; client: {client}")),
        _ => client,
    }
}

/// Records every receiving stream's byte count every `every` until stopped.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Vec<f64>, Vec<Vec<u64>>)>,
}

impl Sampler {
    fn start(counters: Arc<Vec<AtomicU64>>, start: Instant, every: Duration) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (mut times, mut rows) = (Vec::new(), Vec::new());
            let mut tick = tokio::time::interval_at((start + every).into(), every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return (times, rows),
                    _ = tick.tick() => {
                        times.push(start.elapsed().as_secs_f64());
                        rows.push(counters.iter().map(|c| c.load(Ordering::Relaxed)).collect());
                    }
                }
            }
        });
        Sampler { stop, task }
    }

    /// Stops sampling and adds the final counts at `end` seconds.
    async fn finish(self, counters: &[AtomicU64], end: f64) -> io::Result<Series> {
        let _ = self.stop.send(());
        let (mut t_s, mut rows) = self.task.await.map_err(join_error)?;
        // A tick may land between measuring `end` and the stop: the final point replaces it.
        while t_s.last().is_some_and(|&t| t >= end) {
            t_s.pop();
            rows.pop();
        }
        t_s.push(end);
        rows.push(counters.iter().map(|c| c.load(Ordering::Relaxed)).collect());
        // Transpose: one row per stream.
        let bytes = (0..counters.len())
            .map(|i| rows.iter().map(|r: &Vec<u64>| r[i]).collect())
            .collect();
        Ok(Series { t_s, bytes })
    }
}

/// Bulk: the client opens `streams` streams at once, each writes `per_stream` bytes with
/// `write_all` in `chunk`-sized pieces and then waits for a one-byte reply; the server
/// reads each stream with a `chunk`-sized buffer until all its bytes arrived and replies
/// one byte. Streams stay open until the end. Timed from the first open to the last
/// reply. With `sample_every`, the bytes each stream received are recorded over time.
pub async fn bulk<O: Opener, A: Acceptor>(
    mut opener: O,
    mut acceptor: A,
    streams: usize,
    per_stream: u64,
    chunk: usize,
    sample_every: Option<Duration>,
) -> io::Result<Sample> {
    let wave = opener.wave().unwrap_or(streams).clamp(1, streams);
    // Libraries opened in waves get each wave's streams closed before the next opens.
    let keep = wave == streams;
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..streams).map(|_| AtomicU64::new(0)).collect());
    let received = counters.clone();
    let server = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for i in 0..streams {
            let Some(s) = acceptor.accept().await? else {
                return Err(ended(format!(
                    "connection ended after accepting {i} of {streams} streams"
                )));
            };
            tasks.spawn(receive_and_reply(
                s,
                per_stream,
                chunk,
                received.clone(),
                i,
                keep,
            ));
            // A finished task holds its stream until joined: drop the ones not kept now.
            while let Some(r) = (!keep).then(|| tasks.try_join_next()).flatten() {
                r.map_err(join_error)??;
            }
        }
        let mut open = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let s = r.map_err(join_error)??;
            if keep {
                open.push(s);
            }
        }
        Ok((acceptor, open))
    });

    // One payload buffer shared by all senders, so that the process's peak RSS reflects
    // the library rather than 1000 copies of it.
    let payload: Arc<[u8]> = vec![0x5Au8; chunk].into();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let sampler = sample_every.map(|every| Sampler::start(counters.clone(), start, every));
    let client: io::Result<Vec<O::Stream>> = async {
        let mut open = Vec::new();
        let mut opened = 0;
        while opened < streams {
            let mut tasks = JoinSet::new();
            for _ in 0..wave.min(streams - opened) {
                let s = opener.open().await?;
                tasks.spawn(send_and_wait(s, per_stream, payload.clone(), keep));
                opened += 1;
            }
            while let Some(r) = tasks.join_next().await {
                let s = r.map_err(join_error)??;
                if keep {
                    open.push(s);
                }
            }
        }
        Ok(open)
    }
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let series = match sampler {
        Some(s) => Some(s.finish(&counters, elapsed).await?),
        None => None,
    };
    let client_streams = match client {
        Ok(s) => s,
        Err(e) => return Err(with_server_cause(e, server).await),
    };
    let server_side = server.await.map_err(join_error)??;
    let bytes = per_stream * streams as u64;
    let sample = Sample {
        ok: true,
        elapsed_s: elapsed,
        bytes,
        streams: streams as u64,
        mb_per_s: Some(bytes as f64 / elapsed / 1e6),
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        note: (!keep).then(|| format!("opened and closed in waves of {wave}")),
        series,
        ..Sample::default()
    };
    drop((client_streams, server_side, opener));
    Ok(sample)
}

/// Ends a stream in both directions: this side's FIN, then the peer's (for libraries
/// that count a stream until both are through).
async fn close_both<S: BenchStream>(s: &mut S) -> io::Result<()> {
    s.close_write().await?;
    let mut rest = [0u8; 64];
    while s.read(&mut rest).await? > 0 {}
    Ok(())
}

async fn send_and_wait<S: BenchStream>(
    mut s: S,
    bytes: u64,
    buf: Arc<[u8]>,
    keep: bool,
) -> io::Result<S> {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    let mut reply = [0u8; 1];
    if !read_full(&mut s, &mut reply).await? {
        return Err(invalid("stream ended without the reply"));
    }
    if reply[0] != REPLY {
        return Err(invalid(format!("wrong reply byte {:#04x}", reply[0])));
    }
    if !keep {
        close_both(&mut s).await?;
    }
    Ok(s)
}

async fn receive_and_reply<S: BenchStream>(
    mut s: S,
    expected: u64,
    chunk: usize,
    counters: Arc<Vec<AtomicU64>>,
    index: usize,
    keep: bool,
) -> io::Result<S> {
    let mut buf = vec![0u8; chunk];
    let mut got = 0u64;
    while got < expected {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(invalid(format!(
                "stream ended after {got} of {expected} bytes"
            )));
        }
        got += n as u64;
        counters[index].store(got, Ordering::Relaxed);
    }
    if got != expected {
        return Err(invalid(format!(
            "received {got} bytes, expected {expected}"
        )));
    }
    s.write_all(&[REPLY]).await?;
    if !keep {
        close_both(&mut s).await?;
    }
    Ok(s)
}

/// Latency: `round_trips` messages of `size` bytes on one stream (after [`WARM_UP`]
/// untimed ones), each echoed before the next is sent; every echo is compared with what
/// was sent.
pub async fn latency<O: Opener, A: Acceptor>(
    mut opener: O,
    mut acceptor: A,
    round_trips: u64,
    size: usize,
) -> io::Result<Sample> {
    let server = tokio::spawn(async move {
        let mut s = acceptor
            .accept()
            .await?
            .ok_or_else(|| ended("connection ended".into()))?;
        let mut buf = vec![0u8; size];
        while read_full(&mut s, &mut buf).await? {
            s.write_all(&buf).await?;
        }
        s.close_write().await?;
        Ok(acceptor)
    });

    let mut rtts: Vec<u64> = Vec::with_capacity(round_trips as usize);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let client: io::Result<()> = async {
        let mut s = opener.open().await?;
        let mut msg = vec![0u8; size];
        let mut echo = vec![0u8; size];
        for i in 0..WARM_UP + round_trips {
            for (j, b) in msg.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
            }
            let t0 = Instant::now();
            s.write_all(&msg).await?;
            if !read_full(&mut s, &mut echo).await? {
                return Err(invalid(format!("stream ended at round trip {i}")));
            }
            if i >= WARM_UP {
                rtts.push(t0.elapsed().as_nanos() as u64);
            }
            if echo != msg {
                return Err(invalid(format!("echo differs at round trip {i}")));
            }
        }
        s.close_write().await?;
        Ok(())
    }
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    if let Err(e) = client {
        return Err(with_server_cause(e, server).await);
    }
    // The client's stream is dropped by now (for libraries without half-close that is
    // what ends the server's echo loop).
    let acceptor = server.await.map_err(join_error)??;
    rtts.sort_unstable();
    let sample = Sample {
        ok: true,
        elapsed_s: elapsed,
        streams: 1,
        round_trips: Some(round_trips),
        p50_us: Some(percentile(&rtts, 50.0) as f64 / 1e3),
        p99_us: Some(percentile(&rtts, 99.0) as f64 / 1e3),
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        ..Sample::default()
    };
    drop((opener, acceptor));
    Ok(sample)
}

/// The nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Churn: for `duration`, each of `workers` client tasks opens a stream, sends one byte,
/// reads its echo and closes the stream, over and over (opens take turns on the shared
/// session). The server echoes the byte and closes. Rate: completed streams per second.
pub async fn churn<O: Opener, A: Acceptor>(
    opener: O,
    mut acceptor: A,
    duration: Duration,
    workers: usize,
) -> io::Result<Sample> {
    let server_error: Arc<Mutex<Option<String>>> = Arc::default();
    let errors = server_error.clone();
    let server = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        while let Some(s) = acceptor.accept().await? {
            let errors = errors.clone();
            tasks.spawn(async move {
                if let Err(e) = echo_one(s).await {
                    errors
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(e.to_string());
                }
            });
            // Reap finished handlers so that they do not pile up.
            while tasks.try_join_next().is_some() {}
        }
        io::Result::Ok(())
    });

    let opener = Arc::new(tokio::sync::Mutex::new(opener));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..workers.max(1) {
        let opener = opener.clone();
        clients.spawn(async move {
            let mut done = 0u64;
            loop {
                let mut s = opener.lock().await.open().await?;
                let byte = [done as u8];
                s.write_all(&byte).await?;
                let mut echo = [0u8; 1];
                if !read_full(&mut s, &mut echo).await? {
                    return Err(invalid(format!("stream {done} ended without the echo")));
                }
                if echo != byte {
                    return Err(invalid(format!("wrong echo on stream {done}")));
                }
                s.close_write().await?;
                drop(s);
                done += 1;
                if start.elapsed() >= duration {
                    return io::Result::Ok(done);
                }
            }
        });
    }
    let mut done = 0u64;
    let mut client: io::Result<()> = Ok(());
    while let Some(r) = clients.join_next().await {
        match r.map_err(join_error).and_then(|r| r) {
            Ok(n) => done += n,
            Err(e) => {
                client = Err(e);
                clients.abort_all();
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let server_failure = server_error.lock().expect("not poisoned").take();
    if let Err(e) = client {
        let e = match server_failure {
            Some(s) => io::Error::new(e.kind(), format!("server: {s}; client: {e}")),
            None => with_server_cause(e, server).await,
        };
        return Err(e);
    }
    if let Some(s) = server_failure {
        return Err(io::Error::other(format!("server: {s}")));
    }
    server.abort();
    Ok(Sample {
        ok: true,
        elapsed_s: elapsed,
        streams: done,
        streams_per_s: Some(done as f64 / elapsed),
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        ..Sample::default()
    })
}

async fn echo_one<S: BenchStream>(mut s: S) -> io::Result<()> {
    let mut byte = [0u8; 1];
    if !read_full(&mut s, &mut byte).await? {
        return Err(invalid("stream ended before its byte"));
    }
    s.write_all(&byte).await?;
    s.close_write().await
}

/// Idle: after one warm-up stream that carries a byte each way (so that buffers
/// allocated on first use are in the baseline), the client opens `streams` streams while
/// the server accepts them, and nobody writes. Reports the growth of the process's
/// resident set (both ends' state per stream).
pub async fn idle<O: Opener, A: Acceptor>(
    mut opener: O,
    mut acceptor: A,
    streams: usize,
) -> io::Result<Sample> {
    if let Some(max) = opener.max_streams() {
        if streams + 1 > max {
            return Ok(Sample::not_applicable(format!(
                "at most {max} streams per connection"
            )));
        }
    }
    let mut first = opener.open().await?;
    first.write_all(&[1]).await?;
    let mut peer = acceptor
        .accept()
        .await?
        .ok_or_else(|| ended("connection ended".into()))?;
    let mut byte = [0u8; 1];
    if !read_full(&mut peer, &mut byte).await? {
        return Err(invalid("warm-up stream ended"));
    }
    peer.write_all(&byte).await?;
    if !read_full(&mut first, &mut byte).await? {
        return Err(invalid("warm-up stream ended"));
    }

    let before = rss_kib();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    // Accept as they come: accept backlogs are bounded.
    let server = tokio::spawn(async move {
        let mut accepted = Vec::with_capacity(streams);
        while accepted.len() < streams {
            match acceptor.accept().await? {
                Some(s) => accepted.push(s),
                None => {
                    return Err(ended(format!(
                        "connection ended after accepting {} of {streams} streams",
                        accepted.len()
                    )))
                }
            }
        }
        io::Result::Ok((acceptor, accepted))
    });
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        match opener.open().await {
            Ok(s) => opened.push(s),
            Err(e) => return Err(with_server_cause(e, server).await),
        }
    }
    let server_side = server.await.map_err(join_error)??;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let after = rss_kib();
    let sample = Sample {
        ok: true,
        elapsed_s: elapsed,
        streams: streams as u64,
        rss_growth_kib: Some(after.saturating_sub(before)),
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        ..Sample::default()
    };
    drop((opened, server_side, first, peer, opener));
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_pass_over_tcp_and_braid() {
        let (o, a) = super::super::libs::tcp().await.unwrap();
        let s = bulk(o, a, 3, 100_000, 4096, Some(Duration::from_millis(1)))
            .await
            .unwrap();
        assert_eq!(s.bytes, 300_000);
        let series = s.series.unwrap();
        assert_eq!(series.bytes.len(), 3);
        for row in &series.bytes {
            assert_eq!(row.len(), series.t_s.len());
            assert_eq!(*row.last().unwrap(), 100_000);
            assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        }
        let (o, a) = super::super::libs::braid(braid::Protocol::SmuxV1)
            .await
            .unwrap();
        let s = latency(o, a, 50, 64).await.unwrap();
        assert_eq!(s.round_trips, Some(50));
        let (o, a) = super::super::libs::braid(braid::Protocol::Yamux)
            .await
            .unwrap();
        let s = churn(o, a, Duration::from_millis(50), 4).await.unwrap();
        assert!(s.streams > 0);
        let (o, a) = super::super::libs::braid(braid::Protocol::SmuxV2)
            .await
            .unwrap();
        let s = idle(o, a, 100).await.unwrap();
        assert_eq!(s.streams, 100);
    }
}
