//! Rules versions loaded by a running engine (issue 30, item 2), against
//! the broker: a version whose instant some partition has already passed
//! is refused on SIGHUP and the running rules stay; one ahead of every
//! partition is taken between two cycles; the engine is killed in the
//! middle and restarted, and a third version arrives by the file watcher.
//! The read_committed output holds every accrual exactly once and equals
//! `simulate` over the same input with the final rules directory: each
//! event under the version in force at its own time, late ones included.
//!
//! The instants lie in November 2026, inside the generated month: the
//! broker refuses messages stamped far ahead of its clock, so a version
//! dated in the future could not be exercised on every day the suite runs
//! (`tests/rules_versions.rs` runs 2027-01-01 through `simulate`).

mod common;

use accrual::rules::Timeline;
use common::kafka::{EngineProcess, Setup, assert_exactly_once, journal, reference_with_rules};
use common::{generated_lines, repo_path};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const SECOND: &str = "2026-11-16T00:00:00";
const ADDRESS: &str = "127.0.0.1:19483";
const THIRD: &str = "2026-11-26T00:00:00";

/// The example program with groceries at `percent`, in force from `from`.
fn version(percent: &str, from: &str) -> String {
    let base = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    let changed = base
        .replacen("effect = { percent = \"5\" }", &format!("effect = {{ percent = \"{percent}\" }}"), 1)
        .replacen("[settings]\n", &format!("[settings]\neffective_from = \"{from}\"\n"), 1);
    assert_ne!(changed, base);
    changed
}

fn occurred_at(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap_or_default();
    let text = v["occurred_at"].as_str().unwrap_or_default();
    accrual::time::Timestamp::parse_rfc3339(text).map(|t| t.to_string()).unwrap_or_default()
}

fn utc(local: &str) -> String {
    accrual::time::Timestamp::parse_rfc3339(&format!("{local}+03:00")).unwrap().to_string()
}

fn wait_for_log(engine: &EngineProcess, text: &str, count: usize) {
    let started = Instant::now();
    while engine.log_text().matches(text).count() < count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {text:?} in the log:\n{}",
            engine.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hangup(engine: &EngineProcess) {
    let status = std::process::Command::new("kill").arg("-HUP").arg(engine.child.id().to_string()).status();
    assert!(status.unwrap().success());
}

#[test]
fn versions_loaded_while_running_apply_from_their_instants_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new("rules-reload", 3);
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(repo_path("config/rules.example.toml"), rules.join("base.toml")).unwrap();

    let opts = accrual::datagen::GenOptions { events: 6000, accounts: 200, seed: 11, ..Default::default() };
    let mut lines = generated_lines(&opts);
    lines.sort_by_key(|l| occurred_at(l));
    let (second, third) = (utc(SECOND), utc(THIRD));
    // Before the second version's instant; of those from November 15th,
    // every tenth is held back and arrives late, after the restart.
    let (before, after): (Vec<String>, Vec<String>) =
        lines.into_iter().partition(|l| occurred_at(l) < second);
    let late_from = utc("2026-11-15T00:00:00");
    let (mut on_time, mut late) = (Vec::new(), Vec::new());
    for (i, line) in before.into_iter().enumerate() {
        if occurred_at(&line) >= late_from && i % 10 == 0 { late.push(line) } else { on_time.push(line) }
    }
    let middle = after.iter().position(|l| occurred_at(l) >= utc("2026-11-21T00:00:00")).unwrap();
    let (until_kill, rest) = after.split_at(middle);
    let rest_before_third = rest.iter().position(|l| occurred_at(l) >= utc("2026-11-23T00:00:00")).unwrap();
    let (rest_early, rest_late) = rest.split_at(rest_before_third);
    assert!(!late.is_empty() && !rest_late.is_empty());

    // Run 1: reloads on SIGHUP only; its metrics count them.
    let http = format!("[http]\nlisten = \"{ADDRESS}\"\n");
    let config = setup.config_full(
        dir.path(),
        "node-1",
        "rules_check_interval_ms = 0",
        rules.to_str().unwrap(),
        &http,
    );
    let mut engine = EngineProcess::spawn(&config, &[], None);
    setup.produce(dir.path(), &on_time);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "{}", engine.log_text());

    // Behind the partitions' stream time (mid-November 15th): refused.
    std::fs::write(rules.join("too-late.toml"), version("7", "2026-11-10T00:00:00")).unwrap();
    hangup(&engine);
    wait_for_log(&engine, "rules reload refused", 1);
    let log = engine.log_text();
    assert!(
        log.contains("differ from those applied from 2026-11-10T00:00:00+03:00 on, but partition"),
        "{log}"
    );
    std::fs::remove_file(rules.join("too-late.toml")).unwrap();

    // Ahead of every partition: taken between two cycles.
    std::fs::write(rules.join("groceries-3.toml"), version("3", SECOND)).unwrap();
    hangup(&engine);
    wait_for_log(&engine, "rules reloaded", 1);
    setup.produce(dir.path(), until_kill);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "{}", engine.log_text());
    let (status, text) = common::http::get(ADDRESS, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let reloads = |result: &str| {
        common::http::metric(&text, "accrual_rules_reloads_total", &[&format!("result=\"{result}\"")])
    };
    assert_eq!(
        (reloads("refused"), reloads("applied"), reloads("invalid")),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    let second_version = Timeline::load(&rules).unwrap().versions()[1].rules.version.to_string();
    let info = [format!("version=\"{second_version}\""), format!("effective_from=\"{}\"", utc(SECOND))];
    assert_eq!(common::http::metric(&text, "accrual_rules_info", &[&info[0], &info[1]]), Some(1.0), "{text}");
    engine.kill();

    // Run 2: the same state, watching the files.
    let config = setup.config_with_rules(
        dir.path(),
        "node-1",
        "rules_check_interval_ms = 200",
        rules.to_str().unwrap(),
    );
    let mut engine = EngineProcess::spawn(&config, &[], None);
    setup.produce(dir.path(), &late);
    setup.produce(dir.path(), rest_early);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "{}", engine.log_text());
    std::fs::write(rules.join("groceries-4.toml"), version("4", THIRD)).unwrap();
    wait_for_log(&engine, "rules reloaded", 1);
    setup.produce(dir.path(), rest_late);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "{}", engine.log_text());
    engine.terminate();
    engine.wait(Duration::from_secs(60));

    // The reference: every line in the order produced, final rules.
    let produced: Vec<String> =
        [on_time.as_slice(), until_kill, late.as_slice(), rest_early, rest_late].concat();
    let (reference, _) = reference_with_rules(dir.path(), &produced, rules.to_str().unwrap());
    let published = setup.read(&setup.accruals);
    assert_exactly_once(&published, &reference, &journal(&dir.path().join("node-1")));

    // Each record under the version in force at its event's time.
    let timeline = Timeline::load(&rules).unwrap();
    let hashes: Vec<String> = timeline.versions().iter().map(|v| v.rules.version.to_string()).collect();
    let mut seen = [0usize; 3];
    let mut late_records = 0;
    let late_ids: Vec<String> =
        late.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].to_string()).collect();
    for line in &reference {
        let r: Value = serde_json::from_str(line).unwrap();
        let at = r["occurred_at"].as_str().unwrap();
        let expected = if at >= third.as_str() {
            2
        } else if at >= second.as_str() {
            1
        } else {
            0
        };
        assert_eq!(r["rules_version"], hashes[expected].as_str(), "{line}");
        seen[expected] += 1;
        late_records += usize::from(late_ids.contains(&r["source_event_id"].to_string()));
    }
    assert!(seen.iter().all(|&n| n > 0), "records under every version: {seen:?}");
    assert!(late_records > 0, "late events were accrued under the first version");

    // Editing a version already applied is refused at start, too.
    let base = std::fs::read_to_string(rules.join("base.toml")).unwrap();
    std::fs::write(rules.join("base.toml"), base.replacen("percent = \"5\"", "percent = \"9\"", 1)).unwrap();
    let mut engine = EngineProcess::spawn(&config, &[], None);
    let status = engine.wait(Duration::from_secs(60));
    let log = engine.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("differ from those applied from the beginning on, but partition"), "{log}");
}

