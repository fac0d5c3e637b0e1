//! Per-stream state: receive queue, send buffer, half-close flags and v2 windows.

use crate::flow::{RecvWindow, SendWindow};
use crate::sched::Queued;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;

/// A stream identifier as it appears on the wire. Client-opened streams are odd (3, 5, ...),
/// server-opened even (2, 4, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where our FIN stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fin {
    /// The application may still write.
    Open,
    /// Writing is closed; FIN goes out after the buffered data.
    Pending,
    /// FIN is on the wire (never sent twice).
    Sent,
}

#[derive(Debug)]
pub(crate) struct StreamState {
    // Receive side.
    /// Received data not yet read, in arrival order.
    pub(crate) recv: VecDeque<Bytes>,
    pub(crate) recv_len: usize,
    /// The peer sent FIN: after `recv` drains, reads return end of stream.
    pub(crate) remote_fin: bool,
    pub(crate) recv_window: RecvWindow,
    /// An UPD is due (v2); its `consumed` is taken when it is sent.
    pub(crate) upd_due: bool,
    /// The application found nothing to read; the next arrival raises `Readable`.
    pub(crate) read_waiting: bool,

    // Send side.
    /// Bytes written by the application and not yet framed.
    pub(crate) send: BytesMut,
    pub(crate) send_window: SendWindow,
    /// Our SYN has not been sent yet (the stream is registered before its SYN).
    pub(crate) syn_due: bool,
    pub(crate) fin: Fin,
    /// A write was refused or cut short; the next freed room raises `Writable`.
    pub(crate) write_waiting: bool,
    /// The peer's UPD broke the window arithmetic; writes fail with `Consumed`.
    pub(crate) overconsumed: Option<crate::flow::Overconsumed>,

    /// The application let go of the stream (full close): it is forgotten once its FIN
    /// is sent, and data arriving meanwhile is discarded.
    pub(crate) released: bool,
    pub(crate) queued: Queued,
}

impl StreamState {
    pub(crate) fn new(syn_due: bool) -> StreamState {
        StreamState {
            recv: VecDeque::new(),
            recv_len: 0,
            remote_fin: false,
            recv_window: RecvWindow::default(),
            upd_due: false,
            read_waiting: true,
            send: BytesMut::new(),
            send_window: SendWindow::new(),
            syn_due,
            fin: Fin::Open,
            write_waiting: false,
            overconsumed: None,
            released: false,
            queued: Queued::default(),
        }
    }

    /// Copies buffered data into `buf`, returns the count.
    pub(crate) fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.recv.front_mut() else {
                break;
            };
            let k = front.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.recv.pop_front();
            }
            n += k;
        }
        self.recv_len -= n;
        n
    }

    /// Takes up to `max` buffered bytes without copying.
    pub(crate) fn read_chunk(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv.front_mut()?;
        let chunk = if front.len() <= max {
            self.recv.pop_front()?
        } else {
            front.split_to(max)
        };
        self.recv_len -= chunk.len();
        Some(chunk)
    }

    /// Drops unread data, returns how many bytes were dropped.
    pub(crate) fn discard_recv(&mut self) -> usize {
        let n = self.recv_len;
        self.recv.clear();
        self.recv_len = 0;
        n
    }

    /// A FIN can go out now: writing is closed and all data is framed.
    pub(crate) fn fin_ready(&self) -> bool {
        self.fin == Fin::Pending && self.send.is_empty() && !self.syn_due
    }
}
