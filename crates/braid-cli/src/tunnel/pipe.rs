//! Forwarding between a multiplexed stream and a TCP connection.
//!
//! Each direction is copied by its own task, so a slow reader on one side never holds
//! up the other direction. End of input becomes a half-close on the other side (stream
//! EOF: TCP `shutdown(Write)`; TCP EOF: the stream's FIN), and the other direction goes
//! on. An error in either direction aborts both: the stream is reset and the TCP
//! connection closed with RST, so neither side takes a cut connection for a complete one.

use super::read_bufs::{ReadBufs, MIN_READ, READ_BUFS};
use super::stats::{Stats, Way};
use braid::{OwnedReadHalf, OwnedWriteHalf, Session, Stream};
use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{tcp, TcpStream};
use tokio_util::sync::CancellationToken;

/// Received chunks (frames' payloads, as they arrived) taken from the stream per step
/// and written to TCP with one vectored write: one system call per frame (32 KiB for
/// smux) cost the tunnel's server a quarter more CPU per byte with 8 connections.
const CHUNKS: usize = 16;

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
        res = tcp_to_stream(tcp_r, stream_w, &READ_BUFS, stats.bytes(to_stream_way), &abort) => res,
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
        let mut chunks = vec![Bytes::new(); CHUNKS];
        while let Some(n) = r.read_chunks(&mut chunks).await? {
            write_all_chunks(&mut w, &mut chunks[..n], counter).await?;
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

/// Writes all of `chunks` to `w` with vectored writes, counting what was written.
async fn write_all_chunks(
    w: &mut tcp::OwnedWriteHalf,
    mut chunks: &mut [Bytes],
    counter: &AtomicU64,
) -> io::Result<()> {
    while !chunks.is_empty() {
        // One chunk (a small message's case): a plain write costs less than a vectored one.
        let mut n = if let [chunk] = &*chunks {
            w.write(chunk).await?
        } else {
            let mut slices = [IoSlice::new(&[]); CHUNKS];
            for (slice, chunk) in slices.iter_mut().zip(chunks.iter()) {
                *slice = IoSlice::new(chunk);
            }
            w.write_vectored(&slices[..chunks.len()]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        counter.fetch_add(n as u64, Relaxed);
        // Drop what was written: whole chunks, then the front of a partly written one.
        while let Some(first) = chunks.first_mut() {
            if first.len() > n {
                first.advance(n);
                break;
            }
            n -= first.len();
            *first = Bytes::new();
            chunks = &mut chunks[1..];
        }
    }
    Ok(())
}

/// TCP to stream: each read is handed to the stream as one chunk (no copy: the stream
/// frames it); TCP's end of data becomes the stream's FIN.
async fn tcp_to_stream(
    r: tcp::OwnedReadHalf,
    mut w: OwnedWriteHalf,
    bufs: &ReadBufs,
    counter: &AtomicU64,
    abort: &CancellationToken,
) -> io::Result<()> {
    let copied = async {
        // Taken from the pool while input comes, given back when the socket runs dry.
        let mut buf: Option<BytesMut> = None;
        let res = loop {
            if let Some(spent) = buf.take_if(|b| b.capacity() < MIN_READ) {
                bufs.give(spent);
            }
            let b = buf.get_or_insert_with(|| bufs.take());
            match r.try_read_buf(b) {
                Ok(0) => break w.shutdown().await,
                Ok(n) => {
                    if let Err(e) = w.write_chunk(b.split().freeze()).await {
                        break Err(e);
                    }
                    counter.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(b) = buf.take() {
                        bufs.give(b);
                    }
                    if let Err(e) = r.readable().await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(b) = buf {
            bufs.give(b);
        }
        res
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

#[cfg(test)]
mod tests {
    use super::*;
    use braid::{Config, Protocol};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Waits (bounded) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    /// A connection gives its read buffer back whenever its socket runs dry, so idle
    /// connections hold none, and takes one again when input comes.
    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut app = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (a, b) = tokio::io::duplex(1 << 20);
        let client = Session::client(a, Config::new(Protocol::SmuxV1)).unwrap();
        let server = Session::server(b, Config::new(Protocol::SmuxV1)).unwrap();
        let (_, stream_w) = client.open_stream().await.unwrap().into_split();
        let mut far = server.accept_stream().await.unwrap();

        static BUFS: ReadBufs = ReadBufs::new();
        let counter = Arc::new(AtomicU64::new(0));
        let (tcp_r, _tcp_w) = tcp.into_split();
        let task = tokio::spawn({
            let counter = counter.clone();
            async move {
                let abort = CancellationToken::new();
                tcp_to_stream(tcp_r, stream_w, &BUFS, &counter, &abort).await
            }
        });
        // Small first: a buffer with room left goes back only because the socket ran dry.
        for (round, len) in [1000, 300_000, 1000].into_iter().enumerate() {
            let data = vec![round as u8; len];
            app.write_all(&data).await.unwrap();
            let mut got = vec![0u8; data.len()];
            far.read_exact(&mut got).await.unwrap();
            assert_eq!(got, data);
            until("the buffer is back in the pool", || BUFS.len() >= 1).await;
        }
        assert_eq!(counter.load(Relaxed), 302_000);
        // Only what the pipe took: one buffer now idle, plus the one a read filled up.
        assert!(BUFS.len() <= 2, "{} buffers", BUFS.len());
        drop(app);
        task.await.unwrap().unwrap();
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
