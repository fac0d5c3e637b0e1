//! The server's limits (`--max-sessions`, `--max-streams`, timeouts), protocol
//! detection under `--proto auto`, and the backoff after failed accepts.

use super::units::{de_duration, parse_duration};
use super::Error;
use braid::Protocol;
use serde::Deserialize;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Limit flags of `braid server` (each also a key of `--config`).
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Carrier connections served at once (including those still in their handshake); more are closed at once [default: 256].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Streams forwarded at once per connection; more are reset on arrival, without connecting to the target [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_streams: Option<usize>,
    /// Reset a stream on which no data moved either way for this long; 0: never [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub idle_timeout: Option<Duration>,
    /// With --proto auto: close a connection that has not sent its first frame this long after its handshake [default: 60s, above Go's keepalive intervals].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub detect_timeout: Option<Duration>,
    /// Time a client has to complete the TLS or pre-shared key handshake [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
}

/// The resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Carrier connections at once.
    pub max_sessions: usize,
    /// Forwarded streams at once per connection.
    pub max_streams: usize,
    /// Per-stream idle timeout (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Time from the handshake to the first byte under `--proto auto`.
    pub detect_timeout: Duration,
    /// Time for the TLS or Noise handshake.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions: 256,
            max_streams: 1024,
            idle_timeout: Some(Duration::from_secs(600)),
            detect_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl LimitArgs {
    /// Flags over the file's values.
    pub fn or(self, file: LimitArgs) -> LimitArgs {
        LimitArgs {
            max_sessions: self.max_sessions.or(file.max_sessions),
            max_streams: self.max_streams.or(file.max_streams),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            detect_timeout: self.detect_timeout.or(file.detect_timeout),
            handshake_timeout: self.handshake_timeout.or(file.handshake_timeout),
        }
    }

    /// Defaults applied and values checked.
    pub fn resolve(&self) -> Result<Limits, Error> {
        let d = Limits::default();
        let count = |flag: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(0) => Err(Error::Usage(format!("invalid --{flag} 0: must be > 0"))),
            Some(n) => Ok(n),
        };
        let time = |flag: &str, v: Option<Duration>, default: Duration| match v {
            None => Ok(default),
            Some(t) if t.is_zero() => Err(Error::Usage(format!("invalid --{flag} 0: must be > 0"))),
            Some(t) => Ok(t),
        };
        Ok(Limits {
            max_sessions: count("max-sessions", self.max_sessions, d.max_sessions)?,
            max_streams: count("max-streams", self.max_streams, d.max_streams)?,
            idle_timeout: match self.idle_timeout {
                None => d.idle_timeout,
                Some(t) if t.is_zero() => None,
                Some(t) => Some(t),
            },
            detect_timeout: time("detect-timeout", self.detect_timeout, d.detect_timeout)?,
            handshake_timeout: time(
                "handshake-timeout",
                self.handshake_timeout,
                d.handshake_timeout,
            )?,
        })
    }
}

/// The name of a protocol in flags, logs and metrics.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::SmuxV1 => "smux1",
        Protocol::SmuxV2 => "smux2",
        Protocol::Yamux => "yamux",
        _ => "auto",
    }
}

/// Waits (up to `within`) for the client's first byte and tells its protocol; the
/// connection is returned with that byte put back.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
    within: Duration,
) -> Result<(Protocol, Prefixed<T>), String> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, io.read(&mut first)).await {
        Err(_) => Err(format!("no frame within {within:?} (--detect-timeout)")),
        Ok(Err(e)) => Err(format!("closed before its first frame: {e}")),
        Ok(Ok(0)) => Err("closed before its first frame".into()),
        Ok(Ok(_)) => match Protocol::from_first_byte(first[0]) {
            Some(p) => Ok((
                p,
                Prefixed {
                    first: Some(first[0]),
                    io,
                },
            )),
            None => Err(format!(
                "not a smux or yamux client (first byte {:#04x})",
                first[0]
            )),
        },
    }
}

/// A connection with one byte put back in front of what it reads.
pub struct Prefixed<T> {
    first: Option<u8>,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0 {
            if let Some(b) = self.first.take() {
                buf.put_slice(&[b]);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Lets a repeated event be logged at most once per interval, counting the rest.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one log per `every`.
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records an event. Returns `Some(n)` if it should be logged now, `n` being how
    /// many were not logged since the last one.
    pub fn event(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Backoff after failed accepts (out of file descriptors and the like): the listener
/// stays readable while a connection waits, so retrying at once would spin.
#[derive(Debug)]
pub struct AcceptBackoff {
    delay: Duration,
    log: Throttle,
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept failures are logged at most this often.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

impl Default for AcceptBackoff {
    fn default() -> AcceptBackoff {
        AcceptBackoff {
            delay: ACCEPT_BACKOFF_MIN,
            log: Throttle::new(ACCEPT_LOG_EVERY),
        }
    }
}

impl AcceptBackoff {
    /// A successful accept: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.delay = ACCEPT_BACKOFF_MIN;
    }

    /// Logs `e` (at most once per interval) and returns how long to wait before the
    /// next accept: doubling from 10 ms to 1 s while failures go on.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        if let Some(more) = self.log.event() {
            let why = match e.raw_os_error() {
                Some(23 | 24) => " (out of file descriptors: raise `ulimit -n` or lower --max-sessions/--max-streams)",
                _ => "",
            };
            let also = match more {
                0 => String::new(),
                n => format!("; {n} more failure(s) since the last report"),
            };
            tracing::warn!(
                "accepting a connection failed: {}{why}{also}; backing off",
                super::io_reason(e)
            );
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(ACCEPT_BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.event(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.event(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.event(), Some(5));
        assert_eq!(t.event(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_backoff_doubles_to_a_bound_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let delays: Vec<_> = (0..10).map(|_| b.failed(&emfile)).collect();
        assert_eq!(delays[0], Duration::from_millis(10));
        assert_eq!(delays[1], Duration::from_millis(20));
        assert_eq!(delays[9], Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.failed(&emfile), Duration::from_millis(10));
    }

    #[test]
    fn limits_resolve_with_defaults_and_checks() {
        let l = LimitArgs::default().resolve().unwrap();
        assert_eq!(l, Limits::default());
        let a = LimitArgs {
            idle_timeout: Some(Duration::ZERO),
            max_streams: Some(3),
            ..LimitArgs::default()
        };
        let l = a.resolve().unwrap();
        assert_eq!((l.idle_timeout, l.max_streams), (None, 3));
        let a = LimitArgs {
            max_sessions: Some(0),
            ..LimitArgs::default()
        };
        assert_eq!(
            a.resolve().unwrap_err(),
            Error::Usage("invalid --max-sessions 0: must be > 0".into())
        );
    }

    #[tokio::test]
    async fn detection_puts_the_first_byte_back() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[2, 9, 9])
            .await
            .unwrap();
        let (p, mut io) = detect(b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(p, Protocol::SmuxV2);
        let mut got = [0u8; 3];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [2, 9, 9]);

        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET /")
            .await
            .unwrap();
        let err = detect(b, Duration::from_secs(5)).await.err().unwrap();
        assert_eq!(err, "not a smux or yamux client (first byte 0x47)");
    }
}
