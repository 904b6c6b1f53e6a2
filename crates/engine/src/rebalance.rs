//! Partition assignment. The rebalance callback runs inside the consumer's
//! `poll`, on the engine's thread, between commit cycles; it first waits
//! for the previous cycle's Kafka commit (see `committer`), so no work is
//! in flight when a partition comes or goes. On assignment, each partition's
//! start offset comes from RocksDB and is written into the assignment (not
//! sought afterwards); the group's committed offset decides whether outbox
//! entries must be published again first.

use accrual_store::owner::Owner;
use accrual_store::{Progress, Store};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, BTreeSet};
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
    /// Its state goes to the changelog once the recovery committed (see
    /// `restore::Restored::publish_after_recovery`).
    pub publish_after_recovery: bool,
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
    pub error: Option<AssignmentError>,
    pub rebalances: u64,
    /// Last stable offset per partition, from librdkafka's statistics.
    pub stable_offsets: BTreeMap<u32, i64>,
    /// Assignments refused since the start.
    pub refusals: u64,
    /// Partitions restored from the changelog since the start, and the
    /// changes applied.
    pub restores: u64,
    pub restored_changes: u64,
    pub restored_bytes: u64,
    /// The longest restore so far.
    pub restore_longest: Duration,
    /// Restored partitions whose cached account states the workers must
    /// drop before they process them (taken by the engine's cycle).
    pub restored_to_forget: Vec<u32>,
    /// Assigned partitions whose state is being restored from the
    /// changelog (paused at the group's offset until then).
    pub restoring: BTreeMap<u32, crate::restore::Restoring>,
    /// Restores of partitions revoked meanwhile, stopping.
    pub cancelled: Vec<(u32, crate::restore::Restoring)>,
    /// Partitions whose restore has finished and that the engine is taking
    /// up (between `restoring` and `owned`): still assigned here, so that
    /// no standby copy is kept of them meanwhile.
    pub taking_up: BTreeSet<u32>,
    /// This instance and the group generation it holds its partitions in,
    /// recorded with every batch's progress.
    pub owner: Arc<Owner>,
    /// Owned partitions whose whole state an operator asked to publish to
    /// the changelog again (see `republish`), taken by the next cycle.
    pub republish_asked: BTreeSet<u32>,
}

impl Assignment {
    /// Owned partitions whose state is being published to the changelog
    /// again (paused, but answering lookups).
    pub fn republishing(&self) -> impl Iterator<Item = u32> + '_ {
        let republish = |r: &crate::restore::Restoring| r.purpose == crate::restore::Purpose::Republish;
        self.restoring.iter().filter(move |(_, r)| republish(r)).map(|(p, _)| *p)
    }
}

/// What an assigned partition is to do.
enum Start {
    Own(Owned),
    /// Restore its state from the changelog, to the group's offset (or,
    /// if the group has none, as far as the changelog goes).
    Restore {
        committed: Option<u64>,
    },
}

/// What stops the engine from inside librdkafka's callbacks.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// The input topic's partition count is not the one the state was
    /// built under (see [`check_partition_count`]).
    #[error("{0}")]
    PartitionCount(String),
    #[error("partition {partition}: reading its progress: {source}")]
    Progress {
        partition: u32,
        #[source]
        source: accrual_store::StoreError,
    },
    #[error("rebalance failed: {0}")]
    Rebalance(#[source] rdkafka::error::KafkaError),
}

/// Decides where a partition starts, from local progress and the group's
/// committed offset.
pub fn start_offset(local: Option<Progress>, committed: Option<u64>) -> Result<Owned, String> {
    match (local, committed) {
        (None, None) | (None, Some(0)) => Ok(Owned {
            progress: Progress::default(),
            committed,
            needs_recovery: false,
            publish_after_recovery: false,
        }),
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
            let needs_recovery = committed_at < p.next_offset;
            Ok(Owned { progress: p, committed, needs_recovery, publish_after_recovery: false })
        }
    }
}

