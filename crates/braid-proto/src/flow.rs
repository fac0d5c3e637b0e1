//! Flow control: the session receive budget (Go smux's token bucket), the smux v2
//! per-stream windows and yamux's per-stream receive windows, with
//! the same arithmetic as the Go libraries so that both ends agree.

use std::time::{Duration, Instant};

/// The peer's window before its first UPD: Go's `initialPeerWindow`, which is larger
/// than the default `MaxStreamBuffer` (65536).
pub const INITIAL_PEER_WINDOW: u32 = 262_144;

/// Session-wide receive budget. Received stream data spends it, the application's reads
/// (and discarded data of closed streams) refill it. While it is spent (<= 0) the session
/// reads no more frames, exactly as Go's recvLoop waits on its bucket. It can go negative
/// by at most one frame, because a frame is accepted whole.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveBudget {
    tokens: i64,
}

impl ReceiveBudget {
    pub(crate) fn new(max: usize) -> ReceiveBudget {
        ReceiveBudget { tokens: max as i64 }
    }

    pub(crate) fn spend(&mut self, n: usize) {
        self.tokens -= n as i64;
    }

    pub(crate) fn refund(&mut self, n: usize) {
        self.tokens += n as i64;
    }

    pub(crate) fn is_spent(&self) -> bool {
        self.tokens <= 0
    }

    pub(crate) fn tokens(&self) -> i64 {
        self.tokens
    }
}

/// Send side of a v2 stream: how much the peer lets us have in flight.
#[derive(Debug, Clone)]
pub(crate) struct SendWindow {
    /// Bytes sent on the stream, modulo 2^32 (Go's `numWritten`).
    written: u32,
    /// The peer's last reported `consumed`.
    peer_consumed: u32,
    /// The peer's last reported window.
    peer_window: u32,
}

/// The peer reported more bytes consumed than were sent (Go's `ErrConsumed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overconsumed {
    pub(crate) written: u32,
    pub(crate) consumed: u32,
}

impl SendWindow {
    pub(crate) fn new() -> SendWindow {
        SendWindow {
            written: 0,
            peer_consumed: 0,
            peer_window: INITIAL_PEER_WINDOW,
        }
    }

    /// Bytes that may be sent now. Go computes `inflight = int32(written - consumed)`
    /// and `win = int32(window) - inflight` in wrapping 32-bit arithmetic; so do we.
    pub(crate) fn credit(&self) -> Result<usize, Overconsumed> {
        let inflight = self.written.wrapping_sub(self.peer_consumed) as i32;
        if inflight < 0 {
            return Err(Overconsumed {
                written: self.written,
                consumed: self.peer_consumed,
            });
        }
        let win = (self.peer_window as i32).wrapping_sub(inflight);
        Ok(win.max(0) as usize)
    }

    pub(crate) fn on_sent(&mut self, n: usize) {
        self.written = self.written.wrapping_add(n as u32);
    }

    pub(crate) fn on_update(&mut self, consumed: u32, window: u32) {
        self.peer_consumed = consumed;
        self.peer_window = window;
    }
}

/// Receive side of a v2 stream: when to tell the peer how much we consumed.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecvWindow {
    /// Bytes the application has read, modulo 2^32 (Go's `numRead`).
    num_read: u32,
    /// Bytes read since the last update (Go's `incr`).
    incr: u32,
}

impl RecvWindow {
    /// Records an application read of `n > 0` bytes. Returns true when an UPD is due:
    /// after the first read, and whenever half the window has been consumed since the
    /// last one (Go's `tryReadv2`).
    pub(crate) fn on_read(&mut self, n: usize, window: usize) -> bool {
        let n = n as u32;
        self.num_read = self.num_read.wrapping_add(n);
        self.incr = self.incr.wrapping_add(n);
        if self.incr >= (window / 2) as u32 || self.num_read == n {
            self.incr = 0;
            return true;
        }
        false
    }

    /// The value for an UPD's `consumed` field.
    pub(crate) fn consumed(&self) -> u32 {
        self.num_read
    }
}

