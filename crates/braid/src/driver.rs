//! The driver: the one task that owns the connection. It feeds received bytes to the core,
//! writes the core's frames with vectored writes, fires its timers and wakes the handles.
//!
//! Write-through and read-through: while the driver is parked, a stream task that queued
//! data takes the frames from the core and writes them to the connection itself, and a
//! stream task that finds nothing to read reads the connection itself and feeds the core
//! ([`Direct`]). That saves the driver's wakeup and a task switch per message each way.
//! The connection, the queue of frames taken from the core and the receive buffer live
//! in one mutex ([`Io`]): frames are only taken from the core and written, and input is
//! only read and fed, while holding it, so frames leave in the core's order and input is
//! fed in the order it came.
//!
//! Input readiness wakes both the driver and the last task that read through
//! ([`InputWake`]): the task gets its data without waiting for the driver, and the driver
//! still runs, so nothing depends on a stream task being polled again.

use crate::glue::{RecvBuf, TxQueue, MAX_IOVECS};
use crate::shared::{Inner, Locked};
use braid_proto::ConnectionError;
use bytes::BufMut;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

/// Frames are taken from the core while fewer than this many bytes wait to be written.
const TX_LOW_WATER: usize = 128 * 1024;
/// How many bytes of frames the driver holds at most.
const TX_HIGH_WATER: usize = 512 * 1024;
/// While reads bring less than this on average, stream tasks read through: with bulk
/// data the driver reads better alone (stream tasks reading through took turns with it
/// on the socket). An average, because transports such as TLS or Noise cut bulk input
/// into records and return their ends as short reads.
const SMALL_INPUT: usize = 4 * 1024;
/// Rounds of work per poll before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 32;

/// The future that runs a session's connection. [`Session::client`](crate::Session::client)
/// and [`Session::server`](crate::Session::server) spawn it on tokio; get it from
/// [`Session::new`](crate::Session::new) to run it yourself.
///
/// It completes when the session has ended and the connection is shut down: `Ok(())`
/// after a local close, otherwise the reason the session ended.
#[must_use = "the session does nothing unless its driver is polled"]
pub struct Driver<T> {
    inner: Arc<Inner>,
    io: Arc<Mutex<Io<T>>>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<std::time::Instant>,
    /// The last poll ended with everything done and every wakeup registered.
    parked: bool,
    done: bool,
    /// The session's tracing span, made at the first poll.
    span: Option<tracing::Span>,
}

/// The connection, the frames taken from the core that wait to be written, and the
/// input not yet fed to the core.
pub(crate) struct Io<T> {
    io: T,
    tx: TxQueue,
    rx: RecvBuf,
    /// Who the connection wakes when it has input.
    input_wake: Arc<InputWake>,
    /// `input_wake` as a waker, made once so that the transport sees the same one.
    input_waker: Waker,
    /// Bytes per read, a moving average: below [`SMALL_INPUT`] the connection carries
    /// messages rather than a stream of data, and stream tasks read through.
    input_avg: usize,
    /// Writing or reading failed: nothing more is written.
    io_failed: bool,
    needs_flush: bool,
    /// A write-through write failed: the driver ends the session with this.
    failure: Option<ConnectionError>,
}

impl<T> Driver<T> {
    pub(crate) fn new(inner: Arc<Inner>, io: T) -> Driver<T> {
        Driver {
            inner,
            io: Arc::new(Mutex::new(Io::new(io))),
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            parked: false,
            done: false,
            span: None,
        }
    }
}

/// The wakers of whoever waits for input: the driver (first) and the stream task that
/// last read through (second). Both are woken, the reader first: on tokio's
/// current-thread runtime spawned tasks run in the order they were woken.
#[derive(Default)]
pub(crate) struct InputWake(Mutex<[Option<Waker>; 2]>);

impl InputWake {
    fn set(&self, slot: usize, waker: &Waker) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &w[slot] {
            Some(old) if old.will_wake(waker) => {}
            _ => w[slot] = Some(waker.clone()),
        }
    }
}