const INPUT_PARTITIONS: &[u8] = b"input_partitions";

/// The input topic's partition count must stay the one the state was built
/// under: the key decides an account's partition, so with another count
/// the same account's events land in another partition, which holds none
/// of its balances, caps or purchases. The first count seen is recorded.
pub fn check_partition_count(store: &Store, topic: &str, count: u32) -> Result<(), String> {
    let stored = store.meta(INPUT_PARTITIONS).map_err(|e| e.to_string())?;
    match stored.and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok()).map(u32::from_be_bytes) {
        Some(was) if was != count => Err(format!(
            "the input topic {topic} has {count} partitions, but the state in {} was built when it had {was}: \
             accounts would now hash to other partitions, splitting their balances, caps and refunds. \
             Refusing to process. Restore the topic to {was} partitions (see docs/operations.md, \
             \"Changing the input partition count\")",
            store.path().display()
        )),
        Some(_) => Ok(()),
        None => {
            let mut batch = store.batch();
            batch.put_meta(INPUT_PARTITIONS, &count.to_be_bytes());
            store.commit(batch).map_err(|e| e.to_string())
        }
    }
}

/// The input topic's partition count in the broker's metadata, if known.
pub fn topic_partitions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> Option<u32> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let t = metadata.topics().first()?;
    (!t.partitions().is_empty()).then_some(t.partitions().len() as u32)
}

/// The consumer group generation librdkafka holds (-1 if it knows none):
/// the crate does not expose it, librdkafka's C API does.
pub fn group_generation<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> i32 {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer's handle. The metadata returned is
    // a copy owned here, read and destroyed before returning.
    unsafe {
        let metadata = rdkafka::bindings::rd_kafka_consumer_group_metadata(rk);
        if metadata.is_null() {
            return -1;
        }
        let generation = rdkafka::bindings::rd_kafka_consumer_group_metadata_generation_id(metadata);
        rdkafka::bindings::rd_kafka_consumer_group_metadata_destroy(metadata);
        generation
    }
}

/// The offset a list of committed offsets holds for `partition`, if one
/// was committed.
pub fn committed_offset(committed: &TopicPartitionList, topic: &str, partition: u32) -> Option<u64> {
    committed.find_partition(topic, partition as i32).and_then(|e| match e.offset() {
        Offset::Offset(o) if o >= 0 => Some(o as u64),
        _ => None,
    })
}

/// How many input messages a partition whose progress is `next` lost, when
/// its log now starts at `log_start`.
pub fn input_gap(next: u64, log_start: i64) -> Option<u64> {
    u64::try_from(log_start).ok().filter(|&low| low > next).map(|low| low - next)
}

pub struct EngineContext {
    pub store: Arc<Store>,
    /// This instance's id (`engine.instance_id`).
    pub instance: String,
    pub topic: String,
    pub assignment: Arc<Mutex<Assignment>>,
    pub timeout: Duration,
    /// Busy while a Kafka commit is in flight.
    pub commits: Arc<super::committer::Gate>,
    /// Go on past input removed before it was processed.
    pub skip_input_gaps: bool,
    /// The changelog to restore partitions from, if the state has one.
    pub changelog: Option<ChangelogSource>,
}

/// Where partitions' state is restored from.
pub struct ChangelogSource {
    pub config: Arc<crate::config::EngineConfig>,
    pub topic: String,
}

