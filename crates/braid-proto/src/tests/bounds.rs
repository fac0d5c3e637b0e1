//! Time and state bounds against hostile or silent peers: the detection timeout, a close
//! deadline for every end reason, refusing streams nobody accepts, and per-stream state
//! (send waiters, timers, ping slots) that does not outlive or outgrow its streams.

use crate::frame::{smux, yamux};
use crate::{
    Config, ConnectionError, Event, Protocol, ProtocolViolation, ResetReason, Session, Side,
    StreamId,
};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// Everything `s` sends now, as bytes.
fn sent(s: &mut Session, now: Instant) -> BytesMut {
    let mut chunks = Vec::new();
    while s.poll_transmit(now, &mut chunks, 1 << 20) > 0 {}
    let mut wire = BytesMut::new();
    for c in chunks {
        wire.extend_from_slice(&c);
    }
    wire
}

fn yamux_frames(s: &mut Session, now: Instant) -> Vec<yamux::Frame> {
    let mut wire = sent(s, now);
    let codec = yamux::Codec::new(u32::MAX);
    std::iter::from_fn(|| codec.decode(&mut wire).unwrap()).collect()
}

fn smux_frames(s: &mut Session, now: Instant, version: smux::Version) -> Vec<smux::Frame> {
    let mut wire = sent(s, now);
    let codec = smux::Codec::new(version);
    std::iter::from_fn(|| codec.decode(&mut wire).unwrap()).collect()
}

fn feed_yamux(s: &mut Session, now: Instant, frames: &[yamux::Frame]) {
    let codec = yamux::Codec::new(u32::MAX);
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut buf);
    }
    s.handle_input(now, &mut buf).unwrap();
}

fn feed_smux(s: &mut Session, now: Instant, frames: &[smux::Frame]) {
    let codec = smux::Codec::new(smux::Version::V1);
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut buf);
    }
    s.handle_input(now, &mut buf).unwrap();
}

fn ydata(stream_id: u32, flags: yamux::Flags, bytes: &[u8]) -> yamux::Frame {
    yamux::Frame::Data {
        stream_id,
        flags,
        data: Bytes::copy_from_slice(bytes),
    }
}

fn ywu(stream_id: u32, flags: yamux::Flags, delta: u32) -> yamux::Frame {
    yamux::Frame::WindowUpdate {
        stream_id,
        flags,
        delta,
    }
}

#[test]
fn auto_server_ends_a_silent_connection_at_the_detect_timeout() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::new(Protocol::Auto), Side::Server, t0);
    let limit = s.config().detect_timeout;
    assert_eq!(limit, Duration::from_secs(10), "documented default");
    assert_eq!(s.poll_timeout(), Some(t0 + limit));
    s.handle_timeout(t0 + limit - Duration::from_millis(1));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + limit);
    assert_eq!(
        s.close_reason(),
        Some(&ConnectionError::DetectTimeout(limit))
    );
    assert_eq!(
        s.close_reason().unwrap().io_kind(),
        std::io::ErrorKind::TimedOut
    );
    assert!(s.close_deadline().is_some(), "shutdown is bounded too");
}

#[test]
fn clients_send_a_keepalive_at_once_so_auto_servers_detect_them() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let t0 = Instant::now();
        let mut client = Session::new(Config::new(protocol), Side::Client, t0);
        // As a driver does: timers due now first.
        assert_eq!(client.poll_timeout(), Some(t0));
        client.handle_timeout(t0);
        let mut wire = sent(&mut client, t0);
        assert!(!wire.is_empty(), "{protocol:?}: a keepalive at start");
        let mut server = Session::new(Config::new(Protocol::Auto), Side::Server, t0);
        server.handle_input(t0, &mut wire).unwrap();
        assert_eq!(server.config().protocol, protocol);
        server.handle_timeout(t0 + Duration::from_secs(60));
        assert!(
            !matches!(
                server.close_reason(),
                Some(ConnectionError::DetectTimeout(_))
            ),
            "{protocol:?}"
        );
    }
}

