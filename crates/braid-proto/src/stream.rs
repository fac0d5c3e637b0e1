//! Per-stream state, for smux and yamux alike: the opening handshake, the send and
//! receive halves, their buffers, and each protocol's flow control (smux v2 windows,
//! yamux credit).
//!
//! # Lifecycle
//!
//! A stream is an [`Opening`] handshake and two halves, [`SendState`] and [`RecvState`].
//! Arrows name what moves them: `app` a call of the application, `send` a frame we
//! send, `recv` a frame from the peer, `timer` a stream timeout.
//!
//! ```text
//! Opening                        (smux has no ACK)
//!
//!   ours    SynDue --send SYN--> AwaitingAck --recv ACK, or reset--> Done
//!             |                  (yamux: the open timeout runs)       ^
//!             +--send SYN (smux)--------------------------------------+
//!
//!   theirs  recv SYN --> accept queue --app accept--> AckDue --send ACK--> Done
//!                                       (smux: Done without an ACK)
//!
//! Send half
//!
//!   Open --recv UPD that breaks smux v2's window--> Consumed (writes fail)
//!    |                                                 |
//!    +--app close_write, close, or session close-------+
//!    v
//!   FinPending --send FIN (after the buffered data and our SYN)--> FinSent
//!
//!   any of them --app reset, recv RST (yamux), timer (open, close, idle)-->
//!       Reset { notify }    (reads and writes fail; buffers dropped)
//!   Reset { notify: true } --send RST (yamux), or FIN (smux, if ours was not out)-->
//!       Reset { notify: false }
//!
//! Receive half
//!
//!   Open --recv FIN--> Finished { peer_first }
//!                      (peer_first: our send half was still Open or Consumed)
//!
//! The stream has ended (StreamMut::end, Event::StreamEnded) once it is Reset, or
//! FinSent and Finished (LocalClose or PeerFin by peer_first), or when the session ends
//! first (Session). A stream the application released is forgotten once nothing is
//! left to send: smux after FinSent, yamux after FinSent and Finished, a reset stream
//! once notify is false.
//! ```

use crate::error::ResetReason;
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

/// The opening handshake: our SYN (smux and yamux), and yamux's ACK either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Ours: the SYN is still to be sent (the stream is registered before its SYN).
    /// `ack_awaited`: yamux counts the open as unacknowledged from the start, as Go
    /// takes its semaphore before writing the SYN.
    SynDue { ack_awaited: bool },
    /// yamux, ours: the SYN is out and the peer has not acknowledged it yet (the open
    /// timeout runs).
    AwaitingAck,
    /// yamux, theirs: the application accepted the stream; our ACK goes out next.
    AckDue,
    /// Nothing of the handshake is left to send or to wait for.
    Done,
}

impl Opening {
    /// Our SYN has not been sent yet.
    pub(crate) fn syn_due(self) -> bool {
        matches!(self, Opening::SynDue { .. })
    }

    /// Our open counts as unacknowledged (yamux).
    pub(crate) fn awaiting_ack(self) -> bool {
        matches!(
            self,
            Opening::AwaitingAck | Opening::SynDue { ack_awaited: true }
        )
    }

    /// The peer acknowledged our open (or the stream was reset): true if it was awaited.
    pub(crate) fn take_ack(&mut self) -> bool {
        let awaited = self.awaiting_ack();
        match self {
            Opening::SynDue { ack_awaited } => *ack_awaited = false,
            Opening::AwaitingAck => *self = Opening::Done,
            Opening::AckDue | Opening::Done => {}
        }
        awaited
    }

    /// Records our SYN as sent; true if it was due.
    pub(crate) fn take_syn(&mut self) -> bool {
        let Opening::SynDue { ack_awaited } = *self else {
            return false;
        };
        *self = match ack_awaited {
            true => Opening::AwaitingAck,
            false => Opening::Done,
        };
        true
    }

    /// Records our ACK as sent; true if it was due.
    pub(crate) fn take_ack_due(&mut self) -> bool {
        let due = *self == Opening::AckDue;
        if due {
            *self = Opening::Done;
        }
        due
    }
}

/// The send half: what the application may write and what we still owe the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    /// The application may write.
    Open,
    /// smux v2: the peer's UPD broke the window arithmetic; writes fail with `Consumed`.
    Consumed(Overconsumed),
    /// Writing is closed; FIN goes out after the buffered data.
    FinPending,
    /// FIN is on the wire (never sent twice).
    FinSent,
    /// The stream was reset (both halves: reads and writes fail with `reason`), its
    /// buffers dropped. `notify`: the peer is still to be told, by a RST (yamux) or, as
    /// smux has no RST, by a FIN if ours was not sent yet.
    Reset {
        /// Who or what reset the stream.
        reason: ResetReason,
        /// A RST (yamux) or FIN (smux) is still to be sent.
        notify: bool,
    },
}

