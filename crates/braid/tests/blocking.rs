//! The blocking API end to end over loopback TCP: integrity, half-close, timeouts, drop
//! semantics, a dead peer, keepalive and a bounded close.
//!
//! Every test runs inside `within`, so a hang fails the test instead of stalling the run.

use braid::blocking::{Session, Stream};
use braid::{Config, ConnectionError, Protocol, Side};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Runs `f` on its own thread and fails if it takes longer than `secs` seconds.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            worker.join().unwrap();
            v
        }
        // The closure panicked: re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs} s"),
    }
}

/// A connected pair of loopback TCP sockets: (client end, server end).
fn tcp_sockets() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Client and server sessions over loopback TCP, plus a clone of the server's socket
/// (to kill the connection with).
fn pair_with(client_config: Config, server_config: Config) -> (Session, Session, TcpStream) {
    let (a, b) = tcp_sockets();
    let server_socket = b.try_clone().unwrap();
    let client = Session::from_tcp(a, client_config, Side::Client).unwrap();
    let server = Session::from_tcp(b, server_config, Side::Server).unwrap();
    (client, server, server_socket)
}

/// A TCP transport that tells when the session's threads have let go of it: each
/// thread owns one clone, and every clone holds a sender of the channel whose receiver
/// ([`Threads`]) the test keeps. The receiver disconnects once every thread has ended.
struct Tracked {
    tcp: TcpStream,
    _alive: mpsc::Sender<()>,
}

/// Receives nothing; disconnects when the session's threads are gone.
type Threads = mpsc::Receiver<()>;

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

impl braid::blocking::Transport for Tracked {
    fn try_clone(&self) -> std::io::Result<Tracked> {
        Ok(Tracked {
            tcp: self.tcp.try_clone()?,
            _alive: self._alive.clone(),
        })
    }

    fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    fn socket_addrs(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        (self.tcp.local_addr().ok(), self.tcp.peer_addr().ok())
    }
}

/// A session over `tcp` whose threads can be watched.
fn tracked(tcp: TcpStream, config: Config, side: Side) -> (Session, Threads) {
    tcp.set_nodelay(true).unwrap();
    let (tx, rx) = mpsc::channel();
    let io = Tracked { tcp, _alive: tx };
    (Session::new(io, config, side).unwrap(), rx)
}

/// Client and server sessions whose threads can be watched.
fn tracked_pair(config: Config) -> (Session, Session, Threads, Threads) {
    let (a, b) = tcp_sockets();
    let (client, client_threads) = tracked(a, config.clone(), Side::Client);
    let (server, server_threads) = tracked(b, config, Side::Server);
    (client, server, client_threads, server_threads)
}

/// Waits until every thread of a session has ended.
fn threads_end(threads: Threads) {
    assert_eq!(
        threads.recv_timeout(Duration::from_secs(20)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the session's threads ended"
    );
}

fn pair(config: Config) -> (Session, Session) {
    let (client, server, _) = pair_with(config.clone(), config);
    (client, server)
}

// ---- 1. integrity ----

/// Opener side: sends `len | sha256 | data` from another thread, half-closes, reads the
/// echo and checks its hash.
fn send_and_verify(stream: Stream, data: Vec<u8>) {
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let mut w = stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(&(data.len() as u64).to_le_bytes()).unwrap();
        w.write_all(&digest).unwrap();
        w.write_all(&data).unwrap();
        w.shutdown_write();
    });
    let mut echoed = Vec::new();
    (&stream).read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    let got: [u8; 32] = Sha256::digest(&echoed).into();
    assert_eq!(got, digest, "echo corrupted ({} bytes)", echoed.len());
}

