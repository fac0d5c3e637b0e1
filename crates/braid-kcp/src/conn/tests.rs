//! The ARQ under a virtual clock: two sessions over a simulated network that drops,
//! delays and reorders datagrams, deterministically (seeded).

use super::*;
use crate::config::Mode;
use crate::crypt::Crypt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Net {
    rng: StdRng,
    loss: f64,
    /// (deliver at ms, to side, datagram)
    flying: Vec<(u32, usize, Vec<u8>)>,
    sent: u64,
    dropped: u64,
    /// Delay spread (ms): datagrams take 5 ms plus up to this.
    jitter: u32,
}

impl Net {
    fn carry(&mut self, now: u32, to: usize, d: Vec<u8>) {
        self.sent += 1;
        if self.rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        // 5 ms and more of delay, drawn per datagram: later ones often overtake.
        let at = now + 5 + self.rng.gen_range(0..self.jitter);
        self.flying.push((at, to, d));
    }
}

fn config(ds: usize, ps: usize) -> Config {
    let mut c = Config::server();
    c.mode = Mode::Fast2;
    c.crypt = Crypt::new("aes", "k").unwrap();
    c.data_shards = ds;
    c.parity_shards = ps;
    c
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// Sends `a_to_b` and `b_to_a` both ways at once, over a network that delays each
/// datagram by 5 to 40 ms; returns (virtual ms taken, net, stats of b).
fn transfer(loss: f64, seed: u64, ds: usize, ps: usize) -> (u32, Net, CodecStats, u64) {
    transfer_with_jitter(loss, seed, ds, ps, 35)
}

fn transfer_with_jitter(
    loss: f64,
    seed: u64,
    ds: usize,
    ps: usize,
    jitter: u32,
) -> (u32, Net, CodecStats, u64) {
    let cfg = config(ds, ps);
    let mut sides = [Conn::new(7, &cfg, 0), Conn::new(7, &cfg, 0)];
    let payload = [data(600_000, seed), data(150_000, seed + 1)];
    let mut sent = [0usize; 2];
    let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut net = Net {
        rng: StdRng::seed_from_u64(seed),
        loss,
        flying: Vec::new(),
        sent: 0,
        dropped: 0,
        jitter,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut now = 0u32;
    while got[1].len() < payload[0].len() || got[0].len() < payload[1].len() {
        assert!(now < 120_000, "not done after 120 s of virtual time");
        // Deliver what is due, in arrival order.
        net.flying.sort_by_key(|f| f.0);
        let due = net.flying.partition_point(|f| f.0 <= now);
        for (_, to, mut d) in net.flying.drain(..due).collect::<Vec<_>>() {
            sides[to].input(&mut d, now).unwrap();
        }
        for i in 0..2 {
            let s = &mut sides[i];
            sent[i] += s.send(&payload[i][sent[i]..], now);
            s.update(now);
            let n = s.recv(&mut buf);
            got[i].extend_from_slice(&buf[..n]);
            while let Some(d) = s.poll_datagram() {
                assert!(d.len() <= cfg.mtu);
                net.carry(now, 1 - i, d);
            }
        }
        now += 1;
    }
    assert!(got[1] == payload[0], "a -> b bytes differ");
    assert!(got[0] == payload[1], "b -> a bytes differ");
    let b = sides[1].stats();
    let rejected = sides[0].rejected + sides[1].rejected;
    (now, net, b, rejected)
}

#[test]
fn lossless_transfer_is_exact_and_fast() {
    let (ms, net, stats, rejected) = transfer(0.0, 1, 0, 0);
    assert_eq!(net.dropped, 0);
    assert_eq!(stats.bad_checksum, 0);
    assert_eq!(rejected, 0);
    assert!(ms < 10_000, "took {ms} virtual ms");
}

#[test]
fn five_percent_loss_and_reordering_without_fec_retransmits() {
    let (ms, net, stats, _) = transfer(0.05, 2, 0, 0);
    assert!(net.dropped > 20, "only {} dropped", net.dropped);
    assert_eq!(stats.fec_recovered, 0);
    assert!(ms < 60_000, "took {ms} virtual ms");
}

#[test]
fn fec_recovers_lost_packets_under_loss() {
    // Little reordering: with 35 ms of it, KCP (fast-)retransmits so much that groups
    // leave the decoder's 3-group hold before they complete (as in kcp-go).
    let (_, net, stats, _) = transfer_with_jitter(0.05, 3, 10, 3, 3);
    assert!(net.dropped > 20);
    assert!(stats.parity > 0);
    assert!(
        stats.fec_recovered > 10,
        "FEC recovered only {} packets of {} dropped ({} sent)",
        stats.fec_recovered,
        net.dropped,
        net.sent
    );
}

#[test]
fn heavy_loss_still_delivers_every_byte() {
    let (_, net, _, _) = transfer(0.25, 4, 10, 3);
    assert!(net.dropped as f64 > net.sent as f64 * 0.2);
}

#[test]
fn silent_peer_is_dead_only_while_data_waits() {
    let cfg = config(0, 0);
    let mut a = Conn::new(1, &cfg, 0);
    assert!(!a.peer_dead(100_000, 5000), "nothing to send: not dead");
    a.send(b"hello", 1000);
    assert!(!a.peer_dead(5999, 5000));
    assert!(a.peer_dead(6000, 5000));
    assert!(!a.heard_from_peer());
}

#[test]
fn other_conversation_is_rejected_by_kcp() {
    let cfg = config(0, 0);
    let mut a = Conn::new(1, &cfg, 0);
    let mut b = Conn::new(2, &cfg, 0);
    a.send(b"x", 0);
    // Its start (sequence number 0) is noted as a new conversation, and given back
    // as it arrived.
    let mut d = a.poll_datagram().unwrap();
    let arrived = d.clone();
    b.input(&mut d, 1).unwrap();
    assert_eq!(b.take_new_conversation(), Some(1));
    assert_eq!(b.take_new_conversation(), None);
    b.reseal(&mut d);
    assert_eq!(d, arrived);
    // Later segments are rejected.
    a.send(b"y", 0);
    let mut d = a.poll_datagram().unwrap();
    b.input(&mut d, 1).unwrap();
    assert_eq!(b.rejected, 1);
    assert_eq!(b.recv(&mut [0u8; 100]), 0);
}

#[test]
fn peer_that_restarts_the_session_is_noticed() {
    let cfg = config(0, 0);
    let mut a = Conn::new(9, &cfg, 0);
    let mut b = Conn::new(9, &cfg, 0);
    let mut now = 0;
    let step = |a: &mut Conn, b: &mut Conn, now: u32| {
        a.update(now);
        b.update(now);
        while let Some(mut d) = a.poll_datagram() {
            b.input(&mut d, now).unwrap();
        }
        while let Some(mut d) = b.poll_datagram() {
            a.input(&mut d, now).unwrap();
        }
    };
    a.send(b"first", now);
    for _ in 0..100 {
        now += 10;
        step(&mut a, &mut b, now);
    }
    assert_eq!(a.unacked(), 0);
    assert!(!a.peer_restarted(now, 0));
    // The peer drops the session; its listener makes a new one for our next packet.
    let mut b = Conn::new(9, &cfg, now);
    a.send(b"second", now);
    let start = now;
    while !a.peer_restarted(now, 2000) {
        now += 10;
        step(&mut a, &mut b, now);
        assert!(now - start < 3000, "not noticed");
    }
    assert_eq!(b.recv(&mut [0u8; 100]), 0, "the new session never delivers");
}

/// Whether a plaintext datagram (crypt none, no FEC) carries a PUSH of segment `sn`.
fn carries_push(d: &[u8], sn: u32) -> bool {
    segments(&d[crate::codec::CRYPT_HEADER..])
        .any(|s| s.len() >= 24 && s[4] == 81 && s[12..16] == sn.to_le_bytes())
}

#[test]
fn one_segment_lost_for_long_is_not_a_restart() {
    let mut cfg = config(0, 0);
    cfg.crypt = Crypt::none();
    let (mut a, mut b) = (Conn::new(5, &cfg, 0), Conn::new(5, &cfg, 0));
    let payload = data(400_000, 11);
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    let mut now = 0u32;
    let mut dropped = 0;
    // Every copy of segment 20 is lost for 15 s, longer than any restart verdict, while
    // the rest of the stream flows and is acknowledged selectively.
    while got.len() < payload.len() {
        assert!(now < 60_000, "not done");
        if now < 15_000 {
            sent += a.send(&payload[sent..(sent + 1000).min(payload.len())], now);
        } else {
            sent += a.send(&payload[sent..], now);
        }
        a.update(now);
        b.update(now);
        while let Some(mut d) = a.poll_datagram() {
            if now < 15_000 && carries_push(&d, 20) {
                dropped += 1;
                continue;
            }
            b.input(&mut d, now).unwrap();
        }
        while let Some(mut d) = b.poll_datagram() {
            a.input(&mut d, now).unwrap();
        }
        let n = b.recv(&mut buf);
        got.extend_from_slice(&buf[..n]);
        assert!(
            !a.peer_restarted(now, 1000),
            "a live peer taken for restarted at {now}"
        );
        now += 5;
    }
    assert!(dropped > 5, "segment 20 dropped only {dropped} times");
    assert!(got == payload);
}
