//! The traits every library under test is adapted to, so that one generic
//! implementation of each workload drives them all, and the two libraries the `braid`
//! binary runs itself: raw TCP and braid. The other Rust multiplexers are adapted in the
//! `braid-bench` crate (bench/src/libs.rs), so that they stay out of this build.
//!
//! Every library runs with its default configuration. Each connection, raw or carrying
//! a session, has `TCP_NODELAY` set (as Go does by default and as
//! `braid::Session::from_tcp` does).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A stream as the workloads use it.
pub trait BenchStream: Send + 'static {
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads at most `buf.len()` bytes; 0 means the peer closed its sending side.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Ends this side's sending direction (a no-op for libraries without half-close:
    /// their stream closes when it is dropped).
    fn close_write(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The side of a connection that opens streams (for raw TCP: connections).
pub trait Opener: Send + 'static {
    /// The streams it opens.
    type Stream: BenchStream;

    /// Opens one stream.
    fn open(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// For libraries with a hard limit of open streams that ends the connection when
    /// exceeded: bulk opens its streams in waves of at most this many, each wave finished
    /// and closed before the next opens. `None`: no limit, all at once.
    fn wave(&self) -> Option<usize> {
        None
    }

    /// The most streams one connection may hold open (`None`: no limit worth noting).
    fn max_streams(&self) -> Option<usize> {
        None
    }
}

/// The side of a connection that accepts streams.
pub trait Acceptor: Send + 'static {
    /// The streams it accepts.
    type Stream: BenchStream;

    /// The next stream the peer opened; `None` once the connection has ended.
    fn accept(&mut self) -> impl Future<Output = io::Result<Option<Self::Stream>>> + Send;
}

/// Any tokio `AsyncRead + AsyncWrite` stream whose `shutdown` half-closes.
pub struct TokioIo<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> BenchStream for TokioIo<T> {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }

    async fn close_write(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

/// Binds a loopback listener, connects to it and returns both ends (client, server) with
/// `TCP_NODELAY`.
pub async fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, (server, _)) = (client?, accepted?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Raw TCP opener: every "stream" is a new loopback connection.
pub struct TcpOpener(SocketAddr);

/// Raw TCP acceptor: accepts connections on a loopback listener.
pub struct TcpAcceptor(TcpListener);

impl Opener for TcpOpener {
    type Stream = TokioIo<TcpStream>;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        Ok(TokioIo(tcp))
    }
}

impl Acceptor for TcpAcceptor {
    type Stream = TokioIo<TcpStream>;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        let (tcp, _) = self.0.accept().await?;
        tcp.set_nodelay(true)?;
        Ok(Some(TokioIo(tcp)))
    }
}

/// The raw TCP baseline: one loopback connection per stream.
pub async fn tcp() -> io::Result<(TcpOpener, TcpAcceptor)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok((TcpOpener(listener.local_addr()?), TcpAcceptor(listener)))
}

/// braid opener and acceptor: a session handle.
pub struct Braid(braid::Session);

impl Opener for Braid {
    type Stream = TokioIo<braid::Stream>;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        Ok(TokioIo(self.0.open_stream().await?))
    }
}

impl Acceptor for Braid {
    type Stream = TokioIo<braid::Stream>;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        Ok(self.0.accept_stream().await.map(TokioIo))
    }
}

/// A braid session pair (client, server) speaking `protocol` with
/// `Config::new(protocol)` (Go's defaults).
pub async fn braid(protocol: braid::Protocol) -> io::Result<(Braid, Braid)> {
    let (client, server) = tcp_pair().await?;
    let config = braid::Config::new(protocol);
    let client = braid::Session::from_tcp(client, config.clone(), braid::Side::Client)?;
    let server = braid::Session::from_tcp(server, config, braid::Side::Server)?;
    Ok((Braid(client), Braid(server)))
}
