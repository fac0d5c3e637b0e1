//! # braid-attack: hostile peers against a real `braid server` process
//!
//! Each attack starts a fresh `braid server` (so that its peak RSS is that attack's),
//! pointed at a [`Target`] of ours, and attacks it over loopback as an attacker would:
//! frames written by hand, never reading what braid sends unless the attack needs it.
//! Meanwhile a normal client (a braid yamux [`braid::Session`]) echoes a few KiB through
//! the tunnel every 500 ms; after the attacker has gone, one more probe on a fresh
//! connection. For each attack the [`Outcome`] gives the server's peak RSS (`VmHWM`), its
//! open fds, CPU time (utime + stime), whether the normal client was served, and the
//! attack's own [`Check`]s against the targets of issue 13. See `soak/README.md`.

mod attacks;
mod churn;
mod flood;
mod probe;
pub mod procfs;
mod report;
mod server;
mod slowread;
mod target;
pub mod wire;

pub use report::{table, Check, Outcome};

use probe::{Client, Prober};
use server::Server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{Mode, Target};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// The attacks, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// 1-byte yamux data frames over many streams whose target never reads.
    FloodYamux,
    /// 1-byte smux v1 PSH frames on one stream whose target never reads.
    FloodSmux,
    /// Many yamux streams opened, never read.
    SynYamux,
    /// Many smux v1 streams opened, never read.
    SynSmux,
    /// yamux pings, replies never read.
    Ping,
    /// yamux streams whose target sends a lot, given 1-byte window updates.
    Drip,
    /// TCP connections that never send a byte.
    Silent,
    /// Streams opened and closed in turn over one yamux session.
    Churn,
    /// TLS: streams the server wants to send on, never read, then a protocol error.
    SlowReadTls,
    /// The same over plain TCP.
    SlowReadTcp,
}

impl Attack {
    /// Every attack.
    pub const ALL: [Attack; 10] = [
        Attack::FloodYamux,
        Attack::FloodSmux,
        Attack::SynYamux,
        Attack::SynSmux,
        Attack::Ping,
        Attack::Drip,
        Attack::Silent,
        Attack::Churn,
        Attack::SlowReadTls,
        Attack::SlowReadTcp,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Attack::FloodYamux => "flood-yamux",
            Attack::FloodSmux => "flood-smux1",
            Attack::SynYamux => "syn-yamux",
            Attack::SynSmux => "syn-smux1",
            Attack::Ping => "ping",
            Attack::Drip => "drip",
            Attack::Silent => "silent",
            Attack::Churn => "churn",
            Attack::SlowReadTls => "slow-read-tls",
            Attack::SlowReadTcp => "slow-read-tcp",
        }
    }

    /// Parses a name ([`Attack::name`]).
    pub fn parse(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }

    fn target_mode(self) -> Mode {
        match self {
            Attack::Drip | Attack::SlowReadTls | Attack::SlowReadTcp => Mode::Source,
            Attack::Churn => Mode::Echo,
            _ => Mode::Sink,
        }
    }
}

/// How big each attack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Seconds per attack against a small receive budget: the CI run.
    Short,
    /// The sizes of issue 13 (minutes in all).
    Full,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Attacks to run, in order.
    pub attacks: Vec<Attack>,
    /// Their size.
    pub scale: Scale,
    /// The `braid` binary to start (`braid server ...`), unless [`Options::addr`].
    pub server_bin: Option<PathBuf>,
    /// Attack a server someone else started instead; it must forward to
    /// [`Options::target_addr`].
    pub addr: Option<SocketAddr>,
    /// Where our target listens (default: any free loopback port).
    pub target_addr: Option<SocketAddr>,
    /// The external server's pid, for its stats.
    pub pid: Option<u32>,
    /// Streams the churn opens (default: 1,000,000 full, 3,000 short).
    pub churn_streams: Option<u64>,
    /// `--max-receive-buffer` given to the server (default: the server's own, 64 MiB
    /// yamux and 4 MiB smux, at full scale; 1 MiB short).
    pub receive_buffer: Option<u64>,
    /// `--detect-timeout` given to the server when it has that flag (default: the
    /// server's own, 10 s, at full scale; 2 s short).
    pub detect_timeout: Option<Duration>,
    /// An attack stops pushing once the server's RSS passes this (protects the machine).
    pub rss_cap: u64,
    /// A normal client's probe not echoed within this counts as not served (5 s).
    pub probe_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attacks: Attack::ALL.to_vec(),
            scale: Scale::Short,
            server_bin: None,
            addr: None,
            target_addr: None,
            pid: None,
            churn_streams: None,
            receive_buffer: None,
            detect_timeout: None,
            rss_cap: 4 << 30,
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// braid's default `close_timeout`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// braid's default protocol detection timeout (issue 13).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

