//! Flags, the `--config` TOML file, and what they resolve to.
//!
//! Every option is a flag and, under the same name without the dashes, a key of the
//! config file (`--max-frame-size 16KiB` is `max-frame-size = "16KiB"`); flags override
//! the file. Relative paths in the file are relative to the file.

use super::auth::{self, ClientAuth, ServerAuth};
use super::kcp::{self, KcpArgs, KcpSettings};
use super::limits::{LimitArgs, Limits};
use super::noise::Psk;
use super::tls::{self, ClientTls};
use super::units::{de_duration, de_size, human_bytes, parse_duration, parse_size};
use super::Error;
use braid::{Config, ConfigField, Protocol, Side};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Wire protocol of the carrier connections (`--proto`).
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// xtaci/smux version 1 (no per-stream flow control: one slow reader pauses all).
    Smux1,
    /// xtaci/smux version 2 (per-stream windows).
    Smux2,
    /// hashicorp/yamux (per-stream windows, resets reach the other side).
    Yamux,
    /// Server only: detect smux1, smux2 or yamux from each client's first byte.
    Auto,
}

impl Proto {
    fn protocol(self) -> Protocol {
        match self {
            Proto::Smux1 => Protocol::SmuxV1,
            Proto::Smux2 => Protocol::SmuxV2,
            Proto::Yamux => Protocol::Yamux,
            Proto::Auto => Protocol::Auto,
        }
    }
}

/// smux2's per-stream window in the tunnel unless `--max-stream-buffer` is given. Go's
/// 64 KiB lets one stream move at most 64 KiB per round trip, and a round trip through
/// a loaded host is long: one connection through the tunnel went from 485 to 767 MB/s
/// with 1 MiB (loopback, `braid bench --workload tunnel`, interleaved). kcptun uses
/// 2 MiB (`--streambuf`). Received data stays bounded by `--max-receive-buffer` per
/// session.
pub const SMUX2_STREAM_BUFFER: usize = 1 << 20;

/// The tunnel's window for a session whose protocol `--proto auto` detected: as
/// [`Config::detected`] counts a value equal to the default as unset, Go's smux2
/// default there becomes [`SMUX2_STREAM_BUFFER`].
pub fn detected_window(config: &mut Config) {
    if config.protocol == Protocol::SmuxV2
        && config.max_stream_buffer == Config::new(Protocol::SmuxV2).max_stream_buffer
    {
        config.max_stream_buffer = SMUX2_STREAM_BUFFER;
    }
}

/// Session tuning shared by server and client, mapped onto [`braid::Config`]. Unset
/// fields keep the protocol's defaults (Go's).
#[derive(clap::Args, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "Session tuning (defaults: the protocol's, as in Go)")]
pub struct Tuning {
    /// Largest data frame payload sent (smux: at most 65535, default 32KiB; yamux: default 64KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_frame_size: Option<u64>,
    /// Received data a session buffers for its streams before it stops reading (default 4MiB; yamux 64MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_receive_buffer: Option<u64>,
    /// Per-stream receive window, smux2 and yamux (default: smux2 1MiB, not Go's 64KiB, which caps a stream at 64KiB per round trip; yamux 256KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_stream_buffer: Option<u64>,
    /// Bytes one stream may have queued for sending before its writes wait (default 256KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub stream_send_buffer: Option<u64>,
    /// How often a keepalive is sent (default: smux 10s, yamux 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub keepalive_interval: Option<Duration>,
    /// smux: end a session silent for this long (default 30s). yamux: end it when a ping is unanswered this long (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub keepalive_timeout: Option<Duration>,
    /// Send no keepalives and never time a session out.
    #[arg(long)]
    #[serde(default)]
    pub no_keepalive: bool,
}

impl Tuning {
    fn or(self, file: Tuning) -> Tuning {
        Tuning {
            max_frame_size: self.max_frame_size.or(file.max_frame_size),
            max_receive_buffer: self.max_receive_buffer.or(file.max_receive_buffer),
            max_stream_buffer: self.max_stream_buffer.or(file.max_stream_buffer),
            stream_send_buffer: self.stream_send_buffer.or(file.stream_send_buffer),
            keepalive_interval: self.keepalive_interval.or(file.keepalive_interval),
            keepalive_timeout: self.keepalive_timeout.or(file.keepalive_timeout),
            no_keepalive: self.no_keepalive || file.no_keepalive,
        }
    }

