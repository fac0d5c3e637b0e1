//! Write-through: stream tasks write frames to the connection themselves while the driver
//! is parked. Over a tiny in-memory pipe (writes are cut short and return `Pending` all
//! the time) with many writers on two worker threads, every stream's bytes must still
//! arrive whole and in order, which they cannot if frames were interleaved or reordered
//! on the connection.

use braid::{Config, Protocol, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAMS: usize = 8;
const PER_STREAM: usize = 200 * 1024;

fn pattern(stream: usize, i: usize) -> u8 {
    (i * 7 + stream * 13 + i / 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_over_a_tiny_pipe_keep_every_stream_intact() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let (a, b) = tokio::io::duplex(3000);
        let client = Session::client(a, Config::new(protocol)).unwrap();
        let server = Session::server(b, Config::new(protocol)).unwrap();
        let readers = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..STREAMS {
                let mut s = server.accept_stream().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    got
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            (server, all)
        });
        let mut writers = Vec::new();
        for k in 0..STREAMS {
            let mut s = client.open_stream().await.unwrap();
            writers.push(tokio::spawn(async move {
                // The first byte says which stream this is; sizes vary to cut frames
                // everywhere.
                let data: Vec<u8> = std::iter::once(k as u8)
                    .chain((0..PER_STREAM).map(|i| pattern(k, i)))
                    .collect();
                let mut off = 0;
                let mut size = 1;
                while off < data.len() {
                    let end = (off + size).min(data.len());
                    s.write_all(&data[off..end]).await.unwrap();
                    off = end;
                    size = size * 3 % 70_000 + 1;
                }
                s.shutdown().await.unwrap();
                s
            }));
        }
        let mut open = Vec::new();
        for w in writers {
            open.push(w.await.unwrap());
        }
        let (_server, all) = readers.await.unwrap();
        let mut seen = [false; STREAMS];
        for got in all {
            assert_eq!(got.len(), PER_STREAM + 1, "{protocol:?}");
            let k = got[0] as usize;
            assert!(!std::mem::replace(&mut seen[k], true), "{protocol:?}");
            let bad = (0..PER_STREAM).find(|&i| got[i + 1] != pattern(k, i));
            assert_eq!(bad, None, "{protocol:?}: stream {k} differs at byte");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ping_pong_on_one_thread_answers_every_message() {
    for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = Session::client(a, Config::new(protocol)).unwrap();
        let server = Session::server(b, Config::new(protocol)).unwrap();
        let echo = tokio::spawn(async move {
            let mut s = server.accept_stream().await.unwrap();
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => s.write_all(&buf[..n]).await.unwrap(),
                }
            }
            server
        });
        let mut s = client.open_stream().await.unwrap();
        for i in 0..2000u32 {
            let msg = i.to_le_bytes();
            s.write_all(&msg).await.unwrap();
            let mut back = [0u8; 4];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg, "{protocol:?}");
        }
        s.shutdown().await.unwrap();
        echo.await.unwrap();
    }
}
