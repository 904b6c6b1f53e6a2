//! Publishing a partition's whole local state to a changelog that does
//! not hold it: turning the changelog on for a deployment that already
//! has state, or on again after it was off for a while. Without it the
//! changelog would hold only what changes from then on, and a restore
//! would silently miss every account that had not changed since, or take
//! the older state of those that changed while it was off.
//!
//! It runs in the partition's restore step, so the partition stays paused
//! at the group's offset and its state cannot change meanwhile. The
//! snapshot starts with a reset (readers drop what they read before it)
//! and ends with the state's progress record. The producer is idempotent
//! but not transactional: a snapshot cut short leaves a reset with no
//! progress record after it, so the changelog holds no progress of the
//! partition since its last reset, and the next assignment publishes the
//! state again; another instance given the partition meanwhile restores
//! no progress, and refuses it, as it would without a changelog.

use crate::clients;
use crate::config::EngineConfig;
use crate::restore::{RestoreError, RestoreJob, Restored, Watch};
use accrual_store::Store;
use accrual_store::changelog;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keeps the first failed delivery's error.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl Deliveries {
    fn failed(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
        }
    }
}

/// Publishes `partition`'s local state to its changelog partition; returns
/// the number of records. Stops with [`RestoreError::Cancelled`] once
/// `cancelled` says so.
pub fn publish_state(
    config: &EngineConfig,
    store: &Store,
    topic: &str,
    partition: u32,
    idle: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, RestoreError> {
    let failed = |reason: String| RestoreError::Publish { topic: topic.to_string(), partition, reason };
    let kafka = |e: KafkaError| failed(e.to_string());
    let producer: BaseProducer<Deliveries> =
        clients::snapshot_producer(config, Deliveries::default()).map_err(kafka)?;
    let mut key = Vec::new();
    let sent = changelog::snapshot(store, partition, |change| -> Result<(), RestoreError> {
        if cancelled() {
            return Err(RestoreError::Cancelled);
        }
        if let Some(reason) = producer.context().failed() {
            return Err(failed(reason));
        }
        changelog::message_key(change, &mut key);
        let value = change.value.unwrap_or_default();
        let record = BaseRecord::to(topic).partition(partition as i32).key(&key[..]).payload(value);
        crate::kafka_tools::send(&producer, record).map_err(kafka)
    })?;
    // Waits for every delivery, while they keep arriving.
    let (mut waiting, mut since) = (producer.in_flight_count(), Instant::now());
    while waiting > 0 {
        if cancelled() {
            return Err(RestoreError::Cancelled);
        }
        let _ = crate::kafka_tools::flush_promptly(&producer, Duration::from_millis(500));
        let now_waiting = producer.in_flight_count();
        if now_waiting < waiting {
            since = Instant::now();
        } else if since.elapsed() > idle {
            return Err(failed(format!("{now_waiting} records undelivered after {idle:?}")));
        }
        waiting = now_waiting;
    }
    match producer.context().failed() {
        Some(reason) => Err(failed(reason)),
        None => Ok(sent),
    }
}

/// Publishes an owned partition's whole state to its changelog again, as
/// an operator asked (a changelog `accrual changelog check` found
/// different, or one an earlier version may have left stale), while the
/// engine runs: the partition is paused at `committed`, the group's
/// offset, with no transaction of it open, and its state is kept as it
/// is. Cut short (revoked, or stopping), the changelog holds a reset with
/// no progress after it, as a snapshot cut short on assignment does, and
/// the partition's next assignment publishes the state again.
pub fn republish_partition(job: &RestoreJob, watch: &Watch) -> Result<Restored, RestoreError> {
    let RestoreJob { config, store, topic, partition, committed, idle } = job;
    let (partition, committed) = (*partition, *committed);
    let started = Instant::now();
    let local = store.stamped_progress(partition)?;
    let at = local.as_ref().map(|l| l.progress.next_offset);
    let (Some(local), true) = (local, at.is_some() && at == committed) else {
        let reason = format!("its local state ends at {at:?}, not at the group's offset {committed:?}");
        return Err(RestoreError::Publish { topic: topic.to_string(), partition, reason });
    };
    let records = publish_state(config, store, topic, partition, *idle, &|| watch.cancelled())?;
    tracing::info!(
        partition,
        records,
        committed_offset = committed,
        seconds = started.elapsed().as_secs_f64(),
        "published the partition's whole state to the changelog again, as asked"
    );
    Ok(Restored {
        progress: Some(local.progress),
        kept: true,
        publish_after_recovery: false,
        changes: 0,
        bytes: 0,
        elapsed: started.elapsed(),
    })
}
