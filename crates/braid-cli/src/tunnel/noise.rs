//! `--psk-file`: carrier connections authenticated and encrypted with a pre-shared key,
//! using the Noise protocol framework (the `snow` crate).
//!
//! The handshake is `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` followed by a key
//! confirmation from the client, so three messages in all:
//!
//! ```text
//! client -> server   psk, e          (proves the client holds the key, but replayable)
//! server -> client   e, ee           (proves the server holds the key, fresh: covers the client's e)
//! client -> server   confirmation    (first transport message: keyed by ee, so fresh)
//! ```
//!
//! The server starts a session only after the confirmation decrypts. A recorded
//! handshake replayed to the server passes the first message, but the server answers
//! with a new ephemeral key, so the session keys (from `ee`) differ from the recorded
//! ones: the recorded confirmation fails to decrypt and the connection is dropped
//! before any session exists. Completing it needs the client's ephemeral private key,
//! which never leaves the client and is discarded after the handshake (so recorded
//! traffic also stays secret if the key leaks later: forward secrecy).
//!
//! Afterwards every Noise transport message (at most 65535 bytes, 16 of them the
//! authentication tag) is sent with a 2-byte big-endian length prefix.

use super::Error;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The Noise protocol name.
const PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this use: a key used elsewhere with Noise does not fit here.
const PROLOGUE: &[u8] = b"braid tunnel psk v1";
/// Largest Noise message.
const MAX_MSG: usize = 65535;
/// The authentication tag every message carries.
const TAG: usize = 16;
/// Largest plaintext per message.
const MAX_PLAIN: usize = MAX_MSG - TAG;
/// The client's key confirmation, its first transport message.
const CONFIRM: &[u8] = b"braid psk confirm";

/// A 32-byte pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk([u8; 32]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// Reads a key file: 64 hex digits (32 random bytes, e.g. from
    /// `openssl rand -hex 32`), surrounding whitespace ignored.
    pub fn from_file(path: &Path) -> Result<Psk, Error> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("cannot read --psk-file {shown}: {e}")))?;
        Psk::from_hex(text.trim()).ok_or_else(|| {
            Error::Usage(format!(
                "invalid --psk-file {shown}: expected 64 hex digits (make one with `openssl rand -hex 32`)"
            ))
        })
    }

    /// The key from 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Psk> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(hex.chunks(2)) {
            let digits = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(Psk(key))
    }
}

fn builder(psk: &Psk) -> snow::Builder<'_> {
    let params = PARAMS.parse().expect("a valid Noise protocol name");
    snow::Builder::new(params).psk(0, &psk.0).prologue(PROLOGUE)
}

fn refused(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg.into())
}

/// Length of the handshake messages `e` (32-byte key, tag of the empty payload).
const E_LEN: usize = 32 + TAG;
/// Length of the key confirmation.
const CONFIRM_LEN: usize = CONFIRM.len() + TAG;

/// Reads one length-prefixed handshake message of `want` bytes (exactly, so that
/// nothing after it is consumed); any other length is refused before reading on.
/// `eof` is the error for a connection closed before it.
async fn read_msg<T: AsyncRead + Unpin>(io: &mut T, want: usize, eof: &str) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    let map_eof = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => refused(eof),
        _ => e,
    };
    io.read_exact(&mut len).await.map_err(map_eof)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len != want {
        return Err(refused(format!(
            "not a braid pre-shared key peer (a handshake message of {len} bytes, expected {want})"
        )));
    }
    let mut msg = vec![0u8; len];
    io.read_exact(&mut msg).await.map_err(map_eof)?;
    Ok(msg)
}

async fn write_msg<T: AsyncWrite + Unpin>(io: &mut T, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).expect("Noise messages fit in 16 bits");
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    io.write_all(&framed).await?;
    io.flush().await
}