#[test]
fn every_end_reason_sets_a_close_deadline() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(100);
    type End = Box<dyn Fn(&mut Session)>;
    let ends: Vec<(&str, End)> = vec![
        (
            "transport closed",
            Box::new(move |s| s.handle_transport_closed(later, ConnectionError::TransportClosed)),
        ),
        (
            "keepalive timeout",
            Box::new(move |s| {
                for k in 1..=10 {
                    s.handle_timeout(t0 + Duration::from_secs(10 * k));
                    if s.is_closed() {
                        break;
                    }
                }
            }),
        ),
        (
            "protocol error",
            Box::new(move |s| {
                let _ = s.handle_input(later, &mut BytesMut::from(&[9u8; 12][..]));
            }),
        ),
        (
            "GoAway with a code",
            Box::new(move |s| {
                let mut buf = BytesMut::new();
                yamux::Codec::new(u32::MAX).encode(&yamux::Frame::GoAway { code: 2 }, &mut buf);
                let _ = s.handle_input(later, &mut buf);
            }),
        ),
    ];
    for (what, end) in ends {
        let mut s = Session::new(Config::new(Protocol::Yamux), Side::Server, t0);
        end(&mut s);
        assert!(s.is_closed(), "{what}");
        let deadline = s
            .close_deadline()
            .unwrap_or_else(|| panic!("{what}: no deadline"));
        assert!(
            deadline > t0 && deadline <= t0 + Duration::from_secs(100) + s.config().close_timeout,
            "{what}: {:?}",
            deadline - t0
        );
    }
}

#[test]
fn a_session_that_accepts_no_streams_refuses_them_at_once() {
    let t0 = Instant::now();
    // yamux: RST, nothing queued, nothing buffered.
    let mut config = Config::new(Protocol::Yamux);
    config.accept_streams = false;
    let mut s = Session::new(config, Side::Client, t0);
    let _ = sent(&mut s, t0); // the first keepalive
    let y = yamux::Flags::SYN;
    // A peer that never reads our refusals gets at most 1024 of them queued.
    let frames: Vec<_> = (0..2000)
        .map(|i| ydata(2 + 2 * i, y, &[1u8; 1000]))
        .collect();
    feed_yamux(&mut s, t0, &frames);
    assert_eq!(s.num_streams(), 0);
    assert_eq!(s.buffered_recv(), 0);
    assert!(s.wants_read());
    assert!(!std::iter::from_fn(|| s.poll_event()).any(|e| e == Event::Incoming));
    let rsts = yamux_frames(&mut s, t0)
        .into_iter()
        .filter(|f| matches!(f, yamux::Frame::WindowUpdate { flags, .. } if flags.contains(yamux::Flags::RST)))
        .count();
    assert_eq!(rsts, 1024);

    // smux: FIN (smux has no RST), the stream's data dropped.
    let mut config = Config::new(Protocol::SmuxV1);
    config.accept_streams = false;
    let mut s = Session::new(config, Side::Client, t0);
    let _ = sent(&mut s, t0);
    let mut fins = 0;
    for batch in 0..4u32 {
        let mut frames = Vec::new();
        for i in 500 * batch..500 * (batch + 1) {
            frames.push(smux::Frame::Syn {
                stream_id: 2 + 2 * i,
                name: Bytes::new(),
            });
            frames.push(smux::Frame::Psh {
                stream_id: 2 + 2 * i,
                data: Bytes::from_static(b"data"),
            });
        }
        feed_smux(&mut s, t0, &frames);
        assert_eq!(s.num_streams(), 0);
        assert_eq!(s.buffered_recv(), 0);
        assert!(s.wants_read(), "no accept queue to fill");
        fins += smux_frames(&mut s, t0, smux::Version::V1)
            .into_iter()
            .filter(|f| matches!(f, smux::Frame::Fin { .. }))
            .count();
    }
    assert_eq!(fins, 2000);
}

/// A peer drips 1-byte window credit to a stream whose data fills the session's send
/// buffer, while another stream keeps writing: the waiters list holds each stream once.
#[test]
fn send_waiters_hold_each_stream_once_under_credit_drips() {
    let t0 = Instant::now();
    let mut config = Config::new(Protocol::Yamux);
    config.stream_send_buffer = 64 * 1024;
    config.max_send_buffer = 64 * 1024;
    let mut s = Session::new(config, Side::Client, t0);
    let a = s.open().unwrap();
    let b = s.open().unwrap();
    let _ = sent(&mut s, t0);
    // A spends its whole initial window, then fills the session's send buffer.
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    while written < 256 * 1024 {
        written += s.stream(a).write(&chunk).unwrap();
        let _ = sent(&mut s, t0);
    }
    assert_eq!(s.stream(a).write(&chunk).unwrap(), 64 * 1024);
    for _ in 0..10_000 {
        feed_yamux(&mut s, t0, &[ywu(a.0, yamux::Flags::NONE, 1)]);
        let _ = s.stream(b).write(b"xy");
        let _ = sent(&mut s, t0);
        while s.poll_event().is_some() {}
    }
    assert!(
        s.send_waiters_len() <= 2,
        "{} waiters for 2 streams",
        s.send_waiters_len()
    );
}