/// yamux's initial window in each direction, whatever the configuration: a larger
/// window is announced by the delta on SYN/ACK.
pub const YAMUX_INITIAL_WINDOW: u32 = 256 * 1024;

/// Receive side of a yamux stream (Go's `recvWindow` and `sendWindowUpdate`).
#[derive(Debug, Clone)]
pub(crate) struct YamuxRecvWindow {
    /// Bytes the peer may still send before our next update.
    window: u32,
    /// The window we aim to offer: `max_stream_buffer`, or more once auto-tuning grew it.
    pub(crate) max: u32,
    /// When the last update went out (auto-tuning).
    last_update: Option<Instant>,
}

impl YamuxRecvWindow {
    pub(crate) fn new(max: usize) -> YamuxRecvWindow {
        YamuxRecvWindow {
            window: YAMUX_INITIAL_WINDOW,
            max: max as u32,
            last_update: None,
        }
    }

    /// Accounts for a received data frame; false if it overruns the window (Go's
    /// `ErrRecvWindowExceeded`).
    pub(crate) fn on_data(&mut self, n: usize) -> bool {
        match u32::try_from(n)
            .ok()
            .and_then(|n| self.window.checked_sub(n))
        {
            Some(w) => {
                self.window = w;
                true
            }
            None => false,
        }
    }

    /// Bytes the peer may still send.
    pub(crate) fn remaining(&self) -> u32 {
        self.window
    }

    /// The delta Go would announce now: `(max - buffered) - window`.
    pub(crate) fn delta(&self, buffered: usize) -> u32 {
        ((self.max as usize).saturating_sub(buffered) as u64).saturating_sub(self.window as u64)
            as u32
    }

    /// Whether an update is worth sending after a read: at least half the window.
    pub(crate) fn update_due(&self, buffered: usize) -> bool {
        self.delta(buffered) >= self.max / 2
    }

    /// Records that `delta` was announced.
    pub(crate) fn on_update_sent(&mut self, delta: u32) {
        self.window = self.window.saturating_add(delta);
    }
}

/// Receive-window auto-tuning (yamux, off by default): a stream whose window updates
/// follow each other faster than two round trips is limited by its window, not by its
/// reader, so its window doubles, up to `cap`, while all streams' growth together stays
/// within `limit` bytes.
#[derive(Debug)]
pub(crate) struct WindowTuner {
    /// The latest measured round trip.
    pub(crate) rtt: Option<Duration>,
    /// The ping sent to measure it, not reported to the application.
    pub(crate) probe: Option<u32>,
    base: u32,
    cap: u32,
    limit: usize,
    /// Bytes of window granted beyond `base`, all streams.
    granted: usize,
}

impl WindowTuner {
    pub(crate) fn new(base: usize, cap: usize, limit: usize) -> WindowTuner {
        WindowTuner {
            rtt: None,
            probe: None,
            base: base as u32,
            cap: cap as u32,
            limit,
            granted: 0,
        }
    }

    /// Called as a window update is about to be sent at `now`.
    pub(crate) fn on_update(&mut self, w: &mut YamuxRecvWindow, now: Instant) {
        if let (Some(rtt), Some(last)) = (self.rtt, w.last_update) {
            if now.saturating_duration_since(last) < 2 * rtt && w.max < self.cap {
                let grown = w.max.saturating_mul(2).min(self.cap);
                let extra = (grown - w.max) as usize;
                if self.granted + extra <= self.limit {
                    self.granted += extra;
                    w.max = grown;
                }
            }
        }
        w.last_update = Some(now);
    }

    /// Gives back a forgotten stream's growth.
    pub(crate) fn release(&mut self, w: &YamuxRecvWindow) {
        self.granted -= (w.max - self.base) as usize;
    }

