//! Recovery: deciding the transaction a crash left open, and publishing
//! the outbox again after a crash, an abort or a partition's return, in
//! transactions of their own (see `docs/exactly-once.md`).

use super::journal::{Journal, TxnId, TxnStatus};
use super::rebalance::{self, EngineContext};
use super::{Decided, Engine, EngineError, TxnFailure, classify, clients, committer, kafka, outbox, produce};
use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::TopicPartitionList;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Decides the transaction a crash left open (see [`crate::journal`]).
    pub(super) fn resolve_journal(&mut self) -> Result<(), EngineError> {
        // Each partition once, though two entries may name it.
        let open: std::collections::BTreeSet<u32> = Journal::open_entries(&self.store)?
            .iter()
            .flat_map(|e| e.offsets.iter().map(|&(p, _)| p))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &open {
            tpl.add_partition(&self.config.kafka.topics.input, *p as i32);
        }
        let committed =
            self.consumer.committed_offsets(tpl, self.timeout).map_err(kafka("reading committed offsets"))?;
        let topic = self.config.kafka.topics.input.clone();
        let decided =
            self.journal.resolve_open(&self.store, |p| rebalance::committed_offset(&committed, &topic, p))?;
        for (id, status) in decided {
            tracing::info!(txn = %id, status = status.name(), "resolved a transaction left open by a crash");
            let resolved = super::report::Resolved { txn: id.to_string(), status: status.name().to_string() };
            self.summary.resolved.push(resolved);
        }
        Ok(())
    }

    /// Publishes again the outbox of partitions assigned with work the group
    /// has not committed (after a crash, an abort, or a move back).
    pub(super) fn recover_assigned(&mut self) -> Result<(), EngineError> {
        let assignment = self.assignment.clone();
        let todo = || -> Vec<(u32, u64, u64)> {
            let a = EngineContext::lock(&assignment);
            a.owned
                .iter()
                .filter(|(_, o)| o.needs_recovery)
                .map(|(p, o)| (*p, o.committed.unwrap_or(0), o.progress.next_offset))
                .collect()
        };
        if todo().is_empty() {
            return Ok(());
        }
        // The in-flight commit's outcome decides what is left to publish
        // (a failed one publishes its partitions again itself).
        self.finish_inflight()?;
        let todo = todo();
        if todo.is_empty() {
            return Ok(());
        }
        self.republish(&todo)
    }

    /// Publishes outbox entries `[from, to)` of each partition and commits
    /// offset `to`, in one transaction, retrying until it works or the
    /// Kafka timeout has passed.
    pub(super) fn republish(&mut self, ranges: &[(u32, u64, u64)]) -> Result<(), EngineError> {
        self.finish_inflight()?;
        let mut entries = Vec::new();
        let mut messages = 0;
        for &(p, from, to) in ranges {
            // Read from the partition's first value: what is below `from`
            // was committed (and is cleared lazily), so only a few remain.
            for (key, value) in self.store.outbox(p, 0)? {
                let corrupt = |offset, e: outbox::CodecError| EngineError::Outbox {
                    partition: p,
                    offset,
                    detail: e.to_string(),
                };
                for (offset, entry) in outbox::stored_entries(key, &value).map_err(|e| corrupt(key, e))? {
                    if (from..to).contains(&offset) {
                        messages += outbox::messages(entry).map_err(|e| corrupt(offset, e))?.len();
                        entries.push(entry.to_vec());
                    }
                }
            }
        }
        let offsets: Vec<(u32, u64)> = ranges.iter().map(|&(p, _, to)| (p, to)).collect();
        tracing::info!(partitions = ?ranges, messages, "recovery: publishing the outbox again");
        self.failpoint.delay("slow-recovery");
        self.summary.recoveries += 1;
        crate::metrics::recovery();
        let started = Instant::now();
        let store = self.store.clone();
        loop {
            // Every outcome known goes in the same batch as this one's open
            // entry; nothing else is in flight (see [`journal`]).
            let mut batch = store.batch();
            self.stage_housekeeping(&mut batch);
            let id = self.journal.open(&mut batch, &offsets);
            store.commit(batch)?;
            match self.transact(&id, entries.iter().map(Vec::as_slice), &offsets) {
                Ok(()) => {
                    let progress_at = self.producer.context().take();
                    self.note_positions(&offsets, &progress_at, crate::wall_clock().0);
                    self.committed(id, offsets, Instant::now());
                    let mut publish = Vec::new();
                    let mut a = EngineContext::lock(&self.assignment);
                    for &(p, _, x) in ranges {
                        if let Some(o) = a.owned.get_mut(&p) {
                            o.needs_recovery = false;
                            o.committed = Some(x);
                            if std::mem::take(&mut o.publish_after_recovery) {
                                publish.push(p);
                            }
                        }
                    }
                    drop(a);
                    return self.publish_states(&publish);
                }
                Err(failure) => self.after_failure(id, &offsets, failure, started)?,
            }
        }
    }

    /// Publishes the state of partitions whose changelog did not hold it
    /// while their local state was ahead of the group's offset, now
    /// that the recovery committed it (see
    /// `restore::Restored::publish_after_recovery`). Before new work: the
    /// changelog must hold the state the partition's next changes apply
    /// to. Cut short by a crash, the next assignment publishes it: the
    /// changelog still holds no progress of the partition at the group's
    /// offset since its last reset (the outbox was staged with the
    /// changelog off, or the changelog would have been given the state
    /// before that cycle).
    fn publish_states(&self, partitions: &[u32]) -> Result<(), EngineError> {
        let Some(topic) = self.config.kafka.topics.changelog.as_deref() else { return Ok(()) };
        for &p in partitions {
            let started = Instant::now();
            let records =
                crate::bootstrap::publish_state(&self.config, &self.store, topic, p, self.timeout, &|| {
                    false
                })?;
            tracing::info!(
                partition = p,
                records,
                seconds = started.elapsed().as_secs_f64(),
                "published the partition's state to the changelog once its outbox was"
            );
        }
        Ok(())
    }

    /// Handles a failed transaction: abort it or replace the producer; gives
    /// up (error) once the Kafka timeout has passed since `started`.
    pub(super) fn after_failure(
        &mut self,
        id: TxnId,
        offsets: &[(u32, u64)],
        failure: TxnFailure,
        started: Instant,
    ) -> Result<(), EngineError> {
        self.summary.aborted += 1;
        crate::metrics::aborted(match failure {
            TxnFailure::Abortable(_) => "abortable",
            TxnFailure::Fatal(_) => "fatal",
            TxnFailure::NotMember(_) => "not_member",
        });
        let last = match failure {
            TxnFailure::Abortable(e) => {
                tracing::warn!(txn = %id, error = %e, "transaction failed; aborting and publishing again");
                if let Err(abort) = committer::abort(&self.producer, self.timeout) {
                    tracing::warn!(error = %abort, "abort failed; replacing the producer");
                    self.replace_producer()?;
                }
                e
            }
            TxnFailure::Fatal(e) => {
                tracing::error!(txn = %id, error = %e, "fatal producer error; replacing the producer");
                self.replace_producer()?;
                e
            }
            TxnFailure::NotMember(e) => {
                tracing::error!(txn = %id, error = %e, "not sure to be a member of the group; aborting");
                let aborted = committer::abort(&self.producer, self.timeout);
                self.pending_marks.push(Decided {
                    id,
                    status: TxnStatus::Aborted,
                    offsets: offsets.to_vec(),
                });
                self.flush_marks()?;
                aborted
                    .map_err(kafka("aborting the transaction of an instance that may have left the group"))?;
                return Err(EngineError::NotMember(e));
            }
        };
        self.pending_marks.push(Decided { id, status: TxnStatus::Aborted, offsets: offsets.to_vec() });
        if started.elapsed() >= self.timeout {
            return Err(EngineError::Unrecoverable { seconds: started.elapsed().as_secs(), last });
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    pub(super) fn replace_producer(&mut self) -> Result<(), EngineError> {
        let producer = clients::producer(&self.config).map_err(kafka("creating the producer"))?;
        producer.init_transactions(self.timeout).map_err(kafka("initialising transactions"))?;
        self.producer = Arc::new(producer);
        self.journal.new_epoch(&self.store)?;
        Ok(())
    }

    /// A cycle's transaction failed after its state was committed locally:
    /// abort it (or replace the producer) and publish the same outbox again
    /// for the partitions still owned. A partition revoked meanwhile keeps
    /// its outbox; it is published when the partition is assigned again.
    pub(super) fn fail_and_republish(
        &mut self,
        id: TxnId,
        offsets: Vec<(u32, u64)>,
        failure: TxnFailure,
        started: Instant,
    ) -> Result<(), EngineError> {
        self.after_failure(id, &offsets, failure, started)?;
        let owned: Vec<(u32, u64)> = {
            let a = EngineContext::lock(&self.assignment);
            offsets.into_iter().filter(|(p, _)| a.owned.contains_key(p)).collect()
        };
        if owned.is_empty() {
            // Recorded now: the partitions may be committed by others before
            // our next batch, and an open entry whose offsets were reached
            // would be taken as committed.
            return self.flush_marks();
        }
        let ranges = self.committed_ranges(&owned)?;
        self.republish(&ranges)
    }

    /// For partitions about to be republished: from the group's committed
    /// offset to the failed transaction's offset (a later cycle's outbox,
    /// already committed locally, is its own transaction's).
    pub(super) fn committed_ranges(
        &self,
        offsets: &[(u32, u64)],
    ) -> Result<Vec<(u32, u64, u64)>, EngineError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _) in offsets {
            tpl.add_partition(&self.config.kafka.topics.input, p as i32);
        }
        let committed =
            self.consumer.committed_offsets(tpl, self.timeout).map_err(kafka("reading committed offsets"))?;
        Ok(offsets
            .iter()
            .map(|&(p, x)| {
                let y =
                    rebalance::committed_offset(&committed, &self.config.kafka.topics.input, p).unwrap_or(0);
                (p, y.min(x), x)
            })
            .collect())
    }

    /// One Kafka transaction: the messages, then the input offsets (with the
    /// transaction id as their metadata), then commit.
    pub(super) fn transact<'e>(
        &mut self,
        id: &TxnId,
        entries: impl Iterator<Item = &'e [u8]>,
        offsets: &[(u32, u64)],
    ) -> Result<(), TxnFailure> {
        let txn = id.to_string();
        crate::publish::begin(&self.producer).map_err(classify)?;
        produce(&self.producer, &self.config.kafka.topics, &txn, entries)?;
        self.commit_offsets(&txn, offsets)
    }

    /// Adds the input offsets to the open transaction `txn` and commits it,
    /// on this thread.
    pub(super) fn commit_offsets(&mut self, txn: &str, offsets: &[(u32, u64)]) -> Result<(), TxnFailure> {
        let (tpl, group) = self.offsets_to_commit(txn, offsets)?;
        let member_until = Instant::now() + self.config.membership_timeout();
        committer::commit(&self.producer, &tpl, &group, self.timeout, &self.failpoint, member_until)
    }
}
