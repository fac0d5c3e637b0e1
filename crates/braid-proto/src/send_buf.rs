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

/// Blocks kept per session for reuse: at most this many of each pooled size (2 MiB of
/// 64 KiB blocks, 16 KiB of the smallest).
const POOL_MAX: usize = 32;
/// Blocks looked at per allocation, oldest first.
const POOL_PROBE: usize = 4;

/// The session's spent send blocks, reused once the frames cut from them are written:
/// a freed block went back to the allocator, which handed the kernel its pages, and the
/// next block faulted them in again (16 streams: a fifth of the CPU in page faults).
/// Smallest blocks are kept too: a stream sending message after message took a fresh
/// one for every message.
#[derive(Debug, Default)]
pub(crate) struct BlockPool {
    blocks: VecDeque<BytesMut>,
    small: VecDeque<BytesMut>,
}

impl BlockPool {
    /// The pool for blocks of `size`: only full-size and smallest blocks are pooled;
    /// others are the allocator's business.
    fn list(&mut self, size: usize) -> Option<&mut VecDeque<BytesMut>> {
        match size {
            MAX_BLOCK => Some(&mut self.blocks),
            MIN_BLOCK => Some(&mut self.small),
            _ => None,
        }
    }

    /// A block with room for `size` bytes: a pooled one that is free again, or a new one.
    fn get(&mut self, size: usize) -> BytesMut {
        if let Some(blocks) = self.list(size) {
            for _ in 0..blocks.len().min(POOL_PROBE) {
                let mut b = blocks.pop_front().expect("counted");
                // True only if the room is this handle's alone (frames written, or room
                // past them), so writing into it is safe.
                if b.try_reclaim(size) {
                    return b;
                }
                blocks.push_back(b);
            }
        }
        BytesMut::with_capacity(size)
    }

    /// Keeps a spent block of `size` (the empty handle left after its bytes were split
    /// off).
    fn put(&mut self, b: BytesMut, size: usize) {
        if let Some(blocks) = self.list(size).filter(|l| l.len() < POOL_MAX) {
            blocks.push_back(b);
        }
    }
}

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

    pub(crate) fn extend_from_slice(&mut self, mut data: &[u8], pool: &mut BlockPool) {
        self.len += data.len();
        while !data.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                self.seal_tail(pool);
                // As large as the data (up to a block), and twice the last while that
                // is no more than the stream has queued: a run of small writes gets
                // fewer, larger blocks, but a write cut short by the session's budget
                // does not get a whole block (1000 streams each holding a mostly empty
                // 64 KiB block were most of the process's memory).
                let max = MAX_BLOCK.max(self.frame_size);
                let grown = (2 * self.block).min(self.len);
                self.block = data.len().max(grown).clamp(MIN_BLOCK, max);
                self.tail = pool.get(self.block);
                continue;
            }
            let k = room.min(data.len());
            self.tail.extend_from_slice(&data[..k]);
            data = &data[k..];
        }
    }

    /// Queues the current block as it is; later bytes go to a new one.
    fn seal_tail(&mut self, pool: &mut BlockPool) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
            pool.put(std::mem::take(&mut self.tail), self.block);
        }
    }

    pub(crate) fn push_chunk(&mut self, data: Bytes, pool: &mut BlockPool) {
        if data.len() < COPY_CHUNKS_BELOW {
            return self.extend_from_slice(&data, pool);
        }
        self.seal_tail(pool);
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Takes up to `max` (> 0) bytes from the front, without copying: less when the
    /// front chunk is shorter.
    pub(crate) fn take(&mut self, max: usize, pool: &mut BlockPool) -> Bytes {
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
                    pool.put(std::mem::take(&mut self.tail), self.block);
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
        let pool = &mut BlockPool::default();
        b.extend_from_slice(&data[..1000], pool);
        b.extend_from_slice(&data[1000..], pool);
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        while !b.is_empty() {
            let c = b.take(100_000, pool);
            sizes.push(c.len());
            out.extend_from_slice(&c);
        }
        assert_eq!(out, data);
        // The first block fits the first write; then full blocks, then the rest.
        assert_eq!(sizes, [1000, 65536, 65536, 65536, 65536, 36856]);
        assert_eq!(b.capacity(), 0, "the drained block is given back");
    }

    #[test]
    fn a_short_write_after_full_blocks_gets_a_small_block() {
        let mut b = SendBuf::default();
        let pool = &mut BlockPool::default();
        b.extend_from_slice(&[1u8; 2 * MAX_BLOCK], pool);
        assert_eq!(b.capacity(), MAX_BLOCK);
        // Frame all but 100 bytes: the full tail block has no room left.
        b.take(MAX_BLOCK, pool);
        b.take(MAX_BLOCK - 100, pool);
        // A write the session's budget cut to 1000 bytes: the stream has 1100 bytes
        // queued, so its block is that small, not another 64 KiB.
        b.extend_from_slice(&[2u8; 1000], pool);
        assert!(b.capacity() < 2048, "block of {} bytes", b.capacity());
        let mut out = b.take(MAX_BLOCK, pool).to_vec();
        out.extend_from_slice(&b.take(MAX_BLOCK, pool));
        assert_eq!(out, [[1u8; 100].as_slice(), &[2u8; 1000]].concat());
    }

    #[test]
    fn blocks_hold_a_whole_frame_when_frames_are_larger() {
        let mut b = SendBuf::default();
        let pool = &mut BlockPool::default();
        b.set_frame_size(1 << 20);
        b.extend_from_slice(&vec![1u8; 3 << 20], pool);
        assert_eq!(b.take(1 << 20, pool).len(), 1 << 20);
    }

    #[test]
    fn blocks_are_reused_once_their_frames_are_gone() {
        let mut b = SendBuf::default();
        let pool = &mut BlockPool::default();
        b.extend_from_slice(&[7u8; 65536], pool);
        let frame = b.take(65536, pool);
        let first = frame.as_ptr();
        // The frame is still held (being written): a new block is needed.
        b.extend_from_slice(&[8u8; 65536], pool);
        let second = b.take(65536, pool);
        assert_ne!(second.as_ptr(), first);
        assert_eq!(
            &frame[..],
            &[7u8; 65536][..],
            "a frame in flight is never overwritten"
        );
        drop(frame);
        // Written: its block is taken again.
        b.extend_from_slice(&[9u8; 65536], pool);
        let third = b.take(65536, pool);
        assert_eq!(third.as_ptr(), first);
        assert_eq!(&third[..], &[9u8; 65536][..]);
        assert_eq!(&second[..], &[8u8; 65536][..]);
    }
}
