//! latency: 64-byte ping-pong on one stream (TCP: one connection). The client writes 64
//! bytes and waits for the server's echo of them; each round trip is timed. 100 round
//! trips of warm-up are not counted.

use super::{join, median, session_ended, session_pair, tcp_pair, Proto};
use serde::Serialize;
use std::io;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of a ping and of its echo.
const MESSAGE: usize = 64;
/// Round trips before the timed ones.
const WARM_UP: usize = 100;

/// One measured run: round-trip percentiles in nanoseconds.
#[derive(Debug, Clone)]
pub(super) struct Run {
    proto: Proto,
    round_trips: usize,
    p50_ns: u64,
    p99_ns: u64,
}

/// One row of the latency table (medians over the repeats).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) proto: Proto,
    pub(super) round_trips: usize,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    /// p50 divided by TCP's p50 (1.0: as fast as TCP).
    pub(super) p50_vs_tcp: f64,
    /// p99 divided by TCP's p99.
    pub(super) p99_vs_tcp: f64,
    pub(super) runs: usize,
}

/// Medians of each percentile per protocol.
pub(super) fn summarize(runs: &[Run], targets: &[Proto]) -> Vec<Row> {
    if runs.is_empty() {
        return Vec::new();
    }
    let us = |proto: Proto, f: fn(&Run) -> u64| {
        let these: Vec<f64> = runs
            .iter()
            .filter(|r| r.proto == proto)
            .map(|r| f(r) as f64 / 1e3)
            .collect();
        (
            median(these),
            runs.iter().filter(|r| r.proto == proto).count(),
        )
    };
    let (tcp50, _) = us(Proto::Tcp, |r| r.p50_ns);
    let (tcp99, _) = us(Proto::Tcp, |r| r.p99_ns);
    targets
        .iter()
        .map(|&proto| {
            let (p50, n) = us(proto, |r| r.p50_ns);
            let (p99, _) = us(proto, |r| r.p99_ns);
            Row {
                proto,
                round_trips: runs[0].round_trips,
                p50_us: p50,
                p99_us: p99,
                p50_vs_tcp: p50 / tcp50,
                p99_vs_tcp: p99 / tcp99,
                runs: n,
            }
        })
        .collect()
}

/// Runs `round_trips` timed round trips on a fresh connection (and session).
pub(super) async fn measure(proto: Proto, round_trips: usize) -> io::Result<Run> {
    let mut samples = match proto.protocol() {
        None => {
            let (client, server) = tcp_pair().await?;
            let echo = tokio::spawn(echo(server));
            let samples = ping_pong(client, round_trips).await?;
            join(echo).await?;
            samples
        }
        Some(protocol) => {
            let (client, server) = session_pair(protocol).await?;
            let echo = tokio::spawn(async move {
                let stream = server.accept_stream().await.ok_or_else(session_ended)?;
                echo(stream).await?;
                io::Result::Ok(server)
            });
            let samples = ping_pong(client.open_stream().await?, round_trips).await?;
            let server = join(echo).await?;
            client.close().await;
            server.closed().await;
            samples
        }
    };
    samples.sort_unstable();
    Ok(Run {
        proto,
        round_trips,
        p50_ns: percentile(&samples, 50.0),
        p99_ns: percentile(&samples, 99.0),
    })
}

/// The nearest-rank percentile `p` of sorted `samples`.
fn percentile(samples: &[u64], p: f64) -> u64 {
    let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Pings and times `n` round trips (after the warm-up), then half-closes and waits for
/// the echo side to finish.
async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, n: usize) -> io::Result<Vec<u64>> {
    let ping = [0x5au8; MESSAGE];
    let mut pong = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let start = Instant::now();
        s.write_all(&ping).await?;
        s.read_exact(&mut pong).await?;
        if i >= WARM_UP {
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    s.shutdown().await?;
    if s.read(&mut pong).await? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected echo",
        ));
    }
    Ok(samples)
}

/// Echoes 64-byte messages until end of stream, then half-closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut buf = [0u8; MESSAGE];
    loop {
        match s.read_exact(&mut buf).await {
            Ok(_) => s.write_all(&buf).await?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[1, 2], 50.0), 1);
    }
}
