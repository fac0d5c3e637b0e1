//! braid over KCP to braid over KCP on loopback, and the listener under a flood of
//! datagrams from many source addresses.

mod common;

use braid::Protocol;
use braid_kcp::{Config, Conn, Crypt, KcpListener};
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_to_braid_over_kcp_with_every_default() {
    bounded(async {
        for setup in [Setup::default_config(2), Setup::minimal(1)] {
            let (addr, seen, _) = braid_server(&setup, Protocol::Auto).await;
            let (session, _) = braid_client(addr, &setup).await;
            many_streams(&session, 16, 64 * 1024).await;
            session.close().await;
            assert_eq!(seen.sessions.load(Ordering::Relaxed), 1);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_to_braid_through_a_lossy_relay_is_intact() {
    bounded(async {
        let setup = Setup::default_config(2);
        let (addr, _, _) = braid_server(&setup, Protocol::Auto).await;
        let (relay, dropped) = lossy_relay(addr, 0.05, 11).await;
        let (session, stats) = braid_client(relay, &setup).await;
        many_streams(&session, 4, 256 * 1024).await;
        assert!(dropped.load(Ordering::Relaxed) > 20);
        assert!(stats.get().fec_recovered > 0);
        session.close().await;
    })
    .await
}

/// A datagram that would open a session (a PUSH with conversation `conv`).
fn first_datagram(config: &Config, conv: u32) -> Vec<u8> {
    let mut conn = Conn::new(conv, config, 0);
    conn.send(b"hello", 0);
    conn.poll_datagram().unwrap()
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_flood_is_bounded_and_idle_sessions_expire() {
    bounded(async {
        let mut config = Config::server();
        config.crypt = Crypt::new("aes", "flood").unwrap();
        config.max_sessions = 40;
        config.accept_backlog = 1000;
        config.idle_timeout = Duration::from_millis(800);
        let mut listener = KcpListener::bind("127.0.0.1:0".parse().unwrap(), config.clone())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let stats = listener.stats();
        // 300 source addresses: each sends garbage, a wrong-key datagram and a valid one.
        let mut wrong = config.clone();
        wrong.crypt = Crypt::new("aes", "other").unwrap();
        let mut sockets = Vec::new();
        for i in 0..300u32 {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.send_to(&[0xaa; 700], addr).await.unwrap();
            s.send_to(&[1; 3], addr).await.unwrap();
            s.send_to(&first_datagram(&wrong, i), addr).await.unwrap();
            s.send_to(&first_datagram(&config, i), addr).await.unwrap();
            sockets.push(s);
        }
        let refused = || stats.refused.load(Ordering::Relaxed);
        let opened = || stats.sessions_opened.load(Ordering::Relaxed);
        wait_for(
            "every valid datagram handled",
            Duration::from_secs(5),
            || opened() + refused() == 300,
        )
        .await;
        assert_eq!(opened(), 40, "sessions past max_sessions");
        assert!(listener.session_count() <= 40);
        assert!(stats.bad_checksum.load(Ordering::Relaxed) >= 300);
        // Accepted or not, silent sessions expire and free their slots.
        let first = listener.accept().await.unwrap();
        wait_for("idle sessions expire", Duration::from_secs(5), || {
            listener.session_count() == 0
        })
        .await;
        use tokio::io::AsyncReadExt;
        let mut first = first;
        let mut buf = [0u8; 16];
        assert_eq!(
            first.read(&mut buf).await.unwrap(),
            5,
            "the session's first bytes"
        );
        assert_eq!(&buf[..5], b"hello");
        let e = first.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // Then new clients get in again.
        sockets[0]
            .send_to(&first_datagram(&config, 999), addr)
            .await
            .unwrap();
        wait_for("a new session after expiry", Duration::from_secs(5), || {
            listener.session_count() == 1
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outlive_their_dropped_listener() {
    bounded(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = Setup::minimal(1).kcp(true);
        let mut listener = KcpListener::bind("127.0.0.1:0".parse().unwrap(), config.clone())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let mut client = braid_kcp::dial(addr, &config).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut server = listener.accept().await.unwrap();
        // A server shutting down stops accepting but lets open sessions finish.
        drop(listener);
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // No new sessions once it is dropped.
        let mut late = braid_kcp::dial(addr, &config).await.unwrap();
        late.write_all(b"late").await.unwrap();
        let e = late.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_conversation_from_a_known_address_replaces_its_session() {
    bounded(async {
        use tokio::io::AsyncReadExt;
        // With a cipher: the datagram given back must be exactly what arrived.
        let mut config = Setup::minimal(1).kcp(true);
        config.crypt = Crypt::new("aes", "replace").unwrap();
        let mut listener = KcpListener::bind("127.0.0.1:0".parse().unwrap(), config.clone())
            .await
            .unwrap();
        let addr = listener.local_addr();
        let stats = listener.stats();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&first_datagram(&config, 1), addr)
            .await
            .unwrap();
        let mut old = listener.accept().await.unwrap();
        assert_eq!(old.conv(), 1);
        // Another conversation past its start (sequence number 1) is dropped...
        let mut other = Conn::new(2, &config, 0);
        other.send(b"a", 0);
        other.poll_datagram().unwrap();
        other.send(b"b", 0);
        let later = other.poll_datagram().unwrap();
        socket.send_to(&later, addr).await.unwrap();
        // ...and one at its start replaces the session at once.
        socket
            .send_to(&first_datagram(&config, 3), addr)
            .await
            .unwrap();
        let mut new = listener.accept().await.unwrap();
        assert_eq!(new.conv(), 3, "conversation 2 (sn 1) opened a session");
        let mut buf = [0u8; 16];
        assert_eq!(new.read(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(old.read(&mut buf).await.unwrap(), 5);
        let e = old.read(&mut buf).await.unwrap_err();
        assert!(
            e.to_string().contains("new session (conversation 3)"),
            "{e}"
        );
        assert_eq!(stats.sessions_replaced.load(Ordering::Relaxed), 1);
        assert_eq!(stats.sessions_opened.load(Ordering::Relaxed), 2);
        assert_eq!(listener.session_count(), 1);
    })
    .await
}
