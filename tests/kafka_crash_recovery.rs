//! Crashes: the engine is killed with SIGKILL at random moments while it
//! works (5 times; 20 with ACCRUAL_SOAK=1), and at each step of the commit
//! protocol through test-only failpoints. After the final restart the
//! committed output holds every accrual exactly once, balances equal the
//! reference, and every extra copy comes from a transaction that never
//! committed (on a broker that filters aborted transactions, there is none).

mod common;

use accrual::datagen::{self, GenOptions};
use accrual::engine::journal::TxnStatus;
use accrual::engine::report::RunReport;
use common::kafka::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 200,
        seed,
        days: 60,
        start: common::past_start(),
        refund_percent: 4.0,
        reversal_percent: 1.0,
        duplicate_percent: 1.0,
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    datagen::generate(&opts, &mut out).unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
}

/// Runs a final engine to the end, then checks everything. Returns what
/// that run reported.
fn finish_and_verify(setup: &Setup, dir: &Path, config: &Path, lines: &[String]) -> RunReport {
    let mut last = EngineProcess::spawn(config, &[], Some(5));
    let status = last.wait(Duration::from_secs(240));
    assert!(status.success(), "final run failed:\n{}", last.log_text());
    assert!(setup.wait_all_committed(Duration::from_secs(30)), "input not fully committed");
    let state_dir = dir.join("node-1");
    let (reference, reference_accounts) = reference(dir, lines);
    let journal = journal(&state_dir);
    assert!(journal.values().all(|s| *s != TxnStatus::Open), "every transaction decided");
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal);
    assert!(
        engine_accounts(&state_dir, setup.partitions) == reference_accounts,
        "balances differ from the reference"
    );
    last.report()
}

/// Starts the engine `kills` times, each killed with SIGKILL at a random
/// moment after it has its partitions, while the input arrives in chunks;
/// the rest of the input is produced after the last kill.
fn kill_while_working(setup: &Setup, dir: &Path, config: &Path, lines: &[String], kills: usize, seed: u64) {
    eprintln!("crash test: {kills} kills, ACCRUAL_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let chunk = lines.len().div_ceil(kills + 1);
    let mut chunks = lines.chunks(chunk);
    for kill in 0..kills {
        if let Some(part) = chunks.next() {
            setup.produce(dir, part);
        }
        let mut engine = EngineProcess::spawn(config, &[], None);
        // Kill while it works: after it has its partitions, at a random moment.
        let joined = std::time::Instant::now();
        while !engine.log_text().contains("partition assigned") && joined.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let delay = 20 + rng.next(1_200);
        std::thread::sleep(Duration::from_millis(delay));
        engine.kill();
        eprintln!("kill {} {delay} ms after assignment; lag {:?}", kill + 1, setup.lag());
    }
    for part in chunks {
        setup.produce(dir, part);
    }
}

#[test]
fn random_sigkills_lose_nothing_and_double_nothing() {
    let kills = if soak() { 20 } else { 5 };
    let seed = crash_seed();
    let setup = Setup::new("crash", 4);
    let dir = tempfile::tempdir().unwrap();
    let lines = events(if soak() { 30_000 } else { 9_000 }, seed % 1000);
    let config = setup.config(dir.path(), "node-1", "max_batch = 120");
    kill_while_working(&setup, dir.path(), &config, &lines, kills, seed);
    let report = finish_and_verify(&setup, dir.path(), &config, &lines);
    let statuses = journal(&dir.path().join("node-1"));
    eprintln!(
        "transactions: {} committed, {} aborted; final run: {report:?}",
        statuses.values().filter(|s| **s == TxnStatus::Committed).count(),
        statuses.values().filter(|s| **s == TxnStatus::Aborted).count(),
    );
}

/// The instance's disk is lost after the crashes: the changelog alone
/// gives its state back, byte for byte: the changes crashed transactions
/// published again as they were applied, and none of a batch that never
/// committed (which a broker that shows aborted transactions still shows).
fn assert_the_changelog_restores_the_state(setup: &Setup, dir: &Path, config: &Path) {
    let state = dir.join("node-1");
    let entries = stored_entries(&state, setup.partitions);
    assert!(entries.len() > 100, "only {} state entries: the test would prove little", entries.len());
    std::fs::remove_dir_all(&state).unwrap();
    let mut engine = EngineProcess::spawn(config, &[], Some(3));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    let report = engine.report();
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}");
    assert_eq!(report.events, 0, "restoring processes nothing: {report:?}");
    let left_out = engine.log_text().lines().filter(|l| l.contains("left out changelog batches")).count();
    eprintln!("partitions whose restore left out batches that never committed: {left_out}");
    let restored = stored_entries(&state, setup.partitions);
    assert_same_entries(&entries, &restored, "the changelog restores other state than the instance had");
}

