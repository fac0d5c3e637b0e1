//! The three workloads, generic over the library (see [`crate::libs`]). Client and
//! server run in this one process over loopback TCP; each checks what it receives.

use crate::libs::{Acceptor, BenchStream, Opener};
use crate::sample::{cpu_seconds, peak_rss_kib, Sample};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The byte a bulk receiver replies with once it has read everything.
const REPLY: u8 = 0xA5;

/// How long to wait for the server's own error after the client failed, to report the
/// cause rather than its symptom.
const SERVER_ERROR_GRACE: Duration = Duration::from_secs(2);

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn join_error(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("task failed: {e}"))
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

/// Reads until the end; returns how many bytes there were.
async fn read_to_end<S: BenchStream>(s: &mut S, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = s.read(buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Waits for the server task's error, briefly, after the client failed with `client`.
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

/// Bulk: `streams` streams each carry `per_stream` bytes in `chunk`-sized writes, then
/// half-close (or, without half-close, announce the length in an 8-byte big-endian prefix
/// first); the receiver reads to the end, checks the count and replies one byte, then
/// closes. The sender checks the reply and that nothing follows it. Timed from the
/// first open to the last reply.
pub async fn bulk<O: Opener, A: Acceptor>(
    mut opener: O,
    mut acceptor: A,
    streams: usize,
    per_stream: u64,
    chunk: usize,
) -> io::Result<Sample> {
    let server = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for i in 0..streams {
            let Some(s) = acceptor.accept().await? else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("connection ended after accepting {i} of {streams} streams"),
                ));
            };
            tasks.spawn(receive_and_reply(s, per_stream, chunk));
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(join_error)??;
        }
        // Handed back so that the session outlives every stream.
        Ok(acceptor)
    });

    let wave = opener.wave().unwrap_or(streams).clamp(1, streams);
    // One payload buffer shared by all senders, so that the process's peak RSS reflects
    // the library rather than 1000 copies of it.
    let payload: Arc<[u8]> = vec![0x5Au8; chunk].into();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let client: io::Result<()> = async {
        let mut opened = 0;
        while opened < streams {
            let mut tasks = JoinSet::new();
            for _ in 0..wave.min(streams - opened) {
                let s = opener.open().await?;
                tasks.spawn(send_and_wait(s, per_stream, payload.clone()));
                opened += 1;
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(join_error)??;
            }
        }
        Ok(())
    }
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    if let Err(e) = client {
        return Err(with_server_cause(e, server).await);
    }
    let acceptor = server.await.map_err(join_error)??;
    let bytes = per_stream * streams as u64;
    let sample = Sample {
        ok: true,
        elapsed_s: elapsed,
        bytes,
        streams: streams as u64,
        mb_per_s: Some(bytes as f64 / elapsed / 1e6),
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        note: (wave < streams).then(|| format!("opened in waves of {wave}")),
        ..Sample::default()
    };
    drop((opener, acceptor));
    Ok(sample)
}

async fn send_and_wait<S: BenchStream>(mut s: S, bytes: u64, buf: Arc<[u8]>) -> io::Result<()> {
    let chunk = buf.len();
    if !S::HALF_CLOSE {
        s.write_all(&bytes.to_be_bytes()).await?;
    }
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.close_write().await?;
    let mut reply = [0u8; 1];
    if !read_full(&mut s, &mut reply).await? {
        return Err(invalid("stream ended without the reply"));
    }
    if reply[0] != REPLY {
        return Err(invalid(format!("wrong reply byte {:#04x}", reply[0])));
    }
    let extra = read_to_end(&mut s, &mut [0u8; 64]).await?;
    if extra != 0 {
        return Err(invalid(format!("{extra} unexpected bytes after the reply")));
    }
    Ok(())
}

async fn receive_and_reply<S: BenchStream>(
    mut s: S,
    expected: u64,
    chunk: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    if S::HALF_CLOSE {
        let got = read_to_end(&mut s, &mut buf).await?;
        if got != expected {
            return Err(invalid(format!(
                "received {got} bytes, expected {expected}"
            )));
        }
    } else {
        let mut prefix = [0u8; 8];
        if !read_full(&mut s, &mut prefix).await? {
            return Err(invalid("stream ended before the length prefix"));
        }
        let announced = u64::from_be_bytes(prefix);
        if announced != expected {
            return Err(invalid(format!(
                "length prefix says {announced} bytes, expected {expected}"
            )));
        }
        let mut left = announced;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = s.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(invalid(format!(
                    "received {} bytes, expected {expected}",
                    expected - left
                )));
            }
            left -= n as u64;
        }
    }
    s.write_all(&[REPLY]).await?;
    s.close_write().await?;
    Ok(())
}

/// Latency: `round_trips` messages of `size` bytes on one stream, each echoed before the
/// next is sent. Every echo is compared with what was sent.
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
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionAborted, "connection ended"))?;
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
        for i in 0..round_trips {
            for (j, b) in msg.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
            }
            let t0 = Instant::now();
            s.write_all(&msg).await?;
            if !read_full(&mut s, &mut echo).await? {
                return Err(invalid(format!("stream ended at round trip {i}")));
            }
            rtts.push(t0.elapsed().as_nanos() as u64);
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

/// Churn: for `duration`, one stream after another: open, send one byte, read its echo,
/// close. The server echoes the byte and closes. Rate: completed streams per second.
pub async fn churn<O: Opener, A: Acceptor>(
    mut opener: O,
    mut acceptor: A,
    duration: Duration,
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

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut done = 0u64;
    let client: io::Result<()> = async {
        loop {
            let mut s = opener.open().await?;
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
                return Ok(());
            }
        }
    }
    .await;
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

    #[tokio::test]
    async fn workloads_pass_over_raw_tcp() {
        let (o, a) = crate::libs::tcp().await.unwrap();
        let s = bulk(o, a, 3, 100_000, 4096).await.unwrap();
        assert_eq!(s.bytes, 300_000);
        let (o, a) = crate::libs::tcp().await.unwrap();
        let s = latency(o, a, 50, 64).await.unwrap();
        assert_eq!(s.round_trips, Some(50));
        let (o, a) = crate::libs::tcp().await.unwrap();
        let s = churn(o, a, Duration::from_millis(50)).await.unwrap();
        assert!(s.streams > 0);
    }

    #[tokio::test]
    async fn length_prefix_path_passes_with_tokio_smux() {
        let (o, a) = crate::libs::tokio_smux().await.unwrap();
        let s = bulk(o, a, 2, 200_000, 128 * 1024).await.unwrap();
        assert_eq!(s.bytes, 400_000);
    }
}
