//! A stream's received data, kept so that its memory follows its bytes, not its frames.
//!
//! Large payloads stay where the driver read them (a zero-copy slice of its read buffer);
//! small ones are copied together into blocks per stream. A peer sending a million 1-byte
//! frames thus costs a million bytes, not a million allocations.
//!
//! A slice keeps the driver's whole read buffer alive until it is read. The session counts
//! which read buffers its slices pin ([`Pins`]) and copies a payload instead of slicing it
//! when the pinned buffers would outgrow the receive budget: a peer cannot make a few
//! unread bytes hold many buffers whose other frames were read long ago.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};

/// The first coalescing block; each next one is twice as large, up to [`MAX_BLOCK`].
const MIN_BLOCK: usize = 64;
/// The largest coalescing block.
const MAX_BLOCK: usize = 64 * 1024;
/// Blocks up to this size stay with a drained buffer.
const KEEP_BLOCK: usize = 256;

/// One piece of received data.
#[derive(Debug)]
struct Chunk {
    data: Bytes,
    /// The read buffer this slice pins, if it is one.
    pin: Option<u64>,
}

/// A stream's unread data in arrival order.
///
/// Small payloads are appended to a block; a full block joins the queue as it is and a
/// new, larger one (up to [`MAX_BLOCK`]) takes its place. Nothing is reallocated or
/// copied twice, so the heap behind a flood of tiny frames stays close to its bytes: at
/// most one partly used block per stream beyond them.
#[derive(Debug, Default)]
pub(crate) struct RecvBuf {
    chunks: VecDeque<Chunk>,
    /// The block small payloads are appended to; logically after `chunks`.
    tail: BytesMut,
    /// The size of the last block allocated, for the next one's.
    block: usize,
    len: usize,
}

impl RecvBuf {
    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends received data: small payloads are copied, large ones kept as slices of
    /// the read buffer unless `pins` says the buffers they hold are too many.
    pub(crate) fn push(&mut self, data: Bytes, pins: &mut Pins) {
        self.len += data.len();
        if data.len() < crate::frame::COPY_BELOW {
            self.push_small(&data);
            return;
        }
        self.seal_tail();
        let pin = pins.pin_current();
        let data = match pin {
            Some(_) => data,
            None => Bytes::copy_from_slice(&data),
        };
        self.chunks.push_back(Chunk { data, pin });
    }

    fn push_small(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                self.seal_tail();
                self.block = (self.block * 2).clamp(MIN_BLOCK, MAX_BLOCK);
                self.tail = BytesMut::with_capacity(self.block);
                continue;
            }
            let k = room.min(data.len());
            self.tail.extend_from_slice(&data[..k]);
            data = &data[k..];
        }
    }

    /// Queues the current block as it is (later data goes to a new one).
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let data = std::mem::take(&mut self.tail).freeze();
            self.chunks.push_back(Chunk { data, pin: None });
        }
    }

    /// After reads: a drained buffer gives its block back and starts small again. A
    /// small block is kept for the next small message, if nothing read still refers to
    /// it (a stream receiving message after message took a fresh one for each).
    fn after_read(&mut self) {
        if self.tail.is_empty() {
            if !(self.block <= KEEP_BLOCK && self.tail.try_reclaim(self.block)) {
                self.tail = BytesMut::new();
            }
            if self.chunks.is_empty() {
                self.block = 0;
            }
        }
    }

    /// Copies data into `buf`; returns the count.
    pub(crate) fn read_into(&mut self, buf: &mut [u8], pins: &mut Pins) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let k = front.data.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&front.data[..k]);
            front.data.advance(k);
            if front.data.is_empty() {
                let chunk = self.chunks.pop_front().expect("front exists");
                pins.unpin(chunk.pin);
            }
            n += k;
        }
        if n < buf.len() && !self.tail.is_empty() {
            let k = self.tail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&self.tail[..k]);
            self.tail.advance(k);
            n += k;
        }
        self.len -= n;
        self.after_read();
        n
    }

    /// Takes up to `max` (> 0) bytes without copying them.
    pub(crate) fn read_chunk(&mut self, max: usize, pins: &mut Pins) -> Option<Bytes> {
        let chunk = if let Some(front) = self.chunks.front_mut() {
            if front.data.len() <= max {
                let chunk = self.chunks.pop_front().expect("front exists");
                pins.unpin(chunk.pin);
                chunk.data
            } else {
                front.data.split_to(max)
            }
        } else if !self.tail.is_empty() {
            let k = self.tail.len().min(max);
            self.tail.split_to(k).freeze()
        } else {
            return None;
        };
        self.len -= chunk.len();
        self.after_read();
        Some(chunk)
    }

    /// Drops all data; returns how many bytes were dropped.
    pub(crate) fn clear(&mut self, pins: &mut Pins) -> usize {
        for chunk in self.chunks.drain(..) {
            pins.unpin(chunk.pin);
        }
        self.tail = BytesMut::new();
        self.block = 0;
        std::mem::take(&mut self.len)
    }
}

/// Read buffers allowed beyond the budget before payloads are copied instead of sliced.
const PIN_SLACK: usize = 8;

/// The driver's read buffers that received slices keep alive, with their sizes.
///
/// A driver that reads into buffers and hands them to
/// [`Session::handle_input`](crate::Session::handle_input) announces each new buffer with
/// [`Session::note_input_buffer`](crate::Session::note_input_buffer); slices of it then
/// count its whole size until the last of them is read. Without announcements every
/// large payload is kept as a slice.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    /// The buffer input comes from now, and its size; `None` before any announcement.
    current: Option<(u64, usize)>,
    /// Buffers pinned by at least one slice: size and slice count.
    pinned: HashMap<u64, (usize, usize)>,
    /// Sum of the pinned buffers' sizes.
    bytes: usize,
    /// The most the pinned buffers may add up to (the receive budget).
    limit: usize,
    next_id: u64,
}

impl Pins {
    pub(crate) fn new(limit: usize) -> Pins {
        Pins {
            limit,
            ..Pins::default()
        }
    }

    /// Input now comes from a new buffer of `size` bytes.
    pub(crate) fn new_buffer(&mut self, size: usize) {
        self.next_id += 1;
        self.current = Some((self.next_id, size));
    }

    /// Registers a slice of the current buffer; `None` when it must be copied instead.
    fn pin_current(&mut self) -> Option<u64> {
        let Some((id, size)) = self.current else {
            return Some(0); // no announcements: nothing is tracked
        };
        if let Some(entry) = self.pinned.get_mut(&id) {
            entry.1 += 1;
            return Some(id);
        }
        // Slack of a few buffers: a bulk transfer into a slow reader pins its unread
        // bytes rounded up to whole buffers (plus the one being filled), and copying its
        // payloads for that cost a smux v1 stream a third of its CPU per byte.
        if self.bytes + size > self.limit + PIN_SLACK * size {
            return None;
        }
        self.bytes += size;
        self.pinned.insert(id, (size, 1));
        Some(id)
    }

    fn unpin(&mut self, pin: Option<u64>) {
        let Some(id) = pin else {
            return;
        };
        if let Some(entry) = self.pinned.get_mut(&id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.bytes -= entry.0;
                self.pinned.remove(&id);
            }
        }
    }
}
