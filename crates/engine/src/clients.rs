//! librdkafka clients configured for exactly-once: what the engine sets
//! itself, then `[kafka.properties]` (and the consumer- or producer-only
//! tables) passed through as they are.

use crate::config::{EngineConfig, KafkaConfig};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Where Kafka is and how to reach it: the `[kafka]` section's brokers and
/// `properties` (SASL, SSL, ...), with its consumer- and producer-only
/// tables. The engine's clients and every command's (`topics`, `tick`,
/// `produce`, `consume`, the ticker) are built from one, so a secured
/// cluster is reached the same way by all of them.
#[derive(Clone, Default)]
pub struct Connection {
    pub brokers: String,
    pub properties: BTreeMap<String, String>,
    pub consumer_properties: BTreeMap<String, String>,
    pub producer_properties: BTreeMap<String, String>,
}

impl Connection {
    /// Brokers reached with librdkafka's defaults (plaintext).
    pub fn plain(brokers: &str) -> Connection {
        Connection { brokers: brokers.to_string(), ..Connection::default() }
    }

    /// The section's connection; its producers key messages to
    /// partitions with the configured partitioner, as the engine expects.
    pub fn of(kafka: &KafkaConfig) -> Connection {
        let mut producer_properties = kafka.producer_properties.clone();
        producer_properties.entry("partitioner".into()).or_insert_with(|| kafka.partitioner.name().into());
        Connection {
            brokers: kafka.brokers.clone(),
            properties: kafka.properties.clone(),
            consumer_properties: kafka.consumer_properties.clone(),
            producer_properties,
        }
    }

    /// The brokers and the shared properties (for admin clients).
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// [`Connection::client`] with the consumer-only properties.
    pub fn consumer(&self) -> ClientConfig {
        let mut c = self.client();
        for (k, v) in &self.consumer_properties {
            c.set(k, v);
        }
        c
    }

    /// [`Connection::client`] with the producer-only properties.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.client();
        for (k, v) in &self.producer_properties {
            c.set(k, v);
        }
        c
    }
}

/// Secrets stay out of logs and errors: properties are listed by name,
/// values only where they cannot be secret.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("Connection")
            .field("brokers", &self.brokers)
            .field("properties", &names(&self.properties))
            .field("consumer_properties", &names(&self.consumer_properties))
            .field("producer_properties", &names(&self.producer_properties))
            .finish()
    }
}

/// Sets `key` unless `[kafka.properties]` sets it.
fn default(c: &mut ClientConfig, config: &EngineConfig, key: &str, value: &str) {
    if !config.kafka.properties.contains_key(key) {
        c.set(key, value);
    }
}

fn base(config: &EngineConfig) -> ClientConfig {
    let mut c = Connection::of(&config.kafka).client();
    // Other instances find this one's partitions by this id (see `owners`).
    c.set("client.id", format!("{}{}", crate::owners::CLIENT_ID_PREFIX, config.engine.instance_id));
    c
}

/// The engine's consumer; the benchmark's baseline uses the same settings
/// with a context of its own.
pub fn consumer<C: ConsumerContext>(config: &EngineConfig, context: C) -> KafkaResult<BaseConsumer<C>> {
    let mut c = base(config);
    c.set("group.id", &config.kafka.group_id)
        // Offsets are committed only inside our transactions.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never read what another producer has not committed.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    default(&mut c, config, "auto.offset.reset", "earliest");
    default(&mut c, config, "partition.assignment.strategy", "cooperative-sticky");
    // Statistics feed the consumer lag metric.
    default(&mut c, config, "statistics.interval.ms", "5000");
    for (k, v) in &config.kafka.consumer_properties {
        c.set(k, v);
    }
    c.create_with_context(context)
}

/// The engine's transactional producer.
pub type EngineProducer = BaseProducer<ProgressDeliveries>;

/// The engine's producer's delivery reports: the changelog offset each
/// partition's progress record was delivered at, since the last
/// [`ProgressDeliveries::take`]. Once the transaction commits, that is
/// where the partition's state as this instance left it ends in the
/// changelog (`accrual_store::changelog::OwnerPosition`).
#[derive(Default)]
pub struct ProgressDeliveries {
    changelog: Option<String>,
    delivered: Mutex<BTreeMap<u32, i64>>,
}

