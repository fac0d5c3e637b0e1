//! `--psk-file`: carrier connections authenticated and encrypted with a pre-shared key,
//! using the Noise protocol framework (the `snow` crate).
//!
//! The handshake is `Noise_NNpsk0_25519_AESGCM_BLAKE2s` followed by a key
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

/// The Noise protocol name. AES-GCM rather than ChaCha20-Poly1305: through the tunnel
/// (iperf3, yamux, x86 with AES-NI, ring's code for both) it carried 0.75 of what plain
/// carriers did, against 0.55-0.6 with ChaCha20-Poly1305 (separate runs, 5 each).
const PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
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

/// Messages one write sends and one read may bring at most: a system call carries up to
/// four messages (about 256 KiB), as the plain carrier's vectored writes and reads do.
/// With one message per call the encrypted tunnel made 2.5x the plain one's system calls
/// per byte.
const BATCH: usize = 4;
/// A message with its length prefix.
const WIRE_MSG: usize = 2 + MAX_MSG;

/// A connection whose bytes travel as Noise transport messages: an
/// `AsyncRead + AsyncWrite` that a [`braid::Session`] runs over. Memory is bounded:
/// [`BATCH`] messages being received and as many being sent, one decrypted message
/// and one message's plaintext gathered from a vectored write.
pub struct NoiseStream<T> {
    io: T,
    noise: snow::TransportState,
    /// Received bytes not yet decrypted (length prefixes and ciphertext):
    /// `rbuf[rpos..rlen]`.
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    /// Decrypted plaintext not yet read, of a message larger than the reader's room:
    /// `plain[ppos..]` (allocated when first needed).
    plain: Vec<u8>,
    ppos: usize,
    /// Framed messages being written: `wbuf[wpos..wlen]`.
    wbuf: Box<[u8]>,
    wpos: usize,
    wlen: usize,
    /// The plaintext of a message that spans several slices of a vectored write.
    gather: Vec<u8>,
    eof: bool,
}

fn auth_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "encrypted carrier: a message failed authentication",
    )
}

impl<T> NoiseStream<T> {
    fn new(io: T, noise: snow::TransportState) -> NoiseStream<T> {
        NoiseStream {
            io,
            noise,
            rbuf: vec![0u8; BATCH * WIRE_MSG].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            plain: Vec::new(),
            ppos: 0,
            wbuf: vec![0u8; BATCH * WIRE_MSG].into_boxed_slice(),
            wpos: 0,
            wlen: 0,
            gather: Vec::new(),
            eof: false,
        }
    }

    /// The length of the first message in `rbuf` if it is there whole.
    fn whole_message(&self) -> io::Result<Option<usize>> {
        let have = &self.rbuf[self.rpos..self.rlen];
        if have.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
        if len < TAG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "encrypted carrier: message shorter than its tag",
            ));
        }
        Ok((have.len() >= 2 + len).then_some(len))
    }

    /// Decrypts the whole messages in `rbuf` into `buf`: straight into it while they
    /// fit, the first that does not into `plain`, of which `buf` gets what fits.
    /// Returns whether `buf` got any bytes.
    fn decrypt_into(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let mut got = false;
        while buf.remaining() > 0 {
            let Some(len) = self.whole_message()? else {
                break;
            };
            let msg = &self.rbuf[self.rpos + 2..self.rpos + 2 + len];
            // ring decrypts in place, so the output needs room for the tag too.
            let n = if buf.remaining() >= len {
                let out = buf.initialize_unfilled_to(len);
                let n = self
                    .noise
                    .read_message(msg, out)
                    .map_err(|_| auth_failed())?;
                buf.advance(n);
                n
            } else {
                self.plain.resize(MAX_MSG, 0);
                let n = self
                    .noise
                    .read_message(msg, &mut self.plain)
                    .map_err(|_| auth_failed())?;
                self.plain.truncate(n);
                self.ppos = 0;
                n
            };
            self.rpos += 2 + len;
            got |= n > 0;
            // Plaintext left over (the reader's room is spent): it waits in `plain`. An
            // empty message, or one that fitted after all, leaves none: go on.
            if self.ppos < self.plain.len() {
                got |= self.take_plain(buf);
                break;
            }
        }
        Ok(got)
    }

    /// Moves what fits of the decrypted plaintext into `buf`; whether any did.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let n = (self.plain.len() - self.ppos).min(buf.remaining());
        buf.put_slice(&self.plain[self.ppos..self.ppos + n]);
        self.ppos += n;
        n > 0
    }

    /// Encrypts up to [`BATCH`] messages of the slices' bytes into `wbuf` (which must be
    /// empty) and returns how many bytes they took.
    fn encrypt(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut slices = bufs
            .iter()
            .map(|b| &b[..])
            .filter(|b| !b.is_empty())
            .peekable();
        let mut cur: &[u8] = slices.next().unwrap_or_default();
        let mut taken = 0;
        for _ in 0..BATCH {
            if cur.is_empty() {
                break;
            }
            // A message from one slice as it is; one that spans slices is gathered.
            let plain = if cur.len() >= MAX_PLAIN || slices.peek().is_none() {
                let n = cur.len().min(MAX_PLAIN);
                let (msg, rest) = cur.split_at(n);
                cur = rest;
                msg
            } else {
                self.gather.clear();
                while self.gather.len() < MAX_PLAIN && !cur.is_empty() {
                    let n = cur.len().min(MAX_PLAIN - self.gather.len());
                    self.gather.extend_from_slice(&cur[..n]);
                    cur = &cur[n..];
                    if cur.is_empty() {
                        cur = slices.next().unwrap_or_default();
                    }
                }
                &self.gather[..]
            };
            let at = self.wlen;
            let len = self
                .noise
                .write_message(plain, &mut self.wbuf[at + 2..at + WIRE_MSG])
                .map_err(io::Error::other)?;
            debug_assert_eq!(len, plain.len() + TAG);
            let prefix = u16::try_from(len).expect("at most MAX_MSG").to_be_bytes();
            self.wbuf[at..at + 2].copy_from_slice(&prefix);
            self.wlen += 2 + len;
            taken += plain.len();
            if cur.is_empty() {
                cur = slices.next().unwrap_or_default();
            }
        }
        Ok(taken)
    }
}

