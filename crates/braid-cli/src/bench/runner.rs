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
    pub const ALL: [Lib; 11] = [
        Lib::Tcp,
        Lib::BraidSmux1,
        Lib::BraidSmux2,
        Lib::BraidYamux,
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
            Lib::BraidYamux | Lib::GoYamux | Lib::Yamux | Lib::TokioYamux => Some(Proto::Yamux),
        }
    }

    /// Which program runs it.
    pub fn source(self) -> Source {
        match self {
            Lib::Tcp | Lib::BraidSmux1 | Lib::BraidSmux2 | Lib::BraidYamux => Source::Braid,
            Lib::GoSmux1 | Lib::GoSmux2 | Lib::GoYamux => Source::Go,
            _ => Source::RustPeers,
        }
    }

    /// A peer: neither braid nor raw TCP.
    pub fn is_peer(self) -> bool {
        self.source() != Source::Braid
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
        }
    }

    /// Whether `lib` takes part (raw TCP has no idle streams to measure).
    pub fn applies_to(&self, lib: Lib) -> bool {
        !(matches!(self, Spec::Idle { .. }) && lib == Lib::Tcp)
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
}

impl Programs {
    /// Finds (and builds, where needed) the programs; `peers`: also the Rust and Go
    /// peers. Missing peers are reported on stderr and skipped.
    pub fn find(peers: bool) -> io::Result<Programs> {
        let braid = std::env::current_exe()?;
        let (rust_peers, go) = if peers {
            (rust_peers(&braid), go_peer(&braid))
        } else {
            let off = || Err("not asked for (--peers)".to_string());
            (off(), off())
        };
        if peers {
            if let Err(why) = &rust_peers {
                eprintln!("braid bench: skipping the Rust peer crates: {why}");
            }
            if let Err(why) = &go {
                eprintln!("braid bench: skipping the Go peers: {why}");
            }
        }
        Ok(Programs {
            braid,
            rust_peers,
            go,
        })
    }

    /// Whether `lib` can run here.
    pub fn has(&self, lib: Lib) -> bool {
        match lib.source() {
            Source::Braid => true,
            Source::RustPeers => self.rust_peers.is_ok(),
            Source::Go => self.go.is_ok(),
        }
    }

    /// Runs one child and returns what it reported (a failed sample if it failed, hung
    /// past its timeout or printed no result).
    pub fn run(&self, lib: Lib, spec: &Spec, sample_ms: u64, current_thread: bool) -> Sample {
        let (mut flags, timeout) = spec.flags(sample_ms);
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
    let out_dir = braid
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("go"))
        .ok_or("cannot place the Go peer")?;
    let bin = out_dir.join("braid-bench-go");
    let Some(src) = workspace().map(|w| w.join("bench/go")) else {
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
