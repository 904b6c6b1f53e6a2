//! The state changelog: every change of a partition's state published in
//! the transaction that commits its inputs, and a lost state directory
//! restored from it, with the same balances and the same later output.

mod common;

use accrual::datagen::GenOptions;
use accrual::engine::journal::TxnStatus;
use common::kafka::*;
use std::time::Duration;

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 300,
        seed,
        days: 60,
        start: common::past_start(),
        refund_percent: 4.0,
        reversal_percent: 1.0,
        duplicate_percent: 2.0,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

fn run_until_idle(config: &std::path::Path) -> accrual::engine::RunSummary {
    run_until_idle_with(config, &[], 3)
}

/// The same with environment variables set, stopping after `idle` seconds
/// without input.
fn run_until_idle_with(
    config: &std::path::Path,
    env: &[(&str, &str)],
    idle: u64,
) -> accrual::engine::RunSummary {
    let mut engine = EngineProcess::spawn(config, env, Some(idle));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    engine.report()
}

/// Runs until idle; its log and report.
fn run_logged(config: &std::path::Path) -> (String, accrual::engine::RunSummary) {
    let mut engine = EngineProcess::spawn(config, &[], Some(3));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    (engine.log_text(), engine.report())
}

/// The disk is lost: the changelog alone gives the state back byte for
/// byte, every accrual was published once and the balances are
/// `simulate`'s (`txns`: the journals of the runs before this state's).
fn assert_a_lost_disk_restores_it(
    setup: &Setup,
    dir: &std::path::Path,
    config: &std::path::Path,
    lines: &[String],
    mut txns: std::collections::BTreeMap<String, TxnStatus>,
) {
    let state = dir.join("node-a");
    let entries = stored_entries(&state, setup.partitions);
    txns.extend(journal(&state));
    std::fs::remove_dir_all(&state).unwrap();
    let report = run_until_idle(config);
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}");
    assert_same_entries(&entries, &stored_entries(&state, setup.partitions), "restored state");
    assert_simulated(setup, dir, lines, &txns, &state);
}

#[test]
fn a_lost_state_directory_is_restored_from_the_changelog_with_identical_balances_and_output() {
    let setup = Setup::new("changelog", 4).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), "node-a", "");
    let state = dir.path().join("node-a");
    let lines = events(4_000, 12);
    let (first, second) = lines.split_at(2_500);

    setup.produce(dir.path(), first);
    let report = run_until_idle(&config);
    assert_eq!(report.restored_partitions, 0, "nothing to restore from an empty start: {report:?}");
    let before = engine_accounts(&state, setup.partitions);
    assert!(before.len() > 100, "only {} accounts", before.len());
    let entries_before = stored_entries(&state, setup.partitions);
    let mut txns = journal(&state);

    // The disk is lost: the same instance starts from an empty directory.
    std::fs::remove_dir_all(&state).unwrap();
    let report = run_until_idle(&config);
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}");
    assert!(report.restored_changes > before.len() as u64, "{report:?}");
    assert_eq!((report.events, report.records), (0, 0), "restoring processes nothing: {report:?}");
    let restored = engine_accounts(&state, setup.partitions);
    assert!(restored == before, "restored balances differ from the lost ones");
    assert!(
        stored_entries(&state, setup.partitions) == entries_before,
        "restored state differs byte for byte"
    );

    // It goes on from there as if nothing had happened.
    setup.produce(dir.path(), second);
    let report = run_until_idle(&config);
    assert!(report.events > 0, "{report:?}");
    assert_eq!(report.restored_partitions, 0, "its own state is kept: {report:?}");
    txns.extend(journal(&state));
    assert_simulated(&setup, dir.path(), &lines, &txns, &state);

    // And the changelog holds state only: a key per change, in the
    // partition of the state it belongs to.
    let changelog = setup.read(setup.changelog.as_deref().unwrap());
    assert!(!changelog.is_empty());
    for m in &changelog {
        let change = accrual::store::changelog::from_message(&m.key, Some(&m.payload))
            .unwrap_or_else(|| panic!("not a change: {:?}", m.key));
        assert_eq!(change.partition(), Some(m.partition as u32));
    }
}

