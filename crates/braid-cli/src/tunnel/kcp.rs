//! `--transport kcp`: carriers over KCP/UDP as kcptun's, with kcptun's flag names and
//! defaults, so either side of a kcptun deployment can be swapped for braid.
//!
//! kcptun-client's `--conn N` is braid's `--conns N` (also accepted as `--conn`), and
//! kcptun's `--smuxver 1|2` is `--proto smux1|smux2` (the client's default under KCP is
//! smux1, as kcptun's; the server's `auto` detects either).

use super::{Error, Proto};
use braid::{Session, Side};
use braid_kcp::{Config, Crypt, KcpListener, Mode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use serde::Deserialize;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// How carrier connections travel (`--transport`).
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP (optionally TLS).
    #[default]
    Tcp,
    /// KCP over UDP with kcp-go's framing: talks to kcptun-client and kcptun-server.
    Kcp,
}

/// The KCP flags, named as kcptun's (each also a key of `--config`).
#[derive(clap::Args, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "KCP transport (as kcptun's flags; with --transport kcp)")]
pub struct KcpArgs {
    /// Carrier transport [default: tcp].
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Pre-shared secret of the datagram cipher [default: kcptun's, "it's a secrect"].
    #[arg(long, value_name = "SECRET")]
    pub key: Option<String>,
    /// Datagram cipher: aes, aes-128, aes-192, salsa20, sm4, twofish, blowfish, cast5, 3des, xor, none [default: aes].
    #[arg(long, value_name = "NAME")]
    pub crypt: Option<String>,
    /// KCP timing: fast3, fast2, fast, normal, manual [default: fast].
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// FEC data shards (FEC is off unless both shard counts are > 0) [default: 10].
    #[arg(long, alias = "ds", value_name = "N")]
    #[serde(alias = "ds")]
    pub datashard: Option<usize>,
    /// FEC parity shards [default: 3].
    #[arg(long, alias = "ps", value_name = "N")]
    #[serde(alias = "ps")]
    pub parityshard: Option<usize>,
    /// Turn snappy compression off (must match the peer).
    #[arg(long)]
    #[serde(default)]
    pub nocomp: bool,
    /// Largest UDP datagram [default: 1350].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<usize>,
    /// Send window in packets [default: client 128, server 1024].
    #[arg(long, value_name = "N")]
    pub sndwnd: Option<u16>,
    /// Receive window in packets [default: client 512, server 1024].
    #[arg(long, value_name = "N")]
    pub rcvwnd: Option<u16>,
    /// DSCP of the UDP datagrams, 0..=63 (IP TOS / traffic class = DSCP << 2) [default: 0].
    #[arg(long, value_name = "N")]
    pub dscp: Option<u8>,
    /// UDP socket send and receive buffers in bytes (capped by the kernel) [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub sockbuf: Option<usize>,
    /// Client: replace each KCP session by a new one after SECS, for new streams; 0: never [default: 0].
    #[arg(long, value_name = "SECS")]
    pub autoexpire: Option<u64>,
    /// Client: how long a replaced session may still carry its streams, in seconds [default: 600].
    #[arg(long, value_name = "SECS")]
    pub scavengettl: Option<u64>,
    /// --mode manual: KCP nodelay, 0 or 1 [default: 0].
    #[arg(long, value_name = "0|1")]
    pub nodelay: Option<u32>,
    /// --mode manual: KCP update interval in ms, 10..=5000 (clamped, as kcp-go) [default: 50].
    #[arg(long, value_name = "MS")]
    pub interval: Option<u32>,
    /// --mode manual: fast retransmit after N later acknowledgements; 0: off [default: 0].
    #[arg(long, value_name = "N")]
    pub resend: Option<u32>,
    /// --mode manual: 1 turns KCP's congestion control off [default: 0].
    #[arg(long, value_name = "0|1")]
    pub nc: Option<u32>,
    /// End a KCP session whose peer acknowledges nothing for SECS while data waits, with
    /// an error saying what to check; 0: never (kcptun waits for smux's 30 s keepalive
    /// timeout) [default: 5].
    #[arg(long, value_name = "SECS")]
    pub dead_after: Option<u64>,
    /// kcptun's fake-TCP mode (tcpraw): not supported, an error.
    #[arg(long)]
    #[serde(default)]
    pub tcp: bool,
}

/// What `--transport kcp` runs with.
#[derive(Clone, Debug)]
pub struct KcpSettings {
    /// The KCP and datagram settings.
    pub config: Config,
    /// Snappy compression on (kcptun's default).
    pub compress: bool,
    /// Client: sessions are replaced after this long (`--autoexpire`).
    pub autoexpire: Option<Duration>,
    /// Client: a replaced session is closed this long after it expired (`--scavengettl`).
    pub scavenge_ttl: Duration,
}

impl KcpArgs {
    /// Flags win over the file.
    pub(super) fn or(self, file: KcpArgs) -> KcpArgs {
        KcpArgs {
            transport: self.transport.or(file.transport),
            key: self.key.or(file.key),
            crypt: self.crypt.or(file.crypt),
            mode: self.mode.or(file.mode),
            datashard: self.datashard.or(file.datashard),
            parityshard: self.parityshard.or(file.parityshard),
            nocomp: self.nocomp || file.nocomp,
            mtu: self.mtu.or(file.mtu),
            sndwnd: self.sndwnd.or(file.sndwnd),
            rcvwnd: self.rcvwnd.or(file.rcvwnd),
            dscp: self.dscp.or(file.dscp),
            sockbuf: self.sockbuf.or(file.sockbuf),
            autoexpire: self.autoexpire.or(file.autoexpire),
            scavengettl: self.scavengettl.or(file.scavengettl),
            nodelay: self.nodelay.or(file.nodelay),
            interval: self.interval.or(file.interval),
            resend: self.resend.or(file.resend),
            nc: self.nc.or(file.nc),
            dead_after: self.dead_after.or(file.dead_after),
            tcp: self.tcp || file.tcp,
        }
    }

