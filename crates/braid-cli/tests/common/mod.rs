//! Test helpers: in-process tunnel ends, TCP targets, random payloads.
#![allow(dead_code)] // each test binary uses a part

use braid_cli::tunnel::{Client, ClientArgs, Error, Server, ServerArgs, Snapshot, Stats};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every test body runs under this bound.
pub const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs `f` and fails the test if it takes longer than [`TEST_BOUND`].
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test took too long")
}

#[derive(Parser)]
struct ServerCli {
    #[command(flatten)]
    args: ServerArgs,
}

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    args: ClientArgs,
}

/// The `braid` binary under test.
pub const BRAID: &str = env!("CARGO_BIN_EXE_braid");

/// Runs `braid ARGS...` to its end, with the environment variables `env` added;
/// returns the exit code, stdout and stderr.
pub async fn run_braid(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BRAID)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A tunnel end running in this process.
pub struct Running {
    /// Its listening address.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Fires its shutdown.
    pub stop: CancellationToken,
    /// Its `run`.
    pub task: JoinHandle<Result<(), Error>>,
    /// Client only: carriers up.
    pub carriers: Option<watch::Receiver<usize>>,
    /// With `--metrics`: where metrics are served.
    pub metrics: Option<SocketAddr>,
}

impl Running {
    /// Shuts down and waits for `run` to return.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Shuts down, which waits for the forwarding tasks, and returns the final counts.
    pub async fn final_counts(self) -> Snapshot {
        let stats = self.stats.clone();
        self.shutdown().await;
        stats.snapshot()
    }

    /// Client only: waits until `n` carriers are up.
    pub async fn wait_carriers(&mut self, n: usize) {
        let rx = self.carriers.as_mut().expect("a client");
        rx.wait_for(|&up| up == n).await.unwrap();
    }
}

/// Starts `braid server --listen 127.0.0.1:0 --target TARGET ARGS...` in-process.
pub async fn start_server(target: SocketAddr, args: &[&str]) -> Running {
    let target = target.to_string();
    let argv = ["server", "--listen", "127.0.0.1:0", "--target", &target];
    let cli = ServerCli::try_parse_from(argv.iter().chain(args)).unwrap();
    let server = Server::bind(cli.args.resolve().unwrap()).await.unwrap();
    let (addr, stats, metrics) = (server.local_addr(), server.stats(), server.metrics_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Running {
        addr,
        stats,
        stop,
        task,
        carriers: None,
        metrics,
    }
}

/// `braid client` for `server` with `args`, bound but not started.
pub async fn bind_client(server: SocketAddr, args: &[&str]) -> Result<Client, Error> {
    let server = server.to_string();
    let argv = ["client", "--listen", "127.0.0.1:0", "--server", &server];
    let cli = ClientCli::try_parse_from(argv.iter().chain(args)).unwrap();
    Client::bind(cli.args.resolve()?).await
}

/// Starts `braid client --listen 127.0.0.1:0 --server SERVER ARGS...` in-process.
pub async fn start_client(server: SocketAddr, args: &[&str]) -> Running {
    let client = bind_client(server, args).await.unwrap();
    let (addr, stats, carriers) = (client.local_addr(), client.stats(), client.carriers());
    let metrics = client.metrics_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(stop.clone()));
    Running {
        addr,
        stats,
        stop,
        task,
        carriers: Some(carriers),
        metrics,
    }
}

/// A TCP echo server: each direction copied until EOF, then the FIN passed on.
pub async fn echo_target() -> SocketAddr {
    counting_target().await.0
}

/// An [`echo_target`] that counts the connections it accepted.
pub async fn counting_target() -> (SocketAddr, watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tx.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    (addr, rx)
}