#[test]
fn a_restore_stops_at_the_transaction_that_committed_the_groups_offsets() {
    let setup = Setup::new("changelog-abort", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), "node-a", "");
    let state = dir.path().join("node-a");
    let lines = events(2_000, 5);
    let (first, second) = lines.split_at(1_500);
    setup.produce(dir.path(), first);
    run_until_idle(&config);
    let committed =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();

    // The next cycle publishes its changes, then the process dies before
    // the Kafka commit: a transaction that never commits (which this
    // broker may still show to read_committed readers).
    setup.produce(dir.path(), second);
    let crash = [("ACCRUAL_FAILPOINT", "slow-kafka-commit:500,before-kafka-commit")];
    let mut crashed = EngineProcess::spawn(&config, &crash, None);
    assert!(!crashed.wait(Duration::from_secs(120)).success(), "{}", crashed.log_text());
    // Its changes reached the changelog, past the group's offsets (once the
    // transaction is aborted this broker shows them to read_committed
    // readers, such as a restore; Apache Kafka would not).
    let changelog = setup.changelog.as_deref().unwrap();
    let everything =
        accrual::kafka_tools::read_topic(&setup.kafka(), changelog, false, Duration::from_secs(5));
    let past = everything
        .unwrap()
        .iter()
        .filter_map(|m| accrual::store::changelog::from_message(&m.key, Some(&m.payload)))
        .filter_map(|c| accrual::store::changelog::progress_of(&c).map(|p| (c.partition(), p.next_offset)))
        .filter(|(p, offset)| {
            committed.get(&(p.unwrap_or(0) as i32)).is_some_and(|(y, _)| *offset as i64 > *y)
        })
        .count();
    {
        assert!(
            past > 0,
            "the crashed transaction's changes are not in the changelog: the test would prove nothing"
        );
    }
    // The transaction the crash left open never commits: its state is
    // deleted before a restart could decide it, and the offsets say so.
    let mut txns = journal(&state);
    for status in txns.values_mut() {
        if *status == accrual::engine::journal::TxnStatus::Open {
            *status = accrual::engine::journal::TxnStatus::Aborted;
        }
    }
    let after_crash =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();
    assert_eq!(committed, after_crash, "the crash committed nothing");

    // The state is lost too; the restore must end where the group's
    // offsets are, not at the uncommitted changes after them.
    std::fs::remove_dir_all(&state).unwrap();
    let mut engine = EngineProcess::spawn(&config, &[], Some(3));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    let report = engine.report();
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}\n{}", engine.log_text());
    assert_eq!(report.refused_partitions, 0, "{report:?}");
    assert_eq!(report.events, second.len() as u64, "the uncommitted input is processed again: {report:?}");
    txns.extend(journal(&state));
    assert_simulated(&setup, dir.path(), &lines, &txns, &state);
}

#[test]
fn without_group_offsets_the_changelog_says_where_a_partition_resumes() {
    let setup = Setup::new("changelog-expired", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(1_500, 8);
    let (first, second) = lines.split_at(1_000);
    setup.produce(dir.path(), first);
    run_until_idle(&setup.config(dir.path(), "node-a", ""));
    let mut txns = journal(&dir.path().join("node-a"));

    // The group's offsets are gone (expired; here: another group) and so is
    // the state: the changelog alone holds where each partition got to.
    setup.produce(dir.path(), second);
    let renamed = Setup { group: format!("{}-renamed", setup.group), ..setup.clone() };
    let report = run_until_idle(&renamed.config(dir.path(), "node-b", ""));
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}");
    assert_eq!(report.events, second.len() as u64, "only what the changelog had not seen: {report:?}");
    txns.extend(journal(&dir.path().join("node-b")));
    assert_simulated(&setup, dir.path(), &lines, &txns, &dir.path().join("node-b"));
}