    /// The session configuration for `proto` with these settings, validated for `side`.
    pub fn config(&self, proto: Proto, side: Side) -> Result<Config, Error> {
        let mut c = Config::new(proto.protocol());
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        if let Some(v) = self.max_frame_size {
            c.max_frame_size = size(v);
        }
        if let Some(v) = self.max_receive_buffer {
            c.max_receive_buffer = size(v);
        }
        match self.max_stream_buffer {
            Some(v) => c.max_stream_buffer = size(v),
            None if c.protocol == Protocol::SmuxV2 => c.max_stream_buffer = SMUX2_STREAM_BUFFER,
            None => {}
        }
        if let Some(v) = self.stream_send_buffer {
            c.stream_send_buffer = size(v);
            c.max_send_buffer = c.max_send_buffer.max(c.stream_send_buffer);
        }
        if let Some(v) = self.keepalive_interval {
            c.keep_alive_interval = v;
        }
        if let Some(v) = self.keepalive_timeout {
            c.keep_alive_timeout = v;
        }
        c.keep_alive_disabled = self.no_keepalive;
        c.validate_for(side).map_err(|e| {
            let flag = match e.field {
                ConfigField::KeepAliveInterval => "keepalive-interval".to_string(),
                ConfigField::KeepAliveTimeout => "keepalive-timeout".to_string(),
                f => f.name().replace('_', "-"),
            };
            Error::Usage(format!(
                "invalid --{flag} {}: allowed {}",
                e.value, e.allowed
            ))
        })?;
        Ok(c)
    }

    /// Under `--proto auto`: the tuning flags given whose value a detected protocol does
    /// not take (see [`Config::detected`]), each as "PROTO sessions use --FLAG VALUE".
    /// That happens to a value the protocol does not allow (yamux: `--max-stream-buffer`
    /// below 256KiB) and to one equal to auto's own default, which counts as not set
    /// (`--max-frame-size 32KiB` still gives yamux sessions 64KiB).
    fn not_taken_under_auto(&self, auto: &Config) -> Vec<String> {
        // Per flag: whether it was given, and the field it sets as (shown, compared).
        let given = [
            self.max_frame_size.is_some(),
            self.max_receive_buffer.is_some(),
            self.max_stream_buffer.is_some(),
            self.stream_send_buffer.is_some(),
            self.keepalive_interval.is_some(),
            self.keepalive_timeout.is_some(),
        ];
        let fields = |c: &Config| {
            let size = |v: usize| (human_bytes(v as u64), v as u128);
            let time = |d: Duration| (format!("{d:?}"), d.as_nanos());
            [
                ("--max-frame-size", size(c.max_frame_size)),
                ("--max-receive-buffer", size(c.max_receive_buffer)),
                ("--max-stream-buffer", size(c.max_stream_buffer)),
                ("--stream-send-buffer", size(c.stream_send_buffer)),
                ("--keepalive-interval", time(c.keep_alive_interval)),
                ("--keepalive-timeout", time(c.keep_alive_timeout)),
            ]
        };
        let wanted = fields(auto);
        let mut out = Vec::new();
        for (proto, name) in [
            (Protocol::SmuxV1, "smux1"),
            (Protocol::SmuxV2, "smux2"),
            (Protocol::Yamux, "yamux"),
        ] {
            let used = fields(&auto.detected(proto));
            for ((given, (flag, (shown, used))), (_, (_, wanted))) in
                given.iter().zip(used).zip(&wanted)
            {
                if *given && used != *wanted {
                    out.push(format!("{name} sessions use {flag} {shown}"));
                }
            }
        }
        out
    }
}

