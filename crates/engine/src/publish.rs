//! The Kafka side of a cycle: beginning its transaction and producing its
//! outbox, alongside its RocksDB commit.

use super::outbox::{self, Destination, HEADER_TXN};
use super::{Failpoint, TxnFailure, classify, committer};
use crate::clients::EngineProducer;
use crate::cycle::{CommittedCycle, InFlight, join_commit};
use accrual_store::{Store, StoreError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use std::time::{Duration, Instant};

/// The cycle's RocksDB commit (unsynced: the Kafka commit's thread syncs
/// the WAL) on this thread and, alongside, the Kafka side: the previous
/// transaction ends, then (if it committed) this one begins and its
/// records go to the producer, so librdkafka sends them meanwhile. None is
/// visible to readers before the Kafka commit, which waits for the RocksDB
/// commit; a crash in between leaves an open transaction the next start
/// aborts. Returns the previous cycle with its outcome, this one's
/// producing (none if not begun) and the RocksDB commit's result.
#[expect(
    clippy::type_complexity,
    reason = "three outcomes of the overlapped step, each taken by another part of the cycle"
)]
pub(super) fn write_and_begin(
    store: &Store,
    batch: accrual_store::LedgerBatch<'_>,
    (producer, topics, failpoint): (&EngineProducer, &crate::config::TopicsConfig, &Failpoint),
    txn: &str,
    sinks: &mut [outbox::OutboxSink],
    previous: Option<InFlight>,
    report: &mut crate::metrics::CycleReport,
) -> (
    Option<(CommittedCycle, committer::Finished)>,
    Option<(Option<TxnFailure>, Duration)>,
    Result<(), StoreError>,
) {
    std::thread::scope(|scope| {
        let kafka_side = scope.spawn(move || {
            let previous = previous.map(|f| {
                let finished = join_commit(f.handle);
                (f.cycle, finished)
            });
            let produced = previous.as_ref().is_none_or(|(_, f)| f.result.is_ok()).then(|| {
                let started = Instant::now();
                (begin_and_produce(producer, topics, txn, sinks), started.elapsed())
            });
            (previous, produced)
        });
        failpoint.hit("before-state-commit");
        let committing = Instant::now();
        let committed = store.commit_unsynced(batch);
        report.rocksdb_commit = committing.elapsed();
        let joining = Instant::now();
        let (previous, produced) = kafka_side.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        report.waiting += joining.elapsed();
        (previous, produced, committed)
    })
}

/// Begins the transaction `txn` and produces the cycle's outbox into it;
/// the failure, if any.
pub(super) fn begin_and_produce(
    producer: &EngineProducer,
    topics: &crate::config::TopicsConfig,
    txn: &str,
    sinks: &mut [outbox::OutboxSink],
) -> Option<TxnFailure> {
    begin(producer).err().map(classify).or_else(|| {
        let entries = sinks.iter_mut().flat_map(|s| s.entries().map(|(_, entry)| entry));
        produce(producer, topics, txn, entries).err()
    })
}

/// Begins a transaction. Progress records delivered before (an aborted
/// transaction's) are not this one's: forgotten first.
pub(super) fn begin(producer: &EngineProducer) -> rdkafka::error::KafkaResult<()> {
    producer.context().take();
    producer.begin_transaction()
}

/// Produces the messages of encoded outbox entries into the open
/// transaction `txn`.
pub(super) fn produce<'e>(
    producer: &EngineProducer,
    topics: &crate::config::TopicsConfig,
    txn: &str,
    entries: impl Iterator<Item = &'e [u8]>,
) -> Result<(), TxnFailure> {
    for entry in entries {
        let messages = outbox::messages(entry)
            .map_err(|e| TxnFailure::Abortable(format!("an outbox entry does not decode: {e}")))?;
        for m in messages {
            let topic = match m.destination {
                Destination::Accruals => &topics.accruals,
                Destination::DeadLetter => &topics.dead_letter,
                Destination::Input => &topics.input,
                Destination::Changelog | Destination::ChangelogTombstone => {
                    produce_change(producer, topics, &m)?;
                    continue;
                }
            };
            let mut headers = OwnedHeaders::new_with_capacity(5);
            for (key, value) in m.headers() {
                headers = headers.insert(Header { key, value: Some(value) });
            }
            headers = headers.insert(Header { key: HEADER_TXN, value: Some(txn) });
            let mut record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(topic).payload(m.payload).headers(headers);
            if !m.key.is_empty() {
                record = record.key(m.key);
            }
            crate::kafka_tools::send(producer, record).map_err(classify)?;
        }
    }
    Ok(())
}

/// Produces a changelog message: to the changelog's partition of the
/// state's own (the first bytes of its key after the family), a tombstone
/// for a delete. Unlike the other topics' records it carries no
/// `accrual.txn` header: readers of the changelog (restores, standby
/// copies) go by its progress records, and each record would otherwise
/// carry its bytes and a header list librdkafka allocates per message.
fn produce_change(
    producer: &EngineProducer,
    topics: &crate::config::TopicsConfig,
    m: &outbox::Message<'_>,
) -> Result<(), TxnFailure> {
    let Some(topic) = &topics.changelog else {
        return Err(TxnFailure::Abortable(
            "the outbox holds changelog messages but no changelog topic is configured (kafka.topics.changelog)"
                .into(),
        ));
    };
    let value = (m.destination == Destination::Changelog).then_some(m.payload);
    let Some(change) = accrual_store::changelog::from_message(m.key, value) else {
        return Err(TxnFailure::Abortable("an outbox changelog message has no partition in its key".into()));
    };
    let partition = change.partition().unwrap_or_default() as i32;
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(m.key).partition(partition);
    if let Some(value) = value {
        record = record.payload(value);
    }
    crate::kafka_tools::send(producer, record).map_err(classify)
}
