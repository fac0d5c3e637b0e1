//! yamux: the interop corner cases of the reference, RST, GoAway, ping, backlog and the
//! stream timeouts, against a scripted peer that sends and checks raw frames.

use super::pair::{Client, Pair, Server};
use crate::frame::yamux::{Codec, Flags, Frame};
use crate::{
    Config, ConnectionError, Event, OpenError, Protocol, ProtocolViolation, ReadError, ResetReason,
    Session, Side, StreamId, WriteError, YAMUX_INITIAL_WINDOW,
};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// One braid session and a hand-driven peer.
struct Scripted {
    s: Session,
    now: Instant,
    codec: Codec,
}

impl Scripted {
    fn new(side: Side) -> Scripted {
        Scripted::with(Config::new(Protocol::Yamux), side)
    }

    fn with(config: Config, side: Side) -> Scripted {
        let now = Instant::now();
        Scripted {
            codec: Codec::new(u32::MAX),
            s: Session::new(config, side, now),
            now,
        }
    }

    /// The peer sends `frames`.
    fn send(&mut self, frames: &[Frame]) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::new();
        for f in frames {
            self.codec.encode(f, &mut buf);
        }
        let r = self.s.handle_input(self.now, &mut buf);
        assert!(buf.is_empty() || r.is_err());
        r
    }

    /// Everything the session sends now, decoded.
    fn recv(&mut self) -> Vec<Frame> {
        let mut chunks = Vec::new();
        while self.s.poll_transmit(self.now, &mut chunks, 1 << 20) > 0 {}
        let mut wire = BytesMut::new();
        for c in chunks {
            wire.extend_from_slice(&c);
        }
        let mut frames = Vec::new();
        while let Some(f) = self.codec.decode(&mut wire).unwrap() {
            frames.push(f);
        }
        assert!(wire.is_empty());
        frames
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }
}

fn wu(stream_id: u32, flags: Flags, delta: u32) -> Frame {
    Frame::WindowUpdate {
        stream_id,
        flags,
        delta,
    }
}

fn data(stream_id: u32, flags: Flags, bytes: &[u8]) -> Frame {
    Frame::Data {
        stream_id,
        flags,
        data: Bytes::copy_from_slice(bytes),
    }
}

fn read_all(s: &mut Session, id: StreamId) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.stream(id).read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn open_sends_window_update_syn_and_ack_completes_it() {
    let mut t = Scripted::new(Side::Client);
    let id = t.s.open().unwrap();
    assert_eq!(id.0, 1, "yamux clients open odd ids from 1");
    t.s.stream(id).write(b"early").unwrap();
    // Corner case 3: data goes out before the ACK (Go accepts it).
    assert_eq!(
        t.recv(),
        vec![wu(1, Flags::SYN, 0), data(1, Flags::NONE, b"early")]
    );
    t.send(&[wu(1, Flags::ACK, 0)]).unwrap();
    assert_eq!(Scripted::new(Side::Server).s.open().unwrap().0, 2);
}

#[test]
fn larger_window_is_announced_on_syn_and_ack() {
    let mut config = Config::new(Protocol::Yamux);
    config.max_stream_buffer = 1 << 20;
    let mut t = Scripted::with(config.clone(), Side::Client);
    t.s.open().unwrap();
    let extra = (1 << 20) - YAMUX_INITIAL_WINDOW;
    assert_eq!(t.recv(), vec![wu(1, Flags::SYN, extra)]);
    let mut t = Scripted::with(config, Side::Server);
    t.send(&[wu(1, Flags::SYN, 0)]).unwrap();
    t.s.accept().unwrap();
    assert_eq!(t.recv(), vec![wu(1, Flags::ACK, extra)]);
}