impl Wake for InputWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let [driver, reader] = {
            let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
            [w[0].take(), w[1].take()]
        };
        if let Some(r) = reader {
            r.wake();
        }
        if let Some(d) = driver {
            d.wake();
        }
    }
}

/// What one locked round of the driver decided.
struct Round {
    now: std::time::Instant,
    want_read: bool,
    closed: Option<ConnectionError>,
    deadline: Option<std::time::Instant>,
    close_deadline: Option<std::time::Instant>,
}

/// Locks the connection's side; a panic while it was held leaves a consistent queue.
fn lock_io<T>(io: &Mutex<Io<T>>) -> MutexGuard<'_, Io<T>> {
    io.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Driver<T> {
    /// Lets stream tasks write and read through while the driver is parked.
    pub(crate) fn enable_direct(&self) {
        let weak = Arc::downgrade(&self.io);
        self.inner.set_direct(weak);
    }
}

impl<T> Io<T> {
    fn new(io: T) -> Io<T> {
        let input_wake = Arc::new(InputWake::default());
        Io {
            io,
            tx: TxQueue::default(),
            rx: RecvBuf::default(),
            input_waker: Waker::from(input_wake.clone()),
            input_wake,
            input_avg: 0,
            io_failed: false,
            needs_flush: false,
            failure: None,
        }
    }

    /// Nothing more is written or read; the session learns why from the driver.
    fn fail(&mut self, err: ConnectionError) {
        self.io_failed = true;
        self.tx.clear();
        self.failure.get_or_insert(err);
    }
}

impl<T: AsyncRead + Unpin> Io<T> {
    /// Reads from the transport into the receive buffer, waking `input_wake` when there
    /// is more. Returns true on progress.
    fn poll_read_input(&mut self, now: impl FnOnce() -> Instant) -> bool {
        let limit = self.rx.read_limit(now);
        let mut cx = Context::from_waker(&self.input_waker);
        let mut dst = (&mut self.rx.buf).limit(limit);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut dst) {
            Poll::Ready(Ok(0)) => {
                self.rx.eof = true;
                true
            }
            Poll::Ready(Ok(n)) => {
                self.input_avg = (self.input_avg * 7 + n) / 8;
                true
            }
            Poll::Ready(Err(e)) => {
                self.fail(ConnectionError::transport(&e));
                true
            }
            Poll::Pending => false,
        }
    }

    /// Whether the driver would read now (the core wants input and the transport works).
    fn can_read(&self, sh: &Locked<'_>) -> bool {
        sh.core.wants_read() && !self.rx.eof && !self.io_failed
    }
}

impl<T: AsyncWrite + Unpin> Io<T> {
    /// Writes queued frames. Returns true if any bytes were written or writing failed.
    fn poll_write_frames(&mut self, cx: &mut Context<'_>) -> bool {
        if self.tx.is_empty() || self.io_failed {
            return false;
        }
        let res = if let Some(frame) = self.tx.single() {
            Pin::new(&mut self.io).poll_write(cx, frame)
        } else if self.io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let k = self.tx.slices(&mut slices);
            Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k])
        } else {
            let flat = self.tx.flat();
            Pin::new(&mut self.io).poll_write(cx, flat)
        };
        match res {
            Poll::Ready(Ok(0)) => {
                self.fail(ConnectionError::transport(
                    &std::io::ErrorKind::WriteZero.into(),
                ));
                true
            }
            Poll::Ready(Ok(n)) => {
                self.tx.advance(n);
                self.needs_flush = true;
                true
            }
            Poll::Ready(Err(e)) => {
                self.fail(ConnectionError::transport(&e));
                true
            }
            Poll::Pending => false,
        }
    }

    /// Flushes once everything queued is written; false if that is still to do.
    fn poll_flush_frames(&mut self, cx: &mut Context<'_>) -> bool {
        if self.tx.is_empty() && self.needs_flush && !self.io_failed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => self.fail(ConnectionError::transport(&e)),
                Poll::Pending => return false,
            }
        }
        true
    }
}

/// Whether the core's next deadline moved from `old` to an earlier `new`.
fn earlier(old: Option<Instant>, new: Option<Instant>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => new < old,
        (old, new) => old.is_none() && new.is_some(),
    }
}

