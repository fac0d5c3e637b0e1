//! Keepalive, the receive budget, v2 windows, head-of-line behaviour and fairness.

use super::pair::{Client, Pair, Server};
use crate::{Config, ConnectionError, Protocol, StreamId, INITIAL_PEER_WINDOW};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn idle_but_live_peer_is_not_timed_out() {
    for protocol in [Protocol::SmuxV1, Protocol::Yamux] {
        idle_but_live(protocol);
    }
}

fn idle_but_live(protocol: Protocol) {
    let mut p = Pair::new(Config::new(protocol));
    let id = p.client.open().unwrap();
    p.drive();
    let sid = p.accept(Server); // yamux: an unaccepted stream would time out
    p.advance(secs(600));
    assert!(!p.client.is_closed() && !p.server.is_closed());
    p.write_all(Client, id, b"still here");
    p.drive();
    assert_eq!(p.read_available(Server, sid).0, b"still here");
}

#[test]
fn silent_peer_is_detected_within_the_timeout() {
    let mut p = Pair::new(Config::default());
    p.drive();
    p.cut_from(Server);
    p.advance(secs(29));
    assert!(!p.client.is_closed());
    p.advance(secs(2));
    assert_eq!(
        p.client.close_reason(),
        Some(&ConnectionError::KeepAliveTimeout(secs(30)))
    );
}

#[test]
fn detection_takes_between_one_and_two_timeouts() {
    // The peer goes silent just after a check saw data: detection takes almost 2T.
    let mut p = Pair::new(Config::default());
    p.advance(secs(29));
    let id = p.server.open().unwrap();
    p.drive(); // the SYN is read at t=29 s, the check at t=30 s sees it
    p.cut_from(Server);
    let _ = id;
    p.advance(secs(30)); // t=59 s: the check at 60 s has not run yet
    assert!(!p.client.is_closed());
    p.advance(secs(2));
    assert!(matches!(
        p.client.close_reason(),
        Some(ConnectionError::KeepAliveTimeout(_))
    ));
}

#[test]
fn keepalive_never_fires_while_the_budget_is_spent() {
    let mut config = Config::new(Protocol::SmuxV1);
    config.max_receive_buffer = 256 * 1024;
    config.max_stream_buffer = 64 * 1024;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    p.write_all(Client, id, &vec![5u8; 300 * 1024]);
    p.drive();
    assert!(!p.server.wants_read(), "budget spent");
    // The client's keepalives can no longer be read: still no timeout.
    p.advance(secs(300));
    assert!(!p.server.is_closed());
    // Once the application reads, the session reads again; now silence is fatal.
    p.cut_from(Client);
    let sid = p.accept(Server);
    let mut got = 0;
    while got < 300 * 1024 {
        got += p.read_available(Server, sid).0.len();
        p.drive();
    }
    assert_eq!(got, 300 * 1024);
    p.advance(secs(61));
    assert!(matches!(
        p.server.close_reason(),
        Some(ConnectionError::KeepAliveTimeout(_))
    ));
}

#[test]
fn v1_budget_pauses_reading_and_resumes_as_the_app_reads() {
    let config = Config::new(Protocol::SmuxV1);
    let budget = config.max_receive_buffer;
    let mut p = Pair::new(config);
    let slow = p.client.open().unwrap();
    let other = p.client.open().unwrap();
    p.drive();
    let s_slow = p.accept(Server);
    let s_other = p.accept(Server);
    // The slow stream's reader stalls with more than the budget sent to it.
    let total = budget + 1024 * 1024;
    p.write_all(Client, slow, &vec![1u8; total]);
    p.drive();
    assert!(!p.server.wants_read());
    let tokens = p.server.budget_tokens();
    assert!(tokens <= 0 && tokens > -(32 * 1024), "tokens {tokens}");
    // Documented smux v1 head-of-line blocking: the other stream stalls too.
    p.write_all(Client, other, b"behind the stalled stream");
    p.drive();
    assert_eq!(p.read_available(Server, s_other).0, b"");
    // The slow reader resumes: everything flows again, nothing is lost.
    let mut got = 0;
    while got < total {
        let (data, _) = p.read_available(Server, s_slow);
        got += data.len();
        p.drive();
    }
    assert_eq!(got, total);
    assert_eq!(
        p.read_available(Server, s_other).0,
        b"behind the stalled stream"
    );
    assert_eq!(p.server.budget_tokens(), budget as i64);
}

