//! Byte compatibility with Go's real smux (Debian's 1.5.16), driven through the Go peer
//! program in `interop/go` (see `interop/mod.rs` for how it is found, built and run).
//!
//! Every scenario runs four times: smux v1 and v2, each with braid as the client of a Go
//! server and as the server of a Go client. The Go peer reports what it saw as JSON
//! lines; each test checks those reports against what braid sent and received. What the
//! tests taught us about Go is in docs/protocol.md, "Interop findings (Go smux 1.5.16)".
//!
//! Without Go installed the tests print why and pass, unless `BRAID_REQUIRE_INTEROP=1`.

mod interop;

use braid::{Config, ConnectionError, Protocol, Session};
use interop::{
    assert_same_bytes, bounded, braid_echo_acceptor, braid_echo_opener, bulk_receive, bulk_send,
    connect, each_stream, finish, go_records, open_or_accept, open_or_accept_n, open_uploads,
    pattern, request_then_half_close, serve_uploads, single, start, stream_offset, Dir, Record,
};
use std::io::ErrorKind;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The four tests of a scenario: {smux v1, v2} x {braid client -> Go server, Go client ->
/// braid server}. `scenario(proto, dir)` is an async fn of this file.
macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux1_braid_client_go_server() {
                bounded(super::$scenario(Protocol::SmuxV1, Dir::BraidClient)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux1_go_client_braid_server() {
                bounded(super::$scenario(Protocol::SmuxV1, Dir::GoClient)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux2_braid_client_go_server() {
                bounded(super::$scenario(Protocol::SmuxV2, Dir::BraidClient)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux2_go_client_braid_server() {
                bounded(super::$scenario(Protocol::SmuxV2, Dir::GoClient)).await
            }
        }
    )*};
}

matrix!(
    echo,
    empty_stream,
    integrity,
    both_sides_open,
    bulk,
    half_close,
    go_closes_first,
    slow_go_reader,
    slow_braid_reader,
    peer_killed,
    braid_cuts_the_connection,
);

// ---------------------------------------------------------------------------
// 1. Echo on one stream
// ---------------------------------------------------------------------------

/// Not a multiple of any frame or buffer size.
const ECHO_BYTES: usize = 300_001;

/// The client opens one stream and sends ECHO_BYTES; the other side echoes them back.
/// Both sides compare the bytes exactly.
async fn echo(proto: Protocol, dir: Dir) {
    echo_bytes(proto, dir, ECHO_BYTES).await
}

/// A stream that carries nothing: SYN, then FIN each way.
async fn empty_stream(proto: Protocol, dir: Dir) {
    echo_bytes(proto, dir, 0).await
}

async fn echo_bytes(proto: Protocol, dir: Dir, len: usize) {
    let args = ["-bytes", &len.to_string(), "-seed", "11"];
    let Some((session, go)) = start(proto, dir, Config::default(), "echo", &args).await else {
        return;
    };
    let data = pattern(11).bytes_at(0, len);
    let stream = open_or_accept(&session, dir).await;
    let id = stream.id().0;
    let go_role = match dir {
        Dir::BraidClient => {
            braid_echo_opener(stream, &data).await;
            "acceptor"
        }
        Dir::GoClient => {
            let got = braid_echo_acceptor(stream).await;
            assert_same_bytes(&got, &data, "what Go's opener sent");
            "opener"
        }
    };
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, go_role), vec![Record::of(id, &data)]);
}

// ---------------------------------------------------------------------------
// 2. 200 concurrent streams; 4. both sides open at once
// ---------------------------------------------------------------------------

const UPLOAD_STREAMS: usize = 200;
/// Upload sizes are log-uniform up to this: every order of magnitude is covered and the
/// total stays near 30 MB per direction.
const UPLOAD_MAX: usize = 2 << 20;

/// The client opens UPLOAD_STREAMS streams at once, each with an upload of a seeded
/// random size (see `upload`/`serve_upload`, and uploadOpener/uploadAcceptor in the Go
/// peer). Each side checks the hash of what it received; the test then checks that every
/// side received exactly what the other reports having sent.
async fn integrity(proto: Protocol, dir: Dir) {
    let args = [
        "-streams",
        &UPLOAD_STREAMS.to_string(),
        "-bytes",
        &UPLOAD_MAX.to_string(),
        "-seed",
        "21",
    ];
    let config = Config::default();
    let Some((session, go)) = start(proto, dir, config, "integrity", &args).await else {
        return;
    };
    let (sent, received) = match dir {
        Dir::BraidClient => (
            open_uploads(&session, UPLOAD_STREAMS, UPLOAD_MAX, 22).await,
            vec![],
        ),
        Dir::GoClient => (vec![], serve_uploads(&session, UPLOAD_STREAMS).await),
    };
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "acceptor"), sent, "what Go received");
    assert_eq!(go_records(&events, "opener"), received, "what Go sent");
}

