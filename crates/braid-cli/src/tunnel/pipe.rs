//! Forwarding between a multiplexed stream and a TCP connection.
//!
//! Each direction is copied by its own task, so a slow reader on one side never holds
//! up the other direction. End of input becomes a half-close on the other side (stream
//! EOF: TCP `shutdown(Write)`; TCP EOF: the stream's FIN), and the other direction goes
//! on. An error in either direction aborts both: the stream is reset and the TCP
//! connection closed with RST, so neither side takes a cut connection for a complete one.

use super::stats::{Stats, Way};
use braid::{OwnedReadHalf, OwnedWriteHalf, Session, Stream};
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp, TcpStream};
use tokio_util::sync::CancellationToken;

/// The buffer TCP is read into: each read becomes one chunk handed to the stream as it
/// is (no copy), which frames it. Large reads halve the tunnel's CPU per byte against
/// 64 KiB ones (fewer syscalls and frames); see BENCHMARKS.md.
const READ_BUF: usize = 256 * 1024;
/// Reads go into the rest of the current buffer while this much is left, so that small
/// reads share one allocation instead of each pinning a fresh one until it is sent.
const MIN_READ: usize = 16 * 1024;
/// Largest chunk taken from the stream per step (received payloads are passed to TCP as
/// they arrived, without a copy).
const CHUNK_MAX: usize = 256 * 1024;

/// Which end of the tunnel runs the pipe: decides which direction counts as "up".
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    /// `braid client`: the TCP side is the application.
    Client,
    /// `braid server`: the TCP side is the target.
    Server,
}

/// Copies between `stream` (of `session`) and `tcp` until both directions ended or
/// `kill` fires. Returns the first error, if any (both sides have been aborted then).
///
/// When the session ends, what it had received is still passed on, then the TCP
/// connection is closed: nothing the application sends can be carried any more.
pub(crate) async fn pipe(
    stream: Stream,
    session: &Session,
    tcp: TcpStream,
    end: End,
    stats: Arc<Stats>,
    kill: CancellationToken,
) -> io::Result<()> {
    let _gauge = stats.stream();
    let (to_tcp_way, to_stream_way) = match end {
        End::Client => (Way::Down, Way::Up),
        End::Server => (Way::Up, Way::Down),
    };
    let abort = kill.child_token();
    let (stream_r, stream_w) = stream.into_split();
    let (tcp_r, tcp_w) = tcp.into_split();
    let to_tcp = tokio::spawn({
        let (abort, stats) = (abort.clone(), stats.clone());
        async move { stream_to_tcp(stream_r, tcp_w, stats.bytes(to_tcp_way), &abort).await }
    });
    let to_stream = tokio::select! {
        res = tcp_to_stream(tcp_r, stream_w, stats.bytes(to_stream_way), &abort) => res,
        reason = session.closed() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("session ended: {reason}"),
        )),
    };
    let to_tcp = to_tcp.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    // Report the error that started an abort rather than the abort it caused.
    match (to_stream, to_tcp) {
        (Err(e), Err(other)) if is_abort(&e) => Err(other),
        (a, b) => a.and(b),
    }
}

/// The error of a direction stopped because the other one failed, or by `kill`.
#[derive(Debug)]
struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("aborted")
    }
}

impl std::error::Error for Aborted {}

fn is_abort(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Aborted>())
}

/// Stream to TCP: received chunks are written as they are; the stream's end of data
/// becomes the TCP half-close.
async fn stream_to_tcp(
    mut r: OwnedReadHalf,
    mut w: tcp::OwnedWriteHalf,
    counter: &AtomicU64,
    abort: &CancellationToken,
) -> io::Result<()> {
    let copied = async {
        while let Some(chunk) = r.read_chunk(CHUNK_MAX).await? {
            w.write_all(&chunk).await?;
            counter.fetch_add(chunk.len() as u64, Relaxed);
        }
        w.shutdown().await
    };
    let res = abortable(copied, abort).await;
    if res.is_err() {
        r.reset();
        abort_tcp_write(w);
    }
    res
}

/// TCP to stream: each read is handed to the stream as one chunk; TCP's end of data
/// becomes the stream's FIN.
async fn tcp_to_stream(
    mut r: tcp::OwnedReadHalf,
    mut w: OwnedWriteHalf,
    counter: &AtomicU64,
    abort: &CancellationToken,
) -> io::Result<()> {
    let copied = async {
        let mut buf = BytesMut::new();
        loop {
            // A new buffer (or the old one reclaimed, once the stream has sent every
            // chunk cut from it) only when the current one is nearly used up.
            if buf.capacity() < MIN_READ {
                buf.reserve(READ_BUF);
            }
            let n = r.read_buf(&mut buf).await?;
            if n == 0 {
                return w.shutdown().await;
            }
            w.write_chunk(buf.split().freeze()).await?;
            counter.fetch_add(n as u64, Relaxed);
        }
    };
    let res = abortable(copied, abort).await;
    if res.is_err() {
        w.reset();
        // Closing the socket sends RST instead of FIN.
        let _ = r.as_ref().set_zero_linger();
    }
    res
}

/// Runs one direction until it ends or `abort` fires; an error fires `abort` for the
/// other direction.
async fn abortable(
    copied: impl Future<Output = io::Result<()>>,
    abort: &CancellationToken,
) -> io::Result<()> {
    let res = tokio::select! {
        res = copied => res,
        _ = abort.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, Aborted)),
    };
    if res.is_err() {
        abort.cancel();
    }
    res
}

/// Ends the TCP connection abruptly: RST, not the FIN that dropping a write half sends
/// (which would make the cut look like an end).
fn abort_tcp_write(w: tcp::OwnedWriteHalf) {
    let _ = w.as_ref().set_zero_linger();
    // Forgotten, the write half closes (with RST) along with the read half.
    w.forget();
}
