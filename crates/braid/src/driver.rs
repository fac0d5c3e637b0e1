//! The driver: the one task that owns the connection. It feeds received bytes to the core,
//! writes the core's frames with vectored writes, fires its timers and wakes the handles.

use crate::glue::{RecvBuf, TxQueue, MAX_IOVECS};
use crate::shared::Inner;
use braid_proto::ConnectionError;
use bytes::BufMut;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

/// Frames are taken from the core while fewer than this many bytes wait to be written.
const TX_LOW_WATER: usize = 128 * 1024;
/// How many bytes of frames the driver holds at most.
const TX_HIGH_WATER: usize = 512 * 1024;
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
    io: T,
    rx: RecvBuf,
    tx: TxQueue,
    /// Writing or reading failed: nothing more is written.
    io_failed: bool,
    needs_flush: bool,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<std::time::Instant>,
    done: bool,
    /// The session's tracing span, made at the first poll.
    span: Option<tracing::Span>,
}

impl<T> Driver<T> {
    pub(crate) fn new(inner: Arc<Inner>, io: T) -> Driver<T> {
        Driver {
            inner,
            io,
            rx: RecvBuf::default(),
            tx: TxQueue::default(),
            io_failed: false,
            needs_flush: false,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            done: false,
            span: None,
        }
    }
}

/// What one locked round of the driver decided.
struct Round {
    want_read: bool,
    closed: Option<ConnectionError>,
    deadline: Option<std::time::Instant>,
    close_deadline: Option<std::time::Instant>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Everything done under the lock: timers, input, taking frames, events.
    fn locked_round(&mut self, cx: &Context<'_>) -> Round {
        let now = crate::now();
        let mut sh = self.inner.lock();
        sh.register_driver(cx.waker());
        sh.handle_timers(now);
        self.rx.feed(&mut sh, now);
        if self.tx.len() < TX_LOW_WATER && !self.io_failed {
            self.tx.refill(&mut sh, now, TX_HIGH_WATER);
            // Writable events: framing freed send-buffer room.
            sh.dispatch();
        }
        Round {
            want_read: sh.core.wants_read() && !self.rx.eof && !self.io_failed,
            closed: sh.close_reason(),
            deadline: sh.core.poll_timeout(),
            close_deadline: sh.core.close_deadline(),
        }
    }

    fn fail_io(&mut self, err: ConnectionError) {
        self.io_failed = true;
        self.tx.clear();
        self.inner.lock().transport_closed(crate::now(), err);
    }

    /// Writes queued frames. Returns true if any bytes were written.
    fn poll_write_frames(&mut self, cx: &mut Context<'_>) -> bool {
        if self.tx.is_empty() || self.io_failed {
            return false;
        }
        let res = if self.io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let k = self.tx.slices(&mut slices);
            Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k])
        } else {
            let flat = self.tx.flat();
            Pin::new(&mut self.io).poll_write(cx, flat)
        };
        match res {
            Poll::Ready(Ok(0)) => {
                self.fail_io(ConnectionError::transport(
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
                self.fail_io(ConnectionError::transport(&e));
                true
            }
            Poll::Pending => false,
        }
    }

    /// Reads from the transport into the receive buffer. Returns true on progress.
    fn poll_read_input(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.rx.read_limit();
        let mut dst = (&mut self.rx.buf).limit(limit);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut dst) {
            Poll::Ready(Ok(0)) => {
                self.rx.eof = true;
                true
            }
            Poll::Ready(Ok(_)) => true,
            Poll::Ready(Err(e)) => {
                self.fail_io(ConnectionError::transport(&e));
                true
            }
            Poll::Pending => false,
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
        for _ in 0..ROUNDS_PER_POLL {
            let round = this.locked_round(cx);
            let mut progress = this.poll_write_frames(cx);
            if this.tx.is_empty() && this.needs_flush && !this.io_failed {
                match Pin::new(&mut this.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => this.needs_flush = false,
                    Poll::Ready(Err(e)) => {
                        this.fail_io(ConnectionError::transport(&e));
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if round.want_read {
                progress |= this.poll_read_input(cx);
            }
            if let Some(reason) = round.closed {
                // After a local close, flush what is queued (the FINs), then shut down.
                // However the session ended, the close deadline bounds both: a peer
                // that stops reading (or a TLS close_notify it never takes) cannot hold
                // the connection, nor `Session::closed`, past it.
                let flushing = matches!(reason, ConnectionError::LocallyClosed)
                    && !this.io_failed
                    && (!this.tx.is_empty() || this.needs_flush);
                let deadline = round.close_deadline;
                let expired = deadline.is_some_and(|d| crate::now() >= d);
                let pending = if expired || this.io_failed {
                    false
                } else if flushing {
                    !progress
                } else {
                    Pin::new(&mut this.io).poll_shutdown(cx).is_pending()
                };
                if !pending && flushing && !expired {
                    continue;
                }
                if pending {
                    if deadline.is_some_and(|d| this.poll_timer(cx, d)) {
                        continue;
                    }
                    return Poll::Pending;
                }
                return Poll::Ready(this.finish(&reason));
            }
            if round.deadline.is_some_and(|at| this.poll_timer(cx, at)) {
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Plenty of work left: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
