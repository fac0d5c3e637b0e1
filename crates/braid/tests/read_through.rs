//! Read-through: a stream task that finds nothing to read reads the connection itself
//! while the driver is parked, and the connection's input readiness wakes that task as
//! well as the driver. These tests check that input still reaches every stream in order
//! when many tasks read through at once on two threads, and that a task which read
//! through and then stops reading does not hold up the session.

mod common;

use braid::{Config, Protocol, Session};
use common::ydata;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAMS: u32 = 16;
const MESSAGES: u32 = 500;

/// Small messages (so that stream tasks read through) echoed on many streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_echo_small_messages_intact() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        tokio::time::timeout(Duration::from_secs(30), echo_many(protocol))
            .await
            .expect("every message must be echoed");
    }
}

async fn echo_many(protocol: Protocol) {
    // A small pipe, so that reads and writes are cut at every size.
    let (a, b) = tokio::io::duplex(1500);
    let client = Session::client(a, Config::new(protocol)).unwrap();
    let server = Session::server(b, Config::new(protocol)).unwrap();
    let echo = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..STREAMS {
            let mut s = server.accept_stream().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let mut echoed = 0;
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                    echoed += n;
                }
                s.shutdown().await.unwrap();
                echoed
            }));
        }
        let mut echoed = 0;
        for t in tasks {
            echoed += t.await.unwrap();
        }
        (server, echoed)
    });
    let mut clients = Vec::new();
    for k in 0..STREAMS {
        let mut s = client.open_stream().await.unwrap();
        clients.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                // Messages of 1..=200 bytes that say which stream and which message.
                let len = 1 + ((i * 7 + k * 13) % 200) as usize;
                let msg: Vec<u8> = (0..len).map(|j| (k * 31 + i + j as u32) as u8).collect();
                s.write_all(&msg).await.unwrap();
                let mut back = vec![0u8; len];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg, "stream {k} message {i}");
            }
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let (_server, echoed) = echo.await.unwrap();
    let sent: usize = (0..STREAMS)
        .flat_map(|k| (0..MESSAGES).map(move |i| 1 + ((i * 7 + k * 13) % 200) as usize))
        .sum();
    assert_eq!(echoed, sent, "{protocol:?}");
    client.close().await;
}

/// A task whose read found nothing (and so read through, becoming the one the
/// connection wakes) then waits for something else: the other stream still gets all
/// its data, because the driver is woken too.
#[tokio::test(flavor = "current_thread")]
async fn a_reader_that_stops_reading_holds_nothing_up() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = Session::client(a, Config::new(protocol)).unwrap();
        let server = Session::server(b, Config::new(protocol)).unwrap();
        let mut idle = client.open_stream().await.unwrap();
        let mut busy = client.open_stream().await.unwrap();
        // Announce both streams (the server learns of a stream with its first frame).
        idle.write_all(b"i").await.unwrap();
        busy.write_all(b"b").await.unwrap();
        let mut s1 = server.accept_stream().await.unwrap();
        let s2 = server.accept_stream().await.unwrap();
        let mut first = [0u8; 1];
        s1.read_exact(&mut first).await.unwrap();
        let (mut to_idle, mut to_busy) = if first == *b"i" { (s1, s2) } else { (s2, s1) };
        to_busy.read_exact(&mut first).await.unwrap();

        // The idle stream's task reads once (nothing there: it reads through and waits),
        // then gives up on that read and waits for a signal instead.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let idle_task = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            tokio::select! {
                biased;
                r = idle.read(&mut buf) => panic!("nothing was sent to it: {r:?}"),
                _ = tokio::task::yield_now() => {}
            }
            wait.await.unwrap();
            idle.read_exact(&mut buf[..5]).await.unwrap();
            assert_eq!(&buf[..5], b"later");
        });
        tokio::task::yield_now().await;

        let sender = tokio::spawn(async move {
            for i in 0..1000u32 {
                to_busy.write_all(&i.to_le_bytes()).await.unwrap();
            }
            to_busy.shutdown().await.unwrap();
            (to_busy, to_idle.write_all(b"later").await)
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), busy.read_to_end(&mut got))
            .await
            .expect("the busy stream's data must arrive")
            .unwrap();
        let want: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(got, want, "{protocol:?}");
        let (_to_busy, wrote) = sender.await.unwrap();
        wrote.unwrap();
        go.send(()).unwrap();
        idle_task.await.unwrap();
    }
}

/// The session's timers still fire while stream tasks read all the input themselves: a
/// peer that keeps sending small messages but never answers a ping is timed out.
#[tokio::test(flavor = "current_thread")]
async fn keepalive_times_out_while_a_stream_reads_through() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_interval = Duration::from_millis(100);
    config.keep_alive_timeout = Duration::from_millis(200);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let session = Session::client(tcp, config).unwrap();
    let (mut peer, _) = listener.accept().await.unwrap();

    // The peer opens stream 2 and sends it 16 bytes every 5 ms; it reads nothing, so
    // the session's pings go unanswered.
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut flags = 1; // SYN on the first frame
        loop {
            tick.tick().await;
            let frame = ydata(flags, 2, &[7u8; 16]);
            flags = 0;
            if peer.write_all(&frame).await.is_err() {
                return peer;
            }
        }
    });
    let mut stream = session.accept_stream().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut got = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    });
    let reason = tokio::time::timeout(Duration::from_secs(20), session.closed())
        .await
        .expect("the unanswered pings must end the session");
    assert!(
        matches!(reason, braid::ConnectionError::KeepAliveTimeout(_)),
        "{reason:?}"
    );
    // Data flowed to the reader until then.
    assert!(reader.await.unwrap() > 0);
    sender.abort();
}
