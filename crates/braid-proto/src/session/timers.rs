//! Time: the session's timers (keepalives, the close and detection timeouts) in one
//! table, and the per-stream timeouts (open, close, idle) in a heap.

use super::Session;
use crate::config::{Config, Side};
use crate::error::{ConnectionError, ResetReason};
use crate::stream::SendState;
use std::cmp::Ordering;
use std::time::Instant;

/// A session-wide timer: one deadline each, in the [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// [`Session::close`]: the graceful close gives up flushing. Kept once the session
    /// has ended, so that a driver can bound its last flush by it.
    Close,
    /// [`Protocol::Auto`](crate::Protocol::Auto): the client must have spoken by then.
    Detect,
    /// The next keepalive: a smux NOP, a yamux ping.
    KeepAlive,
    /// smux: something must have arrived since the last check.
    KeepAliveCheck,
    /// yamux: the reply to our keepalive ping must have arrived.
    PingTimeout,
}

impl Timer {
    const COUNT: usize = 5;
}

/// The session's deadlines, each stored once (per-stream deadlines are in the
/// session's stream-timer heap). `None`: not armed.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// The timer is armed and due.
    pub(super) fn expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| now >= at)
    }

    /// The earliest armed deadline.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

/// Keepalive state, started with the session as Go starts its tickers. Its deadlines
/// are in the [`TimerTable`].
#[derive(Debug)]
pub(super) struct KeepAlive {
    /// smux: a frame was read since the last check (Go's `dataReady`).
    pub(super) data_ready: bool,
    /// smux: a NOP is due.
    pub(super) nop_due: bool,
    /// yamux: our keepalive ping awaiting its reply (`Timer::PingTimeout` runs).
    pub(super) ping: Option<u32>,
}

impl KeepAlive {
    /// A client sends its first keepalive at once: a server detecting the protocol
    /// ([`Protocol::Auto`](crate::Protocol::Auto)) drops connections that stay silent.
    pub(super) fn start(
        config: &Config,
        side: Side,
        yamux: bool,
        now: Instant,
        timers: &mut TimerTable,
    ) -> Option<KeepAlive> {
        if config.keep_alive_disabled {
            return None;
        }
        let first = match side {
            Side::Client => now,
            Side::Server => now + config.keep_alive_interval,
        };
        timers.set(Timer::KeepAlive, first);
        if !yamux {
            timers.set(Timer::KeepAliveCheck, now + config.keep_alive_timeout);
        }
        Some(KeepAlive {
            data_ready: false,
            nop_due: false,
            ping: None,
        })
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
        // Armed only while closing (and kept once closed).
        if self.timers.expired(Timer::Close, now) {
            self.fail(ConnectionError::LocallyClosed);
            return;
        }
        if self.timers.expired(Timer::Detect, now) {
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
        if self.timers.expired(Timer::KeepAlive, now) {
            ka.nop_due = true;
            self.timers.set(Timer::KeepAlive, now + interval);
        }
        if self.timers.expired(Timer::KeepAliveCheck, now) {
            // Go never times out while reading is paused on purpose.
            if !ka.data_ready && !paused {
                self.fail(ConnectionError::KeepAliveTimeout(timeout));
                return;
            }
            ka.data_ready = false;
            self.timers.set(Timer::KeepAliveCheck, now + timeout);
        }
    }

    fn yamux_keep_alive(&mut self, now: Instant) {
        let paused = self.reading_paused();
        let interval = self.config.keep_alive_interval;
        let timeout = self.config.keep_alive_timeout;
        let Some(ka) = self.keep_alive.as_mut() else {
            return;
        };
        // Armed exactly while `ka.ping` is set.
        if self.timers.expired(Timer::PingTimeout, now) {
            if !paused {
                self.fail(ConnectionError::KeepAliveTimeout(timeout));
                return;
            }
            // We cannot read the reply while reading is paused: wait longer.
            self.timers.set(Timer::PingTimeout, now + timeout);
        }
        if self.timers.expired(Timer::KeepAlive, now) {
            self.timers.set(Timer::KeepAlive, now + interval);
            // While reading is paused the reply to an earlier ping cannot be read, so keep
            // pinging: the writes are what notice a dead peer then.
            if ka.ping.is_none() || paused {
                let value = self.queue_ping(now, true);
                if let Some(ka) = self.keep_alive.as_mut() {
                    ka.ping = Some(value);
                }
                self.timers.set(Timer::PingTimeout, now + timeout);
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

    /// When [`Session::handle_timeout`] must be called next: the earliest of the
    /// session's timers and the streams'.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let streams = self.stream_timers.peek().map(|t| t.at);
        [self.timers.next_timeout(), streams]
            .into_iter()
            .flatten()
            .min()
    }
}