/// A snapshot cut short (a reset, part of a state, no progress after it)
/// and no group offsets (expired): nothing says where that state ends, so
/// the partition is refused, not processed again from the start on a
/// partial state.
#[test]
fn a_snapshot_cut_short_without_group_offsets_is_refused() {
    use accrual::store::changelog::Family;
    let setup = Setup::new("changelog-cut", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(1_000, 9);
    setup.produce(dir.path(), &lines);
    run_until_idle(&setup.config(dir.path(), "node-a", ""));

    // Partition 0's state published again, cut short after one account.
    let (key, value) = account_entries(&dir.path().join("node-a"), 0).remove(0);
    let reset = [&0u32.to_be_bytes()[..], b"reset"].concat();
    setup.write_to_changelog(&[
        (0, changelog_key(Family::Reset, &reset), Some(b"cut".to_vec())),
        (0, changelog_key(Family::Accounts, &key), Some(value)),
    ]);

    // The group's offsets are gone (here: another group), and so is the state.
    let renamed = Setup { group: format!("{}-renamed", setup.group), ..setup.clone() };
    let report = run_until_idle(&renamed.config(dir.path(), "node-b", ""));
    assert_eq!(report.refused_partitions, 1, "{report:?}");
    assert_eq!(report.restored_partitions, 1, "partition 1 from its changelog: {report:?}");
    assert_eq!(report.events, 0, "nothing processed again: {report:?}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn state_another_instance_wrote_is_replaced_even_when_its_offsets_match_the_groups() {
    let setup = Setup::new("changelog-owner", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(1_500, 21);
    let (first, second) = lines.split_at(900);
    let (node_a, node_b, stray) =
        (dir.path().join("node-a"), dir.path().join("node-b"), dir.path().join("node-x"));
    setup.produce(dir.path(), first);
    run_until_idle(&setup.config(dir.path(), "node-a", ""));

    // node-b carries on the group's work; node-a's state stays behind.
    setup.produce(dir.path(), second);
    let report = run_until_idle(&setup.config(dir.path(), "node-b", ""));
    assert_eq!(report.events, second.len() as u64, "{report:?}");
    let mut txns = journal(&node_a);
    txns.extend(journal(&node_b));

    // Meanwhile a copy of node-a's state went on elsewhere, outside this
    // group and with other rules (a stray run, a mixed-up volume): it ends
    // at exactly the group's offsets, but it is not the group's state.
    copy_dir(&node_a, &stray);
    let elsewhere = Setup::new("changelog-owner-stray", 2);
    let stray_setup = Setup {
        group: format!("{}-stray", setup.group),
        accruals: elsewhere.accruals,
        dlq: elsewhere.dlq,
        changelog: None,
        ..setup.clone()
    };
    let other_rules = dir.path().join("doubled.toml");
    let rules = std::fs::read_to_string(common::repo_path("config/rules.example.toml")).unwrap();
    std::fs::write(&other_rules, rules.replace("percent = \"1\"", "percent = \"7\"")).unwrap();
    let stray_config = stray_setup.config_with_rules(dir.path(), "node-x", "", other_rules.to_str().unwrap());
    let report = run_until_idle(&stray_config);
    assert_eq!(report.events, second.len() as u64, "{report:?}");
    let stray_accounts = engine_accounts(&stray, setup.partitions);
    let (reference_records, reference_accounts) = reference(dir.path(), &lines);
    assert!(stray_accounts != reference_accounts, "the stray state must differ, or the test proves nothing");
    let stray_progress: Vec<_> = (0..2).map(|p| open_store(&stray).progress(p).unwrap()).collect();
    let node_b_progress: Vec<_> = (0..2).map(|p| open_store(&node_b).progress(p).unwrap()).collect();
    assert_eq!(
        stray_progress.iter().map(|p| p.map(|p| p.next_offset)).collect::<Vec<_>>(),
        node_b_progress.iter().map(|p| p.map(|p| p.next_offset)).collect::<Vec<_>>(),
        "the stray state ends where the group's does"
    );

    // node-a starts on the stray state: offsets alone would trust it.
    std::fs::remove_dir_all(&node_a).unwrap();
    copy_dir(&stray, &node_a);
    let mut engine = EngineProcess::spawn(&setup.config(dir.path(), "node-a", ""), &[], Some(3));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    let report = engine.report();
    assert_eq!(report.restored_partitions, setup.partitions as u64, "{report:?}\n{}", engine.log_text());
    assert!(engine.log_text().contains("node-x"), "the log names the state's writer");
    assert_eq!(report.events, 0, "{report:?}");
    assert!(
        engine_accounts(&node_a, setup.partitions) == reference_accounts,
        "balances differ from simulate"
    );
    assert_exactly_once(&setup.read(&setup.accruals), &reference_records, &txns);

    // Its own state, restarted, is kept as it is.
    let report = run_until_idle(&setup.config(dir.path(), "node-a", ""));
    assert_eq!(report.restored_partitions, 0, "{report:?}");
}

#[test]
fn turning_the_changelog_on_where_state_exists_publishes_that_state_first() {
    let setup = Setup::new("changelog-late", 3).with_changelog();
    let plain = Setup { changelog: None, ..setup.clone() };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node-a");
    let lines = events(3_000, 31);
    let (first, second) = lines.split_at(2_000);

    // A deployment without a changelog builds up state.
    setup.produce(dir.path(), first);
    run_until_idle(&plain.config(dir.path(), "node-a", ""));
    let changelog = setup.changelog.as_deref().unwrap();
    assert!(setup.read(changelog).is_empty(), "nothing was published without a changelog");
    let txns = journal(&state);

    // Then the changelog is turned on, and a few accounts change. Before
    // the engine publishes the state, the check says the changelog cannot
    // restore it; after, that it restores it as it is.
    let config = setup.config(dir.path(), "node-a", "");
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(!ok && out.matches("FAILED: this is the group's state").count() == 3, "{out}");
    assert!(out.contains("the changelog at no progress since its last reset"), "{out}");
    setup.produce(dir.path(), second);
    let (log, report) = run_logged(&config);
    assert_eq!(log.matches("published its local state").count(), setup.partitions as usize, "{log}");
    assert_eq!(report.restored_partitions, 0, "its own state is kept");
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(ok && out.matches(": the same (").count() == 3, "{out}");

    // A lost disk gives every account back, those the later events never
    // touched too.
    assert_a_lost_disk_restores_it(&setup, dir.path(), &config, &lines, txns);
}

/// The changelog is turned off for a while and on again: it holds an
/// older state of each partition, and misses what changed meanwhile. The
/// state is published to it again before new work, so that a lost disk
/// afterwards restores the state as it was, not the older one.
#[test]
fn turning_the_changelog_off_and_on_again_publishes_the_state_it_missed() {
    let setup = Setup::new("changelog-off-on", 3).with_changelog();
    let plain = Setup { changelog: None, ..setup.clone() };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node-a");
    let lines = events(4_500, 43);
    let (on, rest) = lines.split_at(1_500);
    let (off, again) = rest.split_at(1_500);

    setup.produce(dir.path(), on);
    run_until_idle(&setup.config(dir.path(), "node-a", ""));
    let mut txns = journal(&state);
    setup.produce(dir.path(), off);
    let report = run_until_idle(&plain.config(dir.path(), "node-a", ""));
    assert!(report.events > 0, "{report:?}");
    txns.extend(journal(&state));

    setup.produce(dir.path(), again);
    let config = setup.config(dir.path(), "node-a", "");
    let (log, report) = run_logged(&config);
    let published = log.lines().filter(|l| l.contains("published its local state")).count();
    assert_eq!(published, setup.partitions as usize, "every partition's state once:\n{log}");
    assert!(log.contains("the changelog held its state up to offset"), "{log}");
    assert_eq!(report.restored_partitions, 0, "its own state is kept");

    // Restarted as it is, nothing is published again: the changelog holds
    // the group's state now, byte for byte.
    let (log, _) = run_logged(&config);
    assert!(!log.contains("published its local state"), "{log}");
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(ok && out.matches(": the same (").count() == 3, "{out}");
    let (out, ok) = changelog_command(&config, &["check", "--partition", "1", "--partition", "7"]);
    assert!(ok && out.contains("partition 7: this state directory holds no state of it"), "{out}");
    assert!(out.contains("1 partitions of") && out.contains("1 the same"), "{out}");
    assert_a_lost_disk_restores_it(&setup, dir.path(), &config, &lines, txns);
}

#[test]
fn a_cycle_whose_dedupe_keys_outgrow_one_message_is_published_and_restored() {
    // One partition, every event in one cycle, each event id at the
    // longest accepted (128 bytes): the cycle's dedupe keys are ~1.4 MB,
    // more than a broker takes in one message by default.
    let setup = Setup::new("changelog-big-cycle", 1).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), "node-a", "max_batch = 10000");
    // Idle longer than a cycle polls, or an empty cycle would end the run.
    let one_cycle = [("ACCRUAL_ENGINE__COMMIT_INTERVAL_MS", "5000")];
    let run_until_idle = |config: &std::path::Path| run_until_idle_with(config, &one_cycle, 12);
    let state = dir.path().join("node-a");
    let lines: Vec<String> = events(10_000, 21)
        .iter()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).expect("a generated event");
            let id = event["event_id"].as_str().expect("an event id").to_string();
            event["event_id"] = serde_json::Value::String(format!("{id:x>128}"));
            event.to_string()
        })
        .collect();
    setup.produce(dir.path(), &lines);
    let report = run_until_idle(&config);
    assert_eq!((report.events, report.aborted), (lines.len() as u64, 0), "{report:?}");
    assert!(report.transactions <= 3, "the events were meant to share a cycle: {report:?}");
    let before = engine_accounts(&state, 1);
    let entries_before = stored_entries(&state, 1);
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal(&state));
    assert!(before == reference_accounts, "balances differ from simulate");

    std::fs::remove_dir_all(&state).unwrap();
    let report = run_until_idle(&config);
    assert_eq!(report.restored_partitions, 1, "{report:?}");
    assert!(engine_accounts(&state, 1) == before, "restored balances differ");
    assert!(stored_entries(&state, 1) == entries_before, "restored state differs byte for byte");
}

