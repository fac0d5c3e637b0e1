//! Opening, accepting, ordered delivery, half-close and close.

use super::pair::{Client, Pair, Server};
use crate::{Config, ConnectionError, Event, OpenError, Protocol, ReadError, StreamId, WriteError};
use bytes::Bytes;
use rand::{Rng, RngCore};

fn all_protocols() -> [Config; 3] {
    [
        Config::new(Protocol::SmuxV1),
        Config::new(Protocol::SmuxV2),
        Config::new(Protocol::Yamux),
    ]
}

#[test]
fn ids_are_gos_and_both_sides_open() {
    for config in all_protocols() {
        let mut p = Pair::new(config);
        let c1 = p.client.open().unwrap();
        let c2 = p.client.open().unwrap();
        let s1 = p.server.open().unwrap();
        let s2 = p.server.open().unwrap();
        // Go smux adds 2 before the first use; yamux starts at 1.
        let first = if config_is_yamux(&p) { 1 } else { 3 };
        assert_eq!([c1.0, c2.0, s1.0, s2.0], [first, first + 2, 2, 4]);
        p.drive();
        assert!(p.server_events.contains(&Event::Incoming));
        assert!(p.client_events.contains(&Event::Incoming));
        assert_eq!(p.server.accept(), Some(c1));
        assert_eq!(p.server.accept(), Some(c2));
        assert_eq!(p.server.accept(), None);
        assert_eq!(p.client.accept(), Some(s1));
        assert_eq!(p.client.accept(), Some(s2));
        // Data both ways on a server-opened stream.
        p.write_all(Server, s1, b"from server");
        p.write_all(Client, s1, b"from client");
        p.drive();
        assert_eq!(p.read_available(Client, s1).0, b"from server");
        assert_eq!(p.read_available(Server, s1).0, b"from client");
    }
}

#[test]
fn incoming_is_raised_once_per_empty_to_nonempty_queue() {
    let mut p = Pair::new(Config::default());
    for _ in 0..3 {
        p.client.open().unwrap();
    }
    p.drive();
    let incoming = |evs: &[Event]| evs.iter().filter(|e| **e == Event::Incoming).count();
    assert_eq!(incoming(&p.server_events), 1);
    while p.server.accept().is_some() {}
    p.client.open().unwrap();
    p.drive();
    assert_eq!(incoming(&p.server_events), 2);
}

