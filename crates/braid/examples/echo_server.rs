//! Echo server: every stream of every braid session gets back what it sends.
//!
//! ```text
//! cargo run -p braid --example echo_server -- [ADDR] [--proto smux1|smux2]
//! ```
//!
//! ADDR defaults to 127.0.0.1:7000 and the protocol to smux1 (Go's default). Each TCP
//! connection is one braid server session; each stream is echoed until the peer
//! half-closes it. Try it with the `echo_client` example. Logs go to stderr.

mod common;

use braid::{Config, Protocol, Session, Side};
use std::process::ExitCode;
use tokio::net::TcpListener;

const USAGE: &str = "usage: echo_server [ADDR] [--proto smux1|smux2]";

fn parse_args() -> Result<(String, Protocol), String> {
    let (mut positional, protocol) = common::parse_cli()?;
    if positional.len() > 1 {
        return Err("too many arguments".into());
    }
    let addr = positional.pop().unwrap_or_else(|| "127.0.0.1:7000".into());
    Ok((addr, protocol))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, protocol) = match parse_args() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("echo_server: listening on {addr} ({protocol:?})");

    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let session = match Session::from_tcp(tcp, Config::new(protocol), Side::Server) {
            Ok(session) => session,
            Err(e) => {
                eprintln!("{peer}: {e}");
                continue;
            }
        };
        eprintln!("{peer}: session started");
        tokio::spawn(async move {
            let mut streams = 0u64;
            while let Some(stream) = session.accept_stream().await {
                streams += 1;
                tokio::spawn(async move {
                    let id = stream.id();
                    let (mut reader, mut writer) = stream.into_split();
                    // Copies until the peer's FIN; dropping `writer` then sends ours.
                    if let Err(e) = tokio::io::copy(&mut reader, &mut writer).await {
                        eprintln!("{peer}: stream {id}: {e}");
                    }
                });
            }
            let reason = session.closed().await;
            eprintln!("{peer}: session ended after {streams} streams: {reason}");
        });
    }
}
