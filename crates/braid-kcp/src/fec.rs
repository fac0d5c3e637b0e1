//! kcp-go's forward error correction: groups of `ds` data packets followed by `ps`
//! Reed-Solomon parity packets (reed-solomon-erasure's GF(2^8) code is the one kcp-go's
//! reedsolomon uses, so parity is byte-identical).
//!
//! FEC header (after the 20-byte nonce+CRC header): `seqid u32 | flag u16 | size u16`,
//! little-endian; `size` (data packets only) = 2 + the KCP bytes that follow. A shard is
//! a packet from `size` to its end, zero-padded to the group's longest.

use reed_solomon_erasure::galois_8::ReedSolomon;

/// Flag of a data packet.
pub const TYPE_DATA: u16 = 0xf1;
/// Flag of a parity packet.
pub const TYPE_PARITY: u16 = 0xf2;
/// seqid + flag.
pub const FEC_HEADER: usize = 6;
/// seqid + flag + size: what FEC adds before the KCP bytes of a data packet.
pub const FEC_OVERHEAD: usize = 8;

/// Builds FEC packets (without the nonce+CRC header) from KCP packets.
pub struct Encoder {
    rs: ReedSolomon,
    data: usize,
    parity: usize,
    next: u32,
    paws: u32,
    /// The current group's shards (size field onwards), unpadded.
    shards: Vec<Vec<u8>>,
}

impl Encoder {
    /// `None` unless both counts are positive (kcp-go turns FEC off otherwise).
    pub fn new(data: usize, parity: usize) -> Option<Encoder> {
        if data == 0 || parity == 0 {
            return None;
        }
        let rs = ReedSolomon::new(data, parity).ok()?;
        let group = (data + parity) as u32;
        Some(Encoder {
            rs,
            data,
            parity,
            next: 0,
            paws: (u32::MAX / group) * group,
            shards: Vec::with_capacity(data),
        })
    }

    /// Frames one KCP packet as a data packet and, when it completes a group, the
    /// group's parity packets; each is passed to `out` in sending order.
    pub fn encode(&mut self, kcp: &[u8], mut out: impl FnMut(&[u8])) {
        let mut pkt = Vec::with_capacity(FEC_OVERHEAD + kcp.len());
        pkt.extend_from_slice(&self.next.to_le_bytes());
        pkt.extend_from_slice(&TYPE_DATA.to_le_bytes());
        pkt.extend_from_slice(&((kcp.len() + 2) as u16).to_le_bytes());
        pkt.extend_from_slice(kcp);
        self.next = self.next.wrapping_add(1);
        out(&pkt);
        self.shards.push(pkt.split_off(FEC_HEADER));
        if self.shards.len() < self.data {
            return;
        }
        let longest = self.shards.iter().map(Vec::len).max().unwrap_or(0);
        let mut shards: Vec<Vec<u8>> = std::mem::take(&mut self.shards);
        for s in &mut shards {
            s.resize(longest, 0);
        }
        shards.extend((0..self.parity).map(|_| vec![0u8; longest]));
        let encoded = self.rs.encode(&mut shards).is_ok();
        for parity in &shards[self.data..] {
            if encoded {
                let mut pkt = Vec::with_capacity(FEC_HEADER + longest);
                pkt.extend_from_slice(&self.next.to_le_bytes());
                pkt.extend_from_slice(&TYPE_PARITY.to_le_bytes());
                pkt.extend_from_slice(parity);
                out(&pkt);
            }
            // Sequence numbers wrap only after a parity packet, as in kcp-go.
            self.next = (self.next + 1) % self.paws;
        }
    }
}

/// One received FEC packet kept for recovery.
struct Held {
    seqid: u32,
    parity: bool,
    /// Shard bytes: from `size` (data) or the parity bytes.
    shard: Vec<u8>,
}

/// Recovers lost data packets from parity.
pub struct Decoder {
    rs: ReedSolomon,
    data: usize,
    group: u32,
    /// Held packets, sorted by seqid; at most `3 * group` (kcp-go's bound).
    held: Vec<Held>,
    tuner: Tuner,
    /// The shard counts are known: configured, or taken from the peer's packets.
    /// Until then nothing is rebuilt (a guess could rebuild garbage).
    known: bool,
}

impl Decoder {
    /// `None` unless both counts are positive.
    pub fn new(data: usize, parity: usize) -> Option<Decoder> {
        if data == 0 || parity == 0 {
            return None;
        }
        Some(Decoder {
            rs: ReedSolomon::new(data, parity).ok()?,
            data,
            group: (data + parity) as u32,
            held: Vec::new(),
            tuner: Tuner::new(),
            known: true,
        })
    }

    /// A decoder for a side with FEC off: it learns the peer's shard counts from its
    /// packets (kcp-go's rule), and rebuilds nothing before.
    pub fn learning() -> Decoder {
        Decoder {
            known: false,
            ..Decoder::new(1, 1).expect("1/1 is a valid code")
        }
    }

