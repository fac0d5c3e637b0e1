//! The `braid` binary itself: restarts, signals, stats lines, exit codes and messages.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// A running `braid` process.
struct Proc {
    child: Child,
    addr: SocketAddr,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Proc {
    /// Reads the log until a line contains `text`; returns that line.
    async fn wait_log(&mut self, text: &str) -> String {
        loop {
            let line = self.stderr.next_line().await.unwrap().expect("more log");
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// Starts `braid ARGS...` and waits for its `listening on ADDR` line.
async fn spawn(args: &[&str]) -> Proc {
    spawn_command(Command::new(BRAID).args(args)).await
}

/// Starts `cmd`, a braid process, and waits for its `listening on ADDR` line.
async fn spawn_command(cmd: &mut Command) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stdout.next_line().await.unwrap().expect("a first line");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Proc {
        child,
        addr,
        stdout,
        stderr,
    }
}

/// Runs `braid ARGS...` to its end; returns the exit code and stderr.
async fn run(args: &[&str]) -> (i32, String) {
    let (code, _, stderr) = run_braid(args, &[]).await;
    (code, stderr)
}

async fn sigterm(p: &mut Proc) -> i32 {
    let pid = p.child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    p.child.wait().await.unwrap().code().expect("exited")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_the_server_restarts() {
    bounded(async {
        let target = echo_target().await.to_string();
        let server_args = |listen: &str| {
            let args = ["server", "--listen", listen, "--target", &target];
            args.map(String::from)
        };
        let args = server_args("127.0.0.1:0");
        let mut server = spawn(&args.each_ref().map(String::as_str)).await;
        let server_addr = server.addr;
        let mut client = start_client(server_addr, &["--conns", "2"]).await;
        client.wait_carriers(2).await;
        assert_echo(client.addr, 1, 100_000).await;

        // A connection in flight when the server dies is cut, not left hanging.
        let mut in_flight = TcpStream::connect(client.addr).await.unwrap();
        in_flight.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        in_flight.read_exact(&mut buf).await.unwrap();

        server.child.kill().await.unwrap();
        client.wait_carriers(0).await;
        let err = in_flight.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

        // Connections made while the server is down wait for it (--connect-timeout)...
        let waiting = tokio::spawn(assert_echo(client.addr, 2, 300_000));
        let listen = server_addr.to_string();
        let args = server_args(&listen);
        let server = spawn(&args.each_ref().map(String::as_str)).await;
        assert_eq!(server.addr, server_addr);
        waiting.await.unwrap();
        // ...and once it is back, everything works again.
        client.wait_carriers(2).await;
        let tasks: Vec<_> = (0..20u64)
            .map(|i| tokio::spawn(assert_echo(client.addr, 10 + i, 50_000)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        client.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_tunnel_print_stats_and_stop_on_sigterm() {
    bounded(async {
        let target = echo_target().await.to_string();
        let mut server = spawn(&[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
            "--stats",
            "100ms",
        ])
        .await;
        let server_addr = server.addr.to_string();
        let mut client = spawn(&[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--server",
            &server_addr,
            "--proto",
            "smux2",
        ])
        .await;
        assert_echo(client.addr, 3, 500_000).await;
        // Stats lines come on stdout; one eventually shows the transfer.
        loop {
            let line = server.stdout.next_line().await.unwrap().unwrap();
            assert!(line.starts_with("stats: sessions="), "{line}");
            if line.contains("streams_total=1 up=500000") {
                assert!(line.contains("down=500000"), "{line}");
                break;
            }
        }
        assert_eq!(sigterm(&mut client).await, 0);
        assert_eq!(sigterm(&mut server).await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_exit_codes() {
    bounded(async {
        let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = busy.local_addr().unwrap().to_string();
        let nowhere = closed_port().await.to_string();
        let cases: &[(&[&str], i32, &str)] = &[
            (
                &["server", "--listen", &busy, "--target", "127.0.0.1:9"],
                1,
                &format!("braid: cannot listen on {busy}: Address already in use"),
            ),
            (
                &["client", "--listen", "127.0.0.1:0", "--server", &nowhere],
                1,
                &format!("braid: cannot reach server {nowhere}: Connection refused"),
            ),
            (
                &["client", "--listen", "127.0.0.1:0", "--server", "localhost"],
                2,
                "braid: invalid --server `localhost`: expected HOST:PORT",
            ),
            (
                &[
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--target",
                    "h:1",
                    "--proto",
                    "smux1",
                    "--max-frame-size",
                    "1MiB",
                ],
                2,
                "braid: invalid --max-frame-size 1048576: allowed 1..=65535",
            ),
            (
                &[
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--target",
                    "h:1",
                    "--tls-cert",
                    "/nonexistent.pem",
                    "--tls-key",
                    "/nonexistent.pem",
                ],
                2,
                "braid: cannot read --tls-cert /nonexistent.pem: ",
            ),
            (
                &["server", "--target", "h:1"],
                2,
                "braid: --listen is required (as a flag or in --config)",
            ),
            (
                &["server", "--listen", "0.0.0.0:0", "--target", "h:1"],
                2,
                "braid: refusing to listen on 0.0.0.0:0 unauthenticated (no authentication is \
                 configured): anyone who can reach it could use the target. Add --psk-file FILE \
                 (on both ends), or --tls-client-ca PEM (mutual TLS), or --no-auth if the \
                 network is trusted",
            ),
            (
                &[
                    "client",
                    "--listen",
                    "127.0.0.1:0",
                    "--server",
                    "h:1",
                    "--config",
                    "/nonexistent.toml",
                ],
                2,
                "braid: cannot read config file /nonexistent.toml: ",
            ),
        ];
        for (args, code, message) in cases {
            let (got, stderr) = run(args).await;
            assert_eq!(got, *code, "{args:?}: {stderr}");
            assert!(stderr.starts_with(message), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        }
        // clap's own usage errors exit with 2 too.
        let (got, stderr) = run(&["client", "--bogus"]).await;
        assert_eq!(got, 2);
        assert!(
            stderr.starts_with("error: unexpected argument '--bogus'"),
            "{stderr}"
        );
        let (got, _) = run(&[
            "client", "--listen", "x", "--server", "h:1", "--stats", "soon",
        ])
        .await;
        assert_eq!(got, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_active_connections_finish() {
    bounded(async {
        let target = echo_target().await.to_string();
        let mut server = spawn(&["server", "--listen", "127.0.0.1:0", "--target", &target]).await;
        let client = start_client(server.addr, &[]).await;
        let mut active = TcpStream::connect(client.addr).await.unwrap();
        active.write_all(b"one").await.unwrap();
        let mut buf = [0u8; 3];
        active.read_exact(&mut buf).await.unwrap();

        let pid = server.child.id().unwrap().to_string();
        let term = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(term.unwrap().success());
        server
            .wait_log("waiting up to 5s for 1 active stream(s)")
            .await;
        // Draining (default --grace 5s): new streams are refused, active ones go on.
        assert_refused(client.addr).await;
        active.write_all(b" two").await.unwrap();
        active.shutdown().await.unwrap();
        let mut rest = Vec::new();
        active.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" two");
        let code = tokio::time::timeout(Duration::from_secs(4), server.child.wait())
            .await
            .expect("the server exits once its streams are done")
            .unwrap();
        assert_eq!(code.code(), Some(0));
        client.shutdown().await;
    })
    .await;
}

/// `--proto auto` keeps the tuning for whichever protocol a client speaks; it warns only
/// about values a protocol cannot take (yamux windows start at 256KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_server_warns_only_about_tuning_a_protocol_cannot_take() {
    /// Starts `braid server` (auto) with `tuning`, stops it once it listens, and
    /// returns its `--proto auto` warnings.
    async fn auto_warnings(tuning: &[&str]) -> Vec<String> {
        let mut args = vec!["server", "--listen", "127.0.0.1:0", "--target", "h:1"];
        args.extend_from_slice(tuning);
        let mut server = spawn(&args).await;
        // The warning comes before the server listens: all of it is in stderr by now.
        server.child.kill().await.unwrap();
        let mut warnings = Vec::new();
        while let Some(line) = server.stderr.next_line().await.unwrap() {
            if line.contains("--proto auto") {
                warnings.push(line);
            }
        }
        warnings
    }
    bounded(async {
        let tuned = [
            "--max-frame-size",
            "4KiB",
            "--max-receive-buffer",
            "8MiB",
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "3s",
            "--stream-send-buffer",
            "1MiB",
        ];
        assert_eq!(auto_warnings(&tuned).await, Vec::<String>::new());
        let small_window = ["--max-frame-size", "4KiB", "--max-stream-buffer", "128KiB"];
        let warnings = auto_warnings(&small_window).await;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("yamux sessions use --max-stream-buffer 256.0 KiB"),
            "{warnings:?}"
        );
        assert!(!warnings[0].contains("smux"), "{warnings:?}");
        assert!(!warnings[0].contains("--max-frame-size"), "{warnings:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_backs_off_and_logs_once() {
    bounded(async {
        // A server allowed 48 file descriptors, and more silent connections than that.
        let mut p = spawn_command(
            Command::new("sh")
                .arg("-c")
                .arg(format!("ulimit -n 48 && exec '{BRAID}' \"$@\""))
                .args([
                    "sh",
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--target",
                    "127.0.0.1:9",
                ]),
        )
        .await;
        let mut silent = Vec::new();
        for _ in 0..80 {
            silent.push(TcpStream::connect(p.addr).await.unwrap());
        }
        p.wait_log("accepting a connection failed: Too many open files (out of file descriptors")
            .await;
        // Once descriptors are free again it serves: a yamux ping is answered.
        drop(silent);
        let mut tcp = TcpStream::connect(p.addr).await.unwrap();
        let ping = [0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        tcp.write_all(&ping).await.unwrap();
        let mut pong = [0u8; 12];
        tcp.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7]);
        // The failures were logged once (at most once per 10 s).
        assert_eq!(sigterm(&mut p).await, 0);
        let mut rest = String::new();
        p.stderr
            .into_inner()
            .read_to_string(&mut rest)
            .await
            .unwrap();
        assert!(!rest.contains("accepting a connection failed"), "{rest}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_one_line_for_the_client_and_logged_with_its_address() {
    bounded(async {
        let dir = test_dir("psk");
        let good = write_file(&dir, "good", &"11".repeat(32));
        let bad = write_file(&dir, "bad", &"22".repeat(32));
        let mut server = spawn(&[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "127.0.0.1:9",
            "--psk-file",
            &good,
        ])
        .await;
        let addr = server.addr.to_string();
        let (code, stderr) = run(&[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--server",
            &addr,
            "--psk-file",
            &bad,
        ])
        .await;
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "braid: cannot reach server {addr}: the server closed the connection during the \
                 pre-shared key handshake: wrong --psk-file, or the server does not use \
                 --psk-file\n"
            )
        );
        let line = server.wait_log("connection refused").await;
        assert!(
            line.contains("pre-shared key handshake failed: wrong key")
                && line.contains("peer=127.0.0.1:"),
            "{line}"
        );
        assert_eq!(sigterm(&mut server).await, 0);
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}
