//! The normal client: a braid yamux session through the tunnel, one stream per probe,
//! echoing a few KiB through the target.

use super::target::PROBE_MAGIC;
use braid::{Config, Protocol, Session, Side};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How the normal client reaches the server.
#[derive(Clone)]
pub struct Client {
    /// The server.
    pub addr: SocketAddr,
    /// TLS, when the server speaks it.
    pub tls: Option<TlsConnector>,
    /// How long one probe may take before it counts as not served.
    pub timeout: Duration,
}

impl Client {
    /// Connects a new session.
    pub async fn connect(&self) -> Result<Session, String> {
        let config = Config::new(Protocol::Yamux);
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match &self.tls {
            None => Session::from_tcp(tcp, config, Side::Client).map_err(|e| e.to_string()),
            Some(c) => {
                let name = rustls_pki_types::ServerName::try_from("localhost").expect("valid");
                let tls = c
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Session::client(tls, config).map_err(|e| e.to_string())
            }
        }
    }

    /// One probe on a fresh session (closed afterwards); the round trip time.
    pub async fn probe_fresh(&self) -> Result<Duration, String> {
        let start = Instant::now();
        let run = async {
            let session = self.connect().await?;
            let r = echo_once(&session).await;
            session.close().await;
            r
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| format!("no echo within {:?}", self.timeout))??;
        Ok(start.elapsed())
    }
}

/// Opens a stream, sends the magic and 4 KiB, half-closes and checks the echo.
pub async fn echo_once(session: &Session) -> Result<(), String> {
    let mut stream = session
        .open_stream()
        .await
        .map_err(|e| format!("open: {e}"))?;
    let mut sent = PROBE_MAGIC.to_vec();
    sent.extend((0..4096u32).map(|i| (i * 7 % 251) as u8));
    stream
        .write_all(&sent)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut got = Vec::with_capacity(sent.len());
    stream
        .read_to_end(&mut got)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if got != sent {
        return Err(format!(
            "echo differs: {} of {} bytes back",
            got.len(),
            sent.len()
        ));
    }
    Ok(())
}

/// Probes every `every` on one session while it runs; results in `tally`.
#[derive(Debug, Default)]
pub struct Tally {
    /// Probes that echoed in time.
    pub ok: u32,
    /// Probes that did not.
    pub failed: u32,
    /// Slowest successful probe.
    pub slowest: Duration,
    /// The first failure.
    pub first_error: Option<String>,
}

/// Starts probing in the background (one session, a stream per probe); stop with
/// [`Prober::finish`].
pub struct Prober {
    tally: Arc<std::sync::Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    /// Starts probing `client` every `every`.
    pub fn start(client: Client, every: Duration) -> Prober {
        let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
        let t = tally.clone();
        let task = tokio::spawn(async move {
            let mut session: Option<Session> = None;
            loop {
                let start = Instant::now();
                let run = async {
                    if session.as_ref().is_none_or(|s| s.is_closed()) {
                        session = Some(client.connect().await?);
                    }
                    echo_once(session.as_ref().expect("set")).await
                };
                let r = tokio::time::timeout(client.timeout, run)
                    .await
                    .unwrap_or_else(|_| Err(format!("no echo within {:?}", client.timeout)));
                {
                    let mut t = t.lock().unwrap();
                    match r {
                        Ok(()) => {
                            t.ok += 1;
                            t.slowest = t.slowest.max(start.elapsed());
                        }
                        Err(e) => {
                            t.failed += 1;
                            t.first_error.get_or_insert(e);
                            session = None;
                        }
                    }
                }
                tokio::time::sleep(every.saturating_sub(start.elapsed())).await;
            }
        });
        Prober { tally, task }
    }

    /// Stops probing and returns the tally (a probe cut short by the stop is not counted).
    pub fn finish(self) -> Tally {
        self.task.abort();
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}
