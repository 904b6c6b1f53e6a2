//! End-to-end latency at a steady offered load: events are produced at a
//! fixed rate while a `read_committed` reader watches the output topic; an
//! event's latency is from the moment it was handed to the producer to the
//! moment the first record made from it (matched by the
//! `accrual.source.partition`/`offset` headers) became visible to readers,
//! i.e. after its Kafka transaction committed. Both clocks are this
//! process's monotonic clock.

use crate::engine::outbox::{HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION};
use crate::kafka_tools::{self, Connection, ToolError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One event to send: its key (the account) and its bytes.
pub struct Outgoing {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// The message timestamp ([`kafka_tools::stamp`]).
    pub timestamp: i64,
}

/// Latency at one offered load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyResult {
    pub target: String,
    pub offered_per_second: u64,
    /// What the producer actually managed, events/s.
    pub sent_per_second: f64,
    pub sent: u64,
    /// Events with at least one output record seen.
    pub matched: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Where each delivered event landed, by its index in the send order.
#[derive(Default)]
struct Deliveries(Mutex<Vec<(usize, i32, i64)>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Ok(m) = result {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push((index, m.partition(), m.offset()));
        }
    }
}

type Seen = Arc<Mutex<HashMap<(i32, i64), Instant>>>;

/// A producer of the input topic and a reader of the output topic.
pub struct Probe {
    producer: BaseProducer<Deliveries>,
    input: String,
    seen: Seen,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<(), ToolError>>>,
    next: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Probe {
    pub fn start(kafka: &Connection, input: &str, output: &str) -> Result<Probe, ToolError> {
        // A card processor's producer (with the config's partitioner):
        // idempotent, a few ms of linger.
        let producer: BaseProducer<Deliveries> = kafka
            .producer()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())?;
        let reader: BaseConsumer = kafka
            .consumer()
            .set("group.id", format!("accrual-bench-probe-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..kafka_tools::partitions(kafka, output)? {
            tpl.add_partition_offset(output, p, Offset::Beginning)?;
        }
        reader.assign(&tpl)?;
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || read(&reader, &seen, &stop))
        };
        Ok(Probe { producer, input: input.to_string(), seen, stop, reader: Some(reader), next: 0 })
    }

    fn send(&mut self, event: &Outgoing) -> Result<usize, ToolError> {
        let index = self.next;
        self.next += 1;
        let record = BaseRecord::with_opaque_to(&self.input, index)
            .key(&event.key[..])
            .payload(&event.payload[..])
            .timestamp(event.timestamp);
        kafka_tools::send(&self.producer, record)?;
        Ok(index)
    }

    /// Sends events slowly until the first output appears: the target has
    /// joined its group and is processing. Fails after `limit`.
    pub fn warm_up<'e>(
        &mut self,
        events: &mut impl Iterator<Item = &'e Outgoing>,
        limit: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        while lock(&self.seen).is_empty() {
            if started.elapsed() > limit {
                return Err(format!("no output within {} s", limit.as_secs()));
            }
            if let Some(e) = events.next() {
                self.send(e).map_err(|e| e.to_string())?;
            }
            self.producer.poll(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Offers `rate` events/s for `seconds`, waits for their outputs (until
    /// none arrives for `settle`), and reports latencies.
    pub fn measure<'e>(
        &mut self,
        target: &str,
        rate: u64,
        seconds: u64,
        events: &mut impl Iterator<Item = &'e Outgoing>,
        settle: Duration,
    ) -> Result<LatencyResult, ToolError> {
        lock(&self.producer.context().0).clear();
        let mut sent_at: HashMap<usize, Instant> = HashMap::new();
        let started = Instant::now();
        let window = Duration::from_secs(seconds);
        let mut sent = 0u64;
        while started.elapsed() < window {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let Some(e) = events.next() else { break };
                let at = Instant::now();
                let index = self.send(e)?;
                sent_at.insert(index, at);
                sent += 1;
            }
            self.producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(1));
        }
        let sending = started.elapsed().as_secs_f64();
        kafka_tools::flush_promptly(&self.producer, Duration::from_secs(60))?;
        let delivered: Vec<(usize, i32, i64)> = std::mem::take(&mut *lock(&self.producer.context().0));
        // Outputs arrive until the target has caught up.
        let mut last = (usize::MAX, Instant::now());
        while last.1.elapsed() < settle {
            let n = lock(&self.seen).len();
            if n != last.0 {
                last = (n, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let seen = lock(&self.seen);
        let mut latencies: Vec<Duration> = delivered
            .iter()
            .filter_map(|(i, p, o)| Some(seen.get(&(*p, *o))?.saturating_duration_since(*sent_at.get(i)?)))
            .collect();
        latencies.sort_unstable();
        let ms = |q: f64| percentile(&latencies, q).as_secs_f64() * 1e3;
        Ok(LatencyResult {
            target: target.to_string(),
            offered_per_second: rate,
            sent_per_second: sent as f64 / sending.max(1e-9),
            sent,
            matched: latencies.len() as u64,
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            match reader.join() {
                Ok(Err(e)) => tracing::warn!(error = %e, "latency reader failed"),
                Err(_) => tracing::warn!("latency reader panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted values; zero if none.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn read(reader: &BaseConsumer, seen: &Seen, stop: &AtomicBool) -> Result<(), ToolError> {
    while !stop.load(Ordering::Relaxed) {
        let Some(polled) = reader.poll(Duration::from_millis(50)) else { continue };
        let now = Instant::now();
        let m = polled?;
        let header = |name: &str| -> Option<i64> {
            let h = m.headers()?.iter().find(|h| h.key == name)?;
            std::str::from_utf8(h.value?).ok()?.parse().ok()
        };
        if let (Some(p), Some(o)) = (header(HEADER_SOURCE_PARTITION), header(HEADER_SOURCE_OFFSET)) {
            lock(seen).entry((p as i32, o)).or_insert(now);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
