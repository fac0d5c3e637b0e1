//! `--metrics ADDR`: the counters of `braid server` or `braid client` in the Prometheus
//! text format, served over HTTP at `/metrics`. Both use the same names; "up" is always
//! the direction from the application towards the target.

use braid::Session;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A `protocol` label: smux1, smux2 or yamux.
type ByProto = [(&'static str, &'static str); 1];

fn proto(name: &'static str) -> ByProto {
    [("protocol", name)]
}

/// The tunnel's metrics. All names start with `braid_tunnel_`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Family<ByProto, Gauge>,
    sessions_total: Family<ByProto, Counter>,
    streams: Family<ByProto, Gauge>,
    streams_total: Family<ByProto, Counter>,
    refused_streams: Family<ByProto, Counter>,
    target_failures: Family<ByProto, Counter>,
    handshake_failures: Counter,
    refused_sessions: Counter,
    bytes: Arc<Bytes>,
}

impl Default for Metrics {
    /// The server's metrics.
    fn default() -> Metrics {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The client's metrics: sessions are its carriers, streams the connections it
    /// carries, handshake failures its failed connection attempts.
    pub fn for_client() -> Metrics {
        Metrics::new(true)
    }

    fn new(client: bool) -> Metrics {
        let mut registry = Registry::with_prefix("braid_tunnel");
        let m = Metrics {
            sessions: Family::default(),
            sessions_total: Family::default(),
            streams: Family::default(),
            streams_total: Family::default(),
            refused_streams: Family::default(),
            target_failures: Family::default(),
            handshake_failures: Counter::default(),
            refused_sessions: Counter::default(),
            bytes: Arc::new(Bytes {
                client,
                ..Bytes::default()
            }),
            registry: Registry::default(),
        };
        registry.register("sessions", "Carrier sessions open now", m.sessions.clone());
        registry.register(
            "sessions_started",
            "Carrier sessions started (handshake and protocol detection done)",
            m.sessions_total.clone(),
        );
        registry.register("streams", "Streams forwarded now", m.streams.clone());
        registry.register(
            "streams_started",
            "Streams forwarded (server: accepted; client: opened for a local connection)",
            m.streams_total.clone(),
        );
        registry.register(
            "refused_streams",
            "Streams reset on arrival: over --max-streams, or shutting down",
            m.refused_streams.clone(),
        );
        registry.register(
            "target_connect_failures",
            "Streams reset because the target could not be reached",
            m.target_failures.clone(),
        );
        registry.register(
            "handshake_failures",
            "Connections closed before a session: failed or timed-out authentication, or protocol detection (client: failed connection attempts)",
            m.handshake_failures.clone(),
        );
        registry.register(
            "refused_sessions",
            "Connections closed at once: over --max-sessions",
            m.refused_sessions.clone(),
        );
        registry.register_collector(Box::new(BytesCollector(m.bytes.clone())));
        Metrics { registry, ..m }
    }

    /// These metrics and `extra` ones (the KCP transport's), if given.
    pub fn with(mut self, extra: Option<Box<dyn Collector>>) -> Metrics {
        if let Some(c) = extra {
            self.registry.register_collector(c);
        }
        self
    }

    /// Counts a session of `protocol` while the guard lives, and its bytes.
    pub fn session(self: &Arc<Self>, protocol: &'static str, session: &Session) -> SessionGuard {
        self.sessions.get_or_create(&proto(protocol)).inc();
        self.sessions_total.get_or_create(&proto(protocol)).inc();
        let id = self.bytes.next.fetch_add(1, Relaxed);
        let mut live = self.bytes.lock();
        live.sessions.insert(id, (protocol, session.clone()));
        SessionGuard {
            metrics: self.clone(),
            protocol,
            id,
        }
    }

    /// Counts a forwarded stream while the guard lives.
    pub fn stream(self: &Arc<Self>, protocol: &'static str) -> StreamGuard {
        self.streams.get_or_create(&proto(protocol)).inc();
        self.streams_total.get_or_create(&proto(protocol)).inc();
        StreamGuard {
            metrics: self.clone(),
            protocol,
        }
    }

    /// A stream reset on arrival.
    pub fn refused_stream(&self, protocol: &'static str) {
        self.refused_streams.get_or_create(&proto(protocol)).inc();
    }

    /// A stream whose target could not be reached.
    pub fn target_failure(&self, protocol: &'static str) {
        self.target_failures.get_or_create(&proto(protocol)).inc();
    }

    /// A connection that got no session.
    pub fn handshake_failure(&self) {
        self.handshake_failures.inc();
    }

    /// A connection refused over `--max-sessions`.
    pub fn refused_session(&self) {
        self.refused_sessions.inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Keeps a session counted; on drop, moves its byte counts into the totals.
pub struct SessionGuard {
    metrics: Arc<Metrics>,
    protocol: &'static str,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.metrics
            .sessions
            .get_or_create(&proto(self.protocol))
            .dec();
        let mut live = self.metrics.bytes.lock();
        if let Some((protocol, session)) = live.sessions.remove(&self.id) {
            let (up, down) = self.metrics.bytes.up_down(&session);
            let total = live.ended.entry(protocol).or_default();
            total.0 += up;
            total.1 += down;
        }
    }
}

/// Keeps a stream counted.
pub struct StreamGuard {
    metrics: Arc<Metrics>,
    protocol: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics
            .streams
            .get_or_create(&proto(self.protocol))
            .dec();
    }
}

/// Stream payload bytes per protocol: the totals of ended sessions plus, at each
/// scrape, what the live sessions report (so nothing on the data path counts them).
#[derive(Debug, Default)]
struct Bytes {
    next: AtomicU64,
    live: Mutex<Live>,
    /// Counted by the client, whose sessions send "up".
    client: bool,
}

#[derive(Default)]
struct Live {
    sessions: HashMap<u64, (&'static str, Session)>,
    /// Per protocol: bytes up (towards the target) and down.
    ended: HashMap<&'static str, (u64, u64)>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("sessions", &self.sessions.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Bytes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session's payload bytes (up, down).
    fn up_down(&self, session: &Session) -> (u64, u64) {
        let stats = session.stats();
        if self.client {
            (stats.bytes_sent, stats.bytes_received)
        } else {
            (stats.bytes_received, stats.bytes_sent)
        }
    }
}

#[derive(Debug)]
struct BytesCollector(Arc<Bytes>);

impl Collector for BytesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut totals = {
            let live = self.0.lock();
            let mut totals = live.ended.clone();
            for (protocol, session) in live.sessions.values() {
                let (up, down) = self.0.up_down(session);
                let total = totals.entry(protocol).or_default();
                total.0 += up;
                total.1 += down;
            }
            totals.into_iter().collect::<Vec<_>>()
        };
        totals.sort();
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "bytes",
            "Stream payload bytes carried: up (from clients towards the target) and down",
            None,
            counter.metric_type(),
        )?;
        for (protocol, (up, down)) in totals {
            for (direction, n) in [("up", up), ("down", down)] {
                let labels = [("protocol", protocol), ("direction", direction)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `stop`. One small request per
/// connection; anything else gets 404 (or 400), slow clients are cut after 5 s.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // Out of file descriptors and the like: the tunnel logs those.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(tcp, &metrics)).await;
        });
    }
}

async fn answer(mut tcp: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    // The request head, up to a bound.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || head.len() + n > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", metrics.render()),
        (Some(_), Some(_)) => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("400 Bad Request", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}
