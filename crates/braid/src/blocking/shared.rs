//! State shared by a session's threads and its handles: the protocol core behind one
//! mutex, and the condition variables everyone waits on.

use braid_proto::{ConnectionError, Event};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Condition variables of one stream, shared by its handles and the session.
#[derive(Default)]
pub(super) struct StreamWaiters {
    /// Readers wait here for `Readable`/`Finished` (or the end of the session).
    pub(super) read: Condvar,
    /// Writers wait here for `Writable` (or the end of the session).
    pub(super) write: Condvar,
}

/// A stream that has a live handle.
pub(super) struct StreamSlot {
    pub(super) waiters: Arc<StreamWaiters>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
}

pub(super) struct State {
    pub(super) core: braid_proto::Session,
    /// Streams with live handles, by id.
    pub(super) streams: HashMap<u32, StreamSlot>,
    /// Live `Session` handles and `Stream` handles (clones of a stream count once): when
    /// both reach zero nobody can use the session any more and it closes gracefully.
    pub(super) session_handles: usize,
    pub(super) stream_handles: usize,
    /// When a local close must be over; set when it starts.
    pub(super) close_deadline: Option<Instant>,
    /// The reader thread waits on `reader_cv` (reading is paused).
    pub(super) reader_parked: bool,
    /// The writer thread waits on `writer_cv` (nothing to send).
    pub(super) writer_parked: bool,
    /// The writer thread has finished: the transport is shut down.
    pub(super) writer_done: bool,
    /// `Config::on_stream_end` calls due, made by the writer thread outside the lock.
    pub(super) ended: Vec<super::threads::EndCall>,
}

pub(super) struct Inner {
    state: Mutex<State>,
    /// Threads in `accept_stream`, `close` and `closed` wait here.
    pub(super) app_cv: Condvar,
    pub(super) reader_cv: Condvar,
    pub(super) writer_cv: Condvar,
    pub(super) timer_cv: Condvar,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) peer_addr: Option<SocketAddr>,
    /// The session's threads, for tests that check they end.
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
}

/// `now + d`, or `None` (wait forever) when that is not representable.
pub(super) fn deadline_after(d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| Instant::now().checked_add(d))
}

impl Inner {
    pub(super) fn new(
        core: braid_proto::Session,
        local_addr: Option<SocketAddr>,
        peer_addr: Option<SocketAddr>,
    ) -> Inner {
        Inner {
            state: Mutex::new(State {
                core,
                streams: HashMap::new(),
                session_handles: 1,
                stream_handles: 0,
                close_deadline: None,
                reader_parked: false,
                writer_parked: false,
                writer_done: false,
                ended: Vec::new(),
            }),
            app_cv: Condvar::new(),
            reader_cv: Condvar::new(),
            writer_cv: Condvar::new(),
            timer_cv: Condvar::new(),
            local_addr,
            peer_addr,
            threads: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every core method finishes its update before returning, so a panic elsewhere
        // while the lock was held leaves consistent state: poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `cv` until notified or `deadline`; `Err(TimedOut)` once the deadline has
    /// passed (the caller has retried after the last wakeup).
    pub(super) fn wait<'a>(
        &self,
        cv: &Condvar,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        what: &'static str,
    ) -> io::Result<MutexGuard<'a, State>> {
        match deadline {
            None => Ok(cv.wait(guard).unwrap_or_else(|e| e.into_inner())),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, what));
                }
                let (guard, _) = cv
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|e| e.into_inner());
                Ok(guard)
            }
        }
    }

    /// Turns the core's events into notifications.
    pub(super) fn dispatch(&self, st: &mut State) {
        while let Some(ev) = st.core.poll_event() {
            match ev {
                Event::Incoming => self.app_cv.notify_all(),
                Event::Readable(id) | Event::Finished(id) => {
                    if let Some(slot) = st.streams.get(&id.0) {
                        slot.waiters.read.notify_all();
                    }
                }
                Event::Writable(id) => {
                    if let Some(slot) = st.streams.get(&id.0) {
                        slot.waiters.write.notify_all();
                    }
                }
                Event::Reset(id) => {
                    if let Some(slot) = st.streams.get(&id.0) {
                        slot.waiters.read.notify_all();
                        slot.waiters.write.notify_all();
                    }
                }
                Event::StreamEnded(id) => {
                    if let Some(slot) = st.streams.get(&id.0) {
                        slot.waiters.read.notify_all();
                        slot.waiters.write.notify_all();
                    }
                    if let (Some(cb), Some(end)) = (
                        st.core.config().on_stream_end.clone(),
                        st.core.stream_end(id),
                    ) {
                        st.ended.push((cb, id, end));
                        self.writer_cv.notify_one();
                    }
                }
                // yamux opens and pings are not offered by the blocking API yet.
                Event::Openable | Event::Pong { .. } | Event::GoAway => self.app_cv.notify_all(),
                Event::Closed(reason) => {
                    tracing::debug!(%reason, "session ended");
                    self.notify_everyone(st);
                }
            }
        }
    }

    /// Wakes every waiting thread: the session ended or its writer finished.
    pub(super) fn notify_everyone(&self, st: &State) {
        self.app_cv.notify_all();
        self.reader_cv.notify_all();
        self.writer_cv.notify_all();
        self.timer_cv.notify_all();
        for slot in st.streams.values() {
            slot.waiters.read.notify_all();
            slot.waiters.write.notify_all();
        }
    }

    /// Wakes the reader or the writer thread if the application gave it work: reading
    /// freed budget or accept-queue room, or made frames (data, SYN, FIN, UPD) due.
    pub(super) fn kick(&self, st: &mut State) {
        if st.writer_parked && st.core.wants_transmit() {
            st.writer_parked = false;
            self.writer_cv.notify_one();
        }
        if st.reader_parked && st.core.wants_read() {
            st.reader_parked = false;
            self.reader_cv.notify_one();
        }
    }

    /// Starts a graceful close (once): FINs are flushed, then the writer shuts the
    /// transport down; the timer enforces `close_timeout`.
    pub(super) fn begin_close(&self, st: &mut State) {
        if st.close_deadline.is_some() || st.core.is_closed() {
            return;
        }
        let now = Instant::now();
        let timeout = st.core.config().close_timeout;
        st.close_deadline = Some(now.checked_add(timeout).unwrap_or(now + FAR_FUTURE));
        st.core.close(now);
        self.dispatch(st);
        self.kick(st);
        // The close deadline is a new timer.
        self.timer_cv.notify_all();
    }

    /// Starts a graceful close when no handle can use the session any more.
    pub(super) fn close_if_unused(&self, st: &mut State) {
        if st.session_handles == 0 && st.stream_handles == 0 {
            self.begin_close(st);
        }
    }

    /// Ends the session because the transport failed.
    pub(super) fn transport_failed(&self, st: &mut State, err: ConnectionError) {
        st.core
            .handle_transport_closed(std::time::Instant::now(), err);
        self.dispatch(st);
    }
}

/// Stands in for a deadline beyond what `Instant` can represent.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