    /// Whether KCP was asked for.
    pub(super) fn on(&self) -> bool {
        self.transport == Some(Transport::Kcp)
    }

    /// The KCP settings if `--transport kcp`; KCP flags without it are an error.
    pub(super) fn resolve(&self, side: Side) -> Result<Option<KcpSettings>, Error> {
        if !self.on() {
            let given = KcpArgs {
                transport: self.transport,
                ..KcpArgs::default()
            };
            if *self != given {
                return Err(Error::Usage(
                    "KCP flags (--key, --crypt, --mode, ...) need --transport kcp".into(),
                ));
            }
            return Ok(None);
        }
        if self.tcp {
            return Err(Error::Usage(
                "--tcp (kcptun's fake-TCP mode) is not supported: drop it to use UDP, or use \
                 --transport tcp"
                    .into(),
            ));
        }
        if side == Side::Server && (self.autoexpire.is_some() || self.scavengettl.is_some()) {
            return Err(Error::Usage(
                "--autoexpire and --scavengettl are client flags (as kcptun-client's)".into(),
            ));
        }
        let mut c = match side {
            Side::Client => Config::client(),
            Side::Server => Config::server(),
        };
        let key = self.key.as_deref().unwrap_or(braid_kcp::DEFAULT_KEY);
        let crypt = self.crypt.as_deref().unwrap_or("aes");
        c.crypt = Crypt::new(crypt, key).map_err(|e| Error::Usage(e.to_string()))?;
        if let Some(m) = &self.mode {
            c.mode = Mode::parse(m).ok_or_else(|| {
                Error::Usage(format!(
                    "invalid --mode {m}: allowed fast3, fast2, fast, normal, manual"
                ))
            })?;
        }
        // As kcptun: --nodelay --interval --resend --nc count with --mode manual only.
        if let Mode::Manual {
            nodelay,
            interval,
            resend,
            nc,
        } = &mut c.mode
        {
            *nodelay = self.nodelay.map_or(*nodelay, |v| v != 0);
            *interval = self.interval.map_or(*interval, |v| v.clamp(10, 5000));
            *resend = self.resend.unwrap_or(*resend);
            *nc = self.nc.map_or(*nc, |v| v != 0);
        }
        c.data_shards = self.datashard.unwrap_or(c.data_shards);
        c.parity_shards = self.parityshard.unwrap_or(c.parity_shards);
        c.mtu = self.mtu.unwrap_or(c.mtu);
        c.sndwnd = self.sndwnd.unwrap_or(c.sndwnd);
        c.rcvwnd = self.rcvwnd.unwrap_or(c.rcvwnd);
        c.dscp = self.dscp.unwrap_or(c.dscp);
        c.sockbuf = self.sockbuf.unwrap_or(c.sockbuf);
        match self.dead_after {
            Some(0) => c.dead_after = Duration::MAX,
            Some(secs) => c.dead_after = Duration::from_secs(secs),
            None => {}
        }
        c.validate().map_err(Error::Usage)?;
        Ok(Some(KcpSettings {
            config: c,
            compress: !self.nocomp,
            autoexpire: self.autoexpire.filter(|&s| s > 0).map(Duration::from_secs),
            scavenge_ttl: Duration::from_secs(self.scavengettl.unwrap_or(600)),
        }))
    }
}

/// kcptun's smux defaults where braid's differ: its client speaks smux1, and its
/// `--streambuf` (smux2 per-stream window) is 2 MiB.
pub(super) fn default_proto(kcp: bool) -> Proto {
    if kcp {
        Proto::Smux1
    } else {
        Proto::Yamux
    }
}

/// kcptun's `--streambuf` default.
pub(super) const STREAM_BUFFER: u64 = 2 << 20;

/// Opens one carrier to `server` over KCP.
pub(super) async fn connect(
    server: &str,
    kcp: &KcpSettings,
    config: braid::Config,
) -> io::Result<Session> {
    let addr = resolve(server).await?;
    let stream = braid_kcp::dial(addr, &kcp.config).await?;
    let io = braid_kcp::with_compression(stream, kcp.compress);
    Ok(Session::client(io, config)?)
}

/// Binds the KCP listener of `braid server --transport kcp`.
pub(super) async fn bind(listen: &str, kcp: &KcpSettings) -> Result<KcpListener, Error> {
    let addr = resolve(listen)
        .await
        .map_err(|e| Error::Runtime(format!("cannot listen on {listen}: {e}")))?;
    KcpListener::bind(addr, kcp.config.clone())
        .await
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot listen on {listen} (udp): {}",
                super::io_reason(&e)
            ))
        })
}

