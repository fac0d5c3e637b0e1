//! The tokio layer's side of the glue: the shared state behind one mutex, woken with
//! `Waker`s. Wakers are collected under the lock and woken when the lock is released
//! ([`Locked`]), so that a woken task does not immediately contend for it.

use crate::driver::Direct;
use crate::glue::{self, EndCall};
use braid_proto::{ConnectionError, StreamId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, OnceLock, Weak};
use std::task::Waker;

/// The state shared by the driver and the handles.
pub(crate) type Shared = glue::Shared<Wakers>;

pub(crate) struct Inner {
    shared: Mutex<Shared>,
    /// The driver's connection, for stream tasks to write and read through (see
    /// [`crate::driver`]); unset when the driver's transport cannot be shared.
    direct: OnceLock<Weak<dyn Direct>>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) peer_addr: Option<SocketAddr>,
}

/// The wakers of one stream's tasks.
#[derive(Default)]
pub(crate) struct StreamWakers {
    read: Option<Waker>,
    /// The stream's task read through and fed input that was not for it: it waits for
    /// the driver until data for it comes (a stream with nothing coming, beside one
    /// with bulk data, would otherwise be woken for every frame).
    no_read_through: bool,
    write: Option<Waker>,
    ended: Option<Waker>,
}

/// Everyone waiting on the session, and the wakeups due when the lock is released.
#[derive(Default)]
pub(crate) struct Wakers {
    pub(crate) accept: WaitList,
    /// yamux opens waiting for the peer to acknowledge earlier streams.
    pub(crate) open: WaitList,
    pub(crate) closed: WaitList,
    driver: Option<Waker>,
    due: Vec<Waker>,
}

impl glue::Wake for Wakers {
    type Stream = StreamWakers;
    type Ping = Option<Waker>;

    fn incoming(&mut self) {
        self.accept.wake_all(&mut self.due);
    }

    fn openable(&mut self) {
        self.open.wake_all(&mut self.due);
    }

    fn readable(&mut self, s: &mut StreamWakers) {
        s.no_read_through = false;
        self.due.extend(s.read.take());
    }

    fn writable(&mut self, s: &mut StreamWakers) {
        self.due.extend(s.write.take());
    }

    fn stream_ended(&mut self, s: &mut StreamWakers) {
        self.due.extend(s.read.take());
        self.due.extend(s.write.take());
        self.due.extend(s.ended.take());
    }

    fn pong(&mut self, ping: &mut Option<Waker>) {
        self.due.extend(ping.take());
    }

    fn session_ended(&mut self) {
        self.accept.wake_all(&mut self.due);
        self.open.wake_all(&mut self.due);
        self.closed.wake_all(&mut self.due);
    }

    fn end_calls_due(&mut self) {
        // Run when the lock is released, see `Locked`.
    }

    fn io(&mut self, _core: &braid_proto::Session) {
        self.due.extend(self.driver.take());
    }

    fn timers(&mut self) {
        // The driver arms its timer for the core's next deadline on every round.
        self.due.extend(self.driver.take());
    }
}

impl Inner {
    pub(crate) fn new(
        core: braid_proto::Session,
        local_addr: Option<SocketAddr>,
        peer_addr: Option<SocketAddr>,
    ) -> Inner {
        Inner {
            shared: Mutex::new(glue::Shared::new(core, Wakers::default())),
            direct: OnceLock::new(),
            local_addr,
            peer_addr,
        }
    }

    pub(crate) fn set_direct(&self, direct: Weak<dyn Direct>) {
        let _ = self.direct.set(direct);
    }

    /// After a stream queued data (with the lock held): its frames are written now by
    /// the calling task if the driver is parked, else the driver is woken.
    pub(crate) fn queued(&self, mut sh: Locked<'_>) {
        match self.direct.get().and_then(Weak::upgrade) {
            Some(w) => w.write_through(sh),
            None => sh.wake_io(),
        }
    }

    /// When stream `id` found nothing to read (with the lock held): the calling task
    /// reads the connection itself if the driver is parked (see [`crate::driver`]),
    /// unless its last read through brought nothing for it.
    pub(crate) fn read_through(&self, sh: &mut Locked<'_>, id: StreamId, reader: &Waker) {
        let Some(s) = sh.streams.get_mut(&id.0) else {
            return;
        };
        if s.no_read_through {
            return;
        }
        let Some(d) = self.direct.get().and_then(Weak::upgrade) else {
            return;
        };
        // Input fed meanwhile need not wake this task: it looks again before it waits.
        s.read = None;
        // Cleared again if the input brings this stream data (or nothing is read).
        s.no_read_through = true;
        let fed = d.read_through(sh, reader);
        if !fed {
            if let Some(s) = sh.streams.get_mut(&id.0) {
                s.no_read_through = false;
            }
        }
    }

