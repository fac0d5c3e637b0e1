//! Running the Go peer (`interop/go`, the `braid-peer` program linking Go's real smux)
//! from integration tests: finding or building it, starting it as the server or the client
//! of a session with braid, reading its JSON-line reports, and the data both sides send.
#![allow(dead_code)]

use braid::{Config, Protocol, Session, Side};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
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

/// Where the Debian package `golang-github-xtaci-smux-dev` puts smux.
const GO_SMUX_SRC: &str = "/usr/share/gocode/src/github.com/xtaci/smux";

/// The Go peer's path, or `None` (after printing why) when Go is not installed and
/// `BRAID_REQUIRE_INTEROP` is not `1`; with it set, a missing Go peer fails the test.
///
/// `BRAID_GO_PEER` names a ready binary (`scripts/test.sh` sets it). Without it, the peer
/// is built once per test run into the cargo target directory, if `go` and Debian's smux
/// sources are installed (`scripts/install-peers.sh`).
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
    if !Path::new(GO_SMUX_SRC).is_dir() {
        return Err(format!(
            "BRAID_GO_PEER is unset and Go's smux sources are missing ({GO_SMUX_SRC})"
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
    fn spawn(path: &Path, args: Vec<String>) -> GoPeer {
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
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the Go peer did not exit{}", self.diagnostics()))
            .unwrap();
        // Anything it printed after "done" is worth seeing too.
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        assert!(
            status.success(),
            "the Go peer exited with {status}{}",
            self.diagnostics()
        );
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
