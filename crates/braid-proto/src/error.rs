//! Typed errors. Each says who caused it: the peer ([`ConnectionError::Protocol`]), the
//! network ([`ConnectionError::KeepAliveTimeout`], [`ConnectionError::Transport`]) or the
//! local application ([`ConnectionError::LocallyClosed`], [`WriteError::Closed`]).

use crate::frame::{smux, yamux};
use crate::StreamId;
use std::io;
use std::time::Duration;

/// What the peer did that the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// An invalid smux frame.
    #[error(transparent)]
    Smux(#[from] smux::FrameError),
    /// An invalid yamux frame.
    #[error(transparent)]
    Yamux(#[from] yamux::FrameError),
    /// More data than the stream's window allowed (yamux `ErrRecvWindowExceeded`).
    #[error(
        "peer sent {length} bytes on stream {stream_id} with only {window} bytes of window left"
    )]
    WindowExceeded {
        /// The stream.
        stream_id: u32,
        /// The data frame's length.
        length: usize,
        /// The window that was left.
        window: u32,
    },
    /// A window update that overflows the 32-bit window.
    #[error(
        "peer's window update of {delta} on stream {stream_id} overflows its window of {window}"
    )]
    WindowOverflow {
        /// The stream.
        stream_id: u32,
        /// The window before the update.
        window: u32,
        /// The announced delta.
        delta: u32,
    },
    /// A SYN for a stream that is already open (yamux `ErrDuplicateStream`).
    #[error("peer opened stream {0}, which is already open")]
    DuplicateStream(u32),
    /// [`Protocol::Auto`](crate::Protocol::Auto): the client's first byte is neither a
    /// smux version (1, 2) nor yamux's (0).
    #[error(
        "peer's first byte 0x{0:02x} is no smux or yamux version: not a protocol braid speaks"
    )]
    UnknownProtocol(u8),
    /// A SYN with one of our own stream ids (client ids are odd, server ids even): Go never
    /// sends one, and it would collide with our next `open`.
    #[error("peer opened stream {0}, an id only this side may open")]
    WrongParity(u32),
    /// A FIN on a stream the peer had already finished (yamux `ErrUnexpectedFlag`).
    #[error("peer sent a second FIN on stream {0}")]
    DuplicateFin(u32),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer sent bytes that are not valid for this protocol.
    #[error("protocol violation by the peer: {0}")]
    Protocol(ProtocolViolation),
    /// The peer ended the session with a yamux GoAway carrying an error code
    /// (1 protocol error, 2 internal error, or another value).
    #[error("peer went away with error code {0}")]
    GoAway(u32),
    /// Nothing arrived from the peer for a whole keepalive timeout.
    #[error("keepalive timeout: nothing received from the peer for {0:?}")]
    KeepAliveTimeout(Duration),
    /// The local application closed the session.
    #[error("session closed locally")]
    LocallyClosed,
    /// [`Protocol::Auto`](crate::Protocol::Auto): the client sent nothing within
    /// `Config::detect_timeout`, so its protocol could not be detected.
    #[error("no protocol detected: the client sent nothing for {0:?}")]
    DetectTimeout(Duration),
    /// The peer closed the connection (end of file on the transport).
    #[error("connection closed by the peer")]
    TransportClosed,
    /// Reading or writing the transport failed.
    #[error("transport error ({kind:?}): {message}")]
    Transport {
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
}

impl From<ProtocolViolation> for ConnectionError {
    fn from(e: ProtocolViolation) -> ConnectionError {
        ConnectionError::Protocol(e)
    }
}

impl From<smux::FrameError> for ConnectionError {
    fn from(e: smux::FrameError) -> ConnectionError {
        ConnectionError::Protocol(e.into())
    }
}

impl From<yamux::FrameError> for ConnectionError {
    fn from(e: yamux::FrameError) -> ConnectionError {
        ConnectionError::Protocol(e.into())
    }
}

impl ConnectionError {
    /// Records a transport I/O error.
    pub fn transport(err: &io::Error) -> ConnectionError {
        ConnectionError::Transport {
            kind: err.kind(),
            message: err.to_string(),
        }
    }

