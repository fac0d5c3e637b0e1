//! Unit tests of flag and config-file resolution.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Server(ServerArgs),
    Client(ClientArgs),
}

fn server(args: &[&str]) -> ServerArgs {
    let argv = ["braid", "server"].iter().chain(args);
    match Cli::try_parse_from(argv).unwrap().cmd {
        Cmd::Server(a) => a,
        Cmd::Client(_) => unreachable!(),
    }
}

fn client(args: &[&str]) -> ClientArgs {
    let argv = ["braid", "client"].iter().chain(args);
    match Cli::try_parse_from(argv).unwrap().cmd {
        Cmd::Client(a) => a,
        Cmd::Server(_) => unreachable!(),
    }
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("braid-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults() {
    let s = server(&["--listen", "127.0.0.1:0", "--target", "localhost:80"])
        .resolve()
        .unwrap();
    assert_eq!(s.config.protocol, Protocol::Auto);
    assert_eq!(s.grace, DEFAULT_GRACE);
    assert!(matches!(s.auth, ServerAuth::None) && s.stats.is_none());
    assert_eq!(s.limits, Limits::default());
    assert_eq!(s.config.idle_timeout, Limits::default().idle_timeout);
    let c = client(&["--listen", "127.0.0.1:0", "--server", "[::1]:7000"])
        .resolve()
        .unwrap();
    let mut want = Config::new(Protocol::Yamux);
    want.accept_streams = false;
    assert_eq!(c.config, want);
    assert_eq!(c.conns, 1);
}

#[test]
fn tuning_maps_onto_config() {
    let c = client(&[
        "--listen=127.0.0.1:0",
        "--server=h:1",
        "--proto=smux2",
        "--max-frame-size=16KiB",
        "--max-receive-buffer=8MiB",
        "--max-stream-buffer=1MiB",
        "--stream-send-buffer=8MiB",
        "--keepalive-interval=2s",
        "--keepalive-timeout=5s",
    ])
    .resolve()
    .unwrap();
    let k = &c.config;
    assert_eq!(k.protocol, Protocol::SmuxV2);
    assert_eq!(k.max_frame_size, 16384);
    assert_eq!(k.max_receive_buffer, 8 << 20);
    assert_eq!(k.max_stream_buffer, 1 << 20);
    assert_eq!(k.stream_send_buffer, 8 << 20);
    assert!(k.max_send_buffer >= 8 << 20);
    assert_eq!(k.keep_alive_interval, Duration::from_secs(2));
    assert_eq!(k.keep_alive_timeout, Duration::from_secs(5));
}

#[test]
fn smux2_streams_get_the_tunnel_window_unless_one_is_given() {
    let base = ["--listen=127.0.0.1:0", "--server=h:1", "--proto=smux2"];
    let c = client(&base).resolve().unwrap();
    assert_eq!(c.config.max_stream_buffer, SMUX2_STREAM_BUFFER);
    let c = client(&[&base[..], &["--max-stream-buffer=64KiB"]].concat())
        .resolve()
        .unwrap();
    assert_eq!(c.config.max_stream_buffer, 64 * 1024);
    // yamux keeps Go's window.
    let c = client(&["--listen=127.0.0.1:0", "--server=h:1"])
        .resolve()
        .unwrap();
    assert_eq!(c.config.max_stream_buffer, 256 * 1024);
    // A server under auto: the smux2 sessions it detects get the tunnel's window, others
    // and explicit values are left alone.
    let s = server(&["--listen=127.0.0.1:0", "--target=h:1"])
        .resolve()
        .unwrap();
    for (p, want) in [
        (Protocol::SmuxV2, SMUX2_STREAM_BUFFER),
        (Protocol::SmuxV1, 65536),
        (Protocol::Yamux, 256 * 1024),
    ] {
        let mut d = s.config.detected(p);
        detected_window(&mut d);
        assert_eq!(d.max_stream_buffer, want, "{p:?}");
    }
    let s = server(&[
        "--listen=127.0.0.1:0",
        "--target=h:1",
        "--max-stream-buffer=2MiB",
    ])
    .resolve()
    .unwrap();
    let mut d = s.config.detected(Protocol::SmuxV2);
    detected_window(&mut d);
    assert_eq!(d.max_stream_buffer, 2 << 20);
}

#[test]
fn bad_values_are_usage_errors() {
    let e = client(&[
        "--listen=a:1",
        "--server=h:1",
        "--proto=smux1",
        "--max-frame-size=70000",
    ])
    .resolve()
    .err()
    .unwrap();
    assert_eq!(
        e,
        Error::Usage("invalid --max-frame-size 70000: allowed 1..=65535".into())
    );
    for (args, want) in [
        (vec!["--listen=a:1", "--server=h"], "expected HOST:PORT"),
        (
            vec!["--listen=a:1", "--server=h:1", "--proto=auto"],
            "for the server",
        ),
        (vec!["--server=h:1"], "--listen is required"),
        (vec!["--listen=a:1", "--server=h:1", "--conns=0"], "--conns"),
        (
            vec!["--listen=a:1", "--server=h:1", "--connect-timeout=0s"],
            "must be > 0",
        ),
        (
            vec!["--listen=a:1", "--server=h:1", "--tls-server-name=x"],
            "needs TLS",
        ),
    ] {
        let e = client(&args).resolve().err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(want), "{e}");
    }
    let e = server(&["--listen=a:1", "--target=h:1", "--tls-cert=x.pem"])
        .resolve()
        .err()
        .unwrap();
    assert!(e.to_string().contains("go together"), "{e}");
}