/// yamux: a peer reuses the id of a stream we forgot. The old stream's close timer must
/// not act on the new one.
#[test]
fn timers_of_a_forgotten_stream_leave_a_reused_id_alone() {
    let t0 = Instant::now();
    let mut config = Config::new(Protocol::Yamux);
    config.stream_close_timeout = Duration::from_secs(5);
    config.keep_alive_disabled = true;
    let mut s = Session::new(config, Side::Server, t0);
    let syn = yamux::Flags::SYN;
    let fin = yamux::Flags::FIN;
    feed_yamux(&mut s, t0, &[ywu(1, syn, 0)]);
    let old = s.accept().unwrap();
    s.stream(old).close(); // our FIN: close timer at t0 + 5 s
    let _ = sent(&mut s, t0);
    let t1 = t0 + Duration::from_secs(1);
    feed_yamux(&mut s, t1, &[ywu(1, fin, 0)]); // the peer's FIN: forgotten
    assert_eq!(s.num_streams(), 0);
    let t2 = t0 + Duration::from_secs(2);
    feed_yamux(&mut s, t2, &[ywu(1, syn, 0)]); // id 1 again
    let new = s.accept().unwrap();
    s.stream(new).close_write(); // our FIN at t2: its close timer is due at t2 + 5 s
    let _ = sent(&mut s, t2);
    while s.poll_event().is_some() {}
    s.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!(
        s.stream_ref(new).end(),
        None,
        "reset by the old stream's timer"
    );
    s.handle_timeout(t2 + Duration::from_secs(5));
    assert_eq!(
        s.stream_ref(new).end(),
        Some(crate::StreamEnd::Reset(ResetReason::CloseTimeout))
    );
}

#[test]
fn the_timer_heap_does_not_grow_with_churn() {
    let t0 = Instant::now();
    let mut config = Config::new(Protocol::Yamux);
    config.idle_timeout = Some(Duration::from_secs(600));
    let mut s = Session::new(config, Side::Server, t0);
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        feed_yamux(
            &mut s,
            t0,
            &[
                ydata(id, yamux::Flags::SYN, b"x"),
                ywu(id, yamux::Flags::FIN, 0),
            ],
        );
        let st = s.accept().unwrap();
        s.stream(st).close();
        let _ = sent(&mut s, t0);
        while s.poll_event().is_some() {}
    }
    assert_eq!(s.num_streams(), 0);
    assert!(
        s.stream_timers_len() <= 200,
        "{} timers for no stream",
        s.stream_timers_len()
    );
}

/// 64 application pings are outstanding when keepalive pings go out: every one of the
/// application's still gets its reply.
#[test]
fn keepalive_pings_never_push_out_the_applications() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::new(Protocol::Yamux), Side::Client, t0);
    let mut mine: Vec<u32> = (0..64).map(|_| s.ping(t0).unwrap()).collect();
    assert_eq!(s.ping(t0), None, "at most 64 outstanding");
    let mut now = t0;
    let mut replies = Vec::new();
    for _ in 0..20 {
        now += Duration::from_secs(30);
        s.handle_timeout(now);
        for f in yamux_frames(&mut s, now) {
            if let yamux::Frame::Ping { opaque, .. } = f {
                if !mine.contains(&opaque) {
                    // Keepalives are answered at once; the application's wait.
                    feed_yamux(
                        &mut s,
                        now,
                        &[yamux::Frame::Ping {
                            flags: yamux::Flags::ACK,
                            opaque,
                        }],
                    );
                }
            }
        }
    }
    assert!(!s.is_closed());
    for &id in &mine {
        replies.push(yamux::Frame::Ping {
            flags: yamux::Flags::ACK,
            opaque: id,
        });
    }
    feed_yamux(&mut s, now, &replies);
    let pongs: Vec<u32> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::Pong { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    mine.sort();
    let mut got = pongs.clone();
    got.sort();
    assert_eq!(got, mine, "every application ping answered");
    // A forgotten ping frees its slot.
    let id = s.ping(now).unwrap();
    s.forget_ping(id);
    assert!(s.ping(now).is_some());
}

#[test]
fn smux_protocol_errors_still_end_the_session() {
    // Sanity: refusing streams does not hide a wrong-parity SYN.
    let t0 = Instant::now();
    let mut config = Config::new(Protocol::SmuxV1);
    config.accept_streams = false;
    let mut s = Session::new(config, Side::Client, t0);
    let codec = smux::Codec::new(smux::Version::V1);
    let mut buf = BytesMut::new();
    codec.encode(
        &smux::Frame::Syn {
            stream_id: 3,
            name: Bytes::new(),
        },
        &mut buf,
    );
    assert!(s.handle_input(t0, &mut buf).is_err());
    assert_eq!(
        s.close_reason(),
        Some(&ConnectionError::Protocol(ProtocolViolation::WrongParity(
            3
        )))
    );
    let _ = StreamId(0);
}
