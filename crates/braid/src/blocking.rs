//! # Blocking API: sessions and streams on plain threads
//!
//! The same model as the tokio API ([`crate::Session`], [`crate::Stream`]) for programs
//! without an async runtime: a [`Session`] runs one connection over any
//! [`std::io::Read`] + [`std::io::Write`] transport (see [`Transport`]), and its
//! [`Stream`]s are [`std::io::Read`] + [`std::io::Write`] with `std::net::TcpStream`-like
//! timeouts and half-close. No tokio runtime is needed.
//!
//! ## Echo over TCP
//!
//! ```
//! use braid::blocking::Session;
//! use braid::Config;
//! use std::io::{Read, Write};
//! use std::net::TcpListener;
//!
//! # fn main() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//!
//! // Server: accept one connection, echo one stream until the client's FIN.
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (tcp, _) = listener.accept()?;
//!     tcp.set_nodelay(true)?;
//!     let session = Session::server(tcp, Config::default())?;
//!     let mut stream = session.accept_stream().expect("session open");
//!     let mut echo = stream.try_clone()?;
//!     std::io::copy(&mut stream, &mut echo)?;
//!     echo.shutdown_write(); // FIN after the echoed data
//!     Ok(())
//! });
//!
//! // Client: open a stream, send, half-close, read the whole reply.
//! let session = Session::connect(addr, Config::default())?;
//! let mut stream = session.open_stream()?;
//! stream.write_all(b"hello")?;
//! stream.shutdown_write();
//! let mut reply = String::new();
//! stream.read_to_string(&mut reply)?;
//! assert_eq!(reply, "hello");
//!
//! server.join().unwrap()?;
//! session.close(); // flushes, shuts the connection down, returns when done
//! # Ok(()) }
//! ```
//!
//! ## Threads
//!
//! Each session runs three threads, as Go's smux runs three goroutines:
//!
//! - a **reader** that reads the transport and feeds the protocol core; it stops reading
//!   while the session's receive budget is spent (`Config::max_receive_buffer` bytes wait
//!   to be read by the application, or the accept queue is full) and resumes as soon as
//!   the application reads;
//! - a **writer** that takes frames from the core and writes them with vectored writes,
//!   outside the session lock, so that application threads keep writing meanwhile;
//! - a **timer** for keepalives and the close timeout. It also shuts the transport down
//!   when the session ends while the writer is stuck in a write to a peer that stopped
//!   reading, so that [`Session::close`] returns within `Config::close_timeout`.
//!
//! The threads end once the session has ended: after [`Session::close`], when every
//! [`Session`] handle and every [`Stream`] has been dropped (a graceful close, as in the
//! tokio API), on a keepalive timeout, a protocol violation, or when the peer closes the
//! connection.
//!
//! Application threads and the session's threads share the protocol core behind one
//! mutex and wake each other with condition variables. They run on the same
//! runtime-neutral glue as the tokio driver (event dispatch, handle counting, the
//! receive buffer and the transmit queue); only the waiting (condition variables instead
//! of wakers) and the I/O (blocking reads and writes) differ. Sent data is copied once,
//! into the stream's send buffer ([`Stream::write_chunk`] takes `Bytes` without a
//! copy); received data is copied from the reader's scratch buffer into the receive
//! buffer, then out to the application ([`Stream::read_chunk`] hands the frame's bytes
//! over without the second copy).
//!
//! ## Differences from the tokio API
//!
//! Every method of [`crate::Session`] and [`crate::Stream`] is here too, except where
//! `std` has its own way:
//!
//! - half-close is [`Stream::shutdown_write`] (tokio: `AsyncWriteExt::shutdown`);
//! - [`Stream::try_clone`] instead of `into_split`: `Read` and `Write` are implemented
//!   for `&Stream`, so clones read and write from different threads;
//! - deadlines are [`Stream::set_read_timeout`], [`Stream::set_write_timeout`] and
//!   [`Session::accept_timeout`] (tokio: `tokio::time::timeout` around any call, and
//!   `Session::accept_timeout`);
//! - [`Session::connect`] dials TCP itself; the tokio API takes a connected socket;
//! - there is no `Driver`: the session's threads are started by the constructors.

mod session;
mod shared;
mod stream;
mod threads;

pub use session::Session;
pub use stream::Stream;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

/// A connection a blocking [`Session`] can run over: a byte stream that can be cloned so
/// that one thread reads while another writes, and shut down from a third.
///
/// [`Transport::shutdown`] must make a read blocked on any clone return (end of file or
/// an error): that is how the session's reader thread is stopped. `TcpStream` and
/// `UnixStream` behave so.
pub trait Transport: Read + Write + Send + Sized + 'static {
    /// Another handle to the same connection (as `TcpStream::try_clone`).
    fn try_clone(&self) -> io::Result<Self>;

    /// Shuts both directions of the connection down, best effort: the peer sees end of
    /// file after the bytes already written, and blocked reads on every clone return.
    fn shutdown(&self);

    /// The connection's local and peer addresses, if it has IP addresses; reported by
    /// [`Session::local_addr`] and [`Session::peer_addr`].
    fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (None, None)
    }
}

impl Transport for TcpStream {
    fn try_clone(&self) -> io::Result<TcpStream> {
        TcpStream::try_clone(self)
    }

    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }

    fn socket_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.local_addr().ok(), self.peer_addr().ok())
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<std::os::unix::net::UnixStream> {
        std::os::unix::net::UnixStream::try_clone(self)
    }

    fn shutdown(&self) {
        let _ = std::os::unix::net::UnixStream::shutdown(self, Shutdown::Both);
    }
}
