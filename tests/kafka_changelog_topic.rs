//! A changelog topic that cannot hold the state is refused, by
//! `accrual run` before it publishes anything and by `accrual topics`:
//! missing, another partition count than the input's, or a cleanup policy
//! that lets retention delete account states.

mod common;

use accrual::engine::changelog_topic;
use accrual::kafka_tools::{self, ToolError};
use common::kafka::*;
use std::time::Duration;

/// The check's complaint about `changelog`, which must be an error.
fn refusal(setup: &Setup, changelog: &str) -> String {
    match changelog_topic::check(&setup.kafka(), changelog, &setup.input) {
        Err(ToolError::Topic { topic, message }) => {
            assert_eq!(topic, changelog, "the error names the changelog topic");
            message
        }
        other => panic!("{changelog}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_compacted_co_partitioned_changelog_passes_and_every_other_is_refused() {
    let setup = Setup::new("changelog-topic", 4).with_changelog();
    let good = setup.changelog.clone().expect("changelog");
    changelog_topic::check(&setup.kafka(), &good, &setup.input).expect("compacted, co-partitioned");

    let missing = format!("{}.missing", setup.input);
    assert!(refusal(&setup, &missing).contains("does not exist"));

    let fewer = format!("{}.fewer", setup.input);
    let configs = kafka_tools::CHANGELOG_CONFIGS;
    kafka_tools::create_topics_with(&setup.kafka(), &[(&fewer, 2, configs)]).expect("topic");
    let why = refusal(&setup, &fewer);
    assert!(why.contains("has 2 partitions") && why.contains("has 4"), "{why}");

    // The broker's default: Apache Kafka describes it as "delete", other
    // brokers may leave it out; neither is taken as compacted.
    let default = format!("{}.default", setup.input);
    kafka_tools::create_topics(&setup.kafka(), &[(&default, 4)]).expect("topic");
    let why = refusal(&setup, &default);
    assert!(
        why.contains("cleanup.policy is \"delete\"") || why.contains("cleanup.policy is not set"),
        "{why}"
    );

    let deleting = format!("{}.deleting", setup.input);
    let policy = [("cleanup.policy", "delete")];
    kafka_tools::create_topics_with(&setup.kafka(), &[(&deleting, 4, &policy[..])]).expect("topic");
    assert!(refusal(&setup, &deleting).contains("cleanup.policy is \"delete\""));

    let both = format!("{}.both", setup.input);
    let policy = [("cleanup.policy", "compact,delete")];
    kafka_tools::create_topics_with(&setup.kafka(), &[(&both, 4, &policy[..])]).expect("topic");
    assert!(refusal(&setup, &both).contains("retention.ms"));

    // Tombstones that go before a catch-up could read them.
    let brief = format!("{}.brief", setup.input);
    let configs = [("cleanup.policy", "compact"), ("delete.retention.ms", "60000")];
    kafka_tools::create_topics_with(&setup.kafka(), &[(&brief, 4, &configs[..])]).expect("topic");
    assert!(refusal(&setup, &brief).contains("delete.retention.ms is \"60000\""));
    let lasting = format!("{}.lasting", setup.input);
    let configs = [("cleanup.policy", "compact"), ("delete.retention.ms", "86400000")];
    kafka_tools::create_topics_with(&setup.kafka(), &[(&lasting, 4, &configs[..])]).expect("topic");
    changelog_topic::check(&setup.kafka(), &lasting, &setup.input).expect("a day of tombstones");
}

#[test]
fn the_engine_refuses_a_changelog_retention_would_delete_before_publishing() {
    let mut setup = Setup::new("changelog-refused", 2);
    let changelog = setup.input.replace(".transactions", ".changelog");
    kafka_tools::create_topics(&setup.kafka(), &[(&changelog, 2)]).expect("topic");
    setup.changelog = Some(changelog.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), "node-a", "");
    setup.produce(dir.path(), &[r#"{"not": "an event"}"#.to_string()]);

    let mut engine = EngineProcess::spawn(&config, &[], Some(3));
    assert!(!engine.wait(Duration::from_secs(60)).success(), "the engine must refuse to start");
    let log = engine.log_text();
    assert!(
        log.contains("kafka.topics.changelog") && log.contains(&changelog) && log.contains("cleanup.policy"),
        "the error names the setting, the topic and the config: {log}"
    );
    assert!(setup.read(&changelog).is_empty(), "nothing was published to it");
    assert!(setup.read(&setup.dlq).is_empty(), "nothing was processed");

    // `accrual topics` leaves an existing topic's configs alone, and says
    // they will not do.
    let topics = std::process::Command::new(env!("CARGO_BIN_EXE_accrual"))
        .args(["topics", "--config"])
        .arg(&config)
        .output()
        .expect("accrual topics");
    let stderr = String::from_utf8_lossy(&topics.stderr);
    assert!(!topics.status.success(), "accrual topics must fail: {stderr}");
    assert!(stderr.contains(&changelog) && stderr.contains("cleanup.policy"), "{stderr}");
}