#[test]
fn random_sigkills_with_the_changelog_on_leave_a_changelog_that_restores_the_same_state() {
    let kills = if soak() { 10 } else { 3 };
    let seed = crash_seed();
    let setup = Setup::new("crash-changelog", 3).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(if soak() { 15_000 } else { 4_500 }, seed % 1000);
    let config = setup.config(dir.path(), "node-1", "max_batch = 120");
    kill_while_working(&setup, dir.path(), &config, &lines, kills, seed);
    finish_and_verify(&setup, dir.path(), &config, &lines);
    assert_the_changelog_restores_the_state(&setup, dir.path(), &config);
}

/// A topic of 3 partitions holding 3,000 generated events, and an engine
/// config over it with small cycles (so a run has many transactions).
struct Prepared {
    setup: Setup,
    dir: tempfile::TempDir,
    lines: Vec<String>,
    config: PathBuf,
}

fn prepared(name: &str, seed: u64) -> Prepared {
    prepared_on(Setup::new(name, 3), seed)
}

fn prepared_on(setup: Setup, seed: u64) -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let lines = events(3_000, seed);
    setup.produce(dir.path(), &lines);
    let config = setup.config(dir.path(), "node-1", "max_batch = 250");
    Prepared { setup, dir, lines, config }
}

/// Crashes at one step of the protocol, then restarts and verifies.
/// Returns what the restart reported.
fn crash_at(point: &str, name: &str) -> RunReport {
    crash_on(prepared(name, 17), point).0
}

/// Crashes the prepared engine at `point`, then restarts and verifies.
/// Returns what the restart reported, and what was prepared.
fn crash_on(prepared: Prepared, point: &str) -> (RunReport, Prepared) {
    let Prepared { setup, dir, lines, config } = &prepared;
    assert_aborted(&mut EngineProcess::spawn(config, &[("ACCRUAL_FAILPOINT", point)], None));
    let report = finish_and_verify(setup, dir.path(), config, lines);
    // The crash left a transaction open; the restart decided it.
    assert!(!report.resolved.is_empty(), "{report:?}");
    (report, prepared)
}

/// The same with the changelog on; then the changelog alone must restore
/// the state the restart left.
fn crash_with_the_changelog_at(point: &str, name: &str) -> RunReport {
    let (report, Prepared { setup, dir, config, .. }) =
        crash_on(prepared_on(Setup::new(name, 3).with_changelog(), 17), point);
    assert_the_changelog_restores_the_state(&setup, dir.path(), &config);
    report
}

/// The statuses the start decided, in the journal's order.
fn decided(report: &RunReport) -> Vec<&str> {
    report.resolved.iter().map(|r| r.status.as_str()).collect()
}

#[test]
fn crash_between_rocksdb_and_kafka_commit_republishes_exactly_once() {
    let report = crash_at("after-state-commit:3", "crash-state");
    assert!(report.recoveries > 0, "{report:?}");
    assert!(decided(&report).contains(&"aborted"), "{report:?}");
}

#[test]
fn with_the_changelog_a_crash_between_rocksdb_and_kafka_commit_publishes_the_same_changes_again() {
    let report = crash_with_the_changelog_at("after-state-commit:3", "crash-state-changelog");
    assert!(report.recoveries > 0, "{report:?}");
    assert!(decided(&report).contains(&"aborted"), "{report:?}");
}

