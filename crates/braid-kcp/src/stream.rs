//! The tokio layer: a [`KcpStream`] handle and the task that drives its [`Conn`].
//!
//! One driver task per session owns the timers and all sending; the handle only moves
//! bytes in and out of the shared [`Conn`] and wakes the driver after a write.

use crate::codec::MAX_DATAGRAM;
use crate::config::Config;
use crate::conn::Conn;
use crate::CodecStats;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Duration, Instant};

/// How long a closed stream keeps retransmitting what the peer has not acknowledged.
const LINGER: Duration = Duration::from_secs(5);
/// Datagrams taken in one go before the session's timers run.
const BATCH: usize = 64;

/// What the handle and the driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver (a write, a close).
    notify: Notify,
}

struct State {
    conn: Conn,
    /// Clock origin of the KCP timestamps.
    base: Instant,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// Set when the session is over: every later read and write fails with it.
    error: Option<(io::ErrorKind, String)>,
    /// The unread rest of a segment larger than the last read's buffer.
    leftover: Vec<u8>,
    /// The handle shut its writing down or was dropped.
    closing: bool,
    dropped: bool,
}

impl State {
    fn now(&self) -> u32 {
        self.base.elapsed().as_millis() as u32
    }
}

/// Where the driver sends and receives.
pub(crate) enum Io {
    /// A client's own socket, connected to the server.
    Connected(Arc<UdpSocket>),
    /// A listener's socket, shared: sends go to `peer`, datagrams come from the listener.
    Shared {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
        rx: mpsc::Receiver<Vec<u8>>,
        /// This session's id in the listener's map.
        id: u64,
        /// Where a datagram that opens another conversation goes back.
        reopen: mpsc::Sender<crate::listener::Reopen>,
    },
}

/// Which side a session is, for error messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Client,
    Server,
}

/// A KCP session as a byte stream: `AsyncRead + AsyncWrite`, what `braid::Session`
/// runs over. Dropping it (or shutting it down) lets the session send what it holds for
/// up to 5 s, then ends it; KCP itself has no close message.
pub struct KcpStream {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl std::fmt::Debug for KcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KcpStream")
            .field("peer", &self.peer)
            .finish()
    }
}

impl KcpStream {
    /// Starts the driver of a new session and returns its handle. `on_exit` runs when
    /// the driver ends (the listener forgets the session then).
    pub(crate) fn spawn(
        conv: u32,
        config: &Config,
        io: Io,
        peer: SocketAddr,
        role: Role,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> KcpStream {
        let base = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn: Conn::new(conv, config, 0),
                base,
                reader: None,
                writer: None,
                error: None,
                leftover: Vec::new(),
                closing: false,
                dropped: false,
            }),
            notify: Notify::new(),
        });
        let driver = Driver {
            shared: shared.clone(),
            io,
            peer,
            role,
            dead_after: config.dead_after.as_millis().min(u32::MAX as u128) as u32,
            idle_after: config.idle_timeout.as_millis().min(u32::MAX as u128) as u32,
        };
        tokio::spawn(async move {
            driver.run().await;
            on_exit();
        });
        KcpStream { shared, peer }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        lock(&self.shared).conn.conv()
    }

    /// The datagram layer's counters (checksum failures, FEC recoveries).
    pub fn stats(&self) -> CodecStats {
        lock(&self.shared).conn.stats()
    }

    /// A handle on the counters that outlives the stream (for a stream moved into a
    /// session).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }
}

