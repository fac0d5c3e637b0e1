//! The short soak run for CI: about ten seconds of random stream operations and session
//! drops over smux v1, smux v2 and yamux at once (`cargo test -p braid-soak`). The
//! library asserts everything it checks (see `soak/README.md`); this test also checks
//! the report, so that a soak that quietly did nothing cannot pass.

use braid::Protocol;
use braid_soak::{OpKind, Options};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_soak_over_every_protocol() {
    let opts = Options {
        duration: Duration::from_secs(7),
        seed: 0x5EED_0001,
        concurrency: 3,
        // Debug builds of braid are slow: keep transfers to 1 MiB.
        max_transfer: 1 << 20,
        op_timeout: Duration::from_secs(30),
        progress_interval: Duration::from_secs(2),
        ..Options::default()
    };
    let report = match braid_soak::run_with_progress(opts, |p| eprintln!("{p}")).await {
        Ok(report) => report,
        Err(e) => panic!("{e}"),
    };
    eprintln!("{report}");

    assert_eq!(
        report.protocols,
        [Protocol::SmuxV1, Protocol::SmuxV2, Protocol::Yamux]
    );
    assert_eq!(report.per_protocol.len(), 3);
    for (protocol, t) in &report.per_protocol {
        let name = braid_soak::protocol_name(*protocol);
        for kind in OpKind::ALL {
            assert!(
                t.ops_of(kind) > 0,
                "{name}: no {kind} operation completed: {t}"
            );
        }
        assert!(t.session_drops >= 1, "{name}: no session drop: {t}");
        assert!(t.bytes_verified > 0, "{name}: nothing verified: {t}");
        assert!(t.streams_accepted > 0, "{name}: nothing accepted: {t}");
        assert_eq!(t.ops_failed, 0, "{name}: {t}");
    }
    assert_eq!(report.streams_left, 0);
    assert_eq!(report.tasks_spawned, report.tasks_finished);
    if let Some(growth) = report.rss_growth() {
        assert!(growth <= report.rss_limit as i64, "{report}");
    }
}
