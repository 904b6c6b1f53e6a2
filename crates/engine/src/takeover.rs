//! Taking up a partition whose restore finished: its state checked
//! against the group's offset and the rules, then owned and resumed where
//! that state ends; or refused, with the reason on `/readyz`.

use crate::rebalance::{self, EngineContext, Owned};
use crate::{Engine, EngineError, kafka, reload, restore};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

impl Engine {
    /// Takes up partitions whose restore finished: owned from the group's
    /// offset, their cached states dropped, resumed there; or refused.
    pub(crate) fn finish_restores(&mut self) -> Result<(), EngineError> {
        let finished: Vec<(u32, restore::Restoring)> = {
            let mut a = EngineContext::lock(&self.assignment);
            let (done, stopping): (Vec<_>, Vec<_>) =
                std::mem::take(&mut a.cancelled).into_iter().partition(|(_, r)| r.is_finished());
            a.cancelled = stopping;
            drop(done);
            let ready: Vec<u32> =
                a.restoring.iter().filter(|(_, r)| r.is_finished()).map(|(p, _)| *p).collect();
            a.taking_up.extend(ready.iter().copied());
            ready.into_iter().filter_map(|p| a.restoring.remove(&p).map(|r| (p, r))).collect()
        };
        let Some(from) = self.config.kafka.topics.changelog.clone() else { return Ok(()) };
        for (p, restoring) in finished {
            let (committed, reported, purpose) = (restoring.committed, restoring.reported, restoring.purpose);
            let result = match (purpose, restoring.join()) {
                (restore::Purpose::Republish, Err(source)) => {
                    return Err(EngineError::Republish { partition: p, source });
                }
                (_, result) => result,
            };
            let owned = restore::outcome(&from, committed, result)
                .and_then(|restored| self.take_up(p, committed, reported, restored, purpose));
            let owned = match owned {
                Ok(owned) => owned,
                Err(reason) => {
                    tracing::error!(partition = p, "partition refused: {reason}");
                    let mut a = EngineContext::lock(&self.assignment);
                    a.taking_up.remove(&p);
                    a.refused.insert(p, reason);
                    a.refusals += 1;
                    continue;
                }
            };
            {
                let mut a = EngineContext::lock(&self.assignment);
                a.taking_up.remove(&p);
                a.owned.insert(p, owned);
            }
            let topic = &self.config.kafka.topics.input;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, p as i32);
            let start = Offset::Offset(owned.progress.next_offset as i64);
            self.consumer
                .seek(topic, p as i32, start, self.timeout)
                .map_err(kafka("seeking a restored partition to where its state ends"))?;
            self.consumer.resume(&tpl).map_err(kafka("resuming a restored partition"))?;
        }
        Ok(())
    }

    /// Where a partition whose state was checked against the changelog
    /// starts: from its own state if that was kept (the outbox protocol
    /// then handles state ahead of the group), else from the restored
    /// state's progress.
    fn take_up(
        &self,
        p: u32,
        committed: Option<u64>,
        reported: u64,
        restored: restore::Restored,
        purpose: restore::Purpose,
    ) -> Result<Owned, String> {
        reload::check_partition(&self.store, &self.timeline, p)?;
        // A standby's copy is this instance's own state from now on.
        accrual_store::changelog::forget_standby_position(&self.store, p).map_err(|e| e.to_string())?;
        if restored.kept {
            let mut owned = rebalance::start_offset(restored.progress, committed)
                .and_then(|owned| self.consumer.context().check_gap(&self.consumer, p, owned))?;
            owned.publish_after_recovery = restored.publish_after_recovery && owned.needs_recovery;
            let what = match purpose {
                restore::Purpose::Restore => "partition assigned; its local state continues the group's",
                restore::Purpose::Republish => {
                    "partition resumed; its state was published to the changelog again"
                }
            };
            tracing::info!(
                partition = p,
                start_offset = owned.progress.next_offset,
                committed_offset = committed,
                recovery = owned.needs_recovery,
                "{what}"
            );
            return Ok(owned);
        }
        let progress = restored.progress.unwrap_or_default();
        let mut a = EngineContext::lock(&self.assignment);
        // An empty changelog (a new partition) restores nothing.
        if restored.changes > 0 {
            crate::metrics::restored(
                restored.changes.saturating_sub(reported),
                restored.bytes,
                restored.elapsed,
            );
            a.restores += 1;
            a.restored_changes += restored.changes;
            a.restored_bytes += restored.bytes;
            a.restore_longest = a.restore_longest.max(restored.elapsed);
        }
        tracing::info!(
            partition = p,
            changes = restored.changes,
            bytes = restored.bytes,
            seconds = restored.elapsed.as_secs_f64(),
            start_offset = progress.next_offset,
            "partition restored from the changelog"
        );
        a.restored_to_forget.push(p);
        Ok(Owned { progress, committed, needs_recovery: false, publish_after_recovery: false })
    }
}
