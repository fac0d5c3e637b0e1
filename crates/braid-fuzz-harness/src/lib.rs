//! The checks behind braid's fuzz targets.
//!
//! Each `fuzz/fuzz_targets/*.rs` is one line calling a function here (through the fuzz
//! crate's re-export). This crate's own tests (`tests/model.rs`) replay the committed
//! corpus and run the operation model through exactly this code, on stable Rust,
//! without libFuzzer.
//!
//! - [`smux_decode`], [`yamux_decode`]: the codecs on arbitrary bytes. Every frame
//!   decoded re-encodes to the bytes it came from; an error consumes nothing; decoding
//!   the same bytes in chunks gives the same frames and the same error.
//! - [`session_input`]: one session fed arbitrary bytes by a driver that behaves like
//!   the tokio one (stops feeding while the session does not want to read). No panic,
//!   a typed end, bounded buffers, and everything the session sends decodes.
//! - [`session_ops`]: a client and a server joined by in-memory wires, driven by a
//!   sequence of [`Op`]s; checks in-order delivery of exactly what was written, bounded
//!   buffers, and that every stream is forgotten once both sides closed it.
//!
//! After the operations, everything is closed and time runs past `stream_close_timeout`,
//! so that streams which cannot finish (smux v2 data waiting for credit from a peer that
//! forgot the stream) are reset; then nothing may be left.

#![forbid(unsafe_code)]

use braid_proto::frame::{smux, yamux};
use braid_proto::{
    Config, ConnectionError, Event, OpenError, Protocol, ReadError, Session, Side, StreamId,
    WriteError,
};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------

/// First byte: bit 0 picks the version (V1/V2), bit 1 gmux names, bits 2.. the chunk size
/// of the incremental pass. The rest is decoded.
pub fn smux_decode(data: &[u8]) {
    let Some((&ctrl, wire)) = data.split_first() else {
        return;
    };
    let version = if ctrl & 1 == 0 {
        smux::Version::V1
    } else {
        smux::Version::V2
    };
    let codec = smux::Codec {
        version,
        syn_names: ctrl & 2 != 0,
    };
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    let error = loop {
        let before = buf.len();
        let start = wire.len() - before;
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                assert_eq!(used, frame.wire_len(), "{frame:?}");
                let mut again = Vec::new();
                codec.encode(&frame, &mut again);
                assert_eq!(&again[..], &wire[start..start + used], "{frame:?}");
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                if before >= smux::HEADER_LEN {
                    let length = u16::from_le_bytes([buf[2], buf[3]]) as usize;
                    assert!(before < smux::HEADER_LEN + length, "a whole frame was left");
                }
                break None;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                assert!(before >= smux::HEADER_LEN);
                assert!(e.to_string().starts_with("peer sent"), "{e}");
                break Some(e);
            }
        }
    };
    let step = 1 + (ctrl >> 2) as usize;
    let (chunked, chunked_error) = decode_in_chunks(wire, step, |b| codec.decode(b));
    assert_eq!(chunked, frames);
    assert_eq!(chunked_error, error);
}

/// First byte: bits 0-2 pick the codec's largest data frame, bits 3.. the chunk size of
/// the incremental pass. The rest is decoded.
pub fn yamux_decode(data: &[u8]) {
    let Some((&ctrl, wire)) = data.split_first() else {
        return;
    };
    const LIMITS: [u32; 8] = [0, 1, 12, 1000, 65536, 256 * 1024, 1 << 20, 16 << 20];
    let codec = yamux::Codec::new(LIMITS[(ctrl & 7) as usize]);
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    let error = loop {
        let before = buf.len();
        let start = wire.len() - before;
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                let input = &wire[start..start + used];
                let mut again = Vec::new();
                codec.encode(&frame, &mut again);
                match frame {
                    yamux::Frame::Data { ref data, .. } => {
                        assert_eq!(used, yamux::HEADER_LEN + data.len());
                        assert!(data.len() <= codec.max_data_len as usize);
                        assert_eq!(&again[..], input);
                    }
                    yamux::Frame::WindowUpdate { .. } => assert_eq!(&again[..], input),
                    // Ping keeps its flags, GoAway neither flags nor stream id.
                    yamux::Frame::Ping { .. } => {
                        assert_eq!(again[..4], input[..4]);
                        assert_eq!(again[8..], input[8..]);
                    }
                    yamux::Frame::GoAway { .. } => {
                        assert_eq!(again[..2], input[..2]);
                        assert_eq!(again[8..], input[8..]);
                    }
                }
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                if before >= yamux::HEADER_LEN {
                    assert_eq!(buf[1], 0, "only data frames can be incomplete");
                    let length = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    assert!(length <= codec.max_data_len);
                    assert!(before < yamux::HEADER_LEN + length as usize);
                }
                break None;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                assert!(before >= yamux::HEADER_LEN);
                assert!(e.to_string().starts_with("peer sent"), "{e}");
                break Some(e);
            }
        }
    };
    let step = 1 + (ctrl >> 3) as usize;
    let (chunked, chunked_error) = decode_in_chunks(wire, step, |b| codec.decode(b));
    assert_eq!(chunked, frames);
    assert_eq!(chunked_error, error);
}