/// A partition's state records the rules it was processed under, and
/// travels with it through the changelog: an instance that has not read a
/// version the previous owner applied refuses the partition instead of
/// computing its next events under other rules, and takes it up once it
/// reads the version.
#[test]
fn a_partition_processed_under_a_version_this_instance_lacks_is_refused_until_it_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new("rules-partition", 2).with_changelog();
    let with_version = dir.path().join("with-version");
    let without = dir.path().join("without");
    for rules in [&with_version, &without] {
        std::fs::create_dir(rules).unwrap();
        std::fs::copy(repo_path("config/rules.example.toml"), rules.join("base.toml")).unwrap();
    }
    std::fs::write(with_version.join("groceries-3.toml"), version("3", SECOND)).unwrap();
    let opts = accrual::datagen::GenOptions { events: 2000, accounts: 100, seed: 12, ..Default::default() };
    let mut lines = generated_lines(&opts);
    lines.sort_by_key(|l| occurred_at(l));
    let (first, second) = lines.split_at(1500);
    setup.produce(dir.path(), first);

    let config = |instance: &str, rules: &Path| {
        setup.config_with_rules(dir.path(), instance, "", rules.to_str().unwrap())
    };
    let mut a = EngineProcess::spawn(&config("node-a", &with_version), &[], Some(3));
    assert!(a.wait(Duration::from_secs(120)).success(), "{}", a.log_text());

    // node-b lacks the version node-a applied past its instant.
    let mut b = EngineProcess::spawn(&config("node-b", &without), &[], None);
    wait_for_log(&b, "partition refused: its state was processed by instance \"node-a\"", 2);
    let log = b.log_text();
    assert!(
        log.contains("under rules that differ from this instance's from 2026-11-16T00:00:00+03:00 on"),
        "{log}"
    );
    setup.produce(dir.path(), second);
    std::thread::sleep(Duration::from_secs(2));
    assert!(setup.lag().unwrap_or(0) > 0, "refused partitions are not processed");

    // Given the version, it takes them up.
    std::fs::write(without.join("groceries-3.toml"), version("3", SECOND)).unwrap();
    hangup(&b);
    wait_for_log(&b, "rules reloaded", 1);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "{}", b.log_text());
    b.terminate();
    b.wait(Duration::from_secs(60));
    let (reference, _) = reference_with_rules(dir.path(), &lines, with_version.to_str().unwrap());
    let published = setup.read(&setup.accruals);
    let mut txns = journal(&dir.path().join("node-a"));
    txns.extend(journal(&dir.path().join("node-b")));
    assert_exactly_once(&published, &reference, &txns);
}