/// Flags of `braid server` (each also a key of `--config`).
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct ServerArgs {
    /// TOML file with any of these options (keys: the long flag names); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to accept carrier connections on, e.g. 0.0.0.0:7000 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Where each stream is forwarded.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Protocol clients speak [default: auto].
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,
    /// TLS: certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by one of these CAs (PEM); needs --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// Pre-shared key (a file of 64 hex digits, e.g. from `openssl rand -hex 32`): clients must hold the same key; the carrier is encrypted (Noise).
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Serve clients without authenticating them, even on an address other hosts can reach.
    #[arg(long)]
    #[serde(default)]
    pub no_auth: bool,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Time allowed for connecting to the target [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub connect_timeout: Option<Duration>,
    /// Print a stats line to stdout this often (e.g. 10s) [default: never].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub stats: Option<Duration>,
    /// On SIGINT/SIGTERM, how long active streams may go on before they are cut [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub grace: Option<Duration>,
    #[allow(missing_docs)]
    #[command(flatten)]
    #[serde(flatten)]
    pub limits: LimitArgs,
    #[allow(missing_docs)]
    #[command(flatten)]
    #[serde(flatten)]
    pub tuning: Tuning,
    #[allow(missing_docs)]
    #[command(flatten)]
    #[serde(flatten)]
    pub kcp: KcpArgs,
}

/// What `braid server` runs with: [`ServerArgs`] resolved and checked.
#[derive(Clone)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: String,
    /// Where streams are forwarded (`HOST:PORT`, resolved for each stream).
    pub target: String,
    /// Session configuration (protocol and tuning).
    pub config: Config,
    /// How carrier connections are secured and clients authenticated.
    pub auth: ServerAuth,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<String>,
    /// Time allowed to connect to the target.
    pub connect_timeout: Duration,
    /// Stats line interval, if any.
    pub stats: Option<Duration>,
    /// How long active streams may go on after a shutdown signal.
    pub grace: Duration,
    /// KCP carriers instead of TCP (`--transport kcp`).
    pub kcp: Option<KcpSettings>,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

impl ServerArgs {
    /// Merges the `--config` file (flags win), applies defaults and checks everything.
    pub fn resolve(self) -> Result<ServerSettings, Error> {
        let a = match self.config.clone() {
            Some(path) => {
                let file: ServerArgs = load_file::<ServerArgs>(&path)?;
                self.or(file.relative_to(&path))
            }
            None => self,
        };
        let listen = a.listen.ok_or_else(|| missing("listen"))?;
        let target = a.target.ok_or_else(|| missing("target"))?;
        check_host_port("--target", &target)?;
        let proto = a.proto.unwrap_or(Proto::Auto);
        let limits = a.limits.resolve()?;
        let kcp = a.kcp.resolve(Side::Server)?;
        let mut config = kcp_tuning(a.tuning.clone(), &kcp).config(proto, Side::Server)?;
        config.idle_timeout = limits.idle_timeout;
        if proto == Proto::Auto {
            // The tuning applies to whichever protocol a client speaks, except values that
            // protocol does not allow or that equal auto's defaults.
            let not_taken = a.tuning.not_taken_under_auto(&config);
            if !not_taken.is_empty() {
                tracing::warn!(
                    "with --proto auto, {} (a value that protocol does not allow, or auto's \
                     default, gives it the protocol's default; name the protocol to tune it)",
                    not_taken.join(", ")
                );
            }
        }
        let auth = match (a.tls_cert, a.tls_key, a.psk_file) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "--psk-file and --tls-cert/--tls-key exclude each other".into(),
                ))
            }
            (None, None, Some(psk)) => ServerAuth::Psk(Arc::new(Psk::from_file(&psk)?)),
            (Some(cert), Some(key), None) => ServerAuth::Tls {
                acceptor: tls::acceptor(&cert, &key, a.tls_client_ca.as_deref())?,
                client_auth: a.tls_client_ca.is_some(),
            },
            (None, None, None) => ServerAuth::None,
            _ => return Err(Error::Usage("--tls-cert and --tls-key go together".into())),
        };
        if a.tls_client_ca.is_some() && !matches!(auth, ServerAuth::Tls { .. }) {
            return Err(Error::Usage(
                "--tls-client-ca needs TLS: add --tls-cert and --tls-key".into(),
            ));
        }
        no_auth_over_kcp(!matches!(auth, ServerAuth::None), &kcp)?;
        if a.no_auth && auth.authenticates_clients() {
            return Err(Error::Usage(format!(
                "--no-auth contradicts --{}",
                match auth {
                    ServerAuth::Psk(_) => "psk-file",
                    _ => "tls-client-ca",
                }
            )));
        }
        if kcp.is_some() {
            // KCP's own cipher is all a kcptun peer has: a key of the operator's, not
            // kcptun's published default, and a real cipher, count as its access control.
            let keyed = a.kcp.key.is_some()
                && !matches!(a.kcp.crypt.as_deref(), Some("none") | Some("xor"));
            if !keyed && !a.no_auth && !auth::is_loopback(&listen) {
                return Err(Error::Usage(format!(
                    "refusing to serve {listen} over KCP without a key of your own: anyone                      could use the tunnel; add --key SECRET (with --crypt other than none                      or xor), or --no-auth to serve without one"
                )));
            }
        } else if !auth.authenticates_clients() && !a.no_auth && !auth::is_loopback(&listen) {
            let tls = matches!(auth, ServerAuth::Tls { .. });
            return Err(auth::open_proxy_error(&listen, tls));
        }
        Ok(ServerSettings {
            listen,
            target,
            config,
            auth,
            limits,
            metrics: a.metrics,
            connect_timeout: positive(a.connect_timeout)?,
            stats: a.stats.filter(|d| !d.is_zero()),
            grace: a.grace.unwrap_or(DEFAULT_GRACE),
            kcp,
        })
    }

    fn or(self, file: ServerArgs) -> ServerArgs {
        ServerArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            target: self.target.or(file.target),
            proto: self.proto.or(file.proto),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            psk_file: self.psk_file.or(file.psk_file),
            no_auth: self.no_auth || file.no_auth,
            metrics: self.metrics.or(file.metrics),
            connect_timeout: self.connect_timeout.or(file.connect_timeout),
            stats: self.stats.or(file.stats),
            grace: self.grace.or(file.grace),
            limits: self.limits.or(file.limits),
            tuning: self.tuning.or(file.tuning),
            kcp: self.kcp.or(file.kcp),
        }
    }

    fn relative_to(mut self, file: &Path) -> ServerArgs {
        self.tls_cert = self.tls_cert.map(|p| beside(file, p));
        self.tls_key = self.tls_key.map(|p| beside(file, p));
        self.tls_client_ca = self.tls_client_ca.map(|p| beside(file, p));
        self.psk_file = self.psk_file.map(|p| beside(file, p));
        self
    }
}

