//! Forwarding between a multiplexed stream and a TCP connection.
//!
//! Each direction is copied by its own task, so a slow reader on one side never holds
//! up the other direction. End of input becomes a half-close on the other side (stream
//! EOF: TCP `shutdown(Write)`; TCP EOF: the stream's FIN), and the other direction goes
//! on. An error in either direction aborts both: the stream is reset and the TCP
//! connection closed with RST, so neither side takes a cut connection for a complete one.

use super::stats::{Stats, Way};
use braid::{Session, Stream};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bytes read per copy step.
const COPY_BUF: usize = 32 * 1024;

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
    let stream = SharedStream(Arc::new(Mutex::new(stream)));
    let (tcp_r, tcp_w) = tcp.into_split();
    let to_tcp = tokio::spawn({
        let (stream, abort, stats) = (stream.clone(), abort.clone(), stats.clone());
        async move { copy(stream, tcp_w, stats.bytes(to_tcp_way), &abort).await }
    });
    let to_stream = tokio::select! {
        res = copy(tcp_r, stream, stats.bytes(to_stream_way), &abort) => res,
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

/// Copies `r` to `w` until EOF, then half-closes `w`. On an error, or when `abort`
/// fires, aborts both ends and fires `abort` for the other direction.
async fn copy<R, W>(
    mut r: R,
    mut w: W,
    counter: &AtomicU64,
    abort: &CancellationToken,
) -> io::Result<()>
where
    R: AsyncRead + Abort + Unpin,
    W: AsyncWrite + Abort + Unpin,
{
    let copied = async {
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return w.shutdown().await;
            }
            w.write_all(&buf[..n]).await?;
            counter.fetch_add(n as u64, Relaxed);
        }
    };
    let res = tokio::select! {
        res = copied => res,
        _ = abort.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, Aborted)),
    };
    if res.is_err() {
        abort.cancel();
        r.abort();
        w.abort();
    }
    res
}

/// Ends a connection abruptly.
trait Abort {
    fn abort(self);
}

impl Abort for tcp::OwnedReadHalf {
    fn abort(self) {
        // Closing the socket sends RST instead of FIN.
        let _ = self.as_ref().set_zero_linger();
    }
}

impl Abort for tcp::OwnedWriteHalf {
    fn abort(self) {
        let _ = self.as_ref().set_zero_linger();
        // Dropping a write half sends FIN, which would make the cut look like an end.
        // Forgotten, it closes (with RST) along with the read half.
        self.forget();
    }
}

/// A stream used by both copy tasks. braid's split halves cannot reset the stream, so
/// the tasks share the whole stream; the lock is only held inside a poll.
#[derive(Clone)]
struct SharedStream(Arc<Mutex<Stream>>);

impl SharedStream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Abort for SharedStream {
    fn abort(self) {
        self.lock().reset();
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}