/// Acceptor side: checks the upload against the announced hash while echoing it. The
/// echo is written by a second thread so that this one never stops reading (smux v1 has
/// no per-stream flow control: an echo that stops reading can stall the session).
fn verify_and_echo(mut stream: Stream) {
    let mut w = stream.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let echo = thread::spawn(move || {
        for chunk in rx {
            w.write_all(&chunk).unwrap();
        }
        w.shutdown_write();
    });
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).unwrap();
    let mut digest = [0u8; 32];
    stream.read_exact(&mut digest).unwrap();
    let mut hasher = Sha256::new();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tx.send(buf[..n].to_vec()).unwrap();
        total += n;
    }
    drop(tx);
    assert_eq!(total as u64, u64::from_le_bytes(len));
    assert_eq!(
        <[u8; 32]>::from(hasher.finalize()),
        digest,
        "upload corrupted"
    );
    echo.join().unwrap();
}

/// Serves every stream the session accepts with `verify_and_echo`, until the session
/// ends; returns how many it served.
fn echo_all(session: Session) -> JoinHandle<usize> {
    thread::spawn(move || {
        let mut workers = Vec::new();
        while let Some(stream) = session.accept_stream() {
            workers.push(thread::spawn(move || verify_and_echo(stream)));
        }
        let n = workers.len();
        for w in workers {
            w.join().unwrap();
        }
        n
    })
}

/// Sizes spread on a log scale from 1 byte to 1 MiB.
fn random_size(rng: &mut StdRng) -> usize {
    let exp = rng.gen_range(0.0..=20.0f64);
    2f64.powf(exp) as usize
}

fn integrity(protocol: Protocol, seed: u64) {
    const FROM_CLIENT: usize = 40;
    const FROM_SERVER: usize = 10;
    let (client, server) = pair(Config::new(protocol));
    let server_echo = echo_all(server.clone());
    let client_echo = echo_all(client.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut openers = Vec::new();
    for i in 0..FROM_CLIENT + FROM_SERVER {
        let mut data = vec![0u8; random_size(&mut rng)];
        if i == 0 {
            data.resize(1 << 20, 0); // the largest size at least once
        }
        rng.fill_bytes(&mut data);
        let opener = if i < FROM_CLIENT { &client } else { &server };
        let stream = opener.open_stream().unwrap();
        openers.push(thread::spawn(move || send_and_verify(stream, data)));
    }
    for o in openers {
        o.join().unwrap();
    }
    client.close();
    assert_eq!(client.close_reason(), Some(ConnectionError::LocallyClosed));
    assert_eq!(server.closed(), ConnectionError::TransportClosed);
    assert_eq!(server_echo.join().unwrap(), FROM_CLIENT);
    assert_eq!(client_echo.join().unwrap(), FROM_SERVER);
}

#[test]
fn integrity_50_streams_both_directions_v1() {
    within(120, || integrity(Protocol::SmuxV1, 1));
}

#[test]
fn integrity_50_streams_both_directions_v2() {
    within(120, || integrity(Protocol::SmuxV2, 2));
}

#[test]
fn integrity_50_streams_both_directions_yamux() {
    within(120, || integrity(Protocol::Yamux, 3));
}

// ---- 2. half-close ----

#[test]
fn half_close_still_reads_the_reply() {
    within(30, || {
        let (client, server) = pair(Config::default());
        let mut s = client.open_stream().unwrap();
        s.write_all(b"request").unwrap();
        s.shutdown_write();
        s.shutdown_write(); // idempotent
        let err = s.write(b"more").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);

        let mut peer = server.accept_stream().unwrap();
        assert_eq!(peer.id().0, s.id().0);
        let mut request = Vec::new();
        peer.read_to_end(&mut request).unwrap(); // EOF: our FIN came after the data
        assert_eq!(request, b"request");
        // The peer answers on its still-open half, then finishes.
        let reply = vec![7u8; 300 * 1024];
        peer.write_all(&reply).unwrap();
        peer.shutdown_write();

        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, reply, "all buffered data comes before EOF");
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0, "EOF stays EOF");
    });
}

// ---- 3. timeouts ----

