//! The buffers the tunnel reads TCP into, shared by all its connections.
//!
//! A read becomes a chunk cut from its buffer and handed to the session as it is, so a
//! buffer stays allocated until the session has sent every chunk cut from it. Each
//! connection used to keep its own buffer: an idle connection then held up to
//! `READ_BUF` after a burst, and a connection whose buffer was still being sent took a
//! fresh one, which glibc had often just given back to the kernel: with 8 connections a
//! tenth of the bytes went through freshly faulted pages. Here a connection takes a
//! buffer only while it has input, and gives it back when the socket runs dry: idle
//! connections hold none, and buffers whose chunks have all been sent are reused warm.

use bytes::BytesMut;
use std::sync::Mutex;

/// Size of a read buffer: large reads halve the tunnel's CPU per byte against 64 KiB
/// ones (fewer system calls and frames); see BENCHMARKS.md.
pub(crate) const READ_BUF: usize = 256 * 1024;
/// A buffer with less room than this left is not read into: small reads would pin it.
pub(crate) const MIN_READ: usize = 16 * 1024;
/// Buffers kept for reuse: bounds what the pool holds (16 MiB).
const KEEP: usize = 64;

/// Read buffers given back by connections, for any connection to take.
#[derive(Debug, Default)]
pub(crate) struct ReadBufs {
    spare: Mutex<Vec<BytesMut>>,
}

/// The process's pool.
pub(crate) static READ_BUFS: ReadBufs = ReadBufs::new();

impl ReadBufs {
    pub(crate) const fn new() -> ReadBufs {
        ReadBufs {
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A buffer with at least `MIN_READ` of room: a spare one if one has room or all its
    /// chunks have been sent (the most recently given back first: warm in cache), else
    /// a new one.
    pub(crate) fn take(&self) -> BytesMut {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let usable = spare
            .iter_mut()
            .rposition(|b| b.capacity() >= MIN_READ || b.try_reclaim(READ_BUF));
        match usable {
            Some(i) => spare.swap_remove(i),
            None => BytesMut::with_capacity(READ_BUF),
        }
    }

    /// Gives back `buf`, a buffer from [`take`](Self::take), empty (what was read into it
    /// was cut off as chunks) and perhaps with no room left. Dropped if the pool is full.
    pub(crate) fn give(&self, buf: BytesMut) {
        debug_assert!(buf.is_empty());
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < KEEP {
            spare.push(buf);
        }
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spare.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_once_its_chunks_are_gone() {
        let pool = ReadBufs::new();
        let mut buf = pool.take();
        let at = buf.as_ptr();
        buf.resize(READ_BUF - MIN_READ / 2, 1);
        let chunk = buf.split().freeze();
        pool.give(buf);
        // Too little room left and a chunk still alive: a new buffer.
        let other = pool.take();
        assert_ne!(other.as_ptr(), at);
        assert_eq!(pool.len(), 1);
        drop(chunk);
        // All chunks gone: the old allocation, whole again.
        let again = pool.take();
        assert_eq!(again.as_ptr(), at);
        assert!(again.capacity() >= READ_BUF);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_buffer_read_full_is_reused_too() {
        let pool = ReadBufs::new();
        let mut buf = pool.take();
        let at = buf.as_ptr();
        buf.resize(buf.capacity(), 1);
        let chunk = buf.split().freeze();
        assert_eq!(buf.capacity(), 0);
        pool.give(buf);
        drop(chunk);
        assert_eq!(pool.take().as_ptr(), at);
    }

    #[test]
    fn a_buffer_with_room_left_is_taken_as_it_is() {
        let pool = ReadBufs::new();
        let mut buf = pool.take();
        buf.resize(1000, 1);
        let _chunk = buf.split().freeze();
        let at = buf.as_ptr();
        pool.give(buf);
        assert_eq!(pool.take().as_ptr(), at);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number() {
        let pool = ReadBufs::new();
        for _ in 0..KEEP + 10 {
            pool.give(BytesMut::with_capacity(READ_BUF));
        }
        assert_eq!(pool.len(), KEEP);
    }
}
