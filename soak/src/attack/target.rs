//! The target the server forwards every stream to. Connections that start with
//! [`PROBE_MAGIC`] (the normal client's) are echoed; the others get the attack's
//! [`Mode`]. The first bytes are only peeked at, so a sink never reads anything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the normal client sends first on each stream.
pub const PROBE_MAGIC: &[u8; 8] = b"BRAIDPRB";

/// How long a connection may stay silent before it is taken for an attacker's: the
/// normal client sends its magic at once, but a server busy with an attack may forward
/// it late. (A sink gains nothing by deciding early; a source starts writing late.)
const DECIDE: Duration = Duration::from_secs(2);

/// Receive buffer of accepted connections: small, so that a sink fills at once and the
/// data a flood sends piles up in braid rather than in the kernel.
const RCVBUF: u32 = 16 * 1024;

/// What the target does with an attacker's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Accept and never read.
    Sink = 0,
    /// Echo everything, close after end of file.
    Echo = 1,
    /// Never read, write as fast as the connection takes.
    Source = 2,
}

/// A running target.
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    /// Of these, the normal client's.
    probes: Arc<AtomicU64>,
    /// Attackers' connections in [`Mode::Source`] that started writing.
    pub sourcing: Arc<AtomicU64>,
}

impl Target {
    /// Listens on `addr` (port 0: any).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Target> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_recv_buffer_size(RCVBUF)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(Mode::Sink as u8));
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let probes = Arc::new(AtomicU64::new(0));
        let sourcing = Arc::new(AtomicU64::new(0));
        let (m, g, a) = (mode.clone(), generation.clone(), accepted.clone());
        let (p, so) = (probes.clone(), sourcing.clone());
        tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        // Out of fds (a SYN flood): wait for some to be freed.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                a.fetch_add(1, Ordering::Relaxed);
                let mode = match m.load(Ordering::Relaxed) {
                    0 => Mode::Sink,
                    1 => Mode::Echo,
                    _ => Mode::Source,
                };
                let mut stop = g.subscribe();
                let (p, so) = (p.clone(), so.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(tcp, mode, &p, &so) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Ok(Target {
            addr,
            mode,
            generation,
            accepted,
            probes,
            sourcing,
        })
    }

    /// Sets the mode of connections accepted from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Connections accepted so far that are not (or not yet known to be) the normal
    /// client's.
    pub fn attackers(&self) -> u64 {
        let probes = self.probes.load(Ordering::Relaxed);
        self.accepted.load(Ordering::Relaxed).saturating_sub(probes)
    }

    /// Drops every connection accepted so far.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn serve(mut tcp: TcpStream, mode: Mode, probes: &AtomicU64, sourcing: &AtomicU64) {
    if is_probe(&tcp).await {
        probes.fetch_add(1, Ordering::Relaxed);
        return echo(&mut tcp).await;
    }
    match mode {
        Mode::Sink => std::future::pending().await,
        Mode::Echo => echo(&mut tcp).await,
        Mode::Source => {
            sourcing.fetch_add(1, Ordering::Relaxed);
            let chunk = vec![b's'; 64 * 1024];
            while tcp.write_all(&chunk).await.is_ok() {}
            std::future::pending().await
        }
    }
}

/// Peeks at the first bytes (never consuming them) for [`PROBE_MAGIC`].
async fn is_probe(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 8];
    let decide = async {
        loop {
            let n = tcp.peek(&mut buf).await.unwrap_or(0);
            if n == 0 || buf[..n] != PROBE_MAGIC[..n] {
                return false;
            }
            if n == buf.len() {
                return true;
            }
            // A prefix of the magic: the rest is on its way.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(DECIDE, decide).await.unwrap_or(false)
}

async fn echo(tcp: &mut TcpStream) {
    let (mut r, mut w) = tcp.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
    let mut rest = [0u8; 1];
    let _ = r.read(&mut rest).await;
}