    /// The shard counts (data, parity) in use: the configured ones until the peer's
    /// packets show others.
    pub fn shards(&self) -> (usize, usize) {
        (self.data, self.group as usize - self.data)
    }

    /// Takes an FEC packet (`seqid | flag | shard`); returns the KCP bytes of each data
    /// packet it makes recoverable (never the packet's own: the caller has those).
    pub fn decode(&mut self, seqid: u32, parity: bool, shard: &[u8]) -> Vec<Vec<u8>> {
        self.tuner.sample(seqid, parity);
        if parity != (seqid % self.group >= self.data as u32) {
            self.retune();
        }
        let pos = match self.held.binary_search_by_key(&seqid, |h| h.seqid) {
            Ok(_) => return Vec::new(), // duplicate
            Err(pos) => pos,
        };
        self.held.insert(
            pos,
            Held {
                seqid,
                parity,
                shard: shard.to_vec(),
            },
        );
        let begin = seqid - seqid % self.group;
        let end = begin as u64 + self.group as u64;
        let in_group = |h: &Held| (h.seqid as u64) >= begin as u64 && (h.seqid as u64) < end;
        let first = self.held.partition_point(|h| h.seqid < begin);
        let count = self.held[first..]
            .iter()
            .take_while(|h| in_group(h))
            .count();
        let mut recovered = Vec::new();
        if count >= self.data && self.known {
            let group = &self.held[first..first + count];
            let data_have = group.iter().filter(|h| !h.parity).count();
            if data_have < self.data {
                recovered = self.reconstruct(group, begin);
            }
            self.held.drain(first..first + count);
        }
        let limit = 3 * self.group as usize;
        if self.held.len() > limit {
            let excess = self.held.len() - limit;
            self.held.drain(..excess);
        }
        recovered
    }

    /// Takes the shard counts the peer's packets show (kcp-go does the same, which is
    /// how a side with FEC off, or other counts, still recovers packets). At most once
    /// per `TUNE_SAMPLES` packets after the first time: a new code costs a matrix
    /// inversion, and a hostile peer could otherwise ask for one per packet.
    fn retune(&mut self) {
        if !self.tuner.may_retune() {
            return;
        }
        let Some((data, parity)) = self.tuner.infer() else {
            return;
        };
        if (data, parity) == self.shards() || data + parity > 256 {
            return;
        }
        if let Ok(rs) = ReedSolomon::new(data, parity) {
            tracing::debug!(
                data,
                parity,
                "FEC shard counts taken from the peer's packets"
            );
            self.rs = rs;
            self.data = data;
            self.group = (data + parity) as u32;
            self.known = true;
            self.tuner.retuned();
        }
    }

    fn reconstruct(&self, group: &[Held], begin: u32) -> Vec<Vec<u8>> {
        let longest = group.iter().map(|h| h.shard.len()).max().unwrap_or(0);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; self.group as usize];
        for h in group {
            let slot = (h.seqid - begin) as usize;
            // A flag that contradicts the slot (peer with other ds/ps) spoils the group.
            if h.parity != (slot >= self.data) {
                return Vec::new();
            }
            let mut s = h.shard.clone();
            s.resize(longest, 0);
            shards[slot] = Some(s);
        }
        let missing: Vec<usize> = (0..self.data).filter(|&i| shards[i].is_none()).collect();
        if self.rs.reconstruct_data(&mut shards).is_err() {
            return Vec::new();
        }
        missing
            .into_iter()
            .filter_map(|i| {
                let s = shards[i].as_ref()?;
                let size = u16::from_le_bytes([*s.first()?, *s.get(1)?]) as usize;
                (2..=s.len()).contains(&size).then(|| s[2..size].to_vec())
            })
            .collect()
    }
}

/// Packets the tuner remembers (kcp-go's autotune keeps as many).
const TUNE_SAMPLES: usize = 258;

/// Infers the peer's shard counts from the kinds (data or parity) of recent packets.
struct Tuner {
    /// `(seqid, parity)` at `seqid % TUNE_SAMPLES`.
    samples: Vec<Option<(u32, bool)>>,
    /// Packets sampled since the last retune; `None` before the first.
    since: Option<usize>,
}

impl Tuner {
    fn new() -> Tuner {
        Tuner {
            samples: vec![None; TUNE_SAMPLES],
            since: None,
        }
    }

    fn sample(&mut self, seqid: u32, parity: bool) {
        self.samples[seqid as usize % TUNE_SAMPLES] = Some((seqid, parity));
        if let Some(n) = &mut self.since {
            *n += 1;
        }
    }

    fn may_retune(&self) -> bool {
        self.since.is_none_or(|n| n >= TUNE_SAMPLES)
    }

    fn retuned(&mut self) {
        self.since = Some(0);
    }

