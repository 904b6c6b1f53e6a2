//! Kafka helpers around the engine: create topics, produce an NDJSON file
//! keyed by account, and read a topic back. Used by `accrual topics`,
//! `accrual produce`, `accrual consume`, the demo and the integration tests.
//! Standard Kafka APIs only, so they work against Apache Kafka too.

use crate::clients::Reader;
use accrual_core::events::{Decoder, EventKind};
use accrual_core::time::Timestamp;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub use crate::clients::Connection;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
}

/// Creates topics (name, partitions); an existing topic is fine.
pub fn create_topics(kafka: &Connection, topics: &[(&str, i32)]) -> Result<(), ToolError> {
    let plain: Vec<TopicSpec<'_>> =
        topics.iter().map(|&(name, partitions)| (name, partitions, &[][..])).collect();
    create_topics_with(kafka, &plain)
}

/// A topic to create: name, partitions, and its topic configs.
pub type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// The configs of a state changelog topic: compacted, so the latest value
/// of every key (and no deleted one, once compaction ran) is kept forever.
pub const CHANGELOG_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// Creates topics with their configs, one replica each; an existing topic
/// is fine (and keeps the configs it has).
pub fn create_topics_with(kafka: &Connection, topics: &[TopicSpec<'_>]) -> Result<(), ToolError> {
    create_topics_replicated(kafka, topics, 1)
}

/// [`create_topics_with`] with `replication` replicas of every partition
/// (-1: the cluster's default replication factor).
pub fn create_topics_replicated(
    kafka: &Connection,
    topics: &[TopicSpec<'_>],
    replication: i32,
) -> Result<(), ToolError> {
    let admin = Admin::connect(kafka)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, p, configs)| {
            let topic = NewTopic::new(name, *p, TopicReplication::Fixed(replication));
            configs.iter().fold(topic, |t, (k, v)| t.set(k, v))
        })
        .collect();
    let results = admin.wait(admin.client.create_topics(&new, &admin.options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(ToolError::Topic { topic, message: code.to_string() }),
        }
    }
    Ok(())
}

/// An admin client, and a runtime to wait for its requests on. Errors (an
/// unreachable broker, a refused login) are logged as they happen, and a
/// request gives up after 30 s.
pub(crate) struct Admin {
    pub(crate) client: AdminClient<Reader>,
    pub(crate) options: AdminOptions,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    pub(crate) fn connect(kafka: &Connection) -> Result<Admin, ToolError> {
        let timeout = Some(Duration::from_secs(30));
        Ok(Admin {
            client: kafka.client().create_with_context(Reader)?,
            options: AdminOptions::new().operation_timeout(timeout).request_timeout(timeout),
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        })
    }

    /// Waits for a request made with `client`.
    pub(crate) fn wait<F: std::future::Future>(&self, request: F) -> F::Output {
        self.runtime.block_on(request)
    }
}

/// Partition count of a topic.
pub fn partitions(kafka: &Connection, topic: &str) -> Result<i32, ToolError> {
    let consumer: BaseConsumer = kafka.consumer().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        _ => Err(ToolError::Topic { topic: topic.to_string(), message: "does not exist".into() }),
    }
}

/// The timestamp a message carries for an event at `at`: its time, but
/// never after `now`. The engine checks event times against it, so a file
/// of past events replays as it happened and a future-dated one is
/// refused, as from a producer stamping messages when it sends them.
pub fn stamp(at: Timestamp, now: Timestamp) -> i64 {
    at.min(now).0
}

/// Produces a `clock` event at `at` to every partition of `topic` (a
/// clock concerns every account of its partition).
pub fn tick(kafka: &Connection, topic: &str, at: Timestamp, id: &str) -> Result<i32, ToolError> {
    let n = partitions(kafka, topic)?;
    let producer: BaseProducer = kafka.producer().create()?;
    send_clock(&producer, topic, at, id, &(0..n).collect::<Vec<_>>())?;
    flush_promptly(&producer, Duration::from_secs(30))?;
    Ok(n)
}

