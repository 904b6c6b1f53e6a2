//! State follows its partition: three instances share the group while
//! events stream; one is killed with SIGKILL and its state directory
//! deleted (a lost node), and its partitions are restored from the
//! changelog elsewhere; a fourth joins; then every instance left is
//! restarted in turn. Every accrual is published exactly once, and the
//! balances are `simulate`'s. ACCRUAL_SOAK=1 streams ten times the events.

mod common;

use accrual::datagen::GenOptions;
use common::kafka::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn events(n: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 400,
        seed: 41,
        days: 60,
        start: common::past_start(),
        refund_percent: 3.0,
        duplicate_percent: 1.0,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

fn wait_assigned(engine: &EngineProcess) {
    let started = Instant::now();
    while !engine.log_text().contains("partition assigned") && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Streams `lines` in and waits until the group has committed them all.
fn stream(setup: &Setup, dir: &Path, lines: &[String], what: &str) {
    setup.produce(dir, lines);
    assert!(
        setup.wait_all_committed(Duration::from_secs(180)),
        "{what}: not all committed; lag {:?}",
        setup.lag()
    );
}

/// With the changelog on from the start, it always holds the group's
/// state: no instance publishes a whole partition's state to it (a
/// snapshot, see `bootstrap`), which would cost a full read of the state.
fn assert_no_snapshot(engine: &EngineProcess) {
    let log = engine.log_text();
    assert!(!log.contains("published its local state"), "a snapshot in normal operation:\n{log}");
}

fn stop(engine: &mut EngineProcess, reports: &mut Vec<accrual::engine::RunSummary>) {
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
    reports.push(engine.report());
}

#[test]
fn a_lost_node_a_new_one_and_a_rolling_restart_keep_every_accrual_exactly_once() {
    let per_phase: usize = if soak() { 15_000 } else { 1_500 };
    let setup = Setup::new("failover", 6).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    // Every instance answers balance lookups, forwarding to the others.
    let names = ["node-a", "node-b", "node-c", "node-d"];
    let address =
        |name: &str| format!("127.0.0.1:{}", 19471 + names.iter().position(|n| *n == name).unwrap());
    let peers: String = names.iter().map(|n| format!("{n} = \"http://{}\"\n", address(n))).collect();
    let config = |name: &str| {
        let http = format!("[http]\nlisten = \"{}\"\n[http.peers]\n{peers}", address(name));
        setup.config_full(dir.path(), name, "max_batch = 300", "config/rules.example.toml", &http)
    };
    let state = |name: &str| -> PathBuf { dir.path().join(name) };
    let lines = events(per_phase as u64 * 4);
    let phases: Vec<&[String]> = lines.chunks(per_phase).collect();
    let mut reports = Vec::new();

    let mut nodes: BTreeMap<&str, EngineProcess> = BTreeMap::new();
    for name in ["node-a", "node-b", "node-c"] {
        let engine = EngineProcess::spawn(&config(name), &[], None);
        wait_assigned(&engine);
        nodes.insert(name, engine);
    }
    stream(&setup, dir.path(), phases[0], "three instances");

    // A lost node: killed, and its disk gone with it.
    let mut lost = nodes.remove("node-c").unwrap();
    lost.kill();
    let mut txns = journal(&state("node-c"));
    std::fs::remove_dir_all(state("node-c")).unwrap();
    stream(&setup, dir.path(), phases[1], "after losing node-c");

    // A new node joins, with no state.
    let joined = EngineProcess::spawn(&config("node-d"), &[], None);
    wait_assigned(&joined);
    nodes.insert("node-d", joined);
    stream(&setup, dir.path(), phases[2], "after node-d joined");

    // A rolling restart.
    for name in ["node-a", "node-b", "node-d"] {
        let mut engine = nodes.remove(name).unwrap();
        assert_no_snapshot(&engine);
        stop(&mut engine, &mut reports);
        let engine = EngineProcess::spawn(&config(name), &[], None);
        wait_assigned(&engine);
        nodes.insert(name, engine);
    }
    stream(&setup, dir.path(), phases[3], "after the rolling restart");
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    // Every account's balance, read over HTTP from one instance.
    std::thread::sleep(Duration::from_secs(3)); // the owners, as the instances read them
    for (account, expected) in &reference_accounts {
        let body = balance_over_http(&address("node-a"), account);
        assert_balance(&body, expected);
    }
    for engine in nodes.values_mut() {
        assert_no_snapshot(engine);
        stop(engine, &mut reports);
    }

    let restores: u64 = reports.iter().map(|r| r.restored_partitions).sum();
    assert!(restores >= 2, "partitions moved without restores: {reports:?}");
    for name in ["node-a", "node-b", "node-d"] {
        txns.extend(journal(&state(name)));
    }
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);

    let states: Vec<PathBuf> = ["node-a", "node-b", "node-d"].into_iter().map(state).collect();
    let accounts = committed_balances(&setup, &states);
    assert!(accounts == reference_accounts, "balances differ from simulate");
}

/// The balance of `account` from the instance at `address`, retried while
/// the instance answers that it cannot yet (a partition moving).
fn balance_over_http(address: &str, account: &str) -> serde_json::Value {
    let path = format!("/v1/accounts/{account}/balance");
    let started = Instant::now();
    loop {
        let (status, body) = common::http::get(address, &path, &[]).unwrap();
        if status == 200 {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            matches!(status, 421 | 502 | 503) && started.elapsed() < Duration::from_secs(30),
            "{account}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_balance(body: &serde_json::Value, expected: &accrual::state::AccountState) {
    let account = body["account_id"].as_str().unwrap_or_default();
    for program in body["programs"].as_array().unwrap() {
        let name = program["program"].as_str().unwrap();
        let b = expected.balance(name).unwrap();
        for (field, value) in
            [("available", b.available), ("lifetime_earned", b.lifetime_earned), ("redeemed", b.redeemed)]
        {
            let want = accrual::money::with_scale(value, b.decimals).to_string();
            assert_eq!(program[field].as_str(), Some(want.as_str()), "{account} {name} {field}");
        }
    }
}

/// Each partition's balances, from an instance whose state ends at the
/// group's committed offset (any other copy is an older one).
fn committed_balances(setup: &Setup, states: &[PathBuf]) -> BTreeMap<String, accrual::state::AccountState> {
    let committed =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();
    let mut accounts = BTreeMap::new();
    for p in 0..setup.partitions {
        let (offset, _) = committed[&p];
        let owner = states
            .iter()
            .map(|dir| open_store(dir))
            .find(|store| store.progress(p as u32).unwrap().map(|x| x.next_offset as i64) == Some(offset))
            .unwrap_or_else(|| panic!("no instance holds partition {p} at the committed offset {offset}"));
        for (account, balance) in owner.accounts(p as u32).unwrap() {
            assert!(accounts.insert(account.clone(), balance).is_none(), "{account} in two partitions");
        }
    }
    accounts
}

fn signal(engine: &EngineProcess, sig: &str) {
    let status = std::process::Command::new("kill").arg(sig).arg(engine.child.id().to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {sig}");
}

/// A zombie: an instance paused (SIGSTOP) in the middle of a commit, past
/// its session timeout, while another takes its partitions over; then
/// resumed (SIGCONT). This broker does not fence it by generation: the
/// engine must not commit what it was about to.
#[test]
fn an_instance_paused_past_its_session_timeout_does_not_commit_when_it_resumes() {
    let setup = Setup::new("zombie", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let lines = events(1_200);
    let (first, second) = lines.split_at(800);
    // Each commit waits 3 s first: the pause lands in the first one.
    let slow = [("ACCRUAL_FAILPOINT", "slow-kafka-commit:3000")];
    let mut zombie = EngineProcess::spawn(&setup.config(dir.path(), "node-a", ""), &slow, None);
    let started = Instant::now();
    while zombie.log_text().matches("partition restored").count() < 2
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    setup.produce(dir.path(), first);
    std::thread::sleep(Duration::from_millis(1_500));
    signal(&zombie, "-STOP");

    // The group gives its partitions to node-b once its session expires.
    let mut other = EngineProcess::spawn(&setup.config(dir.path(), "node-b", ""), &[], None);
    let started = Instant::now();
    while other.log_text().matches("partition restored").count() < 2
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The zombie resumes in the middle of its commit. (This broker never
    // aborts a transaction left open, so node-b cannot commit before the
    // zombie's ends: the zombie must abort it, not commit it.)
    signal(&zombie, "-CONT");
    assert!(!zombie.wait(Duration::from_secs(60)).success(), "{}", zombie.log_text());
    let log = zombie.log_text();
    assert!(log.contains("session timeout"), "the zombie says why it stopped:\n{log}");
    setup.produce(dir.path(), second);
    assert!(
        setup.wait_all_committed(Duration::from_secs(120)),
        "lag {:?}\n{}",
        setup.lag(),
        other.log_text()
    );
    let mut reports = Vec::new();
    stop(&mut other, &mut reports);

    let mut txns = journal(&dir.path().join("node-a"));
    txns.extend(journal(&dir.path().join("node-b")));
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    assert!(engine_accounts(&dir.path().join("node-b"), setup.partitions) == reference_accounts);
}

/// With one standby replica per partition, placed where the group's
/// assignor moves a lost member's partitions, a lost node's partitions are
/// taken over from warm copies: only the changelog's tail is read, not the
/// whole state.
#[test]
fn with_standbys_a_lost_nodes_partitions_restore_only_the_tail() {
    let setup = Setup::new("standby", 6).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str| setup.config(dir.path(), name, "max_batch = 300\nstandby_replicas = 1");
    let lines = events(4_000);
    let (first, second) = lines.split_at(3_000);
    let mut nodes: BTreeMap<&str, EngineProcess> = BTreeMap::new();
    for name in ["node-a", "node-b", "node-c"] {
        let engine = EngineProcess::spawn(&config(name), &[], None);
        wait_assigned(&engine);
        nodes.insert(name, engine);
    }
    stream(&setup, dir.path(), first, "three instances");
    // Each instance keeps copies of 2 partitions (one copy of each of the
    // 6), and they catch up with what was committed.
    let copies_of_all = |log: &str| {
        let last = log.lines().rfind(|l| l.contains("keeping warm copies")).unwrap_or_default();
        let set = last.split("partitions={").nth(1).and_then(|s| s.split('}').next()).unwrap_or("");
        set.split(',').count() == 2
    };
    let started = Instant::now();
    while !nodes.values().all(|n| copies_of_all(&n.log_text())) && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let changelog_records = setup.read(setup.changelog.as_deref().unwrap()).len();

    // What the survivors log from here on is the takeover's.
    let marks: BTreeMap<&str, usize> =
        nodes.iter().filter(|(n, _)| **n != "node-c").map(|(n, e)| (*n, e.log_text().len())).collect();
    let mut lost = nodes.remove("node-c").unwrap();
    let killed = Instant::now();
    lost.kill();
    let mut txns = journal(&dir.path().join("node-c"));
    std::fs::remove_dir_all(dir.path().join("node-c")).unwrap();
    stream(&setup, dir.path(), second, "after losing node-c");
    eprintln!("failover with standbys: SIGKILL to all committed again in {:?}", killed.elapsed());

    let mut reports = Vec::new();
    for engine in nodes.values_mut() {
        stop(engine, &mut reports);
    }
    let takeover: String = nodes.iter().map(|(n, e)| e.log_text()[marks[n]..].to_string()).collect();
    // Changes applied by restores and catch-ups since the kill (each ends
    // with this line).
    let restored: u64 = takeover
        .lines()
        .filter(|l| l.contains("partition restored from the changelog"))
        .filter_map(|l| l.split("changes=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let partitions_logging = |messages: &[&str]| -> BTreeSet<u32> {
        let lines = takeover.lines().filter(|l| messages.iter().any(|m| l.contains(m)));
        lines.filter_map(|l| l.split("partition=").nth(1)?.split_whitespace().next()?.parse().ok()).collect()
    };
    let taken = partitions_logging(&["partition restored from the changelog", "continues the group's"]);
    let from_copies = partitions_logging(&["caught up on the changelog's tail", "continues the group's"]);
    assert!(
        taken.len() == 2 && from_copies == taken,
        "node-c's 2 partitions were not all taken over from copies: taken {taken:?}, from copies {from_copies:?}\n{takeover}"
    );
    eprintln!("the takeover applied {restored} changes; the changelog held {changelog_records} records");
    assert!(
        restored * 10 < changelog_records as u64,
        "{restored} changes restored, of {changelog_records} in the changelog: more than its tail\n{takeover}"
    );
    for name in ["node-a", "node-b"] {
        txns.extend(journal(&dir.path().join(name)));
    }
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    let states: Vec<PathBuf> = ["node-a", "node-b"].into_iter().map(|n| dir.path().join(n)).collect();
    let accounts = committed_balances(&setup, &states);
    assert!(accounts == reference_accounts, "balances differ from simulate");
}

/// Two instances, one standby copy of each partition, and one of them
/// killed with SIGKILL at random moments while events stream (3 times;
/// 8 with ACCRUAL_SOAK=1). Once all is committed, every partition's copy
/// equals its owner's state byte for byte (dedupe keys aside): each copy
/// wrote its last batch once the group committed it, and (in the runs
/// where a kill falls between a batch's changelog records and its state
/// commit, and the retry ends elsewhere) left out the batch that never
/// committed, which the local broker shows. `tests/changelog.rs` covers
/// that case on every run.
#[test]
fn after_sigkills_every_standby_copy_equals_its_owners_state() {
    let kills = if soak() { 8 } else { 3 };
    let seed = crash_seed();
    eprintln!("standby crash test: {kills} kills, ACCRUAL_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let setup = Setup::new("standby-crash", 4).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str| setup.config(dir.path(), name, "max_batch = 120\nstandby_replicas = 1");
    let lines = events(if soak() { 18_000 } else { 6_000 });
    let mut chunks = lines.chunks(lines.len().div_ceil(kills + 1));
    let mut steady = EngineProcess::spawn(&config("node-b"), &[], None);
    wait_assigned(&steady);
    for kill in 0..kills {
        let mut killed = EngineProcess::spawn(&config("node-a"), &[], None);
        wait_assigned(&killed);
        setup.produce(dir.path(), chunks.next().unwrap_or_default());
        // While it works on the chunk (which takes about a second).
        let delay = 20 + rng.next(600);
        std::thread::sleep(Duration::from_millis(delay));
        killed.kill();
        eprintln!("kill {} {delay} ms after producing; lag {:?}", kill + 1, setup.lag());
    }
    let mut last = EngineProcess::spawn(&config("node-a"), &[], None);
    wait_assigned(&last);
    for chunk in chunks {
        setup.produce(dir.path(), chunk);
    }
    assert!(setup.wait_all_committed(Duration::from_secs(180)), "not all committed; lag {:?}", setup.lag());

    // Each instance owns some partitions and copies the others'.
    let read = |name: &str| {
        let store = accrual::store::Store::open_read_only(&dir.path().join(name)).expect("a state");
        entries_of(&store, setup.partitions)
    };
    let of = |entries: &[(u32, Vec<u8>, Vec<u8>)], p: u32| -> Vec<(u32, Vec<u8>, Vec<u8>)> {
        entries.iter().filter(|e| e.0 == p).cloned().collect()
    };
    let started = Instant::now();
    let (a, b) = loop {
        let (a, b) = (read("node-a"), read("node-b"));
        if a == b || started.elapsed() > Duration::from_secs(30) {
            break (a, b);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for p in 0..setup.partitions as u32 {
        assert!(of(&a, p).len() > 10, "partition {p}: no state to compare");
        assert_same_entries(&of(&a, p), &of(&b, p), &format!("partition {p}: node-a's and node-b's"));
    }
    let left_out = |log: &str| log.lines().filter(|l| l.contains("left out a changelog batch")).count();
    eprintln!("copies that left out a batch: {}", left_out(&steady.log_text()) + left_out(&last.log_text()));
    let mut reports = Vec::new();
    stop(&mut last, &mut reports);
    stop(&mut steady, &mut reports);
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    let mut txns = journal(&dir.path().join("node-a"));
    txns.extend(journal(&dir.path().join("node-b")));
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    let states: Vec<PathBuf> = ["node-a", "node-b"].into_iter().map(|n| dir.path().join(n)).collect();
    assert!(committed_balances(&setup, &states) == reference_accounts, "balances differ from simulate");
}

/// A record of another partition in a changelog partition (a topic that is
/// not co-partitioned, or a record written by hand) is left out of the
/// standby copy that reads it: a reset of a partition owned here would
/// otherwise drop that partition's state with the copy's next batch.
#[test]
fn a_standby_copy_leaves_out_changes_of_other_partitions() {
    let setup = Setup::new("standby-foreign", 2).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str| setup.config(dir.path(), name, "max_batch = 120\nstandby_replicas = 1");
    let lines = events(2_000);
    let (first, second) = lines.split_at(1_000);
    let mut nodes: Vec<EngineProcess> = ["node-a", "node-b"]
        .into_iter()
        .map(|name| {
            let engine = EngineProcess::spawn(&config(name), &[], None);
            wait_assigned(&engine);
            engine
        })
        .collect();
    stream(&setup, dir.path(), first, "two instances");
    let started = Instant::now();
    while !nodes.iter().all(|n| n.log_text().contains("keeping warm copies"))
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Into each changelog partition, a reset of the other.
    let reset = |of: u32| {
        changelog_key(accrual::store::changelog::Family::Reset, &[&of.to_be_bytes()[..], b"reset"].concat())
    };
    setup.write_to_changelog(&[(0, reset(1), Some(b"x".to_vec())), (1, reset(0), Some(b"x".to_vec()))]);
    stream(&setup, dir.path(), second, "after the foreign records");
    std::thread::sleep(Duration::from_secs(3)); // the copies' next batches

    let mut reports = Vec::new();
    for engine in &mut nodes {
        stop(engine, &mut reports);
    }
    let warned =
        nodes.iter().filter(|n| n.log_text().contains("not a change of this engine's to this partition"));
    assert_eq!(warned.count(), 2, "each copy read the other partition's reset");
    let (reference, reference_accounts) = reference(dir.path(), &lines);
    let states: Vec<PathBuf> = ["node-a", "node-b"].into_iter().map(|n| dir.path().join(n)).collect();
    // Each instance holds both partitions as the group committed them: the
    // one it owned, and its copy of the other. A reset taken into a copy
    // dropped the owned one.
    let committed =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();
    for state in &states {
        let store = open_store(state);
        for p in 0..setup.partitions {
            let at = store.progress(p as u32).unwrap().map(|x| x.next_offset as i64);
            assert_eq!(at, Some(committed[&p].0), "{}: partition {p}", state.display());
        }
    }
    let mut txns = journal(&states[0]);
    txns.extend(journal(&states[1]));
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &txns);
    assert!(committed_balances(&setup, &states) == reference_accounts, "balances differ from simulate");
}
