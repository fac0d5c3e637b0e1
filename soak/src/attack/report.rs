//! Outcomes of the attacks: a table for people, JSON for programs.

use serde::Serialize;
use std::fmt::Write;

/// What the server cost during one attack (from /proc).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// VmRSS before the attack, MiB.
    pub rss_base_mib: f64,
    /// VmHWM at the end: the peak RSS of the server's life (one server per attack), MiB.
    pub rss_peak_mib: f64,
    /// VmRSS when the attack ended (attacker still connected), MiB.
    pub rss_end_mib: f64,
    /// VmRSS 1 s after the attacker disconnected (the target still as it was), MiB.
    pub rss_after_mib: f64,
    /// Open fds before.
    pub fds_base: u64,
    /// Most open fds seen (sampled every 100 ms).
    pub fds_peak: u64,
    /// Open fds 1 s after the attacker disconnected.
    pub fds_after: u64,
    /// CPU seconds (user + system) the server spent during the attack.
    pub cpu_s: f64,
}

/// One bound an attack checks.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name, stable (tests look checks up by it).
    pub name: String,
    /// The bound.
    pub limit: String,
    /// What was measured.
    pub value: String,
    /// Whether the bound held.
    pub pass: bool,
}

impl Check {
    /// A check.
    pub fn new(
        name: &str,
        limit: impl Into<String>,
        value: impl Into<String>,
        pass: bool,
    ) -> Check {
        Check {
            name: name.into(),
            limit: limit.into(),
            value: value.into(),
            pass,
        }
    }
}

/// The result of one attack.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Attack name.
    pub attack: String,
    /// Extra flags the server ran with.
    pub server_args: Vec<String>,
    /// What the attacker did.
    pub did: String,
    /// Seconds the attack took.
    pub secs: f64,
    /// Server costs (absent without a pid).
    pub stats: Option<Stats>,
    /// Probes during the attack that echoed.
    pub probes_ok: u32,
    /// Probes during the attack that did not.
    pub probes_failed: u32,
    /// The first failed probe's error.
    pub probe_error: Option<String>,
    /// Slowest successful probe during the attack, ms.
    pub probe_slowest_ms: f64,
    /// Whether a fresh client was served after the attack.
    pub after_ok: bool,
    /// Why not.
    pub after_error: Option<String>,
    /// Whether the server process was still running at the end.
    pub server_alive: bool,
    /// The attack's checks, then "served during" and "served after".
    pub checks: Vec<Check>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
    /// Not run (the reason is in the notes).
    pub skipped: bool,
    /// Churn: (streams done, RSS MiB, CPU s) every sampling step.
    pub series: Vec<(u64, f64, f64)>,
}

impl Outcome {
    pub(crate) fn new(attack: &str, args: &[String]) -> Outcome {
        Outcome {
            attack: attack.into(),
            server_args: args.to_vec(),
            did: String::new(),
            secs: 0.0,
            stats: None,
            probes_ok: 0,
            probes_failed: 0,
            probe_error: None,
            probe_slowest_ms: 0.0,
            after_ok: false,
            after_error: None,
            server_alive: true,
            checks: Vec::new(),
            notes: Vec::new(),
            skipped: false,
            series: Vec::new(),
        }
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// A markdown table of the outcomes, then each attack's checks and notes.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    s.push_str("| attack | what the attacker did | s | peak RSS MiB (base, end, after) | fds peak (base, after) | CPU s | normal client during / after |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for o in outcomes {
        if o.skipped {
            let _ = writeln!(s, "| {} | skipped | | | | | |", o.attack);
            continue;
        }
        let (rss, fds, cpu) = match &o.stats {
            Some(st) => (
                format!(
                    "**{:.0}** ({:.0}, {:.0}, {:.0})",
                    st.rss_peak_mib, st.rss_base_mib, st.rss_end_mib, st.rss_after_mib
                ),
                format!("{} ({}, {})", st.fds_peak, st.fds_base, st.fds_after),
                format!("{:.1}", st.cpu_s),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let during = if o.probes_failed == 0 && o.probes_ok > 0 {
            format!("{}/{} ok", o.probes_ok, o.probes_ok)
        } else {
            format!(
                "**{}/{} failed**",
                o.probes_failed,
                o.probes_ok + o.probes_failed
            )
        };
        let after = if o.after_ok { "ok" } else { "**failed**" };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {} | {} | {} / {} |",
            o.attack, o.did, o.secs, rss, fds, cpu, during, after
        );
    }
    s.push('\n');
    for o in outcomes {
        let _ = writeln!(s, "{}:", o.attack);
        for c in &o.checks {
            let verdict = if c.pass { "ok  " } else { "FAIL" };
            let _ = writeln!(
                s,
                "  {verdict} {}: {} (bound: {})",
                c.name, c.value, c.limit
            );
        }
        for n in &o.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    s
}