    #[cfg(test)]
    pub(crate) fn granted(&self) -> usize {
        self.granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_starts_at_go_initial_peer_window() {
        let mut w = SendWindow::new();
        assert_eq!(w.credit(), Ok(262_144));
        w.on_sent(262_000);
        assert_eq!(w.credit(), Ok(144));
        w.on_update(200_000, 65536);
        assert_eq!(w.credit(), Ok(65536 - 62_000));
        w.on_update(262_000, 65536);
        assert_eq!(w.credit(), Ok(65536));
    }

    #[test]
    fn send_window_wraps_like_go() {
        let mut w = SendWindow::new();
        w.on_sent(u32::MAX as usize);
        w.on_update(u32::MAX - 10, 65536);
        w.on_sent(20); // written wraps to 19
        assert_eq!(w.credit(), Ok(65536 - 30));
        w.on_update(15, 65536); // consumed wrapped too
        assert_eq!(w.credit(), Ok(65536 - 4));
    }

    #[test]
    fn overconsumed_is_reported() {
        let mut w = SendWindow::new();
        w.on_sent(10);
        w.on_update(11, 65536);
        assert_eq!(
            w.credit(),
            Err(Overconsumed {
                written: 10,
                consumed: 11
            })
        );
    }

    #[test]
    fn update_on_first_read_then_every_half_window() {
        let mut r = RecvWindow::default();
        assert!(r.on_read(100, 65536), "first read notifies");
        assert!(!r.on_read(32000, 65536));
        assert!(!r.on_read(667, 65536));
        assert!(r.on_read(101, 65536), "incr reached 32768, half of 65536");
        assert_eq!(r.consumed(), 32868);
        assert!(!r.on_read(1, 65536));
    }

    #[test]
    fn yamux_window_update_as_go_computes_it() {
        let mut w = YamuxRecvWindow::new(256 * 1024);
        assert!(w.on_data(200 * 1024));
        // The application read 131072 of the 204800 bytes: 73728 still buffered.
        assert!(w.update_due(73728));
        assert_eq!(w.delta(73728), 131072); // what Go sent in the golden capture
        w.on_update_sent(131072);
        assert!(!w.update_due(73728));
        assert!(!w.on_data(300 * 1024), "overrun");
    }

    #[test]
    fn tuner_doubles_fast_updating_windows_within_the_limit() {
        let base = 256 * 1024;
        let mut t = WindowTuner::new(base, 1 << 20, 1 << 20);
        let t0 = Instant::now();
        let mut a = YamuxRecvWindow::new(base);
        let mut b = YamuxRecvWindow::new(base);
        t.on_update(&mut a, t0); // no RTT yet: nothing grows
        t.rtt = Some(Duration::from_millis(10));
        t.on_update(&mut a, t0 + Duration::from_millis(5));
        assert_eq!(a.max as usize, 2 * base);
        t.on_update(&mut a, t0 + Duration::from_millis(10));
        assert_eq!(a.max, 1 << 20, "capped");
        t.on_update(&mut a, t0 + Duration::from_millis(15));
        assert_eq!(a.max, 1 << 20);
        // Slow updates (reader-limited) do not grow.
        t.on_update(&mut b, t0);
        t.on_update(&mut b, t0 + Duration::from_millis(50));
        assert_eq!(b.max as usize, base);
        // The session limit: a's growth (768 KiB) leaves 256 KiB, b can double once.
        t.on_update(&mut b, t0 + Duration::from_millis(51));
        assert_eq!(b.max as usize, 2 * base);
        assert_eq!(t.granted(), 1 << 20);
        t.on_update(&mut b, t0 + Duration::from_millis(52));
        assert_eq!(b.max as usize, 2 * base, "limit reached");
        t.release(&a);
        t.release(&b);
        assert_eq!(t.granted(), 0);
    }

    #[test]
    fn budget_pauses_at_zero() {
        let mut b = ReceiveBudget::new(10);
        b.spend(9);
        assert!(!b.is_spent());
        b.spend(5);
        assert!(b.is_spent());
        assert_eq!(b.tokens(), -4);
        b.refund(4);
        assert!(b.is_spent());
        b.refund(1);
        assert!(!b.is_spent());
    }
}