impl SendState {
    /// The application has closed writing (or the stream was reset).
    pub(crate) fn write_closed(self) -> bool {
        !matches!(self, SendState::Open | SendState::Consumed(_))
    }

    /// Why the stream was reset, if it was.
    pub(crate) fn reset(self) -> Option<ResetReason> {
        match self {
            SendState::Reset { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// The receive half: whether the peer has finished sending. (A reset is recorded in
/// [`SendState::Reset`]: it ends both halves at once.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Data may arrive.
    Open,
    /// The peer's FIN arrived: after the buffered data, reads return end of stream.
    /// `peer_first`: it arrived while we could still write (the peer finished first).
    Finished { peer_first: bool },
}

impl RecvState {
    pub(crate) fn fin_received(self) -> bool {
        matches!(self, RecvState::Finished { .. })
    }
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

/// Why a stream ended, from [`StreamMut::end`](crate::StreamMut::end).
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
    /// The SYN/ACK handshake.
    pub(crate) opening: Opening,
    /// The send half's lifecycle (and a reset of the whole stream).
    pub(crate) send_state: SendState,
    /// The receive half's lifecycle.
    pub(crate) recv_state: RecvState,
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
    pub(crate) recv_flow: RecvFlow,
    /// A window update is due; its value is computed when it is sent.
    pub(crate) upd_due: bool,
    /// The application found nothing to read; the next arrival raises `Readable`.
    pub(crate) read_waiting: bool,

    // Send side.
    /// Bytes written by the application and not yet framed.
    pub(crate) send: SendBuf,
    pub(crate) send_flow: SendFlow,
    /// A write was refused or cut short; the next freed room raises `Writable`.
    pub(crate) write_waiting: bool,
    /// The stream is in the session's queue of writers waiting for send-buffer room.
    pub(crate) send_waiting: bool,

    /// The application let go of the stream (full close): it is forgotten once its FIN
    /// is sent, and data arriving meanwhile is discarded.
    pub(crate) released: bool,
    pub(crate) queued: Queued,
}

impl StreamState {
    pub(crate) fn new(
        config: &crate::Config,
        opening: Opening,
        now: Instant,
        name: Bytes,
    ) -> StreamState {
        let protocol = config.protocol;
        let window = config.max_stream_buffer;
        StreamState {
            serial: 0,
            opening,
            send_state: SendState::Open,
            recv_state: RecvState::Open,
            name,
            idle_timeout: config.idle_timeout,
            last_data: now,
            sent_bytes: 0,
            received_bytes: 0,
            recv: RecvBuf::default(),
            recv_flow: RecvFlow::new(protocol, window),
            upd_due: false,
            read_waiting: true,
            send: SendBuf::default(),
            send_flow: SendFlow::new(protocol),
            write_waiting: false,
            send_waiting: false,
            released: false,
            queued: Queued::default(),
        }
    }

    /// Bytes received and not yet read.
    pub(crate) fn recv_len(&self) -> usize {
        self.recv.len()
    }

    /// Why the stream was reset, if it was.
    pub(crate) fn reset(&self) -> Option<ResetReason> {
        self.send_state.reset()
    }

    /// Both directions are over: FINs exchanged, or reset.
    pub(crate) fn finished(&self) -> bool {
        match self.send_state {
            SendState::Reset { .. } => true,
            SendState::FinSent => self.recv_state.fin_received(),
            _ => false,
        }
    }

    /// A FIN can go out now: writing is closed and all data is framed.
    pub(crate) fn fin_ready(&self) -> bool {
        // A reset yamux stream ends with its RST, never a FIN; smux, which has no RST,
        // finishes a reset stream with a FIN.
        let due = match self.send_state {
            SendState::FinPending => true,
            SendState::Reset { notify, .. } => notify && !self.is_yamux(),
            _ => false,
        };
        due && self.send.is_empty() && !self.opening.syn_due()
    }

    /// Records our FIN as sent (see [`StreamState::fin_ready`]).
    pub(crate) fn on_fin_sent(&mut self) {
        self.send_state = match self.send_state {
            SendState::Reset { reason, .. } => SendState::Reset {
                reason,
                notify: false,
            },
            _ => SendState::FinSent,
        };
    }

    pub(crate) fn is_yamux(&self) -> bool {
        matches!(self.send_flow, SendFlow::Yamux(_))
    }
}
