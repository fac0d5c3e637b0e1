//! The other Rust multiplexers, adapted to the benchmark engine's traits
//! (`braid_cli::bench::libs`) so that the engine's one implementation of every workload
//! drives them as it drives raw TCP and braid.
//!
//! Every library runs with its default configuration. Each connection has `TCP_NODELAY`
//! set (as Go does by default and as `braid::Session::from_tcp` does); everything else
//! is the library's own default.

use braid_cli::bench::libs::{tcp_pair, Acceptor, BenchStream, Opener, TokioIo};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, what.to_string())
}

// ---------------------------------------------------------------------------------------
// yamux 0.14 (libp2p): a futures-io `Connection` that a task must poll.

type YamuxConn = yamux::Connection<tokio_util::compat::Compat<TcpStream>>;
type YamuxStream = TokioIo<tokio_util::compat::Compat<yamux::Stream>>;
type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// Streams one yamux 0.14 connection may have open (`Config::default()`, a constant of the
/// crate); opening one more fails and tears the connection down.
pub const YAMUX_MAX_STREAMS: usize = 512;

/// How many streams the yamux 0.14 client opens at once. A closed and dropped stream
/// counts until the connection task has processed its drop, which it defers while the
/// socket is busy; so a sliding window of N open streams can still hit the limit. Waves
/// of half the limit cannot: a wave plus the unprocessed rest of the previous one stay
/// below it.
pub const YAMUX_WAVE: usize = YAMUX_MAX_STREAMS / 2;

/// yamux 0.14 opener: asks the connection's driver task for new streams.
pub struct YamuxOpener(mpsc::Sender<OpenReply>);

/// yamux 0.14 acceptor: receives the inbound streams the driver task hands over.
pub struct YamuxAcceptor(mpsc::UnboundedReceiver<yamux::Stream>);

impl Opener for YamuxOpener {
    type Stream = YamuxStream;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        use tokio_util::compat::FuturesAsyncReadCompatExt;
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| closed("yamux connection ended"))?;
        let stream = rx
            .await
            .map_err(|_| closed("yamux connection ended"))?
            .map_err(|e| io::Error::other(format!("yamux open: {e}")))?;
        Ok(TokioIo(stream.compat()))
    }

    fn wave(&self) -> Option<usize> {
        Some(YAMUX_WAVE)
    }

    fn max_streams(&self) -> Option<usize> {
        Some(YAMUX_MAX_STREAMS)
    }
}

impl Acceptor for YamuxAcceptor {
    type Stream = YamuxStream;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        use tokio_util::compat::FuturesAsyncReadCompatExt;
        Ok(self.0.recv().await.map(|s| TokioIo(s.compat())))
    }
}

/// Spawns the task that polls a yamux 0.14 connection: it serves open requests with
/// `poll_new_outbound` and hands inbound streams from `poll_next_inbound` over.
fn spawn_yamux(mut conn: YamuxConn) -> (YamuxOpener, YamuxAcceptor) {
    let (open_tx, mut open_rx) = mpsc::channel::<OpenReply>(1);
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut waiting: Option<OpenReply> = None;
        let mut opens_closed = false;
        std::future::poll_fn(|cx| loop {
            if waiting.is_none() && !opens_closed {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    Poll::Ready(None) => opens_closed = true,
                    Poll::Pending => {}
                }
            }
            if let Some(reply) = waiting.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let failed = result.is_err();
                        let _ = reply.send(result);
                        if failed {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // Nobody accepts on the client: its inbound streams are dropped.
                    let _ = inbound_tx.send(stream);
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
    });
    (YamuxOpener(open_tx), YamuxAcceptor(inbound_rx))
}

/// A yamux 0.14 connection pair with `yamux::Config::default()`.
pub async fn yamux() -> io::Result<(YamuxOpener, YamuxAcceptor)> {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let (client, server) = tcp_pair().await?;
    let (opener, _) = spawn_yamux(yamux::Connection::new(
        client.compat(),
        yamux::Config::default(),
        yamux::Mode::Client,
    ));
    let (_, acceptor) = spawn_yamux(yamux::Connection::new(
        server.compat(),
        yamux::Config::default(),
        yamux::Mode::Server,
    ));
    Ok((opener, acceptor))
}