/// Both sides open 50 upload streams the moment the session is up, and serve the other
/// side's. Frame sizes differ too: Go sends frames of at most 1 KiB, braid of 4 KiB.
async fn both_sides_open(proto: Protocol, dir: Dir) {
    const STREAMS: usize = 50;
    let args = [
        "-streams",
        "50",
        "-bytes",
        "1048576",
        "-seed",
        "31",
        "-max-frame-size",
        "1024",
    ];
    let mut config = Config::default();
    config.max_frame_size = 4096;
    let Some((session, go)) = start(proto, dir, config, "both", &args).await else {
        return;
    };
    let (sent, received) = tokio::join!(
        open_uploads(&session, STREAMS, UPLOAD_MAX, 32),
        serve_uploads(&session, STREAMS)
    );
    let ours = dir.braid_side() == braid::Side::Client;
    for r in &sent {
        assert_eq!(r.stream % 2 == 1, ours, "braid opened stream {}", r.stream);
    }
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "acceptor"), sent, "what Go received");
    assert_eq!(go_records(&events, "opener"), received, "what Go sent");
}

// ---------------------------------------------------------------------------
// 3. Bulk: 512 MiB on one stream
// ---------------------------------------------------------------------------

const BULK_BYTES: u64 = 512 << 20;

/// The client sends BULK_BYTES on one stream; the receiver replies with its SHA-256,
/// which the sender compares with its own.
async fn bulk(proto: Protocol, dir: Dir) {
    let args = ["-bytes", &BULK_BYTES.to_string(), "-seed", "41"];
    let Some((session, go)) = start(proto, dir, Config::default(), "bulk", &args).await else {
        return;
    };
    let began = Instant::now();
    let stream = open_or_accept(&session, dir).await;
    let (go_role, record) = match dir {
        Dir::BraidClient => ("acceptor", bulk_send(stream, BULK_BYTES, 41).await),
        Dir::GoClient => ("opener", bulk_receive(stream).await),
    };
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "bulk {proto:?} {dir:?}: {} MiB in {secs:.2} s, {:.0} MiB/s",
        BULK_BYTES >> 20,
        (BULK_BYTES >> 20) as f64 / secs
    );
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, go_role), vec![record]);
}

// ---------------------------------------------------------------------------
// 5. Half-close, and Go closing first
// ---------------------------------------------------------------------------

const REQUEST_BYTES: usize = 100_000;
const REPLY_BYTES: usize = 1 << 20;

/// braid half-closes after its request and still reads the reply, which Go writes after
/// reading end of stream. Go 1.5.16 (v2) cannot wait for window once it has our FIN (see
/// `go_v2_reply_after_fin_is_cut_at_the_window`), so braid advertises a window larger
/// than the reply here.
async fn half_close(proto: Protocol, dir: Dir) {
    let mut config = Config::default();
    config.max_stream_buffer = 2 * REPLY_BYTES;
    let args = ["-reply-bytes", &REPLY_BYTES.to_string(), "-seed", "51"];
    let Some((session, go)) = start(proto, dir, config, "halfclose", &args).await else {
        return;
    };
    let stream = open_or_accept(&session, dir).await;
    let id = stream.id().0;
    let (request, reply) = request_then_half_close(stream, REQUEST_BYTES).await;
    assert_same_bytes(&reply, &pattern(51).bytes_at(0, REPLY_BYTES), "reply");
    let events = finish(session, go).await;
    assert_eq!(
        Record::from_event(single(&events, "request")),
        Record::of(id, &request)
    );
    let reply_event = single(&events, "reply");
    assert_eq!(reply_event["written"], REPLY_BYTES, "{reply_event}");
    assert_eq!(reply_event["error"], "", "{reply_event}");
}

