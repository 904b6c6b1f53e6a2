//! Restoring a partition's state from the changelog: on assignment, when
//! the local state is missing, or older than what the group committed (a
//! lost disk, a partition that moved), the partition's local state is
//! dropped and its changelog partition read from the beginning to its last
//! committed transaction (`read_committed`), every change written back in
//! large RocksDB batches. The changelog is written in the transactions that
//! commit the input offsets, so what it holds ends exactly at the group's
//! committed offset; the assignment then checks that it does.

use crate::config::EngineConfig;
use crate::outbox::HEADER_TXN;
use accrual_store::changelog::{self, Restore};
use accrual_store::{Progress, Store, StoreError};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The partition's progress as the changelog left it (none: the
    /// changelog held nothing for it).
    pub progress: Option<Progress>,
    /// Changelog records applied, and their keys' and values' bytes.
    pub changes: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading changelog {topic} partition {partition}: {source}")]
    Kafka {
        topic: String,
        partition: u32,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("changelog {topic} partition {partition} offset {offset}: {what}")]
    Foreign { topic: String, partition: u32, offset: i64, what: String },
    #[error(
        "changelog {topic} partition {partition}: nothing arrived for {idle:?} before its end (offset {end})"
    )]
    Stalled { topic: String, partition: u32, end: i64, idle: Duration },
}

/// Replaces `partition`'s local state with what its changelog holds, up
/// to the last record of `committed_txn`, the transaction that committed
/// the group's offset (its metadata): records after it belong to
/// transactions that never committed, which a broker that does not filter
/// aborted transactions still shows. Without it, everything is applied.
pub fn restore_partition(
    config: &EngineConfig,
    store: &Store,
    topic: &str,
    partition: u32,
    committed_txn: Option<&str>,
    idle: Duration,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let kafka = |source| RestoreError::Kafka { topic: topic.to_string(), partition, source };
    let consumer = crate::clients::restore_consumer(config).map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition as i32, idle).map_err(kafka)?;
    let end = match committed_txn {
        Some(txn) => last_record_of(&consumer, topic, partition, txn, (low, high), idle)?,
        None => Some(high - 1),
    };
    store.drop_partition(partition)?;
    let mut restore = Restore::new(store);
    if let Some(end) = end.filter(|&end| end >= low) {
        let mut applying = |m: &BorrowedMessage<'_>| -> Result<(), RestoreError> {
            let foreign = |what: &str| RestoreError::Foreign {
                topic: topic.to_string(),
                partition,
                offset: m.offset(),
                what: what.to_string(),
            };
            let key = m.key().ok_or_else(|| foreign("a record without a key"))?;
            let change = changelog::from_message(key, m.payload())
                .ok_or_else(|| foreign("a key this engine does not write"))?;
            if change.partition() != Some(partition) {
                return Err(foreign("a change of another partition (is the topic co-partitioned?)"));
            }
            Ok(restore.apply(&change)?)
        };
        read(&consumer, topic, partition, Offset::Beginning, end, idle, &mut applying)?;
    }
    let (changes, bytes) = (restore.changes, restore.bytes);
    restore.finish()?;
    Ok(Restored { progress: store.progress(partition)?, changes, bytes, elapsed: started.elapsed() })
}

/// The offset of the last record of transaction `txn` in the partition,
/// looked for in a window at the end of the log that doubles until found
/// (a committing transaction is the last of its partition but for
/// transactions that never committed).
fn last_record_of(
    consumer: &BaseConsumer,
    topic: &str,
    partition: u32,
    txn: &str,
    (low, high): (i64, i64),
    idle: Duration,
) -> Result<Option<i64>, RestoreError> {
    let mut window = 1_000;
    loop {
        let from = (high - window).max(low);
        let mut found = None;
        read(consumer, topic, partition, Offset::Offset(from), high - 1, idle, &mut |m| {
            let named =
                m.headers().and_then(|h| h.iter().find(|h| h.key == HEADER_TXN)).and_then(|h| h.value);
            if named == Some(txn.as_bytes()) {
                found = Some(m.offset());
            }
            Ok(())
        })?;
        if found.is_some() || from == low {
            return Ok(found);
        }
        window *= 4;
    }
}

/// Reads the partition from `from` until offset `end` (or its end of log),
/// handing each record to `each`.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    partition: u32,
    from: Offset,
    end: i64,
    idle: Duration,
    each: &mut dyn FnMut(&BorrowedMessage<'_>) -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let kafka = |source| RestoreError::Kafka { topic: topic.to_string(), partition, source };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition as i32, from).map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            None if last.elapsed() > idle => {
                return Err(RestoreError::Stalled { topic: topic.to_string(), partition, end, idle });
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => return Err(kafka(e)),
            Some(Ok(m)) => {
                last = Instant::now();
                if m.offset() > end {
                    return Ok(());
                }
                each(&m)?;
                if m.offset() == end {
                    return Ok(());
                }
            }
        }
    }
}
