//! The blocking `Session` handle.

use super::shared::{deadline_after, Inner, State};
use super::stream::Stream;
use super::{threads, Transport};
use braid_proto::{Config, ConfigError, ConnectionError, Protocol, SessionStats, Side, StreamId};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One multiplexed connection, run by its own threads (see the [module docs](super)).
/// Clone it freely: every clone is a handle to the same session.
///
/// When every `Session` handle and every [`Stream`] has been dropped, the session closes
/// gracefully: buffered data and FINs are flushed, then the connection is shut down.
///
/// ```
/// use braid::blocking::Session;
/// use braid::{Config, Side};
/// use std::io::{Read, Write};
/// use std::net::TcpListener;
///
/// # fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let client = Session::connect(listener.local_addr()?, Config::default())?;
/// let (tcp, _) = listener.accept()?;
/// let server = Session::from_tcp(tcp, Config::default(), Side::Server)?;
///
/// let mut stream = client.open_stream()?;
/// stream.write_all(b"ping")?;
///
/// let mut incoming = server.accept_stream().expect("session open");
/// let mut buf = [0u8; 4];
/// incoming.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"ping");
/// # Ok(()) }
/// ```
pub struct Session {
    inner: Arc<Inner>,
}

impl Session {
    /// Starts the dialing side of a session over `io` and its threads. Fails only if
    /// `config` is invalid; if `io` cannot be cloned (or a thread cannot be started) the
    /// session starts ended, with [`ConnectionError::Transport`] as its
    /// [`close_reason`](Session::close_reason).
    pub fn client<T: Transport>(io: T, config: Config) -> Result<Session, ConfigError> {
        Session::new(io, config, Side::Client)
    }

    /// Starts the accepting side of a session over `io`; see [`Session::client`].
    pub fn server<T: Transport>(io: T, config: Config) -> Result<Session, ConfigError> {
        Session::new(io, config, Side::Server)
    }

    /// Starts a session over `io` on the given side; see [`Session::client`].
    pub fn new<T: Transport>(io: T, config: Config, side: Side) -> Result<Session, ConfigError> {
        config.validate_for(side)?;
        let (local, peer) = io.socket_addrs();
        let core = braid_proto::Session::new(config, side, Instant::now());
        let inner = Arc::new(Inner::new(core, local, peer));
        threads::start(&inner, io);
        Ok(Session { inner })
    }

    /// Starts a session over a TCP connection with `TCP_NODELAY` set (frames are
    /// already batched, so Nagle's algorithm only adds latency).
    pub fn from_tcp(tcp: TcpStream, config: Config, side: Side) -> io::Result<Session> {
        tcp.set_nodelay(true)?;
        Ok(Session::new(tcp, config, side)?)
    }

    /// Connects to `addr` over TCP (trying each resolved address in turn, as
    /// `TcpStream::connect`) and starts the client side of a session.
    pub fn connect(addr: impl ToSocketAddrs, config: Config) -> io::Result<Session> {
        config.validate_for(Side::Client)?;
        let tcp = TcpStream::connect(addr)?;
        Session::from_tcp(tcp, config, Side::Client)
    }

