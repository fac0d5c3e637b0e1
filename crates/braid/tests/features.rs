//! gmux features through the tokio API: names, idle timeouts, close notification, stats.

mod common;

use braid::{Config, ConnectionError, Protocol, ResetReason, StreamEnd, StreamEndCallback};
use common::{duplex_pair, settle, PROTOCOLS};
use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn stream_names_round_trip() {
    let mut config = Config::new(Protocol::SmuxV2);
    config.stream_names = true;
    let (client, server) = duplex_pair(config);
    let s = client.open_named("metrics").await.unwrap();
    assert_eq!(s.name().as_deref(), Some("metrics"));
    let peer = server.accept_stream().await.unwrap();
    assert_eq!(peer.name().as_deref(), Some("metrics"));
    let too_long = "x".repeat(70_000);
    let err = client.open_named(&too_long).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_on_a_blocked_read_and_a_blocked_write() {
    for proto in PROTOCOLS {
        let mut config = Config::new(proto);
        config.keep_alive_disabled = true;
        let (client, server) = duplex_pair(config);
        // Stream 1: the server waits in read, the client sends nothing more.
        let mut quiet = client.open_stream().await.unwrap();
        quiet.write_all(b"x").await.unwrap();
        let mut reader_side = server.accept_stream().await.unwrap();
        reader_side.read_exact(&mut [0u8; 1]).await.unwrap();
        reader_side.set_idle_timeout(Some(Duration::from_secs(30)));
        // Stream 2: the client waits in write, the server never reads.
        let mut writer_side = client.open_stream().await.unwrap();
        writer_side.write_all(b"y").await.unwrap();
        let _unread = server.accept_stream().await.unwrap();
        writer_side.set_idle_timeout(Some(Duration::from_secs(30)));
        assert_eq!(writer_side.idle_timeout(), Some(Duration::from_secs(30)));
        let start = tokio::time::Instant::now();
        let reader = tokio::spawn(async move {
            let err = reader_side.read(&mut [0u8; 8]).await.unwrap_err();
            (err.kind(), reader_side.closed().await)
        });
        let writer = tokio::spawn(async move {
            // More than every buffer and window on the way: this write blocks.
            let big = vec![0u8; 64 << 20];
            let err = writer_side.write_all(&big).await.unwrap_err();
            (err.kind(), writer_side.closed().await)
        });
        let (kind, end) = reader.await.unwrap();
        assert_eq!(kind, ErrorKind::TimedOut, "{proto:?}");
        assert_eq!(end, StreamEnd::Reset(ResetReason::IdleTimeout));
        let (kind, end) = writer.await.unwrap();
        assert_eq!(kind, ErrorKind::TimedOut, "{proto:?}");
        assert_eq!(end, StreamEnd::Reset(ResetReason::IdleTimeout));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_secs(31),
            "{took:?}"
        );
        drop(quiet);
    }
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_spares_an_active_stream() {
    let mut config = Config::new(Protocol::Yamux);
    config.idle_timeout = Some(Duration::from_secs(10));
    config.keep_alive_disabled = true;
    let (client, server) = duplex_pair(config);
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b".").await.unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut one = [0u8; 1];
    for _ in 0..20 {
        peer.read_exact(&mut one).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await; // virtual time: the workload's pace
        s.write_all(b".").await.unwrap();
    }
    peer.read_exact(&mut one).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_close_reason_reaches_closed() {
    let ends: Arc<Mutex<Vec<StreamEnd>>> = Arc::default();
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_disabled = true;
    let seen = ends.clone();
    config.on_stream_end = Some(StreamEndCallback::new(move |_, why| {
        seen.lock().unwrap().push(why.clone())
    }));
    let (client, server) = duplex_pair(config);

    // We finish first, then the peer.
    let mut a = client.open_stream().await.unwrap();
    a.shutdown().await.unwrap();
    let mut pa = server.accept_stream().await.unwrap();
    pa.read_to_end(&mut Vec::new()).await.unwrap();
    pa.shutdown().await.unwrap();
    assert_eq!(a.closed().await, StreamEnd::LocalClose);
    assert_eq!(pa.closed().await, StreamEnd::PeerFin);

    // Reset by the peer.
    let b = client.open_stream().await.unwrap();
    let pb = {
        let mut b2 = client.open_stream().await.unwrap();
        b2.write_all(b"-").await.unwrap();
        let _ = server.accept_stream().await.unwrap(); // b
        let pb2 = server.accept_stream().await.unwrap();
        drop(b2);
        pb2
    };
    pb.reset();
    settle().await;
    let _ = b; // b was never used; its end comes with the session below
               // Idle timeout.
    let c = client.open_stream().await.unwrap();
    c.set_idle_timeout(Some(Duration::from_secs(1)));
    assert_eq!(c.closed().await, StreamEnd::Reset(ResetReason::IdleTimeout));
    // The session ends.
    let d = client.open_stream().await.unwrap();
    server.close().await;
    assert_eq!(
        d.closed().await,
        StreamEnd::Session(ConnectionError::TransportClosed)
    );
    let seen = ends.lock().unwrap().clone();
    for want in [
        StreamEnd::LocalClose,
        StreamEnd::PeerFin,
        StreamEnd::Reset(ResetReason::Locally),
        StreamEnd::Reset(ResetReason::IdleTimeout),
        StreamEnd::Session(ConnectionError::TransportClosed),
    ] {
        assert!(
            seen.contains(&want),
            "callback never saw {want:?}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn stats_add_up() {
    for proto in PROTOCOLS {
        let (client, server) = duplex_pair(Config::new(proto));
        let mut s = client.open_stream().await.unwrap();
        s.write_all(&vec![7u8; 100_000]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut peer = server.accept_stream().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100_000);
        assert_eq!(s.stats().bytes_sent, 100_000);
        assert_eq!(peer.stats().bytes_received, 100_000);
        assert_eq!(client.stats().bytes_sent, 100_000);
        assert_eq!(server.stats().bytes_received, 100_000);
        assert_eq!(server.stats().buffered_recv, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn cancelled_reads_and_accepts_lose_nothing() {
    let (client, server) = duplex_pair(Config::new(Protocol::SmuxV2));
    // An accept given up on by a timeout...
    assert!(
        tokio::time::timeout(Duration::from_secs(1), server.accept_stream())
            .await
            .is_err()
    );
    let mut s = client.open_stream().await.unwrap();
    s.set_priority(9);
    assert_eq!(s.priority(), 9);
    s.write_all(b"first").await.unwrap();
    // ...does not lose the stream that comes later.
    let mut peer = server.accept_stream().await.unwrap();
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).await.unwrap();
    // A read cancelled by a timeout does not lose the data that arrives after it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), peer.read(&mut buf))
            .await
            .is_err()
    );
    s.write_all(b"later").await.unwrap();
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"later");
}

#[tokio::test(start_paused = true)]
async fn accept_timeout_and_close_reason() {
    let (client, server) = duplex_pair(Config::new(Protocol::SmuxV2));
    let err = server
        .accept_timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"x").await.unwrap();
    let peer = server
        .accept_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a stream");
    assert_eq!(peer.id(), s.id());
    assert_eq!(client.close_reason(), None);
    client.close().await;
    assert_eq!(client.close_reason(), Some(ConnectionError::LocallyClosed));
    assert_eq!(server.closed().await, ConnectionError::TransportClosed);
    assert_eq!(
        server.close_reason(),
        Some(ConnectionError::TransportClosed)
    );
    // Once the session has ended, `Ok(None)` at once.
    assert!(server
        .accept_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn chunks_on_the_halves() {
    for proto in PROTOCOLS {
        let (client, server) = duplex_pair(Config::new(proto));
        let mut s = client.open_stream().await.unwrap();
        s.write_chunk(bytes::Bytes::from_static(b"hello"))
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let peer = server.accept_stream().await.unwrap();
        let (mut r, mut w) = peer.into_split();
        let mut got = Vec::new();
        while let Some(chunk) = r.read_chunk(2).await.unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= 2);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"hello");
        assert_eq!(r.read_chunk(16).await.unwrap(), None);
        w.write_chunk(bytes::Bytes::from_static(b"back"))
            .await
            .unwrap();
        drop(w);
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"back");
    }
}
