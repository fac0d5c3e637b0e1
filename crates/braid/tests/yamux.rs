//! yamux through the tokio API: reset, GoAway drain, ping, opens waiting for ACKs.

mod common;

use braid::{Config, ConnectionError, Protocol};
use common::{duplex_pair, tcp_pair};
use std::io::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn yamux() -> Config {
    Config::new(Protocol::Yamux)
}

#[tokio::test]
async fn reset_fails_the_peers_calls_with_connection_reset() {
    let (client, server) = tcp_pair(yamux()).await;
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"before the reset").await.unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut buf = [0u8; 16];
    peer.read_exact(&mut buf).await.unwrap();
    s.reset();
    assert_eq!(
        s.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    let err = peer.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    // And the other direction.
    let mut t = server.open_stream().await.unwrap();
    t.write_all(b"hi").await.unwrap();
    let mut other = client.accept_stream().await.unwrap();
    t.reset();
    let mut got = Vec::new();
    let err = other.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn go_away_drains_existing_streams_and_refuses_new_ones() {
    let (client, server) = tcp_pair(yamux()).await;
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"1").await.unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut one = [0u8; 1];
    peer.read_exact(&mut one).await.unwrap();
    server.go_away();
    // A round trip on the live stream: the GoAway was sent before this reply.
    peer.write_all(b"2").await.unwrap();
    s.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"2");
    let err = client.open_stream().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // The existing stream finishes normally.
    s.write_all(b"bye").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye");
    assert!(!client.is_closed() && !server.is_closed());
}

#[tokio::test(start_paused = true)]
async fn ping_reports_the_round_trip_and_smux_says_unsupported() {
    let (client, _server) = duplex_pair(yamux());
    let rtt = client.ping().await.unwrap();
    assert!(rtt < std::time::Duration::from_secs(1), "{rtt:?}");
    let (smux, _peer) = duplex_pair(Config::default());
    assert_eq!(
        smux.ping().await.unwrap_err().kind(),
        ErrorKind::Unsupported
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_beyond_the_unacked_limit_wait_for_accepts() {
    let (client, server) = tcp_pair(yamux()).await;
    let opener = tokio::spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..600 {
            streams.push(client.open_stream().await.unwrap());
        }
        (client, streams)
    });
    let mut accepted = Vec::new();
    for _ in 0..600 {
        accepted.push(server.accept_stream().await.unwrap());
    }
    let (_client, streams) = opener.await.unwrap();
    assert_eq!(streams.len(), 600);
    assert_eq!(accepted.len(), 600);
}

#[tokio::test]
async fn peer_go_away_with_an_error_code_ends_the_session() {
    // A raw peer that sends GoAway(2) (internal error).
    let (a, mut raw) = tokio::io::duplex(1024);
    let client = braid::Session::client(a, yamux()).unwrap();
    raw.write_all(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
        .await
        .unwrap();
    assert_eq!(client.closed().await, ConnectionError::GoAway(2));
}

#[tokio::test]
async fn one_auto_listener_serves_smux1_smux2_and_yamux_clients() {
    use braid::{Session, Side};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            let session =
                Session::from_tcp(tcp, Config::new(Protocol::Auto), Side::Server).unwrap();
            tokio::spawn(async move {
                while let Some(mut s) = session.accept_stream().await {
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    s.write_all(&got).await.unwrap();
                    s.shutdown().await.unwrap();
                }
            });
        }
    });
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client = Session::from_tcp(tcp, Config::new(protocol), Side::Client).unwrap();
        let mut s = client.open_stream().await.unwrap();
        let msg = format!("{protocol:?}");
        s.write_all(msg.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut echo = Vec::new();
        s.read_to_end(&mut echo).await.unwrap();
        assert_eq!(echo, msg.as_bytes());
    }
    server.await.unwrap();
}

/// While reading is paused by a spent receive budget, keepalive pings keep going out
/// (their replies cannot be read): the writes are what notice a peer that died. Found with
/// the Go peer (`spent_budget_starves_go_keepalive` in interop_yamux.rs).
#[tokio::test(start_paused = true)]
async fn paused_session_pings_and_notices_a_dead_peer() {
    const BUDGET: usize = 256 * 1024;
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut config = yamux();
    config.max_receive_buffer = BUDGET;
    config.keep_alive_interval = std::time::Duration::from_secs(1);
    config.keep_alive_timeout = std::time::Duration::from_secs(1);
    let paused = braid::Session::server(a, config).unwrap();
    let (peer, peer_driver) = braid::Session::new(b, yamux(), braid::Side::Client).unwrap();
    let peer_driver = tokio::spawn(peer_driver);
    let mut stream = peer.open_stream().await.unwrap();
    stream.write_all(&vec![1u8; BUDGET]).await.unwrap();
    common::settle().await;
    assert!(
        paused.stats().buffered_recv >= BUDGET,
        "the budget is spent"
    );
    // Three keepalive intervals of virtual time: three pings reach the peer.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert!(peer.stats().frames_received >= 3, "{:?}", peer.stats());
    peer_driver.abort(); // the peer dies: its end of the transport is dropped
    let _ = peer_driver.await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), paused.closed()).await;
    assert!(
        ended.is_ok(),
        "the paused session did not notice its peer was gone"
    );
    drop(stream);
}