#[test]
fn read_timeout_then_data_still_arrives_intact() {
    within(30, || {
        let (client, server) = pair(Config::default());
        let mut s = client.open_stream().unwrap();
        s.write_all(b"x").unwrap();
        let mut peer = server.accept_stream().unwrap();
        let mut one = [0u8; 1];
        peer.read_exact(&mut one).unwrap();

        let err = s.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let timeout = Duration::from_millis(200);
        s.set_read_timeout(Some(timeout)).unwrap();
        assert_eq!(s.read_timeout().unwrap(), Some(timeout));
        let start = Instant::now();
        let err = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());

        // Data sent after the timeout arrives intact; the stream is still usable.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).unwrap();
        peer.shutdown_write();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        s.write_all(b"y").unwrap();
        peer.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"y");
    });
}

#[test]
fn write_timeout_when_the_peer_does_not_read() {
    within(30, || {
        // v2: the peer's window (256 KiB before its first update) bounds what is in
        // flight, so writes block after window + send buffer whatever the sockets hold.
        let mut config = Config::new(Protocol::SmuxV2);
        config.stream_send_buffer = 16 * 1024;
        let (client, server) = pair(config);
        let mut s = client.open_stream().unwrap();
        let timeout = Duration::from_millis(200);
        s.set_write_timeout(Some(timeout)).unwrap();
        let chunk = [9u8; 8192];
        let mut written = 0;
        let err = loop {
            match s.write(&chunk) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(written >= INITIAL_PEER_WINDOW, "{written}");
        assert!(written <= INITIAL_PEER_WINDOW + 16 * 1024, "{written}");

        // Once the peer reads, writing goes on; nothing was lost or duplicated.
        let mut peer = server.accept_stream().unwrap();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got.len()
        });
        s.set_write_timeout(None).unwrap();
        s.write_all(&chunk).unwrap();
        s.shutdown_write();
        assert_eq!(reader.join().unwrap(), written + chunk.len());
    });
}

/// smux v2's window before the peer's first update (Go's `initialPeerWindow`).
const INITIAL_PEER_WINDOW: usize = 256 * 1024;

#[test]
fn accept_timeout_then_session_end() {
    within(30, || {
        let (client, server) = pair(Config::default());
        let start = Instant::now();
        let err = server
            .accept_timeout(Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(100));

        let _s = client.open_stream().unwrap();
        let got = server.accept_timeout(Duration::from_secs(20)).unwrap();
        assert!(got.is_some());

        client.close();
        assert!(client.is_closed());
        assert!(server
            .accept_timeout(Duration::from_secs(20))
            .unwrap()
            .is_none());
        assert!(server.accept_stream().is_none());
        assert_eq!(
            server.close_reason(),
            Some(ConnectionError::TransportClosed)
        );
        let err = client.open_stream().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    });
}

// ---- 4. drop semantics ----

