//! The session's threads: reader, writer and timer.

use super::shared::Inner;
use super::Transport;
use crate::glue::{self, RecvBuf, TxQueue};
use braid_proto::ConnectionError;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 128 * 1024;
/// Bytes of frames the writer takes from the core per round.
const TX_BATCH: usize = 256 * 1024;

/// Starts the reader, writer and timer threads. If the transport cannot be cloned or a
/// thread cannot be started, the session ends at once with that error.
pub(super) fn start<T: Transport>(inner: &Arc<Inner>, io: T) {
    let mut handles = Vec::new();
    let res = spawn_all(inner, io, &mut handles);
    let writer_started = handles.len() >= 2;
    if let Err(e) = res {
        tracing::debug!(error = %e, "could not start the session's threads");
        let mut st = inner.lock();
        st.transport_closed(Instant::now(), ConnectionError::transport(&e));
        if !writer_started {
            st.finish();
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
    let mut rx = RecvBuf::default();
    // Reading into a zeroed scratch buffer and appending costs a copy of what was read;
    // reading straight into the receive buffer's spare room would cost zeroing all of
    // it on every read (safe code cannot read into uninitialized memory). Measured
    // (memset of the 128 KiB window vs memcpy of the bytes read, optimised, this
    // machine): zeroing costs 1-2.7 us per read whatever it returns; the copy costs
    // ~0.01 us for 1 KiB, 0.7-0.9 us for 64 KiB, and is on par only for a full window.
    // Either way the receive buffer is sized by `RecvBuf::read_limit`, so a partial
    // frame is completed in place, as in the tokio driver.
    let mut scratch = vec![0u8; READ_CHUNK];
    loop {
        {
            let mut st = inner.lock();
            loop {
                if st.core.is_closed() {
                    return;
                }
                rx.feed(&mut st, Instant::now());
                st.wake_io(); // UPDs may have given the writer credit
                if st.core.is_closed() {
                    return;
                }
                if st.core.wants_read() {
                    break;
                }
                // Paused: the application reads (or accepts) and wakes us.
                st.wake.reader_parked = true;
                st = inner.cvs.reader.wait(st).unwrap_or_else(|e| e.into_inner());
                st.wake.reader_parked = false;
            }
        }
        let limit = rx.read_limit(crate::now).min(scratch.len());
        match io.read(&mut scratch[..limit]) {
            Ok(n) => rx.append(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                inner
                    .lock()
                    .transport_closed(Instant::now(), ConnectionError::transport(&e));
                return;
            }
        }
    }
}

/// Takes frames from the core and writes them outside the lock. After a local close it
/// writes the last frames (the FINs), flushes and shuts the transport down.
fn writer_loop<T: Transport>(inner: Arc<Inner>, mut io: T) {
    let mut tx = TxQueue::default();
    let mut needs_flush = false;
    let mut failed = false;
    let mut st = inner.lock();
    loop {
        if !st.end_calls.is_empty() {
            // Stream-end callbacks run here, outside the lock, so that they may use the
            // session.
            let calls = std::mem::take(&mut st.end_calls);
            drop(st);
            glue::run_end_calls(calls);
            st = inner.lock();
            continue;
        }
        if st.core.is_closed() {
            break;
        }
        if st.core.wants_transmit() {
            tx.refill(&mut st, Instant::now(), TX_BATCH);
            // Writable events: the core freed send-buffer room by framing.
            st.dispatch();
            if !tx.is_empty() {
                drop(st);
                let res = tx.write_all_to(&mut io);
                needs_flush = true;
                st = inner.lock();
                if let Err(e) = res {
                    tx.clear();
                    st.transport_closed(Instant::now(), ConnectionError::transport(&e));
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
                st.transport_closed(Instant::now(), ConnectionError::transport(&e));
                failed = true;
                break;
            }
            continue;
        }
        st.wake.writer_parked = true;
        st = inner.cvs.writer.wait(st).unwrap_or_else(|e| e.into_inner());
        st.wake.writer_parked = false;
    }
    let graceful = matches!(st.core.close_reason(), Some(ConnectionError::LocallyClosed));
    drop(st);
    if graceful && needs_flush && !failed {
        let _ = io.flush();
    }
    io.shutdown();
    drop(io);
    let mut st = inner.lock();
    st.finish();
    let calls = std::mem::take(&mut st.end_calls);
    drop(st);
    glue::run_end_calls(calls);
}

/// Fires keepalive and close timers. When the session has ended but the writer has not
/// finished (stuck writing to a peer that does not read), shuts the transport down: at
/// once if the session failed, at the close deadline after a local close.
fn timer_loop<T: Transport>(inner: Arc<Inner>, control: T) {
    let mut killed = false;
    let mut st = inner.lock();
    loop {
        if st.finished {
            return;
        }
        let now = Instant::now();
        st.handle_timers(now);
        st.wake_io(); // a keepalive NOP may be due
        let wake_at = match st.core.close_reason() {
            None => st.core.poll_timeout(),
            Some(_) if killed => None,
            Some(reason) => {
                let kill_at = match reason {
                    ConnectionError::LocallyClosed => st.core.close_deadline().unwrap_or(now),
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
            None => inner.cvs.timer.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let timeout = at.saturating_duration_since(Instant::now());
                inner
                    .cvs
                    .timer
                    .wait_timeout(st, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}