/// A deployment without a changelog crashes once its first cycle's state
/// is committed, its transaction still open: the local state is ahead of
/// the group's offset (which is none), its outbox not yet published.
fn crash_ahead_without_a_changelog(setup: &Setup, dir: &std::path::Path, lines: &[String]) {
    let plain = Setup { changelog: None, ..setup.clone() };
    setup.produce(dir, lines);
    let config = plain.config(dir, "node-a", "");
    assert_aborted(&mut EngineProcess::spawn(
        &config,
        &[("ACCRUAL_FAILPOINT", "after-state-commit:1")],
        None,
    ));
}

const AHEAD: &str = "its local state is ahead of the group's offset";

/// Then the changelog is turned on, and the engine crashes again before it
/// commits the outbox it publishes again. The changelog must not hold the
/// state meanwhile: it was never committed. A lost disk then leaves only
/// what the group committed (nothing), and every accrual is published
/// once, the balances are `simulate`'s.
#[test]
fn state_ahead_of_the_group_stays_out_of_the_changelog_until_its_outbox_commits() {
    let setup = Setup::new("changelog-ahead", 3).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node-a");
    let lines = events(3_000, 37);
    let (first, second) = lines.split_at(2_000);
    crash_ahead_without_a_changelog(&setup, dir.path(), first);
    let config = setup.config(dir.path(), "node-a", "");
    let mut crashed = EngineProcess::spawn(&config, &[("ACCRUAL_FAILPOINT", "before-kafka-commit:1")], None);
    assert_aborted(&mut crashed);
    let log = crashed.log_text();
    assert!(log.contains(AHEAD), "no partition was ahead of the group:\n{log}");
    assert!(!log.contains("published its local state"), "state ahead of the group published:\n{log}");
    let changelog = setup.changelog.as_deref().unwrap();
    assert!(setup.read(changelog).is_empty(), "the changelog holds state the group never committed");

    // Its recovery's transaction never committed (it crashed before); the
    // lost disk takes the journal that would have recorded so.
    let mut txns = journal(&state);
    let open: Vec<_> = txns.iter_mut().filter(|(_, s)| **s == TxnStatus::Open).collect();
    assert!(open.len() <= 1, "one transaction open at most: {open:?}");
    open.into_iter().for_each(|(_, status)| *status = TxnStatus::Aborted);
    std::fs::remove_dir_all(&state).unwrap();
    setup.produce(dir.path(), second);
    run_until_idle(&config);
    txns.extend(journal(&state));
    assert_simulated(&setup, dir.path(), &lines, &txns, &state);
}

