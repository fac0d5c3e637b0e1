//! Time: keepalives, the close timeout and yamux's per-stream timeouts.

use super::{Session, State};
use crate::config::{Config, Side};
use crate::error::{ConnectionError, ResetReason};
use crate::stream::SendState;
use std::cmp::Ordering;
use std::time::Instant;

/// Keepalive state, started with the session as Go starts its tickers.
#[derive(Debug)]
pub(super) struct KeepAlive {
    pub(super) next_ping: Instant,
    /// smux: when to check that something arrived since the last check.
    next_check: Instant,
    /// smux: a frame was read since the last check (Go's `dataReady`).
    pub(super) data_ready: bool,
    /// smux: a NOP is due.
    pub(super) nop_due: bool,
    /// yamux: our keepalive ping awaiting its reply, and its deadline.
    pub(super) ping: Option<(u32, Instant)>,
}

impl KeepAlive {
    /// A client sends its first keepalive at once: a server detecting the protocol
    /// ([`Protocol::Auto`](crate::Protocol::Auto)) drops connections that stay silent.
    pub(super) fn new(config: &Config, side: Side, now: Instant) -> Option<KeepAlive> {
        let first = match side {
            Side::Client => now,
            Side::Server => now + config.keep_alive_interval,
        };
        (!config.keep_alive_disabled).then(|| KeepAlive {
            next_ping: first,
            next_check: now + config.keep_alive_timeout,
            data_ready: false,
            nop_due: false,
            ping: None,
        })
    }

    fn next_deadline(&self, yamux: bool) -> Instant {
        if yamux {
            match self.ping {
                Some((_, deadline)) => deadline.min(self.next_ping),
                None => self.next_ping,
            }
        } else {
            self.next_ping.min(self.next_check)
        }
    }
}

/// What a stream timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    /// Our SYN must be acknowledged by then.
    Open,
    /// The peer's FIN must arrive by then, after ours.
    Close,
    /// Data must have moved by then (the stream's idle timeout).
    Idle,
}

/// A per-stream deadline. The heap may hold timers of streams that have moved on; they
/// are checked against the stream's state when they fire, and `serial` tells a stream
/// from a later one that reuses its id. Timers of gone streams are pruned as the heap
/// grows, so churn does not grow it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StreamTimer {
    pub(super) at: Instant,
    pub(super) id: u32,
    pub(super) serial: u64,
    pub(super) kind: TimerKind,
}

impl Ord for StreamTimer {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in the max-heap.
        other
            .at
            .cmp(&self.at)
            .then(other.id.cmp(&self.id))
            .then(other.serial.cmp(&self.serial))
            .then(other.kind.cmp(&self.kind))
    }
}