/// A stream task's way to the connection (see the module's comment).
pub(crate) trait Direct: Send + Sync {
    /// Called with the session locked, after a stream queued data: writes the frames
    /// now if the driver is parked and nothing is queued before them, else wakes the
    /// driver as usual. Releases the lock.
    fn write_through(&self, sh: Locked<'_>);

    /// Called with the session locked by a stream task that found nothing to read: if
    /// the driver is parked and input has been small, reads the connection and feeds the
    /// core what came, with `reader` woken (besides the driver) when more comes. True if
    /// input was read and fed.
    fn read_through(&self, sh: &mut Locked<'_>, reader: &Waker) -> bool;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Direct for Mutex<Io<T>> {
    fn write_through(&self, mut sh: Locked<'_>) {
        // No parked driver (it runs or is woken already): it will take the frames.
        let Some(waker) = sh.driver_waker() else {
            return;
        };
        // The driver holds the connection, or frames wait before ours (the transport is
        // full, or a flush is pending): the driver's turn.
        let mut io = match self.try_lock() {
            Ok(io) if io.tx.is_empty() && !io.needs_flush && !io.io_failed => io,
            _ => return sh.wake_io(),
        };
        let now = crate::now();
        let deadline = sh.core.poll_timeout();
        io.tx.refill(&mut sh, now, TX_HIGH_WATER);
        // Writable events: framing freed send-buffer room.
        sh.dispatch();
        // Framing may have armed an earlier timer (or finished a close): the driver must
        // see it. A later one it finds when its armed timer fires.
        if earlier(deadline, sh.core.poll_timeout()) || sh.is_closed() {
            sh.wake_io();
        }
        drop(sh);
        // Written with the driver's waker, so that a transport that is full wakes the
        // driver when it has room: from then on the driver writes the rest.
        let mut cx = Context::from_waker(&waker);
        while io.poll_write_frames(&mut cx) {}
        io.poll_flush_frames(&mut cx);
        if io.failure.is_some() {
            waker.wake();
        }
    }

    fn read_through(&self, sh: &mut Locked<'_>, reader: &Waker) -> bool {
        // The driver holds the connection (it runs, or a task writes through): its turn.
        let mut io = match self.try_lock() {
            Ok(io) if io.input_avg < SMALL_INPUT && io.can_read(sh) => io,
            _ => return false,
        };
        io.input_wake.set(1, reader);
        // The session stays locked: reads through happen while messages are small and
        // far between, and releasing and taking the lock again cost more than the read.
        if !io.poll_read_input(crate::now) {
            return false;
        }
        let now = crate::now();
        let deadline = sh.core.poll_timeout();
        io.rx.feed(sh, now);
        // The input may want replies, moved a deadline earlier, or ended the session:
        // the driver's work.
        if earlier(deadline, sh.core.poll_timeout())
            || sh.core.wants_transmit()
            || io.failure.is_some()
            || io.rx.eof
            || sh.is_closed()
        {
            sh.wake_io();
        }
        true
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Everything done under the lock: timers, input, taking frames, events.
    fn locked_round(&mut self, io: &mut Io<T>, cx: &Context<'_>) -> Round {
        let now = crate::now();
        let mut sh = self.inner.lock();
        sh.register_driver(cx.waker());
        if let Some(err) = io.failure.take() {
            // A write-through write failed.
            sh.transport_closed(now, err);
        }
        sh.handle_timers(now);
        io.rx.feed(&mut sh, now);
        if io.tx.len() < TX_LOW_WATER && !io.io_failed {
            io.tx.refill(&mut sh, now, TX_HIGH_WATER);
            // Writable events: framing freed send-buffer room.
            sh.dispatch();
        }
        Round {
            now,
            want_read: io.can_read(&sh),
            closed: sh.close_reason(),
            deadline: sh.core.poll_timeout(),
            close_deadline: sh.core.close_deadline(),
        }
    }

    /// Arms the timer for `at`; true if it has fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>, at: std::time::Instant) -> bool {
        if self.timer_at != Some(at) {
            self.timer_at = Some(at);
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            return true;
        }
        false
    }

    fn finish(&mut self, reason: &ConnectionError) -> Result<(), ConnectionError> {
        self.done = true;
        self.inner.lock().finish();
        match reason {
            ConnectionError::LocallyClosed => Ok(()),
            other => Err(other.clone()),
        }
    }

    /// A poll while parked, for input only (its readiness also wakes a stream task,
    /// which may have taken it): reads without a locked round. True if there was nothing
    /// to read and nothing else to do; false sends the poll down the full path.
    fn poll_parked(&mut self, io: &mut Io<T>, cx: &mut Context<'_>) -> bool {
        if !std::mem::take(&mut self.parked)
            || !io.tx.is_empty()
            || io.needs_flush
            || io.failure.is_some()
        {
            return false;
        }
        if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            return false;
        }
        {
            let sh = self.inner.lock();
            // The session takes the driver's waker when it has work for it.
            if !sh.driver_registered(cx.waker()) || !io.can_read(&sh) {
                return false;
            }
        }
        io.input_wake.set(0, cx.waker());
        if io.poll_read_input(crate::now) {
            return false;
        }
        self.parked = true;
        true
    }

    /// One poll of the driver, with the connection locked.
    fn poll_io(
        &mut self,
        io: &mut Io<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ConnectionError>> {
        for _ in 0..ROUNDS_PER_POLL {
            let round = self.locked_round(io, cx);
            let mut progress = io.poll_write_frames(cx);
            io.poll_flush_frames(cx);
            if round.want_read {
                io.input_wake.set(0, cx.waker());
                progress |= io.poll_read_input(|| round.now);
            }
            if let Some(err) = io.failure.take() {
                self.inner.lock().transport_closed(crate::now(), err);
                progress = true;
            }
            if let Some(reason) = round.closed {
                // After a local close, flush what is queued (the FINs), then shut down.
                // However the session ended, the close deadline bounds both: a peer
                // that stops reading (or a TLS close_notify it never takes) cannot hold
                // the connection, nor `Session::closed`, past it.
                let flushing = matches!(reason, ConnectionError::LocallyClosed)
                    && !io.io_failed
                    && (!io.tx.is_empty() || io.needs_flush);
                let deadline = round.close_deadline;
                let expired = deadline.is_some_and(|d| crate::now() >= d);
                let pending = if expired || io.io_failed {
                    false
                } else if flushing {
                    !progress
                } else {
                    Pin::new(&mut io.io).poll_shutdown(cx).is_pending()
                };
                if !pending && flushing && !expired {
                    continue;
                }
                if pending {
                    if deadline.is_some_and(|d| self.poll_timer(cx, d)) {
                        continue;
                    }
                    return Poll::Pending;
                }
                return Poll::Ready(self.finish(&reason));
            }
            if round.deadline.is_some_and(|at| self.poll_timer(cx, at)) {
                progress = true;
            }
            if !progress {
                self.parked = true;
                return Poll::Pending;
            }
        }
        // Plenty of work left: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A driver dropped before the session ended (its task aborted, its runtime shut down)
/// ends the session, so that no handle waits for a connection nobody serves any more.
impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut sh = self.inner.lock();
        sh.transport_closed(
            crate::now(),
            ConnectionError::Transport {
                kind: std::io::ErrorKind::ConnectionAborted,
                message: "the session's driver was dropped".into(),
            },
        );
        sh.finish();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Driver<T> {
    type Output = Result<(), ConnectionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let span = this.span.get_or_insert_with(|| {
            let sh = this.inner.lock();
            tracing::debug_span!(
                "braid_session",
                side = ?sh.core.side(),
                protocol = ?sh.core.config().protocol,
                peer = ?this.inner.peer_addr,
            )
        });
        let _enter = span.clone().entered();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let cell = this.io.clone();
        let mut io = lock_io(&cell);
        if this.poll_parked(&mut io, cx) {
            return Poll::Pending;
        }
        this.poll_io(&mut io, cx)
    }
}
