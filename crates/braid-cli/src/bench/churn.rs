//! churn: as fast as possible for a fixed time, each of `workers` client tasks opens a
//! stream (TCP: connects), writes one byte, reads its echo and closes the stream (TCP:
//! the connection), over and over. The server handles each stream in its own task: it
//! echoes the byte and reads until the client's close. One session serves the whole run.

use super::{median, session_pair, Proto};
use serde::Serialize;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One measured run.
#[derive(Debug, Clone)]
pub(super) struct Run {
    proto: Proto,
    streams: u64,
    secs: f64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.streams as f64 / self.secs
    }
}

/// One row of the churn table (medians over the repeats).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) proto: Proto,
    pub(super) secs: f64,
    pub(super) streams_per_s: f64,
    pub(super) pct_of_tcp: f64,
    pub(super) runs: usize,
}

/// Medians per protocol.
pub(super) fn summarize(runs: &[Run], targets: &[Proto]) -> Vec<Row> {
    if runs.is_empty() {
        return Vec::new();
    }
    let of = |proto: Proto| -> Vec<&Run> { runs.iter().filter(|r| r.proto == proto).collect() };
    let tcp = median(of(Proto::Tcp).iter().map(|r| r.per_sec()).collect());
    targets
        .iter()
        .map(|&proto| {
            let these = of(proto);
            let rate = median(these.iter().map(|r| r.per_sec()).collect());
            Row {
                proto,
                secs: median(these.iter().map(|r| r.secs).collect()),
                streams_per_s: rate,
                pct_of_tcp: 100.0 * rate / tcp,
                runs: these.len(),
            }
        })
        .collect()
}

/// Opens, echoes and closes streams for `duration` on a fresh connection (or session),
/// from `workers` tasks at once.
pub(super) async fn measure(proto: Proto, duration: Duration, workers: usize) -> io::Result<Run> {
    let (streams, secs) = match proto.protocol() {
        None => {
            let listener = super::listener().await?;
            let addr = listener.local_addr()?;
            let server = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    if tcp.set_nodelay(true).is_ok() {
                        tokio::spawn(serve(tcp));
                    }
                }
            });
            let result = run_workers(duration, workers, move || async move {
                let mut tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                exchange(&mut tcp).await
            })
            .await;
            // The accept loop never ends by itself; connection tasks end with the
            // client's close.
            server.abort();
            result?
        }
        Some(protocol) => {
            let (client, server) = session_pair(protocol).await?;
            let acceptor = tokio::spawn(async move {
                while let Some(stream) = server.accept_stream().await {
                    tokio::spawn(serve(stream));
                }
            });
            let opener = client.clone();
            let result = run_workers(duration, workers, move || {
                let client = opener.clone();
                async move { exchange(&mut client.open_stream().await?).await }
            })
            .await;
            client.close().await;
            acceptor.await.map_err(io::Error::other)?;
            result?
        }
    };
    Ok(Run {
        proto,
        streams,
        secs: secs.as_secs_f64(),
    })
}

/// Runs `one` in a loop on `workers` tasks until `duration` has passed; returns how many
/// completed and the time taken.
async fn run_workers<F, Fut>(
    duration: Duration,
    workers: usize,
    one: F,
) -> io::Result<(u64, Duration)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while start.elapsed() < duration {
                    one().await?;
                    done += 1;
                }
                io::Result::Ok(done)
            })
        })
        .collect();
    let mut streams = 0;
    for task in tasks {
        streams += task.await.map_err(io::Error::other)??;
    }
    Ok((streams, start.elapsed()))
}

/// The client's part: one byte there and back (the caller then closes).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(&[1]).await?;
    let mut echo = [0u8; 1];
    s.read_exact(&mut echo).await?;
    Ok(())
}

/// The server's part: echo one byte, then wait for the client's close.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).await?;
    s.write_all(&byte).await?;
    while s.read(&mut byte).await? > 0 {}
    Ok(())
}
