//! 1-byte data frames as fast as the server takes them, to streams whose target never
//! reads: yamux over many streams (each up to its initial 256 KiB window, which we
//! never see grow since we never read), or smux v1 on one stream.

use super::attacks::{drained, push, stall, Stop};
use super::{wire, Attacked, Check, Ctx, MIB};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Frames per write.
const BATCH: usize = 8192;
/// yamux's initial stream window.
const WINDOW: u64 = 256 * 1024;

pub(crate) async fn run(ctx: &Ctx, smux: bool) -> Result<Attacked, String> {
    let (streams, cap) = match (smux, ctx.full()) {
        (false, true) => (256u32, 256 * WINDOW),
        (false, false) => (8, 8 * WINDOW),
        (true, true) => (1, 1 << 30),
        (true, false) => (1, 32 * MIB),
    };
    let budget = if smux { ctx.budget.1 } else { ctx.budget.0 };
    let base = ctx.sample().map_or(0, |s| s.rss);
    let mut tcp = TcpStream::connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    let id = |i: u32| 2 * i + 1 + 2 * u32::from(smux);
    let mut open = Vec::new();
    for i in 0..streams {
        if smux {
            wire::smux(&mut open, 1, wire::S_SYN, id(i), &[]);
        } else {
            wire::yamux(&mut open, wire::Y_WINDOW, wire::F_SYN, id(i), 0);
        }
    }
    tcp.write_all(&open).await.map_err(|e| e.to_string())?;
    // Each stream gets its whole window in one burst, one stream after the other: the
    // forwarding of one stream then lags behind its data (spread evenly over all the
    // streams, braid forwards the bytes as they come and the kernel holds them).
    let frame = if smux { 9 } else { 13 };
    let per_stream = cap / u64::from(streams);
    let mut batch = Vec::with_capacity(BATCH * frame);
    let mut written = 0usize;
    let mut stop = None;
    let mut capped = false;
    while ((written / frame) as u64) < cap {
        if ctx.over_cap() {
            capped = true;
            break;
        }
        let sent = (written / frame) as u64;
        let stream = id((sent / per_stream) as u32);
        let left = (per_stream - sent % per_stream).min(BATCH as u64) as usize;
        batch.clear();
        for _ in 0..left {
            if smux {
                wire::smux(&mut batch, 1, wire::S_PSH, stream, b"x");
            } else {
                wire::yamux_data(&mut batch, stream, b"x");
            }
        }
        if let Err(s) = push(&mut tcp, &batch, stall(ctx), &mut written).await {
            stop = Some(s);
            break;
        }
    }
    let payload = (written / frame) as u64;
    // Let the server take in what is on its way before the end sample (when it reads
    // at all: a blocked socket stays blocked).
    if stop.is_none() {
        if let Ok(local) = tcp.local_addr() {
            drained(local, ctx.server).await;
        }
    }
    let mut a = Attacked {
        did: format!(
            "{:.1} MiB in 1-byte {} frames over {streams} stream{}, target never reads",
            payload as f64 / MIB as f64,
            if smux { "smux v1 PSH" } else { "yamux data" },
            if streams == 1 { "" } else { "s" },
        ),
        ..Default::default()
    };
    match (&stop, capped) {
        (_, true) => a.notes.push(format!(
            "stopped at the RSS guard ({} MiB)",
            ctx.opts.rss_cap / MIB
        )),
        (Some(Stop::Blocked), _) => a.notes.push(format!(
            "stopped: the socket took nothing for {:?}",
            stall(ctx)
        )),
        (Some(s), _) => a.notes.push(format!("stopped: {s}")),
        (None, _) => a.notes.push(format!(
            "sent all it could{}",
            if smux {
                ""
            } else {
                " (every stream's initial window)"
            }
        )),
    }
    if let Some(peaks) = &ctx.peaks {
        let peak = peaks.rss.load(std::sync::atomic::Ordering::Relaxed);
        let peak = ctx.sample().map_or(peak, |s| s.hwm.max(peak));
        let bound = 2 * budget + 16 * MIB;
        a.checks.push(Check::new(
            "flood peak RSS",
            format!(
                "<= 2 x receive budget ({} MiB) + 16 MiB = {} MiB",
                budget / MIB,
                bound / MIB
            ),
            format!("{:.0} MiB", peak as f64 / MIB as f64),
            peak <= bound,
        ));
        a.notes.push(format!(
            "{:.1} bytes of server RSS growth per payload byte",
            peak.saturating_sub(base) as f64 / payload.max(1) as f64
        ));
    }
    Ok(a)
}