impl EngineContext {
    pub fn lock(assignment: &Mutex<Assignment>) -> MutexGuard<'_, Assignment> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters more than the panic itself.
        assignment.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> KafkaResult<()> {
        if let Some(count) = topic_partitions(consumer, &self.topic, self.timeout) {
            if let Err(problem) = check_partition_count(&self.store, &self.topic, count) {
                tracing::error!("{problem}");
                // Nothing is processed: the loop stops on the error.
                Self::lock(&self.assignment).error = Some(AssignmentError::PartitionCount(problem));
                return consumer.assign(&TopicPartitionList::new());
            }
        }
        let committed = consumer.committed_offsets(tpl.clone(), self.timeout)?;
        let mut decided = Vec::new();
        for elem in tpl.elements() {
            let partition = elem.partition();
            let p = partition as u32;
            let y = committed_offset(&committed, elem.topic(), p);
            let local = match self.store.progress(p) {
                Ok(local) => local,
                Err(e) => {
                    Self::lock(&self.assignment).error =
                        Some(AssignmentError::Progress { partition: p, source: e });
                    continue;
                }
            };
            let decision = match self.needs_restore() {
                true => Ok(Start::Restore { committed: y }),
                false => match (start_offset(local, y), local) {
                    (Ok(owned), Some(_)) => self.check_gap(consumer, p, owned).map(Start::Own),
                    (decision, _) => decision.map(Start::Own),
                },
            };
            decided.push((p, decision));
        }
        let mut paused = TopicPartitionList::new();
        let owner = Owner { instance: self.instance.clone(), generation: group_generation(consumer) };
        {
            let mut a = Self::lock(&self.assignment);
            a.generation += 1;
            a.rebalances += 1;
            if *a.owner != owner {
                tracing::info!(generation = owner.generation, "joined the group's generation");
                a.owner = Arc::new(owner);
            }
            for (p, decision) in decided {
                let (offset, pause) = match decision {
                    Ok(Start::Own(owned)) => {
                        tracing::info!(
                            partition = p,
                            start_offset = owned.progress.next_offset,
                            committed_offset = owned.committed,
                            recovery = owned.needs_recovery,
                            "partition assigned"
                        );
                        a.refused.remove(&p);
                        a.owned.insert(p, owned);
                        (Offset::Offset(owned.progress.next_offset as i64), false)
                    }
                    Ok(Start::Restore { committed }) => {
                        match self.start_restore(&mut a, p, committed) {
                            // Paused; sought to where the state ends once restored.
                            Ok(()) => (Offset::Offset(committed.unwrap_or(0) as i64), true),
                            Err(reason) => (self.refuse(&mut a, p, reason), true),
                        }
                    }
                    Err(reason) => (self.refuse(&mut a, p, reason), true),
                };
                tpl.set_partition_offset(&self.topic, p as i32, offset)?;
                if pause {
                    paused.add_partition(&self.topic, p as i32);
                }
            }
        }
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl)?,
            _ => consumer.assign(tpl)?,
        }
        if paused.count() > 0 {
            consumer.pause(&paused)?;
        }
        Ok(())
    }

    /// Refuses an assigned partition: it stays paused, at its end.
    pub(crate) fn refuse(&self, a: &mut Assignment, p: u32, reason: String) -> Offset {
        tracing::error!(partition = p, "partition refused: {reason}");
        a.owned.remove(&p);
        a.refused.insert(p, reason);
        a.refusals += 1;
        Offset::End
    }

    /// Whether a partition's state goes through the changelog: always, if
    /// there is one. Local state is then kept only if it provably
    /// continues the group's (see `restore`), and restored otherwise, even
    /// when the group has no offsets (they may have expired): the
    /// changelog's own progress then says where the partition resumes.
    fn needs_restore(&self) -> bool {
        self.changelog.is_some()
    }

    /// Starts restoring `p` on a thread of its own, once any earlier
    /// restore of it (revoked meanwhile) has stopped.
    pub(crate) fn start_restore(
        &self,
        a: &mut Assignment,
        p: u32,
        committed: Option<u64>,
    ) -> Result<(), String> {
        let Some(from) = &self.changelog else { return Err("no changelog to restore from".into()) };
        let (stopping, others): (Vec<_>, Vec<_>) =
            std::mem::take(&mut a.cancelled).into_iter().partition(|(q, _)| *q == p);
        a.cancelled = others;
        for (_, earlier) in stopping {
            let _ = earlier.join();
        }
        if let Some(running) = a.restoring.remove(&p) {
            running.cancel();
            let _ = running.join();
        }
        tracing::info!(
            partition = p,
            committed_offset = committed,
            restore = true,
            changelog = %from.topic,
            "partition assigned; checking its state against the changelog"
        );
        let job = crate::restore::RestoreJob {
            config: from.config.clone(),
            store: self.store.clone(),
            topic: from.topic.clone(),
            partition: p,
            committed,
            idle: self.timeout,
        };
        let restoring = crate::restore::Restoring::start(job, crate::restore::Purpose::Restore)
            .map_err(|e| format!("starting its restore: {e}"))?;
        a.refused.remove(&p);
        a.owned.remove(&p);
        a.restoring.insert(p, restoring);
        Ok(())
    }

    /// Input a partition's progress has not reached, but the log no longer
    /// holds (retention removed it): reported loudly, and the partition
    /// refused unless gaps are to be skipped.
    pub fn check_gap(&self, consumer: &BaseConsumer<Self>, p: u32, owned: Owned) -> Result<Owned, String> {
        let low = match consumer.fetch_watermarks(&self.topic, p as i32, self.timeout) {
            Ok((low, _)) => low,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "could not read the partition's log start");
                return Ok(owned);
            }
        };
        let Some(lost) = input_gap(owned.progress.next_offset, low) else { return Ok(owned) };
        let next = owned.progress.next_offset;
        crate::metrics::input_gap(lost);
        let what = format!(
            "offsets {next}..{low} of input partition {p} were removed (retention) before they were processed: \
             {lost} events never accrued"
        );
        if self.skip_input_gaps {
            tracing::error!(partition = p, lost, "{what}; skipping them (engine.skip_input_gaps)");
            Ok(owned)
        } else {
            Err(format!(
                "{what}. Refusing to skip them: replay them from their source, or set engine.skip_input_gaps \
                 to go on without them (docs/operations.md)"
            ))
        }
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
                a.owned.keys().chain(a.refused.keys()).chain(a.restoring.keys()).copied().collect()
            };
            for p in revoked {
                a.owned.remove(&p);
                a.refused.remove(&p);
                a.taking_up.remove(&p);
                if let Some(restoring) = a.restoring.remove(&p) {
                    restoring.cancel();
                    a.cancelled.push((p, restoring));
                }
                tracing::info!(partition = p, "partition revoked");
            }
        }
        if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
    }
}