/// Many streams, random write sizes, random delivery chunks: each stream's bytes arrive
/// complete and in order.
#[test]
fn ordered_delivery_across_many_streams() {
    for config in all_protocols() {
        let mut p = Pair::new(config);
        p.max_chunk = 3000;
        let mut sent: Vec<(StreamId, Vec<u8>)> = Vec::new();
        for _ in 0..20 {
            let id = p.client.open().unwrap();
            let len = p.rng.gen_range(0..300_000);
            let mut data = vec![0u8; len];
            p.rng.fill_bytes(&mut data);
            sent.push((id, data));
        }
        let mut received = vec![Vec::new(); sent.len()];
        let mut offsets = vec![0usize; sent.len()];
        let mut accepted: Vec<Option<StreamId>> = vec![None; sent.len()];
        loop {
            // Interleave writes of random sizes with delivery and reads.
            let mut busy = false;
            for (i, (id, data)) in sent.iter().enumerate() {
                if offsets[i] < data.len() {
                    let k = p.rng.gen_range(1..=70_000).min(data.len() - offsets[i]);
                    match p
                        .client
                        .stream(*id)
                        .write(&data[offsets[i]..offsets[i] + k])
                    {
                        Ok(n) => offsets[i] += n,
                        Err(WriteError::Blocked) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if offsets[i] == data.len() {
                        p.client.stream(*id).close_write();
                    }
                    busy = true;
                } else if offsets[i] == 0 {
                    p.client.stream(*id).close_write();
                }
            }
            p.step();
            while let Some(id) = p.server.accept() {
                let i = sent.iter().position(|(s, _)| *s == id).unwrap();
                accepted[i] = Some(id);
            }
            let mut done = true;
            for i in 0..sent.len() {
                if let Some(id) = accepted[i] {
                    let (bytes, eof) = p.read_available(Server, id);
                    received[i].extend_from_slice(&bytes);
                    done &= eof;
                } else {
                    done = false;
                }
            }
            if done && !busy {
                break;
            }
        }
        for (i, (_, data)) in sent.iter().enumerate() {
            assert!(received[i] == *data, "stream {i} corrupted");
        }
    }
}

#[test]
fn half_close_then_read_the_reply() {
    for config in all_protocols() {
        let mut p = Pair::new(config);
        let id = p.client.open().unwrap();
        p.write_all(Client, id, b"request");
        p.client.stream(id).close_write();
        assert!(matches!(
            p.client.stream(id).write(b"x"),
            Err(WriteError::Closed(_))
        ));
        p.drive();
        let sid = p.accept(Server);
        assert_eq!(p.read_available(Server, sid), (b"request".to_vec(), true));
        assert!(p.server_events.contains(&Event::Finished(sid)));
        // The server writes after the client's FIN: half-close keeps that direction.
        p.write_all(Server, sid, b"reply");
        p.server.stream(sid).close_write();
        p.drive();
        assert_eq!(p.read_available(Client, id), (b"reply".to_vec(), true));
        // Both sides closed both ways; released handles forget the stream everywhere.
        assert_eq!(p.client.num_streams(), 1);
        p.client.stream(id).close();
        p.server.stream(sid).close();
        p.drive();
        assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
    }
}

#[test]
fn half_close_in_the_other_order() {
    // The accepting side finishes first, the opener keeps writing.
    for config in all_protocols() {
        let mut p = Pair::new(config);
        let id = p.client.open().unwrap();
        p.drive();
        let sid = p.accept(Server);
        p.write_all(Server, sid, b"banner");
        p.server.stream(sid).close_write();
        p.drive();
        assert_eq!(p.read_available(Client, id), (b"banner".to_vec(), true));
        p.write_all(Client, id, b"still talking");
        p.drive();
        assert_eq!(
            p.read_available(Server, sid),
            (b"still talking".to_vec(), false)
        );
        p.client.stream(id).close_write();
        p.drive();
        assert_eq!(p.read_available(Server, sid), (Vec::new(), true));
    }
}

#[test]
fn fin_follows_the_streams_own_data_and_is_sent_once() {
    let mut config = Config::new(Protocol::SmuxV2);
    config.max_frame_size = 1000;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    p.write_all(Client, id, &vec![7u8; 10_000]);
    p.client.stream(id).close_write();
    p.client.stream(id).close_write();
    p.client.stream(id).close();
    let mut chunks = Vec::new();
    while p.client.poll_transmit(p.now, &mut chunks, 1 << 20) > 0 {}
    let wire: Vec<u8> = chunks.concat();
    // Parse: SYN, 10 PSH, one FIN last.
    let mut cmds = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = u16::from_le_bytes([wire[at + 2], wire[at + 3]]) as usize;
        cmds.push(wire[at + 1]);
        at += 8 + len;
    }
    let mut want = vec![0u8];
    want.extend(std::iter::repeat_n(2u8, 10));
    want.push(1);
    assert_eq!(cmds, want);
    assert_eq!(
        p.client.num_streams(),
        0,
        "released and FIN sent: forgotten"
    );
}

#[test]
fn close_discards_unread_data_and_returns_budget() {
    let mut config = Config::default();
    config.max_receive_buffer = 100_000;
    config.max_stream_buffer = 100_000;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    p.write_all(Client, id, &[1u8; 60_000]);
    p.drive();
    let sid = p.accept(Server);
    assert_eq!(p.server.budget_tokens(), 40_000);
    p.server.stream(sid).close();
    assert_eq!(p.server.budget_tokens(), 100_000);
    assert_eq!(
        p.server.stream(sid).read(&mut [0u8; 4]),
        Err(ReadError::UnknownStream(sid))
    );
    // Data the peer sends after our close is dropped, not charged.
    p.write_all(Client, id, &[2u8; 30_000]);
    p.drive();
    assert_eq!(p.server.budget_tokens(), 100_000);
    assert_eq!(p.server.num_streams(), 0);
    // The client saw our FIN and can still close its side cleanly.
    assert!(p.client_events.contains(&Event::Finished(id)));
    p.client.stream(id).close();
    p.drive();
    assert_eq!(p.client.num_streams(), 0);
}

