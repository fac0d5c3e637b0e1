//! The tunnel workload: port forwarding as a user runs it, in separate processes.
//!
//! One child of `braid bench` is the load: a sink target and `N` TCP connections that
//! each push their bytes through the tunnel to it (in `chunk`-sized writes) and wait for
//! a one-byte reply once the sink has them all. The tunnel is two more processes started
//! by that child: `braid server` + `braid client` (this executable), or the Go tunnel
//! modes of the interop peer (`-mode tunnel-server` + `-mode tunnel-client`); `tcp`
//! connects straight to the sink. Reported: MB/s of payload, and the CPU seconds and
//! peak RSS of the two tunnel processes (read from /proc before they are stopped).
//!
//! The exchange is "send everything, read the reply, close", without half-closing first:
//! the Go tunnel closes a connection as a whole when either direction ends.

use super::sample::Sample;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The byte the sink replies with once it has a connection's bytes.
const REPLY: u8 = 0xA5;
/// How long a tunnel process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process whose stdout closed may take to exit before it counts as running.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Who carries the connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// Straight to the sink: the baseline.
    Direct,
    /// `braid server` + `braid client` speaking `proto`, secured by `auth`.
    Braid {
        /// smux1, smux2 or yamux.
        proto: &'static str,
        /// How the carrier is secured.
        auth: Auth,
    },
    /// The Go tunnel modes of the interop peer, speaking `proto`.
    Go {
        /// smux1, smux2 or yamux.
        proto: &'static str,
    },
}

/// Authentication of braid's carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Plain TCP (`--no-auth` is not needed on loopback).
    None,
    /// `--psk-file` on both ends (Noise, encrypted).
    Psk,
    /// Mutual TLS (`--tls-client-ca` on the server, a client certificate).
    Mtls,
}

impl Carrier {
    /// The carrier a child's `--lib` names in the tunnel workload.
    pub fn from_lib(lib: &str) -> Option<Carrier> {
        let proto = |p: &str| ["smux1", "smux2", "yamux"].into_iter().find(|&k| k == p);
        if lib == "tcp" {
            return Some(Carrier::Direct);
        }
        if let Some(p) = lib.strip_prefix("go-") {
            return Some(Carrier::Go { proto: proto(p)? });
        }
        let rest = lib.strip_prefix("braid-")?;
        let (p, auth) = match rest.split_once('+') {
            None => (rest, Auth::None),
            Some((p, "psk")) => (p, Auth::Psk),
            Some((p, "mtls")) => (p, Auth::Mtls),
            Some(_) => return None,
        };
        Some(Carrier::Braid {
            proto: proto(p)?,
            auth,
        })
    }
}

/// Runs the workload: `conns` connections of `per_conn` bytes each through `carrier`.
/// `go_peer` is the interop peer (needed for [`Carrier::Go`]).
pub async fn run(
    carrier: Carrier,
    conns: usize,
    per_conn: u64,
    chunk: usize,
    go_peer: Option<PathBuf>,
) -> io::Result<Sample> {
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let sink_task = tokio::spawn(serve_sink(sink, conns, per_conn, chunk));
    let tunnel = {
        let carrier = carrier.clone();
        tokio::task::spawn_blocking(move || Tunnel::start(&carrier, sink_addr, go_peer))
            .await
            .map_err(io::Error::other)??
    };
    let entry = tunnel.entry.unwrap_or(sink_addr);

    let payload: Arc<[u8]> = vec![0x5Au8; chunk].into();
    let cpu0 = tunnel.cpu_seconds();
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..conns {
        senders.spawn(send(entry, per_conn, payload.clone()));
    }
    let mut sent: io::Result<()> = Ok(());
    while let Some(r) = senders.join_next().await {
        if let Err(e) = r.map_err(io::Error::other).and_then(|r| r) {
            sent = sent.and(Err(e));
            senders.abort_all();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = tunnel.cpu_seconds() - cpu0;
    let rss = tunnel.peak_rss_kib();
    if let Err(e) = sent {
        let mut tunnel = tunnel;
        let why = tunnel.diagnostics();
        sink_task.abort();
        return Err(io::Error::new(e.kind(), format!("{e}{why}")));
    }
    sink_task.await.map_err(io::Error::other)??;
    drop(tunnel);
    let bytes = per_conn * conns as u64;
    Ok(Sample {
        ok: true,
        elapsed_s: elapsed,
        bytes,
        streams: conns as u64,
        mb_per_s: Some(bytes as f64 / elapsed / 1e6),
        cpu_s: cpu,
        peak_rss_kib: rss,
        ..Sample::default()
    })
}

/// One connection: its bytes, then the reply.
async fn send(entry: SocketAddr, bytes: u64, payload: Arc<[u8]>) -> io::Result<()> {
    let mut tcp = TcpStream::connect(entry).await?;
    tcp.set_nodelay(true)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(payload.len() as u64) as usize;
        tcp.write_all(&payload[..n]).await?;
        left -= n as u64;
    }
    let mut reply = [0u8; 1];
    match tcp.read(&mut reply).await? {
        1 if reply[0] == REPLY => Ok(()),
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended without the sink's reply",
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("wrong reply byte {:#04x}", reply[0]),
        )),
    }
}

