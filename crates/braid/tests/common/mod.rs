//! Helpers shared by the integration tests.
#![allow(dead_code)]

use braid::{Config, Protocol, Session, Side};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub const PROTOCOLS: [Protocol; 3] = [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux];

/// A client and a server session over an in-memory duplex pipe.
pub fn duplex_pair(config: Config) -> (Session, Session) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (
        Session::client(a, config.clone()).unwrap(),
        Session::server(b, config).unwrap(),
    )
}

/// A client and a server session over real loopback TCP.
pub async fn tcp_pair(config: Config) -> (Session, Session) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = Session::from_tcp(client.unwrap(), config.clone(), Side::Client).unwrap();
    let server = Session::from_tcp(server.unwrap().0, config, Side::Server).unwrap();
    (client, server)
}

/// Runs every task until all are idle. Only for tests on a paused clock over in-memory
/// pipes: there the clock moves only when no task can make progress, so sleeping a
/// virtual millisecond returns exactly when every driver has processed all it can.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A yamux frame written by hand (big-endian header, version 0); for Data, `length` is
/// the payload's.
pub fn yamux(typ: u8, flags: u16, stream_id: u32, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, typ];
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&length.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A yamux Data frame (type 0) carrying `payload`.
pub fn ydata(flags: u16, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    yamux(0, flags, stream_id, payload.len() as u32, payload)
}
