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
    /// The peer's latest cumulative ACK (`una`) and highest selective ACK seen.
    peer_una: Option<u32>,
    max_acked: Option<u32>,
    /// Since when the peer has acknowledged a segment beyond its own `una`.
    gap_since: Option<u32>,
}

impl Conn {
    /// A session with conversation id `conv`, at time `now` (ms).
    pub fn new(conv: u32, config: &Config, now: u32) -> Conn {
        let outbox = Outbox::default();
        let codec = Codec::new(
            config.crypt.clone(),
            config.data_shards,
            config.parity_shards,
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
            peer_una: None,
            max_acked: None,
            gap_since: None,
        }
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.kcp.conv()
    }

    /// Takes one received datagram (decrypted in place).
    pub fn input(&mut self, datagram: &mut [u8], now: u32) -> Result<(), DecodeError> {
        let kcp = &mut self.kcp;
        let mut rejected = 0;
        let (mut una, mut acked) = (self.peer_una, self.max_acked);
        self.codec.decode(datagram, |packet| {
            scan_acks(packet, kcp.conv(), &mut una, &mut acked);
            if kcp.input(packet).is_err() {
                rejected += 1;
            }
        })?;
        self.rejected += rejected;
        (self.peer_una, self.max_acked) = (una, acked);
        match (una, acked) {
            (Some(u), Some(a)) if a.wrapping_sub(u) as i32 >= 0 => {
                self.gap_since.get_or_insert(now);
            }
            _ => self.gap_since = None,
        }
        self.last_rx = Some(now);
        Ok(())
    }

    /// Whether KCP takes more data now (kcp-go's rule: fewer than sndwnd packets waiting).
    pub fn writable(&self) -> bool {
        self.kcp.wait_snd() < self.sndwnd
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

    /// Runs KCP's timers (retransmission, window probes, delayed ACKs) at `now`.
    pub fn update(&mut self, now: u32) {
        let _ = self.kcp.update(now);
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

    /// Whether the peer has acknowledged segments past its cumulative ACK for `after_ms`:
    /// it lost the start of the stream, which happens when a kcp-go listener closed the
    /// session (bad smux version or compression) and made a new one for our packets.
    pub fn peer_restarted(&self, now: u32, after_ms: u32) -> bool {
        self.gap_since
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

/// Notes the `una` and ACKed `sn` of each segment of a KCP packet for `conv`
/// (`conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 | len u32 | data`).
fn scan_acks(mut packet: &[u8], conv: u32, una: &mut Option<u32>, acked: &mut Option<u32>) {
    let later = |new: u32, old: Option<u32>| old.is_none_or(|o| new.wrapping_sub(o) as i32 > 0);
    while packet.len() >= 24 {
        let word = |at: usize| u32::from_le_bytes(packet[at..at + 4].try_into().expect("4"));
        if word(0) != conv {
            return;
        }
        let (sn, seg_una, len) = (word(12), word(16), word(20) as usize);
        if later(seg_una, *una) {
            *una = Some(seg_una);
        }
        if packet[4] == 82 && later(sn, *acked) {
            *acked = Some(sn);
        }
        packet = packet.get(24 + len..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests;
