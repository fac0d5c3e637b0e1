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
}

impl Protocol {
    /// The smux version byte.
    pub fn smux_version(self) -> Version {
        match self {
            Protocol::SmuxV1 => Version::V1,
            Protocol::SmuxV2 => Version::V2,
        }
    }
}

/// Session settings. `Config::default()` matches Go smux's `DefaultConfig()`; fields that
/// Go does not have are braid's send-side bounds.
///
/// ```
/// use braid_proto::{Config, Protocol};
///
/// let mut config = Config::new(Protocol::SmuxV2);
/// config.max_stream_buffer = 1 << 20;
/// config.validate().unwrap();
///
/// config.max_frame_size = 70_000;
/// let err = config.validate().unwrap_err();
/// assert_eq!(err.field, "max_frame_size");
/// assert_eq!(err.to_string(), "invalid config: max_frame_size = 70000, allowed: 1..=65535");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Wire protocol. Default: smux v1, as Go.
    pub protocol: Protocol,
    /// Send no NOPs and never time out. Default: false.
    pub keep_alive_disabled: bool,
    /// How often a NOP is sent. Default: 10 s.
    pub keep_alive_interval: Duration,
    /// The session ends when nothing was received for this long (checked every timeout,
    /// so detection takes timeout..2 x timeout, as in Go). Default: 30 s.
    pub keep_alive_timeout: Duration,
    /// Largest payload per data frame, 1..=65535. Default: 32768.
    pub max_frame_size: usize,
    /// Session-wide receive budget in bytes: reading from the connection pauses while
    /// this much received data waits to be read by the application. Default: 4 MiB.
    pub max_receive_buffer: usize,
    /// smux v2 per-stream window announced to the peer. Default: 65536.
    pub max_stream_buffer: usize,
    /// Inbound streams waiting for `accept`; reading pauses while the queue is full.
    /// Default: 1024, as Go.
    pub accept_backlog: usize,
    /// Bytes one stream may have waiting to be framed before its writes block.
    /// Default: 256 KiB.
    pub stream_send_buffer: usize,
    /// Bytes all streams together may have waiting to be framed. Default: 4 MiB.
    pub max_send_buffer: usize,
    /// How long [`Session::close`](crate::Session::close) waits to flush buffered data
    /// and FINs before giving up. Default: 10 s.
    pub close_timeout: Duration,
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
            stream_send_buffer: 256 * 1024,
            max_send_buffer: 4 * 1024 * 1024,
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field} = {value}, allowed: {allowed}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
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
/// Durations are added to `Instant`s; this bound keeps that from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// Go's defaults with `protocol` set.
    pub fn new(protocol: Protocol) -> Config {
        Config {
            protocol,
            ..Config::default()
        }
    }

    /// Checks every field as Go's `VerifyConfig` does, plus braid's own fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(
            ok: bool,
            field: &'static str,
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
            ("keep_alive_interval", self.keep_alive_interval),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("close_timeout", self.close_timeout),
        ] {
            check(value <= MAX_DURATION, field, value, "<= 365 days")?;
        }
        if !self.keep_alive_disabled {
            check(
                !self.keep_alive_interval.is_zero(),
                "keep_alive_interval",
                self.keep_alive_interval,
                "> 0 (or keep_alive_disabled)",
            )?;
            check(
                self.keep_alive_timeout >= self.keep_alive_interval,
                "keep_alive_timeout",
                self.keep_alive_timeout,
                format!(">= keep_alive_interval ({:?})", self.keep_alive_interval),
            )?;
        }
        check(
            (1..=MAX_PAYLOAD).contains(&self.max_frame_size),
            "max_frame_size",
            self.max_frame_size,
            "1..=65535",
        )?;
        check(
            (1..=I32_MAX).contains(&self.max_receive_buffer),
            "max_receive_buffer",
            self.max_receive_buffer,
            "1..=2147483647",
        )?;
        check(
            (1..=self.max_receive_buffer).contains(&self.max_stream_buffer),
            "max_stream_buffer",
            self.max_stream_buffer,
            format!("1..=max_receive_buffer ({})", self.max_receive_buffer),
        )?;
        check(
            self.accept_backlog >= 1,
            "accept_backlog",
            self.accept_backlog,
            ">= 1",
        )?;
        check(
            (1..=I32_MAX).contains(&self.stream_send_buffer),
            "stream_send_buffer",
            self.stream_send_buffer,
            "1..=2147483647",
        )?;
        check(
            self.max_send_buffer >= self.stream_send_buffer,
            "max_send_buffer",
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
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        // With keepalive disabled its durations are not checked, as in Go.
        let mut c = Config::default();
        c.keep_alive_disabled = true;
        c.keep_alive_interval = Duration::ZERO;
        c.validate().unwrap();
    }
}