/// Accepts `conns` connections; each must carry exactly `per_conn` bytes.
async fn serve_sink(
    listener: TcpListener,
    conns: usize,
    per_conn: u64,
    chunk: usize,
) -> io::Result<()> {
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (tcp, _) = listener.accept().await?;
        tasks.spawn(async move {
            let mut tcp = tcp;
            tcp.set_nodelay(true)?;
            let mut buf = vec![0u8; chunk];
            let mut got = 0u64;
            while got < per_conn {
                let want = (per_conn - got).min(chunk as u64) as usize;
                let n = tcp.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("sink: a connection ended after {got} of {per_conn} bytes"),
                    ));
                }
                got += n as u64;
            }
            tcp.write_all(&[REPLY]).await?;
            // Until the sender closes: anything more is an error.
            let n = tcp.read(&mut buf).await?;
            if n > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("sink: more than {per_conn} bytes on a connection"),
                ));
            }
            io::Result::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(io::Error::other)??;
    }
    Ok(())
}

/// A tunnel process, killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
    /// What it wrote on stderr, line by line, kept for error messages.
    stderr: Arc<Mutex<String>>,
    /// The thread reading stderr: done once the process has exited.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` and waits for the address it listens on (its first stdout line:
    /// braid's `listening on ADDR`, or the Go peer's `{"event":"listening","addr":...}`).
    fn start(mut cmd: Command, name: &'static str) -> io::Result<(Proc, SocketAddr)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start the {name}: {e}")))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let keep = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = keep.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        });
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            // Reads every line, so that a chatty process never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        let mut proc = Proc {
            child,
            name,
            stderr,
            stderr_reader,
        };
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|e| {
            let status = match e {
                // Its stdout closed: it is exiting. Its status follows shortly (a
                // try_wait right away could still find it running).
                mpsc::RecvTimeoutError::Disconnected => proc.exit_status(EXIT_WAIT),
                mpsc::RecvTimeoutError::Timeout => proc.child.try_wait().ok().flatten(),
            };
            io::Error::other(format!(
                "the {name} did not start listening ({}){}",
                status.map_or("still running".into(), |s| s.to_string()),
                proc.stderr_tail()
            ))
        })?;
        let addr = listening_addr(&line).ok_or_else(|| {
            io::Error::other(format!(
                "the {name} printed {line:?}, not its address{}",
                proc.stderr_tail()
            ))
        })?;
        std::thread::spawn(move || rx.into_iter().for_each(drop));
        Ok((proc, addr))
    }

    /// Its exit status, waiting for it up to `within`.
    fn exit_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// The line of its stderr that says what went wrong: a usage error, or the last one.
    fn stderr_tail(&mut self) -> String {
        if let Ok(Some(_)) = self.child.try_wait() {
            // Exited: its stderr is closed, so the reader finishes.
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        let text = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        // clap's usage errors end with a hint: the line that says what went wrong.
        let line = text.lines().find(|l| l.starts_with("error:"));
        match line.or_else(|| text.lines().rev().find(|l| !l.trim().is_empty())) {
            Some(last) => format!(": {last}"),
            None => String::new(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `listening` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Some(addr) = line.trim().strip_prefix("listening on ") {
        return addr.parse().ok();
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["event"] == "listening").then(|| v["addr"].as_str()?.parse().ok())?
}

/// The running tunnel (none for direct TCP).
struct Tunnel {
    procs: Vec<Proc>,
    /// Where the load connects: the tunnel client's listener.
    entry: Option<SocketAddr>,
    /// Key and certificate files, removed on drop.
    dir: Option<PathBuf>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.procs.clear();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Tunnel {
    fn start(carrier: &Carrier, sink: SocketAddr, go_peer: Option<PathBuf>) -> io::Result<Tunnel> {
        let mut tunnel = Tunnel {
            procs: Vec::new(),
            entry: None,
            dir: None,
        };
        let sink = sink.to_string();
        match carrier {
            Carrier::Direct => {}
            Carrier::Braid { proto, auth } => {
                let braid = std::env::current_exe()?;
                let (server_auth, client_auth) = match auth {
                    Auth::None => (Vec::new(), Vec::new()),
                    Auth::Psk => {
                        let dir = tunnel.temp_dir()?;
                        let key = write(&dir, "psk", &psk_hex())?;
                        let flags = vec!["--psk-file".to_string(), key];
                        (flags.clone(), flags)
                    }
                    Auth::Mtls => mtls_flags(&tunnel.temp_dir()?)?,
                };
                let flags = |var: &str| -> Vec<String> {
                    let v = std::env::var(var).unwrap_or_default();
                    v.split_whitespace().map(String::from).collect()
                };
                let extra = flags("BRAID_BENCH_TUNNEL_FLAGS");
                let client_extra = flags("BRAID_BENCH_TUNNEL_CLIENT_FLAGS");
                let mut cmd = Command::new(&braid);
                cmd.args(["server", "--listen", "127.0.0.1:0", "--target", &sink])
                    .args(["--proto", proto])
                    .args(&server_auth)
                    .args(&extra);
                let (server, server_addr) = Proc::start(cmd, "braid server")?;
                tunnel.procs.push(server);
                let mut cmd = Command::new(&braid);
                cmd.args(["client", "--listen", "127.0.0.1:0", "--server"])
                    .arg(server_addr.to_string())
                    .args(["--proto", proto])
                    .args(&client_auth)
                    .args(&extra)
                    .args(&client_extra);
                let (client, entry) = Proc::start(cmd, "braid client")?;
                tunnel.procs.push(client);
                tunnel.entry = Some(entry);
            }
            Carrier::Go { proto } => {
                let peer = go_peer.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no Go tunnel (--go-peer)")
                })?;
                // A watchdog that outlives any run; the process is killed at the end.
                let common = ["-proto", proto, "-timeout", "3600s"];
                let mut cmd = Command::new(&peer);
                cmd.args(["-mode", "tunnel-server", "-addr", "127.0.0.1:0", "-target"])
                    .arg(&sink)
                    .args(common);
                let (server, server_addr) = Proc::start(cmd, "Go tunnel-server")?;
                tunnel.procs.push(server);
                let mut cmd = Command::new(&peer);
                cmd.args(["-mode", "tunnel-client", "-listen", "127.0.0.1:0", "-addr"])
                    .arg(server_addr.to_string())
                    .args(common);
                let (client, entry) = Proc::start(cmd, "Go tunnel-client")?;
                tunnel.procs.push(client);
                tunnel.entry = Some(entry);
            }
        }
        Ok(tunnel)
    }

    fn temp_dir(&mut self) -> io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("braid-bench-tunnel-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        self.dir = Some(dir.clone());
        Ok(dir)
    }

    /// User + system CPU seconds of the tunnel processes so far.
    fn cpu_seconds(&self) -> f64 {
        self.procs
            .iter()
            .map(|p| super::sample::cpu_seconds_of(&format!("/proc/{}/stat", p.child.id())))
            .sum()
    }

    /// The sum of the tunnel processes' peak RSS, KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.procs
            .iter()
            .map(|p| {
                super::sample::status_kib_of(&format!("/proc/{}/status", p.child.id()), "VmHWM:")
            })
            .sum()
    }

    /// Whatever the tunnel processes said before a failure.
    fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for p in &mut self.procs {
            let tail = p.stderr_tail();
            if !tail.is_empty() {
                out.push_str(&format!(" ({}{tail})", p.name));
            }
        }
        out
    }
}