    /// Opens a new stream. Its SYN is sent by the writer thread; data written right away
    /// follows it. yamux: blocks while `Config::max_unacked_opens` of our streams wait
    /// for the peer's acknowledgement, as Go's `OpenStream` does. Fails when the session
    /// is closing or closed (`BrokenPipe` or the kind of the reason it ended), the peer
    /// sent GoAway (`ConnectionRefused`) or the stream ids are exhausted
    /// (`AddrNotAvailable`).
    pub fn open_stream(&self) -> io::Result<Stream> {
        let mut st = self.inner.lock();
        loop {
            match st.core.open() {
                Ok(id) => return Ok(self.new_stream(&mut st, id)),
                Err(braid_proto::OpenError::Blocked) if !st.finished => {
                    st = self.inner.wait(&self.inner.cvs.app, st, None, "open")?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A handle for a stream just opened or accepted; the threads have work (a SYN to
    /// send, or room in the accept queue).
    fn new_stream(&self, st: &mut State, id: StreamId) -> Stream {
        let waiters = st.add_stream(id).waiters.clone();
        st.wake_io();
        Stream::new(self.inner.clone(), id, waiters)
    }

    /// Opens a stream with a gmux name (smux with `Config::stream_names` on both ends);
    /// the peer reads it with [`Stream::name`].
    pub fn open_named(&self, name: &str) -> io::Result<Stream> {
        let mut st = self.inner.lock();
        let id = st.core.open_named(name.as_bytes())?;
        Ok(self.new_stream(&mut st, id))
    }

    /// The session's counters: frames and bytes each way, streams, buffered bytes, the
    /// last ping round trip.
    pub fn stats(&self) -> SessionStats {
        self.inner.lock().core.stats()
    }

    /// The protocol the session speaks: for a `Protocol::Auto` server, the one the client
    /// turned out to speak (`Auto` until its first byte arrives).
    pub fn protocol(&self) -> Protocol {
        self.inner.lock().core.config().protocol
    }

    /// yamux: measures the round-trip time to the peer with a Ping; waits for the reply
    /// or the end of the session. smux has no echoed keepalive: the result is an
    /// `Unsupported` error.
    pub fn ping(&self) -> io::Result<Duration> {
        let mut st = self.inner.lock();
        let id = st
            .core
            .ping(Instant::now())
            .ok_or_else(|| crate::session::ping_refused(&st.core))?;
        st.pings.insert(id, Default::default());
        st.wake_io();
        st.wake_timers();
        let res = loop {
            if let Some(rtt) = st.pings.get(&id).and_then(|p| p.rtt) {
                break Ok(rtt);
            }
            if let Some(reason) = st.close_reason() {
                break Err(reason.into());
            }
            st = self
                .inner
                .cvs
                .app
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        };
        st.pings.remove(&id);
        st.core.forget_ping(id);
        res
    }

    /// yamux: sends GoAway(0): the peer may open no more streams, existing streams go on.
    /// smux has no GoAway: new inbound streams are ignored instead.
    pub fn go_away(&self) {
        let mut st = self.inner.lock();
        st.core.go_away();
        st.wake_io();
    }

    /// Waits for the next stream the peer opens. Returns `None` once the session has
    /// ended (see [`Session::close_reason`] for why).
    pub fn accept_stream(&self) -> Option<Stream> {
        self.accept_until(None).ok().flatten()
    }

    /// Like [`Session::accept_stream`], but gives up after `timeout`: `Ok(Some(stream))`,
    /// `Ok(None)` once the session has ended, or an error of kind
    /// [`io::ErrorKind::TimedOut`].
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        self.accept_until(deadline_after(Some(timeout)))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> io::Result<Option<Stream>> {
        let mut st = self.inner.lock();
        loop {
            if let Some(id) = st.core.accept() {
                // Accepting may unpause a session whose accept queue was full.
                return Ok(Some(self.new_stream(&mut st, id)));
            }
            if st.is_closed() {
                return Ok(None);
            }
            st = self
                .inner
                .wait(&self.inner.cvs.app, st, deadline, "accept timed out")?;
        }
    }

    /// Closes the session gracefully: every stream is closed for writing, buffered data
    /// and FINs are flushed (for at most `Config::close_timeout`), then the connection is
    /// shut down. Returns when the writer thread has finished. Streams can still read
    /// what had already arrived; other calls on them fail with `BrokenPipe`.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        st.close(Instant::now());
        while !st.finished {
            st = self
                .inner
                .cvs
                .app
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until the session has ended and the connection is shut down, and returns
    /// why it ended ([`ConnectionError::LocallyClosed`] after [`Session::close`]).
    pub fn closed(&self) -> ConnectionError {
        let mut st = self.inner.lock();
        while !st.finished {
            st = self
                .inner
                .cvs
                .app
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        st.core
            .close_reason()
            .cloned()
            .unwrap_or(ConnectionError::LocallyClosed)
    }

    /// True once the session has ended (streams may still hold data to read).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().is_closed()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.lock().core.close_reason().cloned()
    }

    /// Streams the session still tracks: open, half-closed, waiting to be accepted, or
    /// closed with a FIN still to send.
    pub fn num_streams(&self) -> usize {
        self.inner.lock().core.num_streams()
    }

    /// The transport's local address, if it has one (TCP).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The transport's peer address, if it has one (TCP).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr
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
        let mut st = self.inner.lock();
        st.session_handles -= 1;
        st.close_if_unused(Instant::now());
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Session")
            .field("side", &st.core.side())
            .field("streams", &st.core.num_streams())
            .field("closed", &st.core.close_reason())
            .finish()
    }
}
