//! The session's threads: reader, writer and timer.

use super::shared::Inner;
use super::Transport;
use braid_proto::ConnectionError;
use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 128 * 1024;
/// Bytes of frames the writer takes from the core per round.
const TX_BATCH: usize = 256 * 1024;
/// Slices per vectored write.
const MAX_IOVECS: usize = 64;

/// Starts the reader, writer and timer threads. If the transport cannot be cloned or a
/// thread cannot be started, the session ends at once with that error.
pub(super) fn start<T: Transport>(inner: &Arc<Inner>, io: T) {
    let mut handles = Vec::new();
    let res = spawn_all(inner, io, &mut handles);
    let writer_started = handles.len() >= 2;
    inner
        .threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(handles);
    if let Err(e) = res {
        tracing::debug!(error = %e, "could not start the session's threads");
        let mut st = inner.lock();
        inner.transport_failed(&mut st, ConnectionError::transport(&e));
        if !writer_started {
            st.writer_done = true;
            inner.notify_everyone(&st);
        }
    }
}

fn spawn_all<T: Transport>(
    inner: &Arc<Inner>,
    io: T,
    handles: &mut Vec<JoinHandle<()>>,
) -> io::Result<()> {
    let writer_io = io.try_clone()?;
    let control = io.try_clone()?;
    // The timer first: it holds the clone that can stop the others.
    handles.push(spawn("braid-timer", inner, move |i| {
        timer_loop(i, control)
    })?);
    handles.push(spawn("braid-writer", inner, move |i| {
        writer_loop(i, writer_io)
    })?);
    handles.push(spawn("braid-reader", inner, move |i| reader_loop(i, io))?);
    Ok(())
}

fn spawn(
    name: &str,
    inner: &Arc<Inner>,
    f: impl FnOnce(Arc<Inner>) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let inner = inner.clone();
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || f(inner))
}

/// Reads the transport and feeds the core; waits while the core does not want input.
fn reader_loop<T: Transport>(inner: Arc<Inner>, mut io: T) {
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut eof = false;
    // A new allocation behind `rbuf`, to announce to the core (see note_input_buffer).
    let mut new_buffer = Some(rbuf.capacity());
    loop {
        {
            let mut st = inner.lock();
            loop {
                if st.core.is_closed() {
                    return;
                }
                if let Some(size) = new_buffer.take() {
                    st.core.note_input_buffer(size);
                }
                if !rbuf.is_empty() {
                    // Errors end the session; the Closed event says why.
                    let _ = st.core.handle_input(Instant::now(), &mut rbuf);
                    inner.dispatch(&mut st);
                    inner.kick(&mut st); // UPDs may have given the writer credit
                    if st.core.is_closed() {
                        return;
                    }
                }
                if st.core.wants_read() {
                    if eof {
                        // Everything received has been taken in: the peer is gone.
                        inner.transport_failed(&mut st, ConnectionError::TransportClosed);
                        return;
                    }
                    break;
                }
                // Paused: the application reads (or accepts) and wakes us.
                st.reader_parked = true;
                st = inner.reader_cv.wait(st).unwrap_or_else(|e| e.into_inner());
                st.reader_parked = false;
            }
        }
        // Reading into a zeroed scratch buffer and appending costs a copy of what was
        // read; reading straight into `rbuf` would cost zeroing its whole spare room on
        // every read (safe code cannot read into uninitialized memory).
        match io.read(&mut scratch) {
            Ok(n) => {
                let before = rbuf.as_ptr();
                rbuf.extend_from_slice(&scratch[..n]);
                if rbuf.as_ptr() != before {
                    new_buffer = Some(rbuf.capacity());
                }
                eof = n == 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let mut st = inner.lock();
                inner.transport_failed(&mut st, ConnectionError::transport(&e));
                return;
            }
        }
    }
}