/// The client's handshake over `io`. Errors are one line naming the cause.
pub async fn client<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    psk: &Psk,
) -> io::Result<NoiseStream<T>> {
    let mut hs = builder(psk).build_initiator().map_err(io::Error::other)?;
    let mut buf = vec![0u8; MAX_MSG];
    let n = hs.write_message(&[], &mut buf).map_err(io::Error::other)?;
    write_msg(&mut io, &buf[..n]).await?;
    let reply = read_msg(
        &mut io,
        E_LEN,
        "the server closed the connection during the pre-shared key handshake: \
         wrong --psk-file, or the server does not use --psk-file",
    )
    .await?;
    hs.read_message(&reply, &mut buf).map_err(|_| {
        refused("the server's pre-shared key handshake failed: wrong --psk-file, or the server does not use --psk-file")
    })?;
    let noise = hs.into_transport_mode().map_err(io::Error::other)?;
    let mut stream = NoiseStream::new(io, noise);
    let n = stream
        .noise
        .write_message(CONFIRM, &mut buf)
        .map_err(io::Error::other)?;
    write_msg(&mut stream.io, &buf[..n]).await?;
    Ok(stream)
}

/// The server's handshake over `io`. Errors are one line naming the cause.
pub async fn server<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    psk: &Psk,
) -> io::Result<NoiseStream<T>> {
    let mut hs = builder(psk).build_responder().map_err(io::Error::other)?;
    let mut buf = vec![0u8; MAX_MSG];
    let hello = read_msg(&mut io, E_LEN, "closed before the pre-shared key handshake").await?;
    hs.read_message(&hello, &mut buf).map_err(|_| {
        refused("pre-shared key handshake failed: wrong key, or not a braid --psk-file client")
    })?;
    let n = hs.write_message(&[], &mut buf).map_err(io::Error::other)?;
    write_msg(&mut io, &buf[..n]).await?;
    let mut noise = hs.into_transport_mode().map_err(io::Error::other)?;
    let confirm = read_msg(
        &mut io,
        CONFIRM_LEN,
        "closed during the pre-shared key handshake (a client with the wrong key?)",
    )
    .await?;
    match noise.read_message(&confirm, &mut buf) {
        Ok(n) if &buf[..n] == CONFIRM => Ok(NoiseStream::new(io, noise)),
        _ => Err(refused(
            "pre-shared key handshake failed: no key confirmation (a replayed handshake?)",
        )),
    }
}

/// A connection whose bytes travel as Noise transport messages: an
/// `AsyncRead + AsyncWrite` that a [`braid::Session`] runs over. Memory is bounded:
/// one message being received, one decrypted, one being sent.
pub struct NoiseStream<T> {
    io: T,
    noise: snow::TransportState,
    /// Received bytes not yet decrypted (length prefixes and ciphertext):
    /// `rbuf[rpos..rlen]`.
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    /// Decrypted plaintext not yet read: `plain[ppos..plen]`.
    plain: Box<[u8]>,
    ppos: usize,
    plen: usize,
    /// A framed message being written: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    eof: bool,
}

impl<T> NoiseStream<T> {
    fn new(io: T, noise: snow::TransportState) -> NoiseStream<T> {
        NoiseStream {
            io,
            noise,
            rbuf: vec![0u8; 2 + MAX_MSG].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            plain: vec![0u8; MAX_MSG].into_boxed_slice(),
            ppos: 0,
            plen: 0,
            wbuf: Vec::with_capacity(2 + MAX_MSG),
            wpos: 0,
            eof: false,
        }
    }

    /// Decrypts the first whole message in `rbuf`, if there is one.
    fn decrypt_one(&mut self) -> io::Result<bool> {
        let have = &self.rbuf[self.rpos..self.rlen];
        if have.len() < 2 {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
        if len < TAG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "encrypted carrier: message shorter than its tag",
            ));
        }
        if have.len() < 2 + len {
            return Ok(false);
        }
        let n = self
            .noise
            .read_message(&have[2..2 + len], &mut self.plain)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "encrypted carrier: a message failed authentication",
                )
            })?;
        self.rpos += 2 + len;
        self.ppos = 0;
        self.plen = n;
        Ok(true)
    }
}

