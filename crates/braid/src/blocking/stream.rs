//! The blocking `Stream` handle.

use super::shared::{deadline_after, Inner, State, StreamSlot, StreamWaiters};
use braid_proto::{ReadError, StreamEnd, StreamId, StreamStats, WriteError};
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stream's registration with the session; dropping the last clone closes it.
struct StreamRef {
    inner: Arc<Inner>,
    id: StreamId,
    waiters: Arc<StreamWaiters>,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        self.inner.lock().drop_stream(self.id, Instant::now());
    }
}

impl StreamRef {
    fn slot<'a>(&self, st: &'a mut State) -> &'a mut StreamSlot {
        st.streams
            .get_mut(&self.id.0)
            .expect("a live stream handle is registered")
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_with(|st, id| st.core.stream(id).read(buf))
    }

    /// Waits until `read` finds data (or the end), up to the read timeout.
    fn read_with<R>(
        &self,
        mut read: impl FnMut(&mut State, StreamId) -> Result<R, ReadError>,
    ) -> io::Result<R> {
        let mut st = self.inner.lock();
        let deadline = deadline_after(self.slot(&mut st).read_timeout);
        loop {
            match read(&mut st, self.id) {
                Ok(r) => {
                    // Reading returned budget or made an UPD due.
                    st.wake_io();
                    return Ok(r);
                }
                Err(ReadError::Blocked) => {
                    st = self.inner.wait(
                        &self.waiters.read,
                        st,
                        deadline,
                        "stream read timed out",
                    )?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        self.write_with(|st, id| st.core.stream(id).write(data))
    }

    fn write_chunk(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write_with(|st, id| st.core.stream(id).write_chunk(data.clone()))?;
            let _ = data.split_to(n);
        }
        Ok(())
    }

    /// Waits until `write` takes some data, up to the write timeout.
    fn write_with(
        &self,
        mut write: impl FnMut(&mut State, StreamId) -> Result<usize, WriteError>,
    ) -> io::Result<usize> {
        let mut st = self.inner.lock();
        let deadline = deadline_after(self.slot(&mut st).write_timeout);
        loop {
            match write(&mut st, self.id) {
                Ok(n) => {
                    st.wake_io();
                    return Ok(n);
                }
                Err(WriteError::Blocked) => {
                    st = self.inner.wait(
                        &self.waiters.write,
                        st,
                        deadline,
                        "stream write timed out",
                    )?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A multiplexed stream: reliable, ordered bytes in both directions, independent of the
/// session's other streams. It implements [`Read`] and [`Write`] (also through `&Stream`,
/// so that clones or references can read and write from different threads).
///
/// - Reads block until data arrives; `Ok(0)` is end of stream (the peer's FIN, after all
///   its data).
/// - Writes block while the stream's send buffer (`Config::stream_send_buffer`) or the
///   session's (`Config::max_send_buffer`) is full, and may take only part of the data,
///   as `TcpStream` writes may; use `write_all`. [`Write::flush`] returns at once: data
///   written before a half-close, a drop or a session close is always sent before the
///   FIN.
/// - [`Stream::shutdown_write`] is a half-close: a FIN follows the data written so far,
///   and reading goes on until the peer's FIN.
/// - Dropping the last clone closes the stream: FIN after the written data, unread data
///   discarded.
/// - Timeouts ([`Stream::set_read_timeout`], [`Stream::set_write_timeout`]) work as
///   `TcpStream`'s and are shared by all clones; a call that times out fails with
///   [`io::ErrorKind::TimedOut`] and can be retried.
/// - Errors: a session that ended gives the kind of its reason (keepalive timeout:
///   `TimedOut`; protocol violation: `InvalidData`; connection lost: `ConnectionAborted`
///   or the transport's own error; closed locally: `BrokenPipe`); writing after
///   `shutdown_write` gives `BrokenPipe`. Data that arrived before the session ended is
///   still read first.
pub struct Stream {
    stream: Arc<StreamRef>,
}

impl Stream {
    pub(super) fn new(inner: Arc<Inner>, id: StreamId, waiters: Arc<StreamWaiters>) -> Stream {
        Stream {
            stream: Arc::new(StreamRef { inner, id, waiters }),
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

    /// Waits until the stream has ended (both sides finished, a reset, an idle timeout,
    /// or the end of the session), and returns why.
    pub fn closed(&self) -> StreamEnd {
        let mut st = self.stream.inner.lock();
        loop {
            if let Some(end) = st.core.stream_ref(self.stream.id).end() {
                return end;
            }
            if let Some(reason) = st.close_reason() {
                return StreamEnd::Session(reason);
            }
            st = self
                .stream
                .waiters
                .read
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sets the idle timeout (`None`: never): once no data has moved either way for that
    /// long, the stream is reset (yamux RST, smux FIN) and its reads and writes,
    /// including those already waiting, fail with `TimedOut`.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.stream.inner.lock();
        st.core.stream(self.stream.id).set_idle_timeout(timeout);
        // The timer thread must learn of the new deadline.
        st.wake_timers();
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

    /// Sets the send priority (0 lowest, the default; 255 highest): higher priorities
    /// send first, lower ones keep `Config::priority_share` percent of the link.
    pub fn set_priority(&self, priority: u8) {
        let mut st = self.stream.inner.lock();
        st.core.stream(self.stream.id).set_priority(priority);
    }

    /// The send priority.
    pub fn priority(&self) -> u8 {
        let st = self.stream.inner.lock();
        st.core.stream_ref(self.stream.id).priority().unwrap_or(0)
    }

    /// Bytes each way, buffered bytes and windows.
    pub fn stats(&self) -> StreamStats {
        let st = self.stream.inner.lock();
        st.core
            .stream_ref(self.stream.id)
            .stats()
            .expect("a held stream is known to the session")
    }

    /// Reads the next chunk of received data as it arrived, without copying it into a
    /// buffer of yours: at most `max` bytes (at least 1), `Ok(None)` at end of stream.
    /// Blocks and times out like `read`; mixes freely with it.
    pub fn read_chunk(&self, max: usize) -> io::Result<Option<Bytes>> {
        self.stream
            .read_with(|st, id| st.core.stream(id).read_chunk(max.max(1)))
    }

    /// Takes the received chunks that are buffered, as they arrived and without a copy,
    /// into `bufs` (one per slot): `Ok(Some(n))` filled the first `n` slots (at least 1
    /// unless `bufs` is empty), `Ok(None)` is end of stream. Blocks only when nothing is
    /// buffered, and times out like `read`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use std::io::Write;
    /// use std::os::unix::net::UnixStream;
    /// let (a, b) = UnixStream::pair().unwrap();
    /// let client = braid::blocking::Session::client(a, braid::Config::default()).unwrap();
    /// let server = braid::blocking::Session::server(b, braid::Config::default()).unwrap();
    /// let mut out = client.open_stream().unwrap();
    /// out.write_all(&[1u8; 100_000]).unwrap();
    /// out.shutdown_write();
    /// let inbound = server.accept_stream().unwrap();
    /// let mut bufs = vec![Bytes::new(); 16];
    /// let mut got = 0;
    /// while let Some(n) = inbound.read_chunks(&mut bufs).unwrap() {
    ///     got += bufs[..n].iter().map(|b| b.len()).sum::<usize>();
    /// }
    /// assert_eq!(got, 100_000);
    /// ```
    pub fn read_chunks(&self, bufs: &mut [Bytes]) -> io::Result<Option<usize>> {
        self.stream
            .read_with(|st, id| st.core.stream(id).read_chunks(bufs))
    }

    /// Writes all of `data`, framed as it is without a copy (chunks under 4 KiB are
    /// copied together, so tiny chunks do not make tiny frames). Blocks and times out
    /// like `write`; after a timeout, a prefix of `data` may have been queued.
    pub fn write_chunk(&self, data: Bytes) -> io::Result<()> {
        self.stream.write_chunk(data)
    }

    /// Another handle to the same stream, e.g. to read in one thread and write in
    /// another. The stream closes when the last clone is dropped. Never fails; returns a
    /// `Result` like `TcpStream::try_clone`.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream {
            stream: self.stream.clone(),
        })
    }

    /// Half-closes the stream: no more writes, a FIN follows the data already written.
    /// Reading goes on until the peer's FIN. Idempotent.
    pub fn shutdown_write(&self) {
        let mut st = self.stream.inner.lock();
        st.core.stream(self.stream.id).close_write();
        st.wake_io();
    }

    /// Aborts the stream: unsent and unread data are dropped and later calls fail. yamux
    /// sends RST (the peer's calls fail with `ConnectionReset`); smux has no RST, so the
    /// peer sees end of stream and what it sends later is dropped.
    pub fn reset(&self) {
        let mut st = self.stream.inner.lock();
        st.core.stream(self.stream.id).reset();
        st.dispatch();
        st.wake_io();
    }

    /// Sets how long a read waits for data before failing with
    /// [`io::ErrorKind::TimedOut`]; `None` (the default) waits forever. A zero duration is
    /// refused with [`io::ErrorKind::InvalidInput`], as by `TcpStream`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        let mut st = self.stream.inner.lock();
        self.stream.slot(&mut st).read_timeout = timeout;
        Ok(())
    }

    /// Sets how long a write waits for room before failing with
    /// [`io::ErrorKind::TimedOut`]; `None` (the default) waits forever. A zero duration is
    /// refused with [`io::ErrorKind::InvalidInput`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        let mut st = self.stream.inner.lock();
        self.stream.slot(&mut st).write_timeout = timeout;
        Ok(())
    }

    /// The read timeout (see [`Stream::set_read_timeout`]).
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        let mut st = self.stream.inner.lock();
        Ok(self.stream.slot(&mut st).read_timeout)
    }

    /// The write timeout (see [`Stream::set_write_timeout`]).
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        let mut st = self.stream.inner.lock();
        Ok(self.stream.slot(&mut st).write_timeout)
    }
}

fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id()).finish()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