fn decode_in_chunks<F, E>(
    wire: &[u8],
    step: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<F>, E>,
) -> (Vec<F>, Option<E>) {
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in wire.chunks(step) {
        input.extend_from_slice(chunk);
        loop {
            match decode(&mut input) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

// ---------------------------------------------------------------------------------------
// One session, arbitrary input
// ---------------------------------------------------------------------------------------

/// The receive budget of the sessions [`session_input`] builds.
pub const INPUT_BUDGET: usize = 64 * 1024;

/// The config [`session_input`] uses for a control byte: bits 0-2 protocol and side
/// (smux v1/v2 and yamux, client and server, Auto server, smux v2 server with names).
pub fn input_setup(ctrl: u8) -> (Config, Side) {
    let (protocol, side, names) = match ctrl & 7 {
        0 => (Protocol::SmuxV1, Side::Client, false),
        1 => (Protocol::SmuxV1, Side::Server, false),
        2 => (Protocol::SmuxV2, Side::Client, false),
        3 => (Protocol::SmuxV2, Side::Server, false),
        4 => (Protocol::Yamux, Side::Client, false),
        5 => (Protocol::Yamux, Side::Server, false),
        6 => (Protocol::Auto, Side::Server, false),
        _ => (Protocol::SmuxV2, Side::Server, true),
    };
    let mut config = Config::new(protocol);
    config.max_receive_buffer = INPUT_BUDGET;
    if protocol != Protocol::Yamux {
        config.max_stream_buffer = 16 * 1024;
    }
    config.accept_backlog = 8;
    config.stream_names = names;
    config.validate_for(side).expect("valid fuzz config");
    (config, side)
}

/// Largest frame payload the session with `config` accepts whole (what the budget may be
/// exceeded by).
pub fn largest_frame(config: &Config) -> usize {
    match config.protocol {
        Protocol::Yamux if config.window_auto_tuning => config.auto_window_max,
        Protocol::Yamux => config.max_stream_buffer,
        _ => smux::MAX_PAYLOAD,
    }
}

/// First byte: bits 0-2 the setup ([`input_setup`]), bit 3: the application accepts and
/// reads (otherwise it never does, and feeding stops once the session pauses reading),
/// bits 4-7: chunking. The rest is the peer's bytes.
pub fn session_input(data: &[u8]) {
    let Some((&ctrl, wire)) = data.split_first() else {
        return;
    };
    let (config, side) = input_setup(ctrl);
    let app_reads = ctrl & 8 != 0;
    let max_chunk = [1usize, 3, 8, 13, 64, 500, 4096, 1 << 20][(ctrl >> 5) as usize];
    let mut rng = Lcg(u64::from(ctrl) * 0x9E37_79B9 + wire.len() as u64);
    let start = Instant::now();
    let mut now = start;
    let mut s = Session::new(config, side, now);
    let mut out = OutputCheck::default();
    let mut rbuf = BytesMut::new();
    let mut held: Vec<StreamId> = Vec::new();
    let mut pos = 0;
    let mut buf = vec![0u8; 70_000];
    loop {
        if pos < wire.len() {
            let k = (1 + rng.below(max_chunk)).min(wire.len() - pos);
            rbuf.extend_from_slice(&wire[pos..pos + k]);
            pos += k;
        }
        let before = s.is_closed();
        match s.handle_input(now, &mut rbuf) {
            Ok(()) => assert!(!s.is_closed()),
            Err(e) => {
                assert!(s.is_closed());
                assert_eq!(Some(&e), s.close_reason());
                if !before {
                    assert!(
                        matches!(
                            e,
                            ConnectionError::Protocol(_)
                                | ConnectionError::GoAway(_)
                                | ConnectionError::KeepAliveTimeout(_)
                        ),
                        "input ended the session with {e:?}"
                    );
                }
            }
        }
        check_budget(&s);
        // The application.
        while let Some(ev) = s.poll_event() {
            if let Event::Closed(reason) = ev {
                assert_eq!(Some(&reason), s.close_reason());
            }
        }
        if app_reads {
            while let Some(id) = s.accept() {
                held.push(id);
            }
            held.retain(|&id| {
                let name = s.stream_ref(id).name().map(<[u8]>::len).unwrap_or(0);
                assert!(name <= smux::MAX_PAYLOAD);
                loop {
                    let max = 1 + rng.below(buf.len() - 1);
                    match s.stream(id).read(&mut buf[..max]) {
                        Ok(0) => {
                            // End of stream: let it go, as a server would.
                            s.stream(id).close();
                            return false;
                        }
                        Ok(_) => continue,
                        Err(ReadError::Blocked) => return true,
                        Err(ReadError::Reset(..)) | Err(ReadError::SessionClosed(_)) => {
                            s.stream(id).close();
                            return false;
                        }
                        Err(e) => panic!("read of a held stream failed with {e:?}"),
                    }
                }
            });
            check_budget(&s);
        }
        out.take(&mut s, now);
        // Time moves on a little between reads from the socket.
        if rng.below(4) == 0 {
            now += Duration::from_millis(rng.below(3000) as u64);
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        // Like the driver: no more input while the session does not want it.
        if s.is_closed() || pos >= wire.len() || (!s.wants_read() && !app_reads) {
            break;
        }
    }
    // Streams never accepted are taken now, so that they are read and released below.
    while let Some(id) = s.accept() {
        held.push(id);
    }
    // Whatever is left: timers far ahead, then the connection ends.
    for h in [1, 60, 3600] {
        s.handle_timeout(now + Duration::from_secs(h));
        out.take(&mut s, now);
        check_budget(&s);
    }
    s.handle_transport_closed(now, ConnectionError::TransportClosed);
    assert!(s.is_closed());
    out.take(&mut s, now);
    for id in held {
        loop {
            match s.stream(id).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(ReadError::Reset(..)) | Err(ReadError::SessionClosed(_)) => break,
                Err(e) => panic!("read after the end failed with {e:?}"),
            }
        }
        s.stream(id).close();
    }
    assert_eq!(s.num_streams(), 0);
    assert_eq!(
        s.buffered_recv(),
        0,
        "data left after every stream was closed"
    );
}

fn check_budget(s: &Session) {
    let config = s.config();
    let bound = config.max_receive_buffer + largest_frame(config);
    assert!(
        s.buffered_recv() <= bound,
        "buffered_recv {} > {bound}",
        s.buffered_recv()
    );
    assert!(s.buffered_send() <= config.max_send_buffer);
}

/// Decodes everything a session sends with its own protocol's codec: braid must never
/// send what it would itself reject.
#[derive(Default)]
struct OutputCheck {
    wire: BytesMut,
}

impl OutputCheck {
    fn take(&mut self, s: &mut Session, now: Instant) {
        let mut chunks = Vec::new();
        for round in 0.. {
            assert!(round < 10_000, "poll_transmit never runs dry");
            let n = s.poll_transmit(now, &mut chunks, 64 * 1024);
            if n == 0 {
                break;
            }
        }
        for c in chunks {
            self.wire.extend_from_slice(&c);
        }
        let config = s.config();
        let max_frame = config.max_frame_size;
        match config.protocol {
            Protocol::SmuxV1 | Protocol::SmuxV2 => {
                let codec = smux::Codec {
                    version: config.protocol.smux_version().expect("smux"),
                    syn_names: config.stream_names,
                };
                while let Some(f) = codec
                    .decode(&mut self.wire)
                    .expect("braid sent a bad frame")
                {
                    if let smux::Frame::Psh { data, .. } = f {
                        assert!(!data.is_empty() && data.len() <= max_frame);
                    }
                }
            }
            Protocol::Yamux => {
                let codec = yamux::Codec::new(u32::MAX);
                while let Some(f) = codec
                    .decode(&mut self.wire)
                    .expect("braid sent a bad frame")
                {
                    if let yamux::Frame::Data { data, .. } = f {
                        assert!(data.len() <= max_frame);
                    }
                }
            }
            // Nothing is sent before the protocol is known.
            _ => {}
        }
        assert!(self.wire.is_empty(), "poll_transmit left half a frame");
    }
}

/// A small deterministic generator (no dependency, the same on every platform).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

// ---------------------------------------------------------------------------------------
// Two sessions, operation sequences
// ---------------------------------------------------------------------------------------

/// Which session of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The dialing side.
    Client,
    /// The accepting side.
    Server,
}

impl Who {
    /// The other session.
    pub fn other(self) -> Who {
        match self {
            Who::Client => Who::Server,
            Who::Server => Who::Client,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The read call an [`Op::Read`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadHow {
    /// `read` into a buffer.
    Copy,
    /// `read_chunk`.
    Chunk,
    /// `read_chunks`.
    Chunks,
}

/// One step of an operation sequence. `stream` picks one of the streams the side holds
/// (modulo their number); lengths are bounded by [`Op::bounded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Opens a stream (with a gmux name of `name_len` bytes when names are on).
    Open {
        /// Who opens.
        who: Who,
        /// Name length, used only with `stream_names`.
        name_len: u16,
    },
    /// Accepts every waiting stream.
    Accept {
        /// Who accepts.
        who: Who,
    },
    /// Writes `len` bytes of the stream's pattern.
    Write {
        /// Who writes.
        who: Who,
        /// Which held stream.
        stream: u8,
        /// How many bytes to offer.
        len: u32,
    },
    /// Reads up to `max` bytes (`read_chunks`: up to 1 + `max` % 4 chunks, any size).
    Read {
        /// Who reads.
        who: Who,
        /// Which held stream.
        stream: u8,
        /// Buffer size.
        max: u32,
        /// Which read call.
        how: ReadHow,
    },
    /// Half-close.
    CloseWrite {
        /// Who closes.
        who: Who,
        /// Which held stream.
        stream: u8,
    },
    /// Full close: the application lets go of the stream.
    CloseStream {
        /// Who closes.
        who: Who,
        /// Which held stream.
        stream: u8,
    },
    /// Aborts the stream.
    Reset {
        /// Who resets.
        who: Who,
        /// Which held stream.
        stream: u8,
    },
    /// Takes up to `max` bytes of frames from the session onto its wire.
    Transmit {
        /// Who sends.
        who: Who,
        /// Byte budget of this poll.
        max: u32,
    },
    /// Hands up to `max` bytes of its wire to the session.
    Deliver {
        /// Who receives.
        who: Who,
        /// Byte budget.
        max: u32,
    },
    /// Moves the clock forward, firing every timer in order with the wires driven.
    Advance {
        /// Milliseconds, at most 60 s.
        millis: u32,
    },
    /// Moves everything until nothing moves.
    Drive,
}

/// Largest write or read of one op.
pub const MAX_IO: u32 = 64 * 1024;
/// Largest time jump of one op.
pub const MAX_JUMP_MS: u32 = 60_000;
/// Most ops taken from one fuzz input.
pub const MAX_OPS: usize = 400;

impl Op {
    /// The op with its sizes clamped to the harness's bounds.
    pub fn bounded(self) -> Op {
        match self {
            Op::Write { who, stream, len } => Op::Write {
                who,
                stream,
                len: len % (MAX_IO + 1),
            },
            Op::Read {
                who,
                stream,
                max,
                how,
            } => Op::Read {
                who,
                stream,
                max: 1 + max % MAX_IO,
                how,
            },
            Op::Advance { millis } => Op::Advance {
                millis: millis % (MAX_JUMP_MS + 1),
            },
            Op::Open { who, name_len } => Op::Open {
                who,
                name_len: name_len % 2048,
            },
            other => other,
        }
    }
}

/// The configuration of both sessions of a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// smux v1/v2 or yamux.
    pub protocol: Protocol,
    /// `max_receive_buffer`.
    pub budget: usize,
    /// `max_stream_buffer` (smux v2; yamux keeps its 256 KiB).
    pub stream_window: usize,
    /// `max_frame_size`.
    pub frame: usize,
    /// `accept_backlog`.
    pub backlog: usize,
    /// `stream_send_buffer`; `max_send_buffer` is 4 times that.
    pub send_buffer: usize,
    /// `idle_timeout`.
    pub idle: Option<Duration>,
    /// `keep_alive_disabled`.
    pub no_keep_alive: bool,
    /// `stream_names` (smux only).
    pub names: bool,
    /// `max_unacked_opens` (yamux).
    pub unacked: usize,
}

impl Setup {
    /// A setup from three bytes (any bytes give a valid one).
    pub fn from_bytes(a: u8, b: u8, c: u8) -> Setup {
        let protocol = [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux][(a % 3) as usize];
        Setup {
            protocol,
            budget: [16 * 1024, 64 * 1024, 300 * 1024, 4 << 20][((a >> 2) & 3) as usize],
            stream_window: [4096, 16 * 1024, 65536, 200_000][((a >> 4) & 3) as usize],
            frame: [7, 1000, 16 * 1024, 32768][(b & 3) as usize],
            backlog: [1, 3, 16, 1024][((b >> 2) & 3) as usize],
            send_buffer: [1000, 16 * 1024, 256 * 1024, 256 * 1024][((b >> 4) & 3) as usize],
            idle: (b >> 6 == 3).then(|| Duration::from_secs(20 + u64::from(c % 100))),
            no_keep_alive: c & 0x80 != 0,
            names: a & 0x40 != 0 && protocol != Protocol::Yamux,
            unacked: [1, 4, 256, 256][((c >> 5) & 3) as usize],
        }
    }

    /// The sessions' config.
    pub fn config(&self) -> Config {
        let mut c = Config::new(self.protocol);
        c.max_receive_buffer = self.budget;
        if self.protocol != Protocol::Yamux {
            c.max_stream_buffer = self.stream_window.min(self.budget);
        }
        c.max_frame_size = self.frame;
        c.accept_backlog = self.backlog;
        c.stream_send_buffer = self.send_buffer;
        c.max_send_buffer = 4 * self.send_buffer;
        c.idle_timeout = self.idle;
        c.keep_alive_disabled = self.no_keep_alive;
        c.stream_names = self.names;
        c.max_unacked_opens = self.unacked;
        c.validate().expect("valid model config");
        c
    }
}

/// Parses fuzz bytes into a setup and ops: three setup bytes, then one op per opcode byte
/// and its arguments (missing bytes read as 0, so every input parses).
pub fn parse_ops(data: &[u8]) -> (Setup, Vec<Op>) {
    let mut r = ByteReader(data);
    let setup = Setup::from_bytes(r.u8(), r.u8(), r.u8());
    let mut ops = Vec::new();
    while !r.0.is_empty() && ops.len() < MAX_OPS {
        let code = r.u8();
        let who = if code & 0x80 != 0 {
            Who::Server
        } else {
            Who::Client
        };
        let op = match code & 0x7f {
            0..=9 => Op::Open {
                who,
                name_len: r.u16(),
            },
            10..=19 => Op::Accept { who },
            20..=44 => Op::Write {
                who,
                stream: r.u8(),
                len: u32::from(r.u16()),
            },
            45..=69 => Op::Read {
                who,
                stream: r.u8(),
                max: u32::from(r.u16()),
                how: [ReadHow::Copy, ReadHow::Chunk, ReadHow::Chunks][usize::from(code % 3)],
            },
            70..=76 => Op::CloseWrite {
                who,
                stream: r.u8(),
            },
            77..=83 => Op::CloseStream {
                who,
                stream: r.u8(),
            },
            84..=87 => Op::Reset {
                who,
                stream: r.u8(),
            },
            88..=99 => Op::Transmit {
                who,
                max: u32::from(r.u16()),
            },
            100..=111 => Op::Deliver {
                who,
                max: u32::from(r.u16()),
            },
            112..=119 => Op::Advance {
                millis: u32::from(r.u16()) * 8,
            },
            _ => Op::Drive,
        };
        ops.push(op.bounded());
    }
    (setup, ops)
}

struct ByteReader<'a>(&'a [u8]);

impl ByteReader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

/// Fuzz entry point: [`parse_ops`], then [`run_ops`].
pub fn session_ops(data: &[u8]) {
    let (setup, ops) = parse_ops(data);
    run_ops(&setup, &ops);
}

/// What a run saw, for tests that want to know the checks were not vacuous.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Stream payload bytes read by either side, checked against the pattern.
    pub bytes_checked: u64,
    /// Streams that reached end of stream with every byte written delivered.
    pub complete_directions: usize,
    /// Streams reset (by an op or a timeout).
    pub resets: usize,
    /// A session ended (keepalive timeout, see [`run_ops`]).
    pub session_ended: bool,
}

/// Runs `ops` on a fresh pair, then closes everything and checks that it all drains.
/// Panics when braid misbehaves.
pub fn run_ops(setup: &Setup, ops: &[Op]) -> Outcome {
    run(setup, ops)
}

fn run(setup: &Setup, ops: &[Op]) -> Outcome {
    let mut m = Model::new(setup);
    for op in ops {
        m.apply(&op.clone().bounded());
        m.check();
    }
    m.finish();
    m.outcome
}

/// The byte at `offset` of the direction `from_client` of stream `id`: every stream
/// carries its own sequence, so a byte out of place or from another stream shows.
pub fn pattern(id: u32, from_client: bool, offset: u64) -> u8 {
    let mut x = offset ^ (u64::from(id) << 40) ^ (u64::from(from_client) << 63);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u8
}

fn name_of(id: u32, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern(id, true, u64::MAX - i))
        .collect()
}

/// One direction of a stream.
#[derive(Debug, Default)]
struct Dir {
    /// Bytes the writer's session accepted.
    written: u64,
    /// Bytes the reader has read (all checked against the pattern).
    read: u64,
    /// The writer closed its side (close_write, close_stream or reset).
    write_closed: bool,
    /// The reader saw end of stream.
    eof: bool,
}

#[derive(Debug)]
struct StreamModel {
    opener: Who,
    name_len: usize,
    /// Indexed by the writer: [client -> server, server -> client].
    dirs: [Dir; 2],
    /// Held by the application of [client, server].
    held: [bool; 2],
    /// Ever held (opened, or accepted) by [client, server].
    seen: [bool; 2],
    /// Reset by either side, for any reason: delivery may stop short.
    reset: bool,
}

#[derive(Default)]
struct Wire {
    in_flight: BytesMut,
    /// The receiving driver's read buffer.
    read_buf: BytesMut,
    /// The receiver was told the transport ended.
    eof_told: bool,
}

struct Model {
    config: Config,
    sessions: [Session; 2],
    /// wires[w]: bytes sent by w.
    wires: [Wire; 2],
    now: Instant,
    streams: BTreeMap<u32, StreamModel>,
    /// Streams each application holds, in the order it got them.
    held: [Vec<u32>; 2],
    buf: Vec<u8>,
    outcome: Outcome,
}

impl Model {
    fn new(setup: &Setup) -> Model {
        let config = setup.config();
        let now = Instant::now();
        Model {
            sessions: [
                Session::new(config.clone(), Side::Client, now),
                Session::new(config.clone(), Side::Server, now),
            ],
            config,
            wires: [Wire::default(), Wire::default()],
            now,
            streams: BTreeMap::new(),
            held: [Vec::new(), Vec::new()],
            buf: vec![0; MAX_IO as usize],
            outcome: Outcome::default(),
        }
    }

    fn s(&mut self, who: Who) -> &mut Session {
        &mut self.sessions[who.index()]
    }

    fn pick(&self, who: Who, stream: u8) -> Option<u32> {
        let held = &self.held[who.index()];
        (!held.is_empty()).then(|| held[stream as usize % held.len()])
    }

    fn any_closed(&self) -> bool {
        self.sessions.iter().any(Session::is_closed)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Open { who, name_len } => self.open(who, name_len as usize),
            Op::Accept { who } => {
                self.accept_all(who);
            }
            Op::Write { who, stream, len } => {
                if let Some(id) = self.pick(who, stream) {
                    self.write(who, id, len as usize);
                }
            }
            Op::Read {
                who,
                stream,
                max,
                how,
            } => {
                if let Some(id) = self.pick(who, stream) {
                    self.read(who, id, max as usize, how);
                }
            }
            Op::CloseWrite { who, stream } => {
                if let Some(id) = self.pick(who, stream) {
                    self.s(who).stream(StreamId(id)).close_write();
                    self.stream(id).dirs[who.index()].write_closed = true;
                }
            }
            Op::CloseStream { who, stream } => {
                if let Some(id) = self.pick(who, stream) {
                    self.release(who, id);
                }
            }
            Op::Reset { who, stream } => {
                if let Some(id) = self.pick(who, stream) {
                    self.s(who).stream(StreamId(id)).reset();
                    let st = self.stream(id);
                    st.reset = true;
                    st.dirs[who.index()].write_closed = true;
                }
            }
            Op::Transmit { who, max } => {
                self.transmit(who, max as usize);
            }
            Op::Deliver { who, max } => {
                self.deliver(who, max as usize);
            }
            Op::Advance { millis } => self.advance(Duration::from_millis(u64::from(millis))),
            Op::Drive => self.drive(),
        }
        self.events();
    }

    fn stream(&mut self, id: u32) -> &mut StreamModel {
        self.streams.get_mut(&id).expect("modelled stream")
    }

    fn open(&mut self, who: Who, name_len: usize) {
        let closed = self.s(who).is_closed();
        let names = self.config.stream_names;
        let result = if names {
            // The name depends on the id, which is only known afterwards: open with the
            // id this side will get next.
            let next = self.next_id(who);
            self.s(who).open_named(&name_of(next, name_len))
        } else {
            self.s(who).open()
        };
        match result {
            Ok(id) => {
                assert!(!closed, "open succeeded on a closed session");
                let odd = id.0 % 2 == 1;
                assert_eq!(
                    odd,
                    who == Who::Client,
                    "stream id {id} has the wrong parity"
                );
                assert!(!self.streams.contains_key(&id.0), "stream id {id} reused");
                let mut st = StreamModel {
                    opener: who,
                    name_len: if names { name_len } else { 0 },
                    dirs: Default::default(),
                    held: [false; 2],
                    seen: [false; 2],
                    reset: false,
                };
                st.held[who.index()] = true;
                st.seen[who.index()] = true;
                self.streams.insert(id.0, st);
                self.held[who.index()].push(id.0);
            }
            Err(OpenError::Blocked) => {
                assert_eq!(self.config.protocol, Protocol::Yamux, "smux open blocked")
            }
            Err(OpenError::SessionClosed(_)) => assert!(closed),
            Err(e) => panic!("open failed with {e:?}"),
        }
    }

    /// The id `who` opens next (ids are never reused and never exhausted here).
    fn next_id(&self, who: Who) -> u32 {
        let base = match (self.config.protocol, who) {
            (Protocol::Yamux, Who::Client) => 1,
            (_, Who::Client) => 3,
            (_, Who::Server) => 2,
        };
        let opened = self.streams.values().filter(|s| s.opener == who).count() as u32;
        base + 2 * opened
    }

    fn accept_all(&mut self, who: Who) -> bool {
        let mut any = false;
        while let Some(id) = self.s(who).accept() {
            any = true;
            let name = self
                .s(who)
                .stream_ref(id)
                .name()
                .expect("accepted")
                .to_vec();
            let st = self
                .streams
                .get_mut(&id.0)
                .unwrap_or_else(|| panic!("accepted stream {id} that the peer never opened"));
            assert_eq!(st.opener, who.other(), "accepted our own stream {id}");
            assert!(!st.seen[who.index()], "stream {id} accepted twice");
            assert_eq!(name, name_of(id.0, st.name_len), "name of stream {id}");
            st.held[who.index()] = true;
            st.seen[who.index()] = true;
            self.held[who.index()].push(id.0);
        }
        any
    }

    fn write(&mut self, who: Who, id: u32, len: usize) {
        let closed = self.s(who).is_closed();
        let offset = self.stream(id).dirs[who.index()].written;
        let from_client = who == Who::Client;
        let data: Vec<u8> = (0..len as u64)
            .map(|i| pattern(id, from_client, offset + i))
            .collect();
        let result = self.s(who).stream(StreamId(id)).write(&data);
        let st = self.stream(id);
        match result {
            Ok(n) => {
                assert!(n <= len);
                assert!(!st.dirs[who.index()].write_closed || len == 0);
                st.dirs[who.index()].written += n as u64;
            }
            Err(WriteError::Blocked) => assert!(len > 0),
            Err(WriteError::Closed(_)) => assert!(st.dirs[who.index()].write_closed),
            Err(WriteError::Reset(..)) => st.reset = true,
            Err(WriteError::SessionClosed(_)) => assert!(closed),
            Err(e) => panic!("write on stream {id} failed with {e:?}"),
        }
    }

    /// Reads once; returns the bytes read (None at end of stream or on an error).
    fn read(&mut self, who: Who, id: u32, max: usize, how: ReadHow) -> Option<usize> {
        let closed = self.s(who).is_closed();
        let mut buf = std::mem::take(&mut self.buf);
        let mut stream = self.sessions[who.index()].stream(StreamId(id));
        let result = match how {
            ReadHow::Copy => stream.read(&mut buf[..max]),
            ReadHow::Chunk => stream.read_chunk(max).map(|c| match c {
                Some(c) => {
                    assert!(!c.is_empty() && c.len() <= max.max(1));
                    buf[..c.len()].copy_from_slice(&c);
                    c.len()
                }
                None => 0,
            }),
            ReadHow::Chunks => {
                let mut slots = vec![Bytes::new(); 1 + max % 4];
                stream.read_chunks(&mut slots).map(|n| match n {
                    Some(n) => {
                        assert!(n >= 1 && n <= slots.len());
                        let got: Vec<u8> = slots[..n]
                            .iter()
                            .inspect(|c| assert!(!c.is_empty()))
                            .flat_map(|c| c.iter().copied())
                            .collect();
                        if buf.len() < got.len() {
                            buf.resize(got.len(), 0);
                        }
                        buf[..got.len()].copy_from_slice(&got);
                        got.len()
                    }
                    None => 0,
                })
            }
        };
        let writer = who.other();
        let idle = self.config.idle_timeout.is_some();
        let st = self.streams.get_mut(&id).expect("modelled stream");
        let dir = &mut st.dirs[writer.index()];
        let out = match result {
            Ok(0) => {
                assert!(
                    dir.write_closed || st.reset || idle,
                    "stream {id}: end of stream before the peer closed"
                );
                if !st.reset && !idle {
                    assert_eq!(
                        dir.read, dir.written,
                        "stream {id}: end of stream before all data arrived"
                    );
                }
                if !dir.eof && dir.read == dir.written {
                    self.outcome.complete_directions += 1;
                }
                dir.eof = true;
                None
            }
            Ok(n) => {
                assert!(!dir.eof, "stream {id}: data after end of stream");
                let from_client = writer == Who::Client;
                assert!(
                    dir.read + n as u64 <= dir.written,
                    "stream {id}: read more than was written"
                );
                for (i, &b) in buf[..n].iter().enumerate() {
                    let at = dir.read + i as u64;
                    assert_eq!(
                        b,
                        pattern(id, from_client, at),
                        "stream {id}: wrong byte at offset {at}"
                    );
                }
                dir.read += n as u64;
                self.outcome.bytes_checked += n as u64;
                Some(n)
            }
            Err(ReadError::Blocked) => Some(0),
            Err(ReadError::Reset(..)) => {
                st.reset = true;
                None
            }
            Err(ReadError::SessionClosed(_)) => {
                assert!(closed);
                None
            }
            Err(e) => panic!("read on stream {id} failed with {e:?}"),
        };
        self.buf = buf;
        out
    }

    /// Reads everything buffered on every held stream; true if anything was read.
    fn read_everything(&mut self, who: Who) -> bool {
        let mut any = false;
        for id in self.held[who.index()].clone() {
            while let Some(n) = self.read(who, id, MAX_IO as usize, ReadHow::Copy) {
                if n == 0 {
                    break;
                }
                any = true;
            }
        }
        any
    }

    fn release(&mut self, who: Who, id: u32) {
        self.s(who).stream(StreamId(id)).close();
        let st = self.stream(id);
        st.held[who.index()] = false;
        st.dirs[who.index()].write_closed = true;
        self.held[who.index()].retain(|&h| h != id);
    }

    fn transmit(&mut self, who: Who, max: usize) -> usize {
        let now = self.now;
        let mut chunks: Vec<Bytes> = Vec::new();
        let n = self.sessions[who.index()].poll_transmit(now, &mut chunks, max);
        assert_eq!(n, chunks.iter().map(Bytes::len).sum::<usize>());
        let wire = &mut self.wires[who.index()];
        for c in chunks {
            wire.in_flight.extend_from_slice(&c);
        }
        n
    }

    /// Hands up to `max` bytes of the peer's wire to `to`; true if anything moved.
    fn deliver(&mut self, to: Who, max: usize) -> bool {
        let now = self.now;
        let from = to.other();
        let peer_closed = self.sessions[from.index()].is_closed();
        let wire = &mut self.wires[from.index()];
        let session = &mut self.sessions[to.index()];
        let k = max.min(wire.in_flight.len());
        let moved_bytes = k > 0;
        if k > 0 {
            let chunk = wire.in_flight.split_to(k);
            wire.read_buf.extend_from_slice(&chunk);
        }
        let before = wire.read_buf.len();
        if !wire.read_buf.is_empty() {
            if let Err(e) = session.handle_input(now, &mut wire.read_buf) {
                assert!(
                    matches!(
                        e,
                        ConnectionError::KeepAliveTimeout(_) | ConnectionError::TransportClosed
                    ),
                    "two braid sessions disagree: {e}"
                );
            }
        }
        let consumed = wire.read_buf.len() != before;
        // The driver reports end of file once everything received has been taken in.
        if peer_closed && wire.in_flight.is_empty() && !wire.eof_told && session.wants_read() {
            wire.eof_told = true;
            session.handle_transport_closed(now, ConnectionError::TransportClosed);
        }
        moved_bytes || consumed
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        for who in [Who::Client, Who::Server] {
            for _ in 0..1000 {
                let n = self.transmit(who, 64 * 1024);
                if n == 0 {
                    break;
                }
                moved = true;
            }
        }
        for who in [Who::Client, Who::Server] {
            moved |= self.deliver(who, usize::MAX);
        }
        self.events();
        moved
    }

    fn drive(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never settles");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.drive();
        loop {
            let next = self.sessions.iter().filter_map(Session::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for who in [Who::Client, Who::Server] {
                        let was_closed = self.s(who).is_closed();
                        let was_reading = self.s(who).wants_read();
                        self.s(who).handle_timeout(now);
                        if !was_closed && self.s(who).is_closed() {
                            self.timed_out(who, was_reading);
                        }
                    }
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    /// A session ended in `handle_timeout`: only a yamux keepalive whose ping or pong
    /// could not be read may end it: the peer's reading or our own was paused by a spent
    /// budget (Go's smux likewise ends a session whose reading its token bucket holds).
    fn timed_out(&mut self, who: Who, was_reading: bool) {
        let reason = self.s(who).close_reason().cloned();
        let peer = &self.sessions[who.other().index()];
        assert!(
            matches!(reason, Some(ConnectionError::KeepAliveTimeout(_))),
            "{who:?} ended with {reason:?}"
        );
        assert!(
            self.config.protocol == Protocol::Yamux
                && (!was_reading || !peer.wants_read() || peer.is_closed()),
            "{who:?} timed out although its peer ({}) is alive and reading",
            if peer.is_closed() { "closed" } else { "open" }
        );
        self.outcome.session_ended = true;
    }

    fn events(&mut self) {
        for who in [Who::Client, Who::Server] {
            while let Some(ev) = self.sessions[who.index()].poll_event() {
                match ev {
                    Event::Reset(id) => {
                        if let Some(st) = self.streams.get_mut(&id.0) {
                            st.reset = true;
                        }
                    }
                    Event::Closed(reason) => assert!(
                        matches!(
                            reason,
                            ConnectionError::KeepAliveTimeout(_) | ConnectionError::TransportClosed
                        ),
                        "{who:?} ended with {reason:?}"
                    ),
                    _ => {}
                }
            }
        }
    }

    fn check(&self) {
        for s in &self.sessions {
            check_budget(s);
        }
    }

    /// Reads and accepts until nothing moves any more.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            self.drive();
            let mut progress = false;
            for who in [Who::Client, Who::Server] {
                progress |= self.accept_all(who);
                progress |= self.read_everything(who);
            }
            self.check();
            if !progress {
                return;
            }
        }
        panic!("reading never ends");
    }

    /// Both applications finish every stream and let go of it: all data written must
    /// arrive, in order, and both sessions must forget every stream.
    fn finish(&mut self) {
        self.settle();
        for who in [Who::Client, Who::Server] {
            for id in self.held[who.index()].clone() {
                self.s(who).stream(StreamId(id)).close_write();
                self.stream(id).dirs[who.index()].write_closed = true;
            }
        }
        self.settle();
        let idle = self.config.idle_timeout.is_some();
        let ended = self.any_closed();
        for (id, st) in &self.streams {
            self.outcome.resets += usize::from(st.reset);
            for writer in [Who::Client, Who::Server] {
                let reader = writer.other();
                if !st.held[reader.index()] || st.reset || ended || idle {
                    continue;
                }
                let d = &st.dirs[writer.index()];
                assert!(
                    d.eof && d.read == d.written,
                    "stream {id} ({writer:?} -> {reader:?}): {} of {} bytes and {} end of \
                     stream after both sides closed",
                    d.read,
                    d.written,
                    if d.eof { "an" } else { "no" }
                );
            }
        }
        self.outcome.session_ended |= ended;
        for who in [Who::Client, Who::Server] {
            for id in self.held[who.index()].clone() {
                self.release(who, id);
            }
        }
        self.drive();
        for who in [Who::Client, Who::Server] {
            // Streams the application never accepted are the session's to clean up.
            let s = self.s(who);
            while let Some(id) = s.accept() {
                s.stream(id).close();
            }
        }
        self.drive();
        // Released streams that cannot finish (e.g. smux v2 data waiting for credit from a
        // peer that forgot the stream) are reset after stream_close_timeout.
        let linger = self.config.stream_close_timeout + Duration::from_secs(1);
        self.advance(linger);
        self.drive();
        for who in [Who::Client, Who::Server] {
            let s = &self.sessions[who.index()];
            let peer = &self.sessions[who.other().index()];
            let left: Vec<u32> = self
                .streams
                .keys()
                .copied()
                .filter(|&id| s.stream_ref(StreamId(id)).stats().is_some())
                .collect();
            // Streams still waiting for a window the peer, which forgot the stream, will
            // never open: reported if anything is left.
            let stuck: Vec<u32> = left
                .iter()
                .copied()
                .filter(|&id| {
                    let st = s.stream_ref(StreamId(id)).stats().expect("listed");
                    self.config.protocol == Protocol::SmuxV2
                        && st.buffered_send > 0
                        && st.send_window == Some(0)
                        && peer.stream_ref(StreamId(id)).stats().is_none()
                })
                .collect();
            let stuck_bytes: usize = stuck
                .iter()
                .map(|&id| {
                    s.stream_ref(StreamId(id))
                        .stats()
                        .expect("listed")
                        .buffered_send
                })
                .sum();
            let tolerated = 0;
            assert!(
                left.len() == tolerated && s.num_streams() == tolerated,
                "{who:?} still tracks {} streams ({left:?}, stuck with unsent data: \
                 {stuck:?}) after both sides closed all",
                s.num_streams()
            );
            assert_eq!(s.buffered_recv(), 0, "{who:?} buffered_recv");
            assert_eq!(
                s.buffered_send(),
                0,
                "{who:?} buffered_send ({stuck_bytes} stuck)"
            );
        }
    }
}
