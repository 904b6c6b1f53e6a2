//! Checking a state directory against the changelog, and publishing a
//! partition's state to the changelog again (`accrual changelog check`
//! and `republish`).
//!
//! The check restores each partition's changelog, to its end, into a
//! scratch store and compares it with the local state key by key when
//! both are at the same input offset. It finds what the engine cannot
//! see on its own: a changelog that looks complete (it has a progress
//! record at the group's offset) but holds older values of some keys, as
//! one left stale by a version before reset records can (turned off for
//! a while, then on again). Compaction keeps only the newest value of a
//! key, so the state is compared only at the changelog's end: a local
//! state at another offset is reported, not compared.
//!
//! Republishing is the remedy: the partition's local state, at the
//! group's committed offset, is published to the changelog as a snapshot
//! (a reset, every key, the progress record), as the engine does when the
//! changelog lacks the state. It is refused while the group has members,
//! since an owner's next batch would then land on top of a snapshot of
//! an older state.

use crate::config::EngineConfig;
use crate::restore::{RestoreError, Watch};
use accrual_store::compare::{self, Comparison};
use accrual_store::owner::Stamped;
use accrual_store::{Progress, Store, StoreError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use std::collections::BTreeMap;
use std::time::Duration;

/// Differences named per partition.
const EXAMPLES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no changelog is configured (kafka.topics.changelog)")]
    NoChangelog,
    #[error("reading the group's committed offsets: {0}")]
    Group(#[source] KafkaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rules(#[from] accrual_core::rules::RulesError),
    #[error("partition {partition}: {reason}; not republished")]
    Refused { partition: u32, reason: String },
}

/// What checking one partition found.
#[derive(Debug)]
pub struct PartitionCheck {
    pub partition: u32,
    /// The local state's progress, as its owner recorded it.
    pub local: Stamped,
    /// The next offset of the state the changelog restores (none: it holds
    /// no progress of the partition since its last reset).
    pub changelog: Option<u64>,
    /// The group's committed offset (none: it has committed none).
    pub group: Option<u64>,
    /// The key by key comparison, if both are at the same offset.
    pub comparison: Option<Comparison>,
}

impl PartitionCheck {
    /// The local state is the group's (at its committed offset), and the
    /// changelog does not restore it as it is: a restore elsewhere would
    /// refuse the partition, or restore other values.
    pub fn is_failed(&self) -> bool {
        match &self.comparison {
            Some(c) => c.differing() > 0,
            None => self.group == Some(self.local.progress.next_offset),
        }
    }
}

/// The group's committed input offsets of `partitions` (those it has
/// committed), read through `group`, a client with the group's id.
pub fn group_offsets(
    config: &EngineConfig,
    group: &BaseConsumer,
    partitions: &[u32],
) -> Result<BTreeMap<u32, u64>, KafkaError> {
    let input = &config.kafka.topics.input;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(input, p as i32);
    }
    let timeout = Duration::from_millis(config.engine.kafka_timeout_ms);
    let committed = group.committed_offsets(tpl, timeout)?;
    Ok(partitions
        .iter()
        .filter_map(|&p| Some((p, crate::rebalance::committed_offset(&committed, input, p)?)))
        .collect())
}

/// Checks each of `partitions` of `local` against the changelog, restoring
/// it into `scratch` (an empty store) one partition at a time.
pub fn check(
    config: &EngineConfig,
    local: &Store,
    scratch: &Store,
    partitions: &[u32],
) -> Result<Vec<PartitionCheck>, CheckError> {
    let group_client = crate::clients::group_offsets_reader(config).map_err(CheckError::Group)?;
    let group = group_offsets(config, &group_client, partitions).map_err(CheckError::Group)?;
    let rules = accrual_core::rules::Timeline::load(&config.engine.rules)?;
    let mut out = Vec::new();
    for &partition in partitions {
        let Some(stamped) = local.stamped_progress(partition)? else { continue };
        let changelog = restore_into(config, scratch, partition)?;
        let Progress { next_offset: at, stream_time } = stamped.progress;
        // As the engine lets dedupe keys go (`LedgerBatch::set_progress`).
        let horizon = stream_time.0.saturating_sub(rules.at(stream_time).dedupe_window_ms);
        let comparison = match changelog == Some(at) {
            true => Some(compare::compare_partition(local, scratch, partition, horizon, EXAMPLES)?),
            false => None,
        };
        scratch.drop_partition(partition)?;
        out.push(PartitionCheck {
            partition,
            local: stamped,
            changelog,
            group: group.get(&partition).copied(),
            comparison,
        });
    }
    Ok(out)
}

/// Restores the whole of `partition`'s changelog into `scratch`; returns
/// the next offset of the state it holds.
fn restore_into(config: &EngineConfig, scratch: &Store, partition: u32) -> Result<Option<u64>, CheckError> {
    let topic = config.kafka.topics.changelog.as_deref().ok_or(CheckError::NoChangelog)?;
    let idle = Duration::from_millis(config.engine.kafka_timeout_ms);
    scratch.drop_partition(partition)?;
    let restored =
        crate::restore::restore_partition(config, scratch, topic, partition, None, idle, &Watch::default())?;
    Ok(restored.progress.map(|p| p.next_offset))
}

/// Publishes `partition`'s local state to the changelog as a snapshot, if
/// the group has no members and the state is at the group's committed
/// offset; returns the number of records. `store` must be open for
/// writing (the snapshot indexes its dedupe groups), which also proves
/// no engine runs on it.
pub fn republish(config: &EngineConfig, store: &Store, partition: u32) -> Result<u64, CheckError> {
    let topic = config.kafka.topics.changelog.as_deref().ok_or(CheckError::NoChangelog)?;
    let refused = |reason: String| CheckError::Refused { partition, reason };
    let client = crate::clients::group_offsets_reader(config).map_err(CheckError::Group)?;
    let group = &config.kafka.group_id;
    let members = crate::kafka_tools::group_members(&client, group)
        .map_err(|e| refused(format!("cannot tell whether group {group:?} has members ({e})")))?;
    if members > 0 {
        return Err(refused(format!(
            "group {group:?} has {members} members: stop every instance first, or ask the partition's owner \
             while it runs (POST /v1/partitions/{partition}/changelog/republish)"
        )));
    }
    let Some(local) = store.stamped_progress(partition)? else {
        return Err(refused("this state directory holds no state of it".into()));
    };
    let at = local.progress.next_offset;
    match group_offsets(config, &client, &[partition]).map_err(CheckError::Group)?.get(&partition) {
        Some(&committed) if committed == at => {}
        Some(committed) => {
            return Err(refused(format!(
                "its state is at input offset {at}, the group's committed offset is {committed}: \
                 it is not the group's state"
            )));
        }
        None => return Err(refused(format!("the group {group:?} has committed no offset of it"))),
    }
    let idle = Duration::from_millis(config.engine.kafka_timeout_ms);
    Ok(crate::bootstrap::publish_state(config, store, topic, partition, idle, &|| false)?)
}
