//! Runs every (library, workload) pair in its own child process, repeated and
//! interleaved: for each repeat, for each workload, every library once.
//!
//! Children: `braid bench-child` (this binary: raw TCP and braid), `braid-bench child`
//! (the other Rust crates, built on demand with cargo so that they stay out of this
//! binary) and the Go peer built from `bench/go` with Debian's smux and yamux.

use super::sample::Sample;
use super::Proto;
use serde::Serialize;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A library the benchmark can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Lib {
    /// Raw TCP, one connection per stream: the baseline.
    #[serde(rename = "tcp")]
    Tcp,
    /// braid, smux v1.
    #[serde(rename = "braid-smux1")]
    BraidSmux1,
    /// braid, smux v2.
    #[serde(rename = "braid-smux2")]
    BraidSmux2,
    /// braid, yamux.
    #[serde(rename = "braid-yamux")]
    BraidYamux,
    /// braid's tunnel, yamux, with a pre-shared key (tunnel workload only).
    #[serde(rename = "braid-yamux+psk")]
    BraidYamuxPsk,
    /// braid's tunnel, yamux, with mutual TLS (tunnel workload only).
    #[serde(rename = "braid-yamux+mtls")]
    BraidYamuxMtls,
    /// Go xtaci/smux, protocol version 1.
    #[serde(rename = "go-smux1")]
    GoSmux1,
    /// The `async_smux` crate 0.4 (smux v1).
    #[serde(rename = "async_smux")]
    AsyncSmux,
    /// The `tokio_smux` crate 0.2 (smux v1).
    #[serde(rename = "tokio_smux")]
    TokioSmux,
    /// Go xtaci/smux, protocol version 2.
    #[serde(rename = "go-smux2")]
    GoSmux2,
    /// Go hashicorp/yamux.
    #[serde(rename = "go-yamux")]
    GoYamux,
    /// The `yamux` crate 0.14 (libp2p).
    #[serde(rename = "yamux")]
    Yamux,
    /// The `tokio-yamux` crate 0.3 (tentacle).
    #[serde(rename = "tokio-yamux")]
    TokioYamux,
}

/// Which program runs a library's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This binary (`braid bench-child`).
    Braid,
    /// The `braid-bench` binary (`braid-bench child`).
    RustPeers,
    /// The Go peer.
    Go,
}

impl Lib {
    /// Every library, in table order.
    pub const ALL: [Lib; 13] = [
        Lib::Tcp,
        Lib::BraidSmux1,
        Lib::BraidSmux2,
        Lib::BraidYamux,
        Lib::BraidYamuxPsk,
        Lib::BraidYamuxMtls,
        Lib::GoSmux1,
        Lib::AsyncSmux,
        Lib::TokioSmux,
        Lib::GoSmux2,
        Lib::GoYamux,
        Lib::Yamux,
        Lib::TokioYamux,
    ];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Lib::Tcp => "tcp",
            Lib::BraidSmux1 => "braid-smux1",
            Lib::BraidSmux2 => "braid-smux2",
            Lib::BraidYamux => "braid-yamux",
            Lib::BraidYamuxPsk => "braid-yamux+psk",
            Lib::BraidYamuxMtls => "braid-yamux+mtls",
            Lib::GoSmux1 => "go-smux1",
            Lib::AsyncSmux => "async_smux",
            Lib::TokioSmux => "tokio_smux",
            Lib::GoSmux2 => "go-smux2",
            Lib::GoYamux => "go-yamux",
            Lib::Yamux => "yamux",
            Lib::TokioYamux => "tokio-yamux",
        }
    }

    /// The protocol it speaks (`None` for raw TCP).
    pub fn protocol(self) -> Option<Proto> {
        match self {
            Lib::Tcp => None,
            Lib::BraidSmux1 | Lib::GoSmux1 | Lib::AsyncSmux | Lib::TokioSmux => Some(Proto::Smux1),
            Lib::BraidSmux2 | Lib::GoSmux2 => Some(Proto::Smux2),
            Lib::BraidYamux
            | Lib::BraidYamuxPsk
            | Lib::BraidYamuxMtls
            | Lib::GoYamux
            | Lib::Yamux
            | Lib::TokioYamux => Some(Proto::Yamux),
        }
    }

    /// Which program runs it.
    pub fn source(self) -> Source {
        match self {
            Lib::Tcp
            | Lib::BraidSmux1
            | Lib::BraidSmux2
            | Lib::BraidYamux
            | Lib::BraidYamuxPsk
            | Lib::BraidYamuxMtls => Source::Braid,
            Lib::GoSmux1 | Lib::GoSmux2 | Lib::GoYamux => Source::Go,
            _ => Source::RustPeers,
        }
    }

    /// A peer: neither braid nor raw TCP.
    pub fn is_peer(self) -> bool {
        self.source() != Source::Braid
    }

    /// braid's tunnel with authentication on (tunnel workload only).
    pub fn is_authenticated(self) -> bool {
        matches!(self, Lib::BraidYamuxPsk | Lib::BraidYamuxMtls)
    }

    /// For an authenticated row, the same tunnel without authentication.
    pub fn unauthenticated(self) -> Option<Lib> {
        self.is_authenticated().then_some(Lib::BraidYamux)
    }

    /// The `--lib` value its child takes.
    fn child_name(self) -> &'static str {
        match self {
            Lib::GoSmux1 => "smux1",
            Lib::GoSmux2 => "smux2",
            Lib::GoYamux => "yamux",
            other => other.name(),
        }
    }
}

