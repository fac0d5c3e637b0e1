//! idle: one session over loopback TCP, both ends in one process; the client opens M
//! streams while the server accepts them, and nobody writes. RSS per stream is the
//! process's resident set after opening minus before, divided by M: both ends' state
//! (and the 8-byte handle each end's application keeps per stream).
//!
//! Each run is a fresh child process (`braid bench --idle-child PROTO`): in a process that
//! has already run other workloads the allocator hands out memory it kept from them, and
//! the resident set would not grow with the streams.

use super::{median, rss_kib, session_ended, session_pair, Proto};
use serde::{Deserialize, Serialize};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One measured run.
#[derive(Debug, Clone)]
pub(super) struct Run {
    proto: Proto,
    streams: usize,
    rss: Rss,
}

impl Run {
    fn bytes_per_stream(&self) -> f64 {
        self.rss.after_kib.saturating_sub(self.rss.before_kib) as f64 * 1024.0 / self.streams as f64
    }
}

/// What a child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rss {
    before_kib: u64,
    after_kib: u64,
}

/// One row of the idle table (medians over the repeats).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) proto: Proto,
    pub(super) streams: usize,
    pub(super) rss_bytes_per_stream: f64,
    pub(super) rss_growth_mib: f64,
    pub(super) runs: usize,
}

/// Medians per protocol.
pub(super) fn summarize(runs: &[Run], targets: &[Proto]) -> Vec<Row> {
    targets
        .iter()
        .filter_map(|&proto| {
            let these: Vec<&Run> = runs.iter().filter(|r| r.proto == proto).collect();
            let first = these.first()?;
            Some(Row {
                proto,
                streams: first.streams,
                rss_bytes_per_stream: median(these.iter().map(|r| r.bytes_per_stream()).collect()),
                rss_growth_mib: median(
                    these
                        .iter()
                        .map(|r| r.rss.after_kib.saturating_sub(r.rss.before_kib) as f64 / 1024.0)
                        .collect(),
                ),
                runs: these.len(),
            })
        })
        .collect()
}

/// Measures one run in a child process running [`child`].
pub(super) fn measure_in_child(proto: Proto, streams: usize) -> io::Result<Run> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--idle-child", proto.name(), "--idle-streams"])
        .arg(streams.to_string())
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!(
            "idle run ({}) failed: {}",
            proto.name(),
            err.trim()
        )));
    }
    let rss = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
    Ok(Run {
        proto,
        streams,
        rss,
    })
}

/// The child's side: measures one run and prints its RSS figures as JSON.
pub(super) fn child(proto: Proto, streams: usize) -> io::Result<()> {
    let protocol = proto
        .protocol()
        .ok_or_else(|| super::invalid("--idle-child needs a braid protocol"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rss = rt.block_on(measure(protocol, streams))?;
    println!("{}", serde_json::to_string(&rss).expect("serializable"));
    Ok(())
}

async fn measure(protocol: braid::Protocol, streams: usize) -> io::Result<Rss> {
    let (client, server) = session_pair(protocol).await?;
    // Warm-up: a byte each way on one stream, kept open, so that the buffers the drivers
    // allocate on first use are in the baseline.
    let mut first = client.open_stream().await?;
    first.write_all(&[1]).await?;
    let mut peer = server.accept_stream().await.ok_or_else(session_ended)?;
    let mut byte = [0u8; 1];
    peer.read_exact(&mut byte).await?;
    peer.write_all(&byte).await?;
    first.read_exact(&mut byte).await?;

    let before_kib = rss_kib();
    // Accept as they come: the accept backlogs are bounded.
    let acceptor = tokio::spawn(async move {
        let mut accepted = Vec::with_capacity(streams);
        while accepted.len() < streams {
            accepted.push(server.accept_stream().await.ok_or_else(session_ended)?);
        }
        io::Result::Ok((server, accepted))
    });
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        // yamux: waits while 256 opens are unacknowledged.
        opened.push(client.open_stream().await?);
    }
    let (server, accepted) = super::join(acceptor).await?;
    let after_kib = rss_kib();
    if client.num_streams() != streams + 1 || server.num_streams() != streams + 1 {
        return Err(io::Error::other(format!(
            "expected {} streams on each side, found {} and {}",
            streams + 1,
            client.num_streams(),
            server.num_streams()
        )));
    }
    drop((opened, accepted, first, peer));
    client.close().await;
    server.closed().await;
    Ok(Rss {
        before_kib,
        after_kib,
    })
}
