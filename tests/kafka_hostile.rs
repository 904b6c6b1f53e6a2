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
    let produced = accrual::kafka_tools::produce_file(&setup.kafka(), &setup.input, &path).unwrap();
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
        // Stamped as produced: never after now, as the file was.
        now: None,
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

/// The partition count changing under a running engine (here the topic
/// is deleted and created again with one more partition, since the local
/// broker cannot add partitions). The group does not rebalance for it (the
/// members keep their partitions), so the engine learns it from its
/// client's metadata, and stops with the counts as at a start.
#[test]
fn a_partition_count_changed_while_running_stops_the_engine() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new("recount", 2);
    let purchase = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","type":"purchase","account_id":"acc-1","amount":"100.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2026-11-20T12:00:00Z"}}"#
        )
    };
    setup.produce(dir.path(), &[purchase("r1")]);
    let config = setup.config(dir.path(), "node-1", "");
    let mut engine = EngineProcess::spawn(&config, &[], Some(60));
    assert!(setup.wait_all_committed(Duration::from_secs(60)), "{}", engine.log_text());

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &setup.brokers).create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for result in runtime.block_on(admin.delete_topics(&[&setup.input], &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    accrual::kafka_tools::create_topics(&setup.kafka(), &[(&setup.input, 3)]).unwrap();
    setup.produce(dir.path(), &[purchase("r2")]);

    let status = engine.wait(Duration::from_secs(120));
    let log = engine.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("has 3 partitions, but the state") && log.contains("when it had 2"), "{log}");
}

