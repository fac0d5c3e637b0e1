//! End-to-end tests of `braid server` + `braid client`, both run in-process over
//! 127.0.0.1.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_through_the_tunnel() {
    bounded(async {
        let origin = http_echo_server().await;
        let server = start_server(origin, &[]).await;
        let client = start_client(server.addr, &[]).await;
        // 200 concurrent connections, two requests each (the second on the kept-alive
        // connection), bodies of 0..64 KiB.
        http_connections(client.addr, 200, 2, 0).await;
        let s = server.stats.snapshot();
        assert_eq!(s.streams_total, 200);
        assert_eq!(s.sessions, 1);
        client.shutdown().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tcp_connections_with_half_close_over_four_carriers() {
    bounded(async {
        let target = echo_target().await;
        let server = start_server(target, &[]).await;
        let mut client = start_client(server.addr, &["--conns", "4"]).await;
        client.wait_carriers(4).await;
        let entry = client.addr;
        let lens: Vec<usize> = (0..100)
            .map(|i| match i % 10 {
                0 => 1 << 20,
                1 => 0,
                _ => (i * 7919) % (128 * 1024),
            })
            .collect();
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        let tasks: Vec<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| tokio::spawn(assert_echo(entry, i as u64, len)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let (c, s) = (client.stats.snapshot(), server.stats.snapshot());
        assert_eq!(s.sessions, 4, "every carrier reached the server");
        assert_eq!((s.streams_total, c.streams_total), (100, 100));
        assert_eq!((c.bytes_up, c.bytes_down), (total, total));
        assert_eq!((s.bytes_up, s.bytes_down), (total, total));
        client.shutdown().await;
        server.shutdown().await;
    })
    .await;
}

/// The target speaks first and half-closes; the application then sends its data,
/// which must still reach the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_target_side() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (got_tx, mut got_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let got_tx = got_tx.clone();
                tokio::spawn(async move {
                    tcp.write_all(&random_bytes(1, 300_000)).await.unwrap();
                    tcp.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    tcp.read_to_end(&mut rest).await.unwrap();
                    got_tx.send(sha256_hex(&rest)).await.unwrap();
                });
            }
        });
        for proto in ["smux1", "yamux"] {
            let server = start_server(target, &[]).await;
            let client = start_client(server.addr, &["--proto", proto]).await;
            let mut tcp = TcpStream::connect(client.addr).await.unwrap();
            let mut greeting = Vec::new();
            tcp.read_to_end(&mut greeting).await.unwrap();
            assert_eq!(sha256_hex(&greeting), sha256_hex(&random_bytes(1, 300_000)));
            let data = random_bytes(2, 500_000);
            tcp.write_all(&data).await.unwrap();
            tcp.shutdown().await.unwrap();
            assert_eq!(got_rx.recv().await.unwrap(), sha256_hex(&data), "{proto}");
            client.shutdown().await;
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_works() {
    bounded(async {
        let target = echo_target().await;
        for (server_proto, client_proto) in [
            ("auto", "smux1"),
            ("auto", "smux2"),
            ("auto", "yamux"),
            ("smux1", "smux1"),
            ("smux2", "smux2"),
            ("yamux", "yamux"),
        ] {
            let server = start_server(target, &["--proto", server_proto]).await;
            let client = start_client(server.addr, &["--proto", client_proto]).await;
            let tasks: Vec<_> = (0..8u64)
                .map(|i| tokio::spawn(assert_echo(client.addr, i, 100_000 + i as usize * 50_000)))
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(
                server.stats.snapshot().streams_total,
                8,
                "{server_proto}/{client_proto}"
            );
            client.shutdown().await;
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuning_flags_reach_both_ends() {
    bounded(async {
        let target = echo_target().await;
        let tuning = [
            "--proto",
            "smux2",
            "--max-frame-size",
            "4KiB",
            "--max-receive-buffer",
            "1MiB",
            "--max-stream-buffer",
            "128KiB",
            "--stream-send-buffer",
            "64KiB",
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "3s",
        ];
        let server = start_server(target, &tuning).await;
        let client = start_client(server.addr, &tuning).await;
        assert_echo(client.addr, 7, 3 << 20).await;
        client.shutdown().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_target_closes_the_local_connection() {
    bounded(async {
        let nowhere = closed_port().await;
        for proto in ["smux1", "smux2", "yamux"] {
            let server = start_server(nowhere, &[]).await;
            let client = start_client(server.addr, &["--proto", proto]).await;
            let reset = assert_refused(client.addr).await;
            // yamux carries the reset to the application; smux can only end the stream.
            assert!(
                reset || proto != "yamux",
                "{proto}: the connection ended cleanly"
            );
            client.shutdown().await;
            server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server() {
    bounded(async {
        let nowhere = closed_port().await;
        // Reported at once...
        let err = bind_client(nowhere, &[]).await.err().unwrap();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().starts_with("cannot reach server"), "{err}");
        // ...or, with --wait-for-server, local connections wait --connect-timeout for
        // a carrier and are then closed.
        let client = start_client(
            nowhere,
            &["--wait-for-server", "--connect-timeout", "300ms"],
        )
        .await;
        let started = tokio::time::Instant::now();
        assert_refused(client.addr).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        client.shutdown().await;
    })
    .await;
}

/// After a shutdown signal the server takes no new streams, lets active ones finish
/// within the grace period, and then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_active_streams_finish() {
    bounded(async {
        let target = echo_target().await;
        let server = start_server(target, &["--grace", "30s"]).await;
        let client = start_client(server.addr, &[]).await;

        let mut active = TcpStream::connect(client.addr).await.unwrap();
        active.write_all(b"before").await.unwrap();
        let mut buf = [0u8; 6];
        active.read_exact(&mut buf).await.unwrap(); // the stream is established

        server.stop.cancel();
        assert_refused(client.addr).await; // a new stream is reset

        active.write_all(b" and after").await.unwrap();
        active.shutdown().await.unwrap();
        let mut rest = Vec::new();
        active.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" and after");
        // No stream left: the server returns without waiting out the grace period.
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("server returns once its streams are done")
            .unwrap()
            .unwrap();
        client.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_cut_when_the_grace_period_ends() {
    bounded(async {
        let target = echo_target().await;
        let server = start_server(target, &["--grace", "200ms"]).await;
        let client = start_client(server.addr, &[]).await;
        let mut idle = TcpStream::connect(client.addr).await.unwrap();
        idle.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        idle.read_exact(&mut buf).await.unwrap();
        let started = tokio::time::Instant::now();
        server.shutdown().await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The idle connection is cut (yamux carries the reset) rather than left hanging
        // or ended as if complete.
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        client.shutdown().await;
    })
    .await;
}

/// A self-signed certificate for `names`; returns the cert and key paths.
fn self_signed(dir: &std::path::Path, prefix: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    (
        write_file(dir, &format!("{prefix}-cert.pem"), &ck.cert.pem()),
        write_file(
            dir,
            &format!("{prefix}-key.pem"),
            &ck.signing_key.serialize_pem(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_carrier() {
    bounded(async {
        let dir = test_dir("carrier");
        let (cert, key) = self_signed(&dir, "server", &["localhost", "127.0.0.1"]);
        let (other_ca, _) = self_signed(&dir, "other", &["localhost"]);
        let target = echo_target().await;
        let server = start_server(target, &["--tls-cert", &cert, "--tls-key", &key]).await;

        // Verified against the CA, with the name taken from --server (an IP here)...
        let client = start_client(server.addr, &["--tls-ca", &cert]).await;
        let tasks: Vec<_> = (0..10u64)
            .map(|i| tokio::spawn(assert_echo(client.addr, i, 200_000)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        client.shutdown().await;
        // ...or given by --tls-server-name, for each protocol.
        for proto in ["smux1", "smux2", "yamux"] {
            let args = [
                "--tls-ca",
                &cert,
                "--tls-server-name",
                "localhost",
                "--proto",
                proto,
            ];
            let client = start_client(server.addr, &args).await;
            assert_echo(client.addr, 1, 1 << 20).await;
            client.shutdown().await;
        }
        // Unverified.
        let client = start_client(server.addr, &["--tls-insecure-skip-verify"]).await;
        assert_echo(client.addr, 2, 100_000).await;
        client.shutdown().await;

        // A certificate from another CA, or for another name, is refused at once.
        let err = bind_client(server.addr, &["--tls-ca", &other_ca])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("certificate"), "{err}");
        let wrong_name = ["--tls-ca", &cert, "--tls-server-name", "example.org"];
        let err = bind_client(server.addr, &wrong_name).await.err().unwrap();
        assert!(err.to_string().contains("certificate"), "{err}");
        // A client without TLS gets no service (its session dies), not garbage.
        let plain = start_client(server.addr, &[]).await;
        let _ = assert_refused(plain.addr).await;
        plain.shutdown().await;

        assert_eq!(server.stats.snapshot().streams_total, 14);
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}
