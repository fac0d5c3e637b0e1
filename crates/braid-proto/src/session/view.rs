//! Stream operations on a borrowed stream, as quinn-proto's `conn.send_stream(id)`:
//! `session.stream(id).write(..)` keeps what acts on one stream with the stream.

use super::{Session, StreamStats};
use crate::error::{ReadError, WriteError};
use crate::stream::{StreamEnd, StreamId};
use bytes::Bytes;
use std::time::Duration;

/// One stream of a [`Session`], borrowed from it by [`Session::stream`].
///
/// The view exists for any id: on a stream the session does not know (never opened,
/// forgotten, or closed by the application), reads and writes fail with
/// `UnknownStream`, getters return `None` and the other calls do nothing.
///
/// ```
/// use braid_proto::{Config, Protocol, Session, Side};
/// let mut session = Session::new(Config::new(Protocol::Yamux), Side::Client, std::time::Instant::now());
/// let id = session.open().unwrap();
/// let mut stream = session.stream(id);
/// stream.set_priority(200);
/// assert_eq!(stream.write(b"hello"), Ok(5));
/// stream.close_write();
/// assert_eq!(stream.stats().unwrap().buffered_send, 5);
/// ```
#[derive(Debug)]
pub struct StreamMut<'a> {
    pub(super) session: &'a mut Session,
    pub(super) id: StreamId,
}

/// One stream of a [`Session`], borrowed for inspection by [`Session::stream_ref`]:
/// the getters of [`StreamMut`] on a shared borrow.
#[derive(Debug, Clone, Copy)]
pub struct StreamRef<'a> {
    session: &'a Session,
    id: StreamId,
}

impl Session {
    /// The stream `id`, to read, write, close or configure it.
    pub fn stream(&mut self, id: StreamId) -> StreamMut<'_> {
        StreamMut { session: self, id }
    }

    /// The stream `id`, to inspect it.
    pub fn stream_ref(&self, id: StreamId) -> StreamRef<'_> {
        StreamRef { session: self, id }
    }
}

impl<'a> StreamRef<'a> {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The send priority (see [`StreamMut::set_priority`]).
    pub fn priority(&self) -> Option<u8> {
        self.session.priority(self.id)
    }

    /// The idle timeout (see [`StreamMut::set_idle_timeout`]).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.session.idle_timeout(self.id)
    }

    /// The gmux name the stream was opened with (empty if none).
    pub fn name(&self) -> Option<&'a [u8]> {
        self.session.stream_name(self.id)
    }

    /// Why the stream ended, once it has (see [`StreamMut::end`]).
    pub fn end(&self) -> Option<StreamEnd> {
        self.session.stream_end(self.id)
    }

    /// The stream's counters and windows.
    pub fn stats(&self) -> Option<StreamStats> {
        self.session.stream_stats(self.id)
    }
}