#[test]
fn config_file_keys_are_the_flag_names_and_flags_win() {
    let path = temp_file(
        "client.toml",
        r#"
        listen = "127.0.0.1:0"
        server = "example.org:7000"
        proto = "smux1"
        conns = 3
        tls-insecure-skip-verify = true
        tls-server-name = "name.example"
        connect-timeout = "3s"
        wait-for-server = true
        metrics = "127.0.0.1:9101"
        stats = "1m"
        grace = 2
        max-frame-size = "8KiB"
        max-receive-buffer = 1048576
        max-stream-buffer = "64KiB"
        stream-send-buffer = "128KiB"
        keepalive-interval = "1s"
        keepalive-timeout = "3s"
        no-keepalive = false
        "#,
    );
    let mut a = client(&["--conns", "2", "--max-frame-size", "4KiB"]);
    a.config = Some(path.clone());
    let c = a.resolve().unwrap();
    assert_eq!(c.server, "example.org:7000");
    assert_eq!(c.conns, 2);
    assert_eq!(c.config.max_frame_size, 4096);
    assert_eq!(c.config.max_receive_buffer, 1 << 20);
    assert_eq!(c.config.keep_alive_interval, Duration::from_secs(1));
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.stats, Some(Duration::from_secs(60)));
    assert_eq!(c.grace, Duration::from_secs(2));
    assert!(matches!(c.auth, ClientAuth::Tls(_)) && c.wait_for_server);
    assert_eq!(c.metrics.as_deref(), Some("127.0.0.1:9101"));
    // Every flag is a key of the file (the file above names them all).
    let text = std::fs::read_to_string(&path).unwrap();
    for key in keys::<ClientArgs>() {
        // The KCP keys: tunnel::kcp's tests.
        if !["tls-ca", "tls-cert", "tls-key", "psk-file"].contains(&key.as_str())
            && !keys::<KcpArgs>().contains(&key)
        {
            assert!(text.contains(&format!("{key} =")), "key {key} untested");
        }
    }
}

#[test]
fn config_file_errors_are_one_line() {
    let path = temp_file(
        "bad.toml",
        "listen = \"a:1\"\ntarget = \"h:1\"\nmax-frame-sise = 1\n",
    );
    let mut a = server(&[]);
    a.config = Some(path);
    let e = a.resolve().err().unwrap();
    assert!(
        e.to_string().contains("unknown key `max-frame-sise`"),
        "{e}"
    );
    let path = temp_file("bad2.toml", "listen = \"a:1\"\n\ngrace = \"soon\"\n");
    let mut a = server(&[]);
    a.config = Some(path);
    let e = a.resolve().err().unwrap().to_string();
    assert!(e.contains("not a duration") && !e.contains('\n'), "{e}");
    let path = temp_file("bad3.toml", "listen = \"a:1\"\n\ngrace = \n");
    let mut a = server(&[]);
    a.config = Some(path);
    let e = a.resolve().err().unwrap().to_string();
    assert!(e.contains("bad3.toml:3:") && !e.contains('\n'), "{e}");
}