    /// (data, parity): the lengths of the first whole run of each kind, i.e. one with
    /// a packet of the other kind right before and right after it.
    fn infer(&self) -> Option<(usize, usize)> {
        let mut seen: Vec<(u32, bool)> = self.samples.iter().flatten().copied().collect();
        seen.sort_unstable_by_key(|s| s.0);
        let mut found = [None, None]; // by kind: data, parity
        let mut start = 0;
        while start < seen.len() {
            let (first, kind) = seen[start];
            let mut end = start + 1;
            while end < seen.len() && seen[end] == (seen[end - 1].0.wrapping_add(1), kind) {
                end += 1;
            }
            let before = start > 0 && seen[start - 1].0.wrapping_add(1) == first;
            let after = end < seen.len() && seen[end - 1].0.wrapping_add(1) == seen[end].0;
            if before && after {
                found[kind as usize].get_or_insert(end - start);
            }
            start = end;
        }
        Some((found[0]?, found[1]?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(enc: &mut Encoder, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for p in payloads {
            enc.encode(p, |pkt| out.push(pkt.to_vec()));
        }
        out
    }

    fn feed(dec: &mut Decoder, pkt: &[u8]) -> Vec<Vec<u8>> {
        let seqid = u32::from_le_bytes(pkt[..4].try_into().unwrap());
        let flag = u16::from_le_bytes(pkt[4..6].try_into().unwrap());
        dec.decode(seqid, flag == TYPE_PARITY, &pkt[FEC_HEADER..])
    }

    #[test]
    fn layout_and_seqids_match_kcp_go() {
        let mut enc = Encoder::new(2, 1).unwrap();
        let out = packets(&mut enc, &[vec![1, 2, 3], vec![4]]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], [0, 0, 0, 0, 0xf1, 0, 5, 0, 1, 2, 3]);
        assert_eq!(out[1], [1, 0, 0, 0, 0xf1, 0, 3, 0, 4]);
        // Parity: seqid 2, as long as the longest data shard (size field + 3 bytes).
        assert_eq!(out[2][..6], [2, 0, 0, 0, 0xf2, 0]);
        assert_eq!(out[2].len(), FEC_HEADER + 5);
    }

    #[test]
    fn any_parity_count_of_losses_is_recovered() {
        let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10 + i as usize * 3]).collect();
        let mut enc = Encoder::new(10, 3).unwrap();
        let out = packets(&mut enc, &payloads);
        assert_eq!(out.len(), 13);
        for lost in [[0usize, 1, 2], [3, 9, 12], [5, 10, 11]] {
            let mut dec = Decoder::new(10, 3).unwrap();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for (i, pkt) in out.iter().enumerate() {
                if lost.contains(&i) {
                    continue;
                }
                got.extend(feed(&mut dec, pkt));
            }
            let want: Vec<Vec<u8>> = lost
                .iter()
                .filter(|&&i| i < 10)
                .map(|&i| payloads[i].clone())
                .collect();
            got.sort();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "lost {lost:?}");
        }
    }

    #[test]
    fn hostile_packets_are_bounded_and_never_panic() {
        let mut dec = Decoder::new(10, 3).unwrap();
        for i in 0..10_000u32 {
            let seqid = i.wrapping_mul(2_654_435_761);
            let _ = dec.decode(seqid, i % 3 == 0, &[0xff; 7][..(i % 7) as usize]);
        }
        assert!(dec.held.len() <= 39);
        let _ = dec.decode(u32::MAX, true, &[1, 2]);
    }

    #[test]
    fn shard_counts_are_taken_from_the_peer() {
        let payloads: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 20 + i as usize % 7]).collect();
        let mut enc = Encoder::new(10, 3).unwrap();
        let out = packets(&mut enc, &payloads);
        // A side with FEC off learns 10/3 from the packets.
        let mut dec = Decoder::learning();
        let mut recovered = Vec::new();
        for (i, pkt) in out.iter().enumerate() {
            // From the fourth group on, lose the first data packet of each group.
            if i >= 39 && i % 13 == 0 {
                continue;
            }
            recovered.extend(feed(&mut dec, pkt));
        }
        assert_eq!(dec.shards(), (10, 3));
        let lost: Vec<Vec<u8>> = (39..out.len())
            .filter(|i| i % 13 == 0)
            .map(|i| payloads[i / 13 * 10].clone())
            .collect();
        assert!(lost.len() >= 10);
        assert_eq!(recovered, lost);
    }

    #[test]
    fn tuner_needs_whole_runs() {
        let mut t = Tuner::new();
        for (seqid, parity) in [(0, false), (1, false), (2, true), (3, true)] {
            t.sample(seqid, parity);
        }
        assert_eq!(t.infer(), None, "no run is bounded on both sides");
        for (seqid, parity) in [(4, false), (5, false), (6, true), (7, true), (8, false)] {
            t.sample(seqid, parity);
        }
        assert_eq!(t.infer(), Some((2, 2)));
    }
}
