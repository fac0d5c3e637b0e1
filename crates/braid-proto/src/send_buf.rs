//! A stream's written data waiting to be framed: bytes copied from `write` slices, and
//! `Bytes` handed over by `write_chunk`, which are framed as they are, without a copy.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Chunks shorter than this are copied, so that tiny chunks do not become tiny frames.
const COPY_CHUNKS_BELOW: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct SendBuf {
    /// Chunks taken as they are, in order, before `tail`.
    chunks: VecDeque<Bytes>,
    /// Copied bytes; logically after `chunks`.
    tail: BytesMut,
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

    pub(crate) fn extend_from_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    pub(crate) fn push_chunk(&mut self, data: Bytes) {
        if data.len() < COPY_CHUNKS_BELOW {
            return self.extend_from_slice(&data);
        }
        if !self.tail.is_empty() {
            self.chunks
                .push_back(std::mem::take(&mut self.tail).freeze());
        }
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
        self.len = 0;
    }
}