/// What an attack sees while it runs.
pub(crate) struct Ctx {
    pub opts: Options,
    pub server: SocketAddr,
    pub pid: Option<u32>,
    pub peaks: Option<Arc<procfs::Peaks>>,
    pub target: Arc<Target>,
    /// The receive budget the server runs with for (yamux, smux).
    pub budget: (u64, u64),
    /// The detection timeout the server runs with, and whether it was set by a flag.
    pub detect: (Duration, bool),
    /// The server's certificate, for the TLS attack.
    pub tls: Option<TlsConnector>,
}

impl Ctx {
    pub fn full(&self) -> bool {
        self.opts.scale == Scale::Full
    }

    /// Whether the server's RSS passed the guard.
    pub fn over_cap(&self) -> bool {
        self.peaks.as_ref().is_some_and(|p| {
            p.current_rss.load(std::sync::atomic::Ordering::Relaxed) > self.opts.rss_cap
        })
    }

    pub fn sample(&self) -> Option<procfs::Sample> {
        self.pid.and_then(procfs::sample)
    }
}

/// What an attack function reports back.
#[derive(Default)]
pub(crate) struct Attacked {
    pub did: String,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub series: Vec<(u64, f64, f64)>,
}

/// Runs the attacks one after the other; `on_outcome` sees each as it completes.
pub async fn run(
    opts: Options,
    mut on_outcome: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    let bin = match (&opts.server_bin, opts.addr) {
        (_, Some(_)) => None,
        (Some(b), None) => Some(b.clone()),
        (None, None) => return Err("give --server-bin (a braid binary) or --addr".into()),
    };
    let target_addr = opts
        .target_addr
        .unwrap_or_else(|| "127.0.0.1:0".parse().expect("valid"));
    let target = Arc::new(
        Target::start(target_addr)
            .await
            .map_err(|e| format!("target: {e}"))?,
    );
    let full = opts.scale == Scale::Full;
    let receive_buffer = opts.receive_buffer.or((!full).then_some(MIB));
    let mut args = Vec::new();
    if let Some(b) = receive_buffer {
        args.extend(["--max-receive-buffer".to_string(), b.to_string()]);
    }
    let wanted_detect = opts
        .detect_timeout
        .or((!full).then_some(Duration::from_secs(2)));
    let mut detect = (DETECT_TIMEOUT, false);
    if let (Some(bin), Some(d)) = (&bin, wanted_detect) {
        if server::supports(bin, "--detect-timeout").await {
            args.extend([
                "--detect-timeout".to_string(),
                format!("{}ms", d.as_millis()),
            ]);
            detect = (d, true);
        }
    }
    let budget = receive_buffer.map_or((64 * MIB, 4 * MIB), |b| (b, b));
    let cert_dir = std::env::temp_dir().join(format!("braid-attack-{}", std::process::id()));
    let mut outcomes = Vec::new();
    for attack in opts.attacks.clone() {
        let mut server_args = args.clone();
        let mut tls = None;
        if attack == Attack::SlowReadTls {
            if bin.is_none() {
                let mut o = Outcome::new(attack.name(), &server_args);
                o.skipped = true;
                o.notes
                    .push("skipped: needs a server started with TLS by this program".into());
                on_outcome(&o);
                outcomes.push(o);
                continue;
            }
            let (cert, key, der) = server::write_cert(&cert_dir)?;
            server_args.extend([
                "--tls-cert".to_string(),
                cert.display().to_string(),
                "--tls-key".to_string(),
                key.display().to_string(),
            ]);
            tls = Some(connector(der)?);
        }
        target.set_mode(attack.target_mode());
        let server = match &bin {
            Some(bin) => Server::spawn(bin, target.addr, &server_args).await?,
            None => Server::external(opts.addr.expect("checked"), opts.pid),
        };
        let ctx = Ctx {
            opts: opts.clone(),
            server: server.addr,
            pid: server.pid,
            peaks: None,
            target: target.clone(),
            budget,
            detect,
            tls,
        };
        let o = run_one(attack, ctx, server, &server_args).await;
        target.reset();
        on_outcome(&o);
        outcomes.push(o);
    }
    let _ = std::fs::remove_dir_all(&cert_dir);
    Ok(outcomes)
}

