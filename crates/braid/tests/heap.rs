//! Per-stream state of the tokio layer does not outlive its stream, measured with a
//! counting global allocator: streams churned through one session, each served the way
//! braid's tunnel serves them (a task racing its copy against `Session::closed()`), leave
//! the live heap flat.

#![allow(unsafe_code)] // the counting allocator

use braid::{Config, Protocol, Session};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_streams_leave_no_waiters_behind() {
    let total: usize = std::env::var("BRAID_CHURN_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n: usize| n / 10)
        .unwrap_or(100_000);
    let block = 10_000.min(total);
    for protocol in [Protocol::Yamux, Protocol::SmuxV1] {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let client = Session::client(a, Config::new(protocol)).unwrap();
        let server = Session::server(b, Config::new(protocol)).unwrap();
        let acceptor = {
            let server = server.clone();
            tokio::spawn(async move {
                while let Some(mut stream) = server.accept_stream().await {
                    let session = server.clone();
                    tokio::spawn(async move {
                        // As the tunnel's pipe: the copy races the session's end.
                        tokio::select! {
                            _ = session.closed() => {}
                            _ = async {
                                let mut buf = [0u8; 16];
                                let n = stream.read(&mut buf).await.unwrap();
                                stream.write_all(&buf[..n]).await.unwrap();
                                stream.shutdown().await.unwrap();
                                while stream.read(&mut buf).await.unwrap() > 0 {}
                            } => {}
                        }
                    });
                }
            })
        };
        let mut heap = Vec::new();
        for i in 0..total {
            let mut s = client.open_stream().await.unwrap();
            tokio::select! {
                _ = client.closed() => panic!("session ended"),
                r = async {
                    s.write_all(b"ping").await?;
                    s.shutdown().await?;
                    let mut back = Vec::new();
                    s.read_to_end(&mut back).await?;
                    assert_eq!(back, b"ping");
                    Ok::<_, std::io::Error>(())
                } => r.unwrap(),
            }
            drop(s);
            if (i + 1) % block == 0 {
                // Every stream of the block is gone on both sides before measuring.
                let mut spins = 0;
                while client.num_streams() + server.num_streams() > 0 {
                    spins += 1;
                    assert!(spins < 1_000_000, "{protocol:?}: streams left behind");
                    tokio::task::yield_now().await;
                }
                heap.push(LIVE.load(Relaxed));
            }
        }
        eprintln!("{protocol:?}: live heap per block of {block}: {heap:?}");
        let first = heap[0];
        for (k, h) in heap.iter().enumerate() {
            assert!(
                *h <= first + 256 * 1024,
                "{protocol:?}: live heap grew from {first} to {h} bytes by block {k}"
            );
        }
        client.close().await;
        server.close().await;
        acceptor.await.unwrap();
    }
}
