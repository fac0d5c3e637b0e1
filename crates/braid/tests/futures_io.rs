//! The futures-io adapter (`--features futures-io`).
#![cfg(feature = "futures-io")]

use braid::{Config, Session};
use std::future::poll_fn;
use std::pin::Pin;

#[tokio::test]
async fn streams_work_through_futures_io_traits() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = Session::client(a, Config::default()).unwrap();
    let server = Session::server(b, Config::default()).unwrap();
    let mut s = client.open_stream().await.unwrap();
    let n =
        poll_fn(|cx| futures_io::AsyncWrite::poll_write(Pin::new(&mut s), cx, b"via futures-io"))
            .await
            .unwrap();
    assert_eq!(n, 14);
    poll_fn(|cx| futures_io::AsyncWrite::poll_close(Pin::new(&mut s), cx))
        .await
        .unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4];
    loop {
        let n = poll_fn(|cx| futures_io::AsyncRead::poll_read(Pin::new(&mut peer), cx, &mut buf))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"via futures-io");
}
