//! Hostile input through the Kafka engine (a smaller corpus than
//! `hostile_input.rs`): the engine stays up, commits every offset, publishes
//! exactly what `simulate` computes for the same lines, dead-letters the
//! same lines for the same reasons, and refuses messages keyed by anything
//! but their account.

mod common;

use accrual::datagen::GenOptions;
use accrual::engine::outbox::HEADER_DLQ_REASON;
use accrual::simulate::{self, SimulateOptions};
use common::kafka::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn corpus() -> Vec<Vec<u8>> {
    let opts = GenOptions {
        events: 400,
        accounts: 40,
        seed: 31,
        days: 30,
        duplicate_percent: 2.0,
        hostile: 400,
        ..GenOptions::default()
    };
    let mut text = Vec::new();
    accrual::datagen::generate(&opts, &mut text).unwrap();
    // Blank lines are no input to `simulate`: keep only lines both count.
    text.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter(|l| !l.ends_with(b"\r"))
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn hostile_lines_through_the_engine_end_as_in_simulate() {
    let setup = Setup::new("hostile", 1);
    let dir = tempfile::tempdir().unwrap();
    let lines = corpus();
    let path = dir.path().join("hostile.ndjson");
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    let produced =
        accrual::kafka_tools::produce_file_as_of(&setup.brokers, &setup.input, &path, common::hostile_now())
            .unwrap();
    assert_eq!(produced as usize, lines.len());

    // Valid events under the wrong key, and under none.
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &setup.brokers).create().unwrap();
    let event = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","type":"purchase","account_id":"acc-0000001","amount":"500.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2026-11-30T12:00:00Z"}}"#
        )
    };
    let (wrong, unkeyed) = (event("k-wrong"), event("k-none"));
    producer
        .send(BaseRecord::to(&setup.input).payload(&wrong).key("acc-0000002"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.send(BaseRecord::<(), _>::to(&setup.input).payload(&unkeyed)).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let config = setup.config(dir.path(), "node-1", "max_batch = 150");
    let mut engine = EngineProcess::spawn(&config, &[], Some(4));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    assert_eq!(setup.lag(), Some(0), "every offset committed");

    let out = dir.path().join("reference.out");
    let dlq = dir.path().join("reference.dlq");
    let summary = simulate::run(&SimulateOptions {
        rules: common::repo_path("config/rules.example.toml"),
        input: path,
        out: Some(out.clone()),
        dlq: Some(dlq.clone()),
        state_dir: None,
        batch_size: 1000,
        show_progress: false,
        now: Some(common::hostile_now()),
    })
    .unwrap();
    let reference: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    let ids: BTreeSet<&str> = reference.iter().map(|r| r.split('"').nth(3).unwrap()).collect();
    assert_eq!(ids.len(), reference.len(), "no accrual_id twice");
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal(&dir.path().join("node-1")));

    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&dlq).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *expected.entry(v["reason"].as_str().unwrap().to_string()).or_default() += 1;
    }
    *expected.entry("key_mismatch".to_string()).or_default() += 2;
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    for m in setup.read(&setup.dlq) {
        *dead.entry(m.header(HEADER_DLQ_REASON).unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(dead, expected, "dead letters by reason");
    assert!(expected["future_event_time"] > 0 && summary.stats.dead_letters > 100, "{expected:?}");
}

/// State built under one partition count refuses a topic with another:
/// the engine exits at start with the counts, before processing anything.
#[test]
fn a_changed_input_partition_count_stops_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let before = Setup::new("count", 2);
    let config = before.config(dir.path(), "node-1", "");
    let mut first = EngineProcess::spawn(&config, &[], Some(2));
    assert!(first.wait(Duration::from_secs(60)).success(), "{}", first.log_text());

    // The same instance and state directory, on a topic of three partitions.
    let after = Setup::new("count", 3);
    let config = after.config(dir.path(), "node-1", "");
    after.produce(dir.path(), &[r#"{"event_id":"c1","type":"purchase","account_id":"acc-1","amount":"100.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2026-11-20T12:00:00Z"}"#.to_string()]);
    let mut second = EngineProcess::spawn(&config, &[], Some(2));
    let status = second.wait(Duration::from_secs(60));
    let log = second.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("has 3 partitions, but the state") && log.contains("when it had 2"), "{log}");
    assert!(after.read(&after.accruals).is_empty(), "nothing processed");
}
