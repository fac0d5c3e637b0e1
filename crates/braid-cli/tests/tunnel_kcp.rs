//! `braid client/server --transport kcp`, in-process, against each other and against
//! Debian's kcptun binaries (skipped with a message when kcptun is not installed,
//! unless BRAID_REQUIRE_INTEROP=1).

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

fn kcptun(bin: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("BRAID_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("BRAID_REQUIRE_INTEROP=1 but {bin} is not installed (Debian package kcptun)");
        }
        eprintln!("skipping kcptun test: {bin} not found (run scripts/install-peers.sh as root)");
    }
    found
}

fn spawn(bin: &PathBuf, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    } else {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    }
}

async fn echo_many(addr: SocketAddr, n: u64, len: usize) {
    // Waits for a just-started process to listen (not by connecting: a probe
    // connection would become a stream too).
    let mut tries = 0;
    while std::net::TcpListener::bind(addr).is_ok() {
        tries += 1;
        assert!(tries < 100, "nothing listens on {addr}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tasks: Vec<_> = (0..n)
        .map(|seed| tokio::spawn(echo_unclosed(addr, seed, len)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_to_braid_over_kcp() {
    bounded(async {
        let target = echo_target().await;
        for flags in [
            &["--transport", "kcp"][..],
            &[
                "--transport=kcp",
                "--crypt=none",
                "--nocomp",
                "--ds=0",
                "--ps=0",
                "--mode=fast3",
            ],
        ] {
            let server = start_server(target, flags).await;
            let client = start_client(server.addr, &[flags, &["--conn", "2"]].concat()).await;
            echo_many(client.addr, 12, 100_000).await;
            client.shutdown().await;
            server.shutdown().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_client_replaces_kcptun_client() {
    bounded(async {
        let Some(bin) = kcptun("kcptun-server") else {
            return;
        };
        let target = echo_target().await;
        let t = target.to_string();
        for (kcptun_flags, braid_flags) in [
            (&[][..], &["--transport", "kcp"][..]),
            (
                &[
                    "--smuxver",
                    "2",
                    "--crypt",
                    "none",
                    "--nocomp",
                    "--ds",
                    "0",
                    "--ps",
                    "0",
                ],
                &[
                    "--transport=kcp",
                    "--proto=smux2",
                    "--crypt=none",
                    "--nocomp",
                    "--ds=0",
                    "--ps=0",
                ],
            ),
        ] {
            let port = free_port(true);
            let l = format!("127.0.0.1:{port}");
            let _server = spawn(&bin, &[&["-l", &l, "-t", &t][..], kcptun_flags].concat());
            let client = start_client(l.parse().unwrap(), braid_flags).await;
            echo_many(client.addr, 12, 100_000).await;
            client.shutdown().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braid_server_replaces_kcptun_server() {
    bounded(async {
        let Some(bin) = kcptun("kcptun-client") else {
            return;
        };
        let target = echo_target().await;
        for (kcptun_flags, braid_flags) in [
            (&["--conn", "2"][..], &["--transport", "kcp"][..]),
            (
                &[
                    "--smuxver",
                    "2",
                    "--crypt",
                    "xor",
                    "--key",
                    "k",
                    "--nocomp",
                    "--mode",
                    "fast2",
                ],
                &[
                    "--transport=kcp",
                    "--crypt=xor",
                    "--key=k",
                    "--nocomp",
                    "--mode=fast2",
                ],
            ),
        ] {
            let server = start_server(target, braid_flags).await;
            let port = free_port(false);
            let l = format!("127.0.0.1:{port}");
            let r = server.addr.to_string();
            let client = spawn(&bin, &[&["-l", &l, "-r", &r][..], kcptun_flags].concat());
            echo_many(l.parse().unwrap(), 12, 100_000).await;
            server.shutdown().await;
            drop(client);
        }
    })
    .await
}

/// Waits (bounded) until `cond` holds.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed().as_secs() < 10, "{what}: not within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// kcptun-client's `--autoexpire`: after it, new streams go over a new KCP session; the
/// old one keeps carrying its streams, and closes once it carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoexpire_replaces_sessions_and_keeps_their_streams() {
    bounded(async {
        let target = echo_target().await;
        let flags = [
            "--transport=kcp",
            "--crypt=none",
            "--nocomp",
            "--ds=0",
            "--ps=0",
        ];
        let server = start_server(target, &flags).await;
        let client = start_client(server.addr, &[&flags[..], &["--autoexpire=1"]].concat()).await;
        // A connection on the first session, kept open across the expiry.
        let mut held = tokio::net::TcpStream::connect(client.addr).await.unwrap();
        held.write_all(b"first").await.unwrap();
        let mut buf = [0u8; 5];
        held.read_exact(&mut buf).await.unwrap();
        assert_eq!(server.stats.snapshot().sessions, 1);
        wait_for("a second session after --autoexpire 1", || {
            client.stats.snapshot().sessions == 2
        })
        .await;
        // New connections go over the new session...
        echo_unclosed(client.addr, 1, 50_000).await;
        assert_eq!(server.stats.snapshot().sessions, 2);
        // ...and the old one still carries its stream.
        held.write_all(b"again").await.unwrap();
        held.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"again");
        drop(held);
        wait_for("the expired session closed once unused", || {
            client.stats.snapshot().sessions == 1
        })
        .await;
        client.shutdown().await;
        server.shutdown().await;
    })
    .await
}