/// Without the second crash, the outbox is published again and committed,
/// and then the state goes to the changelog, before new work: a lost disk
/// afterwards restores it byte for byte.
#[test]
fn state_ahead_of_the_group_is_published_to_the_changelog_once_its_outbox_commits() {
    let setup = Setup::new("changelog-ahead-published", 3).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node-a");
    let lines = events(3_000, 41);
    let (first, second) = lines.split_at(2_000);
    crash_ahead_without_a_changelog(&setup, dir.path(), first);
    let txns = journal(&state);
    // The crashed cycle may have polled only some partitions: the others
    // hold no state to publish.
    let with_state = open_store(&state).partitions().unwrap().len();
    let config = setup.config(dir.path(), "node-a", "");
    setup.produce(dir.path(), second);
    let (log, report) = run_logged(&config);
    let ahead = log.lines().filter(|l| l.contains(AHEAD)).count();
    let after = log.lines().filter(|l| l.contains("to the changelog once its outbox was")).count();
    let before = log.lines().filter(|l| l.contains("published its local state")).count();
    assert!(
        ahead > 0 && after == ahead,
        "{ahead} partitions ahead, {after} published after their outbox:\n{log}"
    );
    assert_eq!(before + after, with_state, "every partition's state is published once:\n{log}");
    assert!(report.recoveries > 0, "the outbox was not published again");
    assert_a_lost_disk_restores_it(&setup, dir.path(), &config, &lines, txns);
}

