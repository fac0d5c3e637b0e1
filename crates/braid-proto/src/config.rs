//! Session configuration with Go's defaults and validation.

use crate::frame::smux::{Version, MAX_PAYLOAD};
use std::time::Duration;

/// Which end of the connection a session is. Clients open odd stream ids (3, 5, ...),
/// servers even ones (2, 4, ...), exactly as Go smux numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The dialing side.
    Client,
    /// The accepting side.
    Server,
}

/// The wire protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// xtaci/smux version 1 (Go's default).
    SmuxV1,
    /// xtaci/smux version 2: per-stream windows via UPD frames.
    SmuxV2,
    /// hashicorp/yamux: per-stream windows, RST, ping, GoAway.
    Yamux,
    /// Servers only: speak whatever the client speaks, told apart by its first byte
    /// (smux's version byte is 1 or 2, yamux's is 0), so one listener serves all three.
    /// Each session then gets [`Config::detected`]: the fields the application changed
    /// are kept (where the detected protocol allows the value), the others take that
    /// protocol's Go defaults. Limit: a client that opens no stream sends nothing until its first
    /// keepalive, and the server can open no stream until the client has spoken.
    Auto,
}

impl Protocol {
    /// The smux version byte, for the smux protocols.
    pub fn smux_version(self) -> Option<Version> {
        match self {
            Protocol::SmuxV1 => Some(Version::V1),
            Protocol::SmuxV2 => Some(Version::V2),
            Protocol::Yamux | Protocol::Auto => None,
        }
    }

    /// The protocol a client's first byte announces, as [`Protocol::Auto`] tells them
    /// apart: smux's version byte is 1 or 2, yamux's is 0.
    ///
    /// ```
    /// use braid_proto::Protocol;
    /// assert_eq!(Protocol::from_first_byte(0), Some(Protocol::Yamux));
    /// assert_eq!(Protocol::from_first_byte(2), Some(Protocol::SmuxV2));
    /// assert_eq!(Protocol::from_first_byte(b'G'), None);
    /// ```
    pub fn from_first_byte(first: u8) -> Option<Protocol> {
        match first {
            0 => Some(Protocol::Yamux),
            1 => Some(Protocol::SmuxV1),
            2 => Some(Protocol::SmuxV2),
            _ => None,
        }
    }
}

