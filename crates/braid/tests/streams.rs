//! The tokio API end to end: integrity, half-close, drop, head-of-line, keepalive.

mod common;

use braid::{Config, ConnectionError, Protocol, Session, Side, Stream};
use common::{duplex_pair, settle, tcp_pair, PROTOCOLS};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opener side: sends `len | sha256 | data`, half-closes, reads the echo and checks it.
async fn send_and_verify(stream: Stream, data: Vec<u8>) {
    let (mut r, mut w) = stream.into_split();
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let writer = tokio::spawn(async move {
        w.write_all(&(data.len() as u64).to_le_bytes())
            .await
            .unwrap();
        w.write_all(&digest).await.unwrap();
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    r.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    let got: [u8; 32] = Sha256::digest(&echoed).into();
    assert_eq!(got, digest, "echo corrupted ({} bytes)", echoed.len());
}

/// Acceptor side: checks what arrived against the announced hash, then sends it back.
///
/// It reads the whole upload before echoing. An echo that stops reading while its write
/// is blocked couples the two directions: with hundreds of such streams on both sides,
/// each session's receive budget fills with data whose readers wait for send room that
/// only the other, equally paused, session can free. smux has no credit for the session
/// as a whole, so Go deadlocks the same way (see docs/protocol.md).
async fn verify_and_echo(stream: Stream) {
    let (mut r, mut w) = stream.into_split();
    let len = r.read_u64_le().await.unwrap() as usize;
    let mut digest = [0u8; 32];
    r.read_exact(&mut digest).await.unwrap();
    let mut data = Vec::with_capacity(len);
    r.read_to_end(&mut data).await.unwrap();
    assert_eq!(data.len(), len);
    assert_eq!(
        <[u8; 32]>::from(Sha256::digest(&data)),
        digest,
        "upload corrupted"
    );
    w.write_all(&data).await.unwrap();
    w.shutdown().await.unwrap();
}

/// Serves every stream the session accepts with `verify_and_echo`.
fn echo_all(session: Session) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        while let Some(stream) = session.accept_stream().await {
            tasks.push(tokio::spawn(verify_and_echo(stream)));
        }
        let n = tasks.len();
        for t in tasks {
            t.await.unwrap();
        }
        n
    })
}

/// Sizes spread evenly on a log scale from 1 byte to 4 MiB: every order of magnitude is
/// covered and the total stays testable.
fn random_size(rng: &mut StdRng) -> usize {
    let exp = rng.gen_range(0.0..22.0f64);
    2f64.powf(exp) as usize
}