fn write(dir: &Path, name: &str, text: &str) -> io::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// A key for one run. Not secret (the benchmark measures, nothing is protected), so
/// time and process id are enough to make it differ between runs.
fn psk_hex() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    (0..4u64)
        .map(|i| {
            format!(
                "{:016x}",
                seed.rotate_left(i as u32 * 16) ^ (i * 0x9E37_79B9)
            )
        })
        .collect()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written to `dir`;
/// returns the server's and the client's flags.
fn mtls_flags(dir: &Path) -> io::Result<(Vec<String>, Vec<String>)> {
    let err = |e: rcgen::Error| io::Error::other(format!("making certificates: {e}"));
    let mut ca = rcgen::CertificateParams::new(vec![]).map_err(err)?;
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "braid bench CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let ca_pem = ca.self_signed(&ca_key).map_err(err)?.pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let signed = |name: &str| -> io::Result<(String, String)> {
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = signed("127.0.0.1")?;
    let (client_cert, client_key) = signed("bench-client")?;
    let ca = write(dir, "ca.pem", &ca_pem)?;
    let server = [
        "--tls-cert".into(),
        write(dir, "server.pem", &server_cert)?,
        "--tls-key".into(),
        write(dir, "server.key", &server_key)?,
        "--tls-client-ca".into(),
        ca.clone(),
    ];
    let client = [
        "--tls-ca".into(),
        ca,
        "--tls-cert".into(),
        write(dir, "client.pem", &client_cert)?,
        "--tls-key".into(),
        write(dir, "client.key", &client_key)?,
    ];
    Ok((server.to_vec(), client.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libs_name_carriers() {
        assert_eq!(Carrier::from_lib("tcp"), Some(Carrier::Direct));
        assert_eq!(
            Carrier::from_lib("braid-yamux+psk"),
            Some(Carrier::Braid {
                proto: "yamux",
                auth: Auth::Psk
            })
        );
        assert_eq!(
            Carrier::from_lib("braid-smux2"),
            Some(Carrier::Braid {
                proto: "smux2",
                auth: Auth::None
            })
        );
        assert_eq!(
            Carrier::from_lib("go-smux1"),
            Some(Carrier::Go { proto: "smux1" })
        );
        assert_eq!(Carrier::from_lib("braid-yamux+tls"), None);
        assert_eq!(Carrier::from_lib("go-quic"), None);
        assert_eq!(Carrier::from_lib("yamux"), None);
        assert_eq!(psk_hex().len(), 64);
    }

    #[test]
    fn listening_lines() {
        let want: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(listening_addr("listening on 127.0.0.1:4000"), Some(want));
        assert_eq!(
            listening_addr(r#"{"event":"listening","addr":"127.0.0.1:4000"}"#),
            Some(want)
        );
        assert_eq!(listening_addr(r#"{"event":"error","msg":"x"}"#), None);
        assert_eq!(listening_addr("hello"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_connections_reach_the_sink() {
        let s = run(Carrier::Direct, 3, 100_000, 4096, None).await.unwrap();
        assert!(s.ok);
        assert_eq!((s.bytes, s.streams), (300_000, 3));
        assert!(s.mb_per_s.unwrap() > 0.0);
    }
}
