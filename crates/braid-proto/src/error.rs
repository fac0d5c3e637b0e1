//! Typed errors. Each says who caused it: the peer ([`ConnectionError::Protocol`]), the
//! network ([`ConnectionError::KeepAliveTimeout`], [`ConnectionError::Transport`]) or the
//! local application ([`ConnectionError::LocallyClosed`], [`WriteError::Closed`]).

use crate::frame::smux::FrameError;
use crate::StreamId;
use std::io;
use std::time::Duration;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer sent bytes that are not valid for this protocol.
    #[error("protocol violation by the peer: {0}")]
    Protocol(#[from] FrameError),
    /// Nothing arrived from the peer for a whole keepalive timeout.
    #[error("keepalive timeout: nothing received from the peer for {0:?}")]
    KeepAliveTimeout(Duration),
    /// The local application closed the session.
    #[error("session closed locally")]
    LocallyClosed,
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
            ConnectionError::KeepAliveTimeout(_) => io::ErrorKind::TimedOut,
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
    /// The session ended before the peer finished the stream; everything received before
    /// was delivered.
    #[error("session ended: {0}")]
    SessionClosed(ConnectionError),
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        let kind = match &e {
            WriteError::Blocked => io::ErrorKind::WouldBlock,
            WriteError::Closed(_) => io::ErrorKind::BrokenPipe,
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
            ReadError::SessionClosed(c) => c.io_kind(),
        };
        io::Error::new(kind, e)
    }
}
