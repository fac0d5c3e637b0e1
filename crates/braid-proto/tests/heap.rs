//! Memory bounds under attack, measured with a counting global allocator (heap bytes,
//! not RSS): this binary's only tests, run one at a time.
//!
//! - Floods of tiny frames (yamux over many streams, smux v1 on one stream, smux v2) into
//!   an application that never reads: the heap behind the received data stays within
//!   2 x `max_receive_buffer` plus a fixed overhead.
//! - Large frames whose neighbours in the read buffer were read (a slow stream among fast
//!   ones) cannot make the unread ones pin read buffers beyond the budget.
//! - Named SYN floods: names of queued streams are charged to the budget.
//! - 1,000,000 streams churned through one session pair: live heap flat.
//! - Message after message on one stream: a bounded number of allocations per message.

#![allow(unsafe_code)] // the counting allocator

use braid_proto::{Config, Protocol, Session, Side, StreamId};
use bytes::{BufMut, BytesMut};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// This thread's allocations (calls to `alloc` and `realloc`): the test harness's
    /// own threads allocate too.
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(|a| a.get())
}

fn count_alloc() {
    // try_with: not during thread teardown.
    let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        count_alloc();
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        count_alloc();
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            let live = LIVE.fetch_add(new_size, Relaxed) + new_size;
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests share the counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn live() -> usize {
    LIVE.load(Relaxed)
}

/// Resets the peak to the current live heap and returns it.
fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Relaxed)
}

const MIB: usize = 1 << 20;
/// What braid's tokio driver allocates per read buffer (256 KiB + room for a frame).
const READ_BUFFER: usize = 320 * 1024;

// ---- frames, written by hand as an attacker would ----

fn smux(version: u8, cmd: u8, id: u32, payload: &[u8], out: &mut BytesMut) {
    out.put_u8(version);
    out.put_u8(cmd);
    out.put_u16_le(payload.len() as u16);
    out.put_u32_le(id);
    out.put_slice(payload);
}

const SMUX_SYN: u8 = 0;
const SMUX_PSH: u8 = 2;

fn yamux(kind: u8, flags: u16, id: u32, length: u32, payload: &[u8], out: &mut BytesMut) {
    out.put_u8(0);
    out.put_u8(kind);
    out.put_u16(flags);
    out.put_u32(id);
    out.put_u32(length);
    out.put_slice(payload);
}

const YAMUX_DATA: u8 = 0;
const YAMUX_SYN: u16 = 1;

/// Feeds `frames` to `session` the way a driver does: fresh read buffers of
/// [`READ_BUFFER`] bytes, announced, filled with whole frames, until the session stops
/// reading or the frames run out. Returns the peak heap above `base` while doing so.
fn feed(
    session: &mut Session,
    now: Instant,
    mut frames: impl FnMut(&mut BytesMut) -> bool,
    base: usize,
) -> usize {
    let mut more = true;
    while more && session.wants_read() {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        session.note_input_buffer(buf.capacity());
        while buf.capacity() - buf.len() > 70_000 {
            if !frames(&mut buf) {
                more = false;
                break;
            }
        }
        session.handle_input(now, &mut buf).expect("valid frames");
    }
    peak() - base
}

fn accept_all(session: &mut Session) -> Vec<StreamId> {
    std::iter::from_fn(|| session.accept()).collect()
}

/// Heap allowed for `budget` bytes of unread data: twice the budget plus a fixed
/// per-session overhead (stream states, the read buffers pinned beyond the budget before
/// payloads are copied: 8 x 320 KiB, queues).
fn bound(budget: usize) -> usize {
    2 * budget + 4 * MIB
}

