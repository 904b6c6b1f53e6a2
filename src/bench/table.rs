//! The bench's results as a table for the terminal.

use super::{Results, Throughput};
use std::fmt::Write as _;

/// The results as a table for the terminal.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    setup(&mut s, r);
    throughput(&mut s, r);
    changelog(&mut s, r);
    latency(&mut s, r);
    state_size(&mut s, r);
    s
}

/// The machine and the run's settings.
fn setup(s: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(
        s,
        "\nmachine: {} cores, {}, {} GiB, Linux {}{}",
        m.cores,
        m.cpu,
        m.memory_bytes >> 30,
        m.kernel,
        m.busy_cores_before.map_or_else(String::new, |b| format!("; {b:.2} cores busy before the run"))
    );
    let _ = writeln!(
        s,
        "settings: {} events, {} partitions, commit interval {} ms, max batch {}, sync WAL {}",
        r.settings.events,
        r.settings.partitions,
        r.settings.commit_interval_ms,
        r.settings.max_batch,
        r.settings.sync_wal
    );
}

/// The median round's runs (each round's are in the progress before the
/// table), the partition scaling runs, and the ratio.
fn throughput(s: &mut String, r: &Results) {
    let _ = writeln!(
        s,
        "\n{:<10} {:>10} {:>12} {:>10} {:>14} {:>10}",
        "run", "partitions", "events/s", "seconds", "peak RSS MiB", "CPU s/M"
    );
    let mut row = |t: &Throughput, label: &str| {
        let _ = writeln!(
            s,
            "{label:<10} {:>10} {:>12.0} {:>10.2} {:>14} {:>10.2}",
            t.partitions,
            t.events_per_second,
            t.seconds,
            t.peak_rss_bytes >> 20,
            t.cpu_seconds_per_million_events
        );
    };
    row(&r.baseline, "baseline");
    row(&r.accrual, "accrual");
    for (b, a) in &r.scaling_partitions {
        row(b, "baseline");
        row(a, "accrual");
    }
    let each: Vec<f64> = r.rounds.iter().map(|x| x.ratio).collect();
    match of_rounds(&each) {
        Some(rounds) => {
            let _ = writeln!(s, "ratio accrual/baseline: {:.2} ({rounds}; its runs above)", r.ratio);
        }
        None => {
            let _ = writeln!(s, "ratio accrual/baseline: {:.2}", r.ratio);
        }
    }
    without_changelog(s, r);
}

/// "the median of 3 rounds: 0.53, 0.54, 0.51", for more than one round.
fn of_rounds(each: &[f64]) -> Option<String> {
    let list: Vec<String> = each.iter().map(|x| format!("{x:.2}")).collect();
    (list.len() > 1).then(|| format!("the median of {} rounds: {}", list.len(), list.join(", ")))
}

/// With `--changelog`: accrual without it, and the changelog's own cost.
fn without_changelog(s: &mut String, r: &Results) {
    let (Some(w), Some(ratio)) = (&r.accrual_without_changelog, r.changelog_ratio) else { return };
    let each: Vec<f64> = r.rounds.iter().filter_map(|x| x.changelog_ratio).collect();
    let _ = writeln!(
        s,
        "accrual without the changelog: {:.0} events/s, {:.2} CPU s/M; with it over without: {ratio:.2}{}",
        w.events_per_second,
        w.cpu_seconds_per_million_events,
        of_rounds(&each).map_or_else(String::new, |rounds| format!(" ({rounds})"))
    );
}

/// Restore rate and failover times, when measured.
fn changelog(s: &mut String, r: &Results) {
    if let Some(x) = &r.restore {
        let _ = writeln!(
            s,
            "restore from the changelog: {} records ({} MiB) of {} partitions in {:.2} s: {:.0} records/s, {:.1} MiB/s",
            x.records,
            x.bytes >> 20,
            x.partitions,
            x.seconds,
            x.records_per_second,
            x.mib_per_second
        );
    }
    for f in &r.failover {
        let _ = writeln!(
            s,
            "failover, {} standby replicas: {:.1} s from SIGKILL to every partition committing again, the loss noticed by the group after {} (session timeout {} s)",
            f.standby_replicas,
            f.seconds,
            f.noticed(),
            f.session_timeout_ms / 1000
        );
    }
}

/// Latency at each offered rate.
fn latency(s: &mut String, r: &Results) {
    if r.latency.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "latency", "offered/s", "sent/s", "p50 ms", "p99 ms", "max ms"
    );
    for l in &r.latency {
        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>10.0} {:>10.1} {:>10.1} {:>10.1}",
            l.target, l.offered_per_second, l.sent_per_second, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}

