//! Publishing an owned partition's whole state to its changelog again
//! while the engine runs, as an operator asks (`POST
//! /v1/partitions/{p}/changelog/republish`): the repair for a changelog
//! `accrual changelog check` found different, without stopping the
//! group (`accrual changelog republish` needs every instance stopped).
//!
//! Between two cycles the engine waits for its Kafka commit in flight,
//! so that no transaction of the partition is open and its state is the
//! group's, then pauses the partition and publishes the state on a thread
//! of its own, as a restore runs (see `bootstrap::republish_partition`):
//! the other partitions go on meanwhile, and this one's lookups are
//! answered from its state, which does not change. Once published, the
//! partition is taken up again where its state ends, as after a restore
//! that kept it.

use crate::rebalance::EngineContext;
use crate::restore::{Purpose, RestoreJob, Restoring};
use crate::{Engine, EngineError, kafka};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;

impl Engine {
    /// Starts the republishes asked for since the last cycle.
    pub(crate) fn start_republishes(&mut self) -> Result<(), EngineError> {
        let asked = std::mem::take(&mut EngineContext::lock(&self.assignment).republish_asked);
        if asked.is_empty() {
            return Ok(());
        }
        let Some(source) = &self.consumer.context().changelog else { return Ok(()) };
        let (config, topic) = (source.config.clone(), source.topic.clone());
        // The state published must be the group's: no transaction of the
        // partition may be open.
        self.finish_inflight()?;
        self.flush_marks()?;
        let input = self.config.kafka.topics.input.clone();
        let mut paused = TopicPartitionList::new();
        let mut a = EngineContext::lock(&self.assignment);
        for p in asked {
            let Some(owned) = a.owned.get(&p).copied().filter(|o| !o.needs_recovery) else {
                tracing::warn!(
                    partition = p,
                    "asked to publish the partition's state to the changelog again, but it is not owned here \
                     (any more) or is recovering: not published"
                );
                continue;
            };
            let job = RestoreJob {
                config: config.clone(),
                store: self.store.clone(),
                topic: topic.clone(),
                partition: p,
                committed: Some(owned.progress.next_offset),
                idle: self.timeout,
            };
            match Restoring::start(job, Purpose::Republish) {
                Ok(running) => {
                    tracing::info!(
                        partition = p,
                        offset = owned.progress.next_offset,
                        "publishing the partition's whole state to the changelog again, as asked; \
                         the partition is paused meanwhile"
                    );
                    a.owned.remove(&p);
                    a.restoring.insert(p, running);
                    paused.add_partition(&input, p as i32);
                }
                Err(e) => tracing::error!(partition = p, error = %e, "could not start publishing its state"),
            }
        }
        drop(a);
        if paused.count() > 0 {
            self.consumer.pause(&paused).map_err(kafka("pausing a partition to publish its state"))?;
        }
        Ok(())
    }
}