/// Session settings. `Config::new(protocol)` starts from the Go library's own defaults for
/// that protocol (`Config::default()` is smux v1's); fields Go does not have are braid's
/// bounds. Set `protocol` through `Config::new`, so that the defaults follow it.
///
/// ```
/// use braid_proto::{Config, ConfigField, Protocol};
///
/// let mut config = Config::new(Protocol::SmuxV2);
/// config.max_stream_buffer = 1 << 20;
/// config.validate().unwrap();
///
/// config.max_frame_size = 70_000;
/// let err = config.validate().unwrap_err();
/// assert_eq!(err.field, ConfigField::MaxFrameSize);
/// assert_eq!(err.to_string(), "invalid config: max_frame_size = 70000, allowed: 1..=65535");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Wire protocol. Default: smux v1, as Go.
    pub protocol: Protocol,
    /// Send no NOPs and never time out. Default: false.
    pub keep_alive_disabled: bool,
    /// How often a keepalive is sent (smux NOP, yamux Ping). Default: smux 10 s, yamux 30 s.
    pub keep_alive_interval: Duration,
    /// smux: the session ends when nothing was received for this long (checked every
    /// timeout, so detection takes timeout..2 x timeout, as in Go); default 30 s.
    /// yamux: the session ends when a keepalive ping is not answered within this long
    /// (Go's `ConnectionWriteTimeout`); default 10 s.
    pub keep_alive_timeout: Duration,
    /// Largest payload per data frame we send: smux 1..=65535 (default 32768), yamux
    /// 1..=16 MiB (default 64 KiB; Go sends one frame per write, up to the window).
    pub max_frame_size: usize,
    /// Session-wide receive budget in bytes: reading from the connection pauses while
    /// this much received data waits to be read by the application. Default: 4 MiB.
    pub max_receive_buffer: usize,
    /// Per-stream receive window announced to the peer: smux v2 (default 65536) and
    /// yamux (`MaxStreamWindowSize`, at least 256 KiB, default 256 KiB).
    pub max_stream_buffer: usize,
    /// Inbound streams waiting for `accept`. smux: reading pauses while the queue is full
    /// (default 1024, as Go). yamux: further SYNs are refused with RST (default 256).
    pub accept_backlog: usize,
    /// yamux: outbound streams whose SYN the peer has not acknowledged yet; `open`
    /// refuses more (Go blocks `OpenStream`). Default 256.
    pub max_unacked_opens: usize,
    /// yamux: an outbound stream the peer has not acknowledged in this time is reset and
    /// its calls fail with `TimedOut` (Go closes the whole session). Default 75 s.
    pub stream_open_timeout: Duration,
    /// A stream the application has closed must finish within this time, or it is reset
    /// and forgotten: yamux waits this long for the peer's FIN after ours; both protocols
    /// wait this long for data and FIN still waiting for flow-control credit (a peer that
    /// forgot the stream never gives any). Default 5 min.
    pub stream_close_timeout: Duration,
    /// Default idle timeout of every stream: a stream on which no data moved either way
    /// for this long is reset (yamux RST, smux FIN) and its calls fail with `TimedOut`.
    /// Per stream: `StreamMut::set_idle_timeout`. Default: none (Go smux and yamux have
    /// none; gmux's is 5 minutes).
    pub idle_timeout: Option<Duration>,
    /// smux: send and accept gmux stream names as SYN payload
    /// (`Session::open_named`). Plain smux peers reject a SYN payload, so both ends must
    /// enable it. Not available with yamux. Default: off.
    pub stream_names: bool,
    /// Called once for each stream the application holds when it ends, with why (see
    /// [`StreamMut::end`](crate::StreamMut::end)). The tokio and blocking
    /// layers call it outside their locks (the blocking one from its writer thread), so it
    /// may use the session. Default: none.
    pub on_stream_end: Option<StreamEndCallback>,
    /// yamux: grow a stream's receive window while its window updates come faster than
    /// two round trips (the window, not the reader, limits it), up to
    /// `auto_window_max`, with all streams' growth bounded by `max_receive_buffer`.
    /// Round trips are measured with pings. Off by default: Go never grows windows, and
    /// memory use stays as Go's.
    pub window_auto_tuning: bool,
    /// yamux with `window_auto_tuning`: the largest window one stream may grow to.
    /// Default 16 MiB.
    pub auto_window_max: usize,
    /// Percent of the link that lower-priority streams get between them while a higher
    /// priority has data (see `StreamMut::set_priority`), 0..=99. Default: 10.
    pub priority_share: u8,
    /// Bytes one stream may have waiting to be framed before its writes block.
    /// Default: 256 KiB.
    pub stream_send_buffer: usize,
    /// Bytes all streams together may have waiting to be framed. Default: 1 MiB (the
    /// driver keeps up to 512 KiB of frames beyond it, and the socket its own buffer;
    /// 4 MiB let 1000 writing streams each hold a piece, which cost memory and speed).
    pub max_send_buffer: usize,
    /// How long [`Session::close`](crate::Session::close) waits to flush buffered data
    /// and FINs before giving up; also bounds the driver's last flush and shutdown of the
    /// connection (a TLS close_notify to a peer that stopped reading) after the session
    /// ended for any other reason. Default: 10 s.
    pub close_timeout: Duration,
    /// [`Protocol::Auto`]: the session ends with
    /// [`ConnectionError::DetectTimeout`](crate::ConnectionError::DetectTimeout) when the
    /// client has sent nothing for this long, so that silent connections cannot be held
    /// forever. A Go yamux client that opens no stream sends its first byte with its
    /// first keepalive (30 s): serve such clients with an explicit protocol or a longer
    /// timeout. braid clients send a keepalive as soon as they start. Default: 10 s.
    pub detect_timeout: Duration,
    /// Whether the application accepts inbound streams. When false, streams the peer
    /// opens are refused at once (yamux RST, smux FIN: smux has no refusal) instead of
    /// waiting in the accept queue, where nobody would take them. Default: true.
    pub accept_streams: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            protocol: Protocol::SmuxV1,
            keep_alive_disabled: false,
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_frame_size: 32768,
            max_receive_buffer: 4 * 1024 * 1024,
            max_stream_buffer: 65536,
            accept_backlog: 1024,
            max_unacked_opens: 256,
            window_auto_tuning: false,
            idle_timeout: None,
            stream_names: false,
            on_stream_end: None,
            priority_share: 10,
            auto_window_max: 16 * 1024 * 1024,
            stream_open_timeout: Duration::from_secs(75),
            stream_close_timeout: Duration::from_secs(300),
            stream_send_buffer: 256 * 1024,
            max_send_buffer: 1024 * 1024,
            close_timeout: Duration::from_secs(10),
            detect_timeout: Duration::from_secs(10),
            accept_streams: true,
        }
    }
}

