//! What a partition leaves behind on an instance it moved away from, with
//! a changelog: if it comes back soon, only the changelog's tail since is
//! read; after `engine.state_cleanup_delay_ms` it is dropped (unless the
//! changelog does not hold the partition yet), and a return restores it.

mod common;

use accrual::datagen::GenOptions;
use common::kafka::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 300,
        seed,
        days: 60,
        start: common::past_start(),
        refund_percent: 3.0,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

/// The partitions named by `message` lines of the log (`partition=N`).
fn partitions_logged(engine: &EngineProcess, message: &str) -> BTreeSet<u32> {
    engine
        .log_text()
        .lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| l.split("partition=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// Waits until `ready` holds of the engine's log; panics with the log if
/// it does not within `timeout`.
fn wait_for(engine: &EngineProcess, timeout: Duration, what: &str, ready: impl Fn(&EngineProcess) -> bool) {
    let started = Instant::now();
    while !ready(engine) {
        assert!(
            started.elapsed() < timeout,
            "{what} not seen within {timeout:?}; log:\n{}",
            engine.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_committed(setup: &Setup) {
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "lag {:?}", setup.lag());
}

/// node-a processes `first` on its own, then node-b joins and takes half
/// the partitions (of 4): both running, with the partitions that moved.
fn half_moves_to_a_new_instance(
    setup: &Setup,
    dir: &Path,
    first: &[String],
    extra_engine: &str,
) -> (EngineProcess, EngineProcess, BTreeSet<u32>) {
    setup.produce(dir, first);
    let a = EngineProcess::spawn(&setup.config(dir, "node-a", extra_engine), &[], None);
    wait_committed(setup);
    let b = EngineProcess::spawn(&setup.config(dir, "node-b", extra_engine), &[], None);
    wait_for(&a, Duration::from_secs(60), "two partitions revoked", |a| {
        partitions_logged(a, "partition revoked").len() == 2
    });
    let moved = partitions_logged(&a, "partition revoked");
    (a, b, moved)
}

/// Every accrual of `lines` published exactly once (by the journals of
/// `instances`), and node-a, which ends with every partition, holding
/// `simulate`'s balances.
fn assert_as_simulate(setup: &Setup, dir: &Path, lines: &[String], instances: &[&str]) {
    let (reference, reference_accounts) = reference(dir, lines);
    let mut txns = BTreeMap::new();
    for instance in instances {
        txns.extend(journal(&dir.join(instance)));
    }
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    let accounts = engine_accounts(&dir.join("node-a"), setup.partitions);
    assert!(accounts == reference_accounts, "balances differ from simulate");
}

const DROPPED: &str = "dropped the local state of a partition";
const KEPT: &str = "kept the local state of a partition owned elsewhere";
const CLEANUP: &str = "state_cleanup_delay_ms = 3000";
const CAUGHT_UP: &str = "this instance's former state caught up on the changelog's tail";

#[test]
fn a_partition_back_on_its_former_owner_soon_reads_only_the_changelogs_tail() {
    let setup = Setup::new("comeback", 4).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(2_400, 9);
    let (first, rest) = lines.split_at(1_800);
    let (second, third) = rest.split_at(300);

    let (mut a, mut b, moved) = half_moves_to_a_new_instance(&setup, dir.path(), first, "");
    setup.produce(dir.path(), second);
    wait_committed(&setup);

    // node-b leaves: its partitions return to node-a, which still holds
    // them as it left them and reads only what node-b added.
    b.terminate();
    assert!(b.wait(Duration::from_secs(60)).success(), "{}", b.log_text());
    wait_for(&a, Duration::from_secs(60), "the moved partitions caught up", |a| {
        partitions_logged(a, CAUGHT_UP) == moved
    });
    setup.produce(dir.path(), third);
    wait_committed(&setup);
    a.terminate();
    assert!(a.wait(Duration::from_secs(60)).success(), "{}", a.log_text());
    let (a_report, b_report) = (a.report(), b.report());
    assert_eq!(a_report.restored_partitions, 2, "{a_report:?}");
    assert!(
        a_report.restored_changes < b_report.restored_changes,
        "the tail ({} changes) is less than the state node-b restored ({})",
        a_report.restored_changes,
        b_report.restored_changes
    );

    assert_as_simulate(&setup, dir.path(), &lines, &["node-a", "node-b"]);
}

#[test]
fn the_state_of_partitions_that_moved_away_is_dropped_after_the_delay_and_restored_when_they_return() {
    let setup = Setup::new("cleanup", 4).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(3_000, 5);
    let (first, rest) = lines.split_at(1_200);
    let (second, third) = rest.split_at(900);

    // What the partitions that moved left on node-a's disk goes once the
    // delay has passed.
    let (mut a, mut b, moved) = half_moves_to_a_new_instance(&setup, dir.path(), first, CLEANUP);
    let revoked_at = Instant::now();
    wait_for(&a, Duration::from_secs(60), "their state dropped", |a| partitions_logged(a, DROPPED) == moved);
    assert!(revoked_at.elapsed() >= Duration::from_millis(2_500), "dropped before the delay passed");
    assert!(!a.log_text().contains(KEPT), "the changelog holds every partition here");
    setup.produce(dir.path(), second);
    wait_committed(&setup);

    // node-b stops: its partitions come back to node-a, which has to
    // restore them from the changelog, and goes on exactly as before.
    b.terminate();
    assert!(b.wait(Duration::from_secs(60)).success(), "{}", b.log_text());
    setup.produce(dir.path(), third);
    wait_committed(&setup);
    a.terminate();
    assert!(a.wait(Duration::from_secs(60)).success(), "{}", a.log_text());
    let report = a.report();
    assert_eq!(report.restored_partitions, 2, "the returning partitions were restored: {report:?}");
    assert!(report.restored_changes > 0, "{report:?}");
    assert!(!a.log_text().contains(CAUGHT_UP), "dropped state cannot be caught up");

    assert_as_simulate(&setup, dir.path(), &lines, &["node-a", "node-b"]);
}

#[test]
fn state_the_changelog_does_not_hold_yet_stays_where_it_is() {
    // node-a builds its state before the changelog is turned on.
    let plain = Setup::new("keep", 2);
    let dir = tempfile::tempdir().unwrap();
    let lines = events(2_000, 8);
    let (first, second) = lines.split_at(1_200);
    plain.produce(dir.path(), first);
    let mut a = EngineProcess::spawn(&plain.config(dir.path(), "node-a", ""), &[], Some(3));
    assert!(a.wait(Duration::from_secs(120)).success(), "{}", a.log_text());
    assert_the_only_state_is_kept(&plain.with_changelog(), dir.path(), second, &lines);
}

/// The same where the changelog was on, then off for a while: it holds
/// progress records, but older than the group's offset, so not the
/// state either.
#[test]
fn state_a_changelog_that_was_off_misses_stays_where_it_is() {
    let setup = Setup::new("keep-off", 2).with_changelog();
    let plain = Setup { changelog: None, ..setup.clone() };
    let dir = tempfile::tempdir().unwrap();
    let lines = events(3_000, 9);
    let (on, rest) = lines.split_at(1_000);
    let (off, later) = rest.split_at(1_000);
    // Each run writes its config (both setups write the same file).
    for (part, with) in [(on, &setup), (off, &plain)] {
        setup.produce(dir.path(), part);
        let mut a = EngineProcess::spawn(&with.config(dir.path(), "node-a", ""), &[], Some(3));
        assert!(a.wait(Duration::from_secs(120)).success(), "{}", a.log_text());
    }
    let changelog = setup.changelog.as_deref().unwrap();
    assert!(!setup.read(changelog).is_empty(), "the changelog holds the state as it was before");
    assert_the_only_state_is_kept(&setup, dir.path(), later, &lines);
}

/// node-a holds the only state of two partitions the changelog (`setup`'s)
/// does not hold. node-b, without state, starts first and refuses both
/// (the changelog cannot restore them); node-a joins and gets one, and
/// keeps the other's state past the cleanup delay. Once node-b stops,
/// node-a publishes the state it kept and goes on with `later`.
fn assert_the_only_state_is_kept(setup: &Setup, dir: &Path, later: &[String], lines: &[String]) {
    let mut b = EngineProcess::spawn(&setup.config(dir, "node-b", CLEANUP), &[], None);
    wait_for(&b, Duration::from_secs(60), "both partitions refused", |b| {
        b.log_text().matches("partition refused").count() >= 2
    });
    let mut a = EngineProcess::spawn(&setup.config(dir, "node-a", CLEANUP), &[], None);
    wait_for(&a, Duration::from_secs(60), "the other partition kept", |a| a.log_text().contains(KEPT));
    assert!(!a.log_text().contains(DROPPED), "{}", a.log_text());

    b.terminate();
    assert!(b.wait(Duration::from_secs(60)).success(), "{}", b.log_text());
    setup.produce(dir, later);
    wait_committed(setup);
    a.terminate();
    assert!(a.wait(Duration::from_secs(60)).success(), "{}", a.log_text());
    assert!(!a.log_text().contains(DROPPED), "{}", a.log_text());
    assert_as_simulate(setup, dir, lines, &["node-a"]);
    assert_eq!(b.report().events, 0, "node-b refused all it was given");
}
