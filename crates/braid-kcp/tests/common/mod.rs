//! Running Debian's kcptun binaries against braid over KCP: finding them, starting them
//! on free loopback ports, an echo target, braid's own client and server ends, and a
//! lossy UDP relay.
#![allow(dead_code)]

use braid::{Protocol, Session};
use braid_kcp::{Config, Crypt, KcpListener};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::{Child, Command};

/// Every test is cut off after this long, so that a hang fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(50);

/// Runs a test body with [`TEST_TIMEOUT`].
pub async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(v) => v,
        Err(_) => panic!("kcptun test hung: still running after {TEST_TIMEOUT:?}"),
    }
}

/// The path of a kcptun binary (`kcptun-client` or `kcptun-server`), or `None` after
/// saying why; with `BRAID_REQUIRE_INTEROP=1` a missing binary fails the test.
pub fn kcptun(bin: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("BRAID_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("BRAID_REQUIRE_INTEROP=1 but {bin} is not installed (Debian package kcptun)");
        }
        eprintln!(
            "skipping kcptun interop test: {bin} not found (run scripts/install-peers.sh as root)"
        );
    }
    found
}

/// Both kcptun binaries, or `None` (skip).
pub fn both() -> Option<(PathBuf, PathBuf)> {
    Some((kcptun("kcptun-client")?, kcptun("kcptun-server")?))
}

/// The settings both ends must agree on, in kcptun's terms.
#[derive(Clone, Debug)]
pub struct Setup {
    pub crypt: &'static str,
    pub key: &'static str,
    pub nocomp: bool,
    pub ds: usize,
    pub ps: usize,
    pub smux: u8,
}

impl Setup {
    /// kcptun's defaults (aes, default key, snappy, FEC 10/3).
    pub fn default_config(smux: u8) -> Setup {
        Setup {
            crypt: "aes",
            key: braid_kcp::DEFAULT_KEY,
            nocomp: false,
            ds: 10,
            ps: 3,
            smux,
        }
    }

    /// `--crypt none --nocomp --ds 0 --ps 0`.
    pub fn minimal(smux: u8) -> Setup {
        Setup {
            crypt: "none",
            key: braid_kcp::DEFAULT_KEY,
            nocomp: true,
            ds: 0,
            ps: 0,
            smux,
        }
    }

    /// The kcptun flags for this setup.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--crypt".into(),
            self.crypt.into(),
            "--key".into(),
            self.key.into(),
            "--ds".into(),
            self.ds.to_string(),
            "--ps".into(),
            self.ps.to_string(),
            "--smuxver".into(),
            self.smux.to_string(),
        ];
        if self.nocomp {
            a.push("--nocomp".into());
        }
        a
    }

    /// braid-kcp's configuration for this setup.
    pub fn kcp(&self, server: bool) -> Config {
        let mut c = if server {
            Config::server()
        } else {
            Config::client()
        };
        c.crypt = Crypt::new(self.crypt, self.key).unwrap();
        c.data_shards = self.ds;
        c.parity_shards = self.ps;
        c.dead_after = Duration::from_secs(3);
        c
    }

    /// braid's session configuration for this setup.
    pub fn session(&self) -> braid::Config {
        let mut c = braid::Config::new(match self.smux {
            1 => Protocol::SmuxV1,
            _ => Protocol::SmuxV2,
        });
        c.keep_alive_interval = Duration::from_secs(1);
        c
    }
}

/// A free loopback port (UDP or TCP, found by binding port 0).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A running kcptun process; its log lines are kept for assertions. Killed on drop.
pub struct Kcptun {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Kcptun {
    pub fn spawn(bin: &PathBuf, args: &[String]) -> Kcptun {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Kcptun { child, log }
    }

    /// kcptun-server listening on UDP `port`, forwarding to `target`.
    pub fn server(bin: &PathBuf, port: u16, target: SocketAddr, setup: &Setup) -> Kcptun {
        let mut args: Vec<String> = vec![
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-t".into(),
            target.to_string(),
        ];
        args.extend(setup.args());
        Kcptun::spawn(bin, &args)
    }

    /// kcptun-client listening on TCP `port`, to the KCP server `remote`.
    pub fn client(
        bin: &PathBuf,
        port: u16,
        remote: SocketAddr,
        setup: &Setup,
        extra: &[&str],
    ) -> Kcptun {
        let mut args: Vec<String> = vec![
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-r".into(),
            remote.to_string(),
        ];
        args.extend(setup.args());
        args.extend(extra.iter().map(|s| s.to_string()));
        Kcptun::spawn(bin, &args)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Kcptun {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A TCP echo server on loopback.
pub async fn echo_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Connects to a TCP port that a just-started process is about to open (bounded retry).
pub async fn connect_soon(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(tcp) = TcpStream::connect(addr).await {
            return tcp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr} after 5 s");
}

/// `len` pseudo-random bytes; half of every 1 KiB compressible, so that snappy both
/// compresses and stores raw chunks.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|i| {
            if i % 1024 < 512 {
                (i / 1024) as u8
            } else {
                rng.gen()
            }
        })
        .collect()
}

/// Writes `data` and reads the echo back; panics unless every byte matches.
pub async fn echo_check<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: S,
    data: Vec<u8>,
    what: &str,
) {
    let (mut r, mut w) = tokio::io::split(io);
    let len = data.len();
    let writer = async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
        (w, data)
    };
    let reader = async move {
        let mut got = vec![0u8; len];
        r.read_exact(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{what}: echo read: {e}"));
        got
    };
    let ((_w, data), got) = tokio::join!(writer, reader);
    assert!(got == data, "{what}: echoed bytes differ");
}

