//! The engine against a real broker: same answer as `simulate`, dead
//! letters with reasons, every input offset accounted for, graceful stop.

mod common;

use accrual::datagen::GenOptions;
use accrual::engine::outbox::{HEADER_DLQ_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION};
use accrual::events::Decoder;
use common::kafka::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn generated(events: u64, seed: u64, malformed: f64) -> Vec<String> {
    let opts = GenOptions {
        events,
        accounts: 300,
        seed,
        days: 60,
        start: common::past_start(),
        refund_percent: 4.0,
        reversal_percent: 1.0,
        duplicate_percent: 1.0,
        malformed_percent: malformed,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

/// `events N, records N, dead letters N, duplicates N, without effect N, ...`
fn summary_counts(log: &str) -> BTreeMap<String, u64> {
    let line = log.lines().rev().find(|l| l.starts_with("events ")).expect("summary line");
    line.split(", ")
        .filter_map(|part| {
            let (name, n) = part.rsplit_once(' ')?;
            Some((name.to_string(), n.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?))
        })
        .collect()
}

#[test]
fn accruals_in_kafka_equal_simulate_and_balances_match() {
    let setup = Setup::new("e2e", 4);
    let dir = tempfile::tempdir().unwrap();
    let lines = generated(6_000, 21, 0.5);
    setup.produce(dir.path(), &lines);
    let config = setup.config(dir.path(), "node-1", "max_batch = 700");
    let mut engine = EngineProcess::spawn(&config, &[], Some(4));
    let status = engine.wait(Duration::from_secs(180));
    assert!(status.success(), "engine failed:\n{}", engine.log_text());

    let (reference, reference_accounts) = reference(dir.path(), &lines);
    let published = setup.read(&setup.accruals);
    let state_dir = dir.path().join("node-1");
    assert_exactly_once(&published, &reference, &journal(&state_dir));
    assert!(reference.len() > 5_000);

    // Balances, caps and retained purchases in RocksDB equal the reference.
    let accounts = engine_accounts(&state_dir, setup.partitions);
    assert_eq!(accounts.len(), reference_accounts.len());
    assert!(accounts == reference_accounts, "account states differ from simulate");

    // Each record is keyed by account and points at its source message.
    let inputs = setup.read(&setup.input);
    let source: BTreeMap<(i32, i64), String> = inputs
        .iter()
        .map(|m| ((m.partition, m.offset), String::from_utf8_lossy(&m.payload).into_owned()))
        .collect();
    let mut decoder = Decoder::new();
    for m in &published {
        let record: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m.key, record["account_id"].as_str().unwrap().as_bytes());
        let at = (
            m.header(HEADER_SOURCE_PARTITION).unwrap().parse::<i32>().unwrap(),
            m.header(HEADER_SOURCE_OFFSET).unwrap().parse::<i64>().unwrap(),
        );
        let input = decoder.decode(source[&at].as_bytes()).unwrap();
        assert_eq!(input.event_id, record["source_event_id"].as_str().unwrap());
    }
    assert_eq!(setup.lag(), Some(0), "every input offset committed");
}

#[test]
fn dead_letters_carry_reason_offset_and_the_original_bytes() {
    let setup = Setup::new("dlq", 3);
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::fs::read(common::repo_path("tests/data/malformed.ndjson")).unwrap();
    let expected = std::fs::read_to_string(common::repo_path("tests/data/malformed.expected")).unwrap();
    let reasons: Vec<&str> =
        expected.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(' ').next().unwrap()).collect();
    let bad: Vec<Vec<u8>> =
        corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let good = generated(400, 5, 0.0);
    // Interleave: valid events around every malformed one. Bytes go in as
    // they are, invalid UTF-8 included.
    let mut file = Vec::new();
    for (i, line) in good.iter().enumerate() {
        file.extend_from_slice(line.as_bytes());
        file.push(b'\n');
        if let Some(b) = bad.get(i) {
            file.extend_from_slice(b);
            file.push(b'\n');
        }
    }
    let path = dir.path().join("mixed.ndjson");
    std::fs::write(&path, &file).unwrap();
    let produced = accrual::kafka_tools::produce_file(&setup.kafka(), &setup.input, &path).unwrap();
    assert_eq!(produced as usize, good.len() + bad.len());

    let config = setup.config(dir.path(), "node-1", "");
    let mut engine = EngineProcess::spawn(&config, &[], Some(4));
    assert!(engine.wait(Duration::from_secs(120)).success(), "{}", engine.log_text());

    // One dead letter per malformed event; besides them, only the valid
    // stream's copies of events older than the dedupe window (too_late).
    let dead = setup.read(&setup.dlq);
    let mut by_payload: BTreeMap<Vec<u8>, &str> = BTreeMap::new();
    for m in &dead {
        assert!(m.header(HEADER_SOURCE_PARTITION).is_some() && m.header(HEADER_SOURCE_OFFSET).is_some());
        let reason = m.header(HEADER_DLQ_REASON).unwrap();
        if !bad.contains(&m.payload) {
            assert_eq!(reason, "too_late", "{}", String::from_utf8_lossy(&m.payload));
            assert!(good.iter().any(|g| g.as_bytes() == m.payload));
        }
        by_payload.insert(m.payload.clone(), reason);
    }
    assert!(dead.len() >= bad.len(), "one dead letter per malformed event");
    for (line, reason) in bad.iter().zip(&reasons) {
        assert_eq!(by_payload.get(line).copied(), Some(*reason), "{}", String::from_utf8_lossy(line));
    }

    // Every input offset is accounted for: accrued, no effect, duplicate or dead letter.
    let counts = summary_counts(&engine.log_text());
    assert_eq!(counts["events"], produced);
    let (reference, _) = reference(dir.path(), &good);
    let published = setup.read(&setup.accruals);
    assert_exactly_once(&published, &reference, &journal(&dir.path().join("node-1")));
    assert_eq!(setup.lag(), Some(0));
}

#[test]
fn sigterm_finishes_the_cycle_and_exits_zero() {
    let setup = Setup::new("sigterm", 2);
    let dir = tempfile::tempdir().unwrap();
    let lines = generated(8_000, 8, 0.0);
    setup.produce(dir.path(), &lines);
    let config = setup.config(dir.path(), "node-1", "max_batch = 200");
    let mut engine = EngineProcess::spawn(&config, &[], None);
    // Let it get going, then ask it to stop.
    let started = std::time::Instant::now();
    while setup.lag().is_none_or(|lag| lag as usize >= lines.len())
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.terminate();
    let status = engine.wait(Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}:\n{}", engine.log_text());
    let state_dir = dir.path().join("node-1");
    assert!(
        journal(&state_dir).values().all(|s| *s != accrual::engine::journal::TxnStatus::Open),
        "no transaction left open"
    );
    // Whatever it had processed is committed: a restart finishes the rest.
    let mut rest = EngineProcess::spawn(&config, &[], Some(4));
    assert!(rest.wait(Duration::from_secs(120)).success(), "{}", rest.log_text());
    assert!(!rest.log_text().contains("recovery: publishing"), "a graceful stop leaves nothing to recover");
    let (reference, _) = reference(dir.path(), &lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal(&state_dir));
}