#[test]
fn unknown_stream_data_and_duplicate_syn_are_ignored() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"one");
    p.drive();
    let sid = p.accept(Server);
    // Hand-made frames: PSH for stream 99, FIN for stream 77, a duplicate SYN for `id`.
    let codec = crate::frame::smux::Codec::new(crate::frame::smux::Version::V1);
    let mut raw = bytes::BytesMut::new();
    use crate::frame::smux::Frame;
    codec.encode(
        &Frame::Psh {
            stream_id: 99,
            data: bytes::Bytes::from_static(b"lost"),
        },
        &mut raw,
    );
    codec.encode(&Frame::Fin { stream_id: 77 }, &mut raw);
    codec.encode(
        &Frame::Syn {
            stream_id: id.0,
            name: bytes::Bytes::new(),
        },
        &mut raw,
    );
    p.server.handle_input(p.now, &mut raw).unwrap();
    assert!(raw.is_empty());
    assert_eq!(p.server.accept(), None);
    assert_eq!(p.server.num_streams(), 1);
    assert_eq!(p.read_available(Server, sid), (b"one".to_vec(), false));
}

#[test]
fn id_exhaustion_fails_opens_but_keeps_the_session() {
    // Go: the id after the last one wraps to 0 or 1, and from then on every open fails.
    for (who, last) in [(Client, u32::MAX), (Server, u32::MAX - 1)] {
        let mut p = Pair::new(Config::default());
        let live = p.session(who).open().unwrap();
        p.session(who).set_next_id(last);
        let final_id = p.session(who).open().unwrap();
        assert_eq!(final_id.0, last);
        assert_eq!(p.session(who).open(), Err(OpenError::IdsExhausted));
        assert_eq!(p.session(who).open(), Err(OpenError::IdsExhausted));
        // Existing streams still work.
        p.write_all(who, live, b"ok");
        p.write_all(who, final_id, b"last");
        p.drive();
        let other = if who == Client { Server } else { Client };
        let a = p.accept(other);
        let b = p.accept(other);
        assert_eq!((a, b), (live, final_id));
        assert_eq!(p.read_available(other, b).0, b"last");
        assert!(!p.session(who).is_closed());
    }
}

#[test]
fn protocol_violation_ends_the_session_with_a_typed_error() {
    let mut p = Pair::new(Config::new(Protocol::SmuxV1));
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"kept");
    p.drive();
    let sid = p.accept(Server);
    // An UPD on a v1 session.
    let mut raw = bytes::BytesMut::from(&[1u8, 4, 8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    let err = p.server.handle_input(p.now, &mut raw).unwrap_err();
    let want: ConnectionError = crate::frame::smux::FrameError::UpdOnV1 { stream_id: 3 }.into();
    assert_eq!(err, want);
    let events: Vec<Event> = std::iter::from_fn(|| p.server.poll_event()).collect();
    assert_eq!(
        events,
        vec![Event::StreamEnded(sid), Event::Closed(want.clone())]
    );
    assert_eq!(
        p.server.stream_ref(sid).end(),
        Some(crate::StreamEnd::Session(want.clone()))
    );
    // Data received before the violation is still readable, then the error.
    let mut buf = [0u8; 16];
    assert_eq!(p.server.stream(sid).read(&mut buf), Ok(4));
    assert_eq!(
        p.server.stream(sid).read(&mut buf),
        Err(ReadError::SessionClosed(want.clone()))
    );
    assert_eq!(
        p.server.stream(sid).write(b"x"),
        Err(WriteError::SessionClosed(want.clone()))
    );
    assert_eq!(p.server.open(), Err(OpenError::SessionClosed(want)));
    assert!(!p.server.wants_read());
}

fn config_is_yamux(p: &Pair) -> bool {
    p.client.config().protocol == Protocol::Yamux
}

#[test]
fn graceful_session_close_flushes_data_and_fins() {
    for protocol in [Protocol::SmuxV2, Protocol::Yamux] {
        graceful_close(protocol);
    }
}

fn graceful_close(protocol: Protocol) {
    let mut config = Config::new(protocol);
    config.max_frame_size = 4096;
    let mut p = Pair::new(config);
    let a = p.client.open().unwrap();
    let _b = p.client.open().unwrap();
    p.drive();
    let sa = p.accept(Server);
    let sb = p.accept(Server);
    p.write_all(Client, a, &[9u8; 100_000]);
    p.client.close(p.now);
    assert_eq!(p.client.open(), Err(OpenError::Closing));
    assert!(!p.client.is_closed(), "data still to flush");
    p.drive();
    assert_eq!(
        p.client.close_reason(),
        Some(&ConnectionError::LocallyClosed)
    );
    assert!(p
        .client_events
        .contains(&Event::Closed(ConnectionError::LocallyClosed)));
    let (data, eof) = p.read_available(Server, sa);
    assert_eq!((data.len(), eof), (100_000, true));
    assert_eq!(p.read_available(Server, sb), (Vec::new(), true));
}

#[test]
fn session_close_gives_up_after_close_timeout() {
    // The peer never reads, so v2 credit never comes back and the flush cannot finish.
    let mut p = Pair::new(Config::new(Protocol::SmuxV2));
    let id = p.client.open().unwrap();
    p.write_all(Client, id, &vec![1u8; 200_000]);
    p.drive();
    p.write_all(Client, id, &vec![1u8; 200_000]);
    p.client.close(p.now);
    p.drive();
    assert!(!p.client.is_closed());
    p.advance(p.client.config().close_timeout);
    assert_eq!(
        p.client.close_reason(),
        Some(&ConnectionError::LocallyClosed)
    );
}

#[test]
fn read_chunk_hands_out_received_bytes() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"abcdef");
    p.client.stream(id).close_write();
    p.drive();
    let sid = p.accept(Server);
    assert_eq!(
        p.server.stream(sid).read_chunk(4).unwrap().unwrap(),
        &b"abcd"[..]
    );
    assert_eq!(
        p.server.stream(sid).read_chunk(100).unwrap().unwrap(),
        &b"ef"[..]
    );
    assert_eq!(p.server.stream(sid).read_chunk(100), Ok(None));
}