#[test]
fn corner_1_window_update_syn_adds_its_delta_to_the_initial_window() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[wu(1, Flags::SYN, 100_000)]).unwrap();
    let id = t.s.accept().unwrap();
    t.recv();
    let big = vec![7u8; 400_000];
    assert_eq!(t.s.stream(id).write(&big), Ok(256 * 1024)); // the stream's send buffer
    let sent: usize = t
        .recv()
        .iter()
        .map(|f| match f {
            Frame::Data { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, 256 * 1024); // within 256 KiB + 100 000 of credit
    t.s.stream(id).write(&big[..200_000]).unwrap();
    let sent: usize = t
        .recv()
        .iter()
        .map(|f| match f {
            Frame::Data { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, YAMUX_INITIAL_WINDOW as usize + 100_000 - 256 * 1024);
}

#[test]
fn corner_2_data_syn_is_buffered_before_accept_and_4_ack_on_accept() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[data(1, Flags::SYN, b"hello")]).unwrap();
    assert_eq!(t.recv(), vec![], "no ACK before the application accepts");
    let id = t.s.accept().unwrap();
    assert_eq!(t.recv(), vec![wu(1, Flags::ACK, 0)]);
    assert_eq!(read_all(&mut t.s, id), b"hello");
}

#[test]
fn corner_5_never_a_second_fin() {
    let mut t = Scripted::new(Side::Client);
    let id = t.s.open().unwrap();
    t.s.stream(id).close_write();
    t.s.stream(id).close_write();
    t.s.stream(id).close();
    assert_eq!(t.recv(), vec![wu(1, Flags::SYN, 0), wu(1, Flags::FIN, 0)]);
    t.s.stream(id).close();
    t.s.stream(id).close_write();
    assert_eq!(t.recv(), vec![]);
    // Released, FIN sent: kept until the peer's FIN, then forgotten.
    assert_eq!(t.s.num_streams(), 1);
    t.send(&[wu(1, Flags::ACK | Flags::FIN, 0)]).unwrap();
    assert_eq!(t.s.num_streams(), 0);
}

#[test]
fn corner_6_frames_for_unknown_streams_are_ignored() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[
        data(9, Flags::NONE, b"late"),
        wu(11, Flags::FIN, 0),
        wu(13, Flags::RST, 0),
        data(15, Flags::FIN, b""),
    ])
    .unwrap();
    assert!(!t.s.is_closed());
    assert_eq!(t.s.num_streams(), 0);
    assert_eq!(t.recv(), vec![]);
}

#[test]
fn corner_7_a_frame_as_large_as_the_window_is_accepted_and_one_more_byte_is_not() {
    let mut t = Scripted::new(Side::Server);
    let window = vec![1u8; YAMUX_INITIAL_WINDOW as usize];
    t.send(&[wu(1, Flags::SYN, 0), data(1, Flags::NONE, &window)])
        .unwrap();
    assert_eq!(t.s.buffered_recv(), window.len());
    let err = t.send(&[data(1, Flags::NONE, b"x")]).unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Protocol(ProtocolViolation::WindowExceeded {
            stream_id: 1,
            length: 1,
            window: 0
        })
    );
    // Go's answer to a window overrun: GoAway(protocol error).
    assert_eq!(t.recv(), vec![Frame::GoAway { code: 1 }]);
}

#[test]
fn corner_8_go_away_0_drains_instead_of_killing() {
    let mut t = Scripted::new(Side::Client);
    let id = t.s.open().unwrap();
    t.recv();
    t.send(&[wu(1, Flags::ACK, 0), Frame::GoAway { code: 0 }])
        .unwrap();
    assert!(t.events().contains(&Event::GoAway));
    assert_eq!(t.s.open(), Err(OpenError::RemoteGoAway));
    // The existing stream goes on both ways.
    t.send(&[data(1, Flags::NONE, b"still")]).unwrap();
    assert_eq!(read_all(&mut t.s, id), b"still");
    t.s.stream(id).write(b"me too").unwrap();
    assert_eq!(t.recv(), vec![data(1, Flags::NONE, b"me too")]);
}

#[test]
fn go_away_1_ends_the_session_with_its_code() {
    let mut t = Scripted::new(Side::Client);
    assert_eq!(
        t.send(&[Frame::GoAway { code: 1 }]),
        Err(ConnectionError::GoAway(1))
    );
    assert!(t.s.is_closed());
}

#[test]
fn corner_9_bare_eof_ends_streams_after_their_data() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[data(1, Flags::SYN, b"partial")]).unwrap();
    let id = t.s.accept().unwrap();
    t.s.handle_transport_closed(t.now, ConnectionError::TransportClosed);
    let mut buf = [0u8; 16];
    assert_eq!(t.s.stream(id).read(&mut buf), Ok(7));
    assert_eq!(
        t.s.stream(id).read(&mut buf),
        Err(ReadError::SessionClosed(ConnectionError::TransportClosed))
    );
}

