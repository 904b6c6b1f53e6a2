//! Partition assignment. The rebalance callback runs inside the consumer's
//! `poll`, on the engine's thread, between commit cycles; it first waits
//! for the previous cycle's Kafka commit (see `committer`), so no work is
//! in flight when a partition comes or goes. On assignment, each partition's
//! start offset comes from RocksDB and is written into the assignment (not
//! sought afterwards); the group's committed offset decides whether outbox
//! entries must be published again first.

use crate::store::{Progress, Store};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A partition this instance owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    /// Next offset to process and stream time, as in RocksDB.
    pub progress: Progress,
    /// The group's committed offset when it was assigned (`None`: never
    /// committed). Below `progress.next_offset`, the outbox in between must
    /// be published again before new work.
    pub committed: Option<u64>,
    pub needs_recovery: bool,
}

/// What the engine owns, shared between the rebalance callback and the loop.
#[derive(Debug, Default)]
pub struct Assignment {
    pub owned: BTreeMap<u32, Owned>,
    /// Assigned but not processed: the reason (state behind the group).
    pub refused: BTreeMap<u32, String>,
    /// Bumped by every rebalance.
    pub generation: u64,
    /// A failure inside the callback the loop must report (it cannot
    /// return errors itself).
    pub error: Option<String>,
    pub rebalances: u64,
    /// Last stable offset per partition, from librdkafka's statistics.
    pub stable_offsets: BTreeMap<u32, i64>,
}

/// Decides where a partition starts, from local progress and the group's
/// committed offset.
pub fn start_offset(local: Option<Progress>, committed: Option<u64>) -> Result<Owned, String> {
    match (local, committed) {
        (None, None) | (None, Some(0)) => {
            Ok(Owned { progress: Progress::default(), committed, needs_recovery: false })
        }
        (None, Some(y)) => Err(format!(
            "no local state, but the group has committed offset {y}: this instance would recompute balances from \
             nothing. Moving state between instances arrives with the changelog; until then run each partition on \
             the instance that holds its state (or restore that state directory)"
        )),
        (Some(p), Some(y)) if y > p.next_offset => Err(format!(
            "local state ends at offset {} but the group has committed offset {y}: another instance processed \
             this partition since. Refusing to continue from stale balances",
            p.next_offset
        )),
        (Some(p), y) => {
            let committed_at = y.unwrap_or(0);
            Ok(Owned { progress: p, committed, needs_recovery: committed_at < p.next_offset })
        }
    }
}

pub struct EngineContext {
    pub store: Arc<Store>,
    pub topic: String,
    pub assignment: Arc<Mutex<Assignment>>,
    pub timeout: Duration,
    /// Busy while a Kafka commit is in flight.
    pub commits: Arc<super::committer::Gate>,
}

impl EngineContext {
    pub fn lock(assignment: &Mutex<Assignment>) -> MutexGuard<'_, Assignment> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters more than the panic itself.
        assignment.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> KafkaResult<()> {
        let committed = consumer.committed_offsets(tpl.clone(), self.timeout)?;
        let mut decided = Vec::new();
        for elem in tpl.elements() {
            let partition = elem.partition();
            let y = committed.find_partition(elem.topic(), partition).and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            });
            let p = partition as u32;
            let local = match self.store.progress(p) {
                Ok(local) => local,
                Err(e) => {
                    Self::lock(&self.assignment).error = Some(format!("partition {p}: {e}"));
                    continue;
                }
            };
            decided.push((p, start_offset(local, y)));
        }
        let mut refused = TopicPartitionList::new();
        {
            let mut a = Self::lock(&self.assignment);
            a.generation += 1;
            a.rebalances += 1;
            for (p, decision) in decided {
                match decision {
                    Ok(owned) => {
                        tpl.set_partition_offset(
                            &self.topic,
                            p as i32,
                            Offset::Offset(owned.progress.next_offset as i64),
                        )?;
                        tracing::info!(
                            partition = p,
                            start_offset = owned.progress.next_offset,
                            committed_offset = owned.committed,
                            recovery = owned.needs_recovery,
                            "partition assigned"
                        );
                        a.refused.remove(&p);
                        a.owned.insert(p, owned);
                    }
                    Err(reason) => {
                        tracing::error!(partition = p, "partition refused: {reason}");
                        tpl.set_partition_offset(&self.topic, p as i32, Offset::End)?;
                        refused.add_partition(&self.topic, p as i32);
                        a.owned.remove(&p);
                        a.refused.insert(p, reason);
                    }
                }
            }
        }
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl)?,
            _ => consumer.assign(tpl)?,
        }
        if refused.count() > 0 {
            consumer.pause(&refused)?;
        }
        Ok(())
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> KafkaResult<()> {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        {
            let mut a = Self::lock(&self.assignment);
            a.generation += 1;
            a.rebalances += 1;
            let revoked: Vec<u32> = if cooperative {
                tpl.elements().iter().map(|e| e.partition() as u32).collect()
            } else {
                a.owned.keys().chain(a.refused.keys()).copied().collect()
            };
            for p in revoked {
                a.owned.remove(&p);
                a.refused.remove(&p);
                tracing::info!(partition = p, "partition revoked");
            }
        }
        if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
    }
}

impl ClientContext for EngineContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the last
    /// stable offset of each partition, for the lag metric.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut a = Self::lock(&self.assignment);
        for (p, partition) in &topic.partitions {
            if *p >= 0 {
                let stable = if partition.ls_offset >= 0 { partition.ls_offset } else { partition.hi_offset };
                if stable >= 0 {
                    a.stable_offsets.insert(*p as u32, stable);
                }
            }
        }
    }
}

impl ConsumerContext for EngineContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        // Offsets being committed belong to the partitions as assigned now.
        if !self.commits.wait_idle(self.timeout) {
            tracing::warn!("a Kafka commit is still in flight after the Kafka timeout; rebalancing anyway");
        }
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                Self::lock(&self.assignment).owned.clear();
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            Self::lock(&self.assignment).error = Some(format!("rebalance failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn at(next: u64) -> Option<Progress> {
        Some(Progress { next_offset: next, stream_time: Timestamp(0) })
    }

    #[test]
    fn start_offsets() {
        assert_eq!(start_offset(None, None).unwrap().progress.next_offset, 0);
        let same = start_offset(at(10), Some(10)).unwrap();
        assert_eq!((same.progress.next_offset, same.needs_recovery), (10, false));
        let ahead = start_offset(at(10), Some(7)).unwrap();
        assert_eq!((ahead.progress.next_offset, ahead.needs_recovery, ahead.committed), (10, true, Some(7)));
        let never = start_offset(at(4), None).unwrap();
        assert!(never.needs_recovery);
        assert!(start_offset(None, Some(5)).unwrap_err().contains("no local state"));
        assert!(start_offset(at(3), Some(5)).unwrap_err().contains("Refusing"));
    }
}
