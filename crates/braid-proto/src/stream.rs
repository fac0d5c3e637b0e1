//! Per-stream state: receive and send buffers, half-close, and the flow control of each
//! protocol (smux v2 windows, yamux credit).

use crate::flow::{Overconsumed, RecvWindow, SendWindow, YamuxRecvWindow, YAMUX_INITIAL_WINDOW};
use crate::recv_buf::RecvBuf;
use crate::sched::Queued;
use crate::send_buf::SendBuf;
use crate::Protocol;
use bytes::Bytes;
use std::fmt;
use std::time::{Duration, Instant};

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

/// How much a stream may send: the protocol's send-side flow control.
#[derive(Debug, Clone)]
pub(crate) enum SendFlow {
    /// smux v1: only the session's receive budget on the other side limits us.
    Unlimited,
    /// smux v2: the peer's consumed/window pair.
    Smux(SendWindow),
    /// yamux: credit, raised by the peer's window updates.
    Yamux(u32),
}

impl SendFlow {
    pub(crate) fn new(protocol: Protocol) -> SendFlow {
        match protocol {
            // No stream exists before Auto has settled on a protocol.
            Protocol::SmuxV1 | Protocol::Auto => SendFlow::Unlimited,
            Protocol::SmuxV2 => SendFlow::Smux(SendWindow::new()),
            Protocol::Yamux => SendFlow::Yamux(YAMUX_INITIAL_WINDOW),
        }
    }

    pub(crate) fn credit(&self) -> Result<usize, Overconsumed> {
        match self {
            SendFlow::Unlimited => Ok(usize::MAX),
            SendFlow::Smux(w) => w.credit(),
            SendFlow::Yamux(c) => Ok(*c as usize),
        }
    }

    pub(crate) fn on_sent(&mut self, n: usize) {
        match self {
            SendFlow::Unlimited => {}
            SendFlow::Smux(w) => w.on_sent(n),
            SendFlow::Yamux(c) => *c -= n as u32,
        }
    }
}

/// When to tell the peer we consumed data: the protocol's receive-side flow control.
#[derive(Debug, Clone)]
pub(crate) enum RecvFlow {
    /// smux v1 has no per-stream window.
    None,
    /// smux v2: UPD after the first read and every half window.
    Smux(RecvWindow),
    /// yamux: window update once half the window can be offered again.
    Yamux(YamuxRecvWindow),
}

impl RecvFlow {
    pub(crate) fn new(protocol: Protocol, window: usize) -> RecvFlow {
        match protocol {
            Protocol::SmuxV1 | Protocol::Auto => RecvFlow::None,
            Protocol::SmuxV2 => RecvFlow::Smux(RecvWindow::default()),
            Protocol::Yamux => RecvFlow::Yamux(YamuxRecvWindow::new(window)),
        }
    }

    /// Records an application read of `n` bytes, `buffered` bytes remaining; true when
    /// a window update is due.
    pub(crate) fn on_read(&mut self, n: usize, window: usize, buffered: usize) -> bool {
        match self {
            RecvFlow::None => false,
            RecvFlow::Smux(w) => w.on_read(n, window),
            RecvFlow::Yamux(w) => w.update_due(buffered),
        }
    }
}

/// Why a stream ended, from [`Session::stream_end`](crate::Session::stream_end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Both sides finished; we finished first.
    LocalClose,
    /// Both sides finished; the peer finished first.
    PeerFin,
    /// The stream was reset (by the peer, locally, or by a timeout).
    Reset(crate::ResetReason),
    /// The session ended before the stream finished.
    Session(crate::ConnectionError),
}

#[derive(Debug)]
pub(crate) struct StreamState {
    /// Tells this stream from an earlier one with the same id (yamux peers may reuse
    /// ids), for timers armed before it existed.
    pub(crate) serial: u64,
    /// Who finished first (or what else ended the stream).
    pub(crate) cause: Option<StreamEnd>,
    /// The stream has ended ([`Session::stream_end`](crate::Session::stream_end)).
    pub(crate) ended: bool,
    /// gmux stream name (SYN payload); empty when unnamed.
    pub(crate) name: Bytes,
    /// The stream is reset after this long without data either way.
    pub(crate) idle_timeout: Option<Duration>,
    /// When data last moved on the stream, either way.
    pub(crate) last_data: Instant,
    /// Payload bytes framed and received, for statistics.
    pub(crate) sent_bytes: u64,
    pub(crate) received_bytes: u64,
    // Receive side.
    /// Received data not yet read, in arrival order.
    pub(crate) recv: RecvBuf,
    /// The peer sent FIN: after `recv` drains, reads return end of stream.
    pub(crate) remote_fin: bool,
    pub(crate) recv_flow: RecvFlow,
    /// A window update is due; its value is computed when it is sent.
    pub(crate) upd_due: bool,
    /// The application found nothing to read; the next arrival raises `Readable`.
    pub(crate) read_waiting: bool,

    // Send side.
    /// Bytes written by the application and not yet framed.
    pub(crate) send: SendBuf,
    pub(crate) send_flow: SendFlow,
    /// Our SYN has not been sent yet (the stream is registered before its SYN).
    pub(crate) syn_due: bool,
    /// yamux: our SYN is out and the peer has not acknowledged it yet.
    pub(crate) awaiting_ack: bool,
    /// yamux: the application accepted the stream; an ACK goes out.
    pub(crate) ack_due: bool,
    /// yamux: a RST goes out.
    pub(crate) rst_due: bool,
    /// The stream was reset: reads and writes fail.
    pub(crate) reset: Option<crate::error::ResetReason>,
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
    pub(crate) fn new(
        config: &crate::Config,
        syn_due: bool,
        now: Instant,
        name: Bytes,
    ) -> StreamState {
        let protocol = config.protocol;
        let window = config.max_stream_buffer;
        StreamState {
            serial: 0,
            cause: None,
            ended: false,
            name,
            idle_timeout: config.idle_timeout,
            last_data: now,
            sent_bytes: 0,
            received_bytes: 0,
            recv: RecvBuf::default(),
            remote_fin: false,
            recv_flow: RecvFlow::new(protocol, window),
            upd_due: false,
            read_waiting: true,
            send: SendBuf::default(),
            send_flow: SendFlow::new(protocol),
            syn_due,
            awaiting_ack: false,
            ack_due: false,
            rst_due: false,
            reset: None,
            fin: Fin::Open,
            write_waiting: false,
            overconsumed: None,
            released: false,
            queued: Queued::default(),
        }
    }

    /// Bytes received and not yet read.
    pub(crate) fn recv_len(&self) -> usize {
        self.recv.len()
    }

    /// Both directions are over: FINs exchanged, or reset.
    pub(crate) fn finished(&self) -> bool {
        self.reset.is_some() || (self.fin == Fin::Sent && self.remote_fin)
    }

    /// A FIN can go out now: writing is closed and all data is framed.
    pub(crate) fn fin_ready(&self) -> bool {
        // A reset yamux stream ends with its RST, never a FIN; smux, which has no RST,
        // finishes a reset stream with a FIN.
        let yamux_reset = self.reset.is_some() && matches!(self.send_flow, SendFlow::Yamux(_));
        self.fin == Fin::Pending && self.send.is_empty() && !self.syn_due && !yamux_reset
    }
}