#[test]
fn corner_10_fin_and_rst_on_either_frame_type() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[
        data(1, Flags::SYN, b"a"),
        data(3, Flags::SYN, b"b"),
        data(5, Flags::SYN, b"c"),
        data(7, Flags::SYN, b"d"),
    ])
    .unwrap();
    let ids: Vec<StreamId> = (0..4).map(|_| t.s.accept().unwrap()).collect();
    t.send(&[
        data(1, Flags::FIN, b""),
        wu(3, Flags::FIN, 0),
        data(5, Flags::RST, b""),
        wu(7, Flags::RST, 0),
    ])
    .unwrap();
    assert_eq!(read_all(&mut t.s, ids[0]), b"a");
    assert_eq!(read_all(&mut t.s, ids[1]), b"b");
    let mut buf = [0u8; 4];
    for id in &ids[2..] {
        assert_eq!(
            t.s.stream(*id).read(&mut buf),
            Err(ReadError::Reset(*id, ResetReason::ByPeer)),
            "buffered data is lost on RST, as in Go"
        );
        assert_eq!(
            t.s.stream(*id).write(b"x"),
            Err(WriteError::Reset(*id, ResetReason::ByPeer))
        );
    }
    // Data and FIN in one frame: the data is delivered, then end of stream.
    t.send(&[data(9, Flags::SYN | Flags::FIN, b"all at once")])
        .unwrap();
    let id = t.s.accept().unwrap();
    assert_eq!(read_all(&mut t.s, id), b"all at once");
}

#[test]
fn corner_11_ping_is_answered_whatever_its_stream_id() {
    let mut t = Scripted::new(Side::Server);
    let mut raw = BytesMut::new();
    // A Ping|SYN on stream 77 (the codec always encodes 0, so build it by hand).
    raw.extend_from_slice(&[0, 2, 0, 1, 0, 0, 0, 77, 0, 0, 0, 42]);
    t.s.handle_input(t.now, &mut raw).unwrap();
    assert_eq!(
        t.recv(),
        vec![Frame::Ping {
            flags: Flags::ACK,
            opaque: 42
        }]
    );
}

#[test]
fn duplicate_syn_and_second_fin_are_protocol_errors_as_in_go() {
    let mut t = Scripted::new(Side::Server);
    let err = t
        .send(&[wu(1, Flags::SYN, 0), wu(1, Flags::SYN, 0)])
        .unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Protocol(ProtocolViolation::DuplicateStream(1))
    );
    let mut t = Scripted::new(Side::Server);
    let err = t
        .send(&[wu(1, Flags::SYN | Flags::FIN, 0), wu(1, Flags::FIN, 0)])
        .unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Protocol(ProtocolViolation::DuplicateFin(1))
    );
}

#[test]
fn window_update_overflow_is_refused() {
    let mut t = Scripted::new(Side::Server);
    let err = t.send(&[wu(1, Flags::SYN, u32::MAX - 1000)]).unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolViolation::WindowOverflow { stream_id: 1, .. })
    ));
}

#[test]
fn full_backlog_refuses_with_rst_and_keeps_reading() {
    let mut t = Scripted::new(Side::Server);
    let syns: Vec<Frame> = (0..300)
        .map(|i| data(2 * i + 1, Flags::SYN, b"x"))
        .collect();
    t.send(&syns).unwrap();
    assert!(t.s.wants_read(), "yamux never pauses for the backlog");
    let rsts: Vec<Frame> = (256..300).map(|i| wu(2 * i + 1, Flags::RST, 0)).collect();
    assert_eq!(t.recv(), rsts);
    assert_eq!(t.s.num_streams(), 256);
}

#[test]
fn local_go_away_refuses_new_streams_and_keeps_old_ones() {
    let mut t = Scripted::new(Side::Server);
    t.send(&[data(1, Flags::SYN, b"old")]).unwrap();
    let old = t.s.accept().unwrap();
    t.s.go_away();
    t.send(&[data(3, Flags::SYN, b"new")]).unwrap();
    assert_eq!(
        t.recv(),
        vec![
            Frame::GoAway { code: 0 },
            wu(3, Flags::RST, 0),
            wu(1, Flags::ACK, 0)
        ]
    );
    assert_eq!(t.s.accept(), None);
    assert_eq!(read_all(&mut t.s, old), b"old");
}