#[test]
fn v2_windows_limit_inflight_bytes() {
    let config = Config::new(Protocol::SmuxV2);
    let window = config.max_stream_buffer;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    let total = 1024 * 1024;
    let mut written = p.client.stream(id).write(&vec![3u8; total]).unwrap();
    p.drive();
    written += p
        .client
        .stream(id)
        .write(&vec![3u8; total - written])
        .unwrap();
    p.drive();
    let sid = p.accept(Server);
    // Before any read, the sender may use Go's initial peer window and no more.
    assert_eq!(p.server.buffered_recv(), INITIAL_PEER_WINDOW as usize);
    // A slow reader: a few KiB at a time. In flight never exceeds the larger window.
    let mut got = 0;
    let mut buf = vec![0u8; 5000];
    while got < total {
        if written < total {
            written += p
                .client
                .stream(id)
                .write(&vec![3u8; total - written])
                .unwrap_or(0);
        }
        match p.server.stream(sid).read(&mut buf) {
            Ok(n) => got += n,
            Err(crate::ReadError::Blocked) => {}
            Err(e) => panic!("{e}"),
        }
        p.drive();
        assert!(p.server.buffered_recv() <= (INITIAL_PEER_WINDOW as usize).max(window));
    }
    assert!(p.server.buffered_recv() <= window);
}

#[test]
fn v2_stalled_stream_does_not_stop_another() {
    let mut p = Pair::new(Config::new(Protocol::SmuxV2));
    let stalled = p.client.open().unwrap();
    let live = p.client.open().unwrap();
    p.drive();
    let _s_stalled = p.accept(Server);
    let s_live = p.accept(Server);
    let size = 8 * 1024 * 1024; // twice the session budget
    let mut written = 0;
    let mut got = 0;
    p.write_all(Client, stalled, &vec![0u8; 512 * 1024]);
    while got < size {
        if written < size {
            written += p
                .client
                .stream(live)
                .write(&vec![1u8; size - written])
                .unwrap_or(0);
        }
        p.step();
        got += p.read_available(Server, s_live).0.len();
    }
    assert_eq!(got, size);
    assert!(p.server.wants_read());
    assert_eq!(p.server.buffered_recv(), INITIAL_PEER_WINDOW as usize);
}

/// Every stream keeps its send buffer full over a link that carries a fixed number of
/// bytes per step; the receiver reads everything. Each stream's share of the bytes
/// delivered must be within 10% of an equal share.
fn fairness(protocol: Protocol, streams: usize) {
    let mut config = Config::new(protocol);
    config.max_frame_size = 16 * 1024;
    // Room for every stream's buffer, so that the scheduler, not the order in which the
    // test's writers run, decides who sends.
    config.max_send_buffer = streams * config.stream_send_buffer;
    let mut p = Pair::new(config);
    p.link_capacity = Some(128 * 1024);
    let ids: Vec<StreamId> = (0..streams).map(|_| p.client.open().unwrap()).collect();
    p.drive();
    let server_ids: Vec<StreamId> = (0..streams).map(|_| p.accept(Server)).collect();
    let chunk = vec![0u8; 64 * 1024];
    let mut received = vec![0usize; streams];
    for _ in 0..(streams * 40).max(400) {
        for id in &ids {
            let _ = p.client.stream(*id).write(&chunk);
        }
        p.step();
        for (i, id) in server_ids.iter().enumerate() {
            received[i] += p.read_available(Server, *id).0.len();
        }
    }
    let total: usize = received.iter().sum();
    let fair = total as f64 / streams as f64;
    for (i, r) in received.iter().enumerate() {
        let share = *r as f64 / fair;
        assert!(
            (0.9..=1.1).contains(&share),
            "{protocol:?}, {streams} streams: stream {i} got {share:.3} of its fair share"
        );
    }
}

#[test]
fn fairness_between_2_streams() {
    fairness(Protocol::SmuxV1, 2);
    fairness(Protocol::SmuxV2, 2);
    fairness(Protocol::Yamux, 2);
}

#[test]
fn fairness_between_100_streams() {
    fairness(Protocol::SmuxV1, 100);
    fairness(Protocol::SmuxV2, 100);
    fairness(Protocol::Yamux, 100);
}

