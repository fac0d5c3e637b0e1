//! A stream's written data waiting to be framed: bytes copied from `write` slices, and
//! `Bytes` handed over by `write_chunk`, which are framed as they are, without a copy.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Chunks shorter than this are copied, so that tiny chunks do not become tiny frames.
const COPY_CHUNKS_BELOW: usize = 4096;
/// Copied bytes go into blocks of at most this size (a yamux frame, two smux frames; or
/// one frame, when the configured frames are larger), never into a buffer that grows: growing reallocated and copied the bytes still
/// queued, and the allocator's heap filled with freed buffers of every size (at 1000
/// writing streams, most of the process's peak RSS was such free memory).
const MAX_BLOCK: usize = 64 * 1024;
/// The smallest block: a run of small writes starts small and doubles.
const MIN_BLOCK: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct SendBuf {
    /// Chunks taken as they are, in order, before `tail`.
    chunks: VecDeque<Bytes>,
    /// Copied bytes, in a block of fixed capacity; logically after `chunks`.
    tail: BytesMut,
    /// The capacity of the last block, for the next one's.
    block: usize,
    /// The largest frame: a block is never smaller, so that frames are not cut short.
    frame_size: usize,
    len: usize,
}

impl SendBuf {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The copy buffer's capacity (tests: drained buffers are given back).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Sets the largest frame the bytes are sent in.
    pub(crate) fn set_frame_size(&mut self, frame_size: usize) {
        self.frame_size = frame_size;
    }

    pub(crate) fn extend_from_slice(&mut self, mut data: &[u8]) {
        self.len += data.len();
        while !data.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                self.seal_tail();
                // As large as the data (up to a block), and at least twice the last.
                let max = MAX_BLOCK.max(self.frame_size);
                self.block = data.len().max(2 * self.block).clamp(MIN_BLOCK, max);
                self.tail = BytesMut::with_capacity(self.block);
                continue;
            }
            let k = room.min(data.len());
            self.tail.extend_from_slice(&data[..k]);
            data = &data[k..];
        }
    }

    /// Queues the current block as it is; later bytes go to a new one.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks
                .push_back(std::mem::take(&mut self.tail).freeze());
        }
    }

    pub(crate) fn push_chunk(&mut self, data: Bytes) {
        if data.len() < COPY_CHUNKS_BELOW {
            return self.extend_from_slice(&data);
        }
        self.seal_tail();
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Takes up to `max` (> 0) bytes from the front, without copying: less when the
    /// front chunk is shorter.
    pub(crate) fn take(&mut self, max: usize) -> Bytes {
        let out = match self.chunks.front_mut() {
            Some(front) if front.len() <= max => self.chunks.pop_front().expect("front exists"),
            Some(front) => front.split_to(max),
            None => {
                let n = max.min(self.tail.len());
                let out = self.tail.split_to(n).freeze();
                if self.tail.is_empty() {
                    // Give the buffer back (once the frames are written): the send
                    // budget bounds the bytes buffered, not the allocations, and 1000
                    // streams each keeping a drained 256 KiB buffer held 280 MiB.
                    self.tail = BytesMut::new();
                    if self.chunks.is_empty() {
                        self.block = 0;
                    }
                }
                out
            }
        };
        self.len -= out.len();
        out
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.tail = BytesMut::new();
        self.block = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_bytes_go_into_fixed_blocks_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut b = SendBuf::default();
        b.extend_from_slice(&data[..1000]);
        b.extend_from_slice(&data[1000..]);
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        while !b.is_empty() {
            let c = b.take(100_000);
            sizes.push(c.len());
            out.extend_from_slice(&c);
        }
        assert_eq!(out, data);
        // The first block fits the first write; then full blocks, then the rest.
        assert_eq!(sizes, [1000, 65536, 65536, 65536, 65536, 36856]);
        assert_eq!(b.capacity(), 0, "the drained block is given back");
    }

    #[test]
    fn blocks_hold_a_whole_frame_when_frames_are_larger() {
        let mut b = SendBuf::default();
        b.set_frame_size(1 << 20);
        b.extend_from_slice(&vec![1u8; 3 << 20]);
        assert_eq!(b.take(1 << 20).len(), 1 << 20);
    }
}