/// Hands a `clock` event at `at` for each of `partitions` of `topic` to
/// `producer` (the caller flushes it, or polls it if it lives on).
pub fn send_clock(
    producer: &BaseProducer,
    topic: &str,
    at: Timestamp,
    id: &str,
    partitions: &[i32],
) -> Result<(), ToolError> {
    let payload = format!(r#"{{"event_id":"{id}","type":"clock","occurred_at":"{at}"}}"#);
    let timestamp = stamp(at, accrual_core::time::wall_clock());
    for &p in partitions {
        let record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(payload.as_bytes()).partition(p).timestamp(timestamp);
        send(producer, record)?;
    }
    Ok(())
}

/// [`produce_file_as_of`] now.
pub fn produce_file(kafka: &Connection, topic: &str, input: &Path) -> Result<u64, ToolError> {
    produce_file_as_of(kafka, topic, input, accrual_core::time::wall_clock())
}

/// Produces each line of an NDJSON file as one message, keyed by its
/// `account_id` (lines that do not decode go unkeyed, as a real producer's
/// garbage would); a `clock` line goes to every partition. Each message is
/// stamped with its event's time, never after `now` (lines that do not
/// decode: `now`). Returns the number of messages.
pub fn produce_file_as_of(
    kafka: &Connection,
    topic: &str,
    input: &Path,
    now: Timestamp,
) -> Result<u64, ToolError> {
    let producer: BaseProducer = kafka
        .producer()
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()?;
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(input)?);
    let mut decoder = Decoder::new();
    let partition_count = partitions(kafka, topic)?;
    let mut line = Vec::new();
    let mut count = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let decoded =
            decoder.decode(&line).ok().map(|e| (e.kind(), e.account_id.as_bytes().to_vec(), e.occurred_at));
        let timestamp = stamp(decoded.as_ref().map_or(now, |d| d.2), now);
        let targets: Vec<Option<i32>> = match &decoded {
            Some((EventKind::Clock, ..)) => (0..partition_count).map(Some).collect(),
            _ => vec![None],
        };
        for partition in targets {
            let mut record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(topic).payload(&line[..]).timestamp(timestamp);
            match (&decoded, partition) {
                (_, Some(p)) => record = record.partition(p),
                (Some((_, key, _)), None) => record = record.key(&key[..]),
                (None, None) => {}
            }
            send(&producer, record)?;
            count += 1;
        }
        if count % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    flush_promptly(&producer, Duration::from_secs(60))?;
    Ok(count)
}

/// Sends a record, waiting (and serving delivery reports) while
/// librdkafka's queue is full.
pub fn send<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Commits the producer's open transaction once its messages are
/// delivered ([`flush_promptly`]): rdkafka's `commit_transaction` flushes
/// first with its own flush, which would make every transaction whose last
/// messages were still in flight wait up to 100 ms more.
pub fn commit_transaction<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    flush_promptly(producer, timeout)?;
    producer.commit_transaction(timeout)
}

/// Waits until every message produced is delivered, serving delivery
/// reports meanwhile; `Flush(OperationTimedOut)` if `timeout` passes first.
/// rdkafka's own flush polls in steps of 100 ms that each run to their end,
/// so every wait for deliveries here (commits, clocks, the tools) uses this.
pub fn flush_promptly<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if Instant::now() < deadline => {
                producer.poll(FLUSH_STEP);
            }
            done => return done,
        }
    }
}

/// How long [`flush_promptly`] polls between checks. A poll runs to its
/// end, and its last millisecond spins (rdkafka waits whole
/// milliseconds): shorter steps cost CPU, longer ones delay the commit.
const FLUSH_STEP: Duration = Duration::from_millis(5);