/// Flags of `braid client` (each also a key of `--config`).
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct ClientArgs {
    /// TOML file with any of these options (keys: the long flag names); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to accept local connections on, e.g. 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, visible_alias = "localaddr", value_name = "ADDR")]
    #[serde(alias = "localaddr")]
    pub listen: Option<String>,
    /// The `braid server` (or kcptun-server) to connect to.
    #[arg(long, visible_alias = "remoteaddr", value_name = "HOST:PORT")]
    #[serde(alias = "remoteaddr")]
    pub server: Option<String>,
    /// Protocol to speak [default: yamux].
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,
    /// Carrier connections to keep; each local connection goes over the least loaded [default: 1].
    #[arg(long, visible_alias = "conn", value_name = "N")]
    #[serde(alias = "conn")]
    pub conns: Option<usize>,
    /// TLS: trust the server certificates signed by these CAs (PEM); turns TLS on.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// TLS: turn TLS on without checking the server's certificate (testing only).
    #[arg(long)]
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// TLS: name to check the server certificate against [default: the host of --server].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Mutual TLS: our certificate chain (PEM), for a server with --tls-client-ca; needs --tls-key.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Pre-shared key file, the same as the server's --psk-file: authenticates both ends and encrypts the carrier.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Time allowed to connect to the server; local connections wait this long for a carrier while reconnecting [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub connect_timeout: Option<Duration>,
    /// Start even if the server cannot be reached yet (otherwise that is an error).
    #[arg(long)]
    #[serde(default)]
    pub wait_for_server: bool,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Print a stats line to stdout this often (e.g. 10s) [default: never].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub stats: Option<Duration>,
    /// On SIGINT/SIGTERM, how long active connections may go on before they are cut [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub grace: Option<Duration>,
    #[allow(missing_docs)]
    #[command(flatten)]
    #[serde(flatten)]
    pub tuning: Tuning,
    #[allow(missing_docs)]
    #[command(flatten)]
    #[serde(flatten)]
    pub kcp: KcpArgs,
}

