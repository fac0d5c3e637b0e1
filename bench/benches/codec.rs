//! Frame codec benchmarks: encoding and decoding smux v1/v2 and yamux frames with the
//! codecs of `braid_proto::frame` (public with its `fuzzing` feature), no session and no
//! I/O.
//!
//! For each protocol: control frames (header only) and data frames of 0 B, 64 B, 32 KiB
//! and 64 KiB of payload (smux: 65535 B, its largest payload), throughput in wire bytes.
//!
//! - encode: the frame is appended to a reused buffer, payload copied (`put_slice`), as
//!   the codec's `encode` does. The session itself writes only headers and hands
//!   payloads on without copying, so `header` is its per-frame encoding cost.
//! - decode: one whole frame is decoded from the front of a buffer. Payloads below
//!   `frame::COPY_BELOW` (32 KiB) are copied out; larger ones are split off without
//!   copying, so their "throughput" only reflects the per-frame cost.
//!
//! Run: `cargo bench -p braid-bench --bench codec` (add `-- --quick` for a short run).

use braid_proto::frame::{smux, yamux};
use bytes::{Bytes, BytesMut};
use criterion::{black_box, BatchSize, BenchmarkId, Criterion, Throughput};

/// Payload sizes of the data frames; the largest is capped per protocol.
const SIZES: [usize; 4] = [0, 64, 32 * 1024, 64 * 1024];

/// A protocol's codec, behind one interface so that every benchmark is written once.
trait Wire {
    /// The largest data payload this protocol can frame.
    const MAX_PAYLOAD: usize;
    /// A decoded frame.
    type Frame;
    /// A data frame with `payload`.
    fn data(&self, payload: Bytes) -> Self::Frame;
    /// A frame without payload (smux UPD or FIN, yamux window update).
    fn control(&self) -> Self::Frame;
    /// Appends the frame to `out`.
    fn encode(&self, frame: &Self::Frame, out: &mut BytesMut);
    /// Appends a data frame header for a `len`-byte payload to `out`.
    fn encode_header(&self, len: usize, out: &mut BytesMut);
    /// Decodes one frame; panics unless `buf` holds a whole valid one.
    fn decode(&self, buf: &mut BytesMut) -> Self::Frame;
}

struct Smux(smux::Codec);

impl Wire for Smux {
    const MAX_PAYLOAD: usize = smux::MAX_PAYLOAD;
    type Frame = smux::Frame;

    fn data(&self, data: Bytes) -> smux::Frame {
        smux::Frame::Psh { stream_id: 3, data }
    }

    fn control(&self) -> smux::Frame {
        match self.0.version {
            smux::Version::V1 => smux::Frame::Fin { stream_id: 3 },
            smux::Version::V2 => smux::Frame::Upd {
                stream_id: 3,
                consumed: 1 << 20,
                window: 1 << 16,
            },
        }
    }

    fn encode(&self, frame: &smux::Frame, out: &mut BytesMut) {
        self.0.encode(frame, out);
    }

    fn encode_header(&self, len: usize, out: &mut BytesMut) {
        self.0.encode_header(smux::Cmd::Psh, len as u16, 3, out);
    }

    fn decode(&self, buf: &mut BytesMut) -> smux::Frame {
        self.0
            .decode(buf)
            .expect("valid frame")
            .expect("whole frame")
    }
}

struct Yamux(yamux::Codec);

impl Wire for Yamux {
    const MAX_PAYLOAD: usize = 64 * 1024;
    type Frame = yamux::Frame;

    fn data(&self, data: Bytes) -> yamux::Frame {
        yamux::Frame::Data {
            stream_id: 1,
            flags: yamux::Flags::NONE,
            data,
        }
    }

    fn control(&self) -> yamux::Frame {
        yamux::Frame::WindowUpdate {
            stream_id: 1,
            flags: yamux::Flags::NONE,
            delta: 1 << 17,
        }
    }

    fn encode(&self, frame: &yamux::Frame, out: &mut BytesMut) {
        self.0.encode(frame, out);
    }

    fn encode_header(&self, len: usize, out: &mut BytesMut) {
        self.0
            .encode_header(yamux::Type::Data, yamux::Flags::NONE, 1, len as u32, out);
    }

    fn decode(&self, buf: &mut BytesMut) -> yamux::Frame {
        self.0
            .decode(buf)
            .expect("valid frame")
            .expect("whole frame")
    }
}

/// Encodes `frame` once, to measure decoding it.
fn wire_bytes<W: Wire>(w: &W, frame: &W::Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    w.encode(frame, &mut out);
    out.to_vec()
}

fn bench_protocol<W: Wire>(c: &mut Criterion, name: &str, w: &W) {
    let sizes = SIZES.map(|s| s.min(W::MAX_PAYLOAD));

    let mut g = c.benchmark_group(format!("{name}/encode"));
    let mut out = BytesMut::with_capacity(2 * W::MAX_PAYLOAD);
    let header = wire_bytes(w, &w.data(Bytes::new())).len();
    g.throughput(Throughput::Bytes(header as u64));
    g.bench_function("header", |b| {
        b.iter(|| {
            out.clear();
            w.encode_header(black_box(32 * 1024), &mut out);
        })
    });
    let control = w.control();
    g.throughput(Throughput::Bytes(wire_bytes(w, &control).len() as u64));
    g.bench_function("control", |b| {
        b.iter(|| {
            out.clear();
            w.encode(black_box(&control), &mut out);
        })
    });
    for size in sizes {
        let frame = w.data(Bytes::from(vec![0x5a; size]));
        g.throughput(Throughput::Bytes((header + size) as u64));
        g.bench_with_input(BenchmarkId::new("data", size), &frame, |b, frame| {
            b.iter(|| {
                out.clear();
                w.encode(black_box(frame), &mut out);
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/decode"));
    let mut frames = vec![("control".to_string(), wire_bytes(w, &control))];
    for size in sizes {
        let bytes = wire_bytes(w, &w.data(Bytes::from(vec![0x5a; size])));
        frames.push((format!("data/{size}"), bytes));
    }
    for (id, bytes) in &frames {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        // Large inputs: fewer of them are held in memory per batch.
        let batch = if bytes.len() > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        g.bench_function(id.as_str(), |b| {
            // Inputs (and outputs) are built and dropped outside the timed part.
            b.iter_batched_ref(|| BytesMut::from(&bytes[..]), |buf| w.decode(buf), batch)
        });
    }
    g.finish();
}

fn codecs(c: &mut Criterion) {
    bench_protocol(c, "smux1", &Smux(smux::Codec::new(smux::Version::V1)));
    bench_protocol(c, "smux2", &Smux(smux::Codec::new(smux::Version::V2)));
    bench_protocol(c, "yamux", &Yamux(yamux::Codec::new(256 * 1024)));
}

// By hand rather than with `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    codecs(&mut c);
    c.final_summary();
}
