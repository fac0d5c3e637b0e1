//! kcp-go's datagram layer: `nonce[16] | crc32[4] | [FEC header] | KCP segments`, the
//! whole datagram encrypted. Sending: KCP packet -> FEC -> nonce + CRC -> encrypt;
//! receiving is the reverse.

use crate::crypt::Crypt;
use crate::fec::{self, FEC_HEADER, TYPE_DATA, TYPE_PARITY};
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Nonce and CRC32: the header every kcptun datagram has, `--crypt none` too.
pub const CRYPT_HEADER: usize = 20;
const NONCE: usize = 16;
/// Largest datagram kcp-go reads (its `mtuLimit`).
pub const MAX_DATAGRAM: usize = 1500;

/// Why a datagram was dropped (kcp-go drops all of these silently; braid counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the nonce + CRC header.
    #[error("datagram too short")]
    Short,
    /// The CRC32 does not match: another key or cipher, or corruption.
    #[error("checksum mismatch (another --key or --crypt?)")]
    Checksum,
    /// An FEC data packet whose size field does not fit the datagram.
    #[error("bad FEC size field")]
    FecSize,
}

/// Counters of a datagram layer: one session's ([`crate::KcpStream::stats`]), or the
/// totals of every session made with one [`crate::Config`] ([`Counters`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CodecStats {
    /// Datagrams that passed the checksum.
    pub valid: u64,
    /// Datagrams dropped for a bad checksum.
    pub bad_checksum: u64,
    /// Parity packets received.
    pub parity: u64,
    /// Data packets rebuilt from parity.
    pub fec_recovered: u64,
    /// Datagrams sent (parity included).
    pub sent: u64,
    /// Parity packets sent.
    pub parity_sent: u64,
}

impl std::fmt::Display for CodecStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} sent={} bad_checksum={} parity_received={} parity_sent={} \
             fec_recovered={}",
            self.valid,
            self.sent,
            self.bad_checksum,
            self.parity,
            self.parity_sent,
            self.fec_recovered
        )
    }
}

/// [`CodecStats`] totals shared by sessions (a [`crate::Config`] holds one: every
/// session made with it, or with a clone, adds to it).
#[derive(Debug, Default)]
pub struct Counters {
    valid: AtomicU64,
    bad_checksum: AtomicU64,
    parity: AtomicU64,
    fec_recovered: AtomicU64,
    sent: AtomicU64,
    parity_sent: AtomicU64,
}

impl Counters {
    /// The totals so far.
    pub fn snapshot(&self) -> CodecStats {
        CodecStats {
            valid: self.valid.load(Relaxed),
            bad_checksum: self.bad_checksum.load(Relaxed),
            parity: self.parity.load(Relaxed),
            fec_recovered: self.fec_recovered.load(Relaxed),
            sent: self.sent.load(Relaxed),
            parity_sent: self.parity_sent.load(Relaxed),
        }
    }

    /// Counts a datagram that failed the checksum outside a session (a listener's).
    pub(crate) fn bad_checksum(&self) {
        self.bad_checksum.fetch_add(1, Relaxed);
    }
}

/// Adds `n` to a counter of a session and to the shared total.
macro_rules! count {
    ($codec:expr, $field:ident, $n:expr) => {{
        let n = $n;
        $codec.stats.$field += n;
        $codec.totals.$field.fetch_add(n, Relaxed);
    }};
}

/// Encodes and decodes one session's datagrams.
pub struct Codec {
    crypt: Crypt,
    encoder: Option<fec::Encoder>,
    /// Made at the first FEC packet when FEC is off here (kcp-go's rule: the peer's
    /// parity is still used, with its shard counts).
    decoder: Option<fec::Decoder>,
    stats: CodecStats,
    totals: Arc<Counters>,
}

impl Codec {
    /// A codec with this cipher and FEC shard counts (FEC is on iff both are positive).
    pub fn new(crypt: Crypt, data_shards: usize, parity_shards: usize) -> Codec {
        Codec::with_totals(crypt, data_shards, parity_shards, Arc::default())
    }

    /// A codec that also adds its counts to `totals`.
    pub fn with_totals(
        crypt: Crypt,
        data_shards: usize,
        parity_shards: usize,
        totals: Arc<Counters>,
    ) -> Codec {
        Codec {
            crypt,
            encoder: fec::Encoder::new(data_shards, parity_shards),
            decoder: fec::Decoder::new(data_shards, parity_shards),
            stats: CodecStats::default(),
            totals,
        }
    }