impl ClientContext for EngineContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the last
    /// stable offset of each partition, for the lag metric; and the input
    /// topic's partition count as the client's metadata has it. A change of
    /// count does not always bring a rebalance (a group whose members keep
    /// their partitions may never rejoin), so it is checked here too.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let count = topic.partitions.keys().filter(|p| **p >= 0).count() as u32;
        let changed = match count {
            0 => None,
            n => check_partition_count(&self.store, &self.topic, n).err(),
        };
        let mut a = Self::lock(&self.assignment);
        if let Some(problem) = changed.filter(|_| a.error.is_none()) {
            tracing::error!("{problem}");
            a.error = Some(AssignmentError::PartitionCount(problem));
        }
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
            Self::lock(&self.assignment).error = Some(AssignmentError::Rebalance(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_core::time::Timestamp;

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

    #[test]
    fn a_log_starting_past_the_progress_is_a_gap() {
        assert_eq!(input_gap(10, 10), None);
        assert_eq!(input_gap(10, 3), None);
        assert_eq!(input_gap(10, -1), None, "no watermark known");
        assert_eq!(input_gap(10, 25), Some(15));
    }

    #[test]
    fn the_partition_count_is_recorded_once_and_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), &accrual_store::StoreOptions { sync: false, ..Default::default() })
                .unwrap();
        assert_eq!(check_partition_count(&store, "t", 4), Ok(()));
        assert_eq!(check_partition_count(&store, "t", 4), Ok(()));
        let e = check_partition_count(&store, "t", 6).unwrap_err();
        assert!(e.contains("has 6 partitions, but the state") && e.contains("when it had 4"), "{e}");
    }
}
