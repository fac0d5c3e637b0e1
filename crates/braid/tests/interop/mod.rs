//! Running the Go peer (`interop/go`, the `braid-peer` program linking Go's real smux and
//! yamux) from integration tests: finding or building it, starting it as the server or the
//! client of a session with braid, reading its JSON-line reports, the data both sides
//! send, and the stream exchanges (echo, uploads, bulk) braid plays against it.
#![allow(dead_code)]

use braid::{Config, Protocol, Session, Side, Stream};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Every test is cut off after this long, so that a hang fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a test body with [`TEST_TIMEOUT`].
pub async fn bounded(body: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
        panic!("interop test hung: still running after {TEST_TIMEOUT:?}");
    }
}

// ---------------------------------------------------------------------------
// Finding the Go peer
// ---------------------------------------------------------------------------

/// Where the Debian packages `golang-github-xtaci-smux-dev` and
/// `golang-github-hashicorp-yamux-dev` put the Go libraries the peer links.
const GO_LIBRARY_SRC: [&str; 2] = [
    "/usr/share/gocode/src/github.com/xtaci/smux",
    "/usr/share/gocode/src/github.com/hashicorp/yamux",
];

/// The Go peer's path, or `None` (after printing why) when Go is not installed and
/// `BRAID_REQUIRE_INTEROP` is not `1`; with it set, a missing Go peer fails the test.
///
/// `BRAID_GO_PEER` names a ready binary (`scripts/test.sh` sets it). Without it, the peer
/// is built once per test run into the cargo target directory, if `go` and Debian's smux
/// and yamux sources are installed (`scripts/install-peers.sh`).
pub fn go_peer() -> Option<PathBuf> {
    static PEER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PEER.get_or_init(locate_or_build) {
        Ok(path) => Some(path.clone()),
        Err(reason) => {
            if std::env::var("BRAID_REQUIRE_INTEROP").as_deref() == Ok("1") {
                panic!("BRAID_REQUIRE_INTEROP=1 but the Go peer is unavailable: {reason}");
            }
            eprintln!("skipping Go interop test: {reason} (run scripts/install-peers.sh as root, or set BRAID_GO_PEER)");
            None
        }
    }
}

/// `Err` means "Go is not installed" (a skip); a peer that exists but cannot be used or
/// built is a test failure, so those cases panic.
fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("BRAID_GO_PEER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BRAID_GO_PEER={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let go_works = std::process::Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !go_works {
        return Err("BRAID_GO_PEER is unset and no `go` toolchain is on PATH".into());
    }
    if let Some(missing) = GO_LIBRARY_SRC.iter().find(|dir| !Path::new(dir).is_dir()) {
        return Err(format!(
            "BRAID_GO_PEER is unset and Go library sources are missing ({missing})"
        ));
    }
    Ok(build_peer())
}

fn build_peer() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/go");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    std::fs::create_dir_all(&out_dir).expect("create the Go peer's output directory");
    let out = out_dir.join("braid-peer");
    // Build under a private name and rename: another test binary may be running the
    // previous build.
    let tmp = out_dir.join(format!("braid-peer.{}", std::process::id()));
    let mut cmd = std::process::Command::new("go");
    cmd.current_dir(&src)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode");
    if std::env::var_os("GOCACHE").is_none()
        && std::env::var_os("HOME").is_none()
        && std::env::var_os("XDG_CACHE_HOME").is_none()
    {
        cmd.env("GOCACHE", out_dir.join("cache"));
    }
    let built = cmd.output().expect("run `go build`");
    assert!(
        built.status.success(),
        "building the Go peer in {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the Go peer into place");
    out
}

// ---------------------------------------------------------------------------
// Running it
// ---------------------------------------------------------------------------

/// Who dials: braid's client connects to the Go server, or Go's client to braid's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// braid is the client (odd stream ids), Go listens.
    BraidClient,
    /// Go is the client, braid listens.
    GoClient,
}

impl Dir {
    /// braid's side of the session.
    pub fn braid_side(self) -> Side {
        match self {
            Dir::BraidClient => Side::Client,
            Dir::GoClient => Side::Server,
        }
    }
}

/// The Go peer's name for a protocol.
pub fn proto_name(proto: Protocol) -> &'static str {
    match proto {
        Protocol::SmuxV1 => "smux1",
        Protocol::SmuxV2 => "smux2",
        Protocol::Yamux => "yamux",
        other => panic!("no Go peer for {other:?}"),
    }
}

