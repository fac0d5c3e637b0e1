//! `Session`: the cheap, cloneable handle applications open and accept streams with.

use crate::driver::Driver;
use crate::shared::{Inner, List, Waiter};
use crate::stream::Stream;
use braid_proto::{Config, ConfigError, ConnectionError, Protocol, SessionStats, Side};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// One multiplexed connection. Clone it freely: every clone is a handle to the same
/// session. The connection itself is run by a driver task (see [`Driver`]).
///
/// When every `Session` handle and every [`Stream`] has been dropped, the session closes
/// gracefully: buffered data and FINs are flushed, then the connection is shut down.
///
/// ```
/// use braid::{Config, Session};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (a, b) = tokio::io::duplex(64 * 1024); // or a TcpStream, a TLS stream, ...
/// let client = Session::client(a, Config::default())?;
/// let server = Session::server(b, Config::default())?;
///
/// let mut stream = client.open_stream().await?;
/// stream.write_all(b"ping").await?;
///
/// let mut incoming = server.accept_stream().await.expect("session open");
/// let mut buf = [0u8; 4];
/// incoming.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct Session {
    inner: Arc<Inner>,
}

impl Session {
    /// Starts the dialing side of a session over `io` and spawns its driver on the current
    /// tokio runtime. Fails only if `config` is invalid.
    ///
    /// # Panics
    /// Outside a tokio runtime (use [`Session::new`] to run the driver yourself).
    pub fn client<T>(io: T, config: Config) -> Result<Session, ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Session::spawn(io, config, Side::Client, None)
    }

    /// Starts the accepting side of a session over `io`; see [`Session::client`].
    pub fn server<T>(io: T, config: Config) -> Result<Session, ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Session::spawn(io, config, Side::Server, None)
    }

    /// Starts a session over a TCP connection: sets `TCP_NODELAY` (frames are already
    /// batched) and records the addresses for [`Session::local_addr`] and
    /// [`Session::peer_addr`].
    pub fn from_tcp(tcp: TcpStream, config: Config, side: Side) -> io::Result<Session> {
        tcp.set_nodelay(true)?;
        let addrs = (tcp.local_addr().ok(), tcp.peer_addr().ok());
        Ok(Session::spawn(tcp, config, side, Some(addrs))?)
    }

    /// Creates a session and returns its driver instead of spawning it, for other
    /// runtimes or for control over the task. Nothing happens until the driver is polled.
    ///
    /// ```
    /// use braid::{Config, Session, Side};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (a, _b) = tokio::io::duplex(1024);
    /// let (session, driver) = Session::new(a, Config::default(), Side::Client).unwrap();
    /// let task = tokio::spawn(driver);
    /// session.close().await;
    /// assert!(task.await.unwrap().is_ok());
    /// # }
    /// ```
    pub fn new<T>(io: T, config: Config, side: Side) -> Result<(Session, Driver<T>), ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        Session::with_addrs(io, config, side, None)
    }

    fn with_addrs<T>(
        io: T,
        config: Config,
        side: Side,
        addrs: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
    ) -> Result<(Session, Driver<T>), ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        config.validate_for(side)?;
        let core = braid_proto::Session::new(config, side, crate::now());
        let (local, peer) = addrs.unwrap_or((None, None));
        let inner = Arc::new(Inner::new(core, local, peer));
        let driver = Driver::new(inner.clone(), io);
        Ok((Session { inner }, driver))
    }

    fn spawn<T>(
        io: T,
        config: Config,
        side: Side,
        addrs: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
    ) -> Result<Session, ConfigError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (session, driver) = Session::with_addrs(io, config, side, addrs)?;
        driver.enable_direct();
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "session driver ended");
            }
        });
        Ok(session)
    }

    /// Opens a new stream. Its SYN is sent by the driver; data written right away follows
    /// it. yamux: waits while `Config::max_unacked_opens` of our streams are not yet
    /// acknowledged by the peer (as Go's `OpenStream` blocks). Fails when the session is
    /// closing or closed, the peer sent GoAway, or the stream ids are exhausted.
    pub async fn open_stream(&self) -> io::Result<Stream> {
        let mut waiter = Waiter::new(&self.inner, List::Open);
        poll_fn(|cx| {
            let mut sh = self.inner.lock();
            match sh.core.open() {
                Ok(id) => Poll::Ready(Ok(self.new_stream(&mut sh, id))),
                Err(braid_proto::OpenError::Blocked) if !sh.finished => {
                    waiter.register(&mut sh, cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e.into())),
            }
        })
        .await
    }

    /// A handle for a stream just opened or accepted; the driver has work (a SYN to
    /// send, or room in the accept queue).
    fn new_stream(&self, sh: &mut crate::shared::Shared, id: braid_proto::StreamId) -> Stream {
        sh.add_stream(id);
        sh.wake_io();
        Stream::new(self.inner.clone(), id)
    }

    /// Opens a stream with a gmux name (smux with `Config::stream_names` on both ends);
    /// the peer reads it with [`Stream::name`].
    pub async fn open_named(&self, name: &str) -> io::Result<Stream> {
        let mut sh = self.inner.lock();
        let id = sh.core.open_named(name.as_bytes())?;
        Ok(self.new_stream(&mut sh, id))
    }

    /// The session's counters: frames and bytes each way, streams, buffered bytes, the
    /// last ping round trip.
    pub fn stats(&self) -> SessionStats {
        self.inner.lock().core.stats()
    }

    /// yamux: measures the round-trip time to the peer with a Ping. smux has no echoed
    /// keepalive: the result is an `Unsupported` error.
    pub async fn ping(&self) -> io::Result<Duration> {
        let id = {
            let mut sh = self.inner.lock();
            let id = sh
                .core
                .ping(crate::now())
                .ok_or_else(|| ping_refused(&sh.core))?;
            sh.pings.insert(id, Default::default());
            sh.wake_io();
            id
        };
        // Forget the slot however this future ends (reply, session end, cancellation).
        let _slot = PingGuard {
            inner: &self.inner,
            id,
        };
        poll_fn(|cx| {
            let mut sh = self.inner.lock();
            let closed = sh.close_reason();
            let slot = sh
                .pings
                .get_mut(&id)
                .expect("slot lives until the guard drops");
            if let Some(rtt) = slot.rtt {
                return Poll::Ready(Ok(rtt));
            }
            if let Some(reason) = closed {
                return Poll::Ready(Err(reason.into()));
            }
            slot.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// yamux: sends GoAway(0): the peer may open no more streams, existing streams go on.
    /// smux has no GoAway: new inbound streams are ignored instead.
    pub fn go_away(&self) {
        let mut sh = self.inner.lock();
        sh.core.go_away();
        sh.wake_io();
    }

    /// Waits for the next stream the peer opens. Returns `None` once the session has
    /// ended (see [`Session::closed`] for why).
    pub async fn accept_stream(&self) -> Option<Stream> {
        let mut waiter = Waiter::new(&self.inner, List::Accept);
        poll_fn(|cx| {
            let mut sh = self.inner.lock();
            if let Some(id) = sh.core.accept() {
                // Accepting may unpause a session whose accept queue was full.
                return Poll::Ready(Some(self.new_stream(&mut sh, id)));
            }
            if sh.is_closed() {
                return Poll::Ready(None);
            }
            waiter.register(&mut sh, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Like [`Session::accept_stream`], but gives up after `timeout`: `Ok(Some(stream))`,
    /// `Ok(None)` once the session has ended, or an error of kind
    /// [`io::ErrorKind::TimedOut`]. Nothing is lost by timing out.
    pub async fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        tokio::time::timeout(timeout, self.accept_stream())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "accept timed out"))
    }

    /// Closes the session gracefully: every stream is closed for writing, buffered data
    /// and FINs are flushed (for at most `Config::close_timeout`), then the connection is
    /// shut down. Returns when the driver has finished. Streams can still read what
    /// already arrived.
    pub async fn close(&self) {
        self.inner.lock().close(crate::now());
        let mut waiter = Waiter::new(&self.inner, List::Closed);
        poll_fn(|cx| {
            let mut sh = self.inner.lock();
            if sh.finished {
                return Poll::Ready(());
            }
            waiter.register(&mut sh, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until the session has ended and the connection is shut down, and returns
    /// why it ended.
    pub async fn closed(&self) -> ConnectionError {
        let mut waiter = Waiter::new(&self.inner, List::Closed);
        poll_fn(|cx| {
            let mut sh = self.inner.lock();
            if sh.finished {
                return Poll::Ready(sh.final_reason());
            }
            waiter.register(&mut sh, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Why the session ended, once it has (see [`Session::closed`] to wait for it).
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.lock().close_reason()
    }

    /// The protocol the session speaks: for a `Protocol::Auto` server, the one the client
    /// turned out to speak (`Auto` until its first byte arrives).
    pub fn protocol(&self) -> Protocol {
        self.inner.lock().core.config().protocol
    }

    /// True once the session has ended (streams may still hold data to read).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().is_closed()
    }

    /// Streams the session still tracks: open, half-closed, waiting to be accepted, or
    /// closed with a FIN still to send.
    pub fn num_streams(&self) -> usize {
        self.inner.lock().core.num_streams()
    }

    /// The transport's local address, when the session was made by
    /// [`Session::from_tcp`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The transport's peer address, when the session was made by
    /// [`Session::from_tcp`].
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr
    }
}

/// Why a ping could not be sent.
pub(crate) fn ping_refused(core: &braid_proto::Session) -> io::Error {
    let why = match core.close_reason() {
        Some(reason) => return io::Error::from(reason.clone()),
        None if core.config().protocol == Protocol::Yamux => "too many pings in flight",
        None => "smux has no ping: its keepalive NOP is not echoed",
    };
    io::Error::new(io::ErrorKind::Unsupported, why)
}

struct PingGuard<'a> {
    inner: &'a Arc<Inner>,
    id: u32,
}

impl Drop for PingGuard<'_> {
    fn drop(&mut self) {
        let mut sh = self.inner.lock();
        sh.pings.remove(&self.id);
        sh.core.forget_ping(self.id);
    }
}

impl Clone for Session {
    fn clone(&self) -> Session {
        self.inner.lock().session_handles += 1;
        Session {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut sh = self.inner.lock();
        sh.session_handles -= 1;
        sh.close_if_unused(crate::now());
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sh = self.inner.lock();
        f.debug_struct("Session")
            .field("side", &sh.core.side())
            .field("streams", &sh.core.num_streams())
            .field("closed", &sh.core.close_reason())
            .finish()
    }
}
