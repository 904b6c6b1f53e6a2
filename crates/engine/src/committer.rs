//! The Kafka commit of a cycle, on a thread of its own.
//!
//! A commit waits for every record of the cycle to be delivered, then for
//! the round trips of the offsets and of the commit itself: tens of
//! milliseconds, a good part of a cycle. So once a cycle's state is
//! committed in RocksDB and its records are produced, the commit runs here
//! while the engine's thread polls, processes and commits to RocksDB the
//! next cycle; that cycle waits for the outcome before it begins its own
//! transaction. At most one transaction is in flight, each commits (or is
//! aborted and published again) before the next begins, and the rebalance
//! callback waits for it, so partitions never move while their offsets are
//! being committed.

use super::journal::{Journal, TxnId, TxnStatus};
use super::{Failpoint, TxnFailure, classify};
use crate::clients::EngineProducer;
use accrual_store::{Store, StoreError};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::TopicPartitionList;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether a commit is in flight, for the rebalance callback to wait on.
#[derive(Debug, Default)]
pub struct Gate {
    busy: Mutex<bool>,
    idle: Condvar,
}

impl Gate {
    fn set(&self, busy: bool) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = busy;
        self.idle.notify_all();
    }

    /// Waits until no commit is in flight (or `timeout` passes: false).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let (busy, _) =
            self.idle.wait_timeout_while(busy, timeout, |b| *b).unwrap_or_else(|p| p.into_inner());
        !*busy
    }
}

/// Marks the gate idle when the commit thread ends, even by a panic.
struct Leave(Arc<Gate>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What the commit thread reports.
pub struct Finished {
    pub result: Result<(), TxnFailure>,
    /// Whether the cycle's state was made durable first (when it was
    /// committed to RocksDB unsynced); without it nothing was committed.
    pub durable: Result<(), StoreError>,
    pub at: Instant,
    /// The wall clock at the end, in ms (for the end-to-end latency metric).
    pub wall_ms: i64,
    /// If committed: the changelog offset of each partition's progress
    /// record in it.
    pub progress_at: BTreeMap<u32, i64>,
}

/// Adds the input offsets `tpl` to the open transaction and commits it,
/// retrying retriable errors (3 times each); unless `member_until` has
/// passed (see [`end`]).
pub fn commit(
    producer: &EngineProducer,
    tpl: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
    failpoint: &Failpoint,
    member_until: Instant,
) -> Result<(), TxnFailure> {
    add_offsets(producer, tpl, group, timeout)?;
    end(producer, timeout, failpoint, member_until)
}

fn add_offsets(
    producer: &EngineProducer,
    tpl: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
) -> Result<(), TxnFailure> {
    let mut attempt = 0;
    loop {
        match producer.send_offsets_to_transaction(tpl, group, timeout) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 3 => attempt += 1,
            Err(e) => return Err(classify(e)),
        }
    }
}

/// Commits the open transaction. Not once `member_until` has passed: the
/// group then may have removed this instance (its session timed out while
/// it was paused, say) and given its partitions to another, which a broker
/// that does not fence by generation would let both commit.
fn end(
    producer: &EngineProducer,
    timeout: Duration,
    failpoint: &Failpoint,
    member_until: Instant,
) -> Result<(), TxnFailure> {
    // A pause first lets the producer send what it holds (a crash then
    // leaves the transaction's records at the broker, uncommitted).
    failpoint.delay("slow-kafka-commit");
    failpoint.hit("before-kafka-commit");
    if let Some(late) = Instant::now().checked_duration_since(member_until) {
        return Err(TxnFailure::NotMember(format!(
            "this instance last polled the group more than its session timeout ago (by {late:?}): the group may \
             have given its partitions to another instance"
        )));
    }
    if failpoint.trips("fail-kafka-commit") {
        // As a commit that times out: slow, then abortable.
        std::thread::sleep(Duration::from_millis(300));
        return Err(TxnFailure::Abortable("failpoint fail-kafka-commit: the commit failed".into()));
    }
    let mut attempt = 0;
    loop {
        match crate::kafka_tools::commit_transaction(producer, timeout) {
            Ok(()) => break,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 3 => attempt += 1,
            Err(e) => return Err(classify(e)),
        }
    }
    failpoint.hit("after-kafka-commit");
    // Serve delivery reports so their queue never grows.
    producer.poll(Duration::ZERO);
    Ok(())
}

