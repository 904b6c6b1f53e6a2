//! One commit cycle: the polled messages processed by the workers, their
//! state, outbox and journal entry committed in one RocksDB batch, their
//! records published in a Kafka transaction whose commit runs on the
//! committer's thread while the next cycle polls (see [`committer`]).

use super::{Engine, EngineContext, EngineError, TxnFailure, classify, kafka, outbox, wall_clock, workers};
use crate::committer;
use crate::journal::TxnId;
use crate::publish::{begin_and_produce, write_and_begin};
use crate::rebalance::Owned;
use accrual_core::time::Timestamp;
use accrual_store::Progress;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A cycle whose state is committed, and its Kafka transaction.
pub(crate) struct CommittedCycle {
    id: TxnId,
    offsets: Vec<(u32, u64)>,
    report: crate::metrics::CycleReport,
    /// When its Kafka commit started.
    started: Instant,
}

/// A cycle whose Kafka commit is running.
pub(crate) struct InFlight {
    pub(crate) cycle: CommittedCycle,
    pub(crate) handle: std::thread::JoinHandle<committer::Finished>,
}

/// The outcome of a Kafka commit thread (a panic counts as fatal).
pub(crate) fn join_commit(handle: std::thread::JoinHandle<committer::Finished>) -> committer::Finished {
    handle.join().unwrap_or_else(|_| committer::Finished {
        result: Err(TxnFailure::Fatal("the Kafka commit thread panicked".into())),
        durable: Ok(()),
        at: Instant::now(),
        wall_ms: wall_clock().0,
        progress_at: BTreeMap::new(),
    })
}

/// One polled message, copied out of librdkafka's buffer.
pub(crate) struct Polled {
    partition: u32,
    offset: u64,
    /// Kafka timestamp (ms), for the end-to-end latency metric.
    timestamp: Option<i64>,
    key: (usize, usize),
    payload: (usize, usize),
}

/// What a cycle's partitions became, for its commit.
#[derive(Default)]
struct Processed {
    /// (partition, next offset): what the transaction commits.
    offsets: Vec<(u32, u64)>,
    progress: Vec<(u32, Progress)>,
    sinks: Vec<outbox::OutboxSink>,
    /// Clocks that left accounts due: (partition, their time).
    cut_clocks: Vec<(u32, Timestamp)>,
}

/// The polled messages to process, by partition: only partitions still
/// owned, only offsets not yet applied.
fn work_of(polled: &[Polled], owned: &BTreeMap<u32, Owned>) -> BTreeMap<u32, Vec<workers::Message>> {
    let mut by_partition: BTreeMap<u32, Vec<workers::Message>> = BTreeMap::new();
    for m in polled {
        match owned.get(&m.partition) {
            Some(o) if m.offset >= o.progress.next_offset => {
                by_partition.entry(m.partition).or_default().push(workers::Message {
                    offset: m.offset,
                    key: m.key.0..m.key.1,
                    payload: m.payload.0..m.payload.1,
                    timestamp: m.timestamp.map(Timestamp),
                });
            }
            _ => {}
        }
    }
    by_partition
}

/// A cycle's report, with each processed partition's message count and
/// oldest timestamp.
fn cycle_report(
    polled: &[Polled],
    by_partition: &BTreeMap<u32, Vec<workers::Message>>,
    polling: Duration,
) -> crate::metrics::CycleReport {
    let mut report = crate::metrics::CycleReport { polling, ..Default::default() };
    for m in polled.iter().filter(|m| by_partition.contains_key(&m.partition)) {
        let e = report.partitions.entry(m.partition).or_insert((0, None));
        e.0 += 1;
        if let Some(ts) = m.timestamp {
            e.1 = Some(e.1.map_or(ts, |o: i64| o.min(ts)));
        }
    }
    report
}