#[test]
fn control_frames_do_not_wait_behind_bulk_data() {
    let mut p = Pair::new(Config::new(Protocol::SmuxV2));
    let bulk = p.client.open().unwrap();
    p.write_all(Client, bulk, &vec![0u8; 200 * 1024]);
    let mut chunks = Vec::new();
    // Some of the bulk goes out, most still waits.
    p.client.poll_transmit(p.now, &mut chunks, 40 * 1024);
    assert!(p.client.buffered_send() > 100 * 1024);
    let fresh = p.client.open().unwrap();
    let mut chunks = Vec::new();
    p.client.poll_transmit(p.now, &mut chunks, 1);
    // The very next bytes out are the new stream's SYN, ahead of the queued data.
    assert_eq!(&chunks[0][..8], &[2, 0, 0, 0, fresh.0 as u8, 0, 0, 0]);
}

#[test]
fn upd_is_sent_on_first_read_with_the_configured_window() {
    let mut config = Config::new(Protocol::SmuxV2);
    config.max_stream_buffer = 8192;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"hello");
    p.drive();
    let sid = p.accept(Server);
    assert_eq!(p.read_available(Server, sid).0, b"hello");
    let mut chunks = Vec::new();
    p.server.poll_transmit(p.now, &mut chunks, 1024);
    // Byte-for-byte what Go 1.5.16 sends here (tests/golden/go_frames.jsonl).
    assert_eq!(
        chunks.concat(),
        [2, 4, 8, 0, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0x20, 0, 0].to_vec()
    );
}

#[test]
fn bogus_consumed_fails_the_streams_writes_like_gos_err_consumed() {
    let mut p = Pair::new(Config::new(Protocol::SmuxV2));
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"0123456789");
    p.drive();
    // The peer claims 11 bytes consumed of the 10 sent.
    let mut raw = bytes::BytesMut::new();
    crate::frame::smux::Codec::new(crate::frame::smux::Version::V2).encode(
        &crate::frame::smux::Frame::Upd {
            stream_id: id.0,
            consumed: 11,
            window: 65536,
        },
        &mut raw,
    );
    p.client.handle_input(p.now, &mut raw).unwrap();
    p.client.stream(id).write(b"more").unwrap();
    p.drive();
    assert_eq!(
        p.client.stream(id).write(b"x"),
        Err(crate::WriteError::Consumed {
            stream: id,
            written: 10,
            consumed: 11
        })
    );
    assert!(!p.client.is_closed(), "only the stream is affected");
}

#[test]
fn high_priority_goes_first_and_low_priority_keeps_its_share() {
    for protocol in [Protocol::SmuxV1, Protocol::Yamux] {
        let mut config = Config::new(protocol);
        config.max_frame_size = 16 * 1024;
        config.max_send_buffer = 101 * config.stream_send_buffer;
        if protocol == Protocol::Yamux {
            // A window larger than a round trip's worth of link, so that flow control
            // does not hold the high-priority stream back.
            config.max_stream_buffer = 4 << 20;
        }
        let mut p = Pair::new(config);
        p.link_capacity = Some(256 * 1024);
        let high = p.client.open().unwrap();
        p.client.stream(high).set_priority(200);
        assert_eq!(p.client.stream_ref(high).priority(), Some(200));
        let low: Vec<StreamId> = (0..100).map(|_| p.client.open().unwrap()).collect();
        p.drive();
        let s_high = p.accept(Server);
        let s_low: Vec<StreamId> = (0..100).map(|_| p.accept(Server)).collect();
        let chunk = vec![0u8; 64 * 1024];
        let (mut got_high, mut got_low) = (0usize, vec![0usize; 100]);
        for _ in 0..2000 {
            // Keep every stream backlogged: the high one fills its whole send buffer.
            while p.client.stream(high).write(&chunk).is_ok() {}
            for id in &low {
                let _ = p.client.stream(*id).write(&chunk);
            }
            p.step();
            got_high += p.read_available(Server, s_high).0.len();
            for (i, id) in s_low.iter().enumerate() {
                got_low[i] += p.read_available(Server, *id).0.len();
            }
        }
        let low_total: usize = got_low.iter().sum();
        let share = low_total as f64 / (low_total + got_high) as f64;
        // The high-priority stream takes the link but for the configured 10%.
        assert!(
            (0.08..=0.12).contains(&share),
            "{protocol:?}: low share {share:.3}"
        );
        // Every low-priority stream progresses, and fairly among themselves.
        let fair = low_total as f64 / 100.0;
        for g in &got_low {
            assert!(
                *g as f64 > 0.8 * fair && (*g as f64) < 1.2 * fair,
                "{g} vs {fair}"
            );
        }
    }
}