impl ProgressDeliveries {
    /// The progress records delivered since the last call, by partition.
    pub fn take(&self) -> BTreeMap<u32, i64> {
        std::mem::take(&mut *self.delivered.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ClientContext for ProgressDeliveries {}

impl ProducerContext for ProgressDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (Some(changelog), Ok(m)) = (&self.changelog, result) else { return };
        // Most messages are not changelog records: their keys fail first.
        let partition = m
            .key()
            .and_then(|key| accrual_store::changelog::from_message(key, None))
            .filter(accrual_store::changelog::is_progress)
            .and_then(|change| change.partition());
        let Some(partition) = partition else { return };
        if changelog == m.topic() {
            self.delivered.lock().unwrap_or_else(|p| p.into_inner()).insert(partition, m.offset());
        }
    }
}

pub fn producer(config: &EngineConfig) -> KafkaResult<EngineProducer> {
    let mut c = base(config);
    c.set("transactional.id", config.transactional_id())
        // Events for other accounts must land where that account's events do.
        .set("partitioner", config.kafka.partitioner.name())
        .set("enable.idempotence", "true")
        .set("transaction.timeout.ms", config.kafka.transaction_timeout_ms.to_string());
    default(&mut c, config, "linger.ms", "5");
    for (k, v) in &config.kafka.producer_properties {
        c.set(k, v);
    }
    let context =
        ProgressDeliveries { changelog: config.kafka.topics.changelog.clone(), ..Default::default() };
    c.create_with_context(context)
}

/// An idempotent, non-transactional producer, for publishing a
/// partition's state to an empty changelog (see `bootstrap`).
pub fn snapshot_producer<C: ProducerContext>(
    config: &EngineConfig,
    context: C,
) -> KafkaResult<BaseProducer<C>> {
    let mut c = base(config);
    c.set("enable.idempotence", "true");
    default(&mut c, config, "linger.ms", "20");
    for (k, v) in &config.kafka.producer_properties {
        c.set(k, v);
    }
    c.create_with_context(context)
}

/// The context of a client that reads partitions to their end: reaching it
/// is how the reader knows it is done, not an error worth logging; other
/// errors are logged.
pub struct Reader;

impl ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof =
            matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!(error = %error, "{reason}");
        }
    }
}

impl ConsumerContext for Reader {}

/// A reader of changelog partitions (restores, standby copies).
pub type ChangelogReader = BaseConsumer<Reader>;

/// A consumer that reads changelog partitions, outside the group (it is
/// assigned, never subscribes, and commits nothing): standby copies and
/// the partitions' last writers.
pub fn changelog_reader(config: &EngineConfig) -> KafkaResult<ChangelogReader> {
    changelog_consumer(config, false)
}

/// A changelog reader for one restore, which reads a partition to its
/// last committed transaction and is dropped: at the end of the log the
/// broker answers at once instead of waiting `fetch.wait.max.ms` (500 ms)
/// for more, which a takeover would wait for.
pub fn restore_consumer(config: &EngineConfig) -> KafkaResult<ChangelogReader> {
    changelog_consumer(config, true)
}

fn changelog_consumer(config: &EngineConfig, reads_to_end: bool) -> KafkaResult<ChangelogReader> {
    let mut c = base(config);
    c.set("group.id", format!("{}-restore", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    if reads_to_end {
        c.set("fetch.wait.max.ms", "10");
    }
    for (k, v) in &config.kafka.consumer_properties {
        c.set(k, v);
    }
    c.create_with_context(Reader)
}

/// A client that reads the group's committed offsets (a standby copy
/// confirms the batch it holds with them): it never subscribes, so it
/// never joins the group.
pub fn group_offsets_reader(config: &EngineConfig) -> KafkaResult<BaseConsumer> {
    let mut c = base(config);
    c.set("group.id", &config.kafka.group_id).set("enable.auto.commit", "false");
    c.create()
}

/// A client outside the group, for reading the group's description.
pub fn plain_consumer(config: &EngineConfig) -> KafkaResult<BaseConsumer> {
    let mut c = base(config);
    for (k, v) in &config.kafka.consumer_properties {
        c.set(k, v);
    }
    c.create()
}
