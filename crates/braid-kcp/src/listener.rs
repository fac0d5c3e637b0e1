//! The server side: one UDP socket, sessions keyed by the datagram's source address as
//! in kcp-go's `Listener`. The first valid non-parity packet from a new address opens a
//! session with its conversation id (KCP has no handshake).
//!
//! Bounds against a flood: datagrams that fail the checksum cost a decryption and
//! nothing else; at most `max_sessions` sessions exist (more are refused, not queued);
//! at most `accept_backlog` wait to be accepted; each session's inbox holds at most
//! `INBOX` datagrams (more are dropped, as the network would); a session that hears
//! nothing valid for `idle_timeout` ends and is forgotten.
//!
//! A known address whose datagram starts another conversation (another conversation
//! id, sequence number 0: a client restarted on the same port) replaces its session at
//! once, as kcp-go's listener does; another id with a later sequence number is dropped.

use crate::codec::{self, MAX_DATAGRAM};
use crate::config::Config;
use crate::stream::{Io, KcpStream, Role};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

/// Datagrams queued for one session (a full window's burst at kcptun's largest default).
const INBOX: usize = 1024;
/// At most one warning per this long about refused or undecodable datagrams.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Counters of a listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Sessions opened.
    pub sessions_opened: AtomicU64,
    /// Datagrams from unknown addresses that failed the checksum.
    pub bad_checksum: AtomicU64,
    /// Datagrams that would have opened a session past `max_sessions` or the backlog.
    pub refused: AtomicU64,
    /// Datagrams dropped because a session's inbox was full.
    pub inbox_full: AtomicU64,
    /// Sessions replaced by a new conversation from the same address.
    pub sessions_replaced: AtomicU64,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Entry>>>;

/// Accepts KCP sessions on a UDP socket.
pub struct KcpListener {
    local: SocketAddr,
    accept: mpsc::Receiver<KcpStream>,
    sessions: Sessions,
    stats: Arc<ListenerStats>,
}

impl KcpListener {
    /// Binds `addr` and starts receiving.
    pub async fn bind(addr: SocketAddr, config: Config) -> io::Result<KcpListener> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let socket = Arc::new(crate::stream::udp_socket(addr, &config)?);
        let local = socket.local_addr()?;
        let (accept_tx, accept) = mpsc::channel(config.accept_backlog);
        let sessions: Sessions = Arc::default();
        let stats = Arc::new(ListenerStats::default());
        tokio::spawn(receive(
            socket,
            config,
            sessions.clone(),
            accept_tx,
            stats.clone(),
        ));
        Ok(KcpListener {
            local,
            accept,
            sessions,
            stats,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next new session.
    pub async fn accept(&mut self) -> io::Result<KcpStream> {
        self.accept
            .recv()
            .await
            .ok_or_else(|| io::Error::other("kcp listener stopped"))
    }

    /// Sessions alive now.
    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }
}

impl Drop for KcpListener {
    fn drop(&mut self) {
        // Accepted sessions share the socket: the receive task keeps feeding them (and
        // opens no new ones) until the last has ended, then closes the socket.
        self.accept.close();
    }
}

/// A datagram a session gave back: it opens another conversation from the session's
/// address (kcp-go's listener then replaces the session).
pub(crate) struct Reopen {
    pub(crate) from: SocketAddr,
    /// The giving session's id in the map.
    pub(crate) id: u64,
    /// The datagram as it arrived.
    pub(crate) datagram: Vec<u8>,
}

/// What the receive task needs to open sessions.
struct Opener {
    socket: Arc<UdpSocket>,
    config: Config,
    sessions: Sessions,
    accept: mpsc::Sender<KcpStream>,
    stats: Arc<ListenerStats>,
    reopen: mpsc::Sender<Reopen>,
    next_id: u64,
    last_warn: Option<Instant>,
}

impl Opener {
    fn warn(&mut self, msg: String) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            tracing::warn!("{msg}");
        }
    }

    /// A datagram from an address without a session: it must pass the checksum and
    /// carry a KCP segment to open one.
    fn open(&mut self, from: SocketAddr, datagram: &[u8]) {
        let mut copy = datagram.to_vec();
        let conv = match codec::open(&self.config.crypt, &mut copy) {
            Ok(body) => codec::first_conv(body),
            Err(codec::DecodeError::Checksum) => {
                self.stats.bad_checksum.fetch_add(1, Ordering::Relaxed);
                self.config.counters.bad_checksum();
                let crypt = self.config.crypt.name();
                self.warn(format!(
                    "datagrams from {from} fail the checksum: the client's --key and --crypt \
                     must match this server's (--crypt {crypt})"
                ));
                return;
            }
            Err(_) => return,
        };
        let Some(conv) = conv else { return };
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.config.max_sessions || self.accept.capacity() == 0 {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let open = map.len();
            drop(map);
            let (max, backlog) = (self.config.max_sessions, self.config.accept_backlog);
            self.warn(format!(
                "refusing a session from {from}: {open} sessions open (max {max}) or \
                 {backlog} waiting"
            ));
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel(INBOX);
        let _ = tx.try_send(datagram.to_vec());
        map.insert(from, Entry { id, tx });
        drop(map);
        let forget = self.sessions.clone();
        let stream = KcpStream::spawn(
            conv,
            &self.config,
            Io::Shared {
                socket: self.socket.clone(),
                peer: from,
                rx,
                id,
                reopen: self.reopen.clone(),
            },
            from,
            Role::Server,
            move || {
                let mut map = forget.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&from).is_some_and(|e| e.id == id) {
                    map.remove(&from);
                }
            },
        );
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%from, conv, "kcp session opened");
        // Capacity was checked above and only this task sends.
        let _ = self.accept.try_send(stream);
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    config: Config,
    sessions: Sessions,
    accept: mpsc::Sender<KcpStream>,
    stats: Arc<ListenerStats>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (reopen, mut reopened) = mpsc::channel(16);
    let mut opener = Opener {
        socket: socket.clone(),
        config,
        sessions: sessions.clone(),
        accept,
        stats: stats.clone(),
        reopen,
        next_id: 0,
        last_warn: None,
    };
    loop {
        let closed = opener.accept.is_closed();
        if closed
            && sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            return; // listener dropped and every session over: close the socket
        }
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            Some(r) = reopened.recv() => {
                let Reopen { from, id, datagram } = r;
                let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&from).is_some_and(|e| e.id == id) {
                    map.remove(&from);
                }
                drop(map);
                if !closed {
                    stats.sessions_replaced.fetch_add(1, Ordering::Relaxed);
                    opener.open(from, &datagram);
                }
                continue;
            }
            // Once the listener is dropped, look again now and then for the last session's end.
            _ = tokio::time::sleep(Duration::from_secs(1)), if closed => continue,
        };
        let (n, from) = match received {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors from earlier sends and the like: keep serving.
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        let datagram = &buf[..n];
        {
            let map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get(&from) {
                if entry.tx.try_send(datagram.to_vec()).is_err() {
                    stats.inbox_full.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        }
        if !closed {
            opener.open(from, datagram); // no new sessions once the listener is dropped
        }
    }
}