/// One measurement to make with every library: a workload and its size.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "workload", rename_all = "lowercase")]
pub enum Spec {
    /// `streams` streams each carry `per_stream` bytes in `chunk`-sized writes.
    Bulk {
        /// Streams at once.
        streams: usize,
        /// Bytes per stream.
        per_stream: u64,
        /// Size of each write and read buffer.
        chunk: usize,
    },
    /// Ping-pong of 64-byte messages on one stream.
    Latency {
        /// Timed round trips.
        round_trips: u64,
    },
    /// Open, echo 1 byte, close, for a while.
    Churn {
        /// How long, in milliseconds.
        duration_ms: u64,
        /// Client tasks at once.
        workers: usize,
    },
    /// Streams opened and held idle.
    Idle {
        /// How many.
        streams: usize,
    },
    /// TCP connections through a tunnel (separate processes) to a sink.
    Tunnel {
        /// Parallel connections.
        conns: usize,
        /// Bytes each connection sends.
        per_conn: u64,
        /// Size of each write and read buffer.
        chunk: usize,
    },
}

/// Latency message size.
pub const PING_SIZE: usize = 64;

impl Spec {
    /// A short label for progress and plots.
    pub fn label(&self) -> String {
        match self {
            Spec::Bulk {
                streams,
                per_stream,
                ..
            } => format!("bulk {streams}x{}", super::report::human_bytes(*per_stream)),
            Spec::Latency { .. } => "latency".into(),
            Spec::Churn { .. } => "churn".into(),
            Spec::Idle { .. } => "idle".into(),
            Spec::Tunnel {
                conns, per_conn, ..
            } => format!("tunnel {conns}x{}", super::report::human_bytes(*per_conn)),
        }
    }

    /// Whether `lib` takes part: raw TCP has no idle streams to measure; the tunnel
    /// workload runs braid's and Go's tunnels (no Rust peer crates), and only it has
    /// the authenticated rows.
    pub fn applies_to(&self, lib: Lib) -> bool {
        match self {
            Spec::Idle { .. } => lib != Lib::Tcp && !lib.is_authenticated(),
            Spec::Tunnel { .. } => lib.source() != Source::RustPeers,
            _ => !lib.is_authenticated(),
        }
    }

    /// The child's workload flags, and how long it may take.
    fn flags(&self, sample_ms: u64) -> (Vec<String>, Duration) {
        let s = |v: &str| v.to_string();
        match *self {
            Spec::Bulk {
                streams,
                per_stream,
                chunk,
            } => {
                // Allow for 10 MB/s, far below the slowest library here.
                let secs = (streams as u64 * per_stream) as f64 / 10e6;
                (
                    vec![
                        s("--workload"),
                        s("bulk"),
                        s("--streams"),
                        streams.to_string(),
                        s("--bytes"),
                        per_stream.to_string(),
                        s("--chunk"),
                        chunk.to_string(),
                        s("--sample-ms"),
                        sample_ms.to_string(),
                    ],
                    Duration::from_secs(60) + Duration::from_secs_f64(secs),
                )
            }
            Spec::Latency { round_trips } => (
                vec![
                    s("--workload"),
                    s("latency"),
                    s("--round-trips"),
                    round_trips.to_string(),
                    s("--size"),
                    PING_SIZE.to_string(),
                ],
                // 1 ms per round trip is 20x what any library here needs on loopback.
                Duration::from_secs(60) + Duration::from_millis(round_trips),
            ),
            Spec::Churn {
                duration_ms,
                workers,
            } => (
                vec![
                    s("--workload"),
                    s("churn"),
                    s("--duration-ms"),
                    duration_ms.to_string(),
                    s("--workers"),
                    workers.to_string(),
                ],
                Duration::from_secs(60) + Duration::from_millis(duration_ms),
            ),
            Spec::Idle { streams } => (
                vec![
                    s("--workload"),
                    s("idle"),
                    s("--streams"),
                    streams.to_string(),
                ],
                Duration::from_secs(120),
            ),
            Spec::Tunnel {
                conns,
                per_conn,
                chunk,
            } => {
                let secs = (conns as u64 * per_conn) as f64 / 10e6;
                (
                    vec![
                        s("--workload"),
                        s("tunnel"),
                        s("--streams"),
                        conns.to_string(),
                        s("--bytes"),
                        per_conn.to_string(),
                        s("--chunk"),
                        chunk.to_string(),
                    ],
                    Duration::from_secs(60) + Duration::from_secs_f64(secs),
                )
            }
        }
    }
}