#[test]
fn open_close_1000_streams_then_drop_both_sessions() {
    within(60, || {
        let (client, server, client_threads, server_threads) = tracked_pair(Config::default());
        assert!(client.local_addr().is_some());
        assert_eq!(client.peer_addr(), server.local_addr());

        // Echoes each stream's upload after its FIN, then drops it.
        let acceptor = {
            let server = server.clone();
            thread::spawn(move || {
                let mut n = 0;
                while let Some(mut s) = server.accept_stream() {
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).unwrap();
                    s.write_all(&buf).unwrap();
                    n += 1;
                }
                n
            })
        };
        for _batch in 0..10 {
            let streams: Vec<Stream> = (0..100)
                .map(|_| {
                    let mut s = client.open_stream().unwrap();
                    s.write_all(&[1]).unwrap();
                    s.shutdown_write();
                    s
                })
                .collect();
            for mut s in streams {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                assert_eq!(buf, [1]);
            }
        }
        // Each peer FIN arrived after the peer forgot its stream, and our FINs were sent
        // before the peer finished, so both sides are empty now.
        assert_eq!(client.num_streams(), 0);
        assert_eq!(server.num_streams(), 0);

        // Streams dropped at once (SYN + FIN), then one round trip: control frames go
        // out before data, so when the reply arrives every FIN has been sent.
        for _ in 0..100 {
            drop(client.open_stream().unwrap());
        }
        let mut barrier = client.open_stream().unwrap();
        barrier.write_all(b"barrier").unwrap();
        barrier.shutdown_write();
        let mut buf = Vec::new();
        barrier.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"barrier");
        drop(barrier);
        assert_eq!(client.num_streams(), 0);
        assert_eq!(server.num_streams(), 0);

        // Dropping the last client handle closes gracefully and ends its threads; the
        // server sees the connection end, and its threads end too.
        drop(client);
        threads_end(client_threads);
        assert_eq!(server.closed(), ConnectionError::TransportClosed);
        assert_eq!(acceptor.join().unwrap(), 1000 + 100 + 1);
        drop(server);
        threads_end(server_threads);
    });
}

#[test]
fn a_live_stream_keeps_the_session_open() {
    within(30, || {
        let (client, server, _, server_threads) = tracked_pair(Config::default());
        let mut s = client.open_stream().unwrap();
        drop(client); // the stream still holds the session
        s.write_all(b"still here").unwrap();
        s.shutdown_write();
        let mut peer = server.accept_stream().unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"still here");
        peer.write_all(b"ok").unwrap();
        drop(peer);
        got.clear();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ok");
        drop(s); // the last handle: graceful close
        assert_eq!(server.closed(), ConnectionError::TransportClosed);
        drop(server);
        threads_end(server_threads);
    });
}

// ---- 5. the peer dies ----

#[test]
fn peer_socket_shut_down_fails_blocked_reads() {
    within(30, || {
        let (client, server, server_socket) = pair_with(Config::default(), Config::default());
        let mut s = client.open_stream().unwrap();
        s.write_all(b"x").unwrap();
        let mut peer = server.accept_stream().unwrap();
        let mut one = [0u8; 1];
        peer.read_exact(&mut one).unwrap();

        let (tx, rx) = mpsc::channel();
        let blocked = thread::spawn(move || {
            let res = s.read(&mut [0u8; 16]);
            tx.send(()).unwrap();
            (res.map_err(|e| e.kind()), s)
        });
        server_socket.shutdown(Shutdown::Both).unwrap();
        let start = Instant::now();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the blocked read returned");
        assert!(start.elapsed() < Duration::from_secs(5));
        let (res, mut s) = blocked.join().unwrap();
        assert_eq!(res.unwrap_err(), ErrorKind::ConnectionAborted);
        assert_eq!(client.closed(), ConnectionError::TransportClosed);
        // Later calls fail the same way, on both sides.
        assert_eq!(
            s.write(b"y").unwrap_err().kind(),
            ErrorKind::ConnectionAborted
        );
        assert_eq!(
            client.open_stream().unwrap_err().kind(),
            ErrorKind::ConnectionAborted
        );
        assert_eq!(server.closed(), ConnectionError::TransportClosed);
        assert_eq!(
            peer.read(&mut one).unwrap_err().kind(),
            ErrorKind::ConnectionAborted
        );
    });
}

// ---- keepalive and close bounds (the timer thread) ----

