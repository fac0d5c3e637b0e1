//! A TCP connection that the soak can kill abruptly from outside the session: the
//! session's driver owns the transport, so the kill is a switch the transport checks
//! (and is woken for) on every call.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The message of the error a killed transport returns.
pub(crate) const KILLED: &str = "connection killed by the soak (session drop)";

/// Shared between a [`Killable`] and whoever may kill it.
#[derive(Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    /// The task that last used the transport (the session's driver).
    waker: Mutex<Option<Waker>>,
}

impl KillSwitch {
    /// Kills the connection: the transport's next call closes the socket with a zero
    /// linger (the peer gets RST) and fails with `ConnectionReset`. Wakes the driver
    /// so that the next call comes at once.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn register(&self, cx: &Context<'_>) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }
}

/// A TCP stream with a [`KillSwitch`].
pub(crate) struct Killable {
    io: Option<TcpStream>,
    switch: Arc<KillSwitch>,
}

impl Killable {
    pub(crate) fn new(io: TcpStream, switch: Arc<KillSwitch>) -> Killable {
        Killable {
            io: Some(io),
            switch,
        }
    }

    /// The live socket, or the error of a killed one. Registers the caller's waker
    /// before checking the switch, so a kill cannot slip in between unnoticed.
    fn live(&mut self, cx: &Context<'_>) -> io::Result<&mut TcpStream> {
        self.switch.register(cx);
        if self.switch.is_killed() {
            if let Some(tcp) = self.io.take() {
                // Closing with a zero linger sends RST instead of FIN.
                let _ = tcp.set_zero_linger();
                drop(tcp);
            }
        }
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionReset, KILLED))
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.live(cx) {
            Ok(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.live(cx) {
            Ok(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.live(cx) {
            Ok(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.live(cx) {
            Ok(tcp) => Pin::new(tcp).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.live(cx) {
            Ok(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
