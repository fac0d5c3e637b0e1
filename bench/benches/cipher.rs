//! The cipher under the tunnel's `--psk-file` carrier: Noise transport messages of the
//! largest size (65,519 bytes of plaintext) encrypted and decrypted by `snow` with
//! ring's AES-256-GCM, as `braid server`/`client` do. Its throughput is the floor of
//! what authentication costs the tunnel: one encryption at the client and one
//! decryption at the server per byte.
//!
//! Run: `cargo bench -p braid-bench --bench cipher` (add `-- --quick` for a short run).

use criterion::{Criterion, Throughput};

/// The tunnel's handshake pattern and cipher (crates/braid-cli/src/tunnel/noise.rs).
const PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// Plaintext per message: Noise's maximum message less the tag.
const PLAIN: usize = 65_535 - 16;

/// A client and a server transport state after the handshake.
fn pair() -> (snow::TransportState, snow::TransportState) {
    let psk = [7u8; 32];
    let build = || snow::Builder::new(PARAMS.parse().unwrap()).psk(0, &psk);
    let mut c = build().build_initiator().unwrap();
    let mut s = build().build_responder().unwrap();
    let (mut msg, mut out) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let n = c.write_message(&[], &mut msg).unwrap();
    s.read_message(&msg[..n], &mut out).unwrap();
    let n = s.write_message(&[], &mut msg).unwrap();
    c.read_message(&msg[..n], &mut out).unwrap();
    (
        c.into_transport_mode().unwrap(),
        s.into_transport_mode().unwrap(),
    )
}

fn cipher(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_aes256gcm");
    group.throughput(Throughput::Bytes(PLAIN as u64));
    let plain = vec![0x5au8; PLAIN];
    let mut msg = vec![0u8; 65_535];
    let (mut client, _) = pair();
    group.bench_function("encrypt", |b| {
        b.iter(|| client.write_message(&plain, &mut msg).unwrap())
    });
    // Decryption needs messages in nonce order: each iteration decrypts a fresh one
    // (its encryption is timed too: compare with `encrypt`), on a fresh pair.
    let (mut client, mut server) = pair();
    let mut out = vec![0u8; 65_535];
    group.bench_function("encrypt_then_decrypt", |b| {
        b.iter(|| {
            let n = client.write_message(&plain, &mut msg).unwrap();
            server.read_message(&msg[..n], &mut out).unwrap()
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    cipher(&mut c);
    c.final_summary();
}