#[test]
fn read_chunks_takes_what_is_buffered_up_to_the_slots() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open().unwrap();
    // Payloads this large are kept as they arrived (smaller ones are copied together).
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|i| vec![i; crate::frame::COPY_BELOW])
        .collect();
    for part in &parts {
        p.write_all(Client, id, part);
        p.drive();
    }
    p.client.stream(id).close_write();
    p.drive();
    let sid = p.accept(Server);
    let mut two = vec![Bytes::new(); 2];
    assert_eq!(p.server.stream(sid).read_chunks(&mut []), Ok(Some(0)));
    assert_eq!(p.server.stream(sid).read_chunks(&mut two), Ok(Some(2)));
    let mut got = two.concat();
    assert_eq!(p.server.stream(sid).read_chunks(&mut two), Ok(Some(1)));
    got.extend_from_slice(&two[0]);
    assert_eq!(got, parts.concat());
    assert_eq!(p.server.stream(sid).read_chunks(&mut two), Ok(None));
}

#[test]
fn read_chunks_blocks_when_nothing_is_buffered() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open().unwrap();
    p.write_all(Client, id, b"x");
    p.drive();
    let sid = p.accept(Server);
    let mut bufs = vec![Bytes::new(); 4];
    assert_eq!(p.server.stream(sid).read_chunks(&mut bufs), Ok(Some(1)));
    assert_eq!(
        p.server.stream(sid).read_chunks(&mut bufs),
        Err(ReadError::Blocked)
    );
}

#[test]
fn readable_and_writable_events_follow_interest() {
    let mut config = Config::default();
    config.stream_send_buffer = 1000;
    let mut p = Pair::new(config);
    let id = p.client.open().unwrap();
    assert_eq!(p.client.stream(id).write(&[0u8; 1500]), Ok(1000));
    assert_eq!(
        p.client.stream(id).write(&[0u8; 1]),
        Err(WriteError::Blocked)
    );
    p.drive();
    assert!(p.client_events.contains(&Event::Writable(id)));
    let sid = p.accept(Server);
    assert_eq!(
        p.server_events
            .iter()
            .filter(|e| **e == Event::Readable(sid))
            .count(),
        1
    );
    let _ = p.read_available(Server, sid);
    p.write_all(Client, id, b"more");
    p.drive();
    assert_eq!(
        p.server_events
            .iter()
            .filter(|e| **e == Event::Readable(sid))
            .count(),
        2
    );
}

