//! The benchmark's baseline: the cheapest exactly-once hop this broker
//! allows. Consume, produce the same bytes, commit the input offsets in the
//! same Kafka transaction, with the engine's client settings, commit
//! interval and batch size; no decoding, no rules, no RocksDB. The engine
//! cannot be faster than this on the same broker.

use crate::config::EngineConfig;
use crate::engine::clients;
use crate::engine::outbox::{HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_TXN};
use crate::engine::{EngineError, RunSummary, kafka};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, DefaultConsumerContext};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Copies the input topic to the accruals topic until `stop` is set or no
/// input arrives for `idle` (once partitions are assigned).
pub fn passthrough(
    config: &EngineConfig,
    stop: &AtomicBool,
    idle: Duration,
) -> Result<RunSummary, EngineError> {
    let timeout = Duration::from_millis(config.engine.kafka_timeout_ms);
    let consumer =
        clients::consumer(config, DefaultConsumerContext).map_err(kafka("creating the consumer"))?;
    let producer = clients::producer(config).map_err(kafka("creating the producer"))?;
    producer.init_transactions(timeout).map_err(kafka("initialising transactions"))?;
    let topics = &config.kafka.topics;
    consumer.subscribe(&[&topics.input]).map_err(kafka("subscribing"))?;

    let interval = Duration::from_millis(config.engine.commit_interval_ms);
    let max_batch = config.engine.max_batch;
    // Copied out of librdkafka's buffers as the engine does.
    let mut arena: Vec<u8> = Vec::with_capacity(max_batch * 320);
    // (partition, offset, key range, payload range) in the arena.
    type Span = (usize, usize);
    let mut polled: Vec<(i32, i64, Span, Span)> = Vec::with_capacity(max_batch);
    let mut summary = RunSummary::default();
    let mut first: Option<Instant> = None;
    let mut last_input = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        arena.clear();
        polled.clear();
        let deadline = Instant::now() + interval;
        while polled.len() < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left) {
                None => {}
                Some(Ok(m)) => {
                    let k = arena.len();
                    arena.extend_from_slice(m.key().unwrap_or_default());
                    let v = arena.len();
                    arena.extend_from_slice(m.payload().unwrap_or_default());
                    polled.push((m.partition(), m.offset(), (k, v), (v, arena.len())));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        if polled.is_empty() {
            if consumer.assignment().is_ok_and(|a| a.count() == 0) {
                last_input = Instant::now();
            }
            if last_input.elapsed() >= idle {
                break;
            }
            continue;
        }
        last_input = Instant::now();
        let started = *first.get_or_insert(last_input);
        seq += 1;
        let txn = format!("{}:{seq}", config.transactional_id());
        producer.begin_transaction().map_err(kafka("beginning a transaction"))?;
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for &(partition, offset, key, payload) in &polled {
            let (p, o) = (partition.to_string(), offset.to_string());
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(&p) })
                .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(&o) })
                .insert(Header { key: HEADER_TXN, value: Some(&txn) });
            let mut record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&topics.accruals).payload(&arena[payload.0..payload.1]).headers(headers);
            if key.1 > key.0 {
                record = record.key(&arena[key.0..key.1]);
            }
            crate::kafka_tools::send(&producer, record).map_err(kafka("producing"))?;
            next.insert(partition, offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, x) in &next {
            tpl.add_partition_offset(&topics.input, *p, Offset::Offset(*x)).map_err(kafka("offsets"))?;
        }
        let group = consumer.group_metadata().ok_or(EngineError::NoGroupMetadata)?;
        producer.send_offsets_to_transaction(&tpl, &group, timeout).map_err(kafka("sending offsets"))?;
        crate::kafka_tools::commit_transaction(&producer, timeout).map_err(kafka("committing"))?;
        producer.poll(Duration::ZERO);
        summary.events += polled.len() as u64;
        summary.records += polled.len() as u64;
        summary.transactions += 1;
        summary.busy = started.elapsed();
    }
    Ok(summary)
}