/// braid's client end: dials `server` over KCP and starts a smux session.
pub async fn braid_client(server: SocketAddr, setup: &Setup) -> (Session, braid_kcp::StatsHandle) {
    let kcp = braid_kcp::dial(server, &setup.kcp(false)).await.unwrap();
    let stats = kcp.stats_handle();
    let io = braid_kcp::with_compression(kcp, !setup.nocomp);
    (Session::client(io, setup.session()).unwrap(), stats)
}

/// Opens `n` streams on `session` at once, each echoing `len` bytes through the target.
pub async fn many_streams(session: &Session, n: usize, len: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let stream = session.open_stream().await.unwrap();
        tasks.push(tokio::spawn(echo_check(
            stream,
            payload(len, i as u64),
            "braid stream",
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Opens `n` TCP connections to `addr` at once, each echoing `len` bytes.
pub async fn many_connections(addr: SocketAddr, n: usize, len: usize) {
    // The first connection waits for the process to listen.
    drop(connect_soon(addr).await);
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            echo_check(tcp, payload(len, 1000 + i as u64), "tcp via kcptun-client").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// What a braid server end saw.
#[derive(Default)]
pub struct ServerSeen {
    /// Why each session ended.
    pub ended: Mutex<Vec<String>>,
    pub sessions: AtomicU64,
}

/// braid's server end: accepts KCP sessions speaking `proto` and echoes every stream.
pub async fn braid_server(
    setup: &Setup,
    proto: Protocol,
) -> (SocketAddr, Arc<ServerSeen>, Arc<braid_kcp::ListenerStats>) {
    let mut listener = KcpListener::bind("127.0.0.1:0".parse().unwrap(), setup.kcp(true))
        .await
        .unwrap();
    let addr = listener.local_addr();
    let stats = listener.stats();
    let seen = Arc::new(ServerSeen::default());
    let (setup, seen2) = (setup.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok(kcp) = listener.accept().await {
            let io = braid_kcp::with_compression(kcp, !setup.nocomp);
            let mut config = setup.session();
            config.protocol = proto;
            let session = Session::server(io, config).unwrap();
            seen2.sessions.fetch_add(1, Ordering::Relaxed);
            let seen = seen2.clone();
            tokio::spawn(async move {
                while let Some(stream) = session.accept_stream().await {
                    tokio::spawn(async move {
                        let (mut r, mut w) = tokio::io::split(stream);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    });
                }
                let reason = session.closed().await;
                seen.ended.lock().unwrap().push(reason.to_string());
            });
        }
    });
    (addr, seen, stats)
}

/// A UDP relay between a client and `server` that drops `loss` of the datagrams each way
/// and swaps some neighbours (holds one back until the next passes). Returns its address
/// and the count of datagrams dropped.
pub async fn lossy_relay(server: SocketAddr, loss: f64, seed: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let dropped = Arc::new(AtomicU64::new(0));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    // client -> server
    {
        let (front, back, dropped, client) =
            (front.clone(), back.clone(), dropped.clone(), client.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut held: Option<Vec<u8>> = None;
            let mut buf = vec![0u8; 2048];
            loop {
                // An ICMP error from an earlier send shows up here: keep relaying.
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                *client.lock().unwrap() = Some(from);
                relay_one(&buf[..n], &mut rng, loss, &mut held, &dropped, |d| {
                    let _ = back.try_send(d);
                });
            }
        });
    }
    // server -> client
    let count = dropped.clone();
    tokio::spawn(async move {
        let dropped = count;
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let mut held: Option<Vec<u8>> = None;
        let mut buf = vec![0u8; 2048];
        loop {
            // Port unreachable (the server not up yet) shows up here: keep relaying.
            let Ok(n) = back.recv(&mut buf).await else {
                continue;
            };
            let Some(to) = *client.lock().unwrap() else {
                continue;
            };
            relay_one(&buf[..n], &mut rng, loss, &mut held, &dropped, |d| {
                let _ = front.try_send_to(d, to);
            });
        }
    });
    (addr, dropped)
}

fn relay_one(
    d: &[u8],
    rng: &mut StdRng,
    loss: f64,
    held: &mut Option<Vec<u8>>,
    dropped: &AtomicU64,
    mut send: impl FnMut(&[u8]),
) {
    if rng.gen_bool(loss) {
        dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if held.is_none() && rng.gen_bool(0.05) {
        *held = Some(d.to_vec());
        return;
    }
    send(d);
    if let Some(h) = held.take() {
        send(&h);
    }
}