/// A running Go peer and what it has reported so far.
pub struct GoPeer {
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    command: String,
}

/// Starts a session between braid (with `config`) and a Go peer playing `scenario` with
/// the extra flags `args`. Returns `None` when the test is to be skipped (see
/// [`go_peer`]).
pub async fn start(
    proto: Protocol,
    dir: Dir,
    mut config: Config,
    scenario: &str,
    args: &[&str],
) -> Option<(Session, GoPeer)> {
    let (tcp, go) = connect(proto, dir, scenario, args).await?;
    config.protocol = proto;
    let session = Session::from_tcp(tcp, config, dir.braid_side()).unwrap();
    Some((session, go))
}

/// Starts the Go peer and returns the TCP connection to it, for tests that set up braid's
/// session themselves. `None` means skip, as for [`start`].
pub async fn connect(
    proto: Protocol,
    dir: Dir,
    scenario: &str,
    args: &[&str],
) -> Option<(TcpStream, GoPeer)> {
    let path = go_peer()?;
    let mode = match dir {
        Dir::BraidClient => "server",
        Dir::GoClient => "client",
    };
    let mut argv: Vec<String> = ["-mode", mode, "-proto", proto_name(proto)]
        .into_iter()
        .chain(["-scenario", scenario])
        .map(String::from)
        .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    match dir {
        Dir::BraidClient => {
            argv.extend(["-addr".into(), "127.0.0.1:0".into()]);
            let mut go = GoPeer::spawn(&path, argv);
            let listening = go.expect("listening").await;
            let addr = listening["addr"]
                .as_str()
                .expect("listening.addr")
                .to_owned();
            let tcp = TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("connect to the Go peer at {addr}: {e}"));
            Some((tcp, go))
        }
        Dir::GoClient => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            argv.extend(["-addr".into(), listener.local_addr().unwrap().to_string()]);
            let go = GoPeer::spawn(&path, argv);
            let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
            let (tcp, _) = accepted
                .unwrap_or_else(|_| panic!("the Go client did not connect{}", go.diagnostics()))
                .unwrap();
            Some((tcp, go))
        }
    }
}

impl GoPeer {
    /// Starts the Go peer program at `path` with `args`, collecting its JSON-line events
    /// and its stderr; it is killed on drop.
    pub fn spawn(path: &Path, args: Vec<String>) -> GoPeer {
        let command = format!("{} {}", path.display(), args.join(" "));
        let mut child = Command::new(path)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {command}: {e}"));
        let (tx, events) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line).unwrap_or_else(|e| {
                    serde_json::json!({"event": "unparsable", "line": line, "error": e.to_string()})
                });
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        GoPeer {
            child,
            events,
            seen: Vec::new(),
            stderr,
            command,
        }
    }

    /// What to print when something about the Go peer goes wrong.
    pub fn diagnostics(&self) -> String {
        format!(
            "\n  command: {}\n  events: {:?}\n  stderr: {}",
            self.command,
            self.seen,
            self.stderr.lock().unwrap()
        )
    }

    /// The next event. An `error` event, or the end of the output, fails the test.
    pub async fn next_event(&mut self) -> Value {
        let Some(event) = self.events.recv().await else {
            panic!(
                "the Go peer's output ended before the expected event{}",
                self.diagnostics()
            );
        };
        self.seen.push(event.clone());
        if event["event"] == "error" || event["event"] == "unparsable" {
            panic!("the Go peer failed{}", self.diagnostics());
        }
        event
    }

    /// The next event, which must be `name`.
    pub async fn expect(&mut self, name: &str) -> Value {
        let event = self.next_event().await;
        assert_eq!(
            event["event"],
            name,
            "unexpected event from the Go peer{}",
            self.diagnostics()
        );
        event
    }

    /// Every event up to `done` (which is not included).
    pub async fn until_done(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let event = self.next_event().await;
            if event["event"] == "done" {
                return out;
            }
            out.push(event);
        }
    }

    /// The Go peer exits once braid has closed the connection; it must exit successfully.
    pub async fn exited_ok(mut self) {
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "the Go peer exited with {status}{}",
            self.diagnostics()
        );
    }

    /// Waits (at most 10 s) for the Go peer to exit and its output to end; everything it
    /// printed is added to [`GoPeer::seen`].
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let rest = async {
            let status = self.child.wait().await.unwrap();
            while let Some(event) = self.events.recv().await {
                self.seen.push(event);
            }
            status
        };
        match tokio::time::timeout(Duration::from_secs(10), rest).await {
            Ok(status) => status,
            Err(_) => panic!("the Go peer did not exit{}", self.diagnostics()),
        }
    }

    /// How many events named `name` were seen so far.
    pub fn count(&self, name: &str) -> usize {
        self.seen.iter().filter(|e| e["event"] == name).count()
    }

    /// Every event until the Go peer's output ends (an `error` event does not fail the
    /// test here), then its exit status and what it printed on stderr. For scenarios in
    /// which Go is expected to fail.
    pub async fn until_exit(mut self) -> (std::process::ExitStatus, Vec<Value>, String) {
        let mut events = std::mem::take(&mut self.seen);
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = self.events.recv().await {
                events.push(event);
            }
        });
        if rest.await.is_err() {
            panic!("the Go peer's output did not end{}", self.diagnostics());
        }
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the Go peer did not exit{}", self.diagnostics()))
            .unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        (status, events, stderr)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill the Go peer");
    }
}

