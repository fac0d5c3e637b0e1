//! The `kcp_datagram` fuzz check (fuzz/src/kcp_datagram.rs) under `cargo test`: the
//! committed corpus replayed, and a few thousand seeded random mutations of it.

#[path = "../../../fuzz/src/kcp_datagram.rs"]
mod check;

use braid_kcp::Conn;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kcp_datagram")
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/kcp_datagram exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn corpus_replays_cleanly() {
    let inputs = corpus();
    assert!(inputs.len() >= 4, "no corpus");
    let mut sessions = 0;
    for input in &inputs {
        let out = check::kcp_datagram(input);
        // Each session seed is a session's traffic carrying 6000 bytes.
        if input.len() > 10_000 {
            assert_eq!(out, 6000);
            sessions += 1;
        }
    }
    assert_eq!(sessions, 4);
}

/// A fuzzer find: hostile sequence numbers overflow ikcp's `i32` differences. The kcp
/// crate is built with wrapping arithmetic (Cargo.toml), so this must not panic here.
#[test]
fn hostile_sequence_numbers_do_not_panic() {
    let input = include_bytes!("kcp-timediff-overflow");
    check::kcp_datagram(input);
}

#[test]
fn seeded_mutations_of_the_corpus() {
    let inputs = corpus();
    let mut rng = StdRng::seed_from_u64(17);
    for i in 0..4000 {
        let mut input = inputs[i % inputs.len()].clone();
        for _ in 0..rng.gen_range(1..8) {
            if input.is_empty() {
                break;
            }
            let at = rng.gen_range(0..input.len());
            match rng.gen_range(0..4) {
                0 => input[at] = rng.gen(),
                1 => input[at] ^= 1 << rng.gen_range(0..8),
                2 => input.truncate(at.max(1)),
                _ => input.insert(at, rng.gen()),
            }
        }
        check::kcp_datagram(&input);
    }
}

/// Writes the seed corpus: sessions' real traffic for each control byte.
/// `cargo test -p braid-kcp --test fuzz_corpus -- --ignored` (scripts/fuzz.sh seed).
#[test]
#[ignore]
fn write_seeds() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for ctrl in [0u8, 1, 2, 3] {
        let config = check::kcp_config(ctrl);
        let mut peer = Conn::new(check::CONV, &config, 0);
        let mut input = vec![ctrl];
        let data: Vec<u8> = (0..6_000u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0;
        for now in (0..400).step_by(10) {
            sent += peer.send(&data[sent..], now);
            peer.update(now);
            while let Some(mut d) = peer.poll_datagram() {
                config.crypt.decrypt(&mut d);
                let body = &d[braid_kcp::CRYPT_HEADER..];
                input.extend_from_slice(&(body.len() as u16).to_le_bytes());
                input.extend_from_slice(body);
            }
        }
        std::fs::write(dir.join(format!("session-ctrl{ctrl}")), &input).unwrap();
    }
}