async fn run_one(attack: Attack, mut ctx: Ctx, mut server: Server, args: &[String]) -> Outcome {
    let mut o = Outcome::new(attack.name(), args);
    let client = Client {
        addr: ctx.server,
        tls: ctx.tls.clone(),
        timeout: ctx.opts.probe_timeout,
    };
    let base = ctx.sample();
    let sampler = ctx
        .pid
        .map(|pid| procfs::Sampler::start(pid, Duration::from_millis(100)));
    ctx.peaks = sampler.as_ref().map(|s| s.peaks.clone());
    let prober = Prober::start(client.clone(), Duration::from_millis(500));
    let start = Instant::now();
    let result = attacks::run(attack, &ctx).await;
    o.secs = start.elapsed().as_secs_f64();
    let end = ctx.sample();
    let tally = prober.finish();
    // The attacker has disconnected (its sockets are dropped); the target still holds
    // its connections as it was.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = ctx.sample();
    let after_probe = client.probe_fresh().await;
    o.server_alive = server.alive();
    match result {
        Ok(a) => {
            o.did = a.did;
            o.checks = a.checks;
            o.notes.extend(a.notes);
            o.series = a.series;
        }
        Err(e) => o.notes.push(format!("attack failed: {e}")),
    }
    if let (Some(b), Some(e), Some(a)) = (base, end, after) {
        let peaks = sampler.as_ref().expect("with a pid").peaks.clone();
        let peak_fds = peaks.fds.load(std::sync::atomic::Ordering::Relaxed);
        o.stats = Some(report::Stats {
            rss_base_mib: mib(b.rss),
            rss_peak_mib: mib(a.hwm.max(e.hwm)),
            rss_end_mib: mib(e.rss),
            rss_after_mib: mib(a.rss),
            fds_base: b.fds,
            fds_peak: peak_fds.max(e.fds),
            fds_after: a.fds,
            cpu_s: e.cpu - b.cpu,
        });
    }
    o.probes_ok = tally.ok;
    o.probes_failed = tally.failed;
    o.probe_error = tally.first_error;
    o.probe_slowest_ms = tally.slowest.as_secs_f64() * 1000.0;
    match after_probe {
        Ok(_) => o.after_ok = true,
        Err(e) => o.after_error = Some(e),
    }
    let within = format!("{:?}", ctx.opts.probe_timeout);
    o.checks.push(Check::new(
        "served during",
        format!("every probe echoed within {within}"),
        format!("{} ok, {} failed", tally.ok, tally.failed),
        tally.failed == 0 && tally.ok > 0,
    ));
    o.checks.push(Check::new(
        "served after",
        format!("a fresh client echoed within {within}"),
        o.after_error.clone().unwrap_or_else(|| "ok".into()),
        o.after_ok,
    ));
    if !o.server_alive {
        o.notes.push(format!(
            "the server died; its last log lines: {}",
            server.last_log().join(" | ")
        ));
    }
    drop(sampler);
    server.stop().await;
    o
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

// ring, as everywhere in the workspace (aws-lc-rs needs cmake and nasm to build); its
// provider lacks post-quantum key exchange, which a loopback attack does not need.
#[allow(deprecated)]
fn connector(cert_der: Vec<u8>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(cert_der))
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