impl Engine {
    /// Polls until `deadline`, `max_batch` messages or `stop`, copying each
    /// message's key and payload into `arena`.
    pub(crate) fn poll(
        &self,
        arena: &mut Vec<u8>,
        polled: &mut Vec<Polled>,
        deadline: Instant,
        stop: &AtomicBool,
    ) {
        let max_batch = self.config.engine.max_batch;
        while polled.len() < max_batch && !stop.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.consumer.poll(left) {
                None => {}
                Some(Ok(m)) => {
                    let key_start = arena.len();
                    arena.extend_from_slice(m.key().unwrap_or_default());
                    let payload_start = arena.len();
                    arena.extend_from_slice(m.payload().unwrap_or_default());
                    polled.push(Polled {
                        partition: m.partition() as u32,
                        offset: m.offset() as u64,
                        timestamp: m.timestamp().to_millis(),
                        key: (key_start, payload_start),
                        payload: (payload_start, arena.len()),
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            }
        }
    }

    /// One commit cycle over the polled messages: processed while the
    /// previous cycle's Kafka commit runs, then published in a transaction
    /// of its own once that one has ended (see [`committer`]).
    /// Returns the messages' buffer, emptied, for the next cycle.
    pub(crate) fn cycle(
        &mut self,
        arena: Vec<u8>,
        polled: &[Polled],
        polling: Duration,
    ) -> Result<Vec<u8>, EngineError> {
        let (owned, restored, owner) = {
            let mut a = EngineContext::lock(&self.assignment);
            (a.owned.clone(), std::mem::take(&mut a.restored_to_forget), a.owner.clone())
        };
        // A restored partition's cached states are older than its state.
        self.workers.retain_owned(|p| owned.contains_key(&p) && !restored.contains(&p));
        let by_partition = work_of(polled, &owned);
        if by_partition.is_empty() {
            self.finish_inflight()?;
            self.flush_marks()?;
            return Ok(arena);
        }
        let started = Instant::now();
        let mut report = cycle_report(polled, &by_partition, polling);
        let work = by_partition
            .into_iter()
            .map(|(partition, messages)| workers::PartitionWork {
                partition,
                progress: owned[&partition].progress,
                messages,
            })
            .collect();
        let buffer = Arc::new(arena);
        let (staged, done) = self.workers.process(buffer.clone(), work, &owner)?;
        // The workers hold no copy once they have answered.
        let mut arena = Arc::try_unwrap(buffer).unwrap_or_default();
        arena.clear();
        let processed = self.take_results(done, &mut report)?;
        report.processing = started.elapsed();
        self.commit_cycle(staged, processed, report)?;
        Ok(arena)
    }

    /// Counts what the workers did, reads again what a batch left after its
    /// clocks, and keeps each partition's sink, offset and progress.
    fn take_results(
        &mut self,
        done: Vec<workers::PartitionDone>,
        report: &mut crate::metrics::CycleReport,
    ) -> Result<Processed, EngineError> {
        let mut out = Processed::default();
        for workers::PartitionDone { partition: p, mut sink, stats, progress, cut_clock } in done {
            if stats.unprocessed > 0 {
                self.read_again_from(p, progress.next_offset)?;
                if let Some(e) = report.partitions.get_mut(&p) {
                    e.0 -= stats.unprocessed.min(e.0);
                }
            }
            out.cut_clocks.extend(cut_clock.map(|(at, _)| (p, at)));
            report.clock_accounts += stats.clock_accounts;
            report.clocks_cut += stats.clocks_cut;
            self.summary.events += stats.inputs;
            self.summary.records += stats.records;
            self.summary.dead_letters += stats.dead_letters;
            self.summary.duplicates += stats.duplicates;
            self.summary.no_effect += stats.no_effect;
            report.duplicates += sink.duplicates;
            report.records.merge(std::mem::take(&mut sink.records));
            for (reason, n) in std::mem::take(&mut sink.dead) {
                *report.dead_letters.entry(reason).or_default() += n;
            }
            out.sinks.push(sink);
            out.offsets.push((p, progress.next_offset));
            out.progress.push((p, progress));
        }
        Ok(out)
    }

    /// Commits a processed cycle: its state, outbox and journal entry in
    /// one RocksDB batch, then its records into a transaction of its own,
    /// committed on the committer's thread once the previous one ended.
    fn commit_cycle(
        &mut self,
        staged: Vec<accrual_store::Staged>,
        processed: Processed,
        mut report: crate::metrics::CycleReport,
    ) -> Result<(), EngineError> {
        let Processed { offsets, progress, mut sinks, cut_clocks } = processed;
        let store = self.store.clone();
        // An outcome already known rides in this WriteBatch (a failed
        // transaction is published again first, keeping them in order).
        let waiting = Instant::now();
        if self.inflight.as_ref().is_some_and(|f| f.handle.is_finished()) {
            self.finish_inflight()?;
        }
        report.waiting = waiting.elapsed();
        // The workers' batches as they are, the cycle's own changes after
        // them (they touch other keys: journal entries, outbox below the
        // committed offsets).
        let mut batch = store.batch_from(staged);
        self.stage_housekeeping(&mut batch);
        // Opened while the previous transaction may still be committing:
        // then two entries are open, each decided from the offsets after a
        // crash (see [`journal`]).
        let id = self.journal.open(&mut batch, &offsets);
        let txn_text = id.to_string();
        let previous = self.inflight.take();
        let two_open = previous.is_some();
        let kafka = (&*self.producer, &self.config.kafka.topics, &*self.failpoint);
        let (previous, produced, committed) =
            write_and_begin(&store, batch, kafka, &txn_text, &mut sinks, previous, &mut report);
        committed?;
        self.workers.committed();
        {
            let mut a = EngineContext::lock(&self.assignment);
            for (p, progress) in progress {
                if let Some(o) = a.owned.get_mut(&p) {
                    o.progress = progress;
                }
            }
        }
        if let Some((cycle, finished)) = previous {
            if two_open && finished.result.is_ok() {
                self.failpoint.hit("after-previous-kafka-commit");
            }
            self.settle(cycle, finished)?;
        }
        // Not begun when the previous transaction failed: it was aborted
        // and published again above, so this one begins now.
        let failed = match produced {
            Some((failed, took)) => {
                report.producing = took;
                failed
            }
            None => {
                let started = Instant::now();
                let failed =
                    begin_and_produce(&self.producer, &self.config.kafka.topics, &txn_text, &mut sinks);
                report.producing = started.elapsed();
                failed
            }
        };
        self.workers.recycle(sinks);
        crate::metrics::cycle(self.metrics.as_deref(), &report);
        self.failpoint.hit("after-state-commit");
        self.start_commit(CommittedCycle { id, offsets, report, started: Instant::now() }, failed)?;
        self.follow_up_clocks(&cut_clocks);
        Ok(())
    }

    /// A partition's batch ended before its last polled message (after a
    /// clock that fired many accounts): the consumer reads the rest again.
    fn read_again_from(&self, partition: u32, offset: u64) -> Result<(), EngineError> {
        tracing::debug!(partition, offset, "the batch ended after its clocks; reading the rest again");
        let topic = &self.config.kafka.topics.input;
        self.consumer
            .seek(topic, partition as i32, Offset::Offset(offset as i64), self.timeout)
            .map_err(kafka("seeking back to the input left after a clock"))
    }

    /// Clocks that left accounts due (`max_accounts_per_clock`) are followed
    /// by another clock of the same time to the same partition, so the rest
    /// are fired in the next cycles without waiting for the next tick. The
    /// follow-up is input like any clock: replays of the topic see it. If it
    /// is lost (a crash before it is sent), the next clock goes on instead.
    fn follow_up_clocks(&self, cut: &[(u32, Timestamp)]) {
        // One message per time, to every partition a clock of it left.
        let mut by_time: BTreeMap<Timestamp, Vec<i32>> = BTreeMap::new();
        for &(partition, at) in cut {
            by_time.entry(at).or_default().push(partition as i32);
        }
        for (at, partitions) in by_time {
            self.ticker.follow_up(at, partitions);
        }
    }

    /// Starts the Kafka commit of `cycle`, whose records (unless `failed`)
    /// are in its open transaction, on a thread of its own.
    fn start_commit(&mut self, cycle: CommittedCycle, failed: Option<TxnFailure>) -> Result<(), EngineError> {
        let txn = cycle.id.to_string();
        let spawned = match failed {
            Some(failure) => Err(failure),
            None => self.offsets_to_commit(&txn, &cycle.offsets).and_then(|(tpl, group)| {
                let job = committer::Job {
                    producer: self.producer.clone(),
                    tpl,
                    group,
                    timeout: self.timeout,
                    failpoint: self.failpoint.clone(),
                    store: self.store.clone(),
                    sync: self.config.engine.sync_wal,
                    id: cycle.id.clone(),
                    offsets: cycle.offsets.clone(),
                    member_until: self.polled_at + self.config.membership_timeout(),
                };
                committer::spawn(job, self.commits.clone())
                    .map_err(|e| TxnFailure::Abortable(format!("starting the Kafka commit: {e}")))
            }),
        };
        match spawned {
            Ok(handle) => self.inflight = Some(InFlight { cycle, handle }),
            Err(failure) => self.fail_and_republish(cycle.id, cycle.offsets, failure, cycle.started)?,
        }
        Ok(())
    }

    /// Waits for the in-flight Kafka commit, and records its outcome; if it
    /// failed, aborts and publishes the outbox again.
    pub(crate) fn finish_inflight(&mut self) -> Result<(), EngineError> {
        let Some(f) = self.inflight.take() else { return Ok(()) };
        let finished = join_commit(f.handle);
        self.settle(f.cycle, finished)
    }

    /// Records how a cycle's Kafka commit ended; if it failed, aborts and
    /// publishes the outbox again.
    fn settle(&mut self, f: CommittedCycle, finished: committer::Finished) -> Result<(), EngineError> {
        // The WAL could not be synced: nothing was committed in Kafka, and
        // the store takes no more writes; a restart recovers.
        finished.durable?;
        match finished.result {
            Ok(()) => {
                let took = finished.at.saturating_duration_since(f.started);
                tracing::debug!(
                    txn = %f.id,
                    polling_ms = f.report.polling.as_millis() as u64,
                    processing_ms = f.report.processing.as_millis() as u64,
                    waiting_ms = f.report.waiting.as_millis() as u64,
                    producing_ms = f.report.producing.as_millis() as u64,
                    rocksdb_commit_ms = f.report.rocksdb_commit.as_millis() as u64,
                    kafka_commit_ms = took.as_millis() as u64,
                    "cycle committed"
                );
                crate::metrics::committed(took, &f.report, finished.wall_ms);
                self.note_positions(&f.offsets, &finished.progress_at, finished.wall_ms);
                self.committed(f.id, f.offsets, finished.at);
                Ok(())
            }
            Err(failure) => self.fail_and_republish(f.id, f.offsets, failure, f.started),
        }
    }

    /// The input offsets as the transaction `txn` commits them (its id as
    /// their metadata), and the consumer's group metadata, read fresh: a
    /// rebalance may have moved the generation, and stale metadata would
    /// let a zombie commit.
    pub(crate) fn offsets_to_commit(
        &self,
        txn: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(TopicPartitionList, ConsumerGroupMetadata), TxnFailure> {
        if self.consumer.assignment_lost() {
            return Err(TxnFailure::NotMember("librdkafka reports this instance's assignment lost".into()));
        }
        let topic = &self.config.kafka.topics.input;
        let mut tpl = TopicPartitionList::new();
        for &(p, x) in offsets {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(x as i64)).map_err(classify)?;
            if let Some(mut elem) = tpl.find_partition(topic, p as i32) {
                elem.set_metadata(txn);
            }
        }
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| TxnFailure::Abortable("the consumer has no group metadata".into()))?;
        Ok((tpl, group))
    }
}
