//! Fault injection on real loopback TCP: a proxy between client and server fragments,
//! delays, blackholes or cuts the connection; sessions must keep data intact, detect a
//! dead peer by keepalive and clean up after a cut.

use braid::{Config, ConnectionError, Protocol, Session, Side, Stream};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

// ---------------------------------------------------------------------------------------
// The fault-injection proxy
// ---------------------------------------------------------------------------------------

/// How the proxy forwards bytes while the connection is up.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Forward unchanged.
    None,
    /// Forward every byte in its own write (each a TCP segment: the sockets are NODELAY).
    Fragment,
    /// Hold every chunk for this long after it was read, then forward it, in order.
    Latency(Duration),
}

/// The proxy's runtime switch, shared by all its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Forward,
    /// Forward nothing either way; keep both sockets open.
    Blackhole,
    /// Close both sockets abruptly (RST).
    Cut,
}

/// A loopback TCP proxy to one upstream address. Dropping it stops forwarding and closes
/// its connections.
struct Proxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, rx) = watch::channel(State::Forward);
        tokio::spawn(async move {
            let mut gone = rx.clone();
            loop {
                let down = tokio::select! {
                    res = listener.accept() => match res {
                        Ok((down, _)) => down,
                        Err(_) => return,
                    },
                    // Resolves only with an error, when the `Proxy` is dropped.
                    _ = gone.wait_for(|_| false) => return,
                };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                splice(down, up, fault, rx.clone());
            }
        });
        Proxy { addr, state }
    }

    /// Stops forwarding in both directions; both sockets stay open.
    fn blackhole(&self) {
        self.state.send_replace(State::Blackhole);
    }

    /// Closes both sides abruptly.
    fn cut(&self) {
        self.state.send_replace(State::Cut);
    }
}

/// Copies `a` to `b` and `b` to `a` through the fault.
fn splice(a: TcpStream, b: TcpStream, fault: Fault, state: watch::Receiver<State>) {
    for s in [&a, &b] {
        s.set_nodelay(true).unwrap();
    }
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    for (r, w) in [(ar, bw), (br, aw)] {
        // Bounded: a slow or delayed direction pushes back on its sender.
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(pump_in(r, tx, state.clone()));
        tokio::spawn(pump_out(w, rx, fault, state.clone()));
    }
}

fn forwarding(state: &watch::Receiver<State>) -> bool {
    *state.borrow() == State::Forward
}

/// Reads chunks off one socket, stamped with their arrival; drops them while blackholed.
async fn pump_in(
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    state: watch::Receiver<State>,
) {
    let mut cut = state.clone();
    let pump = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) if !forwarding(&state) => {}
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = pump => {}
        _ = cut.wait_for(|s| *s == State::Cut) => {}
    }
}

