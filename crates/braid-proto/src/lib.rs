//! # braid-proto: the sans-IO core of braid
//!
//! The smux v1/v2 (xtaci/smux) and yamux (hashicorp/yamux) protocols, byte-compatible
//! with the Go libraries, as a plain state machine: bytes and time go in, bytes, events and the next deadline come out. It owns no
//! socket, spawns nothing and never reads the clock, so it is deterministic and can be
//! driven by tokio (the `braid` crate), by threads, or by any event loop.
//!
//! ## The run loop
//!
//! A driver repeats four steps: feed received bytes, send what the session wants to
//! send, fire timers when due, and hand events to the application. Here two sessions are
//! joined by in-memory "wires":
//!
//! ```
//! use braid_proto::{Config, Event, Protocol, Session, Side};
//! use bytes::{Bytes, BytesMut};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let config = Config::new(Protocol::SmuxV2);
//! let mut client = Session::new(config.clone(), Side::Client, now);
//! let mut server = Session::new(config, Side::Server, now);
//!
//! // Moves everything one session wants to send into the other's input.
//! fn pump(from: &mut Session, to: &mut Session, now: Instant) {
//!     let mut chunks: Vec<Bytes> = Vec::new();
//!     while from.poll_transmit(now, &mut chunks, 64 * 1024) > 0 {}
//!     let mut wire = BytesMut::new();
//!     for c in chunks {
//!         wire.extend_from_slice(&c); // a real driver writes the chunks to a socket
//!     }
//!     to.handle_input(now, &mut wire).unwrap();
//! }
//!
//! // The application opens a stream and writes; the driver transmits.
//! let id = client.open().unwrap();
//! assert_eq!(id.0, 3); // client ids are 3, 5, 7, ... as in Go
//! client.stream(id).write(b"hello").unwrap();
//! client.stream(id).close_write(); // half-close: FIN after the data
//! pump(&mut client, &mut server, now);
//!
//! // The server's driver hands events to the application.
//! assert_eq!(server.poll_event(), Some(Event::Incoming));
//! let sid = server.accept().unwrap();
//! assert_eq!(server.poll_event(), Some(Event::Readable(sid)));
//! assert_eq!(server.poll_event(), Some(Event::Finished(sid)));
//! let mut buf = [0u8; 16];
//! let n = server.stream(sid).read(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"hello");
//! assert_eq!(server.stream(sid).read(&mut buf), Ok(0)); // end of stream
//!
//! // The half-closed client still reads the reply.
//! server.stream(sid).write(b"bye").unwrap();
//! server.stream(sid).close();
//! pump(&mut server, &mut client, now);
//! assert_eq!(client.stream(id).read(&mut buf), Ok(3));
//! client.stream(id).close();
//! pump(&mut client, &mut server, now);
//! assert_eq!((client.num_streams(), server.num_streams()), (0, 0));
//!
//! // Timers: sleep until poll_timeout, then call handle_timeout.
//! let deadline = client.poll_timeout().unwrap(); // the first keepalive NOP
//! client.handle_timeout(deadline);
//! let mut chunks = Vec::new();
//! assert_eq!(client.poll_transmit(deadline, &mut chunks, 1024), 8); // one NOP frame
//! ```
//!
//! A real driver also stops reading from the socket while
//! [`Session::wants_read`] is false (the session receive budget is spent), and feeds the
//! bytes it holds again once the application has read.
//!
//! ## Protocol facts
//! See `docs/protocol.md` in the repository for the wire format, what Go does, and where
//! braid deliberately differs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
mod flow;
/// The wire codecs. Public only with the `fuzzing` feature, for the fuzz targets and
/// the codec benchmarks: not a stable API.
#[cfg(feature = "fuzzing")]
pub mod frame;
// Without the feature, parts of the codecs only the fuzz targets, benchmarks and tests
// use (whole-frame encoding, accessors) are unused by the session itself.
#[cfg(not(feature = "fuzzing"))]
#[allow(dead_code)]
mod frame;
mod recv_buf;
mod sched;
mod send_buf;
mod session;
mod stream;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, ConfigField, Protocol, Side, StreamEndCallback};
pub use error::{
    ConnectionError, OpenError, ProtocolViolation, ReadError, ResetReason, WriteError,
};
pub use flow::{INITIAL_PEER_WINDOW, YAMUX_INITIAL_WINDOW};
pub use frame::smux::{Cmd as SmuxCmd, FrameError as SmuxFrameError};
pub use frame::yamux::FrameError as YamuxFrameError;
pub use session::{Event, Session, SessionStats, StreamMut, StreamRef, StreamStats};
pub use stream::{StreamEnd, StreamId};
