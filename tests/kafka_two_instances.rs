//! Two engine instances in one group, separate state directories, each
//! from empty state on its own partitions; and an instance without state
//! refusing partitions the group has already processed.

mod common;

use accrual::datagen::{self, GenOptions};
use common::kafka::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 200,
        seed,
        days: 60,
        start: common::past_start(),
        refund_percent: 3.0,
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    datagen::generate(&opts, &mut out).unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
}

fn assigned(engine: &EngineProcess) -> usize {
    engine.log_text().matches("partition assigned").count()
}

#[test]
fn two_instances_split_the_partitions_and_agree_with_simulate() {
    let setup = Setup::new("pair", 4);
    let dir = tempfile::tempdir().unwrap();
    let a_config = setup.config(dir.path(), "node-a", "max_batch = 300");
    let b_config = setup.config(dir.path(), "node-b", "max_batch = 300");
    let mut a = EngineProcess::spawn(&a_config, &[], None);
    let started = Instant::now();
    while assigned(&a) == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut b = EngineProcess::spawn(&b_config, &[], None);
    while assigned(&b) == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(assigned(&b) > 0, "the second instance got no partition:\n{}", b.log_text());
    std::thread::sleep(Duration::from_secs(1)); // let the rebalance settle

    let lines = events(6_000, 31);
    setup.produce(dir.path(), &lines);
    assert!(
        setup.wait_all_committed(Duration::from_secs(120)),
        "not all input committed; lag {:?}",
        setup.lag()
    );
    b.terminate();
    assert!(b.wait(Duration::from_secs(60)).success(), "{}", b.log_text());
    a.terminate();
    assert!(a.wait(Duration::from_secs(60)).success(), "{}", a.log_text());
    for (name, engine) in [("a", &a), ("b", &b)] {
        let log = engine.log_text();
        let records: u64 = log
            .lines()
            .rev()
            .find(|l| l.starts_with("events "))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.trim_start_matches("records ").parse().ok())
            .unwrap_or(0);
        assert!(records > 0, "instance {name} did no work:\n{log}");
    }

    // Both journals together decide every transaction; both stores
    // together hold every account, each in one place.
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    let mut txns = journal(&dir.path().join("node-a"));
    txns.extend(journal(&dir.path().join("node-b")));
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    let mut accounts: BTreeMap<_, _> = engine_accounts(&dir.path().join("node-a"), setup.partitions);
    for (account, state) in engine_accounts(&dir.path().join("node-b"), setup.partitions) {
        assert!(accounts.insert(account.clone(), state).is_none(), "{account} on both instances");
    }
    assert!(accounts == reference_accounts, "balances differ from simulate");
}

#[test]
fn an_instance_without_the_state_refuses_the_partitions() {
    let setup = Setup::new("refuse", 2);
    let dir = tempfile::tempdir().unwrap();
    let lines = events(2_000, 4);
    let (first, second) = lines.split_at(1_000);
    setup.produce(dir.path(), first);
    let owner = setup.config(dir.path(), "node-a", "");
    let mut a = EngineProcess::spawn(&owner, &[], Some(3));
    assert!(a.wait(Duration::from_secs(120)).success(), "{}", a.log_text());
    let committed_before =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();

    // A new instance with empty state joins the same group.
    setup.produce(dir.path(), second);
    let stranger = setup.config(dir.path(), "node-c", "");
    let mut c = EngineProcess::spawn(&stranger, &[], None);
    let started = Instant::now();
    while c.log_text().matches("partition refused").count() < 2 && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    c.terminate();
    assert!(c.wait(Duration::from_secs(60)).success(), "{}", c.log_text());
    let report = c.report();
    assert_eq!(report.refused_partitions, 2, "{report:?}");
    assert_eq!((report.events, report.records), (0, 0), "the stranger processed nothing: {report:?}");
    // The operator's log says why.
    let log = c.log_text();
    assert!(log.contains("no local state, but the group has committed offset"), "{log}");
    let committed_after =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();
    assert_eq!(committed_before, committed_after, "nothing committed while refused");

    // The owner comes back and finishes; everything exactly once.
    let mut a = EngineProcess::spawn(&owner, &[], Some(4));
    assert!(a.wait(Duration::from_secs(120)).success(), "{}", a.log_text());
    let (reference, _) = reference(dir.path(), &lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal(&dir.path().join("node-a")));
}