#[test]
fn silent_peer_is_detected_by_keepalive() {
    within(30, || {
        let (a, mut silent) = tcp_sockets(); // the other end reads but never answers
        let mut config = Config::default();
        config.keep_alive_interval = Duration::from_millis(50);
        config.keep_alive_timeout = Duration::from_millis(200);
        let client = Session::from_tcp(a, config, Side::Client).unwrap();
        let mut s = client.open_stream().unwrap();
        let start = Instant::now();
        let err = s.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(
            client.closed(),
            ConnectionError::KeepAliveTimeout(Duration::from_millis(200))
        );
        // The silent end got our SYN and keepalive NOPs (a client sends its first at
        // once, so it may come before the SYN), then end of file.
        let mut wire = Vec::new();
        silent.read_to_end(&mut wire).unwrap();
        // (A client sends its first NOP at once, so it may precede the SYN.)
        let cmds: Vec<u8> = wire.chunks(8).map(|h| h[1]).collect();
        assert_eq!(cmds.iter().filter(|&&c| c == 0).count(), 1, "{cmds:?}");
        assert!(
            cmds.iter().all(|&c| c == 0 || c == 3) && cmds.len() >= 3,
            "one SYN and NOPs: {cmds:?}"
        );
    });
}

#[test]
fn close_is_bounded_when_the_peer_stops_reading() {
    within(60, || {
        let (a, _stuck) = tcp_sockets(); // the other end never reads
        let mut config = Config::default();
        config.keep_alive_disabled = true;
        config.close_timeout = Duration::from_millis(300);
        let (client, client_threads) = tracked(a, config, Side::Client);
        let mut s = client.open_stream().unwrap();
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // Fill the session's buffers and both sockets until writing stalls.
        let chunk = vec![5u8; 64 * 1024];
        let err = loop {
            if let Err(e) = s.write(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        let start = Instant::now();
        client.close(); // the writer is stuck in a socket write
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(client.close_reason(), Some(ConnectionError::LocallyClosed));
        assert_eq!(s.write(&chunk).unwrap_err().kind(), ErrorKind::BrokenPipe);
        drop((client, s));
        threads_end(client_threads);
    });
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let mut config = Config::default();
    config.max_frame_size = 0;
    let (a, _b) = tcp_sockets();
    let err = Session::client(a, config.clone()).unwrap_err();
    assert_eq!(err.field, braid::ConfigField::MaxFrameSize);
    let err = Session::connect("127.0.0.1:1", config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Session>();
    check::<Stream>();
}

#[test]
fn stream_end_callback_runs_on_the_blocking_api() {
    within(60, || {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let mut config = Config::new(Protocol::Yamux);
        config.on_stream_end = Some(braid::StreamEndCallback::new(move |id, why| {
            let _ = tx.lock().unwrap().send((id.0, why.clone()));
        }));
        let (client, server) = pair(config);
        let mut s = client.open_stream().unwrap();
        s.write_all(b"x").unwrap();
        s.shutdown_write();
        let mut peer = server.accept_stream().unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        peer.shutdown_write();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let mut seen = vec![
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        seen.sort_by_key(|(id, why)| (*id, format!("{why:?}")));
        assert_eq!(
            seen,
            vec![
                (s.id().0, braid::StreamEnd::LocalClose),
                (peer.id().0, braid::StreamEnd::PeerFin)
            ]
        );
    });
}

// ---- the tokio API's methods, on threads ----

#[test]
fn named_streams_priority_stats_and_idle_timeout() {
    within(30, || {
        let mut config = Config::new(Protocol::SmuxV2);
        config.stream_names = true;
        let (client, server) = pair(config);
        assert_eq!(client.protocol(), Protocol::SmuxV2);
        let mut s = client.open_named("metrics").unwrap();
        assert_eq!(s.name().as_deref(), Some("metrics"));
        assert_eq!(s.priority(), 0);
        s.set_priority(200);
        assert_eq!(s.priority(), 200);
        s.write_all(b"cpu 0.93").unwrap();
        let peer = server.accept_stream().unwrap();
        assert_eq!(peer.name().as_deref(), Some("metrics"));
        let mut got = [0u8; 8];
        (&peer).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"cpu 0.93");
        assert_eq!(s.stats().bytes_sent, 8);
        assert_eq!(peer.stats().bytes_received, 8);
        assert_eq!(client.stats().streams, 1);
        assert!(client.stats().bytes_sent >= 8);
        let too_long = "x".repeat(70_000);
        let err = client.open_named(&too_long).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        // Nothing moves either way: the idle timeout resets the stream, and `closed`
        // says so on both ends.
        assert_eq!(peer.idle_timeout(), None);
        peer.set_idle_timeout(Some(Duration::from_millis(100)));
        assert_eq!(peer.idle_timeout(), Some(Duration::from_millis(100)));
        let start = Instant::now();
        assert_eq!(
            peer.closed(),
            braid::StreamEnd::Reset(braid::ResetReason::IdleTimeout)
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            (&peer).read(&mut [0u8; 1]).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        // smux has no RST: the opener sees the peer's FIN.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
}

#[test]
fn stream_closed_reports_how_it_ended() {
    within(30, || {
        let (client, server) = pair(Config::new(Protocol::Yamux));
        let mut s = client.open_stream().unwrap();
        s.write_all(b"x").unwrap();
        s.shutdown_write();
        let mut peer = server.accept_stream().unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        peer.shutdown_write();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(peer.closed(), braid::StreamEnd::PeerFin);
        assert_eq!(s.closed(), braid::StreamEnd::LocalClose);

        // A waiting `closed` returns when the session ends.
        let open = client.open_stream().unwrap();
        let waiting = thread::spawn(move || open.closed());
        server.close();
        assert_eq!(client.closed(), ConnectionError::TransportClosed);
        let end = waiting.join().unwrap();
        assert_ne!(end, braid::StreamEnd::LocalClose, "{end:?}");
    });
}

#[test]
fn ping_and_go_away() {
    within(30, || {
        let (client, server) = pair(Config::new(Protocol::Yamux));
        assert!(client.ping().unwrap() < Duration::from_secs(5));
        assert!(client.stats().rtt.is_some());
        // A stream the server has accepted before its GoAway.
        let kept = client.open_stream().unwrap();
        (&kept).write_all(b"x").unwrap();
        let peer = server.accept_stream().unwrap();
        (&peer).read_exact(&mut [0u8; 1]).unwrap();
        server.go_away();
        // The server's ping is answered after its GoAway has been read.
        server.ping().unwrap();
        let err = client.open_stream().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        // Existing streams go on.
        (&kept).write_all(b"still").unwrap();
        let mut got = [0u8; 5];
        (&peer).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still");

        let (smux, _smux_server) = pair(Config::new(Protocol::SmuxV1));
        assert_eq!(smux.ping().unwrap_err().kind(), ErrorKind::Unsupported);
        // A ping waiting when the session ends fails with its reason.
        client.close();
        assert_eq!(client.ping().unwrap_err().kind(), ErrorKind::BrokenPipe);
    });
}

#[test]
fn chunks_move_without_a_caller_buffer() {
    within(30, || {
        for protocol in [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux] {
            let (client, server) = pair(Config::new(protocol));
            let s = client.open_stream().unwrap();
            s.write_chunk(bytes::Bytes::from_static(b"hello, "))
                .unwrap();
            // Larger than the 4 KiB below which chunks are copied together.
            let big = bytes::Bytes::from(vec![7u8; 100_000]);
            s.write_chunk(big.clone()).unwrap();
            s.shutdown_write();
            let peer = server.accept_stream().unwrap();
            let mut got = Vec::new();
            let first = peer.read_chunk(5).unwrap().unwrap();
            assert!(!first.is_empty() && first.len() <= 5);
            got.extend_from_slice(&first);
            while let Some(chunk) = peer.read_chunk(64 * 1024).unwrap() {
                assert!(chunk.len() <= 64 * 1024);
                got.extend_from_slice(&chunk);
            }
            assert_eq!(&got[..7], b"hello, ");
            assert_eq!(&got[7..], &big[..]);
            // After the end, still the end.
            assert_eq!(peer.read_chunk(1024).unwrap(), None);
        }
    });
}