impl StreamMut<'_> {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Queues `data` and returns how many bytes were taken (all of them, or as many as
    /// the stream's and the session's send buffers had room for).
    /// `Err(WriteError::Blocked)` means no room: wait for
    /// [`Event::Writable`](crate::Event::Writable).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.session.write(self.id, data)
    }

    /// [`StreamMut::write`] without a copy: `data` (or its first part, as much as there
    /// is room for) is framed as it is. Chunks under 4 KiB are copied together instead,
    /// so that tiny chunks do not make tiny frames.
    ///
    /// ```
    /// use braid_proto::{Config, Protocol, Session, Side};
    /// let mut s = Session::new(Config::new(Protocol::Yamux), Side::Client, std::time::Instant::now());
    /// let id = s.open().unwrap();
    /// let payload = bytes::Bytes::from(vec![7u8; 100_000]);
    /// assert_eq!(s.stream(id).write_chunk(payload), Ok(100_000));
    /// ```
    pub fn write_chunk(&mut self, data: Bytes) -> Result<usize, WriteError> {
        self.session.write_chunk(self.id, data)
    }

    /// Copies buffered data into `buf`. `Ok(0)` is end of stream (the peer's FIN, after
    /// all its data); `Err(ReadError::Blocked)` means wait for
    /// [`Event::Readable`](crate::Event::Readable).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.session.read(self.id, buf)
    }

    /// Takes up to `max` buffered bytes without copying. `Ok(None)` is end of stream.
    pub fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        self.session.read_chunk(self.id, max)
    }

    /// Takes buffered chunks as they arrived, without copying, into `bufs` (one chunk
    /// per slot, as many as are buffered and fit): `Ok(Some(n))` filled the first `n`
    /// slots (at least 1 unless `bufs` is empty), `Ok(None)` is end of stream. One call
    /// can then hand many frames to a vectored write.
    ///
    /// ```
    /// use braid_proto::{Config, Protocol, Session, Side};
    /// use bytes::{Bytes, BytesMut};
    /// let now = std::time::Instant::now();
    /// let mut client = Session::new(Config::new(Protocol::SmuxV1), Side::Client, now);
    /// let mut server = Session::new(Config::new(Protocol::SmuxV1), Side::Server, now);
    /// let id = client.open().unwrap();
    /// assert_eq!(client.stream(id).write(&[7u8; 70_000]), Ok(70_000));
    /// client.stream(id).close_write();
    /// let mut out = Vec::new();
    /// while client.poll_transmit(now, &mut out, 1 << 20) > 0 {}
    /// let mut wire = BytesMut::new();
    /// out.iter().for_each(|c| wire.extend_from_slice(c));
    /// server.handle_input(now, &mut wire).unwrap();
    /// let sid = server.accept().unwrap();
    /// let mut bufs = vec![Bytes::new(); 16];
    /// // smux frames carry at most 32 KiB: all of it comes in one call, several chunks.
    /// let n = server.stream(sid).read_chunks(&mut bufs).unwrap().unwrap();
    /// assert!(n >= 3);
    /// assert_eq!(bufs[..n].iter().map(|b| b.len()).sum::<usize>(), 70_000);
    /// assert_eq!(server.stream(sid).read_chunks(&mut bufs), Ok(None));
    /// ```
    pub fn read_chunks(&mut self, bufs: &mut [Bytes]) -> Result<Option<usize>, ReadError> {
        self.session.read_chunks(self.id, bufs)
    }

    /// Half-close: no more writes; a FIN follows the data already written. Reading goes
    /// on until the peer's FIN. Idempotent; never sends a second FIN.
    pub fn close_write(&mut self) {
        self.session.close_write(self.id)
    }

    /// Full close, as when the application drops the stream: FIN after the data already
    /// written, unread data discarded (its budget returned), later data from the peer
    /// dropped. smux forgets the stream once its FIN is sent; yamux once the peer's FIN
    /// (or a RST) has also arrived, or after `stream_close_timeout` with a RST.
    pub fn close(&mut self) {
        self.session.close_stream(self.id)
    }

    /// Aborts the stream: unsent and unread data are dropped and later calls fail with
    /// [`ResetReason::Locally`](crate::ResetReason::Locally). yamux sends RST, so the
    /// peer's calls fail with `ConnectionReset`. smux has no RST: the peer sees a FIN
    /// (end of stream) and data it sends later is dropped.
    pub fn reset(&mut self) {
        self.session.reset(self.id)
    }

    /// Sets the send priority (0 lowest, the default; 255 highest). Streams of a higher
    /// priority send first; lower ones keep `Config::priority_share` percent of the link
    /// while they wait. Streams of one priority share fairly.
    pub fn set_priority(&mut self, priority: u8) {
        self.session.set_priority(self.id, priority)
    }

    /// The send priority.
    pub fn priority(&self) -> Option<u8> {
        self.session.priority(self.id)
    }

    /// Sets the idle timeout (`None`: never): once no data has moved either way for that
    /// long, the stream is reset (yamux RST, smux FIN) and its calls, including those
    /// already waiting, fail with `TimedOut`. Takes effect from the last data, so
    /// shortening it on an idle stream can expire it at the next timeout check.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.session.set_idle_timeout(self.id, timeout)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.session.idle_timeout(self.id)
    }

    /// The gmux name the stream was opened with (empty if none).
    pub fn name(&self) -> Option<&[u8]> {
        self.session.stream_name(self.id)
    }

    /// Why the stream ended, once it has: both sides finished (who first), a reset, or
    /// the end of the session. `None` while it is still open in either direction.
    pub fn end(&self) -> Option<StreamEnd> {
        self.session.stream_end(self.id)
    }

    /// The stream's counters and windows.
    pub fn stats(&self) -> Option<StreamStats> {
        self.session.stream_stats(self.id)
    }
}
