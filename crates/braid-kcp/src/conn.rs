//! One KCP session without I/O: datagrams and a millisecond clock in, datagrams and
//! stream bytes out. The tokio layer ([`crate::KcpStream`]) drives it; tests drive it
//! with a virtual clock over a simulated lossy network.

use crate::codec::{Codec, CodecStats, DecodeError};
use crate::config::Config;
use kcp::Kcp;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Largest chunk handed to KCP in one `send` (the crate refuses 128 segments or more).
const MAX_SEND: usize = 64 * 1024;

/// Collects KCP's output packets (one `write` = one packet).
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Vec<Vec<u8>>>>);

impl std::io::Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A KCP session in stream mode with kcp-go's datagram layer.
pub struct Conn {
    kcp: Kcp<Outbox>,
    outbox: Outbox,
    codec: Codec,
    out: VecDeque<Vec<u8>>,
    sndwnd: usize,
    /// When the last valid datagram arrived (ms), if one did.
    last_rx: Option<u32>,
    /// When data last started waiting for acknowledgement after none was.
    busy_since: u32,
    /// KCP segments the KCP layer rejected (conv mismatch, bad command).
    pub rejected: u64,
    /// Input acknowledged some of our segments since the last flush.
    acked: bool,
    /// A datagram that opens another conversation arrived (see [`Conn::take_new_conversation`]).
    new_conv: Option<u32>,
    /// The highest cumulative ACK (`una`) the peer has sent.
    una_high: Option<u32>,
    /// Since when every packet of the peer has carried a `una` below `una_high`.
    una_behind_since: Option<u32>,
}

impl Conn {
    /// A session with conversation id `conv`, at time `now` (ms).
    pub fn new(conv: u32, config: &Config, now: u32) -> Conn {
        let outbox = Outbox::default();
        let codec = Codec::with_totals(
            config.crypt.clone(),
            config.data_shards,
            config.parity_shards,
            config.counters.clone(),
        );
        let mut kcp = Kcp::new_stream(conv, outbox.clone());
        kcp.set_mtu(config.mtu - codec.overhead())
            .expect("validated mtu");
        let (nodelay, interval, resend, nc) = config.mode.params();
        kcp.set_nodelay(nodelay, interval as i32, resend as i32, nc);
        kcp.set_wndsize(config.sndwnd, config.rcvwnd);
        let _ = kcp.update(now);
        Conn {
            kcp,
            outbox,
            codec,
            out: VecDeque::new(),
            sndwnd: config.sndwnd as usize,
            last_rx: None,
            busy_since: now,
            rejected: 0,
            acked: false,
            new_conv: None,
            una_high: None,
            una_behind_since: None,
        }
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.kcp.conv()
    }

    /// Takes one received datagram (decrypted in place).
    ///
    /// Two of kcp-go's rules the `kcp` crate (C ikcp's) lacks are applied here: each ACK
    /// segment counts towards fast retransmission of the segments sent before it (ikcp
    /// counts once per packet, so a loss waited for two more ACK packets), and a packet
    /// that acknowledges data makes the next [`Conn::update`] flush at once (new data and
    /// retransmissions go out clocked by ACKs, not by the next `interval` tick; kcp-go
    /// flushes per packet, we per batch of datagrams: fewer, fuller packets).
    pub fn input(&mut self, datagram: &mut [u8], now: u32) -> Result<(), DecodeError> {
        // The crate reads the clock only in `update`: give RTT samples and what input
        // sends the current time.
        let _ = self.kcp.update(now);
        let kcp = &mut self.kcp;
        let (mut rejected, mut acked) = (0, false);
        let (mut high, mut behind) = (self.una_high, self.una_behind_since);
        let mut new_conv = None;
        self.codec.decode(datagram, |packet, recovered| {
            if !recovered {
                if let Some(conv) = opens_other_conversation(packet, kcp.conv()) {
                    new_conv = Some(conv);
                    return;
                }
                note_una(packet, kcp.conv(), now, &mut high, &mut behind);
            }
            let waiting = kcp.wait_snd();
            for segment in segments(packet) {
                if kcp.input(segment).is_err() {
                    rejected += 1;
                    break; // as kcp-go: the rest of the packet is dropped
                }
            }
            acked |= kcp.wait_snd() < waiting;
        })?;
        self.acked |= acked;
        self.rejected += rejected;
        if new_conv.is_some() {
            self.new_conv = new_conv;
        }
        (self.una_high, self.una_behind_since) = (high, behind);
        self.last_rx = Some(now);
        Ok(())
    }

    /// The conversation id of a datagram that opened another conversation, if one came:
    /// its first segment has another id and sequence number 0 (a client that restarted
    /// from the same address). kcp-go's listener replaces the session then; the
    /// datagram was not used, and [`Conn::reseal`] gives it back as it arrived.
    /// Each such datagram is reported once.
    pub fn take_new_conversation(&mut self) -> Option<u32> {
        self.new_conv.take()
    }

    /// Encrypts a datagram that [`Conn::input`] decrypted back to what arrived.
    pub fn reseal(&self, datagram: &mut [u8]) {
        self.codec.reseal(datagram);
    }

    /// Whether KCP takes more data now (kcp-go's rule: fewer packets waiting than both
    /// our send window and the peer's receive window).
    pub fn writable(&self) -> bool {
        let waiting = self.kcp.wait_snd();
        waiting < self.sndwnd && waiting < self.kcp.rmt_wnd() as usize
    }