/// The function type behind [`StreamEndCallback`].
pub type StreamEndFn = dyn Fn(crate::StreamId, &crate::StreamEnd) + Send + Sync;

/// A callback for ended streams (`Config::on_stream_end`).
///
/// ```
/// use braid_proto::{Config, StreamEndCallback};
/// let mut config = Config::default();
/// config.on_stream_end = Some(StreamEndCallback::new(|id, why| eprintln!("stream {id}: {why:?}")));
/// ```
#[derive(Clone)]
pub struct StreamEndCallback(std::sync::Arc<StreamEndFn>);

impl StreamEndCallback {
    /// Wraps `f`.
    pub fn new(f: impl Fn(crate::StreamId, &crate::StreamEnd) + Send + Sync + 'static) -> Self {
        StreamEndCallback(std::sync::Arc::new(f))
    }

    /// Calls it.
    pub fn call(&self, id: crate::StreamId, end: &crate::StreamEnd) {
        (self.0)(id, end)
    }
}

impl std::fmt::Debug for StreamEndCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamEndCallback")
    }
}

impl PartialEq for StreamEndCallback {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StreamEndCallback {}

/// Defines [`ConfigField`] from its variants and the `Config` fields they name.
macro_rules! config_fields {
    ($($variant:ident = $name:ident),* $(,)?) => {
        /// A [`Config`] field, as a [`ConfigError`] names it. Displays as the field's
        /// name (`max_frame_size`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ConfigField {
            $(#[doc = concat!("`Config::", stringify!($name), "`.")]
            $variant,)*
        }

        impl ConfigField {
            /// The field's name in [`Config`].
            pub fn name(self) -> &'static str {
                match self {
                    $(ConfigField::$variant => stringify!($name),)*
                }
            }
        }
    };
}

config_fields!(
    Protocol = protocol,
    KeepAliveInterval = keep_alive_interval,
    KeepAliveTimeout = keep_alive_timeout,
    MaxFrameSize = max_frame_size,
    MaxReceiveBuffer = max_receive_buffer,
    MaxStreamBuffer = max_stream_buffer,
    AcceptBacklog = accept_backlog,
    MaxUnackedOpens = max_unacked_opens,
    StreamOpenTimeout = stream_open_timeout,
    StreamCloseTimeout = stream_close_timeout,
    IdleTimeout = idle_timeout,
    StreamNames = stream_names,
    AutoWindowMax = auto_window_max,
    PriorityShare = priority_share,
    StreamSendBuffer = stream_send_buffer,
    MaxSendBuffer = max_send_buffer,
    CloseTimeout = close_timeout,
    DetectTimeout = detect_timeout,
);

