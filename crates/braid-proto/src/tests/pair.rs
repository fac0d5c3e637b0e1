//! `Pair`: a client and a server session joined by in-memory wires, with a virtual clock,
//! random delivery chunking and an optional per-step link capacity.

use crate::{Config, Event, Session, Side, StreamId};
use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// Which session of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Client,
    Server,
}

pub(crate) use Who::{Client, Server};

/// One direction of the connection: bytes on the wire, and the receiving driver's read
/// buffer (bytes delivered that the session has not consumed yet).
#[derive(Default)]
struct Wire {
    in_flight: BytesMut,
    /// With latency: sent bytes and when they arrive, not yet in `in_flight`.
    delayed: std::collections::VecDeque<(Instant, Bytes)>,
    read_buf: BytesMut,
    /// Blackholed: bytes are sent but never delivered.
    cut: bool,
}

pub(crate) struct Pair {
    pub(crate) client: Session,
    pub(crate) server: Session,
    pub(crate) now: Instant,
    pub(crate) rng: StdRng,
    to_server: Wire,
    to_client: Wire,
    /// Deliveries are split into random chunks of 1..=max_chunk bytes.
    pub(crate) max_chunk: usize,
    /// Bytes each side may transmit per step (None: as much as it wants).
    pub(crate) link_capacity: Option<usize>,
    /// One-way delay of each wire.
    pub(crate) latency: Duration,
    pub(crate) client_events: Vec<Event>,
    pub(crate) server_events: Vec<Event>,
}

impl Pair {
    pub(crate) fn new(config: Config) -> Pair {
        Pair::with_configs(config.clone(), config, 0x5eed)
    }

    pub(crate) fn with_configs(client: Config, server: Config, seed: u64) -> Pair {
        let now = Instant::now();
        Pair {
            client: Session::new(client, Side::Client, now),
            server: Session::new(server, Side::Server, now),
            now,
            rng: StdRng::seed_from_u64(seed),
            to_server: Wire::default(),
            to_client: Wire::default(),
            max_chunk: 4096,
            link_capacity: None,
            latency: Duration::ZERO,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    pub(crate) fn session(&mut self, who: Who) -> &mut Session {
        match who {
            Client => &mut self.client,
            Server => &mut self.server,
        }
    }

    pub(crate) fn events(&mut self, who: Who) -> &mut Vec<Event> {
        match who {
            Client => &mut self.client_events,
            Server => &mut self.server_events,
        }
    }

    /// Blackholes what `who` sends.
    pub(crate) fn cut_from(&mut self, who: Who) {
        match who {
            Client => self.to_server.cut = true,
            Server => self.to_client.cut = true,
        }
    }

    /// One round: each side transmits, each side receives in random chunks. Returns
    /// whether anything moved.
    pub(crate) fn step(&mut self) -> bool {
        let mut moved = false;
        for from in [Client, Server] {
            moved |= self.transmit(from);
        }
        for to in [Client, Server] {
            moved |= self.deliver(to);
        }
        for who in [Client, Server] {
            while let Some(ev) = self.session(who).poll_event() {
                self.events(who).push(ev);
            }
        }
        moved
    }

    fn transmit(&mut self, from: Who) -> bool {
        let now = self.now;
        let capacity = self.link_capacity;
        let (session, wire) = match from {
            Client => (&mut self.client, &mut self.to_server),
            Server => (&mut self.server, &mut self.to_client),
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut sent = 0;
        loop {
            let budget = capacity.map_or(64 * 1024, |c| c.saturating_sub(sent));
            if budget == 0 {
                break;
            }
            let n = session.poll_transmit(now, &mut chunks, budget);
            if n == 0 {
                break;
            }
            sent += n;
        }
        if !wire.cut {
            for c in chunks {
                wire.delayed.push_back((now + self.latency, c));
            }
        }
        sent > 0
    }

    fn deliver(&mut self, to: Who) -> bool {
        let now = self.now;
        let max_chunk = self.max_chunk;
        let (session, wire) = match to {
            Client => (&mut self.client, &mut self.to_client),
            Server => (&mut self.server, &mut self.to_server),
        };
        let mut moved = false;
        while wire.delayed.front().is_some_and(|(at, _)| *at <= now) {
            let (_, c) = wire.delayed.pop_front().expect("checked");
            wire.in_flight.extend_from_slice(&c);
        }
        loop {
            if !wire.in_flight.is_empty() {
                let k = self.rng.gen_range(1..=max_chunk).min(wire.in_flight.len());
                let chunk = wire.in_flight.split_to(k);
                wire.read_buf.extend_from_slice(&chunk);
                moved = true;
            }
            let before = wire.read_buf.len();
            let _ = session.handle_input(now, &mut wire.read_buf);
            moved |= wire.read_buf.len() != before;
            if wire.in_flight.is_empty() || !session.wants_read() {
                return moved;
            }
        }
    }

    /// Steps until nothing moves. Panics if that takes absurdly long (a livelock).
    pub(crate) fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// Moves the virtual clock forward by `d`, firing every timer due on the way, and
    /// drives the pair after each.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.drive(); // put what is due on the wires first
        loop {
            let arrivals =
                [&self.to_server, &self.to_client].map(|w| w.delayed.front().map(|(at, _)| *at));
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .chain(arrivals)
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.client.handle_timeout(now);
                    self.server.handle_timeout(now);
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    /// Writes all of `data`, driving the pair whenever the stream is blocked.
    pub(crate) fn write_all(&mut self, who: Who, id: StreamId, mut data: &[u8]) {
        while !data.is_empty() {
            match self.session(who).stream(id).write(data) {
                Ok(n) => data = &data[n..],
                Err(crate::WriteError::Blocked) => {
                    assert!(self.step(), "writer blocked and nothing moves");
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// Reads everything buffered on a stream now. Returns the bytes and whether end of
    /// stream was reached.
    pub(crate) fn read_available(&mut self, who: Who, id: StreamId) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match self.session(who).stream(id).read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(crate::ReadError::Blocked) => return (out, false),
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Accepts the next inbound stream on `who`, driving the pair until one comes.
    pub(crate) fn accept(&mut self, who: Who) -> StreamId {
        for _ in 0..1000 {
            if let Some(id) = self.session(who).accept() {
                return id;
            }
            self.step();
        }
        panic!("no stream to accept");
    }
}