/// A message read back, with its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The broker's timestamp (milliseconds since the epoch), if any.
    pub timestamp: Option<i64>,
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Reads every partition of a topic from the beginning to its end as it is
/// when the read starts (for `read_committed`, the last stable offset), or
/// until nothing arrives for `idle`.
pub fn read_topic(
    kafka: &Connection,
    topic: &str,
    read_committed: bool,
    idle: Duration,
) -> Result<Vec<Consumed>, ToolError> {
    let consumer: BaseConsumer<Reader> = kafka
        .consumer()
        .set("group.id", format!("accrual-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", if read_committed { "read_committed" } else { "read_uncommitted" })
        .set("enable.partition.eof", "true")
        .create_with_context(Reader)?;
    let n = partitions(kafka, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut done: BTreeMap<i32, bool> = ends.iter().map(|(p, high)| (*p, *high <= 0)).collect();
    let mut last = Instant::now();
    while !done.values().all(|d| *d) && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p, true);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                last = Instant::now();
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(header.key.to_string(), header.value.unwrap_or_default().to_vec());
                    }
                }
                if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
                    done.insert(m.partition(), true);
                }
                out.push(consumed(&m, headers));
            }
        }
    }
    Ok(out)
}

/// A message as read back.
fn consumed(m: &rdkafka::message::BorrowedMessage<'_>, headers: BTreeMap<String, Vec<u8>>) -> Consumed {
    Consumed {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().unwrap_or_default().to_vec(),
        payload: m.payload().unwrap_or_default().to_vec(),
        headers,
        timestamp: m.timestamp().to_millis(),
    }
}

/// Where a range of a topic starts or ends, in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBound {
    /// This offset (clamped to what the partition holds).
    Offset(i64),
    /// The first message stamped at or after this instant.
    Time(Timestamp),
}

/// What [`read_range`] read of one partition: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub messages: u64,
}

/// Reads `[from, to)` of every partition of `topic` (committed messages
/// only), one partition after another, handing `each` batches of up to
/// `batch` messages in offset order. Joins no group and commits nothing:
/// the engine's group and offsets are untouched. Without `from`, from each
/// partition's start; without `to`, to its end when the read starts.
/// An error of `each` stops the read and is returned.
pub fn read_range<E: From<ToolError>>(
    kafka: &Connection,
    topic: &str,
    from: Option<RangeBound>,
    to: Option<RangeBound>,
    batch: usize,
    mut each: impl FnMut(i32, &[Consumed]) -> Result<(), E>,
) -> Result<Vec<PartitionRange>, E> {
    let consumer: BaseConsumer<Reader> = kafka
        .consumer()
        .set("group.id", format!("accrual-range-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(Reader)
        .map_err(ToolError::from)?;
    let mut ranges = Vec::new();
    for partition in 0..partitions(kafka, topic)? {
        let mut range = partition_range(&consumer, topic, partition, from, to)?;
        if range.from < range.to {
            read_partition(&consumer, topic, &mut range, batch.max(1), &mut each)?;
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// One partition's `[from, to)`, nothing read yet.
fn partition_range(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    partition: i32,
    from: Option<RangeBound>,
    to: Option<RangeBound>,
) -> Result<PartitionRange, ToolError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let start = resolve_bound(consumer, topic, partition, from, low, high)?.unwrap_or(low);
    let end = resolve_bound(consumer, topic, partition, to, low, high)?.unwrap_or(high);
    Ok(PartitionRange { partition, from: start, to: end.max(start), messages: 0 })
}

/// A bound's offset in one partition, within `[low, high]`.
fn resolve_bound(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    partition: i32,
    bound: Option<RangeBound>,
    low: i64,
    high: i64,
) -> Result<Option<i64>, ToolError> {
    let offset = match bound {
        None => return Ok(None),
        Some(RangeBound::Offset(offset)) => offset,
        Some(RangeBound::Time(at)) => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(at.0))?;
            let found = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
            match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(offset)) => offset,
                // No message at or after the instant.
                _ => high,
            }
        }
    };
    Ok(Some(offset.clamp(low, high)))
}