/// Writes the chunks to the other socket through the fault. When the source ends, the
/// end (FIN) is forwarded, unless blackholed: then the socket stays open until the cut.
async fn pump_out(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    fault: Fault,
    state: watch::Receiver<State>,
) {
    let mut cut_rx = state.clone();
    let cut = async move {
        let _ = cut_rx.wait_for(|s| *s == State::Cut).await;
    };
    tokio::pin!(cut);
    let forward = async {
        while let Some((at, chunk)) = rx.recv().await {
            match fault {
                Fault::None => {}
                Fault::Latency(delay) => tokio::time::sleep_until(at + delay).await,
                Fault::Fragment => {
                    for byte in chunk {
                        if !forwarding(&state) {
                            break;
                        }
                        if w.write_all(&[byte]).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            }
            if forwarding(&state) && w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = forward => {
            if forwarding(&state) {
                return; // dropping `w` forwards the end of stream
            }
            (&mut cut).await;
        }
        () = &mut cut => {}
    }
    // Abrupt: closing with a zero linger sends RST. The socket closes once the reading
    // pump, which also ends on the cut, drops its half.
    let _ = w.as_ref().set_zero_linger();
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A client and a server session over loopback TCP through a fault proxy.
async fn pair_via_proxy(config: Config, fault: Fault) -> (Session, Session, Proxy) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(listener.local_addr().unwrap(), fault).await;
    let (client, server) = tokio::join!(TcpStream::connect(proxy.addr), listener.accept());
    let client = Session::from_tcp(client.unwrap(), config.clone(), Side::Client).unwrap();
    let server = Session::from_tcp(server.unwrap().0, config, Side::Server).unwrap();
    (client, server, proxy)
}

/// Runs a test body under an overall time bound.
async fn bounded(bound: Duration, test: impl Future<Output = ()>) {
    timeout(bound, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {bound:?}"));
}

fn random(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

fn check_equal(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

/// Opener side: writes `idx` and `data`, half-closes, and meanwhile reads the other
/// direction to its end.
async fn exchange(stream: Stream, idx: u32, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = stream.into_split();
    let writer = async {
        w.write_u32_le(idx).await.unwrap();
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::with_capacity(data.len());
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    tokio::join!(writer, reader).1
}

/// `streams` streams, each carrying `size` random bytes both ways at once, byte-exact.
async fn integrity(protocol: Protocol, fault: Fault, streams: usize, size: usize) {
    let (client, server, _proxy) = pair_via_proxy(Config::new(protocol), fault).await;
    let mut rng = StdRng::seed_from_u64(0xb4a1d ^ streams as u64);
    // (client -> server, server -> client) per stream.
    let data: Arc<Vec<(Vec<u8>, Vec<u8>)>> = Arc::new(
        (0..streams)
            .map(|_| (random(&mut rng, size), random(&mut rng, size)))
            .collect(),
    );

    let serving = {
        let data = data.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for _ in 0..streams {
                let stream = server.accept_stream().await.expect("session ended early");
                let data = data.clone();
                tasks.spawn(async move {
                    // The index arrives first; the reply can only start once it is known.
                    let (mut r, mut w) = stream.into_split();
                    let idx = r.read_u32_le().await.unwrap() as usize;
                    let (up, down) = &data[idx];
                    let writer = async {
                        w.write_all(down).await.unwrap();
                        w.shutdown().await.unwrap();
                    };
                    let reader = async {
                        let mut got = Vec::with_capacity(up.len());
                        r.read_to_end(&mut got).await.unwrap();
                        got
                    };
                    let ((), got) = tokio::join!(writer, reader);
                    check_equal(&got, up, &format!("stream {idx} client -> server"));
                });
            }
            while let Some(res) = tasks.join_next().await {
                res.unwrap();
            }
            server
        })
    };

    let mut tasks = JoinSet::new();
    for idx in 0..streams {
        let stream = client.open_stream().await.unwrap();
        let data = data.clone();
        tasks.spawn(async move {
            let (up, down) = &data[idx];
            let got = exchange(stream, idx as u32, up).await;
            check_equal(&got, down, &format!("stream {idx} server -> client"));
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.unwrap();
    }
    let _server = serving.await.unwrap();
    let stats = client.stats();
    assert!(!client.is_closed(), "session ended: {stats:?}");
}

/// Opens `n` streams from the client and completes a round trip on each.
async fn established_streams(client: &Session, server: &Session, n: u8) -> Vec<Stream> {
    let mut streams = Vec::new();
    for i in 0..n {
        let mut s = client.open_stream().await.unwrap();
        s.write_all(&[i]).await.unwrap();
        let mut peer = server.accept_stream().await.expect("session open");
        let mut byte = [0u8];
        peer.read_exact(&mut byte).await.unwrap();
        assert_eq!(byte[0], i);
        peer.write_all(&[i]).await.unwrap();
        s.read_exact(&mut byte).await.unwrap();
        assert_eq!(byte[0], i);
        streams.push(s);
        streams.push(peer);
    }
    streams
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

async fn fragment(protocol: Protocol) {
    integrity(protocol, Fault::Fragment, 20, 64 * 1024).await;
}

async fn latency(protocol: Protocol) {
    let delay = Duration::from_millis(5);
    integrity(protocol, Fault::Latency(delay), 50, 256 * 1024).await;
}

async fn blackhole(protocol: Protocol) {
    let mut config = Config::new(protocol);
    config.keep_alive_interval = Duration::from_millis(200);
    config.keep_alive_timeout = match protocol {
        Protocol::Yamux => Duration::from_millis(500),
        _ => Duration::from_secs(1),
    };
    let (client, server, proxy) = pair_via_proxy(config, Fault::None).await;
    let mut streams = established_streams(&client, &server, 1).await;
    let (mut peer, mut s) = (streams.pop().unwrap(), streams.pop().unwrap());

    proxy.blackhole();
    // Both reads are polled (and blocked) before either session can end.
    let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
    let (client_read, client_end, server_read, server_end) =
        timeout(Duration::from_secs(3), async {
            tokio::join!(
                s.read(&mut a),
                client.closed(),
                peer.read(&mut b),
                server.closed()
            )
        })
        .await
        .expect("blackhole not detected within 3 s");

    for (side, end, read) in [
        ("client", client_end, client_read),
        ("server", server_end, server_read),
    ] {
        assert!(
            matches!(end, ConnectionError::KeepAliveTimeout(_)),
            "{side} session ended with {end:?}"
        );
        let err = read.expect_err("a read blocked on a dead connection must fail");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{side}: {err}");
    }
    drop(proxy);
}

async fn cut(protocol: Protocol) {
    let (client, server, proxy) = pair_via_proxy(Config::new(protocol), Fault::None).await;
    let streams = established_streams(&client, &server, 8).await;
    assert_eq!(client.num_streams(), 8);
    assert_eq!(server.num_streams(), 8);

    let mut reads = JoinSet::new();
    for mut s in streams {
        reads.spawn(async move {
            let mut buf = [0u8; 16];
            let res: io::Result<usize> = s.read(&mut buf).await;
            (s, res)
        });
    }
    proxy.cut();

    let streams = timeout(Duration::from_secs(2), async {
        let mut streams = Vec::new();
        while let Some(res) = reads.join_next().await {
            let (s, res) = res.unwrap();
            match res {
                Err(_) => streams.push(s),
                Ok(n) => panic!("stream {} read {n} bytes after the cut", s.id().0),
            }
        }
        let ends = tokio::join!(client.closed(), server.closed());
        (streams, ends)
    })
    .await;
    let (streams, (client_end, server_end)) = streams.expect("the cut not noticed within 2 s");
    for (side, end) in [("client", client_end), ("server", server_end)] {
        assert!(
            matches!(
                end,
                ConnectionError::TransportClosed | ConnectionError::Transport { .. }
            ),
            "{side} session ended with {end:?}"
        );
    }
    assert_eq!(streams.len(), 16);
    assert!(client.is_closed() && server.is_closed());

    drop(streams);
    assert_eq!(client.num_streams(), 0, "client: {:?}", client.stats());
    assert_eq!(server.num_streams(), 0, "server: {:?}", server.stats());
    // Nothing is reopened on a session that ended.
    assert!(client.open_stream().await.is_err());
    assert!(server.accept_stream().await.is_none());
}

// ---------------------------------------------------------------------------------------
// Tests: every scenario for every protocol
// ---------------------------------------------------------------------------------------

macro_rules! per_protocol {
    ($scenario:ident, $bound:expr) => {
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux1() {
                bounded($bound, super::$scenario(Protocol::SmuxV1)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn smux2() {
                bounded($bound, super::$scenario(Protocol::SmuxV2)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn yamux() {
                bounded($bound, super::$scenario(Protocol::Yamux)).await;
            }
        }
    };
}

per_protocol!(fragment, Duration::from_secs(120));
per_protocol!(latency, Duration::from_secs(120));
per_protocol!(blackhole, Duration::from_secs(10));
per_protocol!(cut, Duration::from_secs(10));