/// `accrual changelog <args>` with the engine's config: its output (stdout
/// then stderr), and whether it exited 0.
fn changelog_command(config: &std::path::Path, args: &[&str]) -> (String, bool) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_accrual"))
        .arg("changelog")
        .arg(args[0])
        .arg("--config")
        .arg(config)
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run accrual changelog");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (text, out.status.success())
}

/// A partition's account keys and values, as stored.
fn account_entries(state: &std::path::Path, partition: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    use accrual::store::changelog::{Family, partition_entries};
    let entries = partition_entries(&open_store(state), partition).unwrap();
    entries.into_iter().filter(|e| e.0 == Family::Accounts).map(|(_, k, v)| (k, v)).collect()
}

/// Makes the changelog restore other values than the state holds, as a
/// changelog an earlier version left stale would: partition 0's loses two
/// accounts, partition 1's gives one account another's state, all
/// accounts the events still to come (`later`) leave alone. Checks that
/// `accrual changelog check` names them; returns the first lost account.
fn corrupt_changelog(
    setup: &Setup,
    config: &std::path::Path,
    state: &std::path::Path,
    later: &str,
) -> String {
    let untouched = |p: u32| -> Vec<(Vec<u8>, Vec<u8>)> {
        let quoted = |key: &[u8]| format!("\"{}\"", String::from_utf8_lossy(&key[4..]));
        account_entries(state, p).into_iter().filter(|(key, _)| !later.contains(&quoted(key))).collect()
    };
    let (zero, one) = (untouched(0), untouched(1));
    assert!(zero.len() > 2 && one.len() > 2, "{} and {} accounts", zero.len(), one.len());
    let account = |key: &[u8]| changelog_key(accrual::store::changelog::Family::Accounts, key);
    setup.write_to_changelog(&[
        (0, account(&zero[0].0), None),
        (0, account(&zero[1].0), None),
        (1, account(&one[0].0), Some(one[1].1.clone())),
    ]);

    let (out, ok) = changelog_command(config, &["check"]);
    assert!(!ok, "a different changelog fails the check:\n{out}");
    assert!(out.contains("partition 0: DIFFERENT: 2 of"), "{out}");
    assert!(out.contains("(0 with other values, 2 only here, 0 only in the changelog)"), "{out}");
    let lost = String::from_utf8_lossy(&zero[0].0[4..]).to_string();
    assert!(out.contains(&format!("accounts \"{lost}\" only here")), "{out}");
    assert!(out.contains("partition 1: DIFFERENT: 1 of"), "{out}");
    assert!(out.contains("(1 with other values, 0 only here, 0 only in the changelog)"), "{out}");
    assert!(out.contains("partition 2: the same"), "{out}");
    assert!(
        out.contains("1 the same, 2 different, 0 not restored by the changelog, 0 not compared"),
        "{out}"
    );
    lost
}