/// What `braid client` runs with: [`ClientArgs`] resolved and checked.
#[derive(Clone)]
pub struct ClientSettings {
    /// Address to listen on.
    pub listen: String,
    /// The server, `HOST:PORT`.
    pub server: String,
    /// Session configuration (protocol and tuning).
    pub config: Config,
    /// Carrier connections to keep (at least 1).
    pub conns: usize,
    /// How carrier connections are secured.
    pub auth: ClientAuth,
    /// Time allowed to connect (TCP and TLS), and for a local connection to get a carrier.
    pub connect_timeout: Duration,
    /// Start without a first successful connection.
    pub wait_for_server: bool,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<String>,
    /// Stats line interval, if any.
    pub stats: Option<Duration>,
    /// How long active connections may go on after a shutdown signal.
    pub grace: Duration,
    /// KCP carriers instead of TCP (`--transport kcp`).
    pub kcp: Option<KcpSettings>,
}

impl ClientArgs {
    /// Merges the `--config` file (flags win), applies defaults and checks everything.
    pub fn resolve(self) -> Result<ClientSettings, Error> {
        let a = match self.config.clone() {
            Some(path) => {
                let file: ClientArgs = load_file::<ClientArgs>(&path)?;
                self.or(file.relative_to(&path))
            }
            None => self,
        };
        let listen = a.listen.ok_or_else(|| missing("listen"))?;
        let server = a.server.ok_or_else(|| missing("server"))?;
        let host = check_host_port("--server", &server)?;
        let proto = a.proto.unwrap_or(kcp::default_proto(a.kcp.on()));
        if proto == Proto::Auto {
            return Err(Error::Usage(
                "--proto auto is for the server: pick smux1, smux2 or yamux".into(),
            ));
        }
        let kcp = a.kcp.resolve(Side::Client)?;
        let mut config = kcp_tuning(a.tuning.clone(), &kcp).config(proto, Side::Client)?;
        // The client only opens streams: any its server opens are refused at once.
        config.accept_streams = false;
        let conns = a.conns.unwrap_or(1);
        if !(1..=64).contains(&conns) {
            return Err(Error::Usage(format!(
                "invalid --conns {conns}: allowed 1..=64"
            )));
        }
        let identity = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err(Error::Usage("--tls-cert and --tls-key go together".into())),
        };
        let tls = match (a.tls_ca, a.tls_insecure_skip_verify) {
            (Some(_), true) => {
                return Err(Error::Usage(
                    "--tls-ca and --tls-insecure-skip-verify exclude each other".into(),
                ))
            }
            (ca, insecure) if ca.is_some() || insecure => {
                let name = a.tls_server_name.as_deref().unwrap_or(host);
                Some(ClientTls::new(ca.as_deref(), name, identity)?)
            }
            _ if a.tls_server_name.is_some() || identity.is_some() => {
                let flag = match identity {
                    Some(_) => "--tls-cert",
                    None => "--tls-server-name",
                };
                return Err(Error::Usage(format!(
                    "{flag} needs TLS: add --tls-ca or --tls-insecure-skip-verify"
                )));
            }
            _ => None,
        };
        no_auth_over_kcp(tls.is_some() || a.psk_file.is_some(), &kcp)?;
        let auth = match (tls, a.psk_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "--psk-file and the --tls-* options exclude each other".into(),
                ))
            }
            (Some(tls), None) => ClientAuth::Tls(tls),
            (None, Some(psk)) => ClientAuth::Psk(Arc::new(Psk::from_file(&psk)?)),
            (None, None) => ClientAuth::None,
        };
        Ok(ClientSettings {
            listen,
            server,
            config,
            conns,
            auth,
            connect_timeout: positive(a.connect_timeout)?,
            wait_for_server: a.wait_for_server,
            metrics: a.metrics,
            stats: a.stats.filter(|d| !d.is_zero()),
            grace: a.grace.unwrap_or(DEFAULT_GRACE),
            kcp,
        })
    }

    fn or(self, file: ClientArgs) -> ClientArgs {
        ClientArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            server: self.server.or(file.server),
            proto: self.proto.or(file.proto),
            conns: self.conns.or(file.conns),
            tls_ca: self.tls_ca.or(file.tls_ca),
            tls_insecure_skip_verify: self.tls_insecure_skip_verify
                || file.tls_insecure_skip_verify,
            tls_server_name: self.tls_server_name.or(file.tls_server_name),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            psk_file: self.psk_file.or(file.psk_file),
            connect_timeout: self.connect_timeout.or(file.connect_timeout),
            wait_for_server: self.wait_for_server || file.wait_for_server,
            metrics: self.metrics.or(file.metrics),
            stats: self.stats.or(file.stats),
            grace: self.grace.or(file.grace),
            tuning: self.tuning.or(file.tuning),
            kcp: self.kcp.or(file.kcp),
        }
    }

    fn relative_to(mut self, file: &Path) -> ClientArgs {
        self.tls_ca = self.tls_ca.map(|p| beside(file, p));
        self.tls_cert = self.tls_cert.map(|p| beside(file, p));
        self.tls_key = self.tls_key.map(|p| beside(file, p));
        self.psk_file = self.psk_file.map(|p| beside(file, p));
        self
    }
}

