//! Time bounds of the tokio layer against silent and stuck peers, on tokio's paused
//! clock: a session still detecting its protocol ends at `detect_timeout`, and however a
//! session ends, `Session::closed` returns within `close_timeout` even when the
//! transport's shutdown never completes (a TLS close_notify to a peer that stopped
//! reading).

use braid::{Config, ConnectionError, Protocol, Session, Side};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// A transport whose shutdown never completes, as a TLS stream whose peer reads nothing.
struct StuckShutdown(DuplexStream);

impl AsyncRead for StuckShutdown {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for StuckShutdown {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_to_an_auto_server_ends_at_the_detect_timeout() {
    let (ours, _silent_peer) = tokio::io::duplex(64 * 1024);
    let config = Config::new(Protocol::Auto);
    let limit = config.detect_timeout;
    let session = Session::server(StuckShutdown(ours), config).unwrap();
    let started = tokio::time::Instant::now();
    let reason = tokio::time::timeout(limit * 10, session.closed())
        .await
        .expect("the session ends");
    assert_eq!(reason, ConnectionError::DetectTimeout(limit));
    let took = started.elapsed();
    assert!(
        took >= limit && took <= limit + Config::default().close_timeout,
        "ended after {took:?}"
    );
    assert!(session.accept_stream().await.is_none());
}

/// Ends a session in one of the ways that are not a local close, with a transport whose
/// shutdown hangs: `closed()` must still return within `close_timeout` of the end.
async fn ends_in_bounded_time(protocol: Protocol, how: &str) {
    let (ours, mut peer) = tokio::io::duplex(1 << 20);
    let mut config = Config::new(protocol);
    config.close_timeout = Duration::from_secs(3);
    let close_timeout = config.close_timeout;
    let keepalive = config.keep_alive_interval + 2 * config.keep_alive_timeout;
    let session = Session::client(StuckShutdown(ours), config).unwrap();
    let end_by = match how {
        "peer EOF" => {
            peer.shutdown().await.unwrap();
            Duration::ZERO
        }
        "protocol error" => {
            peer.write_all(&[0xee; 16]).await.unwrap();
            Duration::ZERO
        }
        "GoAway with a code" => {
            // yamux GoAway(2): version 0, type 3, flags 0, stream 0, code 2.
            peer.write_all(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
                .await
                .unwrap();
            Duration::ZERO
        }
        // The peer keeps the connection open and says nothing.
        "keepalive timeout" => keepalive,
        other => unreachable!("{other}"),
    };
    let reason = tokio::time::timeout(
        end_by + close_timeout + Duration::from_secs(1),
        session.closed(),
    )
    .await
    .unwrap_or_else(|_| panic!("{protocol:?}, {how}: closed() did not return"));
    assert!(
        !matches!(reason, ConnectionError::LocallyClosed),
        "{protocol:?}, {how}: {reason}"
    );
    drop(peer);
}

#[tokio::test(start_paused = true)]
async fn every_end_reason_is_bounded_by_the_close_timeout() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        for how in ["peer EOF", "protocol error", "keepalive timeout"] {
            ends_in_bounded_time(protocol, how).await;
        }
    }
    ends_in_bounded_time(Protocol::Yamux, "GoAway with a code").await;
}

#[tokio::test(start_paused = true)]
async fn a_local_close_is_bounded_by_the_close_timeout_too() {
    let (ours, _peer) = tokio::io::duplex(1 << 20);
    let mut config = Config::new(Protocol::Yamux);
    config.close_timeout = Duration::from_secs(3);
    let session = Session::new(StuckShutdown(ours), config, Side::Client)
        .map(|(s, driver)| {
            tokio::spawn(driver);
            s
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(4), session.close())
        .await
        .expect("close() returns by its deadline");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_accepts_no_streams_refuses_them() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut config = Config::new(Protocol::Yamux);
    config.accept_streams = false;
    let client = Session::client(a, config).unwrap();
    let server = Session::server(b, Config::new(Protocol::Yamux)).unwrap();
    let mut stream = server.open_stream().await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 8];
    let err = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(client.num_streams(), 0);
    assert!(!client.is_closed());
}