// ---------------------------------------------------------------------------------------
// tokio-yamux 0.3 (tentacle): the session is a `futures::Stream` of inbound streams that a
// task must poll; `Control` opens streams.

/// tokio-yamux opener: the session's `Control`.
pub struct TokioYamuxOpener(tokio_yamux::Control);

/// tokio-yamux acceptor: inbound streams from the task that polls the session.
pub struct TokioYamuxAcceptor(mpsc::UnboundedReceiver<tokio_yamux::StreamHandle>);

impl Opener for TokioYamuxOpener {
    type Stream = TokioIo<WriteStallFix>;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        let stream = self
            .0
            .open_stream()
            .await
            .map_err(|e| io::Error::other(format!("tokio-yamux open: {e:?}")))?;
        Ok(TokioIo(WriteStallFix::new(stream)))
    }

    fn max_streams(&self) -> Option<usize> {
        // `Config::default().max_stream_count`: beyond it the server refuses streams
        // (and the benchmark's opener would wait for ever).
        Some(tokio_yamux::config::DEFAULT_MAX_STREAM_COUNT)
    }
}

impl Acceptor for TokioYamuxAcceptor {
    type Stream = TokioIo<WriteStallFix>;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        Ok(self.0.recv().await.map(|s| TokioIo(WriteStallFix::new(s))))
    }
}

fn spawn_tokio_yamux(
    mut session: tokio_yamux::Session<TcpStream>,
) -> (TokioYamuxOpener, TokioYamuxAcceptor) {
    use futures::StreamExt;
    let control = session.control();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(stream)) = session.next().await {
            let _ = tx.send(stream);
        }
    });
    (TokioYamuxOpener(control), TokioYamuxAcceptor(rx))
}

/// A tokio-yamux session pair with `tokio_yamux::Config::default()`.
pub async fn tokio_yamux() -> io::Result<(TokioYamuxOpener, TokioYamuxAcceptor)> {
    let (client, server) = tcp_pair().await?;
    let config = tokio_yamux::Config::default();
    let (opener, _) = spawn_tokio_yamux(tokio_yamux::Session::new_client(client, config));
    let (_, acceptor) = spawn_tokio_yamux(tokio_yamux::Session::new_server(server, config));
    Ok((opener, acceptor))
}

/// Workaround for tokio-yamux 0.3: a stream that only writes stalls for good once its send
/// window is used up. The peer's window updates reach the stream through a channel that
/// only `poll_read` polls with the task's waker; `poll_write` looks at it without
/// registering one. So while a write waits for window, this wrapper polls the read side
/// too, which registers the waker and applies the updates; data read meanwhile is kept
/// for the next read.
pub struct WriteStallFix {
    inner: tokio_yamux::StreamHandle,
    /// Data read while a write waited, not yet handed to a reader.
    stash: Vec<u8>,
    /// Offset of the first byte of `stash` not yet handed out.
    stash_pos: usize,
    /// The read side reached the end while a write waited.
    eof: bool,
}

impl WriteStallFix {
    fn new(inner: tokio_yamux::StreamHandle) -> WriteStallFix {
        WriteStallFix {
            inner,
            stash: Vec::new(),
            stash_pos: 0,
            eof: false,
        }
    }
}

