//! `Stream`: one multiplexed byte stream, a tokio `AsyncRead + AsyncWrite`.

use crate::shared::Inner;
use braid_proto::{ReadError, StreamEnd, StreamId, StreamMut, StreamStats, WriteError};
use bytes::Bytes;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A read that has this much returns without taking more of what is buffered.
const READ_ENOUGH: usize = 32 * 1024;

/// The stream's registration with the session; dropping the last reference closes it.
struct StreamRef {
    inner: Arc<Inner>,
    id: StreamId,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        tracing::trace!(stream = self.id.0, "stream released");
        self.inner.lock().drop_stream(self.id, crate::now());
    }
}

impl StreamRef {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut sh = self.inner.lock();
        let paused = !sh.core.wants_read();
        let mut filled = 0;
        let mut read_through = true;
        let res = loop {
            // A read returns once it has a frame's worth, as a socket read returns
            // what one segment brought: an application's large read buffer is then
            // only touched as far as it needs (1000 streams reading into 128 KiB
            // buffers made all 125 MiB resident), and nothing waits for more.
            if buf.remaining() == 0 || filled >= READ_ENOUGH {
                break Poll::Ready(Ok(()));
            }
            match sh.core.stream(self.id).read_chunk(buf.remaining()) {
                Ok(Some(chunk)) => {
                    filled += chunk.len();
                    buf.put_slice(&chunk);
                }
                Ok(None) => break Poll::Ready(Ok(())), // end of stream
                Err(_) if filled > 0 => break Poll::Ready(Ok(())),
                // Nothing buffered: read the connection if the driver is parked.
                Err(ReadError::Blocked) if std::mem::take(&mut read_through) => {
                    self.inner.read_through(&mut sh, self.id, cx.waker());
                }
                Err(ReadError::Blocked) => {
                    sh.register_read(self.id, cx.waker());
                    break Poll::Pending;
                }
                Err(e) => break Poll::Ready(Err(e.into())),
            }
        };
        // Reading returned budget or made an UPD due: the driver has work.
        if filled > 0 && ((paused && sh.core.wants_read()) || sh.core.wants_transmit()) {
            sh.wake_io();
        }
        res
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut sh = self.inner.lock();
        match sh.core.stream(self.id).write(data) {
            Ok(n) => {
                self.inner.queued(sh);
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                sh.register_write(self.id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Takes received data with `take` (`None`: end of stream), reading through to the
    /// connection once if nothing is buffered.
    fn poll_take<T>(
        &self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut StreamMut<'_>) -> Result<Option<T>, ReadError>,
    ) -> Poll<io::Result<Option<T>>> {
        let mut sh = self.inner.lock();
        let paused = !sh.core.wants_read();
        let mut result = take(&mut sh.core.stream(self.id));
        if let Err(ReadError::Blocked) = result {
            // Nothing buffered: read the connection if the driver is parked.
            self.inner.read_through(&mut sh, self.id, cx.waker());
            result = take(&mut sh.core.stream(self.id));
        }
        match result {
            Ok(got) => {
                // Reading returned budget or made an UPD due: the driver has work.
                if got.is_some() && ((paused && sh.core.wants_read()) || sh.core.wants_transmit()) {
                    sh.wake_io();
                }
                Poll::Ready(Ok(got))
            }
            Err(ReadError::Blocked) => {
                sh.register_read(self.id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Queues as much of `data` as there is room for, without copying; what was taken
    /// is removed from its front.
    fn poll_write_chunk(&self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        let mut sh = self.inner.lock();
        match sh.core.stream(self.id).write_chunk(data.clone()) {
            Ok(n) => {
                let _ = data.split_to(n);
                self.inner.queued(sh);
                Poll::Ready(Ok(()))
            }
            Err(WriteError::Blocked) => {
                sh.register_write(self.id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Reads the next received chunk without copying it (at most `max` bytes); `None`
    /// is end of stream.
    async fn read_chunk(&self, max: usize) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| self.poll_take(cx, |st| st.read_chunk(max.max(1)))).await
    }

    /// Takes buffered chunks into `bufs`; `None` is end of stream.
    async fn read_chunks(&self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        poll_fn(|cx| self.poll_take(cx, |st| st.read_chunks(bufs))).await
    }

    /// Writes all of `data`, framing it as it is (no copy; chunks under 4 KiB are
    /// copied together).
    async fn write_chunk(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            poll_fn(|cx| self.poll_write_chunk(cx, &mut data)).await?;
        }
        Ok(())
    }

    fn reset(&self) {
        let mut sh = self.inner.lock();
        sh.core.stream(self.id).reset();
        sh.dispatch();
        sh.wake_io();
    }

    fn shutdown_write(&self) {
        let mut sh = self.inner.lock();
        sh.core.stream(self.id).close_write();
        sh.wake_io();
    }
}

/// A multiplexed stream: reliable, ordered bytes in both directions, independent of the
/// session's other streams.
///
/// - `AsyncWrite::poll_shutdown` (`shutdown().await`) is a half-close: a FIN follows the
///   data written so far, and reading goes on until the peer's FIN (EOF).
/// - Writes are buffered by the session (`Config::stream_send_buffer`); `flush` returns at
///   once. Data written before a close or a drop is always sent before the FIN.
/// - Dropping the stream closes it: FIN after the written data, unread data discarded.
/// - Errors: a session that ended gives the kind of its reason (keepalive timeout:
///   `TimedOut`; protocol violation: `InvalidData`; connection lost: `ConnectionAborted`
///   or the transport's own error; closed locally: `BrokenPipe`); writing after
///   `shutdown` gives `BrokenPipe`.
pub struct Stream {
    stream: Arc<StreamRef>,
}

impl Stream {
    pub(crate) fn new(inner: Arc<Inner>, id: StreamId) -> Stream {
        tracing::trace!(stream = id.0, "stream open");
        Stream {
            stream: Arc::new(StreamRef { inner, id }),
        }
    }

    /// The stream's id on the wire (smux: client odd from 3, server even from 2; yamux:
    /// client odd from 1, server even from 2).
    pub fn id(&self) -> StreamId {
        self.stream.id
    }

    /// The gmux name the stream was opened with (`Session::open_named`), if any.
    pub fn name(&self) -> Option<String> {
        self.stream.inner.lock().stream_name(self.stream.id)
    }

    /// Resolves when the stream has ended (both sides finished, a reset, an idle
    /// timeout, or the end of the session), with why.
    pub async fn closed(&self) -> StreamEnd {
        poll_fn(|cx| {
            let mut sh = self.stream.inner.lock();
            if let Some(end) = sh.core.stream_ref(self.stream.id).end() {
                return std::task::Poll::Ready(end);
            }
            if let Some(reason) = sh.close_reason() {
                return std::task::Poll::Ready(StreamEnd::Session(reason));
            }
            sh.register_ended(self.stream.id, cx.waker());
            std::task::Poll::Pending
        })
        .await
    }

    /// Sets the idle timeout (`None`: never): once no data has moved either way for that
    /// long, the stream is reset (yamux RST, smux FIN) and its reads and writes,
    /// including those already waiting, fail with `TimedOut`.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        let mut sh = self.stream.inner.lock();
        sh.core.stream(self.stream.id).set_idle_timeout(timeout);
        // The driver's timer must learn of the new deadline.
        sh.wake_timers();
    }

    /// Sets the send priority (0 lowest, the default; 255 highest): higher priorities
    /// send first, lower ones keep `Config::priority_share` percent of the link.
    pub fn set_priority(&self, priority: u8) {
        self.stream
            .inner
            .lock()
            .core
            .stream(self.stream.id)
            .set_priority(priority);
    }

    /// The send priority.
    pub fn priority(&self) -> u8 {
        let sh = self.stream.inner.lock();
        sh.core.stream_ref(self.stream.id).priority().unwrap_or(0)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.stream
            .inner
            .lock()
            .core
            .stream_ref(self.stream.id)
            .idle_timeout()
    }

    /// Bytes each way, buffered bytes and windows.
    pub fn stats(&self) -> StreamStats {
        let sh = self.stream.inner.lock();
        sh.core
            .stream_ref(self.stream.id)
            .stats()
            .expect("a held stream is known to the session")
    }

    /// Reads the next chunk of received data as it arrived, without copying it into a
    /// buffer of yours: at most `max` bytes (at least 1), `Ok(None)` at end of stream.
    /// Cancel-safe. Mixes freely with `AsyncRead`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let (a, b) = tokio::io::duplex(64 * 1024);
    /// let client = braid::Session::client(a, braid::Config::default()).unwrap();
    /// let server = braid::Session::server(b, braid::Config::default()).unwrap();
    /// let mut out = client.open_stream().await?;
    /// out.write_chunk(bytes::Bytes::from_static(b"hello")).await?;
    /// out.shutdown().await?;
    /// let mut inbound = server.accept_stream().await.unwrap();
    /// let mut got = Vec::new();
    /// while let Some(chunk) = inbound.read_chunk(64 * 1024).await? {
    ///     got.extend_from_slice(&chunk);
    /// }
    /// assert_eq!(got, b"hello");
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.stream.read_chunk(max).await
    }

    /// Takes the received chunks that are buffered, as they arrived and without a copy,
    /// into `bufs` (one per slot): `Ok(Some(n))` filled the first `n` slots (at least 1
    /// unless `bufs` is empty), `Ok(None)` is end of stream. Waits only when nothing is
    /// buffered. Hands many frames at once to a vectored write (`write_vectored`), where
    /// [`read_chunk`](Self::read_chunk) would take one system call per frame. Cancel-safe.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use bytes::Bytes;
    /// use tokio::io::AsyncWriteExt;
    /// let (a, b) = tokio::io::duplex(64 * 1024);
    /// let client = braid::Session::client(a, braid::Config::default()).unwrap();
    /// let server = braid::Session::server(b, braid::Config::default()).unwrap();
    /// let mut out = client.open_stream().await?;
    /// out.write_all(&[1u8; 100_000]).await?;
    /// out.shutdown().await?;
    /// let mut inbound = server.accept_stream().await.unwrap();
    /// let mut bufs = vec![Bytes::new(); 16];
    /// let mut got = 0;
    /// while let Some(n) = inbound.read_chunks(&mut bufs).await? {
    ///     got += bufs[..n].iter().map(|b| b.len()).sum::<usize>();
    /// }
    /// assert_eq!(got, 100_000);
    /// # Ok(()) }
    /// ```
    pub async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        self.stream.read_chunks(bufs).await
    }

    /// Writes all of `data`, framed as it is without a copy (chunks under 4 KiB are
    /// copied together, so tiny chunks do not make tiny frames). Not cancel-safe: if
    /// dropped, a prefix of `data` may have been queued.
    pub async fn write_chunk(&mut self, data: Bytes) -> io::Result<()> {
        self.stream.write_chunk(data).await
    }

    /// Aborts the stream: unsent and unread data are dropped and later calls fail. yamux
    /// sends RST (the peer's reads and writes fail with `ConnectionReset`); smux has no
    /// RST, so the peer sees end of stream and what it sends later is dropped.
    pub fn reset(&self) {
        self.stream.reset();
    }

    /// Splits the stream into halves that can be used from different tasks. Dropping the
    /// write half half-closes the stream (FIN); the stream closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                stream: self.stream.clone(),
            },
            OwnedWriteHalf {
                stream: self.stream,
            },
        )
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id()).finish()
    }
}

/// The reading half of a [`Stream`], from [`Stream::into_split`].
pub struct OwnedReadHalf {
    stream: Arc<StreamRef>,
}

/// The writing half of a [`Stream`], from [`Stream::into_split`]. Dropping it half-closes
/// the stream.
pub struct OwnedWriteHalf {
    stream: Arc<StreamRef>,
}

impl OwnedReadHalf {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.stream.id
    }

