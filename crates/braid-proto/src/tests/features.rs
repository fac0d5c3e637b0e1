//! gmux-style features: stream names, idle timeouts; and statistics.

use super::pair::{Client, Pair, Server};
use crate::{Config, Event, OpenError, Protocol, ReadError, ResetReason, WriteError};
use std::time::Duration;

fn named(protocol: Protocol) -> Config {
    let mut c = Config::new(protocol);
    c.stream_names = true;
    c
}

#[test]
fn names_round_trip_and_travel_as_gmux_syn_payload() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2] {
        let mut p = Pair::new(named(protocol));
        let id = p.client.open_named(b"db-primary").unwrap();
        let mut chunks = Vec::new();
        p.client.poll_transmit(p.now, &mut chunks, 1 << 16);
        // gmux: the raw name is the SYN payload, LENGTH = its length, nothing else.
        let v = if protocol == Protocol::SmuxV1 { 1 } else { 2 };
        let mut want = vec![v, 0, 10, 0, 3, 0, 0, 0];
        want.extend_from_slice(b"db-primary");
        assert_eq!(chunks.concat(), want);
        let mut wire = bytes::BytesMut::from(&want[..]);
        p.server.handle_input(p.now, &mut wire).unwrap();
        let sid = p.server.accept().unwrap();
        assert_eq!(p.server.stream_ref(sid).name(), Some(&b"db-primary"[..]));
        assert_eq!(p.client.stream_ref(id).name(), Some(&b"db-primary"[..]));
        // Unnamed streams still work on a names-enabled session.
        let plain = p.client.open().unwrap();
        p.drive();
        let sp = p.accept(Server);
        assert_eq!(p.server.stream_ref(sp).name(), Some(&b""[..]));
        assert_eq!(plain.0, 5);
    }
}

#[test]
fn names_are_opt_in_smux_only_and_bounded() {
    let mut p = Pair::new(Config::default());
    assert_eq!(p.client.open_named(b"x"), Err(OpenError::NamesDisabled));
    let mut p = Pair::new(named(Protocol::SmuxV1));
    assert_eq!(
        p.client.open_named(&vec![b'n'; 65536]),
        Err(OpenError::NameTooLong(65536))
    );
    p.client.open_named(&vec![b'n'; 65535]).unwrap();
    let mut y = Config::new(Protocol::Yamux);
    y.stream_names = true;
    assert_eq!(
        y.validate().unwrap_err().field,
        crate::ConfigField::StreamNames
    );
    // A plain smux peer refuses a named SYN, as Go 1.5.57 does.
    let mut p = Pair::with_configs(named(Protocol::SmuxV1), Config::default(), 1);
    p.client.open_named(b"who").unwrap();
    p.drive();
    assert!(p.server.is_closed());
}

fn idle(protocol: Protocol) -> Pair {
    let mut c = Config::new(protocol);
    c.keep_alive_disabled = true;
    c.idle_timeout = Some(Duration::from_secs(30));
    Pair::new(c)
}

#[test]
fn idle_timeout_fails_a_waiting_read_and_a_waiting_write() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let mut p = idle(protocol);
        let id = p.client.open().unwrap();
        p.write_all(Client, id, b"hello");
        p.drive();
        let sid = p.accept(Server);
        assert_eq!(p.read_available(Server, sid).0, b"hello");
        // The server waits in read; the client is blocked writing (v2/yamux: no credit
        // once the peer stops reading; v1: the send buffer fills).
        assert_eq!(
            p.server.stream(sid).read(&mut [0u8; 8]),
            Err(ReadError::Blocked)
        );
        p.advance(Duration::from_secs(29));
        assert!(p.server.has_stream(sid));
        p.advance(Duration::from_secs(2));
        assert!(p.server_events.contains(&Event::Reset(sid)), "{protocol:?}");
        assert_eq!(
            p.server.stream(sid).read(&mut [0u8; 8]),
            Err(ReadError::Reset(sid, ResetReason::IdleTimeout))
        );
        // The client's idle timer fired too (same last data).
        assert_eq!(
            p.client.stream(id).write(b"late"),
            Err(WriteError::Reset(id, ResetReason::IdleTimeout))
        );
    }
}

#[test]
fn idle_timeout_spares_an_active_stream_and_can_be_changed() {
    let mut p = idle(Protocol::Yamux);
    let id = p.client.open().unwrap();
    p.drive();
    let sid = p.accept(Server);
    for _ in 0..10 {
        p.write_all(Client, id, b"tick");
        p.advance(Duration::from_secs(20));
        assert_eq!(p.read_available(Server, sid).0, b"tick");
    }
    assert_eq!(
        p.client.stream_ref(id).idle_timeout(),
        Some(Duration::from_secs(30))
    );
    p.client.stream(id).set_idle_timeout(None);
    p.server.stream(sid).set_idle_timeout(None);
    p.advance(Duration::from_secs(120));
    assert!(p.client.has_stream(id) && p.server.has_stream(sid));
    p.server
        .stream(sid)
        .set_idle_timeout(Some(Duration::from_secs(5)));
    p.advance(Duration::from_secs(1));
    assert!(p.server_events.contains(&Event::Reset(sid)));
}

#[test]
fn stats_add_up_to_what_was_transferred() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let mut p = Pair::new(Config::new(protocol));
        let a = p.client.open().unwrap();
        let b = p.client.open().unwrap();
        p.write_all(Client, a, &vec![1u8; 300_000]);
        p.write_all(Client, b, &vec![2u8; 12_345]);
        p.drive();
        let sa = p.accept(Server);
        let sb = p.accept(Server);
        let mut got = 0;
        while got < 300_000 {
            got += p.read_available(Server, sa).0.len();
            p.drive();
        }
        p.drive();
        let c = p.client.stats();
        let s = p.server.stats();
        assert_eq!(c.bytes_sent, 312_345, "{protocol:?}");
        assert_eq!(s.bytes_received, 312_345);
        assert_eq!(s.buffered_recv, 12_345);
        assert_eq!(c.frames_sent, s.frames_received);
        assert_eq!(s.frames_sent, c.frames_received);
        assert_eq!(c.streams, 2);
        let st = p.server.stream_ref(sb).stats().unwrap();
        assert_eq!((st.bytes_received, st.buffered_recv), (12_345, 12_345));
        assert_eq!(p.client.stream_ref(a).stats().unwrap().bytes_sent, 300_000);
        assert_eq!(st.recv_window.is_some(), protocol != Protocol::SmuxV1);
    }
}