    /// Locks the shared state; wakeups and stream-end callbacks due are run when the
    /// returned guard is dropped, after the lock is released.
    pub(crate) fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock leaves the core in a consistent state (every
        // core method finishes its update before returning), so poisoning is ignored.
        Locked(Some(self.shared.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

/// The locked shared state. Dropping it releases the lock, then wakes the tasks and runs
/// the stream-end callbacks that became due under it.
pub(crate) struct Locked<'a>(Option<MutexGuard<'a, Shared>>);

impl Deref for Locked<'_> {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        self.0.as_ref().expect("held until drop")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Shared {
        self.0.as_mut().expect("held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut sh) = self.0.take() else { return };
        if sh.wake.due.is_empty() && sh.end_calls.is_empty() {
            return;
        }
        let due = std::mem::take(&mut sh.wake.due);
        let calls: Vec<EndCall> = std::mem::take(&mut sh.end_calls);
        drop(sh);
        for w in due {
            w.wake();
        }
        glue::run_end_calls(calls);
    }
}

impl glue::Shared<Wakers> {
    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        set_waker(&mut self.wake.driver, waker);
    }

    /// Whether `waker` is the driver's and the session has not taken it (to wake the
    /// driver for work) since the driver registered it.
    pub(crate) fn driver_registered(&self, waker: &Waker) -> bool {
        self.wake
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
    }

    /// The parked driver's waker; `None` while the driver runs or is woken.
    pub(crate) fn driver_waker(&self) -> Option<Waker> {
        self.wake.driver.clone()
    }

    pub(crate) fn register_read(&mut self, id: StreamId, waker: &Waker) {
        set_waker(&mut self.streams.entry(id.0).or_default().read, waker);
    }

    pub(crate) fn register_write(&mut self, id: StreamId, waker: &Waker) {
        set_waker(&mut self.streams.entry(id.0).or_default().write, waker);
    }

    pub(crate) fn register_ended(&mut self, id: StreamId, waker: &Waker) {
        set_waker(&mut self.streams.entry(id.0).or_default().ended, waker);
    }

    fn list(&mut self, list: List) -> &mut WaitList {
        match list {
            List::Accept => &mut self.wake.accept,
            List::Open => &mut self.wake.open,
            List::Closed => &mut self.wake.closed,
        }
    }

    /// The session's end reason once the connection is shut down.
    pub(crate) fn final_reason(&self) -> ConnectionError {
        self.close_reason()
            .unwrap_or(ConnectionError::LocallyClosed)
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Tasks waiting for one kind of session event (an inbound stream, room to open, the
/// end). Each waiting future holds a key and removes its waker when dropped, so futures
/// given up on (a `select!` that took another branch) leave nothing behind.
#[derive(Default)]
pub(crate) struct WaitList {
    wakers: HashMap<u64, Waker>,
    next_key: u64,
}

impl WaitList {
    /// Registers (or refreshes) the waker under `key`, assigning a key the first time.
    pub(crate) fn register(&mut self, key: &mut Option<u64>, waker: &Waker) {
        let k = *key.get_or_insert_with(|| {
            self.next_key += 1;
            self.next_key
        });
        match self.wakers.get_mut(&k) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => *w = waker.clone(),
            None => {
                self.wakers.insert(k, waker.clone());
            }
        }
    }

    pub(crate) fn remove(&mut self, key: u64) {
        self.wakers.remove(&key);
    }

    fn wake_all(&mut self, out: &mut Vec<Waker>) {
        out.extend(self.wakers.drain().map(|(_, w)| w));
    }
}

/// Which [`WaitList`] a [`Waiter`] is on.
#[derive(Clone, Copy)]
pub(crate) enum List {
    Accept,
    Open,
    Closed,
}

/// A waiting future's place in a [`WaitList`], removed when the future is dropped.
pub(crate) struct Waiter<'a> {
    inner: &'a Inner,
    list: List,
    key: Option<u64>,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(inner: &'a Inner, list: List) -> Waiter<'a> {
        Waiter {
            inner,
            list,
            key: None,
        }
    }

    /// Registers `waker` (under the lock the caller holds).
    pub(crate) fn register(&mut self, sh: &mut Shared, waker: &Waker) {
        sh.list(self.list).register(&mut self.key, waker);
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.inner.lock().list(self.list).remove(key);
        }
    }
}