#[test]
fn with_the_changelog_two_open_transactions_are_decided_and_their_changes_published_once() {
    let report = crash_with_the_changelog_at("after-previous-kafka-commit:2", "crash-two-open-changelog");
    assert_eq!(decided(&report), ["committed", "aborted"], "{report:?}");
    assert!(report.recoveries > 0, "{report:?}");
}

#[test]
fn crash_after_producing_before_commit_publishes_again() {
    let report = crash_at("before-kafka-commit:2", "crash-open");
    assert!(report.recoveries > 0, "{report:?}");
}

#[test]
fn crash_after_kafka_commit_is_resolved_from_the_offsets() {
    let report = crash_at("after-kafka-commit:2", "crash-committed");
    assert_eq!(decided(&report)[0], "committed", "{report:?}");
    // The next cycle may have committed its state meanwhile (its entry open
    // too): then it never committed in Kafka, and is published again.
    let next_written = decided(&report).contains(&"aborted");
    assert_eq!(report.recoveries > 0, next_written, "{report:?}");
}

#[test]
fn crash_with_two_open_transactions_decides_each_from_the_offsets() {
    // Dies once a transaction has committed in Kafka while the next cycle's
    // state (and journal entry) was written before it ended.
    let report = crash_at("after-previous-kafka-commit:2", "crash-two-open");
    assert_eq!(
        decided(&report),
        ["committed", "aborted"],
        "the older one committed, the newer did not: {report:?}"
    );
    assert!(report.recoveries > 0, "{report:?}");
}

#[test]
fn a_failed_kafka_commit_is_aborted_and_published_again() {
    // The third commit fails slowly (as a timeout would), so the next
    // cycle's state is committed before the failure is known; the failed
    // transaction's outbox goes out again first, then the next cycle's.
    let Prepared { setup, dir, lines, config } = prepared("commit-fails", 23);
    let mut engine = EngineProcess::spawn(&config, &[("ACCRUAL_FAILPOINT", "fail-kafka-commit:3")], Some(5));
    let status = engine.wait(Duration::from_secs(240));
    assert!(status.success(), "{}", engine.log_text());
    let report = engine.report();
    assert_eq!(report.aborted, 1, "{report:?}");
    assert!(report.recoveries > 0, "{report:?}");
    let statuses = journal(&dir.path().join("node-1"));
    assert_eq!(statuses.values().filter(|s| **s == TxnStatus::Aborted).count(), 1, "{statuses:?}");
    assert!(statuses.values().all(|s| *s != TxnStatus::Open), "{statuses:?}");
    finish_and_verify(&setup, dir.path(), &config, &lines);
}

#[test]
fn a_failed_commit_is_recorded_before_its_partitions_can_move() {
    // The commit's thread records a failure itself, before the rebalance
    // callback could hand the partitions to another instance: dying right
    // after leaves it `aborted`, not open for the offsets to decide.
    let Prepared { setup, dir, lines, config } = prepared("failed-recorded", 29);
    let points = "fail-kafka-commit:3,after-recording-a-failed-commit";
    assert_aborted(&mut EngineProcess::spawn(&config, &[("ACCRUAL_FAILPOINT", points)], None));
    // The third transaction of the first epoch failed.
    let state_dir = dir.path().join("node-1");
    let first_epoch =
        journal(&state_dir).keys().filter_map(|id| id.split(':').nth(1)?.parse::<u64>().ok()).min();
    let failed = format!("node-1:{}:2", first_epoch.expect("a transaction"));
    let failed = failed.as_str();
    assert_eq!(journal(&state_dir).get(failed), Some(&TxnStatus::Aborted), "{:?}", journal(&state_dir));
    let report = finish_and_verify(&setup, dir.path(), &config, &lines);
    assert!(report.resolved.iter().all(|r| r.txn != failed), "decided again at the restart: {report:?}");
    assert!(report.recoveries > 0, "{report:?}");
}