    /// The [`io::ErrorKind`] an application should see for a stream of a session that
    /// ended this way.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            ConnectionError::Protocol(_) => io::ErrorKind::InvalidData,
            ConnectionError::GoAway(_) => io::ErrorKind::ConnectionReset,
            ConnectionError::KeepAliveTimeout(_) | ConnectionError::DetectTimeout(_) => {
                io::ErrorKind::TimedOut
            }
            ConnectionError::LocallyClosed => io::ErrorKind::BrokenPipe,
            ConnectionError::TransportClosed => io::ErrorKind::ConnectionAborted,
            ConnectionError::Transport { kind, .. } => *kind,
        }
    }
}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Why [`Session::open`](crate::Session::open) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Every stream id of this side has been used (Go's `ErrGoAway`); the session can still
    /// serve its existing streams, but no new one can be opened.
    #[error("stream ids exhausted: no new stream can be opened on this session")]
    IdsExhausted,
    /// The session is closing after [`Session::close`](crate::Session::close).
    #[error("session is closing")]
    Closing,
    /// yamux: `max_unacked_opens` of our streams wait for the peer's ACK; retry after
    /// [`Event::Openable`](crate::Event::Openable).
    #[error("too many streams wait for the peer to acknowledge them")]
    Blocked,
    /// [`Session::open_named`](crate::Session::open_named) without `Config::stream_names`
    /// (or on yamux, which has no names).
    #[error("stream names are not enabled (Config::stream_names, smux only)")]
    NamesDisabled,
    /// A stream name longer than a SYN payload can carry.
    #[error("stream name of {0} bytes is longer than the 65535 a SYN can carry")]
    NameTooLong(usize),
    /// yamux: the peer sent GoAway(0) and accepts no new streams; existing ones go on.
    #[error("the peer accepts no new streams (it sent GoAway)")]
    RemoteGoAway,
    /// The session has ended.
    #[error("session ended: {0}")]
    SessionClosed(ConnectionError),
}

/// Why a stream write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The send buffer is full: retry after [`Event::Writable`](crate::Event::Writable).
    #[error("send buffer full")]
    Blocked,
    /// The stream's write side was closed locally (close_write or close).
    #[error("stream {0} was closed for writing")]
    Closed(StreamId),
    /// No such stream (never opened, or already released).
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    /// The stream was reset.
    #[error("stream {0} was reset: {1}")]
    Reset(StreamId, ResetReason),
    /// The peer acknowledged more bytes than were sent (smux v2 `ErrConsumed`); the
    /// stream can no longer write.
    #[error(
        "peer reported {consumed} bytes consumed on stream {stream} but only {written} were sent"
    )]
    Consumed {
        /// The stream.
        stream: StreamId,
        /// Bytes sent, modulo 2^32.
        written: u32,
        /// Bytes the peer claimed to have consumed.
        consumed: u32,
    },
    /// The session has ended.
    #[error("session ended: {0}")]
    SessionClosed(ConnectionError),
}

/// Why a stream read failed. End of stream is not an error: `read` returns `Ok(0)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing buffered yet: retry after [`Event::Readable`](crate::Event::Readable).
    #[error("no data buffered")]
    Blocked,
    /// No such stream (never opened, or already released).
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    /// The stream was reset; data not yet read is lost.
    #[error("stream {0} was reset: {1}")]
    Reset(StreamId, ResetReason),
    /// The session ended before the peer finished the stream; everything received before
    /// was delivered.
    #[error("session ended: {0}")]
    SessionClosed(ConnectionError),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let kind = match &e {
            OpenError::IdsExhausted => io::ErrorKind::AddrNotAvailable,
            OpenError::Closing => io::ErrorKind::BrokenPipe,
            OpenError::Blocked => io::ErrorKind::WouldBlock,
            OpenError::NamesDisabled | OpenError::NameTooLong(_) => io::ErrorKind::InvalidInput,
            OpenError::RemoteGoAway => io::ErrorKind::ConnectionRefused,
            OpenError::SessionClosed(c) => c.io_kind(),
        };
        io::Error::new(kind, e)
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        let kind = match &e {
            WriteError::Blocked => io::ErrorKind::WouldBlock,
            WriteError::Closed(_) => io::ErrorKind::BrokenPipe,
            WriteError::Reset(_, r) => r.io_kind(),
            WriteError::UnknownStream(_) => io::ErrorKind::NotConnected,
            WriteError::Consumed { .. } => io::ErrorKind::InvalidData,
            WriteError::SessionClosed(c) => c.io_kind(),
        };
        io::Error::new(kind, e)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        let kind = match &e {
            ReadError::Blocked => io::ErrorKind::WouldBlock,
            ReadError::UnknownStream(_) => io::ErrorKind::NotConnected,
            ReadError::Reset(_, r) => r.io_kind(),
            ReadError::SessionClosed(c) => c.io_kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Why a stream was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResetReason {
    /// The peer sent RST.
    #[error("reset by the peer")]
    ByPeer,
    /// The local application reset it.
    #[error("reset locally")]
    Locally,
    /// The peer did not acknowledge the stream within `stream_open_timeout`.
    #[error("the peer did not acknowledge the stream in time")]
    OpenTimeout,
    /// The peer did not finish the stream within `stream_close_timeout` after our FIN.
    #[error("the peer did not finish the stream in time")]
    CloseTimeout,
    /// No data moved on the stream for its idle timeout.
    #[error("no data moved for the stream's idle timeout")]
    IdleTimeout,
}

impl ResetReason {
    /// The [`io::ErrorKind`] reads and writes of the stream report.
    pub fn io_kind(self) -> io::ErrorKind {
        match self {
            ResetReason::ByPeer | ResetReason::Locally => io::ErrorKind::ConnectionReset,
            ResetReason::OpenTimeout | ResetReason::CloseTimeout | ResetReason::IdleTimeout => {
                io::ErrorKind::TimedOut
            }
        }
    }
}