/// [`commit`], once `unsynced` (the store the cycle's state was committed
/// to without a WAL sync, if so) is synced: the sync runs alongside the
/// offsets' round trips to the broker, which make nothing visible.
fn commit_durably(
    producer: &EngineProducer,
    tpl: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
    timeout: Duration,
    failpoint: &Failpoint,
    unsynced: Option<&Store>,
    member_until: Instant,
) -> (Result<(), TxnFailure>, Result<(), StoreError>) {
    let (added, durable) = std::thread::scope(|scope| {
        let syncing = unsynced.map(|store| scope.spawn(move || store.sync_wal()));
        let added = add_offsets(producer, tpl, group, timeout);
        let durable =
            syncing.map_or(Ok(()), |h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        (added, durable)
    });
    let result = match (&durable, added) {
        (Err(e), _) => Err(TxnFailure::Abortable(format!("the state is not durable: {e}"))),
        (Ok(()), Err(failure)) => Err(failure),
        (Ok(()), Ok(())) => end(producer, timeout, failpoint, member_until),
    };
    (result, durable)
}

/// Aborts the open transaction. librdkafka waits for the delivery reports
/// of what was sent, which nobody serves during the call on a
/// `BaseProducer`: so they are served here while it runs on a thread.
pub fn abort(producer: &EngineProducer, timeout: Duration) -> Result<(), KafkaError> {
    std::thread::scope(|scope| {
        let aborting = scope.spawn(|| producer.abort_transaction(timeout));
        while !aborting.is_finished() {
            producer.poll(Duration::from_millis(10));
        }
        aborting.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A cycle's Kafka commit, to run on its own thread.
pub struct Job {
    pub producer: Arc<EngineProducer>,
    /// The input offsets, with the transaction id as their metadata.
    pub tpl: TopicPartitionList,
    pub group: ConsumerGroupMetadata,
    pub timeout: Duration,
    pub failpoint: Arc<Failpoint>,
    pub store: Arc<Store>,
    /// The cycle's state was committed unsynced: sync the WAL first.
    pub sync: bool,
    pub id: TxnId,
    pub offsets: Vec<(u32, u64)>,
    /// Not committed after this (see [`end`]).
    pub member_until: Instant,
}

/// Runs a [`Job`] on a new thread; the gate is busy until it ends. A
/// failed commit is recorded `aborted` before the gate opens: the
/// rebalance callback may then hand its partitions to another instance,
/// whose commits must not make a crash here mistake it for committed.
pub fn spawn(job: Job, gate: Arc<Gate>) -> std::io::Result<JoinHandle<Finished>> {
    gate.set(true);
    let leave = Leave(gate.clone());
    std::thread::Builder::new().name("kafka-commit".into()).spawn(move || {
        let _leave = leave;
        let Job { producer, tpl, group, timeout, failpoint, store, sync, id, offsets, member_until } = job;
        let unsynced = sync.then_some(&*store);
        let (result, durable) =
            commit_durably(&producer, &tpl, &group, timeout, &failpoint, unsynced, member_until);
        if result.is_err() && durable.is_ok() {
            let mut batch = store.batch();
            Journal::mark(&mut batch, &id, TxnStatus::Aborted, &offsets);
            if let Err(e) = store.commit(batch) {
                tracing::warn!(txn = %id, error = %e, "could not record the failed transaction; the engine will");
            }
            failpoint.hit("after-recording-a-failed-commit");
        }
        // Every delivery report was served before the commit.
        let progress_at = if result.is_ok() { producer.context().take() } else { BTreeMap::new() };
        Finished { result, durable, at: Instant::now(), wall_ms: super::wall_clock().0, progress_at }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_waits_for_the_commit_to_end() {
        let gate = Arc::new(Gate::default());
        assert!(gate.wait_idle(Duration::ZERO));
        gate.set(true);
        assert!(!gate.wait_idle(Duration::from_millis(10)), "busy: the wait times out");
        let leave = Leave(gate.clone());
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_idle(Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(leave);
        assert!(waiter.join().expect("waiter"), "idle once the commit ended");
    }
}