/// Under KCP, kcptun's smux2 stream window (`--streambuf` 2 MiB) unless one is given.
fn kcp_tuning(mut tuning: Tuning, kcp: &Option<KcpSettings>) -> Tuning {
    if kcp.is_some() {
        tuning.max_stream_buffer = tuning.max_stream_buffer.or(Some(kcp::STREAM_BUFFER));
    }
    tuning
}

fn no_auth_over_kcp(auth: bool, kcp: &Option<KcpSettings>) -> Result<(), Error> {
    if auth && kcp.is_some() {
        return Err(Error::Usage(
            "TLS and --psk-file are for --transport tcp; KCP encrypts with --crypt and --key"
                .into(),
        ));
    }
    Ok(())
}

/// `--connect-timeout`, which must leave some time to connect.
fn positive(connect_timeout: Option<Duration>) -> Result<Duration, Error> {
    match connect_timeout {
        None => Ok(DEFAULT_CONNECT_TIMEOUT),
        Some(d) if d.is_zero() => Err(Error::Usage(
            "invalid --connect-timeout 0: must be > 0".into(),
        )),
        Some(d) => Ok(d),
    }
}

fn missing(flag: &str) -> Error {
    Error::Usage(format!("--{flag} is required (as a flag or in --config)"))
}

/// Checks `HOST:PORT` and returns the host (without IPv6 brackets).
fn check_host_port<'a>(flag: &str, s: &'a str) -> Result<&'a str, Error> {
    let bad = || Error::Usage(format!("invalid {flag} `{s}`: expected HOST:PORT"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

fn beside(file: &Path, p: PathBuf) -> PathBuf {
    match file.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// The long flag names of `A`: the keys its config file may hold.
pub(super) fn keys<A: clap::Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .map(String::from)
        .collect()
}

/// Other names of `A`'s flags (kcptun's: `conn`, `ds`, ...), also accepted as keys.
fn aliases<A: clap::Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .flat_map(|a| a.get_all_aliases().unwrap_or_default())
        .map(String::from)
        .collect()
}

/// Reads a TOML config file whose keys are `A`'s long flag names.
fn load_file<A: clap::Args + DeserializeOwned>(path: &Path) -> Result<A, Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read config file {shown}: {e}")))?;
    let one_line = |e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(l) => Error::Usage(format!("{shown}:{l}: {msg}")),
            None => Error::Usage(format!("{shown}: {msg}")),
        }
    };
    let table: toml::Table = toml::from_str(&text).map_err(one_line)?;
    let known = keys::<A>();
    let other = aliases::<A>();
    if let Some(key) = table
        .keys()
        .find(|k| !known.contains(k) && !other.contains(k))
    {
        return Err(Error::Usage(format!(
            "{shown}: unknown key `{key}` (keys are the long flag names: {})",
            known.join(", ")
        )));
    }
    A::deserialize(toml::Value::Table(table))
        .map_err(|e| Error::Usage(format!("{shown}: {}", e.message().trim())))
}

#[cfg(test)]
mod tests;
