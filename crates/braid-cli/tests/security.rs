//! The tunnel exposed to strangers: authentication (pre-shared key, mutual TLS),
//! replayed handshakes, raw unauthenticated frames, limits, timeouts and metrics.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A key file of 64 hex digits from `seed`.
fn psk_file(dir: &Path, name: &str, seed: u64) -> String {
    let hex: String = random_bytes(seed, 32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_file(dir, name, &format!("{hex}\n"))
}

/// `GET /metrics` over HTTP/1 with hyper; returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header("host", "braid")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample `name` (with its labels, as printed) in a scrape; 0 if absent.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// A yamux frame header.
fn yamux(ty: u8, flags: u16, id: u32, len: u32) -> Vec<u8> {
    let mut h = vec![0, ty];
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}
const SYN: u16 = 1;
const ACK: u16 = 2;
const RST: u16 = 8;

/// Sends raw yamux frames (a SYN with data for a stream, and a smux SYN) without any
/// credential, and expects the connection to be closed without an answer.
async fn raw_frames_are_refused(server: SocketAddr) {
    for frame in [
        [yamux(1, SYN, 1, 0), yamux(0, 0, 1, 5), b"hello".to_vec()].concat(),
        vec![1, 0, 0, 0, 1, 0, 0, 0], // smux v1 SYN of stream 1
    ] {
        let mut tcp = TcpStream::connect(server).await.unwrap();
        let _ = tcp.write_all(&frame).await;
        let _ = tcp.shutdown().await; // the server need not wait for the rest of its message
        let mut buf = Vec::new();
        match tcp.read_to_end(&mut buf).await {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        // Whatever came back (a TLS alert, a Noise message) is no yamux frame.
        assert!(buf.len() < 12 || buf[0] != 0, "{buf:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_shared_key_serves_its_clients_and_no_one_else() {
    bounded(async {
        let dir = test_dir("psk");
        let key = psk_file(&dir, "key", 1);
        let other = psk_file(&dir, "other", 2);
        let (target, connections) = counting_target().await;
        let server = start_server(target, &["--psk-file", &key, "--metrics", "127.0.0.1:0"]).await;
        for (i, proto) in ["smux1", "smux2", "yamux"].into_iter().enumerate() {
            let client = start_client(server.addr, &["--psk-file", &key, "--proto", proto]).await;
            assert_echo(client.addr, i as u64, 300_000).await;
            client.shutdown().await;
        }
        assert_eq!(*connections.borrow(), 3);

        // A client with another key learns why at once, in one line.
        let err = bind_client(server.addr, &["--psk-file", &other])
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            format!(
                "cannot reach server {}: the server closed the connection during the pre-shared \
                 key handshake: wrong --psk-file, or the server does not use --psk-file",
                server.addr
            )
        );
        // Clients without the key, braid's or raw frames, reach nothing.
        let plain = start_client(
            server.addr,
            &["--wait-for-server", "--connect-timeout", "2s"],
        )
        .await;
        let _ = assert_refused(plain.addr).await;
        plain.shutdown().await;
        raw_frames_are_refused(server.addr).await;
        assert_eq!(*connections.borrow(), 3);

        let m = scrape(server.metrics.unwrap()).await;
        for proto in ["smux1", "smux2", "yamux"] {
            let started = format!("braid_tunnel_streams_started_total{{protocol=\"{proto}\"}}");
            assert_eq!(sample(&m, &started), 1, "{m}");
            for dir in ["up", "down"] {
                let bytes =
                    format!("braid_tunnel_bytes_total{{protocol=\"{proto}\",direction=\"{dir}\"}}");
                assert_eq!(sample(&m, &bytes), 300_000, "{bytes}\n{m}");
            }
        }
        // The wrong key, the plain client (at least once), two raw connections.
        assert!(
            sample(&m, "braid_tunnel_handshake_failures_total") >= 4,
            "{m}"
        );
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

/// `braid client --metrics`: the same format and names as the server's, "up" being
/// the application's direction towards the target on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_serves_metrics_too() {
    bounded(async {
        let dir = test_dir("client-metrics");
        let key = psk_file(&dir, "key", 3);
        let target = echo_target().await;
        let server = start_server(target, &["--psk-file", &key, "--metrics", "127.0.0.1:0"]).await;
        let args = ["--psk-file", &key, "--proto", "smux2", "--conns", "2"];
        let mut client = start_client(
            server.addr,
            &[&args[..], &["--metrics", "127.0.0.1:0"]].concat(),
        )
        .await;
        client.wait_carriers(2).await;
        assert_echo(client.addr, 5, 100_000).await;
        // A second connection, sent but not yet echoed back in full: the live sessions'
        // counts are read at the scrape.
        let mut tcp = TcpStream::connect(client.addr).await.unwrap();
        tcp.write_all(&[7u8; 50_000]).await.unwrap();
        let mut back = vec![0u8; 50_000];
        tcp.read_exact(&mut back).await.unwrap();

        let m = scrape(client.metrics.unwrap()).await;
        let p = "{protocol=\"smux2\"}";
        assert_eq!(sample(&m, &format!("braid_tunnel_sessions{p}")), 2, "{m}");
        assert_eq!(
            sample(&m, &format!("braid_tunnel_sessions_started_total{p}")),
            2,
            "{m}"
        );
        assert_eq!(
            sample(&m, &format!("braid_tunnel_streams_started_total{p}")),
            2,
            "{m}"
        );
        assert_eq!(
            sample(&m, "braid_tunnel_handshake_failures_total"),
            0,
            "{m}"
        );
        let s = scrape(server.metrics.unwrap()).await;
        for dir in ["up", "down"] {
            let bytes =
                format!("braid_tunnel_bytes_total{{protocol=\"smux2\",direction=\"{dir}\"}}");
            assert_eq!(sample(&m, &bytes), 150_000, "{bytes}\n{m}");
            assert_eq!(sample(&s, &bytes), 150_000, "{bytes}\n{s}");
        }
        drop(tcp);
        client.shutdown().await;
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_handshake_gets_no_session() {
    bounded(async {
        let dir = test_dir("replay");
        let key = psk_file(&dir, "key", 3);
        let (target, connections) = counting_target().await;
        let server = start_server(target, &["--psk-file", &key, "--metrics", "127.0.0.1:0"]).await;

        // A proxy recording what the client sends.
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let tape = recorded.clone();
        let server_addr = server.addr;
        tokio::spawn(async move {
            let (from_client, _) = proxy.accept().await.unwrap();
            let to_server = TcpStream::connect(server_addr).await.unwrap();
            let (mut cr, mut cw) = from_client.into_split();
            let (mut sr, mut sw) = to_server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = cr.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = sw.shutdown().await;
                    return;
                }
                tape.lock().unwrap().extend_from_slice(&buf[..n]);
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let client = start_client(proxy_addr, &["--psk-file", &key]).await;
        assert_echo(client.addr, 9, 50_000).await;
        client.shutdown().await;
        assert_eq!(*connections.borrow(), 1);
        let tape = recorded.lock().unwrap().clone();
        assert!(tape.len() > 50_000, "recorded {} bytes", tape.len());

        // Replayed whole (handshake, stream open, data) it opens nothing.
        let mut replay = TcpStream::connect(server.addr).await.unwrap();
        let _ = replay.write_all(&tape).await;
        let mut answer = Vec::new();
        match replay.read_to_end(&mut answer).await {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        // At most the server's handshake message came back: 2 + 32 (e) + 16 (tag).
        assert!(answer.len() <= 50, "{} bytes", answer.len());
        let m = scrape(server.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "braid_tunnel_handshake_failures_total"),
            1,
            "{m}"
        );
        assert_eq!(
            sample(
                &m,
                "braid_tunnel_sessions_started_total{protocol=\"yamux\"}"
            ),
            1,
            "{m}"
        );
        assert_eq!(*connections.borrow(), 1);
        assert_eq!(server.stats.snapshot().streams_total, 1);
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_certified_clients() {
    bounded(async {
        let dir = test_dir("mtls");
        let (ca_pem, ca_issuer) = test_ca("braid test CA");
        let (server_cert, server_key) = signed_cert("127.0.0.1", &ca_issuer);
        let (client_cert, client_key) = signed_cert("client", &ca_issuer);
        let (_, rogue_issuer) = test_ca("rogue CA");
        let (rogue_cert, rogue_key) = signed_cert("client", &rogue_issuer);
        let ca_file = write_file(&dir, "ca.pem", &ca_pem);
        let files = [
            ("server.pem", &server_cert),
            ("server.key", &server_key),
            ("client.pem", &client_cert),
            ("client.key", &client_key),
            ("rogue.pem", &rogue_cert),
            ("rogue.key", &rogue_key),
        ]
        .map(|(name, text)| write_file(&dir, name, text));
        let [server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key] = files;
        let (target, connections) = counting_target().await;
        let server = start_server(
            target,
            &[
                "--tls-cert",
                &server_cert,
                "--tls-key",
                &server_key,
                "--tls-client-ca",
                &ca_file,
                "--metrics",
                "127.0.0.1:0",
            ],
        )
        .await;
        for proto in ["smux2", "yamux"] {
            let args = [
                "--tls-ca",
                &ca_file,
                "--tls-cert",
                &client_cert,
                "--tls-key",
                &client_key,
                "--proto",
                proto,
            ];
            let client = start_client(server.addr, &args).await;
            assert_echo(client.addr, 4, 200_000).await;
            client.shutdown().await;
        }
        assert_eq!(*connections.borrow(), 2);

        let refused = |args: Vec<String>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bind_client(server.addr, &args)
                .await
                .err()
                .unwrap()
                .to_string()
        };
        let err = refused(vec!["--tls-ca".into(), ca_file.clone()]).await;
        assert_eq!(
            err,
            format!(
                "cannot reach server {}: the server requires a client certificate: add \
                 --tls-cert and --tls-key",
                server.addr
            )
        );
        let err = refused(vec![
            "--tls-ca".into(),
            ca_file.clone(),
            "--tls-cert".into(),
            rogue_cert.clone(),
            "--tls-key".into(),
            rogue_key.clone(),
        ])
        .await;
        assert!(
            err.starts_with(&format!(
                "cannot reach server {}: the server refused our client certificate (",
                server.addr
            )) && !err.contains('\n'),
            "{err}"
        );
        raw_frames_are_refused(server.addr).await;
        assert_eq!(*connections.borrow(), 2);
        let m = scrape(server.metrics.unwrap()).await;
        assert_eq!(
            sample(&m, "braid_tunnel_handshake_failures_total"),
            4,
            "{m}"
        );
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syn_flood_opens_no_more_target_connections_than_max_streams() {
    bounded(async {
        const MAX: usize = 20;
        const SYNS: usize = 5000;
        let (target, connections) = counting_target().await;
        let max = MAX.to_string();
        let server = start_server(
            target,
            &[
                "--max-streams",
                &max,
                "--grace",
                "0s",
                "--metrics",
                "127.0.0.1:0",
            ],
        )
        .await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        // Paced: bursts of 200 SYNs, each sent once the previous one is answered (an
        // ACK or an RST per stream, a refused stream may get both; braid drops refusals a
        // flooder does not read).
        let mut answered = std::collections::HashSet::new();
        let mut reset = std::collections::HashSet::new();
        let mut header = [0u8; 12];
        for burst in 0..SYNS / 200 {
            let mut frames = Vec::new();
            for i in 0..200 {
                let id = 2 * (burst * 200 + i) as u32 + 1;
                frames.extend(yamux(1, SYN, id, 0));
            }
            tcp.write_all(&frames).await.unwrap();
            let last = (burst + 1) * 200;
            while answered.len() < last || (last == SYNS && reset.len() < SYNS - MAX) {
                tcp.read_exact(&mut header).await.unwrap();
                assert_eq!(header[1], 1, "a window update: {header:?}");
                let flags = u16::from_be_bytes([header[2], header[3]]);
                let id = u32::from_be_bytes(header[4..8].try_into().unwrap());
                assert!(flags & (ACK | RST) != 0, "{header:?}");
                answered.insert(id);
                if flags & RST != 0 {
                    reset.insert(id);
                }
            }
        }
        // Every stream over the limit was reset; the others are forwarded.
        assert_eq!(reset.len(), SYNS - MAX);
        let mut connections = connections.clone();
        connections.wait_for(|&n| n == MAX).await.unwrap();
        let m = scrape(server.metrics.unwrap()).await;
        let started = "braid_tunnel_streams_started_total{protocol=\"yamux\"}";
        assert_eq!(sample(&m, started), MAX as u64, "{m}");
        let refused = sample(&m, "braid_tunnel_refused_streams_total{protocol=\"yamux\"}");
        assert_eq!(refused, (SYNS - MAX) as u64, "{m}");
        assert_eq!(
            sample(&m, "braid_tunnel_streams{protocol=\"yamux\"}"),
            MAX as u64
        );
        assert_eq!(*connections.borrow(), MAX);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_max_sessions_holds() {
    bounded(async {
        let target = echo_target().await;
        let dir = test_dir("silent");
        let key = psk_file(&dir, "key", 5);
        // Silent during the handshake.
        let psk = start_server(
            target,
            &["--psk-file", &key, "--handshake-timeout", "200ms"],
        )
        .await;
        let mut tcp = TcpStream::connect(psk.addr).await.unwrap();
        assert_eq!(tcp.read(&mut [0u8; 8]).await.unwrap(), 0);
        psk.shutdown().await;
        // Silent after connecting, under --proto auto.
        let auto = start_server(target, &["--detect-timeout", "200ms"]).await;
        let mut tcp = TcpStream::connect(auto.addr).await.unwrap();
        assert_eq!(tcp.read(&mut [0u8; 8]).await.unwrap(), 0);
        auto.shutdown().await;
        // One session at most: a second connection is closed at once, the first goes on.
        let one = start_server(target, &["--max-sessions", "1", "--metrics", "127.0.0.1:0"]).await;
        let mut first = TcpStream::connect(one.addr).await.unwrap();
        // The refusal is a reset, which may come before connect() returns.
        if let Ok(mut second) = TcpStream::connect(one.addr).await {
            match second.read(&mut [0u8; 8]).await {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            }
        }
        first.write_all(&yamux(2, SYN, 0, 77)).await.unwrap();
        let mut pong = [0u8; 12];
        first.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong.to_vec(), yamux(2, 2, 0, 77)); // ping ACK, same opaque value
        let m = scrape(one.metrics.unwrap()).await;
        assert_eq!(sample(&m, "braid_tunnel_refused_sessions_total"), 1, "{m}");
        assert_eq!(
            sample(&m, "braid_tunnel_sessions{protocol=\"yamux\"}"),
            1,
            "{m}"
        );
        one.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_streams_its_server_opens() {
    bounded(async {
        // A fake yamux server that tries to open a stream towards the client.
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = start_client(fake.local_addr().unwrap(), &["--wait-for-server"]).await;
        let (mut tcp, _) = fake.accept().await.unwrap();
        tcp.write_all(&yamux(1, SYN, 2, 0)).await.unwrap();
        let mut header = [0u8; 12];
        loop {
            tcp.read_exact(&mut header).await.unwrap();
            let flags = u16::from_be_bytes([header[2], header[3]]);
            let id = u32::from_be_bytes(header[4..8].try_into().unwrap());
            let len = u32::from_be_bytes(header[8..12].try_into().unwrap());
            if header[1] == 0 && len > 0 {
                let mut payload = vec![0u8; len as usize];
                tcp.read_exact(&mut payload).await.unwrap();
            }
            if id == 2 {
                assert!(
                    flags & RST != 0,
                    "stream 2 answered without a reset: {header:?}"
                );
                break;
            }
        }
        client.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_are_reset_after_idle_timeout() {
    bounded(async {
        // A target that accepts and never reads or writes; it reports each close.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let end = tcp.read(&mut buf).await;
                    let _ = closed_tx.send(end.map_err(|e| e.kind()));
                });
            }
        });
        let server = start_server(target, &["--idle-timeout", "300ms"]).await;
        let client = start_client(server.addr, &[]).await;
        let mut app = TcpStream::connect(client.addr).await.unwrap();
        // Nothing moves: the server resets the stream, which closes both TCP ends.
        let end = closed.recv().await.unwrap();
        assert!(
            matches!(end, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
            "{end:?}"
        );
        match app.read(&mut [0u8; 8]).await {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        client.shutdown().await;
        server.shutdown().await;
    })
    .await;
}