/// Go 1.5.16, v2: once a stream has the peer's FIN, a Write that must wait for window
/// gives up at once with io.EOF, reporting 0 bytes written although it already sent
/// those the window allowed. So with braid's default 64 KiB window a 1 MiB reply after
/// our half-close arrives cut short, followed by a regular FIN: braid's reader sees a
/// clean end of stream after a prefix of the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_v2_reply_after_fin_is_cut_at_the_window() {
    bounded(async {
        let args = ["-reply-bytes", &REPLY_BYTES.to_string(), "-seed", "53"];
        let Some((session, go)) = start(
            Protocol::SmuxV2,
            Dir::BraidClient,
            Config::default(),
            "halfclose",
            &args,
        )
        .await
        else {
            return;
        };
        let stream = session.open_stream().await.unwrap();
        let (_, reply) = request_then_half_close(stream, 1000).await;
        let window = Config::default().max_stream_buffer;
        assert!(
            reply.len() >= window && reply.len() < REPLY_BYTES,
            "got {} bytes of the {REPLY_BYTES}-byte reply; expected at least the window ({window}) and less than all",
            reply.len()
        );
        assert_same_bytes(&reply, &pattern(53).bytes_at(0, reply.len()), "reply prefix");
        let events = finish(session, go).await;
        let reply_event = single(&events, "reply");
        assert_eq!(reply_event["written"], 0, "{reply_event}");
        assert_eq!(reply_event["error"], "EOF", "{reply_event}");
    })
    .await
}

const GO_CLOSE_BYTES: usize = 100_000;
/// Fits the initial v2 window (256 KiB): Go never announced another on that stream.
const AFTER_CLOSE_BYTES: usize = 128 * 1024;

/// Go writes and closes (1.5.16 has only a full close). braid reads everything and a
/// clean end of stream; a Read on Go's closed stream gives io.EOF. braid's writes after
/// that succeed (it cannot know Go stopped reading) and Go drops them without harm: a new
/// stream echoes fine afterwards.
async fn go_closes_first(proto: Protocol, dir: Dir) {
    let args = ["-bytes", &GO_CLOSE_BYTES.to_string(), "-seed", "61"];
    let Some((session, go)) = start(proto, dir, Config::default(), "goclose", &args).await else {
        return;
    };
    let mut stream = open_or_accept(&session, dir).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("read Go's data");
    assert_same_bytes(&got, &pattern(61).bytes_at(0, GO_CLOSE_BYTES), "Go's data");
    stream
        .write_all(&vec![7u8; AFTER_CLOSE_BYTES])
        .await
        .expect("write after Go's close");
    stream.shutdown().await.unwrap();
    drop(stream);

    let probe = session.open_stream().await.unwrap();
    let probe_id = probe.id().0;
    let data = pattern(62).bytes_at(0, 64 * 1024);
    braid_echo_opener(probe, &data).await;

    let events = finish(session, go).await;
    let after_close = single(&events, "read_after_close");
    assert_eq!(after_close["bytes"], 0, "{after_close}");
    assert_eq!(after_close["error"], "EOF", "{after_close}");
    assert_eq!(
        go_records(&events, "acceptor"),
        vec![Record::of(probe_id, &data)]
    );
}