#[test]
fn yamux_one_byte_frames_on_many_streams_stay_within_twice_the_budget() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let config = Config::new(Protocol::Yamux); // 64 MiB budget, 256 KiB windows
    let budget = config.max_receive_buffer;
    let streams = (budget / (256 * 1024)) as u32; // enough windows to spend the budget
    let base = reset_peak();
    let mut s = Session::new(config, Side::Server, now);
    let mut opened = 0u32;
    let mut next = 0u32;
    let used = feed(
        &mut s,
        now,
        |out| {
            if opened < streams {
                opened += 1;
                yamux(YAMUX_DATA, YAMUX_SYN, 2 * opened - 1, 1, b"x", out);
            } else {
                let id = 2 * (next % streams) + 1;
                next += 1;
                yamux(YAMUX_DATA, 0, id, 1, b"y", out);
            }
            true
        },
        base,
    );
    assert!(!s.wants_read(), "the budget was spent");
    assert!(
        s.buffered_recv() >= budget,
        "{} buffered",
        s.buffered_recv()
    );
    eprintln!(
        "yamux 1-byte flood: {} KiB of heap for a {} KiB budget",
        used / 1024,
        budget / 1024
    );
    assert!(
        used <= bound(budget),
        "{} MiB of heap for a {} MiB budget of 1-byte frames",
        used / MIB,
        budget / MIB
    );
    drop(s);
    assert!(live() <= base + 64 * 1024, "heap given back");
}

#[test]
fn smux_one_byte_frames_on_one_stream_stay_within_twice_the_budget() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (protocol, version) in [(Protocol::SmuxV1, 1), (Protocol::SmuxV2, 2)] {
        let now = Instant::now();
        let mut config = Config::new(protocol);
        // smux v2 honours its window: give the flood a window as large as the budget.
        config.max_stream_buffer = config.max_receive_buffer;
        let budget = config.max_receive_buffer;
        let base = reset_peak();
        let mut s = Session::new(config, Side::Server, now);
        let mut first = true;
        let used = feed(
            &mut s,
            now,
            |out| {
                if std::mem::take(&mut first) {
                    smux(version, SMUX_SYN, 3, b"", out);
                }
                smux(version, SMUX_PSH, 3, b"z", out);
                true
            },
            base,
        );
        let ids = accept_all(&mut s);
        assert_eq!(ids.len(), 1);
        eprintln!(
            "{protocol:?} 1-byte flood: {} KiB of heap for a {} KiB budget",
            used / 1024,
            budget / 1024
        );
        assert!(s.buffered_recv() >= budget, "{protocol:?}: budget spent");
        assert!(
            used <= bound(budget),
            "{protocol:?}: {} KiB of heap for a {} KiB budget",
            used / 1024,
            budget / 1024
        );
        // The data is all there, in order.
        let mut buf = vec![0u8; budget + 1];
        let n = s.stream(ids[0]).read(&mut buf).unwrap();
        assert_eq!(n, s.stats().bytes_received as usize);
        assert!(buf[..n].iter().all(|&b| b == b'z'));
    }
}

