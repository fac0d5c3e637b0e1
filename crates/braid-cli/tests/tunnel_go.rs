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
    bind_client, bounded, echo_target, echo_unclosed, http_connections, http_echo_server,
    signed_cert, start_client, start_server, test_ca, test_dir, write_file,
};
use interop::GoPeer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Concurrent echo connections per run.
const ECHO_CONNS: usize = 50;
/// Concurrent HTTP connections per run, each carrying two requests.
const HTTP_CONNS: usize = 20;

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

    /// `-mode tunnel-client` speaking `proto` to braid's server at `server`, plus `extra`.
    async fn client(peer: &Path, proto: &str, server: SocketAddr, extra: &[&str]) -> GoTunnel {
        let server = server.to_string();
        let args = ["-mode", "tunnel-client", "-proto", proto, "-addr", &server];
        GoTunnel::start(peer, &[&args[..], extra].concat()).await
    }

    /// `-mode tunnel-server` speaking `proto`, forwarding to `target`, plus `extra`.
    async fn server(peer: &Path, proto: &str, target: SocketAddr, extra: &[&str]) -> GoTunnel {
        let target = target.to_string();
        let args = [
            "-mode",
            "tunnel-server",
            "-proto",
            proto,
            "-target",
            &target,
        ];
        GoTunnel::start(peer, &[&args[..], extra].concat()).await
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

/// [`ECHO_CONNS`] concurrent [`echo_unclosed`]s through `entry`; returns the sizes sorted.
async fn echo_connections(entry: SocketAddr, seed: u64) -> Vec<usize> {
    let lens = echo_lens();
    let tasks: Vec<_> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| tokio::spawn(echo_unclosed(entry, seed + i as u64, len)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut sorted = lens;
    sorted.sort_unstable();
    sorted
}

impl GoTunnel {
    /// [`echo_connections`] through `entry` (seeds from `seed`), then checks the Go side's
    /// `forwarded` reports against them: each connection carried its bytes into the
    /// stream and the same number back out. Returns the bytes echoed in all.
    async fn echo_checked(&mut self, entry: SocketAddr, seed: u64) -> u64 {
        let lens = echo_connections(entry, seed).await;
        let got = self.forwarded(lens.len()).await;
        let want: Vec<(u64, u64)> = lens.iter().map(|&l| (l as u64, l as u64)).collect();
        assert!(
            got == want,
            "Go forwarded {got:?}, want {want:?}{}",
            self.diagnostics()
        );
        lens.iter().map(|&l| l as u64).sum()
    }

    /// [`HTTP_CONNS`] HTTP connections through `entry`; returns what the Go side
    /// reported forwarding in all: (into its streams, out of its streams).
    async fn http_forwarded(&mut self, entry: SocketAddr) -> (u64, u64) {
        http_connections(entry, HTTP_CONNS as u64, 2, 1000).await;
        let forwarded = self.forwarded(HTTP_CONNS).await;
        let to_stream = forwarded.iter().map(|f| f.0).sum();
        let from_stream = forwarded.iter().map(|f| f.1).sum();
        (to_stream, from_stream)
    }
}

// ---------------------------------------------------------------------------
// Go tunnel-client -> braid server
// ---------------------------------------------------------------------------

/// test clients -> Go `tunnel-client` -> `braid server` -> target.
async fn go_client_to_braid_server(proto: &str) {
    let Some(peer) = interop::go_peer() else {
        return;
    };
    // Echo, with the server detecting the protocol (the default) and tuned: the tuning
    // is kept for whatever the Go client speaks.
    let target = echo_target().await;
    let tuning = ["--max-frame-size", "4KiB", "--max-stream-buffer", "512KiB"];
    let server = start_server(target, &tuning).await;
    let mut go = GoTunnel::client(&peer, proto, server.addr, &[]).await;
    let total = go.echo_checked(go.addr, 1).await;
    assert_eq!(
        server.stats.snapshot().sessions,
        1,
        "{proto}: one carrier, the Go client's"
    );
    // Closing braid's server ends the Go client's session cleanly.
    let s = server.final_counts().await;
    go.exits_after_session_end().await;
    assert_eq!(
        s.streams_total, ECHO_CONNS as u64,
        "{proto}: one stream per connection"
    );
    assert_eq!((s.bytes_up, s.bytes_down), (total, total), "{proto}");

    // HTTP, with the protocol named on the server.
    let origin = http_echo_server().await;
    let server = start_server(origin, &["--proto", proto]).await;
    let mut go = GoTunnel::client(&peer, proto, server.addr, &[]).await;
    let (to_stream, from_stream) = go.http_forwarded(go.addr).await;
    let s = server.final_counts().await;
    assert_eq!(s.streams_total, HTTP_CONNS as u64, "{proto}");
    // What Go put into the streams reached the origin, and what the origin answered
    // came back out of them to the applications.
    assert_eq!(
        (s.bytes_up, s.bytes_down),
        (to_stream, from_stream),
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
    // Echo over two carriers, each a session of its own on the Go side.
    let target = echo_target().await;
    let mut go = GoTunnel::server(&peer, proto, target, &[]).await;
    let mut client = start_client(go.addr, &["--proto", proto, "--conns", "2"]).await;
    client.wait_carriers(2).await;
    let total = go.echo_checked(client.addr, 2).await;
    let c = client.final_counts().await;
    assert_eq!(c.streams_total, ECHO_CONNS as u64, "{proto}");
    assert_eq!((c.bytes_up, c.bytes_down), (total, total), "{proto}");
    // Both of Go's sessions, one per carrier, end with braid's client.
    go.sessions_end(2).await;
    assert_eq!(go.count("session_start"), 2, "{proto}{}", go.diagnostics());

    // HTTP.
    let origin = http_echo_server().await;
    let mut go = GoTunnel::server(&peer, proto, origin, &[]).await;
    let client = start_client(go.addr, &["--proto", proto]).await;
    let (to_stream, from_stream) = go.http_forwarded(client.addr).await;
    let c = client.final_counts().await;
    assert_eq!(c.streams_total, HTTP_CONNS as u64, "{proto}");
    // Go's "into the stream" is the origin's answer, braid's "down".
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
        let dir = test_dir(name);
        let write = |file: &str, text: &str| write_file(&dir, file, text);
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
        for (i, proto) in ["smux1", "smux2", "yamux"].into_iter().enumerate() {
            let go_tls = [
                "-tls-ca",
                &c.ca,
                "-tls-cert",
                &c.client_cert,
                "-tls-key",
                &c.client_key,
            ];
            let mut go = GoTunnel::client(&peer, proto, server.addr, &go_tls).await;
            go.echo_checked(go.addr, 10 * i as u64).await;
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
        let target = echo_target().await;
        for (i, proto) in ["smux1", "smux2", "yamux"].into_iter().enumerate() {
            let go_tls = [
                "-tls-cert",
                &c.server_cert,
                "-tls-key",
                &c.server_key,
                "-tls-ca",
                &c.ca,
            ];
            let mut go = GoTunnel::server(&peer, proto, target, &go_tls).await;
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
            go.echo_checked(client.addr, 100 + 10 * i as u64).await;
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