#[test]
fn session_send_buffer_bounds_all_streams_together() {
    let mut config = Config::default();
    config.stream_send_buffer = 1000;
    config.max_send_buffer = 2500;
    let mut p = Pair::new(config);
    let ids: Vec<StreamId> = (0..4).map(|_| p.client.open().unwrap()).collect();
    let taken: Vec<_> = ids
        .iter()
        .map(|id| p.client.stream(*id).write(&[0u8; 1000]))
        .collect();
    assert_eq!(
        taken,
        vec![Ok(1000), Ok(1000), Ok(500), Err(WriteError::Blocked)]
    );
    assert_eq!(p.client.buffered_send(), 2500);
    p.drive();
    assert_eq!(p.client.buffered_send(), 0);
    assert!(p.client_events.contains(&Event::Writable(ids[2])));
    assert!(p.client_events.contains(&Event::Writable(ids[3])));
}

/// A burst of opens leaves as SYN, data, FIN per stream, in open order (as Go sends it),
/// not as all SYNs first: a peer whose acceptor reads each stream's first bytes before
/// accepting the next must not find them behind a full accept backlog.
#[test]
fn burst_of_opens_keeps_each_streams_first_data_with_its_syn() {
    let mut p = Pair::new(Config::default());
    let mut ids = Vec::new();
    for i in 0..2000u32 {
        let id = p.client.open().unwrap();
        p.client.stream(id).write(&[i as u8]).unwrap();
        p.client.stream(id).close();
        ids.push(id);
    }
    let mut chunks = Vec::new();
    while p.client.poll_transmit(p.now, &mut chunks, 1 << 20) > 0 {}
    let wire: Vec<u8> = chunks.concat();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = u16::from_le_bytes([wire[at + 2], wire[at + 3]]) as usize;
        let sid = u32::from_le_bytes(wire[at + 4..at + 8].try_into().unwrap());
        frames.push((wire[at + 1], sid));
        at += 8 + len;
    }
    let want: Vec<(u8, u32)> = ids
        .iter()
        .flat_map(|id| [(0, id.0), (2, id.0), (1, id.0)])
        .collect();
    assert_eq!(frames, want);
    // And a one-at-a-time acceptor gets through all 2000 with a backlog of 1024.
    let mut wire = bytes::BytesMut::from(&wire[..]);
    for i in 0..2000u32 {
        let _ = p.server.handle_input(p.now, &mut wire);
        let id = p.server.accept().expect("stream waiting");
        let mut b = [0u8; 1];
        assert_eq!(p.server.stream(id).read(&mut b), Ok(1));
        assert_eq!(b[0], i as u8);
        p.server.stream(id).close();
    }
}

#[test]
fn auto_server_speaks_whatever_the_client_speaks() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let mut p = Pair::with_configs(Config::new(protocol), Config::new(Protocol::Auto), 7);
        // Before the client speaks, the server cannot know how to open a stream.
        assert_eq!(p.server.open(), Err(OpenError::Blocked));
        let id = p.client.open().unwrap();
        p.write_all(Client, id, b"which protocol?");
        p.drive();
        assert_eq!(p.server.config().protocol, protocol);
        assert_eq!(*p.server.config(), Config::new(protocol).detected(protocol));
        assert!(p.server_events.contains(&Event::Openable));
        let sid = p.accept(Server);
        assert_eq!(p.read_available(Server, sid).0, b"which protocol?");
        // Now the server opens streams of the detected protocol.
        let back = p.server.open().unwrap();
        p.write_all(Server, back, b"this one");
        p.drive();
        let cid = p.accept(Client);
        assert_eq!(p.read_available(Client, cid).0, b"this one");
    }
}

#[test]
fn auto_server_refuses_what_is_no_protocol() {
    let now = std::time::Instant::now();
    let mut s = crate::Session::new(Config::new(Protocol::Auto), crate::Side::Server, now);
    let mut junk = bytes::BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert_eq!(
        s.handle_input(now, &mut junk),
        Err(crate::ProtocolViolation::UnknownProtocol(b'G').into())
    );
    assert_eq!(
        Config::new(Protocol::Auto)
            .validate_for(crate::Side::Client)
            .unwrap_err()
            .field,
        crate::ConfigField::Protocol
    );
}

