//! braid over KCP against Debian's kcptun binaries (kcp-go 5.6.1), both ways: braid
//! client -> kcptun-server and kcptun-client -> braid server, smux v1 and v2, kcptun's
//! default configuration and the minimal one, many concurrent streams with every byte
//! checked; a lossy relay where FEC recovers packets; and mismatched settings that must
//! fail within seconds with a message saying what to check.
//!
//! Skipped (with a message) when kcptun is not installed, unless BRAID_REQUIRE_INTEROP=1.

mod common;

use braid::Protocol;
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const STREAMS: usize = 24;
const BYTES: usize = 48 * 1024;

async fn braid_to_kcptun_server(setup: Setup) {
    let Some((_, server_bin)) = both() else {
        return;
    };
    let target = echo_target().await;
    let port = free_port(true);
    let _server = Kcptun::server(&server_bin, port, target, &setup);
    let (session, _) = braid_client(([127, 0, 0, 1], port).into(), &setup).await;
    many_streams(&session, STREAMS, BYTES).await;
    session.close().await;
}

async fn kcptun_client_to_braid_server(setup: Setup, proto: Protocol) {
    let Some((client_bin, _)) = both() else {
        return;
    };
    let (addr, seen, _) = braid_server(&setup, proto).await;
    let port = free_port(false);
    let _client = Kcptun::client(&client_bin, port, addr, &setup, &["--conn", "2"]);
    many_connections(([127, 0, 0, 1], port).into(), STREAMS, BYTES).await;
    // --conn 2: kcptun-client spreads connections over two KCP sessions.
    assert_eq!(seen.sessions.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_client_to_kcptun_server_default_config() {
    bounded(async {
        braid_to_kcptun_server(Setup::default_config(1)).await;
        braid_to_kcptun_server(Setup::default_config(2)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_client_to_kcptun_server_minimal_config() {
    bounded(async {
        braid_to_kcptun_server(Setup::minimal(1)).await;
        braid_to_kcptun_server(Setup::minimal(2)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_client_to_braid_server_default_config() {
    bounded(async {
        // The server detects the smux version (as `braid server --proto auto`).
        kcptun_client_to_braid_server(Setup::default_config(1), Protocol::Auto).await;
        kcptun_client_to_braid_server(Setup::default_config(2), Protocol::SmuxV2).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_client_to_braid_server_minimal_config() {
    bounded(async {
        kcptun_client_to_braid_server(Setup::minimal(1), Protocol::SmuxV1).await;
        kcptun_client_to_braid_server(Setup::minimal(2), Protocol::Auto).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fec_recovers_losses_through_a_lossy_relay() {
    bounded(async {
        let Some((_, server_bin)) = both() else {
            return;
        };
        let setup = Setup::default_config(2);
        let target = echo_target().await;
        let port = free_port(true);
        let _server = Kcptun::server(&server_bin, port, target, &setup);
        let (relay, dropped) = lossy_relay(([127, 0, 0, 1], port).into(), 0.05, 7).await;
        let (session, stats) = braid_client(relay, &setup).await;
        many_streams(&session, 8, 256 * 1024).await;
        let s = stats.get();
        let lost = dropped.load(Ordering::Relaxed);
        eprintln!(
            "relay dropped {lost} datagrams; braid received {} parity, FEC recovered {}",
            s.parity, s.fec_recovered
        );
        assert!(lost > 20, "the relay dropped only {lost}");
        assert!(s.parity > 0, "no parity packets from kcptun-server");
        assert!(
            s.fec_recovered > 0,
            "FEC recovered nothing ({lost} dropped)"
        );
        session.close().await;
    })
    .await
}

/// Runs a braid client with `ours` against a kcptun-server with `theirs`; the session
/// must end within `within` with an error containing every one of `hints`.
async fn mismatch_client_side(ours: Setup, theirs: Setup, hints: &[&str]) {
    let Some((_, server_bin)) = both() else {
        return;
    };
    let target = echo_target().await;
    let port = free_port(true);
    let _server = Kcptun::server(&server_bin, port, target, &theirs);
    let start = Instant::now();
    let (session, _) = braid_client(([127, 0, 0, 1], port).into(), &ours).await;
    let stream = session.open_stream().await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = w.write_all(b"hello through kcptun").await;
    let mut buf = [0u8; 64];
    let read = r.read(&mut buf).await;
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "{ours:?} vs {theirs:?}: data went through"
    );
    let reason = session.closed().await.to_string();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} to fail: {reason}"
    );
    for h in hints {
        assert!(
            reason.contains(h),
            "{ours:?} vs {theirs:?}: error lacks `{h}`: {reason}"
        );
    }
    eprintln!("failed after {took:?} with: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_against_kcptun_server_fail_fast_and_say_why() {
    bounded(async {
        let base = Setup::default_config(1);
        let wrong_key = Setup {
            key: "not the key",
            ..base.clone()
        };
        let wrong_cipher = Setup {
            crypt: "aes-128",
            ..base.clone()
        };
        let no_comp = Setup {
            nocomp: true,
            ..base.clone()
        };
        let v2 = Setup::default_config(2);
        tokio::join!(
            mismatch_client_side(wrong_key, base.clone(), &["--key", "--crypt"]),
            mismatch_client_side(wrong_cipher, base.clone(), &["--key", "--crypt"]),
            mismatch_client_side(no_comp.clone(), base.clone(), &["--nocomp"]),
            mismatch_client_side(base.clone(), no_comp, &["--nocomp"]),
            mismatch_client_side(v2.clone(), base.clone(), &["--proto"]),
            mismatch_client_side(base.clone(), v2, &["--proto"]),
        );
    })
    .await
}

/// Runs kcptun-client with `theirs` against a braid server with `ours`; data must not
/// pass, and the server must say why within seconds: `check` looks at what it saw.
async fn mismatch_server_side(
    ours: Setup,
    proto: Protocol,
    theirs: Setup,
    check: impl Fn(&ServerSeen, &braid_kcp::ListenerStats) -> Option<String>,
) {
    let Some((client_bin, _)) = both() else {
        return;
    };
    let (addr, seen, stats) = braid_server(&ours, proto).await;
    let port = free_port(false);
    let _client = Kcptun::client(&client_bin, port, addr, &theirs, &[]);
    let start = Instant::now();
    let mut tcp = connect_soon(([127, 0, 0, 1], port).into()).await;
    use tokio::io::AsyncWriteExt;
    tcp.write_all(b"hello through kcptun").await.unwrap();
    loop {
        if let Some(why) = check(&seen, &stats) {
            eprintln!("server saw after {:?}: {why}", start.elapsed());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{theirs:?} -> {ours:?}: the server did not notice within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ended_with(seen: &ServerSeen, hint: &str) -> Option<String> {
    let ended = seen.ended.lock().unwrap();
    ended.iter().find(|r| r.contains(hint)).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_against_kcptun_client_are_reported_by_the_server() {
    bounded(async {
        let base = Setup::default_config(1);
        let wrong_key = Setup {
            key: "not the key",
            ..base.clone()
        };
        let no_comp = Setup {
            nocomp: true,
            ..base.clone()
        };
        let v2 = Setup::default_config(2);
        tokio::join!(
            mismatch_server_side(base.clone(), Protocol::Auto, wrong_key, |seen, stats| {
                let bad = stats.bad_checksum.load(Ordering::Relaxed);
                assert_eq!(seen.sessions.load(Ordering::Relaxed), 0);
                (bad > 0).then(|| format!("{bad} datagrams failed the checksum"))
            }),
            mismatch_server_side(no_comp.clone(), Protocol::Auto, base.clone(), |seen, _| {
                ended_with(seen, "--nocomp")
            }),
            mismatch_server_side(base.clone(), Protocol::Auto, no_comp, |seen, _| {
                ended_with(seen, "--nocomp")
            }),
            mismatch_server_side(base.clone(), Protocol::SmuxV1, v2, |seen, _| {
                ended_with(seen, "smux version 2")
            }),
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_cipher_talks_to_kcptun_server() {
    bounded(async {
        let Some((_, server_bin)) = both() else {
            return;
        };
        let target = echo_target().await;
        let mut runs = Vec::new();
        for &crypt in braid_kcp::SUPPORTED_CIPHERS {
            let server_bin = server_bin.clone();
            runs.push(tokio::spawn(async move {
                let setup = Setup {
                    crypt,
                    key: "cipher test",
                    ..Setup::minimal(2)
                };
                let port = free_port(true);
                let _server = Kcptun::server(&server_bin, port, target, &setup);
                let (session, _) = braid_client(([127, 0, 0, 1], port).into(), &setup).await;
                let stream = session.open_stream().await.unwrap();
                echo_check(stream, payload(20_000, 5), crypt).await;
                session.close().await;
            }));
        }
        for r in runs {
            r.await.unwrap();
        }
    })
    .await
}
