//! Clock events sent by the engine itself, on a thread of their own with
//! one long-lived producer built from the `[kafka]` section (so a secured
//! cluster gets them too): every `engine.clock_interval_ms` a clock to
//! every partition of the input topic (idle accounts' holds release and
//! points expire without events of their own), and on request the
//! follow-up clocks of a clock cut at its limit. The commit loop only
//! hands requests over a channel; it never waits for Kafka here.

use crate::clients::Connection;
use crate::config::EngineConfig;
use accrual_core::time::{Timestamp, wall_clock};
use rdkafka::producer::{BaseProducer, Producer};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Clocks to send for `partitions` at `at` (a clock cut at its limit).
struct FollowUp {
    at: Timestamp,
    partitions: Vec<i32>,
}

pub struct Ticker {
    requests: Option<Sender<FollowUp>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start(config: &EngineConfig) -> std::io::Result<Ticker> {
        let (requests, queue) = channel();
        let clock = Clock {
            kafka: Connection::of(&config.kafka),
            topic: config.kafka.topics.input.clone(),
            instance: config.engine.instance_id.clone(),
            interval: Duration::from_millis(config.engine.clock_interval_ms),
            timeout: Duration::from_millis(config.engine.kafka_timeout_ms),
        };
        let thread = std::thread::Builder::new().name("ticker".into()).spawn(move || clock.run(queue))?;
        Ok(Ticker { requests: Some(requests), thread: Some(thread) })
    }

    /// Sends a clock at `at` to each of `partitions`, soon.
    pub fn follow_up(&self, at: Timestamp, partitions: Vec<i32>) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(FollowUp { at, partitions });
        }
    }
}

impl Drop for Ticker {
    /// Stops the thread once what it was handed is sent.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Clock {
    kafka: Connection,
    topic: String,
    instance: String,
    /// Zero: no periodic clock, follow-ups only.
    interval: Duration,
    timeout: Duration,
}

impl Clock {
    fn run(self, queue: Receiver<FollowUp>) {
        let producer: BaseProducer = match self.kafka.producer().set("enable.idempotence", "true").create() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "the clock producer cannot be created: no clocks are sent");
                return;
            }
        };
        let mut next_tick = Instant::now() + self.interval;
        loop {
            let wait = match self.interval.is_zero() {
                true => Duration::from_millis(500),
                false => next_tick.saturating_duration_since(Instant::now()),
            };
            match queue.recv_timeout(wait) {
                Ok(follow_up) => self.send_follow_up(&producer, follow_up),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.interval.is_zero() && Instant::now() >= next_tick {
                next_tick = Instant::now() + self.interval;
                self.tick(&producer);
            }
            producer.poll(Duration::ZERO);
        }
        if let Err(e) = crate::kafka_tools::flush_promptly(&producer, self.timeout) {
            tracing::warn!(error = %e, "clocks not delivered before stopping");
        }
    }

    /// A clock to every partition of the input topic.
    fn tick(&self, producer: &BaseProducer) {
        let at = wall_clock();
        let id = format!("clock-{}-{}", self.instance, at.0);
        let partitions = match producer.client().fetch_metadata(Some(&self.topic), self.timeout) {
            Ok(m) => m.topics().first().map_or(0, |t| t.partitions().len() as i32),
            Err(e) => {
                tracing::warn!(error = %e, "clock not sent: the input topic's partitions are unknown");
                return;
            }
        };
        match crate::kafka_tools::send_clock(
            producer,
            &self.topic,
            at,
            &id,
            &(0..partitions).collect::<Vec<_>>(),
        ) {
            Ok(()) => tracing::debug!(partitions, clock = %at, "clock sent"),
            Err(e) => tracing::warn!(error = %e, "clock not sent; the next tick tries again"),
        }
    }

    fn send_follow_up(&self, producer: &BaseProducer, FollowUp { at, partitions }: FollowUp) {
        let id = format!("clock-{}-more-{}", self.instance, wall_clock().0);
        match crate::kafka_tools::send_clock(producer, &self.topic, at, &id, &partitions) {
            Ok(()) => tracing::debug!(?partitions, clock = %at, "follow-up clock sent"),
            Err(e) => {
                tracing::warn!(?partitions, error = %e, "follow-up clock not sent; the next clock goes on")
            }
        }
    }
}