/// An input near the message size limit: its dead letter, with its headers,
/// would be over the limit, refused by the producer, and fail every
/// transaction it was in. It is cut to its bound instead, and says how big
/// the original was and what its digest is.
#[test]
fn a_dead_letter_of_an_input_near_the_size_limit_is_cut_and_published() {
    use accrual::engine::outbox::{HEADER_DLQ_ORIGINAL_SIZE, HEADER_DLQ_SHA256, MAX_DEAD_LETTER_PAYLOAD};
    use sha2::Digest;
    let setup = Setup::new("huge", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut huge = br#"{"event_id":"big","type":"purchase","account_id":"acc-1","merchant_id":""#.to_vec();
    huge.resize(990_000, b'M');
    huge.extend_from_slice(br#""}"#);
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &setup.brokers).create().unwrap();
    producer.send(BaseRecord::to(&setup.input).payload(&huge).key("acc-1")).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    setup.produce(dir.path(), &[r#"{"event_id":"after","type":"purchase","account_id":"acc-1","amount":"1000.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2026-11-20T12:00:00Z"}"#.to_string()]);

    let config = setup.config(dir.path(), "node-1", "");
    let mut engine = EngineProcess::spawn(&config, &[], Some(4));
    assert!(engine.wait(Duration::from_secs(120)).success(), "{}", engine.log_text());
    assert_eq!(setup.lag(), Some(0));
    let dead = setup.read(&setup.dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload.len(), MAX_DEAD_LETTER_PAYLOAD);
    assert_eq!(dead[0].header(HEADER_DLQ_ORIGINAL_SIZE), Some(huge.len().to_string().as_str()));
    let digest: String = sha2::Sha256::digest(&huge).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(dead[0].header(HEADER_DLQ_SHA256), Some(digest.as_str()));
    assert_eq!(dead[0].header(accrual::engine::outbox::HEADER_DLQ_REASON), Some("too_large"));
    assert!(!setup.read(&setup.accruals).is_empty(), "the next event was processed");
}

/// Input that retention removed before the engine processed it: the
/// partition is refused, loudly, until the operator decides; with
/// `skip_input_gaps` it goes on past the gap, loudly too.
#[test]
fn input_removed_before_it_was_processed_refuses_the_partition() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let setup = Setup::new("gap", 1);
    let dir = tempfile::tempdir().unwrap();
    let event = |i: u32| {
        format!(
            r#"{{"event_id":"g{i}","type":"purchase","account_id":"acc-{}","amount":"1000.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2026-11-20T12:00:00Z"}}"#,
            i % 5
        )
    };
    setup.produce(dir.path(), &(0..20).map(event).collect::<Vec<_>>());
    let config = setup.config(dir.path(), "node-1", "");
    let mut first = EngineProcess::spawn(&config, &[], Some(3));
    assert!(first.wait(Duration::from_secs(60)).success(), "{}", first.log_text());
    let processed = setup.read(&setup.accruals).len();

    // Down for a while: 30 more arrive, and retention takes the log up to 40.
    setup.produce(dir.path(), &(20..50).map(event).collect::<Vec<_>>());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &setup.brokers).create().unwrap();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(&setup.input, 0, Offset::Offset(40)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(admin.delete_records(&cut, &AdminOptions::new())).unwrap();

    let mut refused = EngineProcess::spawn(&config, &[], Some(3));
    assert!(refused.wait(Duration::from_secs(60)).success(), "{}", refused.log_text());
    let log = refused.log_text();
    assert!(log.contains("offsets 20..40 of input partition 0 were removed (retention) before they were processed: 20 events never accrued"), "{log}");
    assert!(log.contains("partition refused"), "{log}");
    assert_eq!(setup.read(&setup.accruals).len(), processed, "nothing processed past the gap");

    let mut skipping = EngineProcess::spawn(&config, &[("ACCRUAL_ENGINE__SKIP_INPUT_GAPS", "true")], Some(3));
    assert!(skipping.wait(Duration::from_secs(60)).success(), "{}", skipping.log_text());
    assert!(
        skipping.log_text().contains("skipping them (engine.skip_input_gaps)"),
        "{}",
        skipping.log_text()
    );
    assert!(setup.read(&setup.accruals).len() > processed, "offsets 40..50 processed");
    assert_eq!(setup.lag(), Some(0));
}

/// One clock over far more due accounts than a clock may fire: the engine
/// fires them in chunks of at most the limit, one transaction each,
/// following each cut clock with another, until none is left due; and what
/// it published is exactly what `simulate` computes from the input topic
/// (the follow-up clocks included).
#[test]
fn a_clock_over_many_due_accounts_is_fired_in_bounded_chunks() {
    const LIMIT: usize = 20;
    const ACCOUNTS: usize = 300;
    let setup = Setup::new("clocks", 1);
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = std::fs::read_to_string(common::repo_path("config/rules.lifecycle.toml")).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        lifecycle.replacen(
            "statement_day = 15",
            &format!("statement_day = 15\nmax_accounts_per_clock = {LIMIT}"),
            1,
        ),
    )
    .unwrap();
    let mut lines: Vec<String> = (0..ACCOUNTS)
        .map(|i| {
            let at = accrual::time::Timestamp(common::past_start().0 + i as i64 * 600_000);
            common::purchase(&format!("p{i}"), &format!("acc-{i:04}"), "2000.00", "5411", &at.to_string(), "")
        })
        .collect();
    lines.push(r#"{"event_id":"the-clock","type":"clock","occurred_at":"2026-11-20T00:00:00Z"}"#.to_string());
    // Input after the clock, polled with it: the batch ends at the clock,
    // and the engine must read these again, not skip them.
    for i in 0..50 {
        let at = format!("2026-11-20T01:{i:02}:00Z");
        lines.push(common::purchase(
            &format!("after{i}"),
            &format!("acc-{:04}", 1000 + i),
            "700.00",
            "5411",
            &at,
            "",
        ));
    }
    lines.push(r#"{"event_id":"clock-two","type":"clock","occurred_at":"2026-11-25T00:00:00Z"}"#.to_string());
    setup.produce(dir.path(), &lines);

    let config = setup.config_with_rules(dir.path(), "node-1", "", rules.to_str().unwrap());
    let mut engine = EngineProcess::spawn(&config, &[], Some(5));
    assert!(engine.wait(Duration::from_secs(180)).success(), "{}", engine.log_text());
    assert_eq!(setup.lag(), Some(0), "every offset committed");

    let input = setup.read(&setup.input);
    let follow_ups = input.iter().filter(|m| String::from_utf8_lossy(&m.payload).contains("-more-")).count();
    assert!(follow_ups >= ACCOUNTS / LIMIT - 1, "{follow_ups} follow-up clocks");

    // Accounts each transaction brought to a clock's time.
    let published = setup.read(&setup.accruals);
    let mut fired: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &published {
        let record: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if record["source_event_id"].as_str().unwrap().contains("clock") {
            let txn = m.header("accrual.txn").unwrap().to_string();
            fired.entry(txn).or_default().insert(record["account_id"].as_str().unwrap().to_string());
        }
    }
    let all: BTreeSet<&String> = fired.values().flatten().collect();
    assert!(all.len() >= ACCOUNTS, "every due account fired: {}", all.len());
    assert!(fired.values().all(|a| a.len() <= LIMIT), "at most {LIMIT} accounts a transaction: {fired:?}");
    assert!(fired.len() >= ACCOUNTS / LIMIT);

    let topic_file = dir.path().join("input-topic.ndjson");
    let payloads: Vec<&[u8]> = input.iter().map(|m| &m.payload[..]).collect();
    std::fs::write(&topic_file, payloads.join(&b'\n')).unwrap();
    let out = dir.path().join("reference.out");
    let summary = simulate::run(&SimulateOptions {
        rules,
        input: topic_file,
        out: Some(out.clone()),
        dlq: None,
        state_dir: None,
        batch_size: 1000,
        show_progress: false,
        now: None,
    })
    .unwrap();
    assert!(summary.stats.clock_accounts >= ACCOUNTS as u64 && summary.stats.clocks_cut >= 14, "{summary}");
    assert_eq!(summary.stats.inputs, input.len() as u64);
    let reference: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    assert_exactly_once(&published, &reference, &journal(&dir.path().join("node-1")));
}