/// Takes frames from the core and writes them outside the lock. After a local close it
/// writes the last frames (the FINs), flushes and shuts the transport down.
fn writer_loop<T: Transport>(inner: Arc<Inner>, mut io: T) {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut needs_flush = false;
    let mut failed = false;
    let mut st = inner.lock();
    loop {
        if !st.ended.is_empty() {
            // Stream-end callbacks run here, outside the lock, so that they may use the
            // session.
            let calls = std::mem::take(&mut st.ended);
            drop(st);
            run_callbacks(calls);
            st = inner.lock();
            continue;
        }
        if st.core.is_closed() {
            break;
        }
        if st.core.wants_transmit() {
            let n = st.core.poll_transmit(Instant::now(), &mut chunks, TX_BATCH);
            // Writable events: the core freed send-buffer room by framing.
            inner.dispatch(&mut st);
            if n > 0 {
                drop(st);
                let res = write_chunks(&mut io, &mut chunks);
                needs_flush = true;
                st = inner.lock();
                if let Err(e) = res {
                    inner.transport_failed(&mut st, ConnectionError::transport(&e));
                    failed = true;
                    break;
                }
                continue;
            }
        }
        if needs_flush {
            drop(st);
            let res = io.flush();
            needs_flush = false;
            st = inner.lock();
            if let Err(e) = res {
                inner.transport_failed(&mut st, ConnectionError::transport(&e));
                failed = true;
                break;
            }
            continue;
        }
        st.writer_parked = true;
        st = inner.writer_cv.wait(st).unwrap_or_else(|e| e.into_inner());
        st.writer_parked = false;
    }
    let graceful = matches!(st.core.close_reason(), Some(ConnectionError::LocallyClosed));
    drop(st);
    if graceful && needs_flush && !failed {
        let _ = io.flush();
    }
    io.shutdown();
    drop(io);
    let mut st = inner.lock();
    st.writer_done = true;
    let calls = std::mem::take(&mut st.ended);
    inner.notify_everyone(&st);
    drop(st);
    run_callbacks(calls);
}

pub(super) type EndCall = (
    braid_proto::StreamEndCallback,
    braid_proto::StreamId,
    braid_proto::StreamEnd,
);

fn run_callbacks(calls: Vec<EndCall>) {
    for (cb, id, end) in calls {
        cb.call(id, &end);
    }
}

/// Writes every chunk, in order, with vectored writes.
fn write_chunks<W: Write>(io: &mut W, chunks: &mut Vec<Bytes>) -> io::Result<()> {
    let mut start = 0;
    let res = loop {
        while start < chunks.len() && chunks[start].is_empty() {
            start += 1;
        }
        if start == chunks.len() {
            break Ok(());
        }
        let slices: Vec<IoSlice<'_>> = chunks[start..]
            .iter()
            .take(MAX_IOVECS)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut n = match io.write_vectored(&slices) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        while n > 0 {
            let front = &mut chunks[start];
            if front.len() <= n {
                n -= front.len();
                start += 1;
            } else {
                front.advance(n);
                n = 0;
            }
        }
    };
    chunks.clear();
    res
}

/// Fires keepalive and close timers. When the session has ended but the writer has not
/// finished (stuck writing to a peer that does not read), shuts the transport down: at
/// once if the session failed, at the close deadline after a local close.
fn timer_loop<T: Transport>(inner: Arc<Inner>, control: T) {
    let mut killed = false;
    let mut st = inner.lock();
    loop {
        if st.writer_done {
            return;
        }
        let now = Instant::now();
        if st.core.poll_timeout().is_some_and(|t| t <= now) {
            st.core.handle_timeout(now);
            inner.dispatch(&mut st);
            inner.kick(&mut st); // a keepalive NOP may be due
        }
        let wake_at = match st.core.close_reason() {
            None => st.core.poll_timeout(),
            Some(_) if killed => None,
            Some(reason) => {
                let kill_at = match reason {
                    ConnectionError::LocallyClosed => st.close_deadline.unwrap_or(now),
                    _ => now,
                };
                if kill_at <= now {
                    killed = true;
                    drop(st);
                    control.shutdown();
                    st = inner.lock();
                    continue;
                }
                Some(kill_at)
            }
        };
        st = match wake_at {
            None => inner.timer_cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let timeout = at.saturating_duration_since(Instant::now());
                inner
                    .timer_cv
                    .wait_timeout(st, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}