impl PartialOrd for StreamTimer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Session {
    /// Advances timers to `now`: sends keepalives, ends the session on keepalive or
    /// close timeout, resets yamux streams whose open or close timed out. Call it when
    /// [`Session::poll_timeout`] has passed (earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.is_closed() {
            return;
        }
        if let State::Closing { deadline } = self.state {
            if now >= deadline {
                self.fail(ConnectionError::LocallyClosed);
                return;
            }
        }
        if self.detect_deadline.is_some_and(|d| now >= d) {
            self.fail(ConnectionError::DetectTimeout(self.config.detect_timeout));
            return;
        }
        self.fire_stream_timers(now);
        if self.is_yamux() {
            self.yamux_keep_alive(now);
        } else {
            self.smux_keep_alive(now);
        }
    }

    fn smux_keep_alive(&mut self, now: Instant) {
        let paused = self.reading_paused();
        let interval = self.config.keep_alive_interval;
        let timeout = self.config.keep_alive_timeout;
        let Some(ka) = self.keep_alive.as_mut() else {
            return;
        };
        if now >= ka.next_ping {
            ka.nop_due = true;
            ka.next_ping = now + interval;
        }
        if now >= ka.next_check {
            // Go never times out while reading is paused on purpose.
            if !ka.data_ready && !paused {
                self.fail(ConnectionError::KeepAliveTimeout(timeout));
                return;
            }
            ka.data_ready = false;
            ka.next_check = now + timeout;
        }
    }

    fn yamux_keep_alive(&mut self, now: Instant) {
        let paused = self.reading_paused();
        let interval = self.config.keep_alive_interval;
        let timeout = self.config.keep_alive_timeout;
        let Some(ka) = self.keep_alive.as_mut() else {
            return;
        };
        if let Some((value, deadline)) = ka.ping {
            if now >= deadline {
                if !paused {
                    self.fail(ConnectionError::KeepAliveTimeout(timeout));
                    return;
                }
                // We cannot read the reply while reading is paused: wait longer.
                ka.ping = Some((value, now + timeout));
            }
        }
        if now >= ka.next_ping {
            ka.next_ping = now + interval;
            // While reading is paused the reply to an earlier ping cannot be read, so keep
            // pinging: the writes are what notice a dead peer then.
            if ka.ping.is_none() || paused {
                let value = self.queue_ping(now, true);
                if let Some(ka) = self.keep_alive.as_mut() {
                    ka.ping = Some((value, now + timeout));
                }
            }
        }
    }

    fn fire_stream_timers(&mut self, now: Instant) {
        while self.stream_timers.peek().is_some_and(|t| t.at <= now) {
            let t = self.stream_timers.pop().expect("peeked");
            let Some(st) = self.streams.get(&t.id).filter(|st| st.serial == t.serial) else {
                continue;
            };
            let expired = match t.kind {
                TimerKind::Open => st.opening.awaiting_ack(),
                // After our FIN (yamux) the peer's must follow; a released stream must
                // get its own FIN out.
                TimerKind::Close => {
                    let fin_sent = st.send_state == SendState::FinSent;
                    (fin_sent && !st.recv_state.fin_received()) || (st.released && !fin_sent)
                }
                TimerKind::Idle => {
                    match st.idle_timeout {
                        Some(idle) if !st.finished() => {
                            let due = st.last_data + idle;
                            if due > now {
                                // Data moved since this timer was armed: look again later.
                                self.stream_timers.push(StreamTimer {
                                    at: due,
                                    id: t.id,
                                    serial: t.serial,
                                    kind: TimerKind::Idle,
                                });
                                false
                            } else {
                                true
                            }
                        }
                        _ => false,
                    }
                }
            };
            if expired
                && self
                    .streams
                    .get(&t.id)
                    .is_some_and(|st| st.reset().is_none())
            {
                let reason = match t.kind {
                    TimerKind::Open => ResetReason::OpenTimeout,
                    TimerKind::Close => ResetReason::CloseTimeout,
                    TimerKind::Idle => ResetReason::IdleTimeout,
                };
                self.reset_stream(t.id, reason, true);
            }
        }
    }

    /// Arms a stream timer: open and close timeouts count from `now`, the idle timeout
    /// from the stream's last data.
    pub(super) fn arm_stream_timer(&mut self, id: u32, kind: TimerKind, now: Instant) {
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        let at = match kind {
            TimerKind::Open => now + self.config.stream_open_timeout,
            TimerKind::Close => now + self.config.stream_close_timeout,
            TimerKind::Idle => match st.idle_timeout {
                Some(idle) => st.last_data + idle,
                None => return,
            },
        };
        let serial = st.serial;
        if self.stream_timers.len() >= self.timers_prune_at {
            let streams = &self.streams;
            self.stream_timers
                .retain(|t| streams.get(&t.id).is_some_and(|st| st.serial == t.serial));
            // Amortised: the next prune waits until the heap has doubled.
            self.timers_prune_at = (2 * self.stream_timers.len()).max(4 * streams.len() + 64);
        }
        self.stream_timers.push(StreamTimer {
            at,
            id,
            serial,
            kind,
        });
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = match self.state {
            State::Open => None,
            State::Closing { deadline } => Some(deadline),
            State::Closed(_) => return None,
        };
        let yamux = self.is_yamux();
        [
            closing,
            self.detect_deadline,
            self.keep_alive.as_ref().map(|ka| ka.next_deadline(yamux)),
            self.stream_timers.peek().map(|t| t.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
