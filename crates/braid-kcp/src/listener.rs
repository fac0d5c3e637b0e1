//! The server side: one UDP socket, sessions keyed by the datagram's source address as
//! in kcp-go's `Listener`. The first valid non-parity packet from a new address opens a
//! session with its conversation id (KCP has no handshake).
//!
//! Bounds against a flood: datagrams that fail the checksum cost a decryption and
//! nothing else; at most `max_sessions` sessions exist (more are refused, not queued);
//! at most `accept_backlog` wait to be accepted; each session's inbox holds at most
//! `INBOX` datagrams (more are dropped, as the network would); a session that hears
//! nothing valid for `idle_timeout` ends and is forgotten.

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
        let socket = Arc::new(crate::stream::udp_socket(addr)?);
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

async fn receive(
    socket: Arc<UdpSocket>,
    config: Config,
    sessions: Sessions,
    accept: mpsc::Sender<KcpStream>,
    stats: Arc<ListenerStats>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    let mut last_warn: Option<Instant> = None;
    let mut warn = |msg: String| {
        if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            last_warn = Some(Instant::now());
            tracing::warn!("{msg}");
        }
    };
    loop {
        let closed = accept.is_closed();
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
        if closed {
            continue; // no new sessions once the listener is dropped
        }
        // A new address: it must pass the checksum and carry a KCP segment.
        let mut copy = datagram.to_vec();
        let conv = match codec::open(&config.crypt, &mut copy) {
            Ok(body) => codec::first_conv(body),
            Err(codec::DecodeError::Checksum) => {
                stats.bad_checksum.fetch_add(1, Ordering::Relaxed);
                warn(format!(
                    "datagrams from {from} fail the checksum: the client's --key and --crypt \
                     must match this server's (--crypt {})",
                    config.crypt.name()
                ));
                continue;
            }
            Err(_) => continue,
        };
        let Some(conv) = conv else { continue };
        let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= config.max_sessions || accept.capacity() == 0 {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(map);
            warn(format!(
                "refusing a session from {from}: {} sessions open (max {}) or {} waiting",
                sessions.lock().unwrap_or_else(|e| e.into_inner()).len(),
                config.max_sessions,
                config.accept_backlog
            ));
            continue;
        }
        next_id += 1;
        let id = next_id;
        let (tx, rx) = mpsc::channel(INBOX);
        let _ = tx.try_send(datagram.to_vec());
        map.insert(from, Entry { id, tx });
        drop(map);
        let forget = sessions.clone();
        let stream = KcpStream::spawn(
            conv,
            &config,
            Io::Shared {
                socket: socket.clone(),
                peer: from,
                rx,
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
        stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%from, conv, "kcp session opened");
        // Capacity was checked above and only this task sends.
        let _ = accept.try_send(stream);
    }
}
