//! Read buffers reused rather than allocated afresh.
//!
//! Received payloads are slices of the buffer they were read into, so a buffer stays
//! allocated until its payloads have been read. When a protocol lets much data be in
//! flight (smux v1: the whole 4 MiB receive budget), the driver needs a new buffer every
//! 256 KiB while older ones are still held, and a freshly allocated buffer costs a page
//! fault per 4 KiB when the allocator gets it from the kernel: 100,000 faults per GiB on
//! one smux stream, against 3,000 for yamux, whose window lets the one buffer be reclaimed
//! in place. Keeping the retired buffers and taking back the first one whose payloads have
//! all been read turns that into reuse.
//!
//! Free buffers are kept while data flows, not only a couple of them: a smux reader that
//! catches up frees every buffer at once, and the sender's next burst of a whole budget
//! needed as many again. Dropping all but two there cost a smux v1 stream 32,000 page
//! faults per GiB (the allocator gives freed memory back to the kernel). A session that
//! has not needed a new buffer for [`IDLE_TRIM`] keeps only [`MAX_SPARE`].

use bytes::BytesMut;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Retired buffers kept: enough to cover a spent smux receive budget (4 MiB) in 320 KiB
/// buffers plus the pin slack (8). Ones still in use cost nothing extra (their payloads
/// hold them anyway).
const MAX_RETIRED: usize = 24;
/// Free retired buffers an idle session keeps.
const MAX_SPARE: usize = 2;
/// A session that renewed no buffer for this long is idle: its spares beyond
/// [`MAX_SPARE`] are freed.
pub(crate) const IDLE_TRIM: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct ReadBuffers {
    retired: VecDeque<BytesMut>,
    /// The last renewal, while more than [`MAX_SPARE`] buffers may be free.
    busy_since: Option<Instant>,
    /// The room the last renewal asked for.
    last_need: usize,
}

impl ReadBuffers {
    /// Gives `current` room for `need` bytes past what it holds (a partial frame): in
    /// place if its payloads have all been read, else in the oldest retired buffer that
    /// is free again, else in a new one; the buffer it leaves is retired.
    pub(crate) fn renew(&mut self, current: &mut BytesMut, need: usize, now: Instant) {
        // `try_reclaim` counts room past the bytes held; a retired buffer holds none, and
        // the partial frame is copied into it.
        let held = current.len();
        if current.try_reclaim(need) {
            return;
        }
        if self.retired.len() >= MAX_SPARE {
            self.busy_since = Some(now);
        }
        self.last_need = held + need;
        let found = (0..self.retired.len())
            .find(|&i| self.retired[i].try_reclaim(held + need))
            .and_then(|i| self.retired.remove(i));
        let mut next = found.unwrap_or_else(|| BytesMut::with_capacity(held + need));
        next.extend_from_slice(current);
        let mut old = std::mem::replace(current, next);
        old.clear();
        self.retired.push_back(old);
        if self.retired.len() > MAX_RETIRED {
            self.retired.pop_front();
        }
    }

    /// Frees the spares beyond [`MAX_SPARE`] once no buffer was renewed for
    /// [`IDLE_TRIM`].
    pub(crate) fn trim_if_idle(&mut self, now: Instant) {
        let Some(t) = self.busy_since else { return };
        if now.saturating_duration_since(t) < IDLE_TRIM {
            return;
        }
        self.busy_since = None;
        // Kept: up to MAX_SPARE buffers that are free again. Dropping one that payloads
        // still hold is harmless: they free it when read, it is just not reused.
        let need = self.last_need;
        let mut kept = 0;
        self.retired.retain_mut(|b| {
            let keep = kept < MAX_SPARE && b.try_reclaim(need);
            kept += keep as usize;
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_buffers_are_kept_while_busy_and_trimmed_once_idle() {
        let t0 = Instant::now();
        let mut rb = ReadBuffers::default();
        let mut current = BytesMut::with_capacity(4096);
        let mut payloads = Vec::new();
        for _ in 0..10 {
            current.extend_from_slice(&[7u8; 4096]);
            // A payload still holds every buffer: each renewal needs another one.
            payloads.push(current.split().freeze());
            rb.renew(&mut current, 4096, t0);
        }
        assert_eq!(rb.retired.len(), 10);
        drop(payloads);
        // The reader caught up: the next renewal reuses a retired buffer.
        current.extend_from_slice(&[8u8; 4096]);
        let held = current.split().freeze();
        rb.renew(&mut current, 4096, t0);
        assert_eq!(rb.retired.len(), 10, "one reused, the current one retired");
        rb.trim_if_idle(t0 + IDLE_TRIM / 2);
        assert_eq!(rb.retired.len(), 10, "kept while data flows");
        rb.trim_if_idle(t0 + 2 * IDLE_TRIM);
        assert_eq!(
            rb.retired.len(),
            MAX_SPARE,
            "an idle session keeps only spares"
        );
        assert_eq!(&held[..], &[8u8; 4096][..]);
    }
}