#[test]
fn authentication_is_required_beyond_loopback() {
    let dir = std::env::temp_dir().join(format!("braid-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("psk");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let key = key.to_str().unwrap();
    let open = server(&["--listen=0.0.0.0:7000", "--target=h:1"]).resolve();
    let e = open.err().unwrap().to_string();
    assert!(
        e.starts_with("refusing to listen on 0.0.0.0:7000 unauthenticated"),
        "{e}"
    );
    assert!(e.contains("--psk-file") && e.contains("--no-auth"), "{e}");
    let s = server(&["--listen=0.0.0.0:7000", "--target=h:1", "--no-auth"]).resolve();
    assert!(matches!(s.unwrap().auth, ServerAuth::None));
    let s = server(&["--listen=[::]:7000", "--target=h:1", "--psk-file", key]).resolve();
    assert!(matches!(s.unwrap().auth, ServerAuth::Psk(_)));
    for (args, want) in [
        (
            vec!["--psk-file", key, "--no-auth"],
            "--no-auth contradicts --psk-file",
        ),
        (vec!["--tls-client-ca=ca.pem"], "--tls-client-ca needs TLS"),
        (
            vec!["--psk-file", key, "--tls-cert=a", "--tls-key=b"],
            "exclude each other",
        ),
    ] {
        let argv: Vec<&str> = ["--listen=0.0.0.0:1", "--target=h:1"]
            .into_iter()
            .chain(args)
            .collect();
        let e = server(&argv).resolve().err().unwrap().to_string();
        assert!(e.contains(want), "{argv:?}: {e}");
    }
    // A bad key file is a one-line usage error.
    std::fs::write(dir.join("short"), "abcd").unwrap();
    let short = dir.join("short");
    let e = client(&[
        "--listen=a:1",
        "--server=h:1",
        "--psk-file",
        short.to_str().unwrap(),
    ])
    .resolve()
    .err()
    .unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
    let c = client(&["--listen=a:1", "--server=h:1", "--psk-file", key]).resolve();
    assert!(matches!(c.unwrap().auth, ClientAuth::Psk(_)));
    let e = client(&[
        "--listen=a:1",
        "--server=h:1",
        "--tls-cert=a",
        "--tls-key=b",
    ])
    .resolve()
    .err()
    .unwrap();
    assert!(e.to_string().contains("--tls-cert needs TLS"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn server_config_file_takes_auth_limits_and_metrics() {
    let path = temp_file(
        "server.toml",
        r#"
        listen = "0.0.0.0:7000"
        target = "127.0.0.1:8000"
        psk-file = "server-psk"
        metrics = "127.0.0.1:9100"
        max-sessions = 10
        max-streams = 100
        idle-timeout = "5m"
        detect-timeout = "20s"
        handshake-timeout = "3s"
        "#,
    );
    std::fs::write(path.with_file_name("server-psk"), "01".repeat(32)).unwrap();
    let mut a = server(&["--max-streams", "50"]);
    a.config = Some(path);
    let s = a.resolve().unwrap();
    assert!(matches!(s.auth, ServerAuth::Psk(_)));
    assert_eq!(s.metrics.as_deref(), Some("127.0.0.1:9100"));
    let want = Limits {
        max_sessions: 10,
        max_streams: 50,
        idle_timeout: Some(Duration::from_secs(300)),
        detect_timeout: Duration::from_secs(20),
        handshake_timeout: Duration::from_secs(3),
    };
    assert_eq!(s.limits, want);
    assert_eq!(s.config.idle_timeout, Some(Duration::from_secs(300)));
}
