//! Echo client: opens STREAMS braid streams at once over one TCP connection, sends BYTES
//! of a known pattern on each, half-closes, and checks that the echo matches.
//!
//! ```text
//! cargo run -p braid --example echo_server -- 127.0.0.1:7000 &
//! cargo run -p braid --example echo_client -- [ADDR] [STREAMS] [BYTES] [--proto smux1|smux2]
//! ```
//!
//! Defaults: 127.0.0.1:7000, 16 streams, 1 MiB per stream, smux1 (use the server's
//! protocol). Prints the throughput and "ok", or the first error and exits non-zero.

mod common;

use braid::{Config, Protocol, Session, Side};
use std::io;
use std::process::ExitCode;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: echo_client [ADDR] [STREAMS] [BYTES] [--proto smux1|smux2]";
const CHUNK: usize = 64 * 1024;

struct Args {
    addr: String,
    streams: usize,
    bytes: usize,
    protocol: Protocol,
}

fn parse_args() -> Result<Args, String> {
    let (positional, protocol) = common::parse_cli()?;
    if positional.len() > 3 {
        return Err("too many arguments".into());
    }
    let number = |i: usize, default: usize| match positional.get(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("not a number: {s}")),
    };
    Ok(Args {
        addr: positional
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:7000".into()),
        streams: number(1, 16)?,
        bytes: number(2, 1 << 20)?,
        protocol,
    })
}

/// The byte at `offset` of stream `n`'s data: differs between streams and offsets.
fn pattern(n: usize, offset: usize) -> u8 {
    ((offset % 251) ^ (n % 256)) as u8
}

/// Sends `len` bytes on one stream while reading the echo back, and checks it.
async fn echo_one(session: &Session, n: usize, len: usize) -> io::Result<()> {
    let (mut reader, mut writer) = session.open_stream().await?.into_split();
    // Write and read at the same time: the echo comes back while we are still sending.
    let send = async {
        let mut chunk = Vec::with_capacity(CHUNK);
        for start in (0..len).step_by(CHUNK) {
            chunk.clear();
            chunk.extend((start..len.min(start + CHUNK)).map(|i| pattern(n, i)));
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await // half-close: the server's copy ends, then its FIN comes
    };
    let receive = async {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        loop {
            let k = reader.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            if let Some(i) = (0..k).find(|&i| buf[i] != pattern(n, got + i)) {
                let msg = format!("stream {n}: wrong byte at offset {}", got + i);
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            got += k;
        }
        if got != len {
            let msg = format!("stream {n}: echoed {got} of {len} bytes");
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        Ok(())
    };
    tokio::try_join!(send, receive)?;
    Ok(())
}

async fn run(args: &Args) -> io::Result<()> {
    let tcp = TcpStream::connect(&args.addr).await?;
    let session = Session::from_tcp(tcp, Config::new(args.protocol), Side::Client)?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.streams {
        let (session, len) = (session.clone(), args.bytes);
        tasks.spawn(async move { echo_one(&session, n, len).await });
    }
    while let Some(res) = tasks.join_next().await {
        res.map_err(io::Error::other)??;
    }
    let secs = start.elapsed().as_secs_f64();
    let mib = (args.streams * args.bytes) as f64 / (1024.0 * 1024.0);
    println!(
        "{} streams x {} bytes echoed in {secs:.3} s: {:.1} MiB/s each way",
        args.streams,
        args.bytes,
        mib / secs
    );
    session.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}