/// Reads one partition's `[range.from, range.to)`, counting what it hands on.
fn read_partition<E: From<ToolError>>(
    consumer: &BaseConsumer<Reader>,
    topic: &str,
    range: &mut PartitionRange,
    batch: usize,
    each: &mut impl FnMut(i32, &[Consumed]) -> Result<(), E>,
) -> Result<(), E> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, range.partition, Offset::Offset(range.from)).map_err(ToolError::from)?;
    consumer.assign(&tpl).map_err(ToolError::from)?;
    let mut pending = Vec::with_capacity(batch);
    let mut idle = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            None if idle.elapsed() > Duration::from_secs(30) => {
                let message = format!(
                    "partition {}: nothing arrived for 30 s before offset {}",
                    range.partition, range.to
                );
                return Err(ToolError::Topic { topic: topic.to_string(), message }.into());
            }
            None => continue,
            // The end: what is left of [from, to) was not committed.
            Some(Err(KafkaError::PartitionEOF(p))) if p == range.partition => break,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => return Err(ToolError::from(e).into()),
            // Left over from the partition read before.
            Some(Ok(m)) if m.partition() != range.partition => continue,
            Some(Ok(m)) if m.offset() >= range.to => break,
            Some(Ok(m)) => {
                idle = Instant::now();
                pending.push(consumed(&m, BTreeMap::new()));
                let last = m.offset() + 1 >= range.to;
                if pending.len() >= batch || last {
                    range.messages += pending.len() as u64;
                    each(range.partition, &pending)?;
                    pending.clear();
                }
                if last {
                    break;
                }
            }
        }
    }
    if !pending.is_empty() {
        range.messages += pending.len() as u64;
        each(range.partition, &pending)?;
    }
    Ok(())
}

/// Each partition's end (high watermark).
pub fn high_watermarks(kafka: &Connection, topic: &str) -> Result<BTreeMap<i32, i64>, ToolError> {
    let consumer: BaseConsumer = kafka.consumer().create()?;
    let mut out = BTreeMap::new();
    for p in 0..partitions(kafka, topic)? {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// The group's committed offsets for a topic's partitions.
pub fn committed_offsets(
    kafka: &Connection,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, String)>, ToolError> {
    let consumer: BaseConsumer = kafka.consumer().set("group.id", group).create()?;
    let n = partitions(kafka, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), (o, e.metadata().to_string()))),
            _ => None,
        })
        .collect())
}

/// How many members the broker lists in `group` (0 if it does not know
/// it), asked through `consumer` (any, e.g. `Connection::consumer`'s).
pub fn group_members(consumer: &BaseConsumer, group: &str) -> Result<usize, ToolError> {
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(10))?;
    Ok(list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum())
}

/// A readable summary of messages read back: accrual records per rule and
/// kind with their sums, dead letters per reason.
pub fn summarize(messages: &[Consumed]) -> String {
    use rust_decimal::Decimal;
    use std::fmt::Write as _;
    #[derive(serde::Deserialize)]
    struct Record {
        program: String,
        rule_id: String,
        kind: String,
        amount: Decimal,
        unit: String,
    }
    let mut by_rule: BTreeMap<(String, String, String), (u64, Decimal, String)> = BTreeMap::new();
    let mut dead: BTreeMap<String, u64> = BTreeMap::new();
    for m in messages {
        if let Some(reason) = m.header("accrual.dlq.reason") {
            *dead.entry(reason.to_string()).or_default() += 1;
        } else if let Ok(r) = serde_json::from_slice::<Record>(&m.payload) {
            let e = by_rule.entry((r.program, r.rule_id, r.kind)).or_insert((0, Decimal::ZERO, r.unit));
            e.0 += 1;
            e.1 += r.amount;
        }
    }
    let mut s = String::new();
    if !by_rule.is_empty() {
        let _ =
            writeln!(s, "  {:<10} {:<20} {:<9} {:>8} {:>16}", "program", "rule", "kind", "records", "amount");
        for ((program, rule, kind), (n, sum, unit)) in &by_rule {
            let _ = writeln!(s, "  {program:<10} {rule:<20} {kind:<9} {n:>8} {sum:>16} {unit}");
        }
    }
    for (reason, n) in &dead {
        let _ = writeln!(s, "  dead letters {reason}: {n}");
    }
    s
}
