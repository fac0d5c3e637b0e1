//! Slow-read shutdown: open streams whose target sends a lot, never read, so that the
//! server's writes block; then end the session with a protocol error (an unknown yamux
//! frame type) and time how long the server takes to let go of the connection. The
//! connection is watched in /proc/net/tcp (whether the server's socket still has an
//! owner), so the attacker still reads nothing.

use super::attacks::{settle, sourcing};
use super::{procfs, wire, Attacked, Check, Ctx, CLOSE_TIMEOUT};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Our receive buffer: small, so that the server's data backs up at once.
const RCVBUF: u32 = 4096;

pub(crate) async fn run(ctx: &Ctx, tls: bool) -> Result<Attacked, String> {
    let streams: u32 = 32;
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(RCVBUF)
        .map_err(|e| e.to_string())?;
    let tcp = socket
        .connect(ctx.server)
        .await
        .map_err(|e| e.to_string())?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let mut io: Box<dyn AsyncWrite + Unpin + Send> = if tls {
        let connector = ctx.tls.clone().ok_or("no TLS connector")?;
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("valid");
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut buf = Vec::new();
    for i in 0..streams {
        wire::yamux(&mut buf, wire::Y_WINDOW, wire::F_SYN, 2 * i + 1, 0);
    }
    let sourcing0 = ctx
        .target
        .sourcing
        .load(std::sync::atomic::Ordering::Relaxed);
    io.write_all(&buf).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    sourcing(ctx, sourcing0 + u64::from(streams)).await;
    // The server wants to send: wait until what waits for us stops growing.
    let queued = settle(
        || procfs::tcp_rx_queue(local, ctx.server).unwrap_or(0),
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    // The end reason: a frame of an unknown type, a protocol error.
    let mut bad = Vec::new();
    wire::yamux(&mut bad, 9, 0, 0, 0);
    let sent = tokio::time::timeout(Duration::from_secs(5), async {
        io.write_all(&bad).await?;
        io.flush().await
    })
    .await;
    let t0 = Instant::now();
    let limit = if ctx.full() {
        Duration::from_secs(30)
    } else {
        CLOSE_TIMEOUT + Duration::from_secs(2)
    };
    let mut released = None;
    while t0.elapsed() < limit {
        if procfs::tcp_held(ctx.server, local) != Some(true) {
            released = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut a = Attacked {
        did: format!(
            "{} {streams} yamux streams (target sends), never read, then a protocol error",
            if tls { "TLS:" } else { "TCP:" }
        ),
        ..Default::default()
    };
    a.notes.push(format!(
        "{queued} bytes waited unread in our socket when the session was ended"
    ));
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => a.notes.push(format!("sending the bad frame failed: {e}")),
        Err(_) => a.notes.push("sending the bad frame blocked for 5 s".into()),
    }
    let bound = CLOSE_TIMEOUT + Duration::from_secs(1);
    a.checks.push(Check::new(
        "released after end",
        format!(
            "the server closes the connection within close_timeout ({} s) + 1 s",
            CLOSE_TIMEOUT.as_secs()
        ),
        match released {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => format!("still held after {} s", limit.as_secs()),
        },
        released.is_some_and(|d| d <= bound),
    ));
    drop(io);
    Ok(a)
}