/// The end of a scenario: Go reports `done` (its events are returned), braid closes the
/// session, and Go, which waits for that, exits successfully.
pub async fn finish(session: Session, mut go: GoPeer) -> Vec<Value> {
    let events = go.until_done().await;
    session.close().await;
    go.exited_ok().await;
    events
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

/// One stream as a side saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub stream: u32,
    pub bytes: u64,
    pub sha256: String,
}

impl Record {
    pub fn of(stream: u32, data: &[u8]) -> Record {
        Record {
            stream,
            bytes: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    pub fn from_event(event: &Value) -> Record {
        Record {
            stream: event["stream"].as_u64().expect("stream") as u32,
            bytes: event["bytes"].as_u64().expect("bytes"),
            sha256: event["sha256"].as_str().expect("sha256").to_owned(),
        }
    }
}

/// The Go peer's `stream_done` reports of one role, sorted by stream.
pub fn go_records(events: &[Value], role: &str) -> Vec<Record> {
    let mut out: Vec<Record> = events
        .iter()
        .filter(|e| e["event"] == "stream_done" && e["role"] == role)
        .map(Record::from_event)
        .collect();
    out.sort();
    out
}

/// The one event named `name`.
pub fn single<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(found.len(), 1, "expected one {name:?} event in {events:?}");
    found[0]
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Index of the first difference between `a` and `b` (a length difference counts).
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Asserts `got == want` without printing megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_diff(got, want) {
        panic!(
            "{what}: got {} bytes, expected {}; first difference at byte {i}",
            got.len(),
            want.len()
        );
    }
}

// ---------------------------------------------------------------------------
// Generated data (the same bytes as the Go peer's `pattern`)
// ---------------------------------------------------------------------------

/// The period of the pattern: 1 MiB + 8, so that no two frames of a long transfer carry
/// the same bytes (a reordered, duplicated or lost frame always changes the hash).
pub const PATTERN_BLOCK_LEN: usize = (1 << 20) + 8;

/// The data both sides send: the little-endian bytes of the SplitMix64 sequence started
/// at a seed, repeated with period [`PATTERN_BLOCK_LEN`]. Identical to the Go peer's
/// `pattern`, so either side can check the other's data itself, not only its hash.
pub struct Pattern {
    block: Vec<u8>,
}

/// The pattern for `seed`, generated once per test binary.
pub fn pattern(seed: u64) -> Arc<Pattern> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<Pattern>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    cache
        .lock()
        .unwrap()
        .entry(seed)
        .or_insert_with(|| Arc::new(Pattern::new(seed)))
        .clone()
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        let mut block = Vec::with_capacity(PATTERN_BLOCK_LEN);
        let mut x = seed;
        while block.len() < PATTERN_BLOCK_LEN {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            block.extend_from_slice(&z.to_le_bytes());
        }
        Pattern { block }
    }

    /// `n` bytes starting at `offset`.
    pub fn bytes_at(&self, offset: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut pos = (offset % PATTERN_BLOCK_LEN as u64) as usize;
        while out.len() < n {
            let take = (n - out.len()).min(PATTERN_BLOCK_LEN - pos);
            out.extend_from_slice(&self.block[pos..pos + take]);
            pos = 0;
        }
        out
    }

    /// The bytes from `offset` to the end of the block (at most [`PATTERN_BLOCK_LEN`]),
    /// for streaming long transfers without copying.
    pub fn chunk_at(&self, offset: u64) -> &[u8] {
        &self.block[(offset % PATTERN_BLOCK_LEN as u64) as usize..]
    }
}