/// A stream whose written data has all been framed gives its send buffer back: the
/// session's send budget bounds buffered bytes, and drained buffers kept per stream made
/// 1000 writing streams hold 280 MiB.
#[test]
fn drained_send_buffers_are_given_back() {
    for config in all_protocols() {
        let mut p = Pair::new(config);
        let id = p.client.open().unwrap();
        p.write_all(Client, id, &vec![5u8; 200 * 1024]);
        assert!(p.client.send_capacity(id).unwrap() > 0);
        let sid = p.accept(Server);
        let mut got = 0;
        for _ in 0..10_000 {
            got += p.read_available(Server, sid).0.len();
            if got == 200 * 1024 {
                break;
            }
            p.step();
        }
        assert_eq!(got, 200 * 1024);
        assert_eq!(p.client.stream_ref(id).stats().unwrap().buffered_send, 0);
        // A small write now takes a small buffer, not the drained 200 KiB one back.
        p.write_all(Client, id, b"tail");
        let capacity = p.client.send_capacity(id).unwrap();
        assert!(capacity < 64 * 1024, "{capacity} bytes kept");
    }
}

/// `write_chunk` frames the application's `Bytes` as they are: the payloads sent point
/// into the chunk, and the peer reads exactly the bytes written, in order, mixed with
/// copied writes.
#[test]
fn write_chunk_frames_the_chunk_without_copying() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let now = std::time::Instant::now();
        let mut client = crate::Session::new(Config::new(protocol), crate::Side::Client, now);
        let mut server = crate::Session::new(Config::new(protocol), crate::Side::Server, now);
        let id = client.open().unwrap();
        let chunk = bytes::Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(client.stream(id).write(b"head").unwrap(), 4);
        assert_eq!(
            client.stream(id).write_chunk(chunk.clone()).unwrap(),
            100_000
        );
        assert_eq!(
            client
                .stream(id)
                .write_chunk(bytes::Bytes::from_static(b"tail"))
                .unwrap(),
            4
        );
        let mut out: Vec<bytes::Bytes> = Vec::new();
        client.poll_transmit(now, &mut out, 1 << 20);
        let range = chunk.as_ptr() as usize..chunk.as_ptr() as usize + chunk.len();
        let shared: usize = out
            .iter()
            .filter(|c| range.contains(&(c.as_ptr() as usize)))
            .map(|c| c.len())
            .sum();
        assert_eq!(shared, 100_000, "{protocol:?}: the chunk went out uncopied");
        let mut wire = bytes::BytesMut::new();
        for c in out {
            wire.extend_from_slice(&c);
        }
        server.handle_input(now, &mut wire).unwrap();
        let sid = server.accept().unwrap();
        let mut got = vec![0u8; 200_000];
        let mut n = 0;
        while let Ok(k) = server.stream(sid).read(&mut got[n..]) {
            if k == 0 {
                break;
            }
            n += k;
        }
        let mut want = b"head".to_vec();
        want.extend_from_slice(&chunk);
        want.extend_from_slice(b"tail");
        assert_eq!(&got[..n], &want[..], "{protocol:?}");
    }
}

#[test]
fn the_view_of_an_unknown_or_closed_stream_fails_as_unknown() {
    for config in all_protocols() {
        let mut p = Pair::new(config);
        let id = p.client.open().unwrap();
        let unknown = StreamId(id.0 + 2);
        let mut s = p.client.stream(unknown);
        assert_eq!(s.write(b"x"), Err(WriteError::UnknownStream(unknown)));
        assert_eq!(s.read(&mut [0; 4]), Err(ReadError::UnknownStream(unknown)));
        assert_eq!(s.read_chunk(4), Err(ReadError::UnknownStream(unknown)));
        s.close_write();
        s.close();
        s.reset();
        s.set_priority(9);
        assert_eq!((s.priority(), s.end(), s.stats()), (None, None, None));
        assert_eq!(p.client.stream_ref(unknown).name(), None);

        // Closed by the application: its id is unknown to reads and writes at once.
        p.client.stream(id).set_priority(7);
        assert_eq!(p.client.stream_ref(id).priority(), Some(7));
        p.client.stream(id).close();
        assert_eq!(
            p.client.stream(id).write(b"x"),
            Err(WriteError::UnknownStream(id))
        );
        assert_eq!(
            p.client.stream(id).read(&mut [0; 4]),
            Err(ReadError::UnknownStream(id))
        );
    }
}
