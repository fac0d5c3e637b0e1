//! The blocking layer's side of the glue: the shared state behind one mutex, woken with
//! condition variables.

use crate::glue;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The state shared by the session's threads and its handles.
pub(super) type State = glue::Shared<Condvars>;

/// Condition variables of one stream, shared by its handles and the session.
#[derive(Default)]
pub(super) struct StreamWaiters {
    /// Readers wait here for `Readable`/`Finished`, and `Stream::closed` for the end
    /// (or the end of the session).
    pub(super) read: Condvar,
    /// Writers wait here for `Writable` (or the end of the session).
    pub(super) write: Condvar,
}

/// A stream that has a live handle.
#[derive(Default)]
pub(super) struct StreamSlot {
    pub(super) waiters: Arc<StreamWaiters>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
}

/// The session-wide condition variables.
#[derive(Default)]
pub(super) struct SessionCvs {
    /// Threads in `accept_stream`, `open_stream`, `ping`, `close` and `closed`.
    pub(super) app: Condvar,
    pub(super) reader: Condvar,
    pub(super) writer: Condvar,
    pub(super) timer: Condvar,
}

/// How the blocking layer wakes its waiters: condition variables, and whether the
/// reader and writer threads are parked.
pub(super) struct Condvars {
    cvs: Arc<SessionCvs>,
    /// The reader thread waits on `reader` (reading is paused).
    pub(super) reader_parked: bool,
    /// The writer thread waits on `writer` (nothing to send).
    pub(super) writer_parked: bool,
}

impl glue::Wake for Condvars {
    type Stream = StreamSlot;
    type Ping = ();

    fn incoming(&mut self) {
        self.cvs.app.notify_all();
    }

    fn openable(&mut self) {
        self.cvs.app.notify_all();
    }

    fn readable(&mut self, s: &mut StreamSlot) {
        s.waiters.read.notify_all();
    }

    fn writable(&mut self, s: &mut StreamSlot) {
        s.waiters.write.notify_all();
    }

    fn stream_ended(&mut self, s: &mut StreamSlot) {
        s.waiters.read.notify_all();
        s.waiters.write.notify_all();
    }

    fn pong(&mut self, _ping: &mut ()) {
        self.cvs.app.notify_all();
    }

    fn session_ended(&mut self) {
        self.cvs.app.notify_all();
        self.cvs.reader.notify_all();
        self.cvs.writer.notify_all();
        self.cvs.timer.notify_all();
    }

    fn end_calls_due(&mut self) {
        // The writer thread runs them outside the lock.
        self.cvs.writer.notify_one();
    }

    /// Wakes the reader or the writer thread if the application gave it work: reading
    /// freed budget or accept-queue room, or made frames (data, SYN, FIN, UPD) due.
    fn io(&mut self, core: &braid_proto::Session) {
        if self.writer_parked && core.wants_transmit() {
            self.writer_parked = false;
            self.cvs.writer.notify_one();
        }
        if self.reader_parked && core.wants_read() {
            self.reader_parked = false;
            self.cvs.reader.notify_one();
        }
    }

    fn timers(&mut self) {
        self.cvs.timer.notify_all();
    }
}

pub(super) struct Inner {
    state: Mutex<State>,
    pub(super) cvs: Arc<SessionCvs>,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) peer_addr: Option<SocketAddr>,
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
        let cvs = Arc::new(SessionCvs::default());
        let wake = Condvars {
            cvs: cvs.clone(),
            reader_parked: false,
            writer_parked: false,
        };
        Inner {
            state: Mutex::new(glue::Shared::new(core, wake)),
            cvs,
            local_addr,
            peer_addr,
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
}
