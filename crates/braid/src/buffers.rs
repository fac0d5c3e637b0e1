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

use bytes::BytesMut;
use std::collections::VecDeque;

/// Retired buffers kept: enough to cover a spent smux receive budget (4 MiB) in 256 KiB
/// reads. Ones still in use cost nothing extra (their payloads hold them anyway).
const MAX_RETIRED: usize = 20;
/// Retired buffers kept that no payload holds any more: the memory an idle session keeps.
const MAX_SPARE: usize = 2;

#[derive(Default)]
pub(crate) struct ReadBuffers {
    retired: VecDeque<BytesMut>,
}

impl ReadBuffers {
    /// Gives `current` room for `need` bytes past what it holds (a partial frame): in
    /// place if its payloads have all been read, else in the oldest retired buffer that
    /// is free again, else in a new one; the buffer it leaves is retired.
    pub(crate) fn renew(&mut self, current: &mut BytesMut, need: usize) {
        // `try_reclaim` counts room past the bytes held; a retired buffer holds none, and
        // the partial frame is copied into it.
        let held = current.len();
        if current.try_reclaim(need) {
            return;
        }
        let mut spare = 0;
        let mut found = None;
        let mut i = 0;
        while i < self.retired.len() {
            if self.retired[i].try_reclaim(held + need) {
                if found.is_none() {
                    found = self.retired.remove(i);
                    continue;
                }
                spare += 1;
                if spare > MAX_SPARE {
                    self.retired.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        let mut next = found.unwrap_or_else(|| BytesMut::with_capacity(held + need));
        next.extend_from_slice(current);
        let mut old = std::mem::replace(current, next);
        old.clear();
        self.retired.push_back(old);
        if self.retired.len() > MAX_RETIRED {
            self.retired.pop_front();
        }
    }
}