/// 32 KiB frames (shared with the read buffer, not copied) go round-robin over 64
/// streams, and the application reads every stream but one per buffer: each unread frame
/// would keep a whole 320 KiB read buffer alive. The session copies instead once the
/// buffers it pins reach the budget.
#[test]
fn large_frames_cannot_pin_read_buffers_beyond_the_budget() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut config = Config::new(Protocol::SmuxV1);
    config.max_receive_buffer = 8 * MIB;
    let budget = config.max_receive_buffer;
    let base = reset_peak();
    let mut s = Session::new(config, Side::Server, now);
    let streams: Vec<u32> = (0..64).map(|i| 3 + 2 * i).collect();
    let mut input = BytesMut::new();
    for &id in &streams {
        smux(1, SMUX_SYN, id, b"", &mut input);
    }
    s.note_input_buffer(input.capacity());
    s.handle_input(now, &mut input).unwrap();
    let ids = accept_all(&mut s);
    assert_eq!(ids.len(), streams.len());
    let payload = vec![7u8; 32 * 1024];
    let mut sink = vec![0u8; 64 * 1024];
    let mut rounds = 0;
    // Stream 0 never reads; the others read everything after each buffer.
    while s.wants_read() && rounds < 10_000 {
        rounds += 1;
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        s.note_input_buffer(buf.capacity());
        let mut k = 0;
        while buf.capacity() - buf.len() > payload.len() + 8 {
            // One frame in nine goes to the stream that never reads.
            let id = match k % 9 {
                0 => streams[0],
                j => streams[1 + (rounds * 8 + j) % (streams.len() - 1)],
            };
            smux(1, SMUX_PSH, id, &payload, &mut buf);
            k += 1;
        }
        s.handle_input(now, &mut buf).unwrap();
        for id in &ids[1..] {
            while s.stream(*id).read(&mut sink).is_ok_and(|n| n > 0) {}
        }
    }
    assert!(!s.wants_read(), "the silent stream spent the budget");
    let used = peak() - base;
    eprintln!(
        "32 KiB frames, one stream in nine unread: {} KiB of heap for a {} KiB budget",
        used / 1024,
        budget / 1024
    );
    assert!(
        used <= bound(budget),
        "{} MiB of heap for a {} MiB budget",
        used / MIB,
        budget / MIB
    );
}

#[test]
fn names_of_queued_streams_are_charged_to_the_budget() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut config = Config::new(Protocol::SmuxV1);
    config.stream_names = true;
    let budget = config.max_receive_buffer;
    let base = reset_peak();
    let mut s = Session::new(config, Side::Server, now);
    let name = vec![b'n'; 60_000];
    let mut id = 1;
    let used = feed(
        &mut s,
        now,
        |out| {
            id += 2;
            smux(1, SMUX_SYN, id, &name, out);
            true
        },
        base,
    );
    assert!(!s.wants_read(), "names spent the budget");
    let queued = (id - 1) / 2;
    assert!(
        queued as usize <= budget / name.len() + 6,
        "{queued} named streams queued"
    );
    assert!(used <= bound(budget), "{} MiB", used / MIB);
    // Accepting gives the budget back.
    let ids = accept_all(&mut s);
    assert!(s.wants_read());
    assert_eq!(
        s.stream_ref(ids[0]).name().map(|n| n.len()),
        Some(name.len())
    );
}

/// Moves every byte `from` wants to send into `to`.
fn pump(from: &mut Session, to: &mut Session, now: Instant, chunks: &mut Vec<bytes::Bytes>) {
    loop {
        let n = from.poll_transmit(now, chunks, 1 << 20);
        if n == 0 {
            break;
        }
        let mut buf = BytesMut::with_capacity(n);
        for c in chunks.drain(..) {
            buf.extend_from_slice(&c);
        }
        to.note_input_buffer(buf.capacity());
        to.handle_input(now, &mut buf)
            .expect("peer frames are valid");
        assert!(buf.is_empty(), "all input taken");
    }
}