/// An HTTP/1 server answering every request with its body and `x-sha256`.
pub async fn http_echo_server() -> SocketAddr {
    async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok(Response::builder()
            .header("x-sha256", sha256_hex(&body))
            .body(Full::new(body))
            .unwrap())
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(echo);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// `conns` concurrent keep-alive connections through `entry` to an [`http_echo_server`],
/// each sending `requests` POSTs of up to 64 KiB (seeds from `first_seed` on) and
/// checking every response; each connection is closed once all its answers are in.
pub async fn http_connections(entry: SocketAddr, conns: u64, requests: u64, first_seed: u64) {
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            tokio::spawn(async move {
                let tcp = TcpStream::connect(entry).await.unwrap();
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                let conn = tokio::spawn(conn);
                for k in 0..requests {
                    let seed = first_seed + i * requests + k;
                    let body = random_bytes(seed, (seed as usize * 331) % (64 * 1024));
                    let want = sha256_hex(&body);
                    let req = Request::post(format!("/echo/{seed}"))
                        .header("host", "origin")
                        .body(Full::new(Bytes::from(body.clone())))
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200, "request {seed}");
                    assert_eq!(resp.headers()["x-sha256"], want.as_str(), "request {seed}");
                    let got = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(got.len(), body.len(), "request {seed}");
                    assert_eq!(sha256_hex(&got), want, "request {seed}");
                }
                // Every response is in: closing the connection now loses nothing.
                drop(sender);
                conn.await.unwrap().unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A port on 127.0.0.1 that nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `data` through `addr` (writing in `chunk`s, then half-closing) while reading
/// the reply to its end; returns the reply's length and SHA-256.
pub async fn echo_through(addr: SocketAddr, data: Vec<u8>, chunk: usize) -> (usize, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let writer = tokio::spawn(async move {
        for part in data.chunks(chunk.max(1)) {
            w.write_all(part).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut reply = Vec::new();
    r.read_to_end(&mut reply).await.unwrap();
    writer.await.unwrap();
    (reply.len(), sha256_hex(&reply))
}

/// Asserts that an echo of `len` bytes through `addr` comes back intact.
pub async fn assert_echo(addr: SocketAddr, seed: u64, len: usize) {
    let data = random_bytes(seed, len);
    let want = (data.len(), sha256_hex(&data));
    assert_eq!(
        echo_through(addr, data, 16 * 1024).await,
        want,
        "seed {seed}"
    );
}

/// One connection through `addr`: sends `len` random bytes from `seed` while reading
/// the echo, checks all `len` bytes of it, then closes, with no half-close before the
/// reply: kcptun and the Go tunnel close both directions of a stream when either ends.
pub async fn echo_unclosed(addr: SocketAddr, seed: u64, len: usize) {
    let data = random_bytes(seed, len);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        for part in to_send.chunks(16 * 1024) {
            w.write_all(part).await.unwrap();
        }
        w // dropped only after the reply is read
    });
    let mut reply = vec![0u8; len];
    r.read_exact(&mut reply)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: echo of {len} bytes: {e}"));
    let _w = writer.await.unwrap();
    assert!(
        reply == data,
        "seed {seed}: echo of {len} bytes differs: got sha256 {}, sent {}",
        sha256_hex(&reply),
        sha256_hex(&data)
    );
}

/// Connects to `addr` and expects the connection to be closed on us without any data,
/// e.g. because the tunnel could not reach the target. Returns true if it was reset
/// rather than ended with FIN.
pub async fn assert_refused(addr: SocketAddr) -> bool {
    // The tunnel may reset the connection so fast that even `connect` reports it.
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = tcp.write_all(b"hello?").await;
    let mut buf = [0u8; 16];
    match tcp.read(&mut buf).await {
        Ok(0) => false,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            true
        }
        Ok(n) => panic!("got {n} bytes from a refused connection"),
    }
}

/// A fresh directory for one test's files (keys, certificates), named by `name`.
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("braid-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A CA for tests; returns its PEM certificate and its issuer for signing.
pub fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A certificate for `name` (a host name or an IP address) signed by `issuer`:
/// (cert PEM, key PEM).
pub fn signed_cert(
    name: &str,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}
