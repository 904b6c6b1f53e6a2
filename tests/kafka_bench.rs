//! `accrual bench` end to end, small: against the real broker, every part
//! of the benchmark runs (baseline, accrual, latency, both scaling curves)
//! and its JSON says what the runs did. Timings are reported, not checked.

mod common;

use common::kafka::brokers;
use common::repo_path;
use serde_json::Value;
use std::process::Command;

#[test]
fn bench_runs_every_part_and_reports_consistent_numbers() {
    let work = tempfile::tempdir().unwrap();
    let args = "--events 3000 --accounts 300 --partitions 4 --rounds 2 --latency-rates 300,600 \
                --latency-seconds 2 --scaling --scaling-partitions 1,2 --scaling-accounts 2000 \
                --scaling-events 1500";
    let (stdout, r) = bench(work.path(), &args.split_whitespace().collect::<Vec<_>>());
    assert!(stdout.contains("ratio accrual/baseline:"), "{stdout}");

    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    for target in ["baseline", "accrual"] {
        let t = &r[target];
        assert_eq!(t["events"], 3000, "{target}: {t}");
        assert_eq!(t["partitions"], 4);
        assert!(num(t, "events_per_second") > 0.0);
        assert!(num(t, "peak_rss_bytes") > 1e6, "{target}: {t}");
        assert!(num(t, "cpu_seconds") > 0.0);
        let per_million = num(t, "cpu_seconds") * 1e6 / 3000.0;
        assert!((num(t, "cpu_seconds_per_million_events") - per_million).abs() < 1e-6 * per_million.max(1.0));
    }
    // The baseline copies each event once; accrual makes records from most.
    assert_eq!(r["baseline"]["records"], 3000);
    assert!(num(&r["accrual"], "records") > 1000.0);
    let ratio = num(&r["accrual"], "events_per_second") / num(&r["baseline"], "events_per_second");
    assert!((num(&r, "ratio") - ratio).abs() < 1e-9);
    // Two rounds over the same events, each with both targets; the ratio
    // reported is one of theirs (the lower, for two).
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    for round in rounds {
        assert_eq!(round["baseline"]["events"], 3000);
        assert_eq!(round["accrual"]["events"], 3000);
        assert_eq!(round["baseline"]["records"], 3000, "the baseline copies every event once");
        let each = num(&round["accrual"], "events_per_second") / num(&round["baseline"], "events_per_second");
        assert!((num(round, "ratio") - each).abs() < 1e-9);
    }
    let lower = num(&rounds[0], "ratio").min(num(&rounds[1], "ratio"));
    assert!((num(&r, "ratio") - lower).abs() < 1e-9);
    assert!(stdout.contains("the median of 2 rounds"), "{stdout}");
    // Without --changelog, no run without it either.
    assert!(r["accrual_without_changelog"].is_null() && r["changelog_ratio"].is_null(), "{r}");
    assert!(!stdout.contains("accrual without the changelog"), "{stdout}");
    // The machine's load before the rounds, measured (not asserted low:
    // the suite's other tests share the machine).
    assert!(num(&r["machine"], "busy_cores_before") >= 0.0, "{}", r["machine"]);

    let latency = r["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 4, "two targets at two rates: {latency:?}");
    for l in latency {
        assert!(num(l, "sent") > 0.0 && num(l, "matched") > 0.0, "{l}");
        assert!(num(l, "matched") <= num(l, "sent"));
        assert!(num(l, "p50_ms") <= num(l, "p99_ms") && num(l, "p99_ms") <= num(l, "max_ms"), "{l}");
        assert!(num(l, "p50_ms") > 0.0);
    }
    // The passthrough answers every event; accrual all but those without effect.
    let baseline_latency = latency.iter().find(|l| l["target"] == "baseline").unwrap();
    assert_eq!(baseline_latency["matched"], baseline_latency["sent"]);

    let partitions = r["scaling_partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    for (pair, p) in partitions.iter().zip([1, 2]) {
        assert_eq!(pair[0]["target"], "baseline");
        assert_eq!(pair[1]["target"], "accrual");
        assert_eq!(pair[1]["partitions"], p);
        assert_eq!(pair[1]["events"], 1500);
    }
    let state = &r["scaling_state"].as_array().unwrap()[0];
    assert_eq!(state["accounts"], 2000);
    assert_eq!(state["run"]["events"], 1500);
    assert!(num(state, "disk_bytes_per_account") > 10.0, "{state}");
    assert!(work.path().join("work").exists());
}

/// `accrual bench --changelog --failover` reports the ratio with the
/// changelog on, the restore rate, and failover with and without a
/// standby, timed from the kill (so never under the session timeout the
/// group needs to notice it).
#[test]
fn bench_with_the_changelog_reports_restore_and_failover() {
    let work = tempfile::tempdir().unwrap();
    let args = "--changelog --failover --events 4000 --accounts 400 --partitions 4 --latency-seconds 0";
    let (stdout, r) = bench(work.path(), &args.split_whitespace().collect::<Vec<_>>());
    for line in [
        "ratio accrual/baseline:",
        "accrual without the changelog:",
        "restore from the changelog:",
        "failover, 0 standby",
        "failover, 1 standby",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }

    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    // The changelog's own cost: accrual again without it, same events.
    let without = &r["accrual_without_changelog"];
    assert_eq!(without["target"], "accrual-no-changelog", "{without}");
    assert_eq!(without["events"], r["accrual"]["events"], "{without}");
    let expected = num(&r["accrual"], "events_per_second") / num(without, "events_per_second");
    assert!((num(&r, "changelog_ratio") - expected).abs() < 1e-9, "{r}");
    let restore = &r["restore"];
    assert_eq!(restore["partitions"], 4, "{restore}");
    // At least an account state and a progress record per partition.
    assert!(num(restore, "records") > 400.0, "{restore}");
    assert!(num(restore, "seconds") > 0.0 && num(restore, "records_per_second") > 0.0, "{restore}");
    let failover = r["failover"].as_array().unwrap();
    assert_eq!(failover.len(), 2, "{failover:?}");
    for (run, standbys) in failover.iter().zip([0, 1]) {
        assert_eq!(run["standby_replicas"], standbys);
        let timeout = num(run, "session_timeout_ms") / 1000.0;
        let (noticed, seconds) = (num(run, "noticed_seconds"), num(run, "seconds"));
        assert!(noticed >= timeout * 0.9, "the loss noticed before the session timeout: {run}");
        assert!(seconds > noticed && seconds < 120.0, "{run}");
    }
}

/// Runs `accrual bench` on the test broker with `args`, in `work`; returns
/// its output and its results file.
fn bench(work: &std::path::Path, args: &[&str]) -> (String, Value) {
    let out = work.join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_accrual"))
        .current_dir(repo_path(""))
        .args(["bench", "--brokers", &brokers()])
        .args(args)
        .arg("--work-dir")
        .arg(work.join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    (stdout, serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap())
}