impl<T: AsyncWrite + Unpin> NoiseStream<T> {
    /// Writes out the pending message.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for NoiseStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ppos < this.plen {
                let n = (this.plen - this.ppos).min(buf.remaining());
                buf.put_slice(&this.plain[this.ppos..this.ppos + n]);
                this.ppos += n;
                return Poll::Ready(Ok(()));
            }
            if this.decrypt_one()? {
                continue; // possibly an empty message: look again
            }
            if this.eof {
                return Poll::Ready(match this.rlen - this.rpos {
                    0 => Ok(()),
                    _ => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "encrypted carrier: connection closed inside a message",
                    )),
                });
            }
            // Less than one whole message is left: move it to the front (once per read,
            // not per message), which leaves room for the rest of it.
            if this.rpos > 0 {
                this.rbuf.copy_within(this.rpos..this.rlen, 0);
                this.rlen -= this.rpos;
                this.rpos = 0;
            }
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rlen..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            match rb.filled().len() {
                0 => this.eof = true,
                n => this.rlen += n,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoiseStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_PLAIN);
        this.wbuf.resize(2 + n + TAG, 0);
        let len = this
            .noise
            .write_message(&buf[..n], &mut this.wbuf[2..])
            .map_err(io::Error::other)?;
        debug_assert_eq!(len, n + TAG);
        let prefix = u16::try_from(len).expect("at most MAX_MSG").to_be_bytes();
        this.wbuf[..2].copy_from_slice(&prefix);
        // Start sending now; what is left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const fn key(b: u8) -> &'static Psk {
        match b {
            1 => &Psk([1; 32]),
            2 => &Psk([2; 32]),
            3 => &Psk([3; 32]),
            _ => &Psk([7; 32]),
        }
    }

    #[test]
    fn hex_keys() {
        let hex = "00ff".repeat(16);
        assert_eq!(Psk::from_hex(&hex).unwrap().0[..2], [0x00, 0xff]);
        assert!(Psk::from_hex(&hex[2..]).is_none());
        assert!(Psk::from_hex(&"zz".repeat(32)).is_none());
        assert!(Psk::from_hex(&"é".repeat(32)).is_none());
    }

    #[tokio::test]
    async fn carries_data_both_ways_in_messages_of_any_size() {
        let (a, b) = duplex(4096);
        let (c, s) = tokio::join!(client(a, key(7)), server(b, key(7)));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        // Larger than one message, written in odd pieces, read back whole.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for part in sent.chunks(70_001) {
                c.write_all(part).await.unwrap();
            }
            c.write_all(&[]).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} bytes back of {}", got.len(), data.len());
        s.write_all(b"back").await.unwrap();
        s.shutdown().await.unwrap();
        let mut c = writer.await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"back");
    }

    #[tokio::test]
    async fn many_small_messages_in_one_read() {
        let (a, b) = duplex(1 << 20);
        let (c, s) = tokio::join!(client(a, key(7)), server(b, key(7)));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        // 5000 one-byte messages, then end: they arrive in few reads of many messages.
        for i in 0..5000u32 {
            c.write_all(&[i as u8]).await.unwrap();
        }
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let want: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_wrong_key_fails_on_both_sides() {
        let (a, b) = duplex(4096);
        let (c, s) = tokio::join!(client(a, key(1)), async move {
            // The server drops the connection on failure, as the tunnel does.
            server(b, key(2)).await.map(|_| ())
        });
        let s = s.unwrap_err();
        assert_eq!(s.kind(), io::ErrorKind::PermissionDenied);
        assert!(s.to_string().contains("wrong key"), "{s}");
        let c = c.err().expect("the client fails too");
        assert!(c.to_string().contains("wrong --psk-file"), "{c}");
    }

    #[tokio::test]
    async fn tampered_or_cut_messages_are_errors() {
        let (a, b) = duplex(1 << 16);
        let (c, s) = tokio::join!(client(a, key(3)), server(b, key(3)));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut raw = [0u8; 2 + 5 + TAG];
        s.io.read_exact(&mut raw).await.unwrap();
        raw[4] ^= 1;
        s.rbuf[..raw.len()].copy_from_slice(&raw);
        s.rlen = raw.len();
        let err = s.decrypt_one().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A length below the tag's.
        s.rbuf[..2].copy_from_slice(&3u16.to_be_bytes());
        s.rlen = 5;
        assert_eq!(
            s.decrypt_one().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The connection ends inside a message.
        s.rbuf[..2].copy_from_slice(&100u16.to_be_bytes());
        s.rlen = 10;
        drop(c);
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