/// Throughput, memory and disk at each state size.
fn state_size(s: &mut String, r: &Results) {
    if r.scaling_state.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n{:<12} {:>12} {:>14} {:>14}",
        "accounts", "events/s", "peak RSS MiB", "disk B/account"
    );
    for st in &r.scaling_state {
        let _ = writeln!(
            s,
            "{:<12} {:>12.0} {:>14} {:>14.0}",
            st.accounts,
            st.run.events_per_second,
            st.run.peak_rss_bytes >> 20,
            st.disk_bytes_per_account
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{FailoverRun, Machine, RestoreRun, Round, Settings};

    fn run(target: &str, events_per_second: f64) -> Throughput {
        Throughput {
            target: target.into(),
            partitions: 8,
            events: 1000,
            records: 1700,
            transactions: 10,
            seconds: 1000.0 / events_per_second,
            events_per_second,
            peak_rss_bytes: 300 << 20,
            cpu_seconds: 0.5,
            cpu_seconds_per_million_events: 500.0,
        }
    }

    fn results() -> Results {
        let (baseline, accrual) = (run("baseline", 1000.0), run("accrual", 750.0));
        let round = Round {
            baseline: baseline.clone(),
            accrual: accrual.clone(),
            ratio: 0.75,
            accrual_without_changelog: None,
            changelog_ratio: None,
        };
        Results {
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                memory_bytes: 24 << 30,
                kernel: "6".into(),
                accrual_version: "0".into(),
                build: "release".into(),
                busy_cores_before: Some(0.02),
            },
            settings: Settings {
                brokers: "127.0.0.1:9092".into(),
                events: 1000,
                accounts: 100,
                skew: 0.25,
                partitions: 8,
                rules: "rules.toml".into(),
                commit_interval_ms: 100,
                max_batch: 5000,
                sync_wal: true,
            },
            produce_events_per_second: 2000.0,
            baseline,
            accrual,
            ratio: 0.75,
            accrual_without_changelog: None,
            changelog_ratio: None,
            rounds: vec![round],
            latency: vec![],
            scaling_partitions: vec![],
            scaling_state: vec![],
            restore: None,
            failover: vec![],
        }
    }

    #[test]
    fn the_table_has_both_runs_and_the_ratio_and_no_changelog_lines_without_them() {
        let t = table(&results());
        assert!(t.contains("machine: 2 cores, cpu, 24 GiB, Linux 6; 0.02 cores busy before the run"), "{t}");
        assert!(t.contains("baseline            8         1000"), "{t}");
        assert!(t.contains("accrual             8          750"), "{t}");
        assert!(t.contains("ratio accrual/baseline: 0.75\n"), "{t}");
        assert!(!t.contains("restore") && !t.contains("failover") && !t.contains("latency"), "{t}");
        assert!(!t.contains("changelog"), "{t}");
    }

    #[test]
    fn the_run_without_the_changelog_and_its_ratio_are_printed_when_measured() {
        let mut r = results();
        let without = run("accrual-no-changelog", 900.0);
        r.rounds = [(0.75, 0.83), (0.70, 0.86), (0.80, 0.81)]
            .iter()
            .map(|&(ratio, changelog)| Round {
                ratio,
                accrual_without_changelog: Some(without.clone()),
                changelog_ratio: Some(changelog),
                ..r.rounds[0].clone()
            })
            .collect();
        r.accrual_without_changelog = Some(without);
        r.changelog_ratio = Some(0.83);
        let t = table(&r);
        assert!(
            t.contains("accrual without the changelog: 900 events/s, 500.00 CPU s/M; with it over without: 0.83 (the median of 3 rounds: 0.83, 0.86, 0.81)\n"),
            "{t}"
        );
    }

    #[test]
    fn restore_rate_and_failover_times_are_printed_when_measured() {
        let mut r = results();
        r.restore = Some(RestoreRun {
            partitions: 8,
            records: 1_292_006,
            bytes: 126 << 20,
            seconds: 1.86,
            records_per_second: 694_627.0,
            mib_per_second: 67.7,
        });
        r.failover = vec![FailoverRun {
            standby_replicas: 1,
            session_timeout_ms: 6000,
            seconds: 8.1,
            noticed_seconds: Some(6.0),
        }];
        let t = table(&r);
        assert!(
            t.contains("restore from the changelog: 1292006 records (126 MiB) of 8 partitions in 1.86 s: 694627 records/s, 67.7 MiB/s"),
            "{t}"
        );
        assert!(
            t.contains("failover, 1 standby replicas: 8.1 s from SIGKILL to every partition committing again, the loss noticed by the group after 6.0 s (session timeout 6 s)"),
            "{t}"
        );
    }
}