/// One run as the runner records it.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Index into the specs.
    pub spec: usize,
    /// The library.
    pub lib: Lib,
    /// Which repetition (from 0).
    pub repeat: usize,
    /// What the child reported.
    pub sample: Sample,
}

/// The programs that run children, and why some cannot.
pub struct Programs {
    braid: PathBuf,
    rust_peers: Result<PathBuf, String>,
    go: Result<PathBuf, String>,
    /// The interop peer (interop/go), whose tunnel modes the tunnel workload runs.
    go_tunnel: Result<PathBuf, String>,
}

/// Which programs a run needs besides this binary.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The Rust peer crates and the Go bench peer (workloads other than tunnel).
    pub libraries: bool,
    /// The Go tunnel (the tunnel workload).
    pub tunnel: bool,
}

impl Programs {
    /// Finds (and builds, where needed) the programs; `peers`: also the Rust and Go
    /// peers that `needs` asks for. Missing peers are reported on stderr and skipped.
    pub fn find(peers: bool, needs: Needs) -> io::Result<Programs> {
        let braid = std::env::current_exe()?;
        let off = |why: &str| Err(why.to_string());
        let asked = |need: bool, find: &dyn Fn() -> Result<PathBuf, String>| match (peers, need) {
            (false, _) => off("not asked for (--peers)"),
            (true, false) => off("not needed by these workloads"),
            (true, true) => find(),
        };
        let rust_peers = asked(needs.libraries, &|| rust_peers(&braid));
        let go = asked(needs.libraries, &|| go_peer(&braid));
        let go_tunnel = asked(needs.tunnel, &|| go_tunnel(&braid));
        for (need, found, what) in [
            (needs.libraries, &rust_peers, "the Rust peer crates"),
            (needs.libraries, &go, "the Go peers"),
            (needs.tunnel, &go_tunnel, "the Go tunnel"),
        ] {
            if let (true, true, Err(why)) = (peers, need, found) {
                eprintln!("braid bench: skipping {what}: {why}");
            }
        }
        Ok(Programs {
            braid,
            rust_peers,
            go,
            go_tunnel,
        })
    }

    /// Whether `lib` can run here (for some workload).
    pub fn has(&self, lib: Lib) -> bool {
        match lib.source() {
            Source::Braid => true,
            Source::RustPeers => self.rust_peers.is_ok(),
            Source::Go => self.go.is_ok() || self.go_tunnel.is_ok(),
        }
    }

    /// Runs one child and returns what it reported (a failed sample if it failed, hung
    /// past its timeout or printed no result).
    pub fn run(&self, lib: Lib, spec: &Spec, sample_ms: u64, current_thread: bool) -> Sample {
        let (mut flags, timeout) = spec.flags(sample_ms);
        if let Spec::Tunnel { .. } = spec {
            // The load runs in this binary's child; the tunnel under test is its own
            // processes.
            let mut cmd = Command::new(&self.braid);
            cmd.arg("bench-child")
                .arg("--lib")
                .arg(lib.name())
                .args(flags);
            if lib.source() == Source::Go {
                match &self.go_tunnel {
                    Ok(p) => cmd.arg("--go-peer").arg(p),
                    Err(why) => return Sample::not_applicable(why.clone()),
                };
            }
            if current_thread {
                cmd.arg("--current-thread");
            }
            return run_child(cmd, timeout);
        }
        if lib.is_authenticated() {
            return Sample::not_applicable("tunnel workload only");
        }
        let mut cmd = match lib.source() {
            Source::Braid => {
                let mut c = Command::new(&self.braid);
                c.arg("bench-child");
                c
            }
            Source::RustPeers => match &self.rust_peers {
                Ok(p) => {
                    let mut c = Command::new(p);
                    c.arg("child");
                    c
                }
                Err(why) => return Sample::not_applicable(why.clone()),
            },
            Source::Go => match &self.go {
                Ok(p) => Command::new(p),
                Err(why) => return Sample::not_applicable(why.clone()),
            },
        };
        if current_thread {
            if lib.source() == Source::Go {
                // Go's nearest equivalent: one thread running goroutines.
                cmd.env("GOMAXPROCS", "1");
            } else {
                flags.push("--current-thread".into());
            }
        }
        cmd.arg("--lib").arg(lib.child_name()).args(flags);
        run_child(cmd, timeout)
    }
}