    /// Bytes this codec puts before the KCP packet (what KCP's mtu must leave room for).
    pub fn overhead(&self) -> usize {
        CRYPT_HEADER
            + if self.encoder.is_some() {
                fec::FEC_OVERHEAD
            } else {
                0
            }
    }

    /// The counters so far.
    pub fn stats(&self) -> CodecStats {
        self.stats
    }

    /// Turns one KCP output packet into the datagrams to send (1, or 1 + parity).
    pub fn encode(&mut self, kcp: &[u8], mut out: impl FnMut(Vec<u8>)) {
        let crypt = &self.crypt;
        let (mut sent, mut parity) = (0, 0);
        let mut seal = |body: &[u8]| {
            sent += 1;
            if fec_header(body).is_some_and(|(_, flag)| flag == TYPE_PARITY) {
                parity += 1;
            }
            let mut d = vec![0u8; CRYPT_HEADER + body.len()];
            rand::thread_rng().fill_bytes(&mut d[..NONCE]);
            d[CRYPT_HEADER..].copy_from_slice(body);
            let crc = crc32fast::hash(&d[CRYPT_HEADER..]);
            d[NONCE..CRYPT_HEADER].copy_from_slice(&crc.to_le_bytes());
            crypt.encrypt(&mut d);
            out(d);
        };
        match &mut self.encoder {
            None => seal(kcp),
            Some(enc) => enc.encode(kcp, seal),
        }
        count!(self, sent, sent);
        if parity > 0 {
            count!(self, parity_sent, parity);
        }
    }

    /// Decrypts and checks one datagram in place; passes each KCP packet it holds to
    /// `kcp`: the datagram's own (`false`), and any that FEC recovers with it (`true`).
    pub fn decode(
        &mut self,
        datagram: &mut [u8],
        mut kcp: impl FnMut(&[u8], bool),
    ) -> Result<(), DecodeError> {
        let body = match open(&self.crypt, datagram) {
            Ok(body) => body,
            Err(e) => {
                if e == DecodeError::Checksum {
                    count!(self, bad_checksum, 1);
                }
                return Err(e);
            }
        };
        count!(self, valid, 1);
        let Some((seqid, flag)) = fec_header(body) else {
            kcp(body, false);
            return Ok(());
        };
        let parity = flag == TYPE_PARITY;
        if parity {
            count!(self, parity, 1);
        } else {
            kcp(data_payload(body)?, false);
        }
        let dec = self.decoder.get_or_insert_with(fec::Decoder::learning);
        for recovered in dec.decode(seqid, parity, &body[FEC_HEADER..]) {
            count!(self, fec_recovered, 1);
            kcp(&recovered, true);
        }
        Ok(())
    }

    /// Encrypts a datagram that [`Codec::decode`] decrypted back to what arrived (the
    /// ciphers restart for each datagram, so this is exact).
    pub fn reseal(&self, datagram: &mut [u8]) {
        self.crypt.encrypt(datagram);
    }
}

/// Decrypts a datagram and checks its CRC: the bytes after the nonce+CRC header.
pub fn open<'a>(crypt: &Crypt, datagram: &'a mut [u8]) -> Result<&'a [u8], DecodeError> {
    if datagram.len() < CRYPT_HEADER {
        return Err(DecodeError::Short);
    }
    crypt.decrypt(datagram);
    let want = u32::from_le_bytes(datagram[NONCE..CRYPT_HEADER].try_into().expect("4 bytes"));
    let body = &datagram[CRYPT_HEADER..];
    if crc32fast::hash(body) != want {
        return Err(DecodeError::Checksum);
    }
    Ok(body)
}

/// The FEC seqid and flag of a checked body, if it carries an FEC header (KCP's command
/// byte is 81..=84 there, so it cannot be mistaken for one).
pub fn fec_header(body: &[u8]) -> Option<(u32, u16)> {
    if body.len() < FEC_HEADER {
        return None;
    }
    let flag = u16::from_le_bytes([body[4], body[5]]);
    if flag != TYPE_DATA && flag != TYPE_PARITY {
        return None;
    }
    let seqid = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
    Some((seqid, flag))
}