/// Reads a session's counters, also after its stream was moved away.
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    /// The datagram layer's counters.
    pub fn get(&self) -> CodecStats {
        lock(&self.0).conn.stats()
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncRead for KcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        let st = &mut *st;
        if !st.leftover.is_empty() {
            let n = st.leftover.len().min(buf.remaining());
            buf.put_slice(&st.leftover[..n]);
            st.leftover.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let room = buf.initialize_unfilled();
        let mut n = st.conn.recv(room);
        if n == 0 && !room.is_empty() {
            // A segment larger than the caller's buffer: take it whole, keep the rest.
            if let Some(size) = st.conn.peek_size() {
                let mut seg = vec![0u8; size];
                let got = st.conn.recv(&mut seg);
                n = got.min(room.len());
                room[..n].copy_from_slice(&seg[..n]);
                st.leftover = seg[n..got].to_vec();
            }
        }
        if n > 0 {
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        if let Some((kind, msg)) = &st.error {
            return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for KcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.shared);
        if let Some((kind, msg)) = &st.error {
            return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
        }
        if st.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let now = st.now();
        let n = st.conn.send(data, now);
        if n > 0 {
            drop(st);
            self.shared.notify.notify_one();
            return Poll::Ready(Ok(n));
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in KCP's hands: it sends them as the windows allow.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.shared).closing = true;
        self.shared.notify.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for KcpStream {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.closing = true;
        st.dropped = true;
        drop(st);
        self.shared.notify.notify_one();
    }
}

struct Driver {
    shared: Arc<Shared>,
    io: Io,
    peer: SocketAddr,
    role: Role,
    dead_after: u32,
    idle_after: u32,
}

impl Driver {
    async fn run(mut self) {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = Instant::now();
        let mut linger_until: Option<Instant> = None;
        let mut refused: Option<Instant> = None;
        let mut replaced: Option<u32> = None;
        loop {
            tokio::select! {
                got = recv(&mut self.io) => match got {
                    Ok(Some(d)) => {
                        batch.push(d);
                        try_recv_more(&mut self.io, &mut batch);
                    }
                    Ok(None) => {} // the listener is gone; expire by the clock
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = Some(Instant::now()),
                    Err(e) => tracing::debug!(peer = %self.peer, "udp receive: {e}"),
                },
                _ = self.shared.notify.notified() => {}
                _ = sleep_until(next) => {}
            }
            let end = {
                let mut st = lock(&self.shared);
                let now = st.now();
                for mut d in batch.drain(..) {
                    if let Err(e) = st.conn.input(&mut d, now) {
                        tracing::trace!(peer = %self.peer, "datagram dropped: {e}");
                    }
                    if let (None, Some(conv)) = (replaced, st.conn.take_new_conversation()) {
                        st.conn.reseal(&mut d);
                        replaced = self.give_back(d, conv);
                    }
                }
                st.conn.update(now);
                while let Some(d) = st.conn.poll_datagram() {
                    out.push(d);
                }
                next =
                    Instant::now() + Duration::from_millis(st.conn.next_update(now).max(1) as u64);
                let end = match replaced {
                    Some(conv) => Some((
                        io::ErrorKind::ConnectionReset,
                        format!(
                            "client {} started a new session (conversation {conv})",
                            self.peer
                        ),
                    )),
                    None => self.verdict(&mut st, now, refused, &mut linger_until),
                };
                if let Some(msg) = &end {
                    st.error = Some(msg.clone());
                }
                let readable = st.conn.peek_size().is_some();
                if readable || end.is_some() {
                    if let Some(w) = st.reader.take() {
                        w.wake();
                    }
                }
                if st.conn.writable() || end.is_some() {
                    if let Some(w) = st.writer.take() {
                        w.wake();
                    }
                }
                end
            };
            for d in out.drain(..) {
                let sent = match &self.io {
                    Io::Connected(s) => s.send(&d).await,
                    Io::Shared { socket, peer, .. } => socket.send_to(&d, *peer).await,
                };
                if let Err(e) = sent {
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        refused = Some(Instant::now());
                    }
                    tracing::trace!(peer = %self.peer, "udp send: {e}");
                }
            }
            if let Some((_, msg)) = end {
                tracing::debug!(peer = %self.peer, "kcp session ended: {msg}");
                return;
            }
        }
    }

    /// Gives a datagram that opens another conversation back to the listener, which
    /// replaces this session (kcp-go's rule); the new conversation's id if it went.
    fn give_back(&self, datagram: Vec<u8>, conv: u32) -> Option<u32> {
        let Io::Shared {
            peer, id, reopen, ..
        } = &self.io
        else {
            return None; // a client ignores other conversations
        };
        let back = crate::listener::Reopen {
            from: *peer,
            id: *id,
            datagram,
        };
        reopen.try_send(back).ok().map(|_| conv)
    }

    /// Whether the session is over, and why.
    fn verdict(
        &self,
        st: &mut State,
        now: u32,
        refused: Option<Instant>,
        linger_until: &mut Option<Instant>,
    ) -> Option<(io::ErrorKind, String)> {
        let (peer_name, peer_flag) = match self.role {
            Role::Client => ("server", "server's"),
            Role::Server => ("client", "client's"),
        };
        let peer = self.peer;
        if st.closing {
            let until = *linger_until.get_or_insert_with(|| Instant::now() + LINGER);
            if st.conn.unacked() == 0 || Instant::now() >= until {
                return Some((io::ErrorKind::BrokenPipe, "kcp session closed".into()));
            }
        }
        if st.conn.peer_dead(now, self.dead_after) {
            let stats = st.conn.stats();
            let secs = self.dead_after as f64 / 1000.0;
            let msg = if !st.conn.heard_from_peer() {
                if stats.bad_checksum > 0 {
                    format!(
                        "{peer_name} {peer} answers, but its {} datagrams fail the checksum: \
                         --key and --crypt must be the {peer_flag}",
                        stats.bad_checksum
                    )
                } else if refused.is_some_and(|t| {
                    // Only a recent refusal: one from before the server was up is no sign.
                    t.elapsed() < Duration::from_millis(self.dead_after as u64 / 2)
                }) {
                    format!("{peer_name} {peer} refuses UDP (port unreachable): is it running?")
                } else {
                    format!(
                        "no answer from {peer_name} {peer} within {secs}s: is it running and \
                         reachable over UDP, with the same --key and --crypt?"
                    )
                }
            } else {
                format!(
                    "{peer_name} {peer} stopped acknowledging for {secs}s: it dropped the \
                     session (check that --proto/smux version, --nocomp and --key/--crypt \
                     match the {peer_flag}) or the network is down"
                )
            };
            return Some((io::ErrorKind::TimedOut, msg));
        }
        if st.conn.peer_restarted(now, self.dead_after) {
            return Some((
                io::ErrorKind::ConnectionReset,
                format!(
                    "{peer_name} {peer} dropped the session and lost its start (its \
                     acknowledgements went back): check that --proto (smux version) and --nocomp \
                     match the {peer_flag}"
                ),
            ));
        }
        let idle = st.conn.silent_for(now, 0);
        if idle >= self.idle_after {
            return Some((
                io::ErrorKind::TimedOut,
                format!(
                    "{peer_name} {peer} silent for {}s: session expired",
                    idle / 1000
                ),
            ));
        }
        None
    }
}

async fn recv(io: &mut Io) -> io::Result<Option<Vec<u8>>> {
    match io {
        Io::Connected(socket) => {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let n = socket.recv(&mut buf).await?;
            buf.truncate(n);
            Ok(Some(buf))
        }
        Io::Shared { rx, .. } => match rx.recv().await {
            Some(d) => Ok(Some(d)),
            // Listener gone: wait for the clock to end the session.
            None => std::future::pending().await,
        },
    }
}

fn try_recv_more(io: &mut Io, batch: &mut Vec<Vec<u8>>) {
    while batch.len() < BATCH {
        match io {
            Io::Connected(socket) => {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                match socket.try_recv(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        batch.push(buf);
                    }
                    Err(_) => return,
                }
            }
            Io::Shared { rx, .. } => match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => return,
            },
        }
    }
}

