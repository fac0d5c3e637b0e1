//! bulk: N streams (TCP: N connections) each write `bytes / N` in `chunk`-sized writes,
//! then half-close; the receiving side reads each to the end and replies one byte. The
//! time is from the first open to the last reply. Peak RSS is the whole process's
//! (both ends), including the benchmark's read buffers: one chunk per stream.

use super::{join, median, session_ended, session_pair, Proto};
use serde::Serialize;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// One measured run.
#[derive(Debug, Clone)]
pub(super) struct Run {
    proto: Proto,
    streams: usize,
    bytes: u64,
    secs: f64,
    cpu_secs: f64,
    peak_rss_kib: u64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// One row of the bulk table (medians over the repeats).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) proto: Proto,
    pub(super) streams: usize,
    pub(super) mb_per_s: f64,
    pub(super) pct_of_tcp: f64,
    pub(super) cpu_secs_per_gb: f64,
    pub(super) peak_rss_mib: f64,
    pub(super) runs: usize,
}

/// Medians per protocol and stream count.
pub(super) fn summarize(runs: &[Run], targets: &[Proto], streams: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    if runs.is_empty() {
        return rows;
    }
    for &n in streams {
        let tcp = median(
            runs.iter()
                .filter(|r| r.proto == Proto::Tcp && r.streams == n)
                .map(Run::mb_per_s)
                .collect(),
        );
        for &proto in targets {
            let these: Vec<&Run> = runs
                .iter()
                .filter(|r| r.proto == proto && r.streams == n)
                .collect();
            let mbps = median(these.iter().map(|r| r.mb_per_s()).collect());
            rows.push(Row {
                proto,
                streams: n,
                mb_per_s: mbps,
                pct_of_tcp: 100.0 * mbps / tcp,
                cpu_secs_per_gb: median(
                    these
                        .iter()
                        .map(|r| r.cpu_secs / (r.bytes as f64 / 1e9))
                        .collect(),
                ),
                peak_rss_mib: median(
                    these
                        .iter()
                        .map(|r| r.peak_rss_kib as f64 / 1024.0)
                        .collect(),
                ),
                runs: these.len(),
            });
        }
    }
    rows
}

/// Runs one measurement in a fresh listener and connection(s).
pub(super) async fn measure(
    proto: Proto,
    streams: usize,
    bytes: u64,
    chunk: usize,
) -> io::Result<Run> {
    let per_stream = bytes / streams as u64;
    // One buffer for every writer: 1000 streams need not hold 1000 copies.
    let data: Arc<[u8]> = vec![0x5au8; chunk.min(per_stream as usize)].into();
    // Writers start together once every stream is open: with many short streams, the
    // first would otherwise be done before the last is open.
    let gate = Arc::new(Barrier::new(streams + 1));
    let listener = super::listener().await?;
    let addr = listener.local_addr()?;
    super::reset_peak_rss();
    let cpu0 = super::cpu_seconds();
    let secs = match proto.protocol() {
        None => {
            let server = tokio::spawn(async move {
                let mut tasks = Vec::new();
                for _ in 0..streams {
                    let (tcp, _) = listener.accept().await?;
                    tcp.set_nodelay(true)?;
                    tasks.push(tokio::spawn(drain_and_reply(tcp, chunk)));
                }
                for t in tasks {
                    join(t).await?;
                }
                io::Result::Ok(())
            });
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                tasks.push(tokio::spawn(send_and_wait(
                    tcp,
                    per_stream,
                    data.clone(),
                    gate.clone(),
                )));
            }
            gate.wait().await;
            for t in tasks {
                join(t).await?;
            }
            let secs = start.elapsed();
            join(server).await?;
            secs
        }
        Some(protocol) => {
            drop(listener);
            let (client, server) = session_pair(protocol).await?;
            let start = Instant::now();
            let acceptor = tokio::spawn(async move {
                let mut tasks = Vec::new();
                for _ in 0..streams {
                    let stream = server.accept_stream().await.ok_or_else(session_ended)?;
                    tasks.push(tokio::spawn(drain_and_reply(stream, chunk)));
                }
                for t in tasks {
                    join(t).await?;
                }
                io::Result::Ok(server)
            });
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let stream = client.open_stream().await?;
                tasks.push(tokio::spawn(send_and_wait(
                    stream,
                    per_stream,
                    data.clone(),
                    gate.clone(),
                )));
            }
            gate.wait().await;
            for t in tasks {
                join(t).await?;
            }
            let secs = start.elapsed();
            let server = join(acceptor).await?;
            client.close().await;
            server.closed().await;
            secs
        }
    };
    Ok(finish(proto, streams, per_stream, secs, cpu0))
}

fn finish(proto: Proto, streams: usize, per_stream: u64, secs: Duration, cpu0: f64) -> Run {
    Run {
        proto,
        streams,
        bytes: per_stream * streams as u64,
        secs: secs.as_secs_f64(),
        cpu_secs: super::cpu_seconds() - cpu0,
        peak_rss_kib: super::peak_rss_kib(),
    }
}

async fn send_and_wait<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    bytes: u64,
    buf: Arc<[u8]>,
    gate: Arc<Barrier>,
) -> io::Result<()> {
    gate.wait().await;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut reply = [0u8; 1];
    s.read_exact(&mut reply).await?;
    Ok(())
}

async fn drain_and_reply<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    chunk: usize,
) -> io::Result<()> {
    // Written now, so that it is resident from the start whatever the reads fill: the
    // readers' buffers (one chunk per stream) weigh the same in every row's peak RSS.
    let mut buf = vec![0xa5u8; chunk];
    while s.read(&mut buf).await? > 0 {}
    s.write_all(&[1]).await?;
    s.shutdown().await?;
    Ok(())
}