    /// See [`Stream::read_chunk`].
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.stream.read_chunk(max).await
    }

    /// See [`Stream::read_chunks`].
    pub async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        self.stream.read_chunks(bufs).await
    }

    /// Aborts the whole stream; see [`Stream::reset`].
    pub fn reset(&self) {
        self.stream.reset();
    }
}

impl OwnedWriteHalf {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.stream.id
    }

    /// See [`Stream::write_chunk`].
    pub async fn write_chunk(&mut self, data: Bytes) -> io::Result<()> {
        self.stream.write_chunk(data).await
    }

    /// Aborts the whole stream; see [`Stream::reset`].
    pub fn reset(&self) {
        self.stream.reset();
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        self.stream.shutdown_write();
    }
}

/// tokio's I/O traits for a type holding `stream: Arc<StreamRef>`: one delegation for
/// [`Stream`] and its halves. `flush` has nothing to wait for (written data is queued in
/// the session); `shutdown` is a half-close.
macro_rules! tokio_io {
    (read: $($r:ty),*; write: $($w:ty),*) => {
        $(impl AsyncRead for $r {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.stream.poll_read(cx, buf)
            }
        })*
        $(impl AsyncWrite for $w {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.stream.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.stream.shutdown_write();
                Poll::Ready(Ok(()))
            }
        })*
    };
}

tokio_io!(read: Stream, OwnedReadHalf; write: Stream, OwnedWriteHalf);

#[cfg(feature = "futures-io")]
mod futures_impls {
    //! futures-io traits, for runtimes other than tokio (the driver still needs one that
    //! can run a tokio timer).
    use super::*;

    impl futures_io::AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut rb = ReadBuf::new(buf);
            self.stream
                .poll_read(cx, &mut rb)
                .map_ok(|()| rb.filled().len())
        }
    }

    impl futures_io::AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.stream.poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.stream.shutdown_write();
            Poll::Ready(Ok(()))
        }
    }
}
