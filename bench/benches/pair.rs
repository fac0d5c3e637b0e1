//! In-memory transfer between two `braid_proto::Session`s: the protocol core's ceiling,
//! without sockets, syscalls, tasks or locks.
//!
//! A client opens 1 or 16 streams and writes 64 MiB in total (64 KiB writes), then
//! half-closes each; the server accepts them and reads every stream to its end. A
//! single-threaded driver loop moves the bytes: the frames each session transmits are
//! copied into the other's input buffer (one copy, standing in for the socket), window
//! updates flow back the same way. Virtual time does not move, so no timer fires.
//! Default configs (Go's defaults) for every protocol.
//!
//! Copies per payload byte: the application's write into the stream's send buffer, the
//! "wire", the frame payload out of the input buffer (only below 32 KiB: larger payloads
//! are split off without copying) and the application's read.
//!
//! Run: `cargo bench -p braid-bench --bench pair` (add `-- --quick` for a short run).

use braid_proto::{Config, Protocol, ReadError, Session, Side, StreamId, WriteError};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

/// Bytes moved per iteration, all streams together.
const TOTAL: usize = 64 << 20;
/// Size of the application's writes and reads.
const IO_SIZE: usize = 64 * 1024;
/// Bytes of frames taken from a session per `poll_transmit` call.
const TRANSMIT_BUDGET: usize = 256 * 1024;

/// Moves everything `from` wants to send into `wire`; returns the byte count.
fn transmit(
    from: &mut Session,
    now: Instant,
    chunks: &mut Vec<Bytes>,
    wire: &mut BytesMut,
) -> usize {
    let mut total = 0;
    loop {
        let n = from.poll_transmit(now, chunks, TRANSMIT_BUDGET);
        if n == 0 {
            break;
        }
        total += n;
    }
    for c in chunks.drain(..) {
        wire.extend_from_slice(&c);
    }
    total
}

/// Feeds `wire` to `to` (what it cannot take now stays in `wire`) and discards its events:
/// the loop below polls every stream anyway.
fn deliver(to: &mut Session, now: Instant, wire: &mut BytesMut) {
    to.handle_input(now, wire).expect("session failed");
    while to.poll_event().is_some() {}
}

/// One transfer of `TOTAL` bytes over `streams` streams; returns the bytes read.
fn transfer(protocol: Protocol, streams: usize) -> usize {
    let now = Instant::now();
    let config = Config::new(protocol);
    let mut client = Session::new(config.clone(), Side::Client, now);
    let mut server = Session::new(config, Side::Server, now);
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut chunks = Vec::new();
    let data = vec![0x5au8; IO_SIZE];
    let mut buf = vec![0u8; IO_SIZE];
    let per_stream = TOTAL / streams;
    // (stream, bytes left to write); None once half-closed.
    let mut writers: Vec<(StreamId, Option<usize>)> = (0..streams)
        .map(|_| (client.open().expect("open"), Some(per_stream)))
        .collect();
    let mut readers: Vec<StreamId> = Vec::new();
    let (mut finished, mut received) = (0, 0);
    while finished < streams {
        let mut moved = 0;
        for (id, left) in writers.iter_mut() {
            let Some(n) = left else { continue };
            while *n > 0 {
                match client.stream(*id).write(&data[..(*n).min(IO_SIZE)]) {
                    Ok(k) => *n -= k,
                    Err(WriteError::Blocked) => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            if *n == 0 {
                client.stream(*id).close_write();
                *left = None;
            }
        }
        moved += transmit(&mut client, now, &mut chunks, &mut to_server);
        deliver(&mut server, now, &mut to_server);
        while let Some(id) = server.accept() {
            readers.push(id);
        }
        readers.retain(|&id| loop {
            match server.stream(id).read(&mut buf) {
                Ok(0) => {
                    finished += 1;
                    break false;
                }
                Ok(n) => {
                    received += n;
                    moved += n;
                }
                Err(ReadError::Blocked) => break true,
                Err(e) => panic!("read: {e}"),
            }
        });
        moved += transmit(&mut server, now, &mut chunks, &mut to_client);
        deliver(&mut client, now, &mut to_client);
        assert!(moved > 0 || finished == streams, "the transfer stalled");
    }
    assert_eq!(received, per_stream * streams);
    received
}

fn pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for (name, protocol) in [
        ("smux1", Protocol::SmuxV1),
        ("smux2", Protocol::SmuxV2),
        ("yamux", Protocol::Yamux),
    ] {
        for streams in [1, 16] {
            g.throughput(Throughput::Bytes((TOTAL / streams * streams) as u64));
            g.bench_with_input(BenchmarkId::new(name, streams), &streams, |b, &streams| {
                b.iter(|| transfer(protocol, streams))
            });
        }
    }
    g.finish();
}

// By hand rather than with `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    pair(&mut c);
    c.final_summary();
}