impl std::fmt::Display for ConfigField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field} = {value}, allowed: {allowed}")]
pub struct ConfigError {
    /// The offending field.
    pub field: ConfigField,
    /// Its value.
    pub value: String,
    /// What would be accepted.
    pub allowed: String,
}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

const I32_MAX: usize = i32::MAX as usize;
/// Largest yamux data frame braid sends.
const MAX_YAMUX_FRAME: usize = 16 * 1024 * 1024;
/// Durations are added to `Instant`s; this bound keeps that from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// Go's defaults with `protocol` set.
    pub fn new(protocol: Protocol) -> Config {
        match protocol {
            Protocol::SmuxV1 | Protocol::SmuxV2 | Protocol::Auto => Config {
                protocol,
                ..Config::default()
            },
            // hashicorp/yamux DefaultConfig(); the receive budget is a safety net above
            // the per-stream windows rather than a working limit.
            Protocol::Yamux => Config {
                protocol,
                keep_alive_interval: Duration::from_secs(30),
                keep_alive_timeout: Duration::from_secs(10),
                max_frame_size: 64 * 1024,
                max_receive_buffer: 64 * 1024 * 1024,
                max_stream_buffer: 256 * 1024,
                accept_backlog: 256,
                ..Config::default()
            },
        }
    }

    /// The configuration an [`Protocol::Auto`] session uses once it knows the client
    /// speaks `protocol`.
    ///
    /// Every field the application changed from `Config::new(Protocol::Auto)` keeps its
    /// value; every field left at that value takes `protocol`'s default (Go's, see
    /// [`Config::new`]), so an untuned `Auto` server serves each protocol exactly as Go
    /// would. A value equal to `Auto`'s default counts as unchanged: `max_frame_size`
    /// set to 32768 still becomes yamux's 64 KiB.
    ///
    /// A kept value that `protocol` does not allow takes `protocol`'s default instead.
    /// `Auto` is validated by smux's rules, so for smux v1 and v2 nothing falls back; for
    /// yamux these do:
    /// - `max_stream_buffer` below 256 KiB (yamux's smallest window): 256 KiB;
    /// - `max_stream_buffer` above `auto_window_max` (16 MiB unless changed too): 256 KiB;
    /// - `stream_names`: off (names are a smux/gmux SYN payload);
    /// - `max_unacked_opens` 0: 256.
    ///
    /// Some fields mean slightly different things per protocol (see each field):
    /// `keep_alive_timeout` is smux's silence timeout but yamux's ping reply timeout, and
    /// a full `accept_backlog` pauses smux but refuses yamux streams.
    ///
    /// ```
    /// use braid_proto::{Config, Protocol};
    ///
    /// let mut auto = Config::new(Protocol::Auto);
    /// auto.max_frame_size = 4096;
    /// auto.max_stream_buffer = 128 * 1024;
    /// let smux = auto.detected(Protocol::SmuxV2);
    /// assert_eq!((smux.max_frame_size, smux.max_stream_buffer), (4096, 128 * 1024));
    /// let yamux = auto.detected(Protocol::Yamux);
    /// assert_eq!(yamux.max_frame_size, 4096);
    /// assert_eq!(yamux.max_stream_buffer, 256 * 1024); // yamux's minimum
    /// assert_eq!(yamux.keep_alive_interval, std::time::Duration::from_secs(30)); // unchanged: Go's
    /// ```
    pub fn detected(&self, protocol: Protocol) -> Config {
        let auto = Config::new(Protocol::Auto);
        let default = Config::new(protocol);
        let mut c = self.clone();
        c.protocol = protocol;
        macro_rules! unchanged_take_default {
            ($($field:ident),* $(,)?) => {{
                // Every field is named here, so a new one does not compile until listed.
                let Config { protocol: _, $($field: _),* } = self;
                $(if self.$field == auto.$field {
                    c.$field = default.$field;
                })*
            }};
        }
        unchanged_take_default!(
            keep_alive_disabled,
            keep_alive_interval,
            keep_alive_timeout,
            max_frame_size,
            max_receive_buffer,
            max_stream_buffer,
            accept_backlog,
            max_unacked_opens,
            stream_open_timeout,
            stream_close_timeout,
            idle_timeout,
            stream_names,
            on_stream_end,
            window_auto_tuning,
            auto_window_max,
            priority_share,
            stream_send_buffer,
            max_send_buffer,
            close_timeout,
            detect_timeout,
            accept_streams,
        );
        // Values `protocol` rejects take its default: the field validation names, or,
        // when that one has its default already, the field it is checked against.
        let default = Config::new(protocol);
        while let Err(e) = c.validate() {
            let against = match e.field {
                ConfigField::AutoWindowMax => Some(ConfigField::MaxStreamBuffer),
                ConfigField::MaxStreamBuffer => Some(ConfigField::MaxReceiveBuffer),
                ConfigField::KeepAliveTimeout => Some(ConfigField::KeepAliveInterval),
                ConfigField::MaxSendBuffer => Some(ConfigField::StreamSendBuffer),
                _ => None,
            };
            if !c.reset_field(e.field, &default)
                && !against.is_some_and(|f| c.reset_field(f, &default))
            {
                // Not something `protocol` rejects: `self` was invalid to begin with.
                break;
            }
        }
        c
    }

    /// Sets `field` back to `default`'s value.
    /// Returns false if it had that value already (or is not a field validation names).
    /// Each reset moves a field to its default for good, so repeated resets end.
    fn reset_field(&mut self, field: ConfigField, default: &Config) -> bool {
        macro_rules! reset {
            ($($name:ident),* $(,)?) => {
                match field.name() {
                    $(stringify!($name) if self.$name != default.$name => {
                        self.$name = default.$name.clone();
                        true
                    })*
                    _ => false,
                }
            };
        }
        reset!(
            keep_alive_interval,
            keep_alive_timeout,
            max_frame_size,
            max_receive_buffer,
            max_stream_buffer,
            accept_backlog,
            max_unacked_opens,
            stream_open_timeout,
            stream_close_timeout,
            idle_timeout,
            stream_names,
            auto_window_max,
            priority_share,
            stream_send_buffer,
            max_send_buffer,
            close_timeout,
            detect_timeout,
        )
    }

    /// [`Config::validate`], plus the rules that depend on the side: only a server can
    /// detect the protocol ([`Protocol::Auto`]).
    pub fn validate_for(&self, side: Side) -> Result<(), ConfigError> {
        if self.protocol == Protocol::Auto && side == Side::Client {
            return Err(ConfigError {
                field: ConfigField::Protocol,
                value: "Auto".into(),
                allowed:
                    "SmuxV1, SmuxV2 or Yamux for a client (Auto detects, so it is for servers)"
                        .into(),
            });
        }
        self.validate()
    }

    /// Checks every field as Go's `VerifyConfig` does, plus braid's own fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(
            ok: bool,
            field: ConfigField,
            value: impl std::fmt::Debug,
            allowed: impl Into<String>,
        ) -> Result<(), ConfigError> {
            if ok {
                return Ok(());
            }
            Err(ConfigError {
                field,
                value: format!("{value:?}"),
                allowed: allowed.into(),
            })
        }
        for (field, value) in [
            (ConfigField::KeepAliveInterval, self.keep_alive_interval),
            (ConfigField::KeepAliveTimeout, self.keep_alive_timeout),
            (ConfigField::CloseTimeout, self.close_timeout),
            (ConfigField::DetectTimeout, self.detect_timeout),
        ] {
            check(value <= MAX_DURATION, field, value, "<= 365 days")?;
        }
        let yamux = self.protocol == Protocol::Yamux;
        if !self.keep_alive_disabled {
            check(
                !self.keep_alive_interval.is_zero(),
                ConfigField::KeepAliveInterval,
                self.keep_alive_interval,
                "> 0 (or keep_alive_disabled)",
            )?;
            if yamux {
                check(
                    !self.keep_alive_timeout.is_zero(),
                    ConfigField::KeepAliveTimeout,
                    self.keep_alive_timeout,
                    "> 0",
                )?;
            } else {
                check(
                    self.keep_alive_timeout >= self.keep_alive_interval,
                    ConfigField::KeepAliveTimeout,
                    self.keep_alive_timeout,
                    format!(">= keep_alive_interval ({:?})", self.keep_alive_interval),
                )?;
            }
        }
        let max_frame = if yamux { MAX_YAMUX_FRAME } else { MAX_PAYLOAD };
        check(
            (1..=max_frame).contains(&self.max_frame_size),
            ConfigField::MaxFrameSize,
            self.max_frame_size,
            format!("1..={max_frame}"),
        )?;
        check(
            self.priority_share <= 99,
            ConfigField::PriorityShare,
            self.priority_share,
            "0..=99 (percent)",
        )?;
        if let Some(t) = self.idle_timeout {
            check(
                !t.is_zero() && t <= MAX_DURATION,
                ConfigField::IdleTimeout,
                t,
                "> 0 and <= 365 days",
            )?;
        }
        check(
            !(yamux && self.stream_names),
            ConfigField::StreamNames,
            self.stream_names,
            "false with yamux (names are a smux/gmux SYN payload)",
        )?;
        if yamux {
            check(
                (256 * 1024..=I32_MAX).contains(&self.max_stream_buffer),
                ConfigField::MaxStreamBuffer,
                self.max_stream_buffer,
                "262144..=2147483647 (yamux windows start at 256 KiB)",
            )?;
            check(
                (self.max_stream_buffer..=I32_MAX).contains(&self.auto_window_max),
                ConfigField::AutoWindowMax,
                self.auto_window_max,
                format!(
                    "max_stream_buffer ({})..=2147483647",
                    self.max_stream_buffer
                ),
            )?;
            check(
                self.max_unacked_opens >= 1,
                ConfigField::MaxUnackedOpens,
                self.max_unacked_opens,
                ">= 1",
            )?;
        }
        // Armed for every protocol (stream_close_timeout) or for yamux only; checked for
        // all, since they are added to instants.
        for (field, value) in [
            (ConfigField::StreamOpenTimeout, self.stream_open_timeout),
            (ConfigField::StreamCloseTimeout, self.stream_close_timeout),
        ] {
            check(
                !value.is_zero() && value <= MAX_DURATION,
                field,
                value,
                "> 0 and <= 365 days",
            )?;
        }
        check(
            (1..=I32_MAX).contains(&self.max_receive_buffer),
            ConfigField::MaxReceiveBuffer,
            self.max_receive_buffer,
            "1..=2147483647",
        )?;
        check(
            (1..=self.max_receive_buffer).contains(&self.max_stream_buffer)
                || (yamux && self.max_stream_buffer <= I32_MAX),
            ConfigField::MaxStreamBuffer,
            self.max_stream_buffer,
            format!("1..=max_receive_buffer ({})", self.max_receive_buffer),
        )?;
        check(
            self.accept_backlog >= 1,
            ConfigField::AcceptBacklog,
            self.accept_backlog,
            ">= 1",
        )?;
        check(
            (1..=I32_MAX).contains(&self.stream_send_buffer),
            ConfigField::StreamSendBuffer,
            self.stream_send_buffer,
            "1..=2147483647",
        )?;
        check(
            self.max_send_buffer >= self.stream_send_buffer,
            ConfigField::MaxSendBuffer,
            self.max_send_buffer,
            format!(">= stream_send_buffer ({})", self.stream_send_buffer),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_gos() {
        let c = Config::default();
        assert_eq!(c.protocol, Protocol::SmuxV1);
        assert_eq!(c.keep_alive_interval, Duration::from_secs(10));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(c.max_frame_size, 32768);
        assert_eq!(c.max_receive_buffer, 4194304);
        assert_eq!(c.max_stream_buffer, 65536);
        assert_eq!(c.accept_backlog, 1024);
        c.validate().unwrap();
    }

    #[test]
    fn yamux_defaults_are_gos() {
        let c = Config::new(Protocol::Yamux);
        assert_eq!(c.accept_backlog, 256);
        assert_eq!(c.keep_alive_interval, Duration::from_secs(30));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(10));
        assert_eq!(c.max_stream_buffer, 256 * 1024);
        assert_eq!(c.stream_open_timeout, Duration::from_secs(75));
        assert_eq!(c.stream_close_timeout, Duration::from_secs(300));
        c.validate().unwrap();
        let mut small = c.clone();
        small.max_stream_buffer = 65536;
        assert_eq!(
            small.validate().unwrap_err().field,
            ConfigField::MaxStreamBuffer
        );
        let mut big = c;
        big.max_frame_size = 1 << 20;
        big.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        type Case = (fn(&mut Config), &'static str);
        let cases: Vec<Case> = vec![
            (
                |c| c.keep_alive_interval = Duration::ZERO,
                "keep_alive_interval",
            ),
            (
                |c| c.keep_alive_timeout = Duration::from_secs(1),
                "keep_alive_timeout",
            ),
            (|c| c.max_frame_size = 0, "max_frame_size"),
            (|c| c.max_frame_size = 65536, "max_frame_size"),
            (|c| c.max_receive_buffer = 0, "max_receive_buffer"),
            (|c| c.max_receive_buffer = 1 << 31, "max_receive_buffer"),
            (|c| c.max_stream_buffer = 0, "max_stream_buffer"),
            (|c| c.max_stream_buffer = 8 << 20, "max_stream_buffer"),
            (|c| c.accept_backlog = 0, "accept_backlog"),
            (|c| c.close_timeout = Duration::MAX, "close_timeout"),
            (
                |c| c.keep_alive_timeout = Duration::MAX,
                "keep_alive_timeout",
            ),
            (|c| c.stream_send_buffer = 0, "stream_send_buffer"),
            (|c| c.max_send_buffer = 1, "max_send_buffer"),
        ];
        for (mutate, field) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().field.name(), field);
        }
        // With keepalive disabled its durations are not checked, as in Go.
        let mut c = Config::default();
        c.keep_alive_disabled = true;
        c.keep_alive_interval = Duration::ZERO;
        c.validate().unwrap();
    }

    const DETECTABLE: [Protocol; 3] = [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux];

    #[test]
    fn untuned_auto_detects_gos_defaults() {
        for p in DETECTABLE {
            assert_eq!(
                Config::new(Protocol::Auto).detected(p),
                Config::new(p),
                "{p:?}"
            );
            // Already detected: nothing changes.
            assert_eq!(Config::new(p).detected(p), Config::new(p), "{p:?}");
        }
    }

    #[test]
    fn auto_keeps_the_tuning_for_every_protocol() {
        let callback = StreamEndCallback::new(|_, _| {});
        let mut auto = Config::new(Protocol::Auto);
        auto.keep_alive_interval = Duration::from_secs(1);
        auto.keep_alive_timeout = Duration::from_secs(3);
        auto.max_frame_size = 4096;
        auto.max_receive_buffer = 16 << 20;
        auto.max_stream_buffer = 512 * 1024;
        auto.accept_backlog = 64;
        auto.max_unacked_opens = 32;
        auto.stream_open_timeout = Duration::from_secs(5);
        auto.stream_close_timeout = Duration::from_secs(6);
        auto.idle_timeout = Some(Duration::from_secs(7));
        auto.on_stream_end = Some(callback.clone());
        auto.window_auto_tuning = true;
        auto.auto_window_max = 8 << 20;
        auto.priority_share = 20;
        auto.stream_send_buffer = 1 << 20;
        auto.max_send_buffer = 8 << 20;
        auto.close_timeout = Duration::from_secs(2);
        auto.validate().unwrap();
        for p in DETECTABLE {
            let c = auto.detected(p);
            c.validate().unwrap();
            // Everything but the protocol is the application's.
            assert_eq!(
                c,
                Config {
                    protocol: p,
                    ..auto.clone()
                },
                "{p:?}"
            );
        }
        // keep_alive_disabled and stream_names are kept too (names for smux only).
        let mut auto = Config::new(Protocol::Auto);
        auto.keep_alive_disabled = true;
        auto.stream_names = true;
        for p in [Protocol::SmuxV1, Protocol::SmuxV2] {
            let c = auto.detected(p);
            assert!(c.keep_alive_disabled && c.stream_names, "{p:?}");
        }
        assert!(auto.detected(Protocol::Yamux).keep_alive_disabled);
    }

    #[test]
    fn auto_fields_left_alone_take_the_detected_protocols_defaults() {
        let mut auto = Config::new(Protocol::Auto);
        auto.max_frame_size = 4096;
        let y = auto.detected(Protocol::Yamux);
        assert_eq!(y.max_frame_size, 4096);
        let yamux = Config::new(Protocol::Yamux);
        assert_eq!(
            y,
            Config {
                max_frame_size: 4096,
                ..yamux.clone()
            }
        );
        // A value equal to Auto's default counts as left alone.
        let mut auto = Config::new(Protocol::Auto);
        auto.max_frame_size = 32768;
        assert_eq!(auto.detected(Protocol::Yamux).max_frame_size, 64 * 1024);
        // Only the timeout changed: yamux keeps it, with its own interval.
        let mut auto = Config::new(Protocol::Auto);
        auto.keep_alive_timeout = Duration::from_secs(60);
        let y = auto.detected(Protocol::Yamux);
        assert_eq!(y.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(y.keep_alive_interval, yamux.keep_alive_interval);
    }

    #[test]
    fn auto_values_yamux_rejects_take_yamuxs_defaults() {
        let yamux = Config::new(Protocol::Yamux);
        type Case = (fn(&mut Config), fn(&Config) -> bool);
        let cases: [Case; 5] = [
            // Below yamux's smallest window.
            (
                |c| c.max_stream_buffer = 128 * 1024,
                |c| c.max_stream_buffer == 256 * 1024,
            ),
            // Above the default auto_window_max...
            (
                |c| {
                    c.max_receive_buffer = 64 << 20;
                    c.max_stream_buffer = 32 << 20;
                },
                |c| c.max_stream_buffer == 256 * 1024 && c.max_receive_buffer == 64 << 20,
            ),
            // ...unless that was raised as well.
            (
                |c| {
                    c.max_receive_buffer = 64 << 20;
                    c.max_stream_buffer = 32 << 20;
                    c.auto_window_max = 48 << 20;
                },
                |c| c.max_stream_buffer == 32 << 20 && c.auto_window_max == 48 << 20,
            ),
            (|c| c.stream_names = true, |c| !c.stream_names),
            (|c| c.max_unacked_opens = 0, |c| c.max_unacked_opens == 256),
        ];
        for (i, (tune, check)) in cases.into_iter().enumerate() {
            let mut auto = Config::new(Protocol::Auto);
            auto.max_frame_size = 1000; // kept throughout
            tune(&mut auto);
            auto.validate().unwrap();
            let y = auto.detected(Protocol::Yamux);
            y.validate().unwrap();
            assert!(check(&y), "case {i}: {y:?}");
            assert_eq!(y.max_frame_size, 1000, "case {i}");
            assert_eq!(y.accept_backlog, yamux.accept_backlog, "case {i}");
            // smux takes every one of them.
            for p in [Protocol::SmuxV1, Protocol::SmuxV2] {
                assert_eq!(
                    auto.detected(p),
                    Config {
                        protocol: p,
                        ..auto.clone()
                    },
                    "case {i}"
                );
            }
        }
    }
}