/// Opens a KCP session to `server` from a new UDP socket (kcp-go's `DialWithOptions`):
/// a random conversation id, no handshake. Fails only if the socket cannot be set up;
/// an unreachable server shows as a read/write error after `config.dead_after`.
pub async fn dial(server: SocketAddr, config: &Config) -> io::Result<KcpStream> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = udp_socket(local, config)?;
    socket.connect(server).await?;
    let conv = rand::random::<u32>();
    Ok(KcpStream::spawn(
        conv,
        config,
        Io::Connected(Arc::new(socket)),
        server,
        Role::Client,
        || {},
    ))
}

/// A bound UDP socket with kcptun's socket options: `--sockbuf` buffer sizes and
/// `--dscp`.
pub(crate) fn udp_socket(addr: SocketAddr, config: &Config) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort, as kcp-go's SetReadBuffer/SetWriteBuffer (the kernel caps them).
    let _ = socket.set_recv_buffer_size(config.sockbuf);
    let _ = socket.set_send_buffer_size(config.sockbuf);
    if config.dscp != 0 {
        let tos = u32::from(config.dscp) << 2;
        let set = if addr.is_ipv4() {
            socket.set_tos_v4(tos)
        } else {
            socket.set_tclass_v6(tos)
        };
        set.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot set --dscp {}: {e}", config.dscp))
        })?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dscp_and_sockbuf_reach_the_socket() {
        let mut config = Config::client();
        config.dscp = 46;
        config.sockbuf = 64 * 1024;
        let socket = udp_socket("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let s = socket2::SockRef::from(&socket);
        assert_eq!(s.tos_v4().unwrap(), 46 << 2);
        // Linux doubles the size asked for (bookkeeping); other systems take it as is.
        let got = s.recv_buffer_size().unwrap();
        assert!((64 * 1024..=128 * 1024).contains(&got), "{got}");
    }
}