/// Where the data of a side's i-th stream starts in the pattern (as in the Go peer).
pub fn stream_offset(i: usize) -> u64 {
    i as u64 * 1_000_003
}

// ---------------------------------------------------------------------------
// Stream exchanges braid plays against the Go peer's scenarios
// ---------------------------------------------------------------------------

/// The upload header: `length u64 LE | SHA-256`.
pub const UPLOAD_HEADER: usize = 8 + 32;
/// A sanity bound on the length an upload announces.
pub const UPLOAD_LIMIT: usize = 64 << 20;

/// The scenario's stream: braid opens it when it is the client, else accepts Go's.
pub async fn open_or_accept(session: &Session, dir: Dir) -> Stream {
    match dir {
        Dir::BraidClient => session.open_stream().await.expect("open"),
        Dir::GoClient => session.accept_stream().await.expect("Go opens a stream"),
    }
}

pub async fn open_or_accept_n(session: &Session, dir: Dir, n: usize) -> Vec<Stream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(open_or_accept(session, dir).await);
    }
    out
}

/// Opens (braid client) or accepts (braid server) `n` streams, running `serve` on each in
/// its own task as soon as it is there; returns the results in that order. Accepting
/// them all before serving any can stall: data of a stream nobody reads may spend the
/// session's receive budget before the next SYN is read, and smux reads nothing at all
/// while the budget is spent (Go's initial v2 window, 256 KiB, lets it happen in v2 too;
/// braid's yamux sessions pause the same way once `max_receive_buffer` is spent).
pub async fn each_stream<F, Fut, T>(session: &Session, dir: Dir, n: usize, serve: F) -> Vec<T>
where
    F: Fn(usize, Stream) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let stream = open_or_accept(session, dir).await;
        tasks.push(tokio::spawn(serve(i, stream)));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Sends `data` while reading the echo (at the same time: writing everything first would
/// stall once the echo fills the buffers on its way back), checks it, half-closes, and
/// expects the echoing side to close in turn.
pub async fn braid_echo_opener(stream: Stream, data: &[u8]) {
    let id = stream.id().0;
    let (mut r, mut w) = stream.into_split();
    let to_send = data.to_vec();
    // The write half is handed back: dropping it would half-close.
    let writer = tokio::spawn(async move { w.write_all(&to_send).await.map(|()| w) });
    let mut echo = vec![0u8; data.len()];
    r.read_exact(&mut echo).await.expect("read the echo");
    let mut w = writer.await.unwrap().expect("write");
    assert_same_bytes(&echo, data, "echo");
    w.shutdown().await.unwrap();
    let n = r.read(&mut [0u8; 1]).await.expect("read the end of stream");
    assert_eq!(n, 0, "stream {id}: the echoing side closes after the echo");
}

/// Echoes until end of stream, then half-closes; returns what it echoed.
pub async fn braid_echo_acceptor(stream: Stream) -> Vec<u8> {
    let (mut r, mut w) = stream.into_split();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        w.write_all(&buf[..n]).await.expect("echo");
    }
    w.shutdown().await.unwrap();
    all
}

/// Opens `n` streams at once, each uploading a log-uniform random size between 1 and
/// `max` (seeded by `seed`); returns what was sent, sorted by stream.
pub async fn open_uploads(session: &Session, n: usize, max: usize, seed: u64) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    let max_exp = (max as f64).log2();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let size = (2f64.powf(rng.gen_range(0.0..max_exp)) as usize).max(1);
            let session = session.clone();
            tokio::spawn(async move {
                let stream = session.open_stream().await.expect("open");
                upload(stream, pattern(seed).bytes_at(stream_offset(i), size)).await
            })
        })
        .collect();
    let mut records = Vec::new();
    for t in tasks {
        records.push(t.await.unwrap());
    }
    records.sort();
    records
}

/// The opener's side of the upload protocol: `length u64 LE | SHA-256 | data`, then the
/// echo must come back whole, followed by the acceptor's close.
pub async fn upload(mut stream: Stream, data: Vec<u8>) -> Record {
    let id = stream.id().0;
    let mut msg = Vec::with_capacity(UPLOAD_HEADER + data.len());
    msg.extend_from_slice(&(data.len() as u64).to_le_bytes());
    msg.extend_from_slice(&Sha256::digest(&data));
    msg.extend_from_slice(&data);
    stream.write_all(&msg).await.expect("upload");
    let mut echo = vec![0u8; data.len()];
    stream.read_exact(&mut echo).await.expect("read the echo");
    assert_same_bytes(&echo, &data, &format!("echo on stream {id}"));
    let n = stream.read(&mut [0u8; 1]).await.expect("read the end");
    assert_eq!(n, 0, "stream {id}: the acceptor closes after its echo");
    Record::of(id, &data)
}