/// The changelog restores other values than the state it should hold
/// (here keys deleted and changed by hand, as in a changelog an earlier
/// version left stale): `accrual changelog check` names the partitions
/// and keys, and `accrual changelog republish` gives the changelog the
/// state again, but not while an instance runs.
#[test]
fn the_changelog_check_finds_what_a_changelog_lost_and_republishing_gives_it_back() {
    let setup = Setup::new("changelog-check", 3).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), "node-a", "");
    let state = dir.path().join("node-a");
    let lines = events(4_000, 71);
    let (first, second) = lines.split_at(2_500);
    setup.produce(dir.path(), first);
    run_until_idle(&config);
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(ok && out.matches(": the same (").count() == 3, "{out}");

    let lost = corrupt_changelog(&setup, &config, &state, &second.concat());

    // The engine goes on: the changelog has a progress record at the
    // group's offset again, and still restores the wrong accounts.
    setup.produce(dir.path(), second);
    run_until_idle(&config);
    let txns = journal(&state);
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(!ok && out.contains("partition 0: DIFFERENT") && out.contains(&lost), "{out}");

    // Not while an instance runs: neither on its own directory (it holds
    // it) nor on a copy (the group has a member).
    let copy = dir.path().join("copy");
    copy_dir(&state, &copy);
    let mut engine = EngineProcess::spawn(&config, &[], None);
    let started = std::time::Instant::now();
    while !engine.log_text().contains("partition assigned") && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let copy_dir_arg = copy.to_str().unwrap();
    let (out, ok) =
        changelog_command(&config, &["republish", "--state-dir", copy_dir_arg, "--partition", "0"]);
    assert!(!ok && out.contains("members: stop every instance first, or ask the partition's owner"), "{out}");
    let (out, ok) = changelog_command(&config, &["republish", "--partition", "0"]);
    assert!(!ok && out.contains("opening"), "{out}");
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());

    // Once the group is empty, it is.
    let started = std::time::Instant::now();
    let (out, ok) = loop {
        let (out, ok) = changelog_command(&config, &["republish", "--partition", "0", "--partition", "1"]);
        if ok || !out.contains("members") || started.elapsed() > Duration::from_secs(30) {
            break (out, ok);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ok, "{out}");
    assert_eq!(out.matches("records of its state to the changelog").count(), 2, "{out}");
    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(ok && out.matches(": the same (").count() == 3, "{out}");
    let (out, ok) = changelog_command(&config, &["check", "--partition", "1", "--partition", "7"]);
    assert!(ok && out.contains("partition 7: this state directory holds no state of it"), "{out}");
    assert!(out.contains("1 partitions of") && out.contains("1 the same"), "{out}");
    assert_a_lost_disk_restores_it(&setup, dir.path(), &config, &lines, txns);
}

/// The same repair while the engine runs: asked over HTTP, the owner
/// publishes each partition's state again between two cycles, with the
/// partition paused meanwhile and events streaming; the changelog then
/// restores the state byte for byte, and every accrual is published once.
#[test]
fn an_owner_asked_publishes_its_state_again_while_it_runs() {
    use common::http::{post, wait_ready};
    let setup = Setup::new("changelog-online", 3).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let address = "127.0.0.1:19484";
    let config = setup.config_http(dir.path(), "node-a", "max_batch = 300", address, "t0ken");
    let state = dir.path().join("node-a");
    let lines = events(4_000, 73);
    let (first, second) = lines.split_at(2_500);
    setup.produce(dir.path(), first);
    run_until_idle(&config);
    let lost = corrupt_changelog(&setup, &config, &state, &second.concat());

    let mut engine = EngineProcess::spawn(&config, &[], None);
    assert!(wait_ready(address, Duration::from_secs(60)), "never ready:\n{}", engine.log_text());
    let auth = [("Authorization", "Bearer t0ken")];
    let ask = |p: u32, headers: &[(&str, &str)]| {
        post(address, &format!("/v1/partitions/{p}/changelog/republish"), headers).unwrap()
    };
    let (status, body) = ask(0, &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = ask(7, &auth);
    assert_eq!(status, 421, "a partition it does not own: {body}");
    setup.produce(dir.path(), second);
    for p in [0, 1] {
        // Ready may come before its partitions (between a revoke and an
        // assignment): asked again while it does not own them yet.
        let started = std::time::Instant::now();
        let (status, body) = loop {
            let (status, body) = ask(p, &auth);
            if status == 202 || started.elapsed() > Duration::from_secs(30) {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status, 202, "{body}");
    }
    let published = "published the partition's whole state to the changelog again, as asked";
    let resumed = "partition resumed; its state was published to the changelog again";
    let started = std::time::Instant::now();
    while engine.log_text().matches(resumed).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "not resumed:\n{}", engine.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = engine.log_text();
    assert_eq!(log.matches(published).count(), 2, "{log}");
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
    // What it had not processed yet, if anything.
    run_until_idle(&config);

    let (out, ok) = changelog_command(&config, &["check"]);
    assert!(ok && out.matches(": the same (").count() == 3, "{out}");
    assert!(!out.contains(&lost), "{out}");
    assert_a_lost_disk_restores_it(&setup, dir.path(), &config, &lines, journal(&state));
}