#[test]
fn rst_both_directions() {
    let mut p = Pair::new(Config::new(Protocol::Yamux));
    let a = p.client.open().unwrap();
    p.write_all(Client, a, b"doomed");
    p.drive();
    let sa = p.accept(Server);
    // Local reset: our calls fail, the peer's reads fail with ConnectionReset.
    p.client.stream(a).reset();
    assert_eq!(
        p.client.stream(a).write(b"x"),
        Err(WriteError::Reset(a, ResetReason::Locally))
    );
    p.drive();
    assert!(p.server_events.contains(&Event::Reset(sa)));
    assert_eq!(
        p.server.stream(sa).read(&mut [0u8; 8]),
        Err(ReadError::Reset(sa, ResetReason::ByPeer))
    );
    p.client.stream(a).close();
    p.server.stream(sa).close();
    p.drive();
    assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
}

#[test]
fn opens_wait_while_256_syns_are_unacknowledged() {
    let mut t = Scripted::new(Side::Client);
    for _ in 0..256 {
        t.s.open().unwrap();
    }
    t.recv();
    assert_eq!(t.s.open(), Err(OpenError::Blocked));
    t.send(&[wu(1, Flags::ACK, 0)]).unwrap();
    assert!(t.events().contains(&Event::Openable));
    t.s.open().unwrap();
}

#[test]
fn unacknowledged_open_times_out_with_rst() {
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_disabled = true;
    let mut t = Scripted::with(config, Side::Client);
    let id = t.s.open().unwrap();
    t.recv();
    t.advance(Duration::from_secs(74));
    assert!(t.s.has_stream(id));
    t.advance(Duration::from_secs(2));
    assert!(t.events().contains(&Event::Reset(id)));
    assert_eq!(
        t.s.stream(id).read(&mut [0u8; 1]),
        Err(ReadError::Reset(id, ResetReason::OpenTimeout))
    );
    assert_eq!(t.recv(), vec![wu(1, Flags::RST, 0)]);
    assert!(!t.s.is_closed(), "only the stream is affected");
}

#[test]
fn close_timeout_resets_a_stream_the_peer_never_finishes() {
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_disabled = true;
    let mut t = Scripted::with(config, Side::Client);
    let id = t.s.open().unwrap();
    t.s.stream(id).close();
    t.recv();
    t.send(&[wu(1, Flags::ACK, 0)]).unwrap();
    t.advance(Duration::from_secs(301));
    assert_eq!(t.recv(), vec![wu(1, Flags::RST, 0)]);
    assert_eq!(t.s.num_streams(), 0);
}

#[test]
fn ping_measures_the_round_trip() {
    let mut t = Scripted::new(Side::Client);
    let id = t.s.ping(t.now).unwrap();
    assert_eq!(
        t.recv(),
        vec![Frame::Ping {
            flags: Flags::SYN,
            opaque: id
        }]
    );
    t.now += Duration::from_millis(30);
    t.send(&[Frame::Ping {
        flags: Flags::ACK,
        opaque: id,
    }])
    .unwrap();
    assert_eq!(
        t.events(),
        vec![Event::Pong {
            id,
            rtt: Duration::from_millis(30)
        }]
    );
    // smux has no echo.
    let mut s = Session::new(Config::default(), Side::Client, t.now);
    assert_eq!(s.ping(t.now), None);
}

#[test]
fn keepalive_ping_unanswered_ends_the_session() {
    let mut t = Scripted::new(Side::Client);
    t.advance(Duration::from_secs(30));
    assert_eq!(
        t.recv(),
        vec![Frame::Ping {
            flags: Flags::SYN,
            opaque: 0
        }]
    );
    t.advance(Duration::from_secs(9));
    assert!(!t.s.is_closed());
    t.advance(Duration::from_secs(1));
    assert_eq!(
        t.s.close_reason(),
        Some(&ConnectionError::KeepAliveTimeout(Duration::from_secs(10)))
    );
}

#[test]
fn keepalive_ping_answered_keeps_the_session() {
    let mut p = Pair::new(Config::new(Protocol::Yamux));
    p.advance(Duration::from_secs(600));
    assert!(!p.client.is_closed() && !p.server.is_closed());
    // Keepalive replies are not reported as pongs.
    assert!(!p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Pong { .. })));
}

#[test]
fn released_stream_gives_the_window_back_so_the_peer_is_not_stuck() {
    let mut p = Pair::new(Config::new(Protocol::Yamux));
    let id = p.client.open().unwrap();
    p.drive();
    let sid = p.accept(Server);
    p.server.stream(sid).close(); // the server will not read
    let total = 2 * 1024 * 1024;
    let mut written = 0;
    for _ in 0..10_000 {
        if written == total {
            break;
        }
        written += p
            .client
            .stream(id)
            .write(&vec![0u8; total - written])
            .unwrap_or(0);
        p.step();
    }
    assert_eq!(written, total, "the writer was left without window");
}