impl AsyncRead for WriteStallFix {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.stash_pos < this.stash.len() {
            let n = buf.remaining().min(this.stash.len() - this.stash_pos);
            buf.put_slice(&this.stash[this.stash_pos..this.stash_pos + n]);
            this.stash_pos += n;
            if this.stash_pos == this.stash.len() {
                this.stash.clear();
                this.stash_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.eof {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallFix {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_write(cx, buf) {
                return Poll::Ready(r);
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "tokio-yamux: the peer closed while a write waited for window",
                )));
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.stash.extend_from_slice(rb.filled());
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// async_smux 0.4: smux v1 without flow control; a worker future drives the connection.

/// async_smux opener: the session's connector.
pub struct AsyncSmuxOpener(async_smux::MuxConnector<TcpStream>);

/// async_smux acceptor.
pub struct AsyncSmuxAcceptor(async_smux::MuxAcceptor<TcpStream>);

impl Opener for AsyncSmuxOpener {
    type Stream = TokioIo<async_smux::MuxStream<TcpStream>>;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        self.0
            .connect()
            .map(TokioIo)
            .map_err(|e| io::Error::other(format!("async_smux open: {e}")))
    }
}

impl Acceptor for AsyncSmuxAcceptor {
    type Stream = TokioIo<async_smux::MuxStream<TcpStream>>;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        Ok(self.0.accept().await.map(TokioIo))
    }
}

/// An async_smux session pair with the builder's defaults (`MuxBuilder::client()` /
/// `server()`).
pub async fn async_smux() -> io::Result<(AsyncSmuxOpener, AsyncSmuxAcceptor)> {
    let (client, server) = tcp_pair().await?;
    let (connector, _client_acceptor, client_worker) = async_smux::MuxBuilder::client()
        .with_connection(client)
        .build();
    let (_server_connector, acceptor, server_worker) = async_smux::MuxBuilder::server()
        .with_connection(server)
        .build();
    tokio::spawn(client_worker);
    tokio::spawn(server_worker);
    // The unused halves may go: a dropped acceptor refuses inbound streams, which the
    // client never gets, and a dropped connector only stops local opens.
    Ok((AsyncSmuxOpener(connector), AsyncSmuxAcceptor(acceptor)))
}

// ---------------------------------------------------------------------------------------
// tokio_smux 0.2: smux v1, message API (`send_message` / `recv_message`), no half-close.

/// tokio_smux opener and acceptor: the session (its open and accept take `&mut self`).
pub struct TokioSmux(tokio_smux::Session);

/// A tokio_smux stream: messages of at most 65535 bytes; reads hand out what is left of
/// the last message first.
pub struct TokioSmuxStream {
    inner: tokio_smux::Stream,
    pending: Vec<u8>,
    pos: usize,
}

/// The largest message tokio_smux sends (one smux frame).
const TOKIO_SMUX_MAX_MESSAGE: usize = u16::MAX as usize;

fn smux_err(e: tokio_smux::TokioSmuxError) -> io::Error {
    io::Error::other(format!("tokio_smux: {e:?}"))
}

impl BenchStream for TokioSmuxStream {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        for piece in buf.chunks(TOKIO_SMUX_MAX_MESSAGE) {
            // The API takes an owned Vec: one copy per message.
            self.inner
                .send_message(piece.to_vec())
                .await
                .map_err(smux_err)?;
        }
        Ok(())
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.pending.len() {
            match self.inner.recv_message().await.map_err(smux_err)? {
                Some(message) => {
                    self.pending = message;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    // Its streams close only whole (on drop), and a stream that got the peer's FIN
    // refuses writes: nothing to do here.
    async fn close_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Opener for TokioSmux {
    type Stream = TokioSmuxStream;

    async fn open(&mut self) -> io::Result<Self::Stream> {
        let inner = self.0.open_stream().await.map_err(smux_err)?;
        Ok(TokioSmuxStream {
            inner,
            pending: Vec::new(),
            pos: 0,
        })
    }
}

impl Acceptor for TokioSmux {
    type Stream = TokioSmuxStream;

    async fn accept(&mut self) -> io::Result<Option<Self::Stream>> {
        match self.0.accept_stream().await {
            Ok(inner) => Ok(Some(TokioSmuxStream {
                inner,
                pending: Vec::new(),
                pos: 0,
            })),
            Err(tokio_smux::TokioSmuxError::SessionClosed) => Ok(None),
            Err(e) => Err(smux_err(e)),
        }
    }
}

/// A tokio_smux session pair with `SmuxConfig::default()`.
pub async fn tokio_smux() -> io::Result<(TokioSmux, TokioSmux)> {
    let (client, server) = tcp_pair().await?;
    let client =
        tokio_smux::Session::client(client, tokio_smux::SmuxConfig::default()).map_err(smux_err)?;
    let server =
        tokio_smux::Session::server(server, tokio_smux::SmuxConfig::default()).map_err(smux_err)?;
    Ok((TokioSmux(client), TokioSmux(server)))
}
