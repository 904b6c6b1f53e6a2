//! Whether a changelog topic can hold the state it is given: it must exist,
//! have the input's partition count (partition p's state goes to partition
//! p, and a restore reads only that one), and be compacted without
//! deletion, since retention would drop the states of accounts idle longer
//! than `retention.ms` and a restore could not tell. `accrual topics` and
//! `accrual run` check it, so a topic made by other tooling with the
//! broker's defaults (`cleanup.policy=delete`) is refused before any state
//! goes to it. Its `delete.retention.ms`, when set, must keep tombstones
//! long enough for a state catching up on the changelog's tail (a standby
//! copy, a partition back on its former owner) to read them.

use crate::kafka_tools::{Admin, Connection, ToolError, partitions};
use rdkafka::admin::ResourceSpecifier;

/// Checks the changelog topic against the input topic. A broker that will
/// not describe the topic's configs (no DescribeConfigs permission, an old
/// broker) leaves the cleanup policy unchecked, with a warning.
pub fn check(kafka: &Connection, changelog: &str, input: &str) -> Result<(), ToolError> {
    let problem = |message: String| ToolError::Topic { topic: changelog.to_string(), message };
    let count = partitions(kafka, changelog).map_err(|_| {
        problem("does not exist; create it with `accrual topics` (compacted, co-partitioned)".into())
    })?;
    // A missing input topic is the engine's to report (it waits for it).
    let input_count = partitions(kafka, input).unwrap_or(count);
    if count != input_count {
        return Err(problem(format!(
            "has {count} partitions, but the input topic {input} has {input_count}: a partition's state is \
             published to the changelog partition of the same number, so both need the same count"
        )));
    }
    match described(kafka, changelog) {
        Ok(configs) => policy_problem(configs.policy.as_deref())
            .or_else(|| tombstones_problem(configs.delete_retention_ms.as_deref()))
            .map_or(Ok(()), |why| Err(problem(why))),
        Err(e) => {
            tracing::warn!(
                topic = changelog,
                error = %e,
                "could not read the changelog topic's configs; make sure its cleanup.policy is compact"
            );
            Ok(())
        }
    }
}

/// What is wrong with a changelog's `cleanup.policy`, if anything. Not
/// set: Apache Kafka always describes it (with the default's value), other
/// brokers may list only what was set, and then the broker's default
/// applies, `delete` unless configured otherwise.
fn policy_problem(policy: Option<&str>) -> Option<String> {
    let Some(policy) = policy else {
        return Some(
            "cleanup.policy is not set on the topic, so the broker's default applies (delete, unless the \
             cluster's log.cleanup.policy says otherwise): set cleanup.policy=compact"
                .into(),
        );
    };
    let parts: Vec<&str> = policy.split(',').map(str::trim).collect();
    if !parts.contains(&"compact") {
        return Some(format!(
            "cleanup.policy is {policy:?}, not \"compact\": retention would delete account states, and a \
             restore from this topic would silently miss them (set cleanup.policy=compact)"
        ));
    }
    if parts.contains(&"delete") {
        return Some(format!(
            "cleanup.policy is {policy:?}: besides compaction, retention would delete the states of accounts \
             idle longer than retention.ms, and a restore would silently miss them (set cleanup.policy=compact)"
        ));
    }
    None
}

/// What is wrong with a changelog's `delete.retention.ms`, if anything:
/// state may catch up on the tail from a record up to
/// `CATCH_UP_WITHIN_MS` old, and must find every tombstone written since.
/// Not set: the default (a day) applies.
fn tombstones_problem(delete_retention_ms: Option<&str>) -> Option<String> {
    let least = 2 * accrual_store::changelog::CATCH_UP_WITHIN_MS;
    let value = delete_retention_ms?;
    match value.trim().parse::<i64>() {
        Ok(ms) if ms >= least => None,
        _ => Some(format!(
            "delete.retention.ms is {value:?}: tombstones must stay at least {least} ms, since a standby copy or a \
             partition back on its former owner catches up on the changelog's tail from records up to an hour \
             old and would miss deletions whose tombstones are gone (set delete.retention.ms to {least} or more; \
             the default is 86400000)"
        )),
    }
}

/// The configs the check reads, as the broker describes them.
struct Described {
    policy: Option<String>,
    delete_retention_ms: Option<String>,
}

/// The topic's configs the check needs, as the broker describes them.
fn described(kafka: &Connection, topic: &str) -> Result<Described, ToolError> {
    let admin = Admin::connect(kafka)?;
    let described =
        admin.wait(admin.client.describe_configs(&[ResourceSpecifier::Topic(topic)], &admin.options))?;
    let not_described = |message: String| ToolError::Topic { topic: topic.to_string(), message };
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| not_described("the broker described no configs".into()))?
        .map_err(|code| not_described(format!("describing its configs: {code}")))?;
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
    Ok(Described { policy: value("cleanup.policy"), delete_retention_ms: value("delete.retention.ms") })
}

#[cfg(test)]
mod tests {
    use super::{policy_problem, tombstones_problem};

    #[test]
    fn tombstones_must_outlive_a_catch_up() {
        assert_eq!(tombstones_problem(None), None, "the default, a day");
        assert_eq!(tombstones_problem(Some("86400000")), None);
        assert_eq!(tombstones_problem(Some("7200000")), None);
        for short in ["7199999", "60000", "-1", "soon"] {
            let why = tombstones_problem(Some(short)).expect("refused");
            assert!(why.contains("delete.retention.ms") && why.contains("7200000 or more"), "{why}");
        }
    }

    #[test]
    fn only_compaction_without_deletion_keeps_every_state() {
        assert_eq!(policy_problem(Some("compact")), None);
        assert_eq!(policy_problem(Some(" compact ")), None);
        let deleted = policy_problem(Some("delete")).expect("delete is refused");
        assert!(
            deleted.contains("not \"compact\"") && deleted.contains("set cleanup.policy=compact"),
            "{deleted}"
        );
        for both in ["compact,delete", "delete, compact"] {
            let why = policy_problem(Some(both)).expect("compact with delete is refused");
            assert!(why.contains("retention.ms"), "{why}");
        }
        let unset = policy_problem(None).expect("the broker's default is not trusted");
        assert!(unset.contains("not set") && unset.contains("set cleanup.policy=compact"), "{unset}");
    }
}