#[test]
fn stream_dropped_with_a_full_window_unread_gives_that_window_back() {
    let mut p = Pair::new(Config::new(Protocol::Yamux));
    let id = p.client.open().unwrap();
    p.drive();
    let sid = p.accept(Server);
    // The client fills the server's whole window; nothing of it is read.
    let window = 256 * 1024;
    p.write_all(Client, id, &vec![7u8; window]);
    p.drive();
    assert_eq!(
        p.server.stream_ref(sid).stats().unwrap().buffered_recv,
        window
    );
    assert!(
        matches!(p.client.stream(id).write(b"x"), Ok(1)),
        "send buffer takes it"
    );
    p.drive();
    assert_eq!(
        p.client.stream_ref(id).stats().unwrap().buffered_send,
        1,
        "no window left"
    );
    // Dropping discards the unread window: it must come back without further data.
    p.server.stream(sid).close();
    p.drive();
    assert_eq!(
        p.client.stream_ref(id).stats().unwrap().buffered_send,
        0,
        "the writer got its window back"
    );
}

#[test]
fn open_write_drop_cycles_leave_nothing_behind() {
    let mut p = Pair::new(Config::new(Protocol::Yamux));
    let mut accepted = 0;
    for i in 0..3000u32 {
        let id = loop {
            match p.client.open() {
                Ok(id) => break id,
                Err(OpenError::Blocked) => {
                    p.step();
                    while let Some(sid) = p.server.accept() {
                        let _ = p.read_available(Server, sid);
                        p.server.stream(sid).close();
                        accepted += 1;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        };
        p.client.stream(id).write(&[i as u8]).unwrap();
        if i % 2 == 0 {
            p.client.stream(id).close_write();
        }
        p.client.stream(id).close();
    }
    for _ in 0..100 {
        p.step();
        while let Some(sid) = p.server.accept() {
            let _ = p.read_available(Server, sid);
            p.server.stream(sid).close();
            accepted += 1;
        }
    }
    p.drive();
    assert_eq!(accepted, 3000);
    assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
}

#[test]
fn ping_rtt_over_a_link_with_latency() {
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_disabled = true;
    let mut p = Pair::new(config);
    p.latency = Duration::from_millis(25);
    let id = p.client.ping(p.now).unwrap();
    p.advance(Duration::from_millis(200));
    assert_eq!(
        p.client_events,
        vec![Event::Pong {
            id,
            rtt: Duration::from_millis(50)
        }]
    );
}

/// Bytes delivered on one stream in `span` of virtual time over a link with `latency`.
fn bulk_over_latency(tuning: bool, latency: Duration, span: Duration) -> (usize, Session) {
    let mut config = Config::new(Protocol::Yamux);
    config.keep_alive_disabled = true;
    config.window_auto_tuning = tuning;
    config.auto_window_max = 4 << 20;
    let mut p = Pair::new(config);
    p.latency = latency;
    let id = p.client.open().unwrap();
    p.advance(latency * 4);
    let sid = p.accept(Server);
    let chunk = vec![0u8; 256 * 1024];
    let mut got = 0;
    let end = p.now + span;
    while p.now < end {
        let _ = p.client.stream(id).write(&chunk);
        p.advance(Duration::from_millis(1));
        got += p.read_available(Server, sid).0.len();
        // Never more in flight than the largest window allows.
        assert!(p.server.buffered_recv() <= 4 << 20);
    }
    (got, p.server)
}

#[test]
fn window_auto_tuning_lifts_a_latency_bound_stream() {
    let latency = Duration::from_millis(10);
    let span = Duration::from_secs(1);
    let (fixed, _) = bulk_over_latency(false, latency, span);
    let (tuned, server) = bulk_over_latency(true, latency, span);
    // 256 KiB per 20 ms round trip is about 13 MB/s; a window grown to 4 MiB allows far more.
    assert!(fixed < 16 << 20, "fixed window moved {fixed}");
    assert!(tuned > 4 * fixed, "tuned {tuned} vs fixed {fixed}");
    assert!(server.tuner_granted().unwrap() <= server.config().max_receive_buffer);
}