/// The KCP bytes of an FEC data packet.
pub fn data_payload(body: &[u8]) -> Result<&[u8], DecodeError> {
    let size = body
        .get(FEC_HEADER..FEC_HEADER + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or(DecodeError::FecSize)?;
    if size < 2 || FEC_HEADER + size > body.len() {
        return Err(DecodeError::FecSize);
    }
    Ok(&body[FEC_HEADER + 2..FEC_HEADER + size])
}

/// The KCP conversation id and whether a checked body may start a session (kcp-go: a
/// non-parity packet whose first segment has a KCP command).
pub fn first_conv(body: &[u8]) -> Option<u32> {
    let kcp = match fec_header(body) {
        Some((_, TYPE_PARITY)) => return None,
        Some(_) => data_payload(body).ok()?,
        None => body,
    };
    if kcp.len() < 24 || !(81..=84).contains(&kcp[4]) {
        return None;
    }
    Some(u32::from_le_bytes(kcp[..4].try_into().expect("4 bytes")))
}

/// A listener's check of a datagram from a new address: decrypts it in place and
/// returns its conversation id if it may open a session.
pub fn first_conv_of(crypt: &Crypt, datagram: &mut [u8]) -> Option<u32> {
    open(crypt, datagram).ok().and_then(first_conv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(crypt: &str, ds: usize, ps: usize) {
        let c = Crypt::new(crypt, "secret").unwrap();
        let mut tx = Codec::new(c.clone(), ds, ps);
        let mut rx = Codec::new(c, ds, ps);
        let packets: Vec<Vec<u8>> = (0..25u8).map(|i| vec![i; 24 + i as usize]).collect();
        let mut datagrams = Vec::new();
        for p in &packets {
            tx.encode(p, |d| datagrams.push(d));
        }
        let mut got = Vec::new();
        for mut d in datagrams {
            assert!(d.len() <= 24 + 24 + 28);
            rx.decode(&mut d, |k, _| got.push(k.to_vec())).unwrap();
        }
        assert_eq!(got, packets);
    }

    #[test]
    fn datagrams_round_trip_with_and_without_fec() {
        round_trip("none", 0, 0);
        round_trip("aes", 10, 3);
        round_trip("xor", 3, 2);
    }

    #[test]
    fn wrong_key_is_a_checksum_error() {
        let mut tx = Codec::new(Crypt::new("aes", "a").unwrap(), 0, 0);
        let mut rx = Codec::new(Crypt::new("aes", "b").unwrap(), 0, 0);
        let mut d = Vec::new();
        tx.encode(&[81; 30], |x| d = x);
        assert_eq!(rx.decode(&mut d, |_, _| {}), Err(DecodeError::Checksum));
        assert_eq!(rx.stats().bad_checksum, 1);
        assert_eq!(rx.decode(&mut [0u8; 5], |_, _| {}), Err(DecodeError::Short));
    }

    #[test]
    fn none_keeps_the_nonce_and_crc_header() {
        let mut tx = Codec::new(Crypt::none(), 0, 0);
        let mut d = Vec::new();
        tx.encode(b"kcp", |x| d = x);
        assert_eq!(&d[20..], b"kcp");
        assert_eq!(d[16..20], crc32fast::hash(b"kcp").to_le_bytes());
    }

    #[test]
    fn fec_off_here_still_uses_the_peers_parity() {
        let c = Crypt::new("aes", "k").unwrap();
        let mut tx = Codec::new(c.clone(), 10, 3);
        let mut rx = Codec::new(c, 0, 0);
        let packets: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 30]).collect();
        let mut datagrams = Vec::new();
        for p in &packets {
            tx.encode(p, |d| datagrams.push(d));
        }
        assert_eq!(tx.stats().parity_sent, 30);
        assert_eq!(tx.stats().sent, 130);
        let mut got = Vec::new();
        for (i, mut d) in datagrams.into_iter().enumerate() {
            if i == 13 * 5 + 4 {
                continue; // a data packet of the sixth group
            }
            rx.decode(&mut d, |k, _| got.push(k.to_vec())).unwrap();
        }
        assert_eq!(rx.stats().parity, 30);
        assert_eq!(rx.stats().fec_recovered, 1);
        got.sort();
        assert_eq!(got, packets);
    }
}
