//! braid's tunnel against a Go tunnel: the tunnel speaks plain smux or yamux with one
//! stream per forwarded connection, so a Go program that maps streams to connections the
//! same way (kcptun, frp) works with either end of it. The Go side is the `interop/go`
//! peer in `-mode tunnel-client` (against `braid server`) and `-mode tunnel-server`
//! (behind `braid client`), linking Debian's smux 1.5.16 and hashicorp/yamux; the braid
//! ends run in-process as in `tunnel.rs`. Everything stays on 127.0.0.1.
//!
//! The Go tunnel closes a connection and its stream together as soon as either
//! direction ends (smux 1.5.16 has no half-close; kcptun does the same), so every
//! exchange here is "send, read the whole reply of known length, then close": a client
//! that half-closed first would lose its reply.
//!
//! Without Go installed the tests print why and pass, unless `BRAID_REQUIRE_INTEROP=1`
//! (see `crates/braid/tests/interop/mod.rs`, whose Go peer locating and building is
//! reused here).

mod common;
#[path = "../../braid/tests/interop/mod.rs"]
mod interop;

use common::{
    bind_client, bounded, echo_target, random_bytes, sha256_hex, signed_cert, start_client,
    start_server, test_ca,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use interop::GoPeer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Concurrent echo connections per run.
const ECHO_CONNS: usize = 50;
/// Concurrent HTTP connections per run, each carrying [`HTTP_REQUESTS`] requests.
const HTTP_CONNS: usize = 20;
const HTTP_REQUESTS: usize = 2;

// ---------------------------------------------------------------------------
// The Go tunnel process
// ---------------------------------------------------------------------------

/// A running `braid-peer -mode tunnel-client|tunnel-server`, killed on drop.
struct GoTunnel {
    go: GoPeer,
    /// What it listens on: local connections (tunnel-client) or carriers (tunnel-server).
    addr: SocketAddr,
}

/// Its events and diagnostics are the Go peer's.
impl std::ops::Deref for GoTunnel {
    type Target = GoPeer;
    fn deref(&self) -> &GoPeer {
        &self.go
    }
}

impl GoTunnel {
    /// Starts the Go peer with `args` and waits for its `listening` line.
    async fn start(peer: &Path, args: &[&str]) -> GoTunnel {
        let mut go = GoPeer::spawn(peer, args.iter().map(|a| a.to_string()).collect());
        let listening = go.expect("listening").await;
        let addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad listening address{}", go.diagnostics()));
        GoTunnel { go, addr }
    }

    /// Waits for `n` `forwarded` events and returns their `(to_stream, from_stream)`
    /// byte counts, sorted. Other events are kept in `seen`; a `dial_failed` fails.
    async fn forwarded(&mut self, n: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let event = self.go.next_event().await;
            match event["event"].as_str() {
                Some("forwarded") => {
                    let count = |k: &str| event[k].as_u64().expect("a byte count");
                    out.push((count("to_stream"), count("from_stream")));
                }
                Some("dial_failed") => panic!(
                    "the Go tunnel-server could not reach the target{}",
                    self.go.diagnostics()
                ),
                _ => {}
            }
        }
        out.sort_unstable();
        out
    }

    /// Waits until `n` sessions have ended (`session_end`) in all.
    async fn sessions_end(&mut self, n: usize) {
        while self.go.count("session_end") < n {
            self.go.next_event().await;
        }
    }

    /// The tunnel-client exits successfully, after `session_end`, once braid's server
    /// has closed the session.
    async fn exits_after_session_end(mut self) {
        let status = self.go.wait_exit().await;
        assert!(
            status.success() && self.go.count("session_end") == 1,
            "the Go tunnel-client ended with {status}{}",
            self.go.diagnostics()
        );
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// Sizes of the echo connections: some 1 MiB, some empty, the rest up to 128 KiB.
fn echo_lens() -> Vec<usize> {
    (0..ECHO_CONNS)
        .map(|i| match i % 10 {
            0 => 1 << 20,
            1 => 0,
            _ => (i * 7919) % (128 * 1024),
        })
        .collect()
}

/// One connection through `entry`: sends `len` random bytes from `seed` while reading
/// the echo, checks all `len` bytes of it, then closes (no half-close before the reply:
/// the Go tunnel would cut it).
async fn echo_once(entry: SocketAddr, seed: u64, len: usize) {
    let data = random_bytes(seed, len);
    let tcp = TcpStream::connect(entry).await.unwrap();
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

/// [`ECHO_CONNS`] concurrent [`echo_once`]s through `entry`; returns the sizes sorted.
async fn echo_connections(entry: SocketAddr, seed: u64) -> Vec<usize> {
    let lens = echo_lens();
    let tasks: Vec<_> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| tokio::spawn(echo_once(entry, seed + i as u64, len)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut sorted = lens;
    sorted.sort_unstable();
    sorted
}

/// An HTTP/1 server answering every request with its body and `x-sha256`.
async fn http_echo_server() -> SocketAddr {
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

/// [`HTTP_CONNS`] concurrent keep-alive connections through `entry`, each sending
/// [`HTTP_REQUESTS`] POSTs of up to 64 KiB and checking every response body.
async fn http_connections(entry: SocketAddr) {
    let tasks: Vec<_> = (0..HTTP_CONNS as u64)
        .map(|i| {
            tokio::spawn(async move {
                let tcp = TcpStream::connect(entry).await.unwrap();
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                let conn = tokio::spawn(conn);
                for k in 0..HTTP_REQUESTS as u64 {
                    let seed = 1000 + i * HTTP_REQUESTS as u64 + k;
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

/// Checks the Go side's `forwarded` reports against the echo sizes: each connection
/// carried its bytes into the stream and the same number back out.
fn assert_echo_forwarded(go: &GoTunnel, got: &[(u64, u64)], lens: &[usize]) {
    let want: Vec<(u64, u64)> = lens.iter().map(|&l| (l as u64, l as u64)).collect();
    assert!(
        got == want,
        "Go forwarded {got:?}, want {want:?}{}",
        go.diagnostics()
    );
}

// ---------------------------------------------------------------------------
// Go tunnel-client -> braid server
// ---------------------------------------------------------------------------

/// test clients -> Go `tunnel-client` -> `braid server` -> target.
async fn go_client_to_braid_server(proto: &str) {
    let Some(peer) = interop::go_peer() else {
        return;
    };
    let total = |lens: &[usize]| lens.iter().map(|&l| l as u64).sum::<u64>();

    // Echo, with the server detecting the protocol (the default) and tuned: the tuning
    // is kept for whatever the Go client speaks.
    let target = echo_target().await;
    let tuning = ["--max-frame-size", "4KiB", "--max-stream-buffer", "512KiB"];
    let server = start_server(target, &tuning).await;
    let server_addr = server.addr.to_string();
    let go_args = [
        "-mode",
        "tunnel-client",
        "-proto",
        proto,
        "-addr",
        &server_addr,
    ];
    let mut go = GoTunnel::start(&peer, &go_args).await;
    let lens = echo_connections(go.addr, 1).await;
    let forwarded = go.forwarded(lens.len()).await;
    assert_echo_forwarded(&go, &forwarded, &lens);
    assert_eq!(
        server.stats.snapshot().sessions,
        1,
        "{proto}: one carrier, the Go client's"
    );
    // Closing braid's server ends the Go client's session cleanly. It also waits for its
    // forwarding tasks, so the byte counts are final then.
    let stats = server.stats.clone();
    server.shutdown().await;
    go.exits_after_session_end().await;
    let s = stats.snapshot();
    assert_eq!(
        s.streams_total, ECHO_CONNS as u64,
        "{proto}: one stream per connection"
    );
    assert_eq!(
        (s.bytes_up, s.bytes_down),
        (total(&lens), total(&lens)),
        "{proto}"
    );

    // HTTP, with the protocol named on the server.
    let origin = http_echo_server().await;
    let server = start_server(origin, &["--proto", proto]).await;
    let server_addr = server.addr.to_string();
    let go_args = [
        "-mode",
        "tunnel-client",
        "-proto",
        proto,
        "-addr",
        &server_addr,
    ];
    let mut go = GoTunnel::start(&peer, &go_args).await;
    http_connections(go.addr).await;
    let forwarded = go.forwarded(HTTP_CONNS).await;
    let stats = server.stats.clone();
    server.shutdown().await;
    let s = stats.snapshot();
    assert_eq!(s.streams_total, HTTP_CONNS as u64, "{proto}");
    // What Go put into the streams reached the origin, and what the origin answered
    // came back out of them to the applications.
    let up: u64 = forwarded.iter().map(|f| f.0).sum();
    let down: u64 = forwarded.iter().map(|f| f.1).sum();
    assert_eq!(
        (s.bytes_up, s.bytes_down),
        (up, down),
        "{proto}{}",
        go.diagnostics()
    );
    go.exits_after_session_end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_tunnel_client_to_braid_server_smux1() {
    bounded(go_client_to_braid_server("smux1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_tunnel_client_to_braid_server_smux2() {
    bounded(go_client_to_braid_server("smux2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_tunnel_client_to_braid_server_yamux() {
    bounded(go_client_to_braid_server("yamux")).await;
}

// ---------------------------------------------------------------------------
// braid client -> Go tunnel-server
// ---------------------------------------------------------------------------

/// test clients -> `braid client` -> Go `tunnel-server` -> target.
async fn braid_client_to_go_server(proto: &str) {
    let Some(peer) = interop::go_peer() else {
        return;
    };
    let total = |lens: &[usize]| lens.iter().map(|&l| l as u64).sum::<u64>();

    // Echo over two carriers, each a session of its own on the Go side.
    let target = echo_target().await.to_string();
    let go_args = [
        "-mode",
        "tunnel-server",
        "-proto",
        proto,
        "-target",
        &target,
    ];
    let mut go = GoTunnel::start(&peer, &go_args).await;
    let mut client = start_client(go.addr, &["--proto", proto, "--conns", "2"]).await;
    client.wait_carriers(2).await;
    let lens = echo_connections(client.addr, 2).await;
    let forwarded = go.forwarded(lens.len()).await;
    assert_echo_forwarded(&go, &forwarded, &lens);
    // The client's shutdown waits for its forwarding tasks: the counts are final then.
    let stats = client.stats.clone();
    client.shutdown().await;
    let c = stats.snapshot();
    assert_eq!(c.streams_total, ECHO_CONNS as u64, "{proto}");
    assert_eq!(
        (c.bytes_up, c.bytes_down),
        (total(&lens), total(&lens)),
        "{proto}"
    );
    // Both of Go's sessions, one per carrier, end with braid's client.
    go.sessions_end(2).await;
    assert_eq!(go.count("session_start"), 2, "{proto}{}", go.diagnostics());

    // HTTP.
    let origin = http_echo_server().await.to_string();
    let go_args = [
        "-mode",
        "tunnel-server",
        "-proto",
        proto,
        "-target",
        &origin,
    ];
    let mut go = GoTunnel::start(&peer, &go_args).await;
    let client = start_client(go.addr, &["--proto", proto]).await;
    http_connections(client.addr).await;
    let forwarded = go.forwarded(HTTP_CONNS).await;
    let stats = client.stats.clone();
    client.shutdown().await;
    let c = stats.snapshot();
    assert_eq!(c.streams_total, HTTP_CONNS as u64, "{proto}");
    // Go's "into the stream" is the origin's answer, braid's "down".
    let to_stream: u64 = forwarded.iter().map(|f| f.0).sum();
    let from_stream: u64 = forwarded.iter().map(|f| f.1).sum();
    assert_eq!(
        (c.bytes_up, c.bytes_down),
        (from_stream, to_stream),
        "{proto}{}",
        go.diagnostics()
    );
    go.sessions_end(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn braid_client_to_go_tunnel_server_smux1() {
    bounded(braid_client_to_go_server("smux1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn braid_client_to_go_tunnel_server_smux2() {
    bounded(braid_client_to_go_server("smux2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn braid_client_to_go_tunnel_server_yamux() {
    bounded(braid_client_to_go_server("yamux")).await;
}

// ---------------------------------------------------------------------------
// Mutual TLS, both directions
// ---------------------------------------------------------------------------

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as files.
struct Certs {
    dir: PathBuf,
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("braid-go-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, text: &str| {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let (ca_pem, issuer) = test_ca("braid Go interop CA");
        let (server_cert, server_key) = signed_cert("127.0.0.1", &issuer);
        let (client_cert, client_key) = signed_cert("go-or-braid-client", &issuer);
        Certs {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// test clients -> Go `tunnel-client` (Go's crypto/tls with a client certificate) ->
/// `braid server --tls-client-ca` -> target, for every protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_tunnel_client_to_braid_server_over_mutual_tls() {
    bounded(async {
        let Some(peer) = interop::go_peer() else {
            return;
        };
        let c = Certs::new("go-client");
        let target = echo_target().await;
        let server_args = [
            "--tls-cert",
            &c.server_cert,
            "--tls-key",
            &c.server_key,
            "--tls-client-ca",
            &c.ca,
        ];
        let server = start_server(target, &server_args).await;
        let server_addr = server.addr.to_string();
        for (i, proto) in ["smux1", "smux2", "yamux"].into_iter().enumerate() {
            let go_args = [
                "-mode",
                "tunnel-client",
                "-proto",
                proto,
                "-addr",
                &server_addr,
                "-tls-ca",
                &c.ca,
                "-tls-cert",
                &c.client_cert,
                "-tls-key",
                &c.client_key,
            ];
            let mut go = GoTunnel::start(&peer, &go_args).await;
            let lens = echo_connections(go.addr, 10 * i as u64).await;
            let forwarded = go.forwarded(lens.len()).await;
            assert_echo_forwarded(&go, &forwarded, &lens);
            go.go.kill().await;
        }
        let s = server.stats.snapshot();
        assert_eq!(s.streams_total, 3 * ECHO_CONNS as u64);
        let total: u64 = 3 * echo_lens().iter().map(|&l| l as u64).sum::<u64>();
        assert_eq!((s.bytes_up, s.bytes_down), (total, total));
        server.shutdown().await;
    })
    .await;
}

/// test clients -> `braid client` (rustls, client certificate) -> Go `tunnel-server`
/// requiring client certificates -> target; and a braid client without a certificate
/// learns why in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn braid_client_to_go_tunnel_server_over_mutual_tls() {
    bounded(async {
        let Some(peer) = interop::go_peer() else {
            return;
        };
        let c = Certs::new("go-server");
        let target = echo_target().await.to_string();
        for (i, proto) in ["smux1", "smux2", "yamux"].into_iter().enumerate() {
            let go_args = [
                "-mode",
                "tunnel-server",
                "-proto",
                proto,
                "-target",
                &target,
                "-tls-cert",
                &c.server_cert,
                "-tls-key",
                &c.server_key,
                "-tls-ca",
                &c.ca,
            ];
            let mut go = GoTunnel::start(&peer, &go_args).await;
            let client_args = [
                "--proto",
                proto,
                "--tls-ca",
                &c.ca,
                "--tls-cert",
                &c.client_cert,
                "--tls-key",
                &c.client_key,
            ];
            let client = start_client(go.addr, &client_args).await;
            let lens = echo_connections(client.addr, 100 + 10 * i as u64).await;
            let forwarded = go.forwarded(lens.len()).await;
            assert_echo_forwarded(&go, &forwarded, &lens);
            client.shutdown().await;
            go.sessions_end(1).await;

            // Without a certificate: refused by Go, and told so.
            let err = bind_client(go.addr, &["--proto", proto, "--tls-ca", &c.ca])
                .await
                .err()
                .expect("Go's server refuses a client without a certificate")
                .to_string();
            assert!(
                err.starts_with(&format!("cannot reach server {}: ", go.addr))
                    && err.contains("client certificate")
                    && !err.contains('\n'),
                "{err}"
            );
            while go.count("handshake_failed") < 1 {
                go.go.next_event().await;
            }
            assert_eq!(go.count("session_start"), 1, "{}", go.diagnostics());
            go.go.kill().await;
        }
    })
    .await;
}