    /// Queues up to 64 KiB of `data` and sends what the windows allow; 0 if not writable.
    pub fn send(&mut self, data: &[u8], now: u32) -> usize {
        if !self.writable() || data.is_empty() {
            return 0;
        }
        if self.kcp.wait_snd() == 0 {
            self.busy_since = now;
        }
        let n = data.len().min(MAX_SEND);
        let _ = self.kcp.update(now); // the clock, for the new segments' timestamps
        let sent = self.kcp.send(&data[..n]).unwrap_or(0);
        let _ = self.kcp.flush();
        sent
    }

    /// Reads received bytes into `buf` (stream mode: at most one segment at a time is
    /// split, the rest stays queued); 0 if none.
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while let Ok(size) = self.kcp.peeksize() {
            if size > buf.len() - n {
                break;
            }
            match self.kcp.recv(&mut buf[n..]) {
                Ok(got) => n += got,
                Err(_) => break,
            }
        }
        n
    }

    /// Bytes of the next received segment, if any (for a caller whose buffer is small).
    pub fn peek_size(&self) -> Option<usize> {
        self.kcp.peeksize().ok()
    }

    /// Runs KCP's timers (retransmission, window probes, delayed ACKs) at `now`, and
    /// flushes if input acknowledged data since the last call. Call it after each batch
    /// of [`Conn::input`]s.
    pub fn update(&mut self, now: u32) {
        let _ = self.kcp.update(now); // flushes on KCP's own tick only
        if std::mem::take(&mut self.acked) {
            // Right after a tick's flush this one finds nothing due: a scan, no packets.
            let _ = self.kcp.flush();
        }
    }

    /// Milliseconds until [`Conn::update`] is due.
    pub fn next_update(&self, now: u32) -> u32 {
        self.kcp.check(now)
    }

    /// The next datagram to send.
    pub fn poll_datagram(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            let packets =
                std::mem::take(&mut *self.outbox.0.lock().unwrap_or_else(|e| e.into_inner()));
            for p in packets {
                let out = &mut self.out;
                self.codec.encode(&p, |d| out.push_back(d));
            }
        }
        self.out.pop_front()
    }

    /// Packets (segments) sent but not yet acknowledged, or queued.
    pub fn unacked(&self) -> usize {
        self.kcp.wait_snd()
    }

    /// Whether a valid datagram has ever arrived.
    pub fn heard_from_peer(&self) -> bool {
        self.last_rx.is_some()
    }

    /// Whether the peer has been silent for `after_ms` while data waited for it.
    pub fn peer_dead(&self, now: u32, after_ms: u32) -> bool {
        if self.kcp.wait_snd() == 0 {
            return false;
        }
        let since = match self.last_rx {
            Some(rx) if rx.wrapping_sub(self.busy_since) as i32 > 0 => rx,
            _ => self.busy_since,
        };
        now.wrapping_sub(since) >= after_ms
    }

    /// Whether the peer has lost the start of the session for `after_ms`: every packet
    /// it sent for that long acknowledged less (`una`) than it had before. A live KCP
    /// peer's `una` never goes back (a late, reordered packet is followed by current
    /// ones); it does when a kcp-go listener closed the session (bad smux version or
    /// compression) and made a new one for our next packets, with nothing received.
    pub fn peer_restarted(&self, now: u32, after_ms: u32) -> bool {
        self.una_behind_since
            .is_some_and(|since| now.wrapping_sub(since) >= after_ms)
    }

    /// Milliseconds since the last valid datagram (or since `start` if none came).
    pub fn silent_for(&self, now: u32, start: u32) -> u32 {
        now.wrapping_sub(self.last_rx.unwrap_or(start))
    }

    /// The datagram layer's counters.
    pub fn stats(&self) -> CodecStats {
        self.codec.stats()
    }
}

/// KCP segment header: `conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 |
/// len u32`, then `len` bytes.
const SEGMENT_HEADER: usize = 24;

/// The segments of a KCP packet, each with its data; a malformed rest comes last, whole
/// (KCP rejects it).
fn segments(mut packet: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if packet.is_empty() {
            return None;
        }
        let len = packet
            .get(20..SEGMENT_HEADER)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let end = match len {
            Some(len) if len <= packet.len() - SEGMENT_HEADER => SEGMENT_HEADER + len,
            _ => packet.len(),
        };
        let (segment, rest) = packet.split_at(end);
        packet = rest;
        Some(segment)
    })
}

/// The conversation id of a packet whose first segment starts another conversation
/// (another id, sequence number 0), as kcp-go's listener checks.
fn opens_other_conversation(packet: &[u8], conv: u32) -> Option<u32> {
    let header = packet.get(..SEGMENT_HEADER)?;
    let id = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let sn = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    (id != conv && sn == 0).then_some(id)
}

/// Follows the peer's cumulative ACK: the `una` of a packet's first segment (all carry
/// the same) against the highest seen.
fn note_una(packet: &[u8], conv: u32, now: u32, high: &mut Option<u32>, behind: &mut Option<u32>) {
    if packet.len() < SEGMENT_HEADER || packet[..4] != conv.to_le_bytes() {
        return;
    }
    let una = u32::from_le_bytes(packet[16..20].try_into().expect("4 bytes"));
    match *high {
        Some(h) if (una.wrapping_sub(h) as i32) < 0 => {
            behind.get_or_insert(now);
        }
        _ => {
            *high = Some(una);
            *behind = None;
        }
    }
}

#[cfg(test)]
mod tests;