/// After Go closed a stream, what braid writes on it is dropped by Go. v1 has no windows:
/// any amount is "sent". v2: Go never announces window for a stream it has forgotten, so
/// braid sends what is left of the last window, buffers `stream_send_buffer` more, and
/// then the write waits for good (smux has no reset to end it). Dropping the stream then
/// leaves it queued with its data and FIN until the session ends; a graceful close waits
/// `close_timeout` for it. The session itself is not affected.
async fn writes_after_go_closed(proto: Protocol) {
    let mut config = Config::default();
    config.close_timeout = Duration::from_secs(1);
    let args = ["-bytes", "1000", "-seed", "63"];
    let Some((session, go)) = start(proto, Dir::BraidClient, config, "goclose", &args).await else {
        return;
    };
    let mut stream = session.open_stream().await.unwrap();
    stream.read_to_end(&mut Vec::new()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut writer = tokio::spawn(async move {
        let data = pattern(64).bytes_at(0, 8 << 20);
        w.write_all(&data).await
    });
    let written = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
    match proto {
        Protocol::SmuxV1 => {
            let w = written.expect("an 8 MiB v1 write after Go's close did not complete");
            w.unwrap().expect("write");
            drop(r);
        }
        _ => {
            assert!(
                written.is_err(),
                "an 8 MiB v2 write completed although Go announces no window"
            );
            writer.abort();
            assert!(writer.await.unwrap_err().is_cancelled());
            drop(r);
            assert_eq!(
                session.num_streams(),
                1,
                "the dropped stream waits to send its data and FIN"
            );
        }
    }

    let probe = session.open_stream().await.unwrap();
    braid_echo_opener(probe, &pattern(65).bytes_at(0, 1000)).await;
    let events = finish(session, go).await;
    assert_eq!(single(&events, "read_after_close")["error"], "EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_writes_after_go_closed_are_dropped_by_go() {
    bounded(writes_after_go_closed(Protocol::SmuxV1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writes_after_go_closed_stall_once_the_window_is_used() {
    bounded(writes_after_go_closed(Protocol::SmuxV2)).await
}

// ---------------------------------------------------------------------------
// 6. Small windows, slow reader on the Go side
// ---------------------------------------------------------------------------

const SLOW_STREAMS: usize = 4;
const SLOW_BYTES: usize = 512 * 1024;

/// Go runs with MaxReceiveBuffer 64 KiB and MaxStreamBuffer 16 KiB and reads 1000 bytes
/// at a time with a 1 ms pause after each; braid sends 512 KiB on each of 4 streams. No
/// deadlock, nothing lost.
async fn slow_go_reader(proto: Protocol, dir: Dir) {
    let args = [
        "-streams",
        &SLOW_STREAMS.to_string(),
        "-max-receive-buffer",
        "65536",
        "-max-stream-buffer",
        "16384",
        "-read-size",
        "1000",
        "-read-pause",
        "1ms",
    ];
    let Some((session, go)) = start(proto, dir, Config::default(), "slowreader", &args).await
    else {
        return;
    };
    let mut sent = each_stream(&session, dir, SLOW_STREAMS, |i, mut stream| async move {
        let id = stream.id().0;
        let mut start = [0u8; 1];
        stream
            .read_exact(&mut start)
            .await
            .expect("Go's start byte");
        let data = pattern(71).bytes_at(stream_offset(i), SLOW_BYTES);
        stream.write_all(&data).await.expect("send");
        stream.shutdown().await.unwrap();
        let n = stream.read(&mut [0u8; 1]).await.expect("read the end");
        assert_eq!(n, 0, "stream {id}: Go closes once it has read everything");
        Record::of(id, &data)
    })
    .await;
    sent.sort();
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "reader"), sent);
}

/// The mirror image of `slow_go_reader`: braid runs with a 64 KiB receive budget and
/// 16 KiB windows and reads 1000 bytes at a time with a 1 ms pause after each, while Go
/// sends 256 KiB on each of 4 streams as fast as it can. braid stops reading the
/// connection whenever its budget is spent; nothing may stall or get lost.
async fn slow_braid_reader(proto: Protocol, dir: Dir) {
    let mut config = Config::default();
    config.max_receive_buffer = 64 * 1024;
    config.max_stream_buffer = 16 * 1024;
    let args = [
        "-streams",
        &SLOW_STREAMS.to_string(),
        "-bytes",
        "262144",
        "-seed",
        "111",
    ];
    let Some((session, go)) = start(proto, dir, config, "source", &args).await else {
        return;
    };
    let mut received = each_stream(&session, dir, SLOW_STREAMS, |_, mut stream| async move {
        let mut data = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
            // Pacing, not synchronisation: this is the slow reader.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Record::of(stream.id().0, &data)
    })
    .await;
    received.sort();
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "sender"), received);
}

// ---------------------------------------------------------------------------
// 7. Keepalive
// ---------------------------------------------------------------------------

/// Both sides send NOPs every second and give up after 3 s of silence. A session idle for
/// 10 s must survive on each side, then carry a stream. The four combinations run at once
/// so that the suite waits 10 s, not 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_an_idle_session_alive() {
    bounded(async {
        let tasks: Vec<_> = [
            (Protocol::SmuxV1, Dir::BraidClient),
            (Protocol::SmuxV1, Dir::GoClient),
            (Protocol::SmuxV2, Dir::BraidClient),
            (Protocol::SmuxV2, Dir::GoClient),
        ]
        .into_iter()
        .map(|(proto, dir)| tokio::spawn(keepalive(proto, dir)))
        .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
}

async fn keepalive(proto: Protocol, dir: Dir) {
    const IDLE: Duration = Duration::from_secs(10);
    let mut config = Config::default();
    config.keep_alive_interval = Duration::from_secs(1);
    config.keep_alive_timeout = Duration::from_secs(3);
    let args = [
        "-keepalive-interval",
        "1s",
        "-keepalive-timeout",
        "3s",
        "-idle",
        "10s",
        "-bytes",
        "1000",
        "-seed",
        "91",
    ];
    let began = Instant::now();
    let Some((session, go)) = start(proto, dir, config, "keepalive", &args).await else {
        return;
    };
    let data = pattern(91).bytes_at(0, 1000);
    let (id, go_role) = match dir {
        Dir::BraidClient => {
            // The idle period is the assertion itself, not a synchronisation.
            tokio::time::sleep(IDLE).await;
            assert!(
                !session.is_closed(),
                "{proto:?}: braid's session ended while idle"
            );
            let stream = session.open_stream().await.unwrap();
            let id = stream.id().0;
            braid_echo_opener(stream, &data).await;
            (id, "acceptor")
        }
        Dir::GoClient => {
            let stream = session
                .accept_stream()
                .await
                .unwrap_or_else(|| panic!("{proto:?}: session ended: {:?}", session));
            assert!(
                began.elapsed() >= IDLE,
                "Go opened its stream before idling"
            );
            let id = stream.id().0;
            let got = braid_echo_acceptor(stream).await;
            assert_same_bytes(&got, &data, "what Go sent after idling");
            (id, "opener")
        }
    };
    assert!(!session.is_closed());
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, go_role), vec![Record::of(id, &data)]);
}