/// A session over an accepted KCP stream.
pub(super) fn session(
    stream: braid_kcp::KcpStream,
    kcp: &KcpSettings,
    config: braid::Config,
) -> Result<Session, String> {
    let io = braid_kcp::with_compression(stream, kcp.compress);
    Session::server(io, config).map_err(|e| e.to_string())
}

/// Resolves when a client's session is due for replacement (`--autoexpire`); never
/// without the flag.
pub(super) async fn expired(kcp: &Option<KcpSettings>) {
    match kcp.as_ref().and_then(|k| k.autoexpire) {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}

/// Keeps a replaced session for the streams it carries, as kcptun's scavenger, until
/// `--scavengettl` has passed; closes it before when it carries none (kcptun keeps
/// it idle until then), or at `kill`. `hold` (a gauge) lives as long.
pub(super) fn retire(
    session: Session,
    kcp: &Option<KcpSettings>,
    kill: CancellationToken,
    hold: impl Send + 'static,
) {
    let ttl = kcp.as_ref().map_or(Duration::ZERO, |k| k.scavenge_ttl);
    tokio::spawn(async move {
        let _hold = hold;
        let deadline = tokio::time::Instant::now() + ttl;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if session.num_streams() == 0 {
                        debug!("expired session closed: no streams left");
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    info!("expired session closed: --scavengettl reached");
                    break;
                }
                _ = session.closed() => return,
                _ = kill.cancelled() => break,
            }
        }
        session.close().await;
    });
}