/// 1,000,000 streams opened, used and closed in turn over one session pair, with idle
/// timeouts armed and pings in flight: the live heap after each block of 100,000 is the
/// same as after the first (nothing per stream outlives its stream), and no block takes
/// much longer than the first (nothing scanned grows).
#[test]
fn a_million_streams_churned_leave_the_heap_flat() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total: usize = std::env::var("BRAID_CHURN_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for protocol in [Protocol::Yamux, Protocol::SmuxV1] {
        let mut now = Instant::now();
        let mut config = Config::new(protocol);
        config.idle_timeout = Some(Duration::from_secs(60));
        let mut client = Session::new(config.clone(), Side::Client, now);
        let mut server = Session::new(config, Side::Server, now);
        let mut chunks = Vec::new();
        let mut buf = [0u8; 16];
        let block = 100_000.min(total);
        let mut heap = Vec::new();
        let mut times = Vec::new();
        let mut started = std::time::Instant::now();
        for i in 0..total {
            let c = client.open().unwrap();
            assert_eq!(client.stream(c).write(b"hello").unwrap(), 5);
            client.stream(c).close();
            if i % 97 == 0 {
                let _ = client.ping(now); // answered or not, never leaks
            }
            pump(&mut client, &mut server, now, &mut chunks);
            let s = server.accept().expect("stream arrived");
            assert_eq!(server.stream(s).read(&mut buf).unwrap(), 5);
            server.stream(s).close();
            pump(&mut server, &mut client, now, &mut chunks);
            pump(&mut client, &mut server, now, &mut chunks);
            while client.poll_event().is_some() {}
            while server.poll_event().is_some() {}
            if i % 1000 == 0 {
                now += Duration::from_millis(100);
                client.handle_timeout(now);
                server.handle_timeout(now);
            }
            if (i + 1) % block == 0 {
                assert_eq!(
                    client.num_streams() + server.num_streams(),
                    0,
                    "{protocol:?}"
                );
                heap.push(live());
                times.push(started.elapsed());
                started = std::time::Instant::now();
            }
        }
        eprintln!("{protocol:?}: live heap per block {heap:?}, time per block {times:?}");
        let first = heap[0];
        for (k, h) in heap.iter().enumerate() {
            assert!(
                *h <= first + 64 * 1024,
                "{protocol:?}: heap grew from {first} to {h} bytes by block {k}"
            );
        }
        let first_time = times[0].max(Duration::from_millis(50));
        for t in &times {
            assert!(
                *t <= first_time * 10,
                "{protocol:?}: a block took {t:?}, the first {first_time:?}"
            );
        }
    }
}

/// Small messages back and forth on one stream, as a request/response protocol sends
/// them: after warm-up, the cores make at most one allocation per message, whatever the
/// number of messages (0.5 measured). Before, four: the write scheduler created and
/// dropped its priority's queue for every frame, the sender took a fresh block for
/// each message's bytes (and a shared header for the frame cut from it), and the
/// receiver a fresh block to copy the payload into.
#[test]
fn messages_on_one_stream_allocate_a_bounded_amount_each() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let now = Instant::now();
        let mut client = Session::new(Config::new(protocol), Side::Client, now);
        let mut server = Session::new(Config::new(protocol), Side::Server, now);
        let mut chunks = Vec::with_capacity(64);
        let mut wire = BytesMut::with_capacity(1 << 16);
        let mut buf = [0u8; 64];
        let c = client.open().unwrap();
        let mut s = None;
        let mut exchange =
            |client: &mut Session, server: &mut Session, s: &mut Option<StreamId>| {
                let mut one_way = |from: &mut Session, to: &mut Session| {
                    while from.poll_transmit(now, &mut chunks, 1 << 16) > 0 {}
                    wire.clear();
                    for c in chunks.drain(..) {
                        wire.extend_from_slice(&c);
                    }
                    to.handle_input(now, &mut wire).expect("valid frames");
                };
                assert_eq!(client.stream(c).write(&[1; 64]).unwrap(), 64);
                one_way(client, server);
                let sid = *s.get_or_insert_with(|| server.accept().expect("stream arrived"));
                assert_eq!(server.stream(sid).read(&mut buf).unwrap(), 64);
                assert_eq!(server.stream(sid).write(&[2; 64]).unwrap(), 64);
                one_way(server, client);
                assert_eq!(client.stream(c).read(&mut buf).unwrap(), 64);
                while client.poll_event().is_some() {}
                while server.poll_event().is_some() {}
            };
        for _ in 0..1000 {
            exchange(&mut client, &mut server, &mut s);
        }
        let before = allocs();
        let rounds = 10_000;
        for _ in 0..rounds {
            exchange(&mut client, &mut server, &mut s);
        }
        let per_message = (allocs() - before) as f64 / (2 * rounds) as f64;
        println!("{protocol:?}: {per_message:.2} allocations per message");
        assert!(
            per_message <= 3.0,
            "{protocol:?}: {per_message:.2} allocations per message"
        );
    }
}
