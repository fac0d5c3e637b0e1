//! # braid: many streams over one connection
//!
//! braid multiplexes reliable, ordered byte streams over one connection (TCP, TLS, Unix
//! socket, anything `AsyncRead + AsyncWrite`), speaking xtaci/smux v1 or v2 or
//! hashicorp/yamux exactly as the Go libraries do, so it interoperates with kcptun, frp
//! and the other users of either library.
//!
//! A [`Session`] runs one connection; both sides may open [`Stream`]s. Streams are tokio
//! `AsyncRead + AsyncWrite`; `shutdown()` half-closes. A blocking API for plain threads
//! lives in [`blocking`].
//!
//! ## Server
//!
//! ```no_run
//! use braid::{Config, Session, Side};
//! # async fn serve() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! let (tcp, _) = listener.accept().await?;
//! let session = Session::from_tcp(tcp, Config::default(), Side::Server)?;
//! while let Some(mut stream) = session.accept_stream().await {
//!     tokio::spawn(async move {
//!         let (mut r, mut w) = tokio::io::split(&mut stream);
//!         let _ = tokio::io::copy(&mut r, &mut w).await; // echo
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! ## Client
//!
//! ```no_run
//! use braid::{Config, Session, Side};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # async fn client() -> std::io::Result<()> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//! let session = Session::from_tcp(tcp, Config::default(), Side::Client)?;
//! let mut stream = session.open_stream().await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // half-close: the reply still arrives
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! # Ok(()) }
//! ```
//!
//! ## Stream features
//!
//! ```
//! use braid::{Config, Protocol, Session, StreamEnd};
//! use std::time::Duration;
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> std::io::Result<()> {
//! let mut config = Config::new(Protocol::SmuxV2);
//! config.stream_names = true; // gmux names: both ends must enable them
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let client = Session::client(a, config.clone())?;
//! let server = Session::server(b, config)?;
//!
//! let mut s = client.open_named("metrics").await?;
//! s.set_priority(200); // sent before priority-0 streams (which keep a 10 % share)
//! s.write_all(b"cpu 0.93").await?;
//! let peer = server.accept_stream().await.unwrap();
//! assert_eq!(peer.name().as_deref(), Some("metrics"));
//!
//! // No data either way for 30 s: the stream is reset, waiting calls fail with TimedOut.
//! peer.set_idle_timeout(Some(Duration::from_secs(30)));
//! assert_eq!(peer.closed().await, StreamEnd::Reset(braid::ResetReason::IdleTimeout));
//! assert_eq!(s.stats().bytes_sent, 8);
//! # Ok(()) }
//! ```
//!
//! ## Deadlines and cancellation
//! Use `tokio::time::timeout` around any call. Every future here is cancel-safe: a read
//! takes data from the stream only in the poll that returns it, a write has queued exactly
//! the bytes it reports, `accept_stream` takes a stream only when it returns it, and
//! `open_stream` registers one only when it returns it. Dropping a future loses nothing
//! and leaves no state behind. Streams also have idle timeouts
//! ([`Stream::set_idle_timeout`]).
//!
//! ## Other transports
//! [`Session::client`] and [`Session::server`] take any `AsyncRead + AsyncWrite` (TLS,
//! a Unix socket, an encrypted or compressed stream of your own). Two things make them
//! cheaper per byte: implement `poll_write_vectored` (and `is_write_vectored`) in your
//! own transports, or the driver copies its frames into one buffer before each write;
//! and under rustls (`tokio-rustls`), which reads its socket 4 KiB per call, wrap the
//! TCP stream in `tokio::io::BufReader::with_capacity(64 * 1024, tcp)` before the
//! handshake. braid's own tunnel does both (BENCHMARKS.md, round 6).
//!
//! ## Design
//! The protocol is the sans-IO core [`braid_proto`]; this crate adds one driver task per
//! session that owns the connection, and cheap handles that share the core behind a
//! mutex. The tokio driver and the [`blocking`] threads share one runtime-neutral glue
//! (event dispatch, handle counting, the receive buffer, the transmit queue) and differ
//! only in how they wait (wakers or condition variables) and do I/O. Data moves without
//! per-stream channels: a write copies into the stream's send buffer, the driver hands
//! frames to the socket in vectored writes, received payloads are split off the read
//! buffer without copying and copied once into the reader's buffer.
//! [`Stream::write_chunk`], [`Stream::read_chunk`] and [`Stream::read_chunks`] skip
//! those copies: `Bytes` in, frames' payloads out as they arrived (braid's tunnel
//! forwards with them, `read_chunks` feeding one vectored socket write).
//! With tokio, a stream task writes its frames to the socket itself when the driver is
//! idle (write-through), and while the connection carries small messages a stream task
//! that waits for data reads the socket itself too (read-through); the driver is still
//! woken for all input, so no stream task has to be polled for the session to progress.
//! Timers use tokio's clock, so tests with a paused clock cover keepalives instantly.

#![warn(missing_docs)]

pub mod blocking;
mod buffers;
mod driver;
mod glue;
mod session;
mod shared;
mod stream;

pub use braid_proto::{
    Config, ConfigError, ConfigField, ConnectionError, Protocol, ResetReason, SessionStats, Side,
    StreamEnd, StreamEndCallback, StreamId, StreamStats,
};
pub use driver::Driver;
pub use session::Session;
pub use stream::{OwnedReadHalf, OwnedWriteHalf, Stream};

/// Now, on tokio's clock (which tests may pause), as the core's `Instant`.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
