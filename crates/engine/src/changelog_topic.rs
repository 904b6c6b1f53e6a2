//! Whether a changelog topic can hold the state it is given: it must exist,
//! have the input's partition count (partition p's state goes to partition
//! p, and a restore reads only that one), and be compacted without
//! deletion, since retention would drop the states of accounts idle longer
//! than `retention.ms` and a restore could not tell. `accrual topics` and
//! `accrual run` check it, so a topic made by other tooling with the
//! broker's defaults (`cleanup.policy=delete`) is refused before any state
//! goes to it.

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
    match cleanup_policy(kafka, changelog) {
        Ok(policy) => policy_problem(policy.as_deref()).map_or(Ok(()), |why| Err(problem(why))),
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

/// The topic's `cleanup.policy`, as the broker describes it.
fn cleanup_policy(kafka: &Connection, topic: &str) -> Result<Option<String>, ToolError> {
    let admin = Admin::connect(kafka)?;
    let described =
        admin.wait(admin.client.describe_configs(&[ResourceSpecifier::Topic(topic)], &admin.options))?;
    let not_described = |message: String| ToolError::Topic { topic: topic.to_string(), message };
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| not_described("the broker described no configs".into()))?
        .map_err(|code| not_described(format!("describing its configs: {code}")))?;
    Ok(resource.get("cleanup.policy").and_then(|e| e.value.clone()))
}

#[cfg(test)]
mod tests {
    use super::policy_problem;

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
