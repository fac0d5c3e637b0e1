//! `braid bench`, the benchmark engine, at tiny sizes: what a child prints, that every
//! workload runs in children and is summarized against TCP, the tables, the plot file,
//! and the errors. (Figures come from release runs, see BENCHMARKS.md; these only check
//! that the engine works.)

mod common;
#[path = "../../braid/tests/interop/mod.rs"]
mod interop;

use common::*;

/// Runs `braid ARGS...`; returns the exit code, stdout and stderr.
async fn braid(args: &[&str]) -> (i32, String, String) {
    run_braid(args, &[]).await
}

fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

/// Each row as "WORKLOAD COUNT LIB", COUNT being the row's field `count`.
fn row_keys(rows: &[serde_json::Value], count: &str) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["workload"].as_str().unwrap(),
                r[count],
                r["lib"].as_str().unwrap()
            )
        })
        .collect()
}

/// Asserts that the row's one run succeeded.
fn assert_one_ok_run(r: &serde_json::Value) {
    assert_eq!(
        (r["runs"].as_u64(), r["ok_runs"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_prints_one_json_line_with_the_bytes_per_stream_over_time() {
    bounded(async {
        let (code, out, err) = braid(&[
            "bench-child",
            "--lib",
            "braid-smux1",
            "--workload",
            "bulk",
            "--streams",
            "3",
            "--bytes",
            "2000000",
            "--chunk",
            "16384",
            "--sample-ms",
            "1",
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["bytes"], 6_000_000, "{v}");
        assert_eq!(v["streams"], 3, "{v}");
        assert!(
            num(&v, "mb_per_s") > 0.0 && num(&v, "peak_rss_kib") > 0.0,
            "{v}"
        );
        assert!(num(&v, "cpu_s") >= 0.0, "{v}");
        let t_s: Vec<f64> = serde_json::from_value(v["series"]["t_s"].clone()).unwrap();
        let bytes: Vec<Vec<u64>> = serde_json::from_value(v["series"]["bytes"].clone()).unwrap();
        assert!(
            !t_s.is_empty() && t_s.windows(2).all(|w| w[0] <= w[1]),
            "{t_s:?}"
        );
        assert_eq!(*t_s.last().unwrap(), num(&v, "elapsed_s"));
        assert_eq!(bytes.len(), 3);
        for row in &bytes {
            assert_eq!(row.len(), t_s.len());
            assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
            assert_eq!(*row.last().unwrap(), 2_000_000);
        }

        // A library this binary does not have is a failed sample, not a crash.
        let (code, out, _) =
            braid(&["bench-child", "--lib", "yamux", "--workload", "latency"]).await;
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "unknown library 'yamux'");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_in_children_against_tcp_and_the_plot_is_written() {
    bounded(async {
        let plot =
            std::env::temp_dir().join(format!("braid-bench-test-{}.svg", std::process::id()));
        let _ = std::fs::remove_file(&plot);
        let (code, out, err) = braid(&[
            "bench",
            "--json",
            "--repeat",
            "1",
            "--proto",
            "smux1,yamux",
            "--bulk",
            "1x2MiB,3x512KiB",
            "--chunk",
            "32KiB",
            "--round-trips",
            "100",
            "--churn-secs",
            "0.05",
            "--idle-streams",
            "200",
            "--plot",
            plot.to_str().unwrap(),
            "--sample-ms",
            "2",
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v["rows"].as_array().unwrap();
        let keys = row_keys(rows, "streams");
        let mut expected = Vec::new();
        for (w, streams) in [
            ("bulk", "1"),
            ("bulk", "3"),
            ("latency", "null"),
            ("churn", "null"),
        ] {
            for lib in ["tcp", "braid-smux1", "braid-yamux"] {
                expected.push(format!("{w} {streams} {lib}"));
            }
        }
        // No raw TCP for idle streams.
        expected.push("idle 200 braid-smux1".into());
        expected.push("idle 200 braid-yamux".into());
        assert_eq!(keys, expected);
        for r in rows {
            assert_one_ok_run(r);
            assert!(num(r, "value") > 0.0, "{r}");
            if r["workload"] != "idle" {
                assert!(num(r, "vs_tcp") > 0.0, "{r}");
            }
            if r["lib"] == "tcp" {
                assert_eq!(num(r, "vs_tcp"), 1.0, "{r}");
            }
            // No peers ran: nothing to compare with.
            assert!(r.get("vs_best_peer").is_none(), "{r}");
        }
        assert_eq!(v["runs"].as_array().unwrap().len(), rows.len());

        let svg = std::fs::read_to_string(&plot).unwrap();
        std::fs::remove_file(&plot).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for caption in [
            "tcp bulk 1x2 MiB",
            "braid-smux1 bulk 3x512 KiB",
            "braid-yamux bulk 1x2 MiB",
        ] {
            assert!(svg.contains(caption), "no panel '{caption}'");
        }
        assert!(
            svg.matches("<polyline").count() >= 6,
            "a line per stream and panel"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_a_summary_and_one_line_errors() {
    bounded(async {
        let (code, out, err) = braid(&[
            "bench",
            "--repeat",
            "1",
            "--proto",
            "yamux",
            "--bulk",
            "2x256KiB",
            "--round-trips",
            "50",
            "--churn-secs",
            "0.05",
            "--idle-streams",
            "100",
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        for header in [
            "bulk: 2 stream(s) x 256 KiB",
            "latency: ",
            "churn: ",
            "idle: ",
        ] {
            assert!(out.lines().any(|l| l.starts_with(header)), "{out}");
        }
        let summary: Vec<&str> = out.lines().filter(|l| l.starts_with("summary: ")).collect();
        assert_eq!(summary.len(), 1, "{out}");
        for part in ["bulk >= ", "latency p50 <= ", "churn >= ", "idle <= "] {
            assert!(summary[0].contains(part), "{out}");
        }

        let (code, _, err) = braid(&["bench", "--workload", "latency", "--round-trips", "0"]).await;
        assert_eq!(
            (code, err.as_str()),
            (1, "braid: --round-trips must be >= 1\n")
        );
        let (code, _, err) = braid(&["bench", "--workload", "latency", "--plot", "x.svg"]).await;
        assert_eq!(code, 1);
        assert!(err.ends_with("add bulk to --workload\n"), "{err}");
        let (code, _, err) = braid(&["bench", "--bulk", "16"]).await;
        assert_eq!(code, 2);
        assert!(err.contains("'16' is not STREAMSxBYTES"), "{err}");
        let (code, _, _) = braid(&["bench", "--workload", "bogus"]).await;
        assert_eq!(code, 2);
    })
    .await;
}

/// The tunnel workload, tiny: every carrier (direct, braid per protocol, braid with a
/// pre-shared key and with mutual TLS, and the Go tunnel when Go is installed) moves its
/// bytes through real `braid server`/`braid client` (or Go) processes, whose CPU and
/// memory are measured, at 1 and 3 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_workload_runs_every_carrier_in_its_own_processes() {
    bounded(async {
        let go = interop::go_peer();
        let go_path = go.as_ref().map(|p| p.to_string_lossy().into_owned());
        let mut args = vec![
            "bench",
            "--json",
            "--repeat",
            "1",
            "--workload",
            "tunnel",
            "--tunnel-conns",
            "1,3",
            "--tunnel-bytes",
            "6MiB",
            "--chunk",
            "32KiB",
        ];
        let mut env = Vec::new();
        if let Some(path) = &go_path {
            args.push("--peers");
            env.push(("BRAID_GO_PEER", path.as_str()));
        }
        let (code, out, err) = run_braid(&args, &env).await;
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v["rows"].as_array().unwrap();
        let mut libs = vec![
            "tcp",
            "braid-smux1",
            "braid-smux2",
            "braid-yamux",
            "braid-yamux+psk",
            "braid-yamux+mtls",
        ];
        if go.is_some() {
            libs.extend(["go-smux1", "go-smux2", "go-yamux"]);
        }
        let mut expected = Vec::new();
        for conns in [1, 3] {
            for lib in &libs {
                expected.push(format!("tunnel {conns} {lib}"));
            }
        }
        assert_eq!(row_keys(rows, "conns"), expected);
        for r in rows {
            assert_one_ok_run(r);
            assert_eq!(
                r["per_conn"].as_u64(),
                Some(6 * 1024 * 1024 / r["conns"].as_u64().unwrap()),
                "{r}"
            );
            assert!(num(r, "value") > 0.0 && num(r, "vs_tcp") > 0.0, "{r}");
            let lib = r["lib"].as_str().unwrap();
            if lib == "tcp" {
                // No tunnel processes.
                assert_eq!(num(r, "peak_rss_mib"), 0.0, "{r}");
            } else {
                // Two live processes were measured: each has some MiB resident.
                assert!(num(r, "peak_rss_mib") > 1.0, "{r}");
            }
            if lib.contains('+') {
                assert!(num(r, "vs_plain") > 0.0, "{r}");
            } else {
                assert!(r.get("vs_plain").is_none(), "{r}");
            }
            if go.is_some() && lib.starts_with("braid-") {
                assert_eq!(
                    r["best_peer"],
                    "go-yamux".replace("yamux", r["protocol"].as_str().unwrap()),
                    "{r}"
                );
                assert!(num(r, "vs_best_peer") > 0.0, "{r}");
            }
        }

        // The table and its summary.
        let (code, out, err) = braid(&[
            "bench",
            "--repeat",
            "1",
            "--workload",
            "tunnel",
            "--proto",
            "yamux",
            "--tunnel-conns",
            "2",
            "--tunnel-bytes",
            "2MiB",
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("tunnel: 2 parallel TCP connection(s) x 1 MiB")),
            "{out}"
        );
        for lib in [
            "tcp ",
            "braid-yamux ",
            "braid-yamux+psk ",
            "braid-yamux+mtls ",
        ] {
            assert!(
                out.lines().any(|l| l.starts_with(lib)),
                "no row {lib}: {out}"
            );
        }
        let summary = out.lines().find(|l| l.starts_with("summary: ")).unwrap();
        assert!(
            summary.contains("tunnel >= ") && summary.contains("authentication costs <= "),
            "{out}"
        );
        let (code, _, err) = braid(&["bench", "--workload", "tunnel", "--tunnel-conns", "0"]).await;
        assert_eq!(
            (code, err.as_str()),
            (1, "braid: --tunnel-conns: each count must be >= 1\n")
        );
    })
    .await;
}

/// A tunnel that cannot start is a failed run whose error says which process and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_process_that_cannot_start_is_a_one_line_failure() {
    bounded(async {
        let args = [
            "bench-child",
            "--lib",
            "braid-smux1",
            "--workload",
            "tunnel",
            "--bytes",
            "1000",
        ];
        let (code, out, err) = run_braid(&args, &[("BRAID_BENCH_TUNNEL_FLAGS", "--bogus")]).await;
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], false, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.starts_with("the braid server did not start listening (exit status: 2): error: ")
                && e.contains("--bogus")
                && !e.contains('\n'),
            "{e}"
        );
        let (_, out, _) =
            braid(&["bench-child", "--lib", "go-smux1", "--workload", "tunnel"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"], "no Go tunnel (--go-peer)", "{v}");
    })
    .await;
}
