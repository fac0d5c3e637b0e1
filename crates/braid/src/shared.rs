//! State shared by the driver task and the `Session`/`Stream` handles: the protocol core
//! and the wakers of everyone waiting on it, behind one mutex.

use braid_proto::{ConnectionError, Event, StreamEnd, StreamEndCallback, StreamId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

pub(crate) struct Inner {
    shared: Mutex<Shared>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) peer_addr: Option<SocketAddr>,
}

/// A ping in flight, see [`crate::Session::ping`].
#[derive(Default)]
pub(crate) struct PingSlot {
    pub(crate) waker: Option<Waker>,
    pub(crate) rtt: Option<std::time::Duration>,
}

#[derive(Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
    ended: Option<Waker>,
}

pub(crate) struct Shared {
    pub(crate) core: braid_proto::Session,
    streams: HashMap<u32, StreamWakers>,
    pub(crate) accept: WaitList,
    /// yamux opens waiting for the peer to acknowledge earlier streams.
    pub(crate) open: WaitList,
    /// Pings in flight: their waiters and, once the reply came, the round trip.
    pub(crate) pings: HashMap<u32, PingSlot>,
    pub(crate) closed: WaitList,
    driver: Option<Waker>,
    /// Live `Session` handles and `Stream` handles: when both reach zero nobody can use
    /// the session any more and it closes gracefully.
    pub(crate) session_handles: usize,
    pub(crate) stream_handles: usize,
    /// The driver has finished: the connection is closed.
    pub(crate) driver_done: bool,
}

/// Wakers collected under the lock and woken after it is released, so that a woken task
/// does not immediately contend for the lock we still hold.
#[derive(Default)]
pub(crate) struct Wakeups(Vec<Waker>, Vec<(StreamEndCallback, StreamId, StreamEnd)>);

impl Wakeups {
    /// Wakes the tasks and runs the stream-end callbacks, outside the lock.
    pub(crate) fn wake_all(self) {
        for w in self.0 {
            w.wake();
        }
        for (cb, id, end) in self.1 {
            cb.call(id, &end);
        }
    }
}

impl Inner {
    pub(crate) fn new(
        core: braid_proto::Session,
        local_addr: Option<SocketAddr>,
        peer_addr: Option<SocketAddr>,
    ) -> Inner {
        Inner {
            shared: Mutex::new(Shared {
                core,
                streams: HashMap::new(),
                accept: WaitList::default(),
                open: WaitList::default(),
                pings: HashMap::new(),
                closed: WaitList::default(),
                driver: None,
                session_handles: 1,
                stream_handles: 0,
                driver_done: false,
            }),
            local_addr,
            peer_addr,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves the core in a consistent state (every
        // core method finishes its update before returning), so poisoning is ignored.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    pub(crate) fn wake_driver(&mut self, out: &mut Wakeups) {
        if let Some(w) = self.driver.take() {
            out.0.push(w);
        }
    }

    pub(crate) fn register_read(&mut self, id: u32, waker: &Waker) {
        set_waker(&mut self.streams.entry(id).or_default().read, waker);
    }

    pub(crate) fn register_write(&mut self, id: u32, waker: &Waker) {
        set_waker(&mut self.streams.entry(id).or_default().write, waker);
    }

    pub(crate) fn register_ended(&mut self, id: u32, waker: &Waker) {
        set_waker(&mut self.streams.entry(id).or_default().ended, waker);
    }

    pub(crate) fn forget_stream(&mut self, id: u32) {
        self.streams.remove(&id);
    }

    /// Turns the core's events into wakeups.
    pub(crate) fn dispatch_events(&mut self, out: &mut Wakeups) {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Incoming => self.accept.wake_all(&mut out.0),
                Event::Readable(id) | Event::Finished(id) => {
                    if let Some(w) = self.streams.get_mut(&id.0).and_then(|s| s.read.take()) {
                        out.0.push(w);
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.streams.get_mut(&id.0).and_then(|s| s.write.take()) {
                        out.0.push(w);
                    }
                }
                Event::Reset(id) => {
                    if let Some(s) = self.streams.get_mut(&id.0) {
                        out.0.extend(s.read.take());
                        out.0.extend(s.write.take());
                    }
                }
                Event::StreamEnded(id) => {
                    if let Some(s) = self.streams.get_mut(&id.0) {
                        out.0.extend(s.read.take());
                        out.0.extend(s.write.take());
                        out.0.extend(s.ended.take());
                    }
                    if let (Some(cb), Some(end)) = (
                        self.core.config().on_stream_end.clone(),
                        self.core.stream_end(id),
                    ) {
                        out.1.push((cb, id, end));
                    }
                }
                // A remote GoAway makes waiting opens fail: wake them too.
                Event::Openable | Event::GoAway => self.open.wake_all(&mut out.0),
                Event::Pong { id, rtt } => {
                    if let Some(slot) = self.pings.get_mut(&id) {
                        slot.rtt = Some(rtt);
                        out.0.extend(slot.waker.take());
                    }
                }
                Event::Closed(reason) => {
                    tracing::debug!(%reason, "session ended");
                    self.wake_everyone(out);
                }
            }
        }
    }

    /// Wakes every waiting task: the session ended or the driver stopped.
    pub(crate) fn wake_everyone(&mut self, out: &mut Wakeups) {
        self.accept.wake_all(&mut out.0);
        self.open.wake_all(&mut out.0);
        self.closed.wake_all(&mut out.0);
        for p in self.pings.values_mut() {
            out.0.extend(p.waker.take());
        }
        for s in self.streams.values_mut() {
            out.0.extend(s.read.take());
            out.0.extend(s.write.take());
            out.0.extend(s.ended.take());
        }
    }

    /// The reason the session ended, once it has.
    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        self.core.close_reason().cloned()
    }

    /// Starts a graceful close when no handle can use the session any more.
    pub(crate) fn close_if_unused(&mut self, out: &mut Wakeups) {
        if self.session_handles == 0 && self.stream_handles == 0 {
            self.core.close(crate::now());
            self.dispatch_events(out);
            self.wake_driver(out);
        }
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

impl Shared {
    fn list(&mut self, list: List) -> &mut WaitList {
        match list {
            List::Accept => &mut self.accept,
            List::Open => &mut self.open,
            List::Closed => &mut self.closed,
        }
    }
}