impl<T: AsyncWrite + Unpin> NoiseStream<T> {
    /// Writes out the pending messages.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wlen {
            let pending = &self.wbuf[self.wpos..self.wlen];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wpos = 0;
        self.wlen = 0;
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
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.ppos < this.plain.len() {
            this.take_plain(buf);
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.decrypt_into(buf)? {
                return Poll::Ready(Ok(()));
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
            // not per message), which leaves room for the rest of it and more.
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
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        let n = this.encrypt(bufs)?;
        // Start sending now; what is left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
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
    async fn vectored_writes_and_reads_of_any_size_keep_every_byte() {
        use tokio::io::AsyncWriteExt as _;
        let (a, b) = duplex(1 << 16);
        let (c, s) = tokio::join!(client(a, key(7)), server(b, key(7)));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        assert!(c.is_write_vectored());
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 13 + i / 509) as u8)
            .collect();
        let sent = data.clone();
        // Slices shaped like frames (8-byte headers, payloads of many sizes, some empty),
        // several per write, so messages span slices and writes span messages.
        let writer = tokio::spawn(async move {
            let sizes = [8, 32768, 8, 1, 0, 8, 70_000, 3, 65_519, 65_520, 200_000, 12];
            let (mut at, mut k) = (0, 0);
            while at < sent.len() {
                let mut parts = Vec::new();
                let mut end = at;
                for _ in 0..(1 + k % 5) {
                    let n = sizes[k % sizes.len()].min(sent.len() - end);
                    parts.push(&sent[end..end + n]);
                    end += n;
                    k += 1;
                }
                let slices: Vec<_> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
                let n = c.write_vectored(&slices).await.unwrap();
                assert!(n > 0 || end == at);
                at += n;
            }
            c.shutdown().await.unwrap();
        });
        // Reads of sizes below, at and above a message's.
        let mut got = Vec::new();
        let reads = [1, 7, 65_519, 65_535, 100, 300_000, 65_534];
        for i in 0.. {
            let mut buf = vec![0u8; reads[i % reads.len()]];
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert!(got == data, "{} bytes back of {}", got.len(), data.len());
    }

    /// Seeded random writes (several slices each, of every size class) and reads over
    /// pipes of random capacity: every byte arrives, in order.
    #[tokio::test]
    async fn random_slices_and_reads_keep_every_byte() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        use tokio::io::AsyncWriteExt as _;
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (a, b) = duplex(rng.gen_range(1..200_000));
            let (c, s) = tokio::join!(client(a, key(7)), server(b, key(7)));
            let (mut c, mut s) = (c.unwrap(), s.unwrap());
            let size = |rng: &mut StdRng| match rng.gen_range(0..4) {
                0 => rng.gen_range(0..16),
                1 => rng.gen_range(0..2_000),
                2 => rng.gen_range(60_000..70_000),
                _ => rng.gen_range(0..300_000),
            };
            let len = rng.gen_range(0..2_000_000);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let sent = data.clone();
            let mut wrng = StdRng::seed_from_u64(seed + 1000);
            let writer = tokio::spawn(async move {
                let mut at = 0;
                while at < sent.len() {
                    let mut end = at;
                    let mut parts = Vec::new();
                    for _ in 0..wrng.gen_range(1..8) {
                        let n = size(&mut wrng).min(sent.len() - end);
                        parts.push(&sent[end..end + n]);
                        end += n;
                    }
                    let slices: Vec<_> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
                    at += c.write_vectored(&slices).await.unwrap();
                }
                c.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            loop {
                let mut buf = vec![0u8; size(&mut rng).max(1)];
                match s.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            writer.await.unwrap();
            assert!(
                got == data,
                "seed {seed}: {} bytes of {}",
                got.len(),
                data.len()
            );
        }
    }

    #[tokio::test]
    async fn one_write_takes_a_batch_of_messages_and_one_read_returns_them() {
        let (a, b) = duplex(1 << 20);
        let (c, s) = tokio::join!(client(a, key(7)), server(b, key(7)));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let data = vec![0x5a; 1 << 20];
        assert_eq!(c.write(&data).await.unwrap(), BATCH * MAX_PLAIN);
        c.flush().await.unwrap();
        // The reader's room takes every whole message decrypted in place.
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(s.read(&mut buf).await.unwrap(), BATCH * MAX_PLAIN);
        assert!(buf[..BATCH * MAX_PLAIN].iter().all(|&b| b == 0x5a));
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
        let mut out = [0u8; 64];
        let err = s.decrypt_into(&mut ReadBuf::new(&mut out)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A length below the tag's.
        s.rbuf[..2].copy_from_slice(&3u16.to_be_bytes());
        s.rpos = 0;
        s.rlen = 5;
        assert_eq!(
            s.decrypt_into(&mut ReadBuf::new(&mut out))
                .unwrap_err()
                .kind(),
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