/// Accepts `n` upload streams and serves each in its own task; returns what was
/// received, sorted by stream.
pub async fn serve_uploads(session: &Session, n: usize) -> Vec<Record> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let stream = session.accept_stream().await.expect("accept");
        tasks.push(tokio::spawn(serve_upload(stream)));
    }
    let mut records = Vec::new();
    for t in tasks {
        records.push(t.await.unwrap());
    }
    records.sort();
    records
}

/// The acceptor's side: reads the whole upload before replying (an echo that stops
/// reading while its write is blocked can deadlock smux under load), checks its hash,
/// echoes it and half-closes; the opener then closes.
pub async fn serve_upload(mut stream: Stream) -> Record {
    let id = stream.id().0;
    let mut header = [0u8; UPLOAD_HEADER];
    stream
        .read_exact(&mut header)
        .await
        .expect("read the header");
    let len = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
    assert!(len <= UPLOAD_LIMIT, "stream {id}: upload of {len} bytes");
    let mut data = vec![0u8; len];
    stream.read_exact(&mut data).await.expect("read the upload");
    assert_eq!(
        Sha256::digest(&data).as_slice(),
        &header[8..],
        "stream {id}: upload of {len} bytes corrupted"
    );
    stream.write_all(&data).await.expect("echo");
    stream.shutdown().await.unwrap();
    let n = stream.read(&mut [0u8; 1]).await.expect("read the end");
    assert_eq!(n, 0, "stream {id}: the opener closes after the echo");
    Record::of(id, &data)
}

/// The sender's side of the bulk exchange: `len u64 LE`, then `len` bytes of the pattern
/// of `seed`; the receiver's SHA-256 must match, followed by its close.
pub async fn bulk_send(mut stream: Stream, len: u64, seed: u64) -> Record {
    let id = stream.id().0;
    stream.write_all(&len.to_le_bytes()).await.unwrap();
    let pat = pattern(seed);
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    while sent < len {
        let chunk = pat.chunk_at(sent);
        let chunk = &chunk[..chunk.len().min((len - sent) as usize)];
        stream.write_all(chunk).await.expect("send");
        hasher.update(chunk);
        sent += chunk.len() as u64;
    }
    let sum = hasher.finalize();
    let mut digest = [0u8; 32];
    stream
        .read_exact(&mut digest)
        .await
        .expect("read the digest");
    assert_eq!(digest.as_slice(), sum.as_slice(), "the receiver's SHA-256");
    let n = stream.read(&mut [0u8; 1]).await.expect("read the end");
    assert_eq!(n, 0, "the receiver closes after its digest");
    Record {
        stream: id,
        bytes: len,
        sha256: hex(&sum),
    }
}

/// The receiver's side of the bulk exchange: reads the length and the data, replies with
/// the SHA-256 and half-closes; the sender then closes.
pub async fn bulk_receive(mut stream: Stream) -> Record {
    let id = stream.id().0;
    let len = stream.read_u64_le().await.expect("read the length");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = stream.read(&mut buf[..want]).await.expect("receive");
        assert!(n > 0, "end of stream with {left} bytes to go");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let sum = hasher.finalize();
    stream.write_all(&sum).await.unwrap();
    stream.shutdown().await.unwrap();
    let n = stream.read(&mut [0u8; 1]).await.expect("read the end");
    assert_eq!(n, 0, "the sender closes after checking the digest");
    Record {
        stream: id,
        bytes: len,
        sha256: hex(&sum),
    }
}

/// Waits for Go's start byte, sends a request, half-closes, and reads the reply to end of
/// stream. Returns (request, reply).
pub async fn request_then_half_close(mut stream: Stream, len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut start = [0u8; 1];
    stream
        .read_exact(&mut start)
        .await
        .expect("Go's start byte");
    assert_eq!(start[0], b'G');
    let request = pattern(52).bytes_at(0, len);
    stream.write_all(&request).await.expect("write the request");
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .expect("read the reply after half-closing");
    (request, reply)
}
