//! kcptun's compression (on unless `--nocomp`): the snappy framing format in each
//! direction, flushed after every write (Go's `snappy.NewBufferedWriter` + `Flush`).
//!
//! The snap crate does the compressing, checksumming and parsing. Its frame reader is
//! blocking, so this adapter only hands it complete chunks: it reads each chunk's
//! 4-byte header itself to know when one is whole.

use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk body snappy's framing allows (64 KiB of data compressed, + checksum).
const MAX_CHUNK: usize = 4 + 65536 + 65536 / 6 + 32;
/// Raw bytes compressed per write.
const MAX_WRITE: usize = 64 * 1024;

/// Complete chunks waiting for the frame decoder.
#[derive(Default)]
struct Chunks(VecDeque<u8>);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// A stream whose bytes travel snappy-framed over `T` (kcptun's `CompStream`).
pub struct CompStream<T> {
    inner: T,
    decoder: snap::read::FrameDecoder<Chunks>,
    /// Received bytes not yet a whole chunk.
    partial: BytesMut,
    encoder: snap::write::FrameEncoder<Vec<u8>>,
    /// Encoded bytes not yet written to `inner`.
    pending: BytesMut,
    eof: bool,
    /// Whether the peer's stream identifier has been seen.
    started: bool,
}

impl<T> CompStream<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> CompStream<T> {
        CompStream {
            inner,
            decoder: snap::read::FrameDecoder::new(Chunks::default()),
            partial: BytesMut::new(),
            encoder: snap::write::FrameEncoder::new(Vec::new()),
            pending: BytesMut::new(),
            eof: false,
            started: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Moves whole chunks from `partial` to the decoder; an error for a peer that does
    /// not speak snappy framing.
    fn split_chunks(&mut self) -> io::Result<()> {
        while self.partial.len() >= 4 {
            if !self.started {
                if self.partial[0] != 0xff {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer does not compress (no snappy stream header): use --nocomp on \
                         both sides or on neither",
                    ));
                }
                self.started = true;
            }
            let len =
                u32::from_le_bytes([self.partial[1], self.partial[2], self.partial[3], 0]) as usize;
            if len > MAX_CHUNK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snappy chunk of {len} bytes: corrupt stream"),
                ));
            }
            if self.partial.len() < 4 + len {
                break;
            }
            let chunk = self.partial.split_to(4 + len);
            self.decoder.get_mut().0.extend(chunk.iter());
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CompStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // The decoder returns 0 once its whole chunks are used up.
            let n = this.decoder.read(buf.initialize_unfilled()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "bad snappy stream ({e}): are --nocomp settings the same on both sides?"
                    ),
                )
            })?;
            if n > 0 {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                if !this.partial.is_empty() {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                continue;
            }
            this.partial.extend_from_slice(rb.filled());
            this.split_chunks()?;
        }
    }
}

impl<T: AsyncWrite + Unpin> CompStream<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CompStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let n = data.len().min(MAX_WRITE);
        this.encoder.write_all(&data[..n])?;
        this.encoder.flush()?;
        let out = this.encoder.get_mut();
        this.pending.extend_from_slice(out);
        out.clear();
        // Start sending now; what does not go yet goes before the next write.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A byte stream braid can run over: what [`with_compression`] returns.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// `io` as kcptun's peer expects it: snappy-framed if `compress` (kcptun's default),
/// else plain but failing with a clear error if the peer's first byte shows it
/// compresses.
pub fn with_compression<T: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    io: T,
    compress: bool,
) -> Box<dyn Duplex> {
    if compress {
        Box::new(CompStream::new(io))
    } else {
        Box::new(Plain {
            inner: io,
            checked: false,
        })
    }
}

/// A stream checked for a compressing peer: snappy's stream identifier starts with 0xff,
/// which no smux or yamux frame does.
struct Plain<T> {
    inner: T,
    checked: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if !self.checked && buf.filled().len() > before {
            self.checked = true;
            if buf.filled()[before] == 0xff {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer compresses (snappy stream header): drop --nocomp here or add it \
                     on the peer",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trips_in_small_pieces() {
        let (a, b) = tokio::io::duplex(1000);
        let mut w = CompStream::new(a);
        let mut r = CompStream::new(b);
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(7001) {
                w.write_all(piece).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data);
    }

    #[tokio::test]
    async fn uncompressed_peer_is_a_clear_error() {
        let (mut a, b) = tokio::io::duplex(1000);
        let mut r = CompStream::new(b);
        a.write_all(&[1, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
        let e = r.read(&mut [0u8; 100]).await.unwrap_err();
        assert!(e.to_string().contains("--nocomp"), "{e}");
    }

    #[tokio::test]
    async fn plain_side_names_a_compressing_peer() {
        let (a, b) = tokio::io::duplex(1000);
        let mut w = CompStream::new(a);
        let mut r = with_compression(b, false);
        w.write_all(b"smux").await.unwrap();
        let e = r.read(&mut [0u8; 100]).await.unwrap_err();
        assert!(e.to_string().contains("--nocomp"), "{e}");
    }

    #[test]
    fn stream_starts_with_the_snappy_identifier() {
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(b"x").unwrap();
        enc.flush().unwrap();
        assert_eq!(&enc.get_ref()[..10], b"\xff\x06\x00\x00sNaPpY");
    }
}