// ---------------------------------------------------------------------------
// 8. The Go process killed mid-transfer
// ---------------------------------------------------------------------------

const KILL_STREAMS: usize = 4;

/// Data flows both ways on 4 streams; once every stream has carried data in both
/// directions the Go process gets SIGKILL. Within 2 s every braid read and write fails
/// (a read must not end in a clean EOF: the transfer was cut) and the session reports
/// why it ended.
async fn peer_killed(proto: Protocol, dir: Dir) {
    let args = ["-streams", &KILL_STREAMS.to_string(), "-seed", "81"];
    let Some((session, mut go)) = start(proto, dir, Config::default(), "kill", &args).await else {
        return;
    };
    let (progress, mut progressed) = mpsc::unbounded_channel();
    let tasks = each_stream(&session, dir, KILL_STREAMS, move |_, stream| {
        let progress = progress.clone();
        async move {
            let id = stream.id().0;
            let (mut r, mut w) = stream.into_split();
            // braid writes only once Go's data arrives: smux 1.5.16 drops what reaches a
            // stream it opened before it has registered it (after its SYN is written),
            // and in v2 the lost bytes would eat this stream's window for good.
            let (heard, hear) = tokio::sync::oneshot::channel();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                let mut heard = Some(heard);
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) => return Ok(total),
                        Ok(n) => {
                            if let Some(heard) = heard.take() {
                                let _ = heard.send(());
                            }
                            if total < 1 << 20 && total + n >= 1 << 20 {
                                let _ = progress.send(id);
                            }
                            total += n;
                        }
                        Err(e) => return Err((e, total)),
                    }
                }
            });
            let writer = tokio::spawn(async move {
                if hear.await.is_err() {
                    return std::io::Error::other("the reader ended before Go's first bytes");
                }
                let pat = pattern(82);
                let mut sent = 0u64;
                loop {
                    let chunk = pat.chunk_at(sent);
                    if let Err(e) = w.write_all(chunk).await {
                        return e;
                    }
                    sent += chunk.len() as u64;
                }
            });
            (reader, writer)
        }
    })
    .await;
    let (readers, writers): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
    // Mid-transfer: braid has received 1 MiB on every stream, Go data on every stream.
    let midway = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..KILL_STREAMS {
            progressed.recv().await.expect("a reader ended early");
        }
        for _ in 0..KILL_STREAMS {
            go.expect("streaming").await;
        }
    });
    if midway.await.is_err() {
        panic!("data did not flow on every stream{}", go.diagnostics());
    }

    go.kill().await;
    let outcome = tokio::time::timeout(Duration::from_secs(2), async {
        let mut reads = Vec::new();
        for r in readers {
            reads.push(r.await.unwrap());
        }
        let mut writes = Vec::new();
        for w in writers {
            writes.push(w.await.unwrap());
        }
        (reads, writes, session.closed().await)
    })
    .await;
    let (reads, writes, reason) =
        outcome.expect("braid did not notice within 2 s that the Go peer was killed");
    for read in &reads {
        match read {
            Ok(total) => {
                panic!("a read ended cleanly after {total} bytes: a cut transfer looks complete")
            }
            Err((e, _)) => assert_ne!(e.kind(), ErrorKind::WouldBlock),
        }
    }
    for e in &writes {
        assert_ne!(e.kind(), ErrorKind::WouldBlock);
    }
    assert!(
        matches!(
            reason,
            ConnectionError::TransportClosed | ConnectionError::Transport { .. }
        ),
        "session ended with {reason:?}"
    );
    eprintln!(
        "peer_killed {proto:?} {dir:?}: session: {reason}; reads: {:?}; writes: {:?}",
        reads
            .iter()
            .map(|r| r.as_ref().err().map(|(e, _)| e.kind()))
            .collect::<Vec<_>>(),
        writes.iter().map(|e| e.kind()).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// 9. braid's connection cut without FINs
// ---------------------------------------------------------------------------

const CUT_STREAMS: usize = 2;
const CUT_BYTES: usize = 100_000;

/// braid sends data on 2 streams and then its connection is closed without a FIN for
/// either (the driver task is dropped, as when a process dies). Go 1.5.16 ends each read
/// with plain io.EOF, exactly like a FIN, and its session does not count as closed;
/// braid in Go's place reports `TransportClosed` (see `peer_killed`).
async fn braid_cuts_the_connection(proto: Protocol, dir: Dir) {
    let args = [
        "-streams",
        &CUT_STREAMS.to_string(),
        "-bytes",
        &CUT_BYTES.to_string(),
        "-keepalive-disabled",
    ];
    let Some((tcp, mut go)) = connect(proto, dir, "cut", &args).await else {
        return;
    };
    let mut config = Config::new(proto);
    config.keep_alive_disabled = true; // no NOP may be left unread when the socket closes
    let (session, driver) = Session::new(tcp, config, dir.braid_side()).unwrap();
    let driver = tokio::spawn(driver);
    let mut sent = Vec::new();
    let mut streams = open_or_accept_n(&session, dir, CUT_STREAMS).await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut start = [0u8; 1];
        stream
            .read_exact(&mut start)
            .await
            .expect("Go's start byte");
        let data = pattern(101).bytes_at(stream_offset(i), CUT_BYTES);
        stream.write_all(&data).await.unwrap();
        sent.push(Record::of(stream.id().0, &data));
    }
    sent.sort();
    let mut received = Vec::new();
    for _ in 0..CUT_STREAMS {
        received.push(Record::from_event(&go.expect("received").await));
    }
    received.sort();
    assert_eq!(received, sent);

    driver.abort();
    assert!(driver.await.unwrap_err().is_cancelled());
    let events = go.until_done().await;
    let ends: Vec<_> = events.iter().filter(|e| e["event"] == "read_end").collect();
    assert_eq!(ends.len(), CUT_STREAMS, "{events:?}");
    for end in ends {
        assert_eq!(end["bytes"], CUT_BYTES, "{end}");
        assert_eq!(end["error"], "EOF", "{end}");
        assert_eq!(end["session_closed"], false, "{end}");
    }
    go.exited_ok().await;
    drop(streams);
}