/// Runs a child and reads its JSON line.
fn run_child(mut cmd: Command, timeout: Duration) -> Sample {
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Sample::failed(format!("cannot start {:?}: {e}", cmd.get_program())),
    };
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                kill_children(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            // Polling the child's exit: it has no async handle here, and 10 ms is small
            // next to any run.
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Sample::failed(format!("waiting for the child: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Sample::failed(format!("timed out after {:.0} s", timeout.as_secs_f64()));
    };
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    match line.map(serde_json::from_str::<Sample>) {
        Some(Ok(sample)) => sample,
        Some(Err(e)) => Sample::failed(format!("unreadable result ({e})")),
        None => {
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            Sample::failed(format!("{status}: {last}"))
        }
    }
}

/// Kills the processes a hung child started (the tunnel workload's tunnel processes),
/// which would outlive it otherwise.
fn kill_children(pid: u32) {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let Ok(list) = std::fs::read_to_string(path) else {
        return;
    };
    let pids: Vec<&str> = list.split_whitespace().collect();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The workspace this binary was built from, if its sources are still there.
fn workspace() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("bench/Cargo.toml").is_file().then_some(root)
}

/// Finds the `braid-bench` binary with the Rust peer crates: `$BRAID_BENCH_PEERS`, or
/// built with cargo (same profile and target directory as this binary) and taken from
/// next to it.
fn rust_peers(braid: &Path) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("BRAID_BENCH_PEERS") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("BRAID_BENCH_PEERS={} is not a file", bin.display()))
        };
    }
    let dir = braid.parent().ok_or("cannot place braid-bench")?;
    let bin = dir.join("braid-bench");
    if let (Some(root), Some(target), Some(profile)) = (
        workspace(),
        dir.parent(),
        dir.file_name().and_then(|p| p.to_str()),
    ) {
        let profile = if profile == "debug" { "dev" } else { profile };
        eprintln!("braid bench: building braid-bench (the Rust peer crates) with cargo ...");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                profile,
                "-p",
                "braid-bench",
            ])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(format!("cargo build -p braid-bench: {s}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound && bin.is_file() => {}
            Err(e) => return Err(format!("cargo: {e}")),
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no {}", bin.display()))
    }
}

/// Finds or builds the Go peer: `$BRAID_BENCH_GO` if set, else `go build` of
/// `bench/go` into `<target>/go/braid-bench-go`, in GOPATH mode against Debian's
/// packages in /usr/share/gocode (or `$BRAID_BENCH_GOPATH`).
fn go_peer(braid: &Path) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("BRAID_BENCH_GO") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("BRAID_BENCH_GO={} is not a file", bin.display()))
        };
    }
    go_build(braid, "bench/go", "braid-bench-go")
}

/// Finds or builds the interop peer for the Go tunnel: `$BRAID_GO_PEER` if set (as the
/// tests take it), else `go build` of `interop/go` into `<target>/go/braid-peer`.
fn go_tunnel(braid: &Path) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("BRAID_GO_PEER") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("BRAID_GO_PEER={} is not a file", bin.display()))
        };
    }
    go_build(braid, "interop/go", "braid-peer")
}

/// `go build` of the workspace's `dir` into `<target>/go/<name>`, in GOPATH mode
/// against Debian's packages in /usr/share/gocode (or `$BRAID_BENCH_GOPATH`).
fn go_build(braid: &Path, dir: &str, name: &str) -> Result<PathBuf, String> {
    let out_dir = braid
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("go"))
        .ok_or("cannot place the Go peer")?;
    let bin = out_dir.join(name);
    let Some(src) = workspace().map(|w| w.join(dir)) else {
        // A relocated binary without its sources: use a peer built earlier, if any.
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err("no Go sources next to this build".into())
        };
    };
    let gopath = PathBuf::from(
        std::env::var_os("BRAID_BENCH_GOPATH").unwrap_or_else(|| "/usr/share/gocode".into()),
    );
    for pkg in ["github.com/xtaci/smux", "github.com/hashicorp/yamux"] {
        if !gopath.join("src").join(pkg).is_dir() {
            return Err(format!(
                "{pkg} not in {} (Debian: golang-github-xtaci-smux-dev, \
                 golang-github-hashicorp-yamux-dev; or scripts/install-peers.sh)",
                gopath.display()
            ));
        }
    }
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", out_dir.join("cache"));
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(bin),
        Ok(out) => Err(format!(
            "go build: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("go not installed".into()),
        Err(e) => Err(format!("go build: {e}")),
    }
}