async fn integrity(client: Session, server: Session, streams: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let server_echo = echo_all(server.clone());
    let client_echo = echo_all(client.clone());
    let mut tasks = Vec::new();
    for i in 0..streams {
        let size = random_size(&mut rng);
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        // Both sides open streams.
        let opener = if i % 2 == 0 {
            client.clone()
        } else {
            server.clone()
        };
        tasks.push(tokio::spawn(async move {
            let stream = opener.open_stream().await.unwrap();
            send_and_verify(stream, data).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    client.close().await;
    assert_eq!(server.closed().await, ConnectionError::TransportClosed);
    let served = server_echo.await.unwrap() + client_echo.await.unwrap();
    assert_eq!(served, streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_500_streams_over_duplex() {
    for (i, proto) in PROTOCOLS.into_iter().enumerate() {
        let (c, s) = duplex_pair(Config::new(proto));
        integrity(c, s, 500, i as u64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_500_streams_over_tcp() {
    for (i, proto) in PROTOCOLS.into_iter().enumerate() {
        let (c, s) = tcp_pair(Config::new(proto)).await;
        assert!(c.local_addr().is_some() && c.peer_addr() == s.local_addr());
        integrity(c, s, 500, 10 + i as u64).await;
    }
}

#[tokio::test]
async fn half_close_still_reads_the_reply() {
    for proto in PROTOCOLS {
        let (client, server) = tcp_pair(Config::new(proto)).await;
        let mut s = client.open_stream().await.unwrap();
        s.write_all(b"question").await.unwrap();
        s.shutdown().await.unwrap();
        let err = s.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);

        let mut peer = server.accept_stream().await.unwrap();
        let mut q = Vec::new();
        peer.read_to_end(&mut q).await.unwrap(); // EOF after the buffered data
        assert_eq!(q, b"question");
        peer.write_all(b"answer").await.unwrap();
        peer.shutdown().await.unwrap();

        let mut a = Vec::new();
        s.read_to_end(&mut a).await.unwrap();
        assert_eq!(a, b"answer");
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF stays EOF");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_streams_and_sessions_releases_everything() {
    for proto in PROTOCOLS {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, cdriver) = Session::new(a, Config::new(proto), Side::Client).unwrap();
        let (server, sdriver) = Session::new(b, Config::new(proto), Side::Server).unwrap();
        let cdriver = tokio::spawn(cdriver);
        let sdriver = tokio::spawn(sdriver);
        let acceptor = {
            let server = server.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while let Some(mut s) = server.accept_stream().await {
                    let mut buf = [0u8; 1];
                    s.read_exact(&mut buf).await.unwrap();
                    n += 1;
                    // Dropped here, with the peer's FIN possibly unread.
                }
                n
            })
        };
        for i in 0..10_000u32 {
            let mut s = client.open_stream().await.unwrap();
            s.write_all(&[i as u8]).await.unwrap();
            if i % 2 == 0 {
                s.shutdown().await.unwrap();
            }
            drop(s);
        }
        settle().await;
        assert_eq!(client.num_streams(), 0);
        assert_eq!(server.num_streams(), 0);
        // Dropping every handle closes the session and ends both drivers.
        drop(client);
        drop(server);
        assert_eq!(acceptor.await.unwrap(), 10_000);
        assert!(cdriver.await.unwrap().is_ok());
        assert_eq!(
            sdriver.await.unwrap(),
            Err(ConnectionError::TransportClosed)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn v2_stalled_reader_does_not_stop_other_streams() {
    let (client, server) = duplex_pair(Config::new(Protocol::SmuxV2));
    let mut stalled = client.open_stream().await.unwrap();
    let mut live = client.open_stream().await.unwrap();
    let _stalled_peer = server.accept_stream().await.unwrap(); // never read
    let mut live_peer = server.accept_stream().await.unwrap();
    let writer = tokio::spawn(async move {
        stalled.write_all(&vec![1u8; 1 << 20]).await.unwrap(); // blocks on the window
    });
    settle().await;
    let size = 8 << 20; // twice the session's receive budget
    let feeder = tokio::spawn(async move {
        live.write_all(&vec![2u8; size]).await.unwrap();
        live.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    live_peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), size);
    feeder.await.unwrap();
    assert!(
        !writer.is_finished(),
        "the stalled stream is held by its window"
    );
}

#[tokio::test(start_paused = true)]
async fn v1_stalled_reader_pauses_the_session_until_it_reads() {
    let (client, server) = duplex_pair(Config::new(Protocol::SmuxV1));
    let mut stalled = client.open_stream().await.unwrap();
    let mut other = client.open_stream().await.unwrap();
    let mut stalled_peer = server.accept_stream().await.unwrap();
    let mut other_peer = server.accept_stream().await.unwrap();
    let big = 6 << 20; // more than the 4 MiB receive budget
    let writer = tokio::spawn(async move {
        stalled.write_all(&vec![1u8; big]).await.unwrap();
        stalled.shutdown().await.unwrap();
        other.write_all(b"queued behind").await.unwrap();
        other.shutdown().await.unwrap();
    });
    settle().await;
    // smux v1's documented head-of-line blocking: the budget is spent, nothing is read,
    // so the other stream's data cannot arrive.
    let mut buf = [0u8; 16];
    let blocked = tokio::time::timeout(Duration::from_secs(1), other_peer.read(&mut buf)).await;
    assert!(
        blocked.is_err(),
        "other stream must wait behind the stalled one"
    );
    // The stalled reader resumes: everything arrives, in order, nothing lost.
    let mut all = Vec::new();
    stalled_peer.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), big);
    let mut rest = Vec::new();
    other_peer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"queued behind");
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_detected_by_keepalive() {
    let (a, _silent) = tokio::io::duplex(1 << 20); // the other end never answers
    let client = Session::client(a, Config::default()).unwrap();
    let mut s = client.open_stream().await.unwrap();
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took <= Duration::from_secs(60),
        "{took:?}"
    );
    assert_eq!(
        client.closed().await,
        ConnectionError::KeepAliveTimeout(Duration::from_secs(30))
    );
    assert!(client.accept_stream().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn idle_live_peer_is_kept() {
    let (client, server) = duplex_pair(Config::default());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!client.is_closed() && !server.is_closed());
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"alive").await.unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"alive");
}

#[tokio::test]
async fn peer_gone_fails_streams_promptly() {
    let (client, server) = tcp_pair(Config::default()).await;
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"x").await.unwrap();
    let peer = server.accept_stream().await.unwrap();
    drop(peer);
    server.close().await;
    let err = s.read_to_end(&mut Vec::new()).await;
    // The server's close sent our stream a FIN: EOF. A new stream sees the dead session.
    assert!(err.is_ok());
    assert_eq!(client.closed().await, ConnectionError::TransportClosed);
    let err = client.open_stream().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
}

#[tokio::test(start_paused = true)]
async fn close_is_bounded_when_the_peer_stops_reading() {
    let (a, _b) = tokio::io::duplex(64 * 1024); // nobody reads the other end
    let mut config = Config::default();
    config.keep_alive_disabled = true;
    let client = Session::client(a, config.clone()).unwrap();
    let mut s = client.open_stream().await.unwrap();
    // More than the pipe holds: the driver keeps frames it cannot write.
    let writer = tokio::spawn(async move {
        let _ = s.write_all(&vec![0u8; 1 << 20]).await;
    });
    settle().await;
    let start = tokio::time::Instant::now();
    client.close().await;
    assert_eq!(start.elapsed(), config.close_timeout);
    writer.abort();
}

#[tokio::test]
async fn invalid_config_is_refused_with_the_field_named() {
    let mut config = Config::default();
    config.max_frame_size = 0;
    let (a, _b) = tokio::io::duplex(64);
    let err = Session::client(a, config).unwrap_err();
    assert_eq!(err.field, braid::ConfigField::MaxFrameSize);
}

/// A driver dropped before the session ended (task aborted, runtime shut down) ends the
/// session: waiting reads fail, `closed` returns and no stream can be opened. (Found by
/// the soak program.)
#[tokio::test]
async fn dropping_an_unfinished_driver_ends_the_session() {
    let config = Config::new(Protocol::SmuxV2);
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client, driver) = Session::new(a, config.clone(), Side::Client).unwrap();
    let task = tokio::spawn(driver);
    let server = Session::server(b, config).unwrap();
    let mut c = client.open_stream().await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let _s = server.accept_stream().await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), c.read(&mut byte))
        .await
        .expect("a read on a session whose driver was dropped hangs");
    assert_eq!(read.unwrap_err().kind(), ErrorKind::ConnectionAborted);
    let reason = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("Session::closed hangs after the driver was dropped");
    assert!(
        matches!(reason, ConnectionError::Transport { .. }),
        "{reason}"
    );
    assert!(client.open_stream().await.is_err());
}

/// `read_chunks` hands over every buffered frame in one call, in order, mixes with
/// `AsyncRead`, and ends with `None`.
#[tokio::test(flavor = "current_thread")]
async fn read_chunks_takes_all_buffered_frames_at_once() {
    for protocol in PROTOCOLS {
        let (client, server) = duplex_pair(Config::new(protocol));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = client.open_stream().await.unwrap();
        out.write_all(&data).await.unwrap();
        out.shutdown().await.unwrap();
        let mut inbound = server.accept_stream().await.unwrap();
        // Until everything has arrived (the window holds 200 KB for every protocol).
        tokio::time::timeout(Duration::from_secs(10), async {
            while inbound.stats().buffered_recv < data.len() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("all data arrives");
        let mut head = [0u8; 1000];
        inbound.read_exact(&mut head).await.unwrap();
        let mut got = head.to_vec();
        let mut bufs = vec![bytes::Bytes::new(); 64];
        let n = inbound.read_chunks(&mut bufs).await.unwrap().unwrap();
        // Frames carry at most 64 KiB: the rest is several chunks, all in this call.
        assert!(n > 1, "{protocol:?}: {n} chunk(s)");
        bufs[..n].iter().for_each(|c| got.extend_from_slice(c));
        assert_eq!(got, data, "{protocol:?}");
        assert_eq!(inbound.read_chunks(&mut bufs).await.unwrap(), None);
        assert_eq!(inbound.read_chunks(&mut []).await.unwrap(), Some(0));
    }
}