/// Prints the KCP datagram counters of every session (`stats: kcp ...`) every
/// `every` until `stop`, beside the tunnel's own stats line.
pub(super) fn spawn_reporter(kcp: &KcpSettings, every: Duration, stop: CancellationToken) {
    let counters = kcp.config.counters.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = tick.tick() => println!("stats: kcp {}", counters.snapshot()),
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// The KCP datagram counters for `--metrics`, when the transport is KCP.
pub(super) fn collector(kcp: &Option<KcpSettings>) -> Option<Box<dyn Collector>> {
    let k = kcp.as_ref()?;
    Some(Box::new(KcpCollector(k.config.counters.clone())))
}

/// The KCP datagram counters for `--metrics` (`braid_tunnel_kcp_*`).
#[derive(Debug)]
pub(super) struct KcpCollector(pub(super) Arc<braid_kcp::Counters>);

impl Collector for KcpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0.snapshot();
        for (name, help, n) in [
            (
                "kcp_datagrams_received",
                "KCP datagrams that passed the checksum",
                t.valid,
            ),
            (
                "kcp_datagrams_sent",
                "KCP datagrams sent, FEC parity included",
                t.sent,
            ),
            (
                "kcp_bad_checksum",
                "KCP datagrams dropped for a bad checksum (another --key or --crypt?)",
                t.bad_checksum,
            ),
            (
                "kcp_fec_parity_received",
                "FEC parity packets received",
                t.parity,
            ),
            (
                "kcp_fec_parity_sent",
                "FEC parity packets sent",
                t.parity_sent,
            ),
            (
                "kcp_fec_recovered",
                "Lost packets rebuilt from FEC parity",
                t.fec_recovered,
            ),
        ] {
            let counter = ConstCounter::new(n);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// What a kcptun user should check when a KCP carrier ends with `reason`.
pub(super) fn hint(reason: &braid::ConnectionError) -> &'static str {
    match reason {
        braid::ConnectionError::Protocol(_) => {
            " (with kcptun: --proto smux1|smux2 must match its --smuxver)"
        }
        _ => "",
    }
}

/// Resolves `HOST:PORT`; kcptun's `:PORT` (any address) is accepted too.
async fn resolve(addr: &str) -> io::Result<SocketAddr> {
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let found = tokio::net::lookup_host(&addr).await?.next();
    found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

#[cfg(test)]
mod tests {
    use super::super::{ClientArgs, ServerArgs};
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Server(ServerArgs),
        Client(ClientArgs),
    }

    fn client(args: &[&str]) -> Result<super::super::ClientSettings, Error> {
        let argv = [
            "braid",
            "client",
            "--listen",
            "127.0.0.1:0",
            "--server",
            "h:1",
        ];
        match Cli::try_parse_from(argv.iter().chain(args)).unwrap().cmd {
            Cmd::Client(a) => a.resolve(),
            Cmd::Server(_) => unreachable!(),
        }
    }

    fn server(args: &[&str]) -> Result<super::super::ServerSettings, Error> {
        let argv = [
            "braid",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "h:1",
        ];
        match Cli::try_parse_from(argv.iter().chain(args)).unwrap().cmd {
            Cmd::Server(a) => a.resolve(),
            Cmd::Client(_) => unreachable!(),
        }
    }

    #[tokio::test]
    async fn kcptun_style_port_only_address() {
        assert_eq!(
            resolve(":29900").await.unwrap(),
            "0.0.0.0:29900".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:5").await.unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
    }

    #[test]
    fn kcptun_defaults() {
        let c = client(&["--transport", "kcp"]).unwrap();
        let k = c.kcp.unwrap();
        assert_eq!(c.config.protocol, braid::Protocol::SmuxV1);
        assert_eq!(c.config.max_stream_buffer, 2 << 20);
        assert_eq!((k.config.sndwnd, k.config.rcvwnd), (128, 512));
        assert_eq!((k.config.data_shards, k.config.parity_shards), (10, 3));
        assert_eq!((k.config.mtu, k.config.mode), (1350, Mode::Fast));
        assert_eq!(k.config.crypt.name(), "aes");
        assert!(k.compress);
        let s = server(&["--transport", "kcp"]).unwrap();
        let k = s.kcp.unwrap();
        assert_eq!(s.config.protocol, braid::Protocol::Auto);
        assert_eq!((k.config.sndwnd, k.config.rcvwnd), (1024, 1024));
        assert!(client(&[]).unwrap().kcp.is_none());
    }

    #[test]
    fn kcptun_flag_names() {
        let c = client(&[
            "--transport=kcp",
            "--key=s",
            "--crypt=none",
            "--mode=fast3",
            "--ds=0",
            "--ps=0",
            "--nocomp",
            "--mtu=1200",
            "--sndwnd=64",
            "--rcvwnd=256",
            "--conn=3",
            "--proto=smux2",
        ])
        .unwrap();
        let k = c.kcp.unwrap();
        assert_eq!(c.conns, 3);
        assert_eq!(c.config.protocol, braid::Protocol::SmuxV2);
        assert_eq!(k.config.crypt.name(), "none");
        assert_eq!(k.config.mode, Mode::Fast3);
        assert_eq!((k.config.data_shards, k.config.parity_shards), (0, 0));
        assert_eq!(
            (k.config.mtu, k.config.sndwnd, k.config.rcvwnd),
            (1200, 64, 256)
        );
        assert!(!k.compress);
        let c = client(&["--transport=kcp", "--datashard=4", "--parityshard=2"]).unwrap();
        let k = c.kcp.unwrap();
        assert_eq!((k.config.data_shards, k.config.parity_shards), (4, 2));
    }

    #[test]
    fn bad_values_are_one_line_usage_errors() {
        let err = |r: Result<super::super::ClientSettings, Error>| match r {
            Err(Error::Usage(m)) => m,
            Err(e) => panic!("not a usage error: {e}"),
            Ok(_) => panic!("accepted"),
        };
        let m = err(client(&["--transport=kcp", "--crypt=tea"]));
        assert!(m.contains("--crypt tea is not supported"), "{m}");
        let m = err(client(&["--transport=kcp", "--crypt=aes512"]));
        assert!(m.contains("unknown --crypt aes512"), "{m}");
        let m = err(client(&["--transport=kcp", "--mode=turbo"]));
        assert!(m.contains("invalid --mode turbo"), "{m}");
        let m = err(client(&["--transport=kcp", "--mtu=9000"]));
        assert!(m.contains("invalid --mtu 9000"), "{m}");
        let m = err(client(&["--crypt=none"]));
        assert!(m.contains("need --transport kcp"), "{m}");
        let m = err(client(&["--transport=kcp", "--tls-insecure-skip-verify"]));
        assert!(
            m.contains("TLS and --psk-file are for --transport tcp"),
            "{m}"
        );
    }

    #[test]
    fn kcptun_socket_session_and_manual_mode_flags() {
        let c = client(&[
            "--transport=kcp",
            "--dscp=46",
            "--sockbuf=65536",
            "--autoexpire=30",
            "--scavengettl=5",
            "--mode=manual",
            "--nodelay=1",
            "--interval=5",
            "--resend=2",
            "--nc=1",
            "--dead-after=0",
        ])
        .unwrap();
        let k = c.kcp.unwrap();
        assert_eq!((k.config.dscp, k.config.sockbuf), (46, 65536));
        assert_eq!(k.autoexpire, Some(Duration::from_secs(30)));
        assert_eq!(k.scavenge_ttl, Duration::from_secs(5));
        // --interval is clamped to 10..=5000, as kcp-go does.
        assert_eq!(
            k.config.mode,
            Mode::Manual {
                nodelay: true,
                interval: 10,
                resend: 2,
                nc: true
            }
        );
        assert_eq!(k.config.dead_after, Duration::MAX);
        // Defaults; the manual flags count with --mode manual only (as kcptun).
        let k = client(&["--transport=kcp", "--nodelay=1", "--dead-after=9"])
            .unwrap()
            .kcp
            .unwrap();
        assert_eq!(k.config.mode, Mode::Fast);
        assert_eq!((k.config.dscp, k.config.sockbuf), (0, 4 << 20));
        assert_eq!(
            (k.autoexpire, k.scavenge_ttl),
            (None, Duration::from_secs(600))
        );
        assert_eq!(k.config.dead_after, Duration::from_secs(9));
        let k = client(&["--transport=kcp", "--mode=manual"])
            .unwrap()
            .kcp
            .unwrap();
        assert_eq!(k.config.mode, Mode::parse("manual").unwrap());
        let k = client(&["--transport=kcp", "--autoexpire=0"])
            .unwrap()
            .kcp
            .unwrap();
        assert_eq!(k.autoexpire, None);
    }

    #[test]
    fn unsupported_or_misplaced_kcptun_flags_are_usage_errors() {
        let m = match client(&["--transport=kcp", "--tcp"]) {
            Err(Error::Usage(m)) => m,
            _ => panic!("--tcp accepted"),
        };
        assert!(
            m.contains("--tcp (kcptun's fake-TCP mode) is not supported"),
            "{m}"
        );
        let m = match client(&["--transport=kcp", "--dscp=64"]) {
            Err(Error::Usage(m)) => m,
            _ => panic!("--dscp 64 accepted"),
        };
        assert!(m.contains("invalid --dscp 64"), "{m}");
        let m = match server(&["--transport=kcp", "--autoexpire=5"]) {
            Err(Error::Usage(m)) => m,
            _ => panic!("server --autoexpire accepted"),
        };
        assert!(m.contains("client flags"), "{m}");
        assert!(server(&["--transport=kcp", "--dscp=10", "--sockbuf=1000"]).is_ok());
    }

    #[test]
    fn kcp_counters_are_metrics() {
        let config = Config::server();
        // Two codecs made from the config add to its counters.
        let mut tx = braid_kcp::Codec::with_totals(Crypt::none(), 2, 1, config.counters.clone());
        let mut rx = braid_kcp::Codec::with_totals(Crypt::none(), 2, 1, config.counters.clone());
        let mut sent = Vec::new();
        for p in [[81u8; 30], [82; 30]] {
            tx.encode(&p, |d| sent.push(d));
        }
        sent.remove(0); // lost: FEC rebuilds it
        for mut d in sent {
            rx.decode(&mut d, |_, _| {}).unwrap();
        }
        let m = super::super::metrics::Metrics::default()
            .with(Some(Box::new(KcpCollector(config.counters.clone()))));
        let text = m.render();
        for line in [
            "braid_tunnel_kcp_datagrams_sent_total 3",
            "braid_tunnel_kcp_datagrams_received_total 2",
            "braid_tunnel_kcp_fec_parity_sent_total 1",
            "braid_tunnel_kcp_fec_parity_received_total 1",
            "braid_tunnel_kcp_fec_recovered_total 1",
            "braid_tunnel_kcp_bad_checksum_total 0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert_eq!(
            config.counters.snapshot().to_string(),
            "received=2 sent=3 bad_checksum=0 parity_received=1 parity_sent=1 fec_recovered=1"
        );
    }

    fn from_file(name: &str, text: &str, flags: &[&str]) -> super::super::ClientSettings {
        let dir = std::env::temp_dir().join(format!("braid-kcp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let argv = ["braid", "client", "--config", path.to_str().unwrap()];
        match Cli::try_parse_from(argv.iter().chain(flags)).unwrap().cmd {
            Cmd::Client(a) => a.resolve().unwrap(),
            Cmd::Server(_) => unreachable!(),
        }
    }

    #[test]
    fn config_file_takes_every_kcp_key_and_kcptun_aliases() {
        let text = "listen = \"127.0.0.1:0\"\nserver = \"h:1\"\ntransport = \"kcp\"\n\
                    crypt = \"salsa20\"\nkey = \"k\"\ndatashard = 5\nparityshard = 2\n\
                    nocomp = true\nmode = \"normal\"\nmtu = 1400\nsndwnd = 32\nrcvwnd = 64\n\
                    dscp = 8\nsockbuf = 1048576\nautoexpire = 60\nscavengettl = 30\n\
                    nodelay = 1\ninterval = 20\nresend = 2\nnc = 1\ndead-after = 7\ntcp = false\n";
        for key in super::super::config::keys::<KcpArgs>() {
            assert!(text.contains(&format!("{key} =")), "key {key} untested");
        }
        let c = from_file("long.toml", text, &["--ps", "1"]);
        let k = c.kcp.unwrap();
        assert_eq!(k.config.crypt.name(), "salsa20");
        assert_eq!((k.config.data_shards, k.config.parity_shards), (5, 1));
        assert_eq!(k.config.mode, Mode::Normal);
        assert_eq!(
            (k.config.mtu, k.config.sndwnd, k.config.rcvwnd),
            (1400, 32, 64)
        );
        assert!(!k.compress);
        assert_eq!((k.config.dscp, k.config.sockbuf), (8, 1 << 20));
        assert_eq!(k.autoexpire, Some(Duration::from_secs(60)));
        assert_eq!(k.scavenge_ttl, Duration::from_secs(30));
        assert_eq!(k.config.dead_after, Duration::from_secs(7));
        let c = from_file(
            "aliases.toml",
            "localaddr = \"127.0.0.1:0\"\nremoteaddr = \"h:2\"\ntransport = \"kcp\"\n\
             ds = 7\nps = 3\nconn = 2\n",
            &[],
        );
        assert_eq!((c.server.as_str(), c.conns), ("h:2", 2));
        assert_eq!(c.kcp.unwrap().config.data_shards, 7);
    }
}
