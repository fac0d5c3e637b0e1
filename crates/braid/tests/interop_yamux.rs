//! Byte compatibility with Go's real yamux (Debian's hashicorp/yamux snapshot of
//! 2019-09-23, commit df201c7), driven through the Go peer program in `interop/go` with
//! `-proto yamux` (see `interop/mod.rs` for how it is found, built and run).
//!
//! Every scenario runs twice: braid as the client of a Go server and as the server of a Go
//! client. In yamux either side may open streams, so the yamux-only scenarios (GoAway,
//! accept backlog, ping, large frames) say who opens what regardless of who dialed. The
//! Go peer reports what it saw as JSON lines; each test checks those reports against what
//! braid sent and received. What the tests taught us about Go is in docs/protocol.md,
//! "Interop findings (Go yamux 2019 snapshot)".
//!
//! Without Go installed the tests print why and pass, unless `BRAID_REQUIRE_INTEROP=1`.

mod interop;

use braid::{Config, ConnectionError, Protocol, ResetReason, Session, StreamEnd};
use interop::{
    assert_same_bytes, bounded, braid_echo_acceptor, braid_echo_opener, bulk_receive, bulk_send,
    connect, each_stream, finish, go_records, open_or_accept, open_or_accept_n, open_uploads,
    pattern, request_then_half_close, serve_uploads, single, start, stream_offset, Dir, GoPeer,
    Record,
};
use std::future::Future;
use std::io::{ErrorKind, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// The two tests of a scenario: braid client -> Go server, Go client -> braid server.
/// `scenario(dir)` is an async fn of this file.
macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn braid_client_go_server() {
                bounded(super::$scenario(Dir::BraidClient)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_client_braid_server() {
                bounded(super::$scenario(Dir::GoClient)).await
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
    go_half_closes_then_reads,
    go_closes_first,
    slow_go_reader,
    slow_braid_reader,
    peer_killed,
    braid_cuts_the_connection,
    braid_resets_its_streams,
    go_sends_go_away,
    braid_sends_go_away,
    full_backlog_resets_the_overflow,
    braid_backlog_resets_go_overflow,
    unacked_opens_wait_for_acks,
    more_opens_than_the_backlog,
    large_frames,
    ping_both_ways,
);

/// Go's DefaultConfig, as braid has it.
fn yamux() -> Config {
    Config::new(Protocol::Yamux)
}

async fn start_yamux(
    dir: Dir,
    config: Config,
    scenario: &str,
    args: &[&str],
) -> Option<(Session, GoPeer)> {
    start(Protocol::Yamux, dir, config, scenario, args).await
}

// ---------------------------------------------------------------------------
// 1. Echo on one stream
// ---------------------------------------------------------------------------

/// Not a multiple of any frame or window size.
const ECHO_BYTES: usize = 300_001;

/// The client opens one stream and sends ECHO_BYTES (more than the 256 KiB window); the
/// other side echoes them back. Both sides compare the bytes exactly.
async fn echo(dir: Dir) {
    echo_bytes(dir, ECHO_BYTES).await
}

/// A stream that carries nothing: SYN, ACK, then FIN each way.
async fn empty_stream(dir: Dir) {
    echo_bytes(dir, 0).await
}

async fn echo_bytes(dir: Dir, len: usize) {
    let args = ["-bytes", &len.to_string(), "-seed", "11"];
    let Some((session, go)) = start_yamux(dir, yamux(), "echo", &args).await else {
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

/// A `Protocol::Auto` server tells Go's yamux client by its first byte (version 0) and
/// serves it with yamux's defaults: an echo of ECHO_BYTES on a stream Go opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_server_detects_go_yamux() {
    bounded(async {
        let args = ["-bytes", &ECHO_BYTES.to_string(), "-seed", "12"];
        let Some((tcp, go)) = connect(Protocol::Yamux, Dir::GoClient, "echo", &args).await else {
            return;
        };
        let config = Config::new(Protocol::Auto);
        let session = Session::from_tcp(tcp, config, braid::Side::Server).unwrap();
        let stream = session.accept_stream().await.expect("Go's stream");
        let id = stream.id().0;
        assert_eq!(id % 2, 1, "a yamux client's first stream");
        let got = braid_echo_acceptor(stream).await;
        let data = pattern(12).bytes_at(0, ECHO_BYTES);
        assert_same_bytes(&got, &data, "what Go sent");
        let events = finish(session, go).await;
        assert_eq!(go_records(&events, "opener"), vec![Record::of(id, &data)]);
    })
    .await
}

// ---------------------------------------------------------------------------
// 2. 200 concurrent streams; 4. both sides open at once
// ---------------------------------------------------------------------------

const UPLOAD_STREAMS: usize = 200;
/// Upload sizes are log-uniform up to this (every order of magnitude is covered).
const UPLOAD_MAX: usize = 2 << 20;

/// The client opens UPLOAD_STREAMS streams at once, each with an upload of a seeded
/// random size (the upload protocol of `interop::upload`/`serve_upload`, and
/// uploadOpener/uploadAcceptor in the Go peer). Each side checks the hash of what it
/// received; the test then checks that every side received exactly what the other
/// reports having sent.
async fn integrity(dir: Dir) {
    uploads(dir, UPLOAD_STREAMS, UPLOAD_MAX, 21).await
}

async fn uploads(dir: Dir, streams: usize, max: usize, seed: u64) {
    let args = [
        "-streams",
        &streams.to_string(),
        "-bytes",
        &max.to_string(),
        "-seed",
        &seed.to_string(),
    ];
    let Some((session, go)) = start_yamux(dir, yamux(), "integrity", &args).await else {
        return;
    };
    let (sent, received) = match dir {
        Dir::BraidClient => (open_uploads(&session, streams, max, seed + 1).await, vec![]),
        Dir::GoClient => (vec![], serve_uploads(&session, streams).await),
    };
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "acceptor"), sent, "what Go received");
    assert_eq!(go_records(&events, "opener"), received, "what Go sent");
}

/// Both sides open 50 upload streams the moment the session is up, and serve the other
/// side's. Frame sizes differ: Go sends each Write as one frame up to the window
/// (256 KiB), braid frames of at most 16 KiB.
async fn both_sides_open(dir: Dir) {
    const STREAMS: usize = 50;
    let args = ["-streams", "50", "-bytes", "1048576", "-seed", "31"];
    let mut config = yamux();
    config.max_frame_size = 16 * 1024;
    let Some((session, go)) = start_yamux(dir, config, "both", &args).await else {
        return;
    };
    let (sent, received) = tokio::join!(
        open_uploads(&session, STREAMS, 1 << 20, 32),
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

/// The client sends BULK_BYTES on one stream (256 KiB windows, Go's default); the
/// receiver replies with its SHA-256, which the sender compares with its own.
async fn bulk(dir: Dir) {
    let args = ["-bytes", &BULK_BYTES.to_string(), "-seed", "41"];
    let Some((session, go)) = start_yamux(dir, yamux(), "bulk", &args).await else {
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
        "bulk yamux {dir:?}: {} MiB in {secs:.2} s, {:.0} MiB/s",
        BULK_BYTES >> 20,
        (BULK_BYTES >> 20) as f64 / secs
    );
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, go_role), vec![record]);
}

// ---------------------------------------------------------------------------
// 5. Half-close, both ways round
// ---------------------------------------------------------------------------

const REQUEST_BYTES: usize = 100_000;
const REPLY_BYTES: usize = 1 << 20;

/// braid half-closes after its request and still reads the reply, which Go writes after
/// reading end of stream: 1 MiB in one Write, four times braid's default 256 KiB window.
/// A Go stream that has the peer's FIN (RemoteClose) still waits for window as usual, so
/// the whole reply arrives; no window tuning is needed (unlike smux 1.5.16 v2).
async fn half_close(dir: Dir) {
    let args = ["-reply-bytes", &REPLY_BYTES.to_string(), "-seed", "51"];
    let Some((session, go)) = start_yamux(dir, yamux(), "halfclose", &args).await else {
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

/// Go half-closes and then wants the reply. The 2019 yamux has no CloseWrite: Close sends
/// FIN (WindowUpdate|FIN) and the stream goes to LocalClose, where a Read returns io.EOF
/// at once whenever nothing is buffered, instead of waiting for the peer. braid, which
/// has Go's FIN, can still write: the reply (1 MiB, more than Go's window) is accepted by
/// Go, buffered and granted window as Go reads it, but only a Go application that polls
/// Read after the EOF gets it. braid replies only after Go has reported its first Read,
/// so that Read deterministically finds nothing.
async fn go_half_closes_then_reads(dir: Dir) {
    let args = [
        "-bytes",
        &REQUEST_BYTES.to_string(),
        "-reply-bytes",
        &REPLY_BYTES.to_string(),
        "-seed",
        "55",
    ];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "closeread", &args).await else {
        return;
    };
    let mut stream = open_or_accept(&session, dir).await;
    let mut request = Vec::new();
    stream
        .read_to_end(&mut request)
        .await
        .expect("read Go's request");
    assert_same_bytes(&request, &pattern(55).bytes_at(0, REQUEST_BYTES), "request");
    let after_close = go.expect("read_after_close").await;
    assert_eq!(after_close["bytes"], 0, "{after_close}");
    assert_eq!(after_close["error"], "EOF", "{after_close}");
    let reply = pattern(56).bytes_at(0, REPLY_BYTES);
    stream
        .write_all(&reply)
        .await
        .expect("write after Go's FIN");
    stream.shutdown().await.unwrap();
    let events = finish(session, go).await;
    let late = single(&events, "late_reply");
    eprintln!("go_half_closes_then_reads {dir:?}: {late}");
    assert_eq!(
        Record::from_event(late),
        Record::of(stream.id().0, &reply),
        "what Go's polling reads got after its Close"
    );
}

const GO_CLOSE_BYTES: usize = 100_000;
/// Fits Go's 256 KiB window: Go does not read after its Close, so grants no more.
const AFTER_CLOSE_BYTES: usize = 128 * 1024;

/// Go writes and closes first. braid reads everything and a clean end of stream; a Go
/// Read after its Close gives io.EOF. braid's writes after that succeed, Go buffers them
/// on the half-closed stream (nobody reads them), and braid's FIN then completes the
/// stream on both sides: a new stream echoes fine afterwards.
async fn go_closes_first(dir: Dir) {
    let args = ["-bytes", &GO_CLOSE_BYTES.to_string(), "-seed", "61"];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "goclose", &args).await else {
        return;
    };
    let mut stream = open_or_accept(&session, dir).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("read Go's data");
    assert_same_bytes(&got, &pattern(61).bytes_at(0, GO_CLOSE_BYTES), "Go's data");
    // Go's Read after Close returns what is buffered: write only once it has reported.
    let after_close = go.expect("read_after_close").await;
    assert_eq!(after_close["bytes"], 0, "{after_close}");
    assert_eq!(after_close["error"], "EOF", "{after_close}");
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
    assert_eq!(
        go_records(&events, "acceptor"),
        vec![Record::of(probe_id, &data)]
    );
}

/// After Go closed a stream it no longer reads it, so it never grants more window: braid
/// sends the rest of Go's 256 KiB window, buffers `stream_send_buffer` more, and then the
/// write waits. The 2019 yamux has no StreamCloseTimeout, so Go never resets such a
/// stream either. Dropped in that state, braid's stream keeps its data and FIN queued
/// until the session ends (a graceful close then waits `close_timeout`); `reset()` ends
/// it at once on both sides. Either way the session is not affected.
async fn writes_after_go_closed(reset: bool) {
    let mut config = yamux();
    config.close_timeout = Duration::from_secs(1);
    let args = ["-bytes", "1000", "-seed", "63"];
    let Some((session, mut go)) = start_yamux(Dir::BraidClient, config, "goclose", &args).await
    else {
        return;
    };
    let mut stream = session.open_stream().await.unwrap();
    stream.read_to_end(&mut Vec::new()).await.unwrap();
    let after_close = go.expect("read_after_close").await;
    assert_eq!(after_close["error"], "EOF", "{after_close}");
    let data = pattern(64).bytes_at(0, 8 << 20);
    let send_buffer = yamux().stream_send_buffer;
    let mut written = 0;
    // Write until the stream is stuck: no window left and the send buffer full. Go sends
    // no window update for a stream it no longer reads, so that state is final.
    loop {
        match tokio::time::timeout(Duration::from_millis(50), stream.write(&data[written..])).await
        {
            Ok(n) => {
                written += n.expect("write after Go's close");
                assert!(written < data.len(), "8 MiB went out after Go's close");
            }
            Err(_) => {
                let stats = stream.stats();
                if stats.send_window == Some(0) && stats.buffered_send == send_buffer {
                    break;
                }
            }
        }
    }
    assert_eq!(
        written,
        256 * 1024 + send_buffer,
        "Go's window plus our buffer"
    );
    if reset {
        stream.reset();
        drop(stream);
    } else {
        drop(stream);
        assert_eq!(
            session.num_streams(),
            1,
            "the dropped stream waits to send its data and FIN"
        );
    }

    let probe = session.open_stream().await.unwrap();
    braid_echo_opener(probe, &pattern(65).bytes_at(0, 1000)).await;
    if reset {
        assert_eq!(session.num_streams(), 0, "the reset stream is gone");
    }
    finish(session, go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_go_closed_stall_once_the_window_is_used() {
    bounded(writes_after_go_closed(false)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ends_a_stream_go_stopped_reading() {
    bounded(writes_after_go_closed(true)).await
}

// ---------------------------------------------------------------------------
// 6. Small windows, slow readers
// ---------------------------------------------------------------------------

const SLOW_STREAMS: usize = 4;
const SLOW_BYTES: usize = 512 * 1024;

/// Go keeps its smallest window (MaxStreamWindowSize 256 KiB) and reads 1000 bytes at a
/// time with a 1 ms pause after each; braid sends 512 KiB on each of 4 streams. No
/// deadlock, nothing lost.
async fn slow_go_reader(dir: Dir) {
    let args = [
        "-streams",
        &SLOW_STREAMS.to_string(),
        "-max-stream-window",
        "262144",
        "-read-size",
        "1000",
        "-read-pause",
        "1ms",
    ];
    let Some((session, go)) = start_yamux(dir, yamux(), "slowreader", &args).await else {
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

/// The mirror image: braid keeps 256 KiB windows and a 512 KiB receive budget (less than
/// the 4 windows together, so reading the connection pauses too) and reads 1000 bytes at
/// a time with a 1 ms pause after each, while Go sends 1 MiB on each of 4 streams as fast
/// as it can. Nothing may stall or get lost.
async fn slow_braid_reader(dir: Dir) {
    let mut config = yamux();
    config.max_receive_buffer = 512 * 1024;
    let args = [
        "-streams",
        &SLOW_STREAMS.to_string(),
        "-bytes",
        "1048576",
        "-seed",
        "111",
    ];
    let Some((session, go)) = start_yamux(dir, config, "source", &args).await else {
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

/// braid's session receive budget (`max_receive_buffer`) has no counterpart in Go. When
/// the application leaves the whole budget unread (here 512 KiB, while Go may send
/// 4 x 256 KiB of window), braid stops reading the connection altogether, so Go's
/// keepalive pings go unanswered: with KeepAliveInterval 1 s and ConnectionWriteTimeout
/// 3 s, Go ends its session (ErrKeepAliveTimeout) after about 4 s and the Go peer exits.
/// braid does not notice while it is paused (its keepalive does not time out then, and
/// it reads nothing, not even the end of the connection): here the session ends once the
/// application reads all streams, with the buffered data delivered first (see also
/// `paused_session_pings_and_notices_a_dead_peer` in tests/yamux.rs). A budget smaller than
/// what the application may leave unread is a hazard with yamux peers that use keepalives
/// (Go's are on by default: every 30 s, 10 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_budget_starves_go_keepalive() {
    bounded(async {
        const BUDGET: usize = 512 * 1024;
        let mut config = yamux();
        config.max_receive_buffer = BUDGET;
        let args = [
            "-streams",
            &SLOW_STREAMS.to_string(),
            "-bytes",
            "1048576",
            "-keepalive-interval",
            "1s",
            "-connection-write-timeout",
            "3s",
        ];
        let Some((session, go)) = start_yamux(Dir::BraidClient, config, "source", &args).await
        else {
            return;
        };
        let began = Instant::now();
        // Streams opened and not read until Go has given up.
        let streams = open_or_accept_n(&session, Dir::BraidClient, SLOW_STREAMS).await;
        let (status, _, stderr) = go.until_exit().await;
        let after = began.elapsed();
        assert!(!status.success(), "the Go peer succeeded");
        assert!(
            stderr.contains("keepalive failed"),
            "Go ended for another reason: {stderr}"
        );
        assert!(
            after >= Duration::from_secs(3),
            "Go gave up after {after:?}"
        );
        assert!(
            !session.is_closed(),
            "braid noticed while its reading was paused"
        );
        assert_eq!(session.stats().buffered_recv, BUDGET);

        // All at once: a stream read alone could wait behind the others' data, which
        // holds the budget and keeps braid from reading on to the end of the connection.
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut stream| {
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let err = stream
                        .read_to_end(&mut data)
                        .await
                        .expect_err("a stream of a dead session ended cleanly");
                    assert_ne!(err.kind(), ErrorKind::WouldBlock);
                    data.len()
                })
            })
            .collect();
        let mut total = 0;
        for r in readers {
            total += tokio::time::timeout(Duration::from_secs(2), r)
                .await
                .expect("braid did not notice the closed connection once reading again")
                .unwrap();
        }
        assert!(total >= BUDGET, "read {total} bytes");
        let reason = tokio::time::timeout(Duration::from_secs(2), session.closed())
            .await
            .expect("braid did not notice the closed connection once reading again");
        assert!(
            matches!(
                reason,
                ConnectionError::TransportClosed | ConnectionError::Transport { .. }
            ),
            "session ended with {reason:?}"
        );
        eprintln!("spent_budget_starves_go_keepalive: Go gave up after {after:?}; braid: {reason}");
    })
    .await
}

// ---------------------------------------------------------------------------
// 7. Keepalive
// ---------------------------------------------------------------------------

/// Both sides ping every second and give up when a ping is not answered within 3 s (Go:
/// KeepAliveInterval 1 s, ConnectionWriteTimeout 3 s; braid: keep_alive_interval 1 s,
/// keep_alive_timeout 3 s). A session idle for 10 s must survive on each side, then carry
/// a stream. Both directions run at once so that the suite waits 10 s, not 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_an_idle_session_alive() {
    bounded(async {
        let tasks: Vec<_> = [Dir::BraidClient, Dir::GoClient]
            .into_iter()
            .map(|dir| tokio::spawn(keepalive(dir)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
}

async fn keepalive(dir: Dir) {
    const IDLE: Duration = Duration::from_secs(10);
    let mut config = yamux();
    config.keep_alive_interval = Duration::from_secs(1);
    config.keep_alive_timeout = Duration::from_secs(3);
    let args = [
        "-keepalive-interval",
        "1s",
        "-connection-write-timeout",
        "3s",
        "-idle",
        "10s",
        "-bytes",
        "1000",
        "-seed",
        "91",
    ];
    let began = Instant::now();
    let Some((session, go)) = start_yamux(dir, config, "keepalive", &args).await else {
        return;
    };
    let data = pattern(91).bytes_at(0, 1000);
    let (id, go_role) = match dir {
        Dir::BraidClient => {
            // The idle period is the assertion itself, not a synchronisation.
            tokio::time::sleep(IDLE).await;
            assert!(!session.is_closed(), "braid's session ended while idle");
            let stream = session.open_stream().await.unwrap();
            let id = stream.id().0;
            braid_echo_opener(stream, &data).await;
            (id, "acceptor")
        }
        Dir::GoClient => {
            let stream = session
                .accept_stream()
                .await
                .unwrap_or_else(|| panic!("session ended: {:?}", session));
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
    let rtt = session
        .stats()
        .rtt
        .expect("braid's keepalive pings measured a round trip");
    assert!(rtt < Duration::from_secs(3), "round trip {rtt:?}");
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
async fn peer_killed(dir: Dir) {
    let args = ["-streams", &KILL_STREAMS.to_string(), "-seed", "81"];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "kill", &args).await else {
        return;
    };
    let (progress, mut progressed) = mpsc::unbounded_channel();
    let tasks = each_stream(&session, dir, KILL_STREAMS, move |_, stream| {
        let progress = progress.clone();
        async move {
            let id = stream.id().0;
            let (mut r, mut w) = stream.into_split();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) => return Ok(total),
                        Ok(n) => {
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
        "peer_killed yamux {dir:?}: session: {reason}; reads: {:?}; writes: {:?}",
        reads
            .iter()
            .map(|r| r.as_ref().err().map(|(e, _)| e.kind()))
            .collect::<Vec<_>>(),
        writes.iter().map(|e| e.kind()).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// braid's connection cut without FINs
// ---------------------------------------------------------------------------

const CUT_STREAMS: usize = 2;
const CUT_BYTES: usize = 100_000;

/// braid sends data on 2 streams and then its connection is closed without a FIN for
/// either (the driver task is dropped, as when a process dies). Go's yamux ends its
/// session (`IsClosed` true), but each pending Read returns plain io.EOF, exactly like a
/// FIN: a Go application cannot tell a cut transfer from a complete one by the read
/// alone. braid in Go's place fails its reads with `TransportClosed` (see `peer_killed`).
async fn braid_cuts_the_connection(dir: Dir) {
    let args = [
        "-streams",
        &CUT_STREAMS.to_string(),
        "-bytes",
        &CUT_BYTES.to_string(),
        "-keepalive-disabled",
    ];
    let Some((tcp, mut go)) = connect(Protocol::Yamux, dir, "cut", &args).await else {
        return;
    };
    let mut config = yamux();
    config.keep_alive_disabled = true; // no ping may be left unanswered when the socket closes
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
        assert_eq!(end["session_closed"], true, "{end}");
    }
    go.exited_ok().await;
    drop(streams);
}

/// The same exchange as `braid_cuts_the_connection`, but braid resets its streams
/// (`Stream::reset`, RST) instead: Go's pending Reads fail with ErrConnectionReset, and
/// Go's session is not disturbed.
async fn braid_resets_its_streams(dir: Dir) {
    let args = [
        "-streams",
        &CUT_STREAMS.to_string(),
        "-bytes",
        &CUT_BYTES.to_string(),
    ];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "cut", &args).await else {
        return;
    };
    let mut streams = open_or_accept_n(&session, dir, CUT_STREAMS).await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut start = [0u8; 1];
        stream
            .read_exact(&mut start)
            .await
            .expect("Go's start byte");
        let data = pattern(102).bytes_at(stream_offset(i), CUT_BYTES);
        stream.write_all(&data).await.unwrap();
    }
    for _ in 0..CUT_STREAMS {
        go.expect("received").await;
    }
    for stream in &streams {
        stream.reset();
        assert_eq!(
            stream.closed().await,
            StreamEnd::Reset(ResetReason::Locally)
        );
    }
    let events = go.until_done().await;
    let ends: Vec<_> = events.iter().filter(|e| e["event"] == "read_end").collect();
    assert_eq!(ends.len(), CUT_STREAMS, "{events:?}");
    for end in ends {
        assert_eq!(end["bytes"], CUT_BYTES, "{end}");
        assert_eq!(end["error"], "connection reset", "{end}");
        assert_eq!(end["session_closed"], false, "{end}");
    }
    assert!(!session.is_closed());
    drop(streams);
    session.close().await;
    go.exited_ok().await;
}

// ---------------------------------------------------------------------------
// 9a. Go sends GoAway; 9d. braid sends GoAway
// ---------------------------------------------------------------------------

/// braid opens a stream; Go accepts it, sends GoAway(0) (Session.GoAway) and then a start
/// byte on the stream, which follows the GoAway on the wire. Once braid has read that
/// byte, its new opens fail with `ConnectionRefused` (`OpenError::RemoteGoAway`), while
/// the open stream carries an echo of ECHO_BYTES as if nothing happened, and the session
/// stays up. Go may still open streams (GoAway only stops its peer): braid accepts one
/// and echoes it.
///
/// An open whose SYN crosses the GoAway is reset by Go (it answers every SYN after its
/// GoAway with RST). To make that crossing certain, braid reads nothing from the
/// connection (a gate on the transport) until Go has reported its GoAway and braid has
/// opened a second stream; that stream must then fail with `ConnectionReset`, not hang.
async fn go_sends_go_away(dir: Dir) {
    let args = ["-bytes", &ECHO_BYTES.to_string(), "-seed", "121"];
    let Some((tcp, mut go)) = connect(Protocol::Yamux, dir, "goaway", &args).await else {
        return;
    };
    let (gated, gate) = ReadGate::new(tcp);
    let (session, driver) = Session::new(gated, yamux(), dir.braid_side()).unwrap();
    tokio::spawn(driver);
    let mut stream = session.open_stream().await.unwrap();
    let id = stream.id().0;
    let sent = go.expect("go_away_sent").await;
    assert_eq!(sent["stream"], id);
    let mut crossing = session
        .open_stream()
        .await
        .expect("open before the GoAway is read");
    gate.open();
    let err = crossing
        .read(&mut [0u8; 1])
        .await
        .expect_err("Go served a stream opened after its GoAway");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(
        crossing.closed().await,
        StreamEnd::Reset(ResetReason::ByPeer)
    );

    let mut start = [0u8; 1];
    stream
        .read_exact(&mut start)
        .await
        .expect("Go's start byte");
    let err = session
        .open_stream()
        .await
        .expect_err("an open after Go's GoAway succeeded");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let data = pattern(121).bytes_at(0, ECHO_BYTES);
    braid_echo_opener(stream, &data).await;
    assert!(!session.is_closed(), "GoAway(0) is no reason to end");
    let err = session.open_stream().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let theirs = session
        .accept_stream()
        .await
        .expect("Go's stream after its GoAway");
    let their_id = theirs.id().0;
    let got = braid_echo_acceptor(theirs).await;
    assert_same_bytes(&got, &data, "what Go sent after its GoAway");
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "acceptor"), vec![Record::of(id, &data)]);
    assert_eq!(
        go_records(&events, "opener"),
        vec![Record::of(their_id, &data)]
    );
}

/// A transport whose reading side waits until `Gate::open`; writing is unaffected.
struct ReadGate<T> {
    io: T,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<T> ReadGate<T> {
    fn new(io: T) -> (ReadGate<T>, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let io = ReadGate {
            io,
            gate: gate.clone(),
        };
        (io, gate)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadGate<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.gate.is_open() {
            *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
            // Opened meanwhile: its wake may have missed the waker just stored.
            if !self.gate.is_open() {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadGate<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Go opens a stream; braid accepts it, calls `go_away()` and then writes one byte on the
/// stream. Once Go has read it, Go's OpenStream fails with ErrRemoteGoAway, while the open
/// stream carries Go's echo of ECHO_BYTES. braid may still open streams itself: Go
/// accepts one and echoes it.
async fn braid_sends_go_away(dir: Dir) {
    let args = ["-bytes", &ECHO_BYTES.to_string(), "-seed", "122"];
    let Some((session, go)) = start_yamux(dir, yamux(), "goawayrecv", &args).await else {
        return;
    };
    let mut stream = session.accept_stream().await.expect("Go's stream");
    let id = stream.id().0;
    session.go_away();
    stream.write_all(b"B").await.unwrap();
    let got = braid_echo_acceptor(stream).await;
    let data = pattern(122).bytes_at(0, ECHO_BYTES);
    assert_same_bytes(&got, &data, "what Go sent after our GoAway");
    let ours = session
        .open_stream()
        .await
        .expect("open after our own GoAway");
    let our_id = ours.id().0;
    braid_echo_opener(ours, &data).await;
    let events = finish(session, go).await;
    assert_eq!(
        go_records(&events, "acceptor"),
        vec![Record::of(our_id, &data)]
    );
    let refused = single(&events, "open_after_go_away");
    assert_eq!(refused["stream"], id, "{refused}");
    assert_eq!(
        refused["error"], "remote end is not accepting connections",
        "Go's ErrRemoteGoAway: {refused}"
    );
    assert_eq!(go_records(&events, "opener"), vec![Record::of(id, &data)]);
}

// ---------------------------------------------------------------------------
// 9b. Go's accept backlog; 9c. more opens than the backlog
// ---------------------------------------------------------------------------

/// Go's AcceptBacklog is 4 and Go does not accept yet. braid opens 10 streams and sends a
/// request plus FIN on each: Go answers the SYNs beyond its backlog with RST, so exactly
/// the last 6 streams fail (reads and writes with `ConnectionReset`). Then braid tells Go
/// (on a control stream Go opened) to accept: the first 4 were kept intact with their
/// data, and Go echoes them.
async fn full_backlog_resets_the_overflow(dir: Dir) {
    const BACKLOG: usize = 4;
    const OPENS: usize = 10;
    const REQUEST: usize = 1000;
    let args = [
        "-accept-backlog",
        &BACKLOG.to_string(),
        "-streams",
        &BACKLOG.to_string(),
    ];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "backlog", &args).await else {
        return;
    };
    let control_id = go.expect("control").await["stream"].clone();
    let mut control = session.accept_stream().await.expect("Go's control stream");
    assert_eq!(control_id, control.id().0);

    let (done, mut results) = mpsc::unbounded_channel();
    let mut requests = Vec::new();
    for i in 0..OPENS {
        let mut stream = session.open_stream().await.expect("open");
        let request = pattern(131).bytes_at(stream_offset(i), REQUEST);
        // A stream beyond the backlog may be reset before its request is written (the
        // SYN can leave before the data): only then may writing fail, with a reset.
        if let Err(e) = async {
            stream.write_all(&request).await?;
            stream.shutdown().await
        }
        .await
        {
            assert!(i >= BACKLOG, "stream {i}: {e}");
            assert_eq!(e.kind(), ErrorKind::ConnectionReset, "stream {i}");
        }
        requests.push(Record::of(stream.id().0, &request));
        let done = done.clone();
        tokio::spawn(async move {
            let mut reply = Vec::new();
            let read = stream.read_to_end(&mut reply).await;
            let outcome = match read {
                Ok(_) => Ok(reply),
                Err(e) => {
                    let end = stream.closed().await;
                    let write = stream.write(b"x").await.map(|_| ());
                    Err((e.kind(), end, write.map_err(|e| e.kind())))
                }
            };
            let _ = done.send((i, stream.id().0, outcome));
        });
    }
    // The overflow streams end first: the others wait for Go to accept them.
    let mut reset = Vec::new();
    for _ in BACKLOG..OPENS {
        let (i, id, outcome) = results.recv().await.unwrap();
        let (read, end, write) = outcome.expect_err("a stream beyond Go's backlog was served");
        assert_eq!(read, ErrorKind::ConnectionReset, "stream {id}");
        assert_eq!(end, StreamEnd::Reset(ResetReason::ByPeer), "stream {id}");
        assert_eq!(write, Err(ErrorKind::ConnectionReset), "stream {id}");
        reset.push(i);
    }
    reset.sort();
    assert_eq!(
        reset,
        (BACKLOG..OPENS).collect::<Vec<_>>(),
        "which were reset"
    );
    assert!(!session.is_closed());

    control.write_all(b"A").await.unwrap();
    go.expect("accepting").await;
    for _ in 0..BACKLOG {
        let (i, id, outcome) = results.recv().await.unwrap();
        let reply = outcome.unwrap_or_else(|e| panic!("stream {id}: {e:?}"));
        assert_same_bytes(
            &reply,
            &pattern(131).bytes_at(stream_offset(i), REQUEST),
            "echo",
        );
    }
    let events = finish(session, go).await;
    assert_eq!(
        go_records(&events, "acceptor"),
        requests[..BACKLOG].to_vec(),
        "what Go accepted"
    );
}

/// The mirror image: braid's `accept_backlog` is 4 and braid does not accept yet. Go opens
/// 10 streams one after the other and starts an echo on each; braid answers the SYNs
/// beyond its backlog with RST, so Go's last 6 streams fail with ErrConnectionReset
/// (reported by Go). Then braid accepts the first 4, whose data waited intact, and echoes
/// them.
async fn braid_backlog_resets_go_overflow(dir: Dir) {
    const BACKLOG: usize = 4;
    const OPENS: usize = 10;
    let mut config = yamux();
    config.accept_backlog = BACKLOG;
    let args = [
        "-streams",
        &OPENS.to_string(),
        "-bytes",
        "1000",
        "-seed",
        "171",
    ];
    let Some((session, mut go)) = start_yamux(dir, config, "openmany", &args).await else {
        return;
    };
    // Go's ids in the order it opened them.
    let first = match dir {
        Dir::BraidClient => 2, // Go is the server
        Dir::GoClient => 1,
    };
    let ids: Vec<u64> = (0..OPENS as u64).map(|i| first + 2 * i).collect();
    let mut reset = Vec::new();
    for _ in BACKLOG..OPENS {
        let event = go.expect("stream_reset").await;
        assert_eq!(event["error"], "read the echo: connection reset", "{event}");
        reset.push(event["stream"].as_u64().unwrap());
    }
    reset.sort();
    assert_eq!(reset, ids[BACKLOG..], "which of Go's streams braid reset");
    let data = pattern(171).bytes_at(0, 1000);
    let mut accepted = Vec::new();
    for _ in 0..BACKLOG {
        let stream = session.accept_stream().await.expect("accept");
        let id = stream.id().0;
        let got = braid_echo_acceptor(stream).await;
        assert_same_bytes(&got, &data, "what Go sent");
        accepted.push(Record::of(id, &data));
    }
    assert_eq!(
        accepted.iter().map(|r| r.stream as u64).collect::<Vec<_>>(),
        ids[..BACKLOG],
        "the streams braid kept"
    );
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "opener"), accepted);
}

/// Go keeps its default AcceptBacklog (256) and does not accept yet. braid opens 256
/// streams at once (the SYNs all fit Go's backlog); its 257th open must wait, not fail:
/// braid, like Go, allows `max_unacked_opens` (256) unacknowledged opens. Once Go
/// accepts, its ACKs release the waiting open, and all 257 streams echo their request.
async fn unacked_opens_wait_for_acks(dir: Dir) {
    const UNACKED: usize = 256;
    let args = ["-streams", &(UNACKED + 1).to_string()];
    let Some((session, mut go)) = start_yamux(dir, yamux(), "backlog", &args).await else {
        return;
    };
    go.expect("control").await;
    let mut control = session.accept_stream().await.expect("Go's control stream");

    let (done, mut results) = mpsc::unbounded_channel();
    let serve = |i: usize, mut stream: braid::Stream| {
        let done = done.clone();
        tokio::spawn(async move {
            let request = pattern(141).bytes_at(stream_offset(i), 100);
            stream.write_all(&request).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut reply = Vec::new();
            let read = stream.read_to_end(&mut reply).await;
            let _ = done.send((stream.id().0, read.map(|_| reply == request)));
        });
    };
    for i in 0..UNACKED {
        serve(i, session.open_stream().await.expect("open"));
    }
    let opener = session.clone();
    let mut next = Box::pin(async move { opener.open_stream().await });
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
    assert!(
        first_poll.is_pending(),
        "open #{} did not wait for an ACK: {first_poll:?}",
        UNACKED + 1
    );
    control.write_all(b"A").await.unwrap();
    go.expect("accepting").await;
    let last = tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the waiting open was not released by Go's ACKs")
        .expect("open");
    serve(UNACKED, last);
    drop(done);
    let mut served = 0;
    while let Some((id, outcome)) = results.recv().await {
        match outcome {
            Ok(true) => served += 1,
            other => panic!("stream {id}: {other:?}"),
        }
    }
    assert_eq!(served, UNACKED + 1);
    let events = finish(session, go).await;
    assert_eq!(go_records(&events, "acceptor").len(), UNACKED + 1);
}

/// 300 streams opened at once against a backlog of 256 whose owner accepts as they come:
/// every open succeeds (the opener never has more than 256 unacknowledged SYNs, and an
/// accepted stream leaves the backlog before its ACK goes out), nothing is reset. braid
/// opens against Go's backlog as the client, Go against braid's as the client of braid.
async fn more_opens_than_the_backlog(dir: Dir) {
    uploads(dir, 300, 64 * 1024, 151).await
}

// ---------------------------------------------------------------------------
// 10. Large frames
// ---------------------------------------------------------------------------

/// 4 MiB windows on both sides (Go MaxStreamWindowSize, braid `max_stream_buffer`,
/// announced in the SYN and the ACK). braid sends a 4 MiB request in frames of up to
/// 1 MiB (`max_frame_size`, with a `stream_send_buffer` that holds the whole request); Go replies with 4 MiB in Writes of 1 MiB, each of which Go
/// sends as one Data frame. A tap on braid's connection parses the frames each way:
/// exactly four 1 MiB Data frames from Go, and braid's largest is 1 MiB. Both sides check
/// every byte.
async fn large_frames(dir: Dir) {
    const WINDOW: usize = 4 << 20;
    const FRAME: usize = 1 << 20;
    let args = [
        "-max-stream-window",
        &WINDOW.to_string(),
        "-bytes",
        &WINDOW.to_string(),
        "-reply-bytes",
        &WINDOW.to_string(),
        "-write-size",
        &FRAME.to_string(),
        "-seed",
        "161",
    ];
    let Some((tcp, go)) = connect(Protocol::Yamux, dir, "bigframes", &args).await else {
        return;
    };
    let mut config = yamux();
    config.max_stream_buffer = WINDOW;
    config.max_frame_size = FRAME;
    // A frame carries at most what is buffered: let the whole request be.
    config.stream_send_buffer = WINDOW;
    config.max_send_buffer = WINDOW;
    let (tap, received, sent) = FrameTap::new(tcp);
    let (session, driver) = Session::new(tap, config, dir.braid_side()).unwrap();
    tokio::spawn(driver);
    let mut stream = session.open_stream().await.unwrap();
    let id = stream.id().0;
    let data = pattern(161).bytes_at(0, WINDOW);
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .expect("read Go's reply");
    assert_same_bytes(&reply, &data, "Go's reply");
    let events = finish(session, go).await;
    assert_eq!(
        Record::from_event(single(&events, "request")),
        Record::of(id, &data)
    );
    let from_go = received.lock().unwrap().data_frames.clone();
    assert_eq!(from_go, vec![FRAME as u32; 4], "Go's Data frames");
    let ours = sent.lock().unwrap().data_frames.clone();
    eprintln!("large_frames {dir:?}: Go's Data frames {from_go:?}, braid's {ours:?}");
    assert_eq!(ours.iter().map(|&n| n as usize).sum::<usize>(), WINDOW);
    assert_eq!(
        ours.iter().max(),
        Some(&(FRAME as u32)),
        "braid's Data frames"
    );
}

/// The lengths of the yamux Data frames in one direction of a connection.
#[derive(Default)]
struct FrameScan {
    header: Vec<u8>,
    /// Payload bytes of the current Data frame still to skip.
    skip: usize,
    /// Lengths of the Data frames with a payload, in order.
    data_frames: Vec<u32>,
}

impl FrameScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (12 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 12 {
                let length = u32::from_be_bytes(self.header[8..12].try_into().unwrap());
                if self.header[1] == 0 && length > 0 {
                    self.data_frames.push(length);
                    self.skip = length as usize;
                }
                self.header.clear();
            }
        }
    }
}

/// A transport that passes everything through and scans the frames each way.
struct FrameTap<T> {
    io: T,
    received: Arc<Mutex<FrameScan>>,
    sent: Arc<Mutex<FrameScan>>,
}

type Scan = Arc<Mutex<FrameScan>>;

impl<T> FrameTap<T> {
    fn new(io: T) -> (FrameTap<T>, Scan, Scan) {
        let received = Scan::default();
        let sent = Scan::default();
        let tap = FrameTap {
            io,
            received: received.clone(),
            sent: sent.clone(),
        };
        (tap, received, sent)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameTap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            self.received.lock().unwrap().feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameTap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.sent.lock().unwrap().feed(&buf[..n]);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            let mut scan = self.sent.lock().unwrap();
            for b in bufs {
                let take = n.min(b.len());
                scan.feed(&b[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Ping
// ---------------------------------------------------------------------------

/// braid's `Session::ping` against Go returns a round-trip time, and Go's Session.Ping
/// against braid does too, three times each, at the same time.
async fn ping_both_ways(dir: Dir) {
    const PINGS: usize = 3;
    let args = ["-pings", &PINGS.to_string()];
    let Some((session, go)) = start_yamux(dir, yamux(), "ping", &args).await else {
        return;
    };
    for _ in 0..PINGS {
        let rtt = session.ping().await.expect("ping Go");
        assert!(rtt < Duration::from_secs(5), "round trip {rtt:?}");
    }
    assert!(session.stats().rtt.is_some());
    let events = finish(session, go).await;
    let pings: Vec<_> = events.iter().filter(|e| e["event"] == "ping").collect();
    assert_eq!(pings.len(), PINGS, "{events:?}");
    for p in pings {
        assert!(p["rtt_us"].as_u64().is_some(), "{p}");
    }
}
