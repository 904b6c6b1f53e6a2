//! `accrual run`: the exactly-once Kafka engine.
//!
//! One thread runs commit cycles. A cycle polls up to `max_batch` messages
//! (or for `commit_interval_ms`), runs each partition's messages through the
//! [`Processor`], commits state, outbox, progress and a journal entry in ONE
//! synced RocksDB WriteBatch, then publishes the outbox and commits the
//! input offsets in ONE Kafka transaction. The Kafka commit runs on a
//! thread of its own while the next cycle polls, processes and commits to
//! RocksDB ([`committer`]), so two journal entries may be open at a crash
//! ([`journal`]). A failed transaction is aborted (or the producer
//! replaced) and the outbox is published again, never skipped. The
//! protocol and its crash points: `docs/exactly-once.md`.

pub(crate) mod clients;
mod committer;
pub mod journal;
pub mod outbox;
pub mod rebalance;
mod workers;

use crate::config::EngineConfig;
use crate::rules::{self, RulesError};
use crate::store::{Store, StoreError, StoreOptions};
use journal::{Journal, TxnId, TxnStatus};
use outbox::{Destination, HEADER_TXN};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rebalance::{Assignment, EngineContext};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Kafka: {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("outbox of partition {partition} at offset {offset} is corrupt: {detail}")]
    Outbox { partition: u32, offset: u64, detail: String },
    #[error("{0}")]
    Assignment(String),
    #[error("could not publish for {seconds} s; exiting so a restart recovers from the outbox: {last}")]
    Unrecoverable { seconds: u64, last: String },
}

pub(crate) fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> EngineError {
    move |source| EngineError::Kafka { what, source }
}

/// Now, for clock events: the only place the engine reads the wall clock.
/// Clock events go into the input topic, so replays see the same times.
pub fn wall_clock() -> crate::time::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::time::Timestamp(ms)
}

/// Options of one run beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop (gracefully) after this long without input.
    pub stop_when_idle: Option<Duration>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub events: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub duplicates: u64,
    pub no_effect: u64,
    pub transactions: u64,
    pub aborted: u64,
    pub recoveries: u64,
    /// From the first input message to the last commit.
    pub busy: Duration,
}

/// Test-only crash points, from `ACCRUAL_FAILPOINT=<point>[:<n>][,...]`:
/// the process aborts at the n-th time (default first) it reaches
/// `<point>` (or, for a failure point, that one call fails; for a delay
/// point, n is the pause in ms).
struct Failpoint {
    points: Vec<(String, u64, AtomicU64)>,
}

impl Failpoint {
    fn from_env() -> Failpoint {
        let spec = std::env::var("ACCRUAL_FAILPOINT").unwrap_or_default();
        let points = spec
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1), AtomicU64::new(0)),
                None => (p.to_string(), 1, AtomicU64::new(0)),
            })
            .collect();
        Failpoint { points }
    }

    fn find(&self, name: &str) -> Option<(u64, &AtomicU64)> {
        self.points.iter().find(|(point, ..)| point == name).map(|(_, n, hits)| (*n, hits))
    }

    /// A test-only pause: at `<point>:<ms>`, sleeps that long.
    fn delay(&self, name: &str) {
        if let Some((ms, _)) = self.find(name) {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// A test-only failure: true once, the n-th time `<point>` is reached.
    fn trips(&self, name: &str) -> bool {
        self.find(name).is_some_and(|(n, hits)| hits.fetch_add(1, Ordering::SeqCst) + 1 == n)
    }

    fn hit(&self, name: &str) {
        if let Some((n, hits)) = self.find(name) {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                eprintln!("failpoint {name} reached: aborting the process");
                std::process::abort();
            }
        }
    }
}

/// A transaction's outcome, to record in the journal.
struct Decided {
    id: TxnId,
    status: TxnStatus,
    offsets: Vec<(u32, u64)>,
}

/// Why a Kafka transaction failed, by what must happen next.
enum TxnFailure {
    /// Abort it, then publish the outbox again.
    Abortable(String),
    /// The producer is unusable: replace it, then publish again.
    Fatal(String),
}

fn classify(e: KafkaError) -> TxnFailure {
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnFailure::Fatal(e.to_string()),
        _ => TxnFailure::Abortable(e.to_string()),
    }
}

struct Engine {
    config: EngineConfig,
    store: Arc<Store>,
    consumer: BaseConsumer<EngineContext>,
    producer: Arc<BaseProducer>,
    assignment: Arc<Mutex<Assignment>>,
    journal: Journal,
    /// The cycle's processing, by partition, on worker threads.
    workers: workers::Workers,
    failpoint: Arc<Failpoint>,
    summary: RunSummary,
    /// The previous cycle's Kafka commit, running on its own thread.
    inflight: Option<InFlight>,
    /// Busy while `inflight` runs; the rebalance callback waits on it.
    commits: Arc<committer::Gate>,
    /// When the first input message arrived (for `RunSummary::busy`).
    first_input: Option<Instant>,
    timeout: Duration,
    /// Outcomes to record and outbox to clear in the next RocksDB batch.
    pending_marks: Vec<Decided>,
    pending_clear: BTreeMap<u32, u64>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Partitions of the input topic, for the API's account lookup.
    partitions: Arc<std::sync::atomic::AtomicU32>,
    rebalances_seen: u64,
}

/// Runs the engine until `stop` is set (SIGINT/SIGTERM), the idle limit in
/// `options` passes, or an unrecoverable error.
pub fn run(
    config: EngineConfig,
    stop: Arc<AtomicBool>,
    options: RunOptions,
) -> Result<RunSummary, EngineError> {
    let rules = Arc::new(rules::load(&config.engine.rules)?);
    let e = &config.engine;
    let store = Arc::new(Store::open(
        &e.state_dir,
        &StoreOptions {
            sync: e.sync_wal,
            block_cache_bytes: e.block_cache_mb << 20,
            write_buffer_bytes: e.write_buffer_mb << 20,
        },
    )?);
    match store.rules_version()? {
        Some(previous) if previous != *rules.version => {
            tracing::info!(previous = %previous, current = %rules.version, "rules changed; new records carry the new version")
        }
        _ => {}
    }
    let mut batch = store.batch();
    batch.set_rules_version(&rules.version);
    store.commit(batch)?;

    let timeout = Duration::from_millis(e.kafka_timeout_ms);
    let assignment = Arc::new(Mutex::new(Assignment::default()));
    let commits = Arc::new(committer::Gate::default());
    let context = EngineContext {
        store: store.clone(),
        topic: config.kafka.topics.input.clone(),
        assignment: assignment.clone(),
        timeout,
        commits: commits.clone(),
    };
    let consumer = clients::consumer(&config, context).map_err(kafka("creating the consumer"))?;
    let producer = Arc::new(clients::producer(&config).map_err(kafka("creating the producer"))?);
    // Fences an older producer with our transactional id and completes (or
    // aborts) whatever transaction it left open.
    producer.init_transactions(timeout).map_err(kafka("initialising transactions"))?;
    let journal = Journal::start(&store, &config.engine.instance_id)?;
    let metrics = match crate::metrics::install() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "metrics not installed");
            None
        }
    };
    crate::metrics::info(&rules.name, &rules.version);
    let partitions = Arc::new(std::sync::atomic::AtomicU32::new(0));
    if config.http.enabled {
        let api = crate::api::ApiState {
            store: store.clone(),
            rules: rules.clone(),
            assignment: assignment.clone(),
            partitions: partitions.clone(),
            partitioner: config.kafka.partitioner,
            token: Some(config.http.token.clone()).filter(|t| !t.is_empty()),
            metrics: metrics.clone(),
        };
        crate::api::serve(&config.http.listen, api)
            .map_err(|e| EngineError::Assignment(format!("HTTP listener {}: {e}", config.http.listen)))?;
    }

    let workers =
        workers::Workers::new(&rules, &store, config.engine.workers, config.engine.account_cache_mb << 20)?;
    let mut engine = Engine {
        store,
        consumer,
        producer,
        assignment,
        journal,
        workers,
        failpoint: Arc::new(Failpoint::from_env()),
        summary: RunSummary::default(),
        inflight: None,
        commits,
        first_input: None,
        timeout,
        pending_marks: Vec::new(),
        pending_clear: BTreeMap::new(),
        metrics,
        partitions,
        rebalances_seen: 0,
        config,
    };
    engine.resolve_journal()?;
    engine.consumer.subscribe(&[&engine.config.kafka.topics.input]).map_err(kafka("subscribing"))?;
    engine.refresh_partition_count();
    tracing::info!(
        instance = %engine.config.engine.instance_id,
        epoch = engine.journal.epoch(),
        rules_version = %rules.version,
        topic = %engine.config.kafka.topics.input,
        "engine started"
    );
    engine.main_loop(&stop, &options)?;
    tracing::info!(summary = ?engine.summary, "engine stopped");
    Ok(engine.summary)
}

/// A cycle whose state is committed, and its Kafka transaction.
struct CommittedCycle {
    id: TxnId,
    offsets: Vec<(u32, u64)>,
    report: crate::metrics::CycleReport,
    /// When its Kafka commit started.
    started: Instant,
}

/// A cycle whose Kafka commit is running.
struct InFlight {
    cycle: CommittedCycle,
    handle: std::thread::JoinHandle<committer::Finished>,
}

/// The outcome of a Kafka commit thread (a panic counts as fatal).
fn join_commit(handle: std::thread::JoinHandle<committer::Finished>) -> committer::Finished {
    handle.join().unwrap_or_else(|_| committer::Finished {
        result: Err(TxnFailure::Fatal("the Kafka commit thread panicked".into())),
        durable: Ok(()),
        at: Instant::now(),
        wall_ms: wall_clock().0,
    })
}

/// One polled message, copied out of librdkafka's buffer.
struct Polled {
    partition: u32,
    offset: u64,
    /// Kafka timestamp (ms), for the end-to-end latency metric.
    timestamp: Option<i64>,
    key: (usize, usize),
    payload: (usize, usize),
}

impl Engine {
    /// Decides the transaction a crash left open (see [`journal`]).
    fn resolve_journal(&mut self) -> Result<(), EngineError> {
        // Each partition once, though two entries may name it.
        let open: std::collections::BTreeSet<u32> = Journal::entries(&self.store)?
            .iter()
            .filter(|e| e.status == TxnStatus::Open)
            .flat_map(|e| e.offsets.iter().map(|&(p, _)| p))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &open {
            tpl.add_partition(&self.config.kafka.topics.input, *p as i32);
        }
        let committed =
            self.consumer.committed_offsets(tpl, self.timeout).map_err(kafka("reading committed offsets"))?;
        let topic = self.config.kafka.topics.input.clone();
        let decided = self.journal.resolve_open(&self.store, |p| {
            committed.find_partition(&topic, p as i32).and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            })
        })?;
        for (id, status) in decided {
            tracing::info!(txn = %id, status = status.name(), "resolved a transaction left open by a crash");
        }
        Ok(())
    }

    fn main_loop(&mut self, stop: &AtomicBool, options: &RunOptions) -> Result<(), EngineError> {
        let interval = Duration::from_millis(self.config.engine.commit_interval_ms);
        let max_batch = self.config.engine.max_batch;
        let mut arena: Vec<u8> = Vec::with_capacity(max_batch * 320);
        let mut polled: Vec<Polled> = Vec::with_capacity(max_batch);
        let mut last_input = Instant::now();
        let ticker = Duration::from_millis(self.config.engine.clock_interval_ms);
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            arena.clear();
            polled.clear();
            let polling = Instant::now();
            let deadline = polling + interval;
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
            if !ticker.is_zero() && last_tick.elapsed() >= ticker {
                last_tick = Instant::now();
                self.tick();
            }
            if let Some(error) = EngineContext::lock(&self.assignment).error.take() {
                return Err(EngineError::Assignment(error));
            }
            self.recover_assigned()?;
            self.observe_assignment();
            if !polled.is_empty() {
                last_input = Instant::now();
                self.first_input.get_or_insert(last_input);
            }
            arena = self.cycle(arena, &polled, polling.elapsed())?;
            let assigned = EngineContext::lock(&self.assignment).rebalances > 0;
            if !assigned {
                last_input = Instant::now();
            }
            if options.stop_when_idle.is_some_and(|idle| last_input.elapsed() >= idle) {
                tracing::info!("no input for the idle limit; stopping");
                break;
            }
        }
        // Finish and record the last transaction before leaving.
        self.finish_inflight()?;
        self.flush_marks()?;
        Ok(())
    }

    /// Reports the assignment (partitions, readiness, lag) and counts
    /// rebalances; refreshes the partition count after a rebalance.
    fn observe_assignment(&mut self) {
        let (rebalances, assigned, refused, ready, lag) = {
            let a = EngineContext::lock(&self.assignment);
            let lag: BTreeMap<u32, i64> = a
                .owned
                .iter()
                .filter_map(|(p, o)| {
                    a.stable_offsets.get(p).map(|s| (*p, (s - o.progress.next_offset as i64).max(0)))
                })
                .collect();
            (a.rebalances, a.owned.len(), a.refused.len(), crate::api::readiness(&a).is_ok(), lag)
        };
        if rebalances > self.rebalances_seen {
            crate::metrics::rebalances(rebalances - self.rebalances_seen);
            self.rebalances_seen = rebalances;
            self.refresh_partition_count();
        }
        crate::metrics::assignment(assigned, refused, ready, &lag);
    }

    fn refresh_partition_count(&self) {
        let topic = &self.config.kafka.topics.input;
        match self.consumer.fetch_metadata(Some(topic), self.timeout) {
            Ok(m) => {
                if let Some(t) = m.topics().first() {
                    self.partitions.store(t.partitions().len() as u32, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the input topic's metadata"),
        }
    }

    /// The built-in ticker: a clock event to every partition of the input
    /// topic. Failures are logged; the next tick tries again.
    fn tick(&self) {
        let at = wall_clock();
        let id = format!("clock-{}-{}", self.config.engine.instance_id, at.0);
        let topic = &self.config.kafka.topics.input;
        match crate::kafka_tools::tick(&self.config.kafka.brokers, topic, at, &id) {
            Ok(n) => tracing::debug!(partitions = n, clock = %at, "clock sent"),
            Err(e) => tracing::warn!(error = %e, "clock not sent"),
        }
    }

    /// Publishes again the outbox of partitions assigned with work the group
    /// has not committed (after a crash, an abort, or a move back).
    fn recover_assigned(&mut self) -> Result<(), EngineError> {
        let assignment = self.assignment.clone();
        let todo = || -> Vec<(u32, u64, u64)> {
            let a = EngineContext::lock(&assignment);
            a.owned
                .iter()
                .filter(|(_, o)| o.needs_recovery)
                .map(|(p, o)| (*p, o.committed.unwrap_or(0), o.progress.next_offset))
                .collect()
        };
        if todo().is_empty() {
            return Ok(());
        }
        // The in-flight commit's outcome decides what is left to publish
        // (a failed one publishes its partitions again itself).
        self.finish_inflight()?;
        let todo = todo();
        if todo.is_empty() {
            return Ok(());
        }
        self.republish(&todo)
    }

    /// Publishes outbox entries `[from, to)` of each partition and commits
    /// offset `to`, in one transaction, retrying until it works or the
    /// Kafka timeout has passed.
    fn republish(&mut self, ranges: &[(u32, u64, u64)]) -> Result<(), EngineError> {
        self.finish_inflight()?;
        let mut entries = Vec::new();
        let mut messages = 0;
        for &(p, from, to) in ranges {
            // Read from the partition's first value: what is below `from`
            // was committed (and is cleared lazily), so only a few remain.
            for (key, value) in self.store.outbox(p, 0)? {
                let corrupt = |offset, e: outbox::CodecError| EngineError::Outbox {
                    partition: p,
                    offset,
                    detail: e.to_string(),
                };
                for (offset, entry) in outbox::stored_entries(key, &value).map_err(|e| corrupt(key, e))? {
                    if (from..to).contains(&offset) {
                        messages += outbox::messages(entry).map_err(|e| corrupt(offset, e))?.len();
                        entries.push(entry.to_vec());
                    }
                }
            }
        }
        let offsets: Vec<(u32, u64)> = ranges.iter().map(|&(p, _, to)| (p, to)).collect();
        tracing::info!(partitions = ?ranges, messages, "recovery: publishing the outbox again");
        self.failpoint.delay("slow-recovery");
        self.summary.recoveries += 1;
        crate::metrics::recovery();
        let started = Instant::now();
        let store = self.store.clone();
        loop {
            // Every outcome known goes in the same batch as this one's open
            // entry; nothing else is in flight (see [`journal`]).
            let mut batch = store.batch();
            self.stage_housekeeping(&mut batch);
            let id = self.journal.open(&mut batch, &offsets);
            store.commit(batch)?;
            match self.transact(&id, entries.iter().map(Vec::as_slice), &offsets) {
                Ok(()) => {
                    self.committed(id, offsets, Instant::now());
                    let mut a = EngineContext::lock(&self.assignment);
                    for &(p, _, x) in ranges {
                        if let Some(o) = a.owned.get_mut(&p) {
                            o.needs_recovery = false;
                            o.committed = Some(x);
                        }
                    }
                    return Ok(());
                }
                Err(failure) => self.after_failure(id, &offsets, failure, started)?,
            }
        }
    }

    /// Handles a failed transaction: abort it or replace the producer; gives
    /// up (error) once the Kafka timeout has passed since `started`.
    fn after_failure(
        &mut self,
        id: TxnId,
        offsets: &[(u32, u64)],
        failure: TxnFailure,
        started: Instant,
    ) -> Result<(), EngineError> {
        self.summary.aborted += 1;
        crate::metrics::aborted(match failure {
            TxnFailure::Abortable(_) => "abortable",
            TxnFailure::Fatal(_) => "fatal",
        });
        let last = match failure {
            TxnFailure::Abortable(e) => {
                tracing::warn!(txn = %id, error = %e, "transaction failed; aborting and publishing again");
                if let Err(abort) = committer::abort(&self.producer, self.timeout) {
                    tracing::warn!(error = %abort, "abort failed; replacing the producer");
                    self.replace_producer()?;
                }
                e
            }
            TxnFailure::Fatal(e) => {
                tracing::error!(txn = %id, error = %e, "fatal producer error; replacing the producer");
                self.replace_producer()?;
                e
            }
        };
        self.pending_marks.push(Decided { id, status: TxnStatus::Aborted, offsets: offsets.to_vec() });
        if started.elapsed() >= self.timeout {
            return Err(EngineError::Unrecoverable { seconds: started.elapsed().as_secs(), last });
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    fn replace_producer(&mut self) -> Result<(), EngineError> {
        let producer = clients::producer(&self.config).map_err(kafka("creating the producer"))?;
        producer.init_transactions(self.timeout).map_err(kafka("initialising transactions"))?;
        self.producer = Arc::new(producer);
        self.journal.new_epoch(&self.store)?;
        Ok(())
    }

    /// Records a transaction that committed at `at`.
    fn committed(&mut self, id: TxnId, offsets: Vec<(u32, u64)>, at: Instant) {
        self.summary.transactions += 1;
        if let Some(first) = self.first_input {
            self.summary.busy = at.saturating_duration_since(first);
        }
        for &(p, x) in &offsets {
            self.pending_clear.insert(p, x);
        }
        self.pending_marks.push(Decided { id, status: TxnStatus::Committed, offsets });
    }

    fn flush_marks(&mut self) -> Result<(), EngineError> {
        if self.pending_marks.is_empty() && self.pending_clear.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let mut batch = store.batch();
        self.stage_housekeeping(&mut batch);
        store.commit(batch)?;
        Ok(())
    }

    /// Journal outcomes and outbox clean-up ride along with the next batch.
    fn stage_housekeeping(&mut self, batch: &mut crate::store::LedgerBatch<'_>) {
        for d in self.pending_marks.drain(..) {
            Journal::mark(batch, &d.id, d.status, &d.offsets);
        }
        for (p, x) in std::mem::take(&mut self.pending_clear) {
            batch.clear_outbox_below(p, x);
        }
    }

    /// One commit cycle over the polled messages: processed while the
    /// previous cycle's Kafka commit runs, then published in a transaction
    /// of its own once that one has ended (see [`committer`]).
    /// Returns the messages' buffer, emptied, for the next cycle.
    fn cycle(
        &mut self,
        arena: Vec<u8>,
        polled: &[Polled],
        polling: Duration,
    ) -> Result<Vec<u8>, EngineError> {
        // Only partitions still owned, only offsets not yet applied.
        let owned = EngineContext::lock(&self.assignment).owned.clone();
        self.workers.retain_owned(|p| owned.contains_key(&p));
        let mut by_partition: BTreeMap<u32, Vec<workers::Message>> = BTreeMap::new();
        for m in polled {
            match owned.get(&m.partition) {
                Some(o) if m.offset >= o.progress.next_offset => {
                    by_partition.entry(m.partition).or_default().push(workers::Message {
                        offset: m.offset,
                        key: m.key.0..m.key.1,
                        payload: m.payload.0..m.payload.1,
                    });
                }
                _ => {}
            }
        }
        if by_partition.is_empty() {
            self.finish_inflight()?;
            self.flush_marks()?;
            return Ok(arena);
        }
        let started = Instant::now();
        let mut report = crate::metrics::CycleReport { polling, ..Default::default() };
        for m in polled.iter().filter(|m| by_partition.contains_key(&m.partition)) {
            let e = report.partitions.entry(m.partition).or_insert((0, None));
            e.0 += 1;
            if let Some(ts) = m.timestamp {
                e.1 = Some(e.1.map_or(ts, |o: i64| o.min(ts)));
            }
        }
        let store = self.store.clone();
        let work = by_partition
            .into_iter()
            .map(|(partition, messages)| workers::PartitionWork {
                partition,
                progress: owned[&partition].progress,
                messages,
            })
            .collect();
        let buffer = Arc::new(arena);
        let (staged, done) = self.workers.process(buffer.clone(), work)?;
        // The workers hold no copy once they have answered.
        let mut arena = Arc::try_unwrap(buffer).unwrap_or_default();
        arena.clear();
        let mut offsets = Vec::with_capacity(done.len());
        let mut progress_after = Vec::with_capacity(done.len());
        let mut sinks = Vec::with_capacity(done.len());
        for workers::PartitionDone { partition: p, mut sink, stats, progress } in done {
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
            sinks.push(sink);
            offsets.push((p, progress.next_offset));
            progress_after.push((p, progress));
        }
        report.processing = started.elapsed();
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
            for (p, progress) in progress_after {
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
        Ok(arena)
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
    fn finish_inflight(&mut self) -> Result<(), EngineError> {
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
                self.committed(f.id, f.offsets, finished.at);
                Ok(())
            }
            Err(failure) => self.fail_and_republish(f.id, f.offsets, failure, f.started),
        }
    }

    /// A cycle's transaction failed after its state was committed locally:
    /// abort it (or replace the producer) and publish the same outbox again
    /// for the partitions still owned. A partition revoked meanwhile keeps
    /// its outbox; it is published when the partition is assigned again.
    fn fail_and_republish(
        &mut self,
        id: TxnId,
        offsets: Vec<(u32, u64)>,
        failure: TxnFailure,
        started: Instant,
    ) -> Result<(), EngineError> {
        self.after_failure(id, &offsets, failure, started)?;
        let owned: Vec<(u32, u64)> = {
            let a = EngineContext::lock(&self.assignment);
            offsets.into_iter().filter(|(p, _)| a.owned.contains_key(p)).collect()
        };
        if owned.is_empty() {
            // Recorded now: the partitions may be committed by others before
            // our next batch, and an open entry whose offsets were reached
            // would be taken as committed.
            return self.flush_marks();
        }
        let ranges = self.committed_ranges(&owned)?;
        self.republish(&ranges)
    }

    /// For partitions about to be republished: from the group's committed
    /// offset to the failed transaction's offset (a later cycle's outbox,
    /// already committed locally, is its own transaction's).
    fn committed_ranges(&self, offsets: &[(u32, u64)]) -> Result<Vec<(u32, u64, u64)>, EngineError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _) in offsets {
            tpl.add_partition(&self.config.kafka.topics.input, p as i32);
        }
        let committed =
            self.consumer.committed_offsets(tpl, self.timeout).map_err(kafka("reading committed offsets"))?;
        Ok(offsets
            .iter()
            .map(|&(p, x)| {
                let y = committed
                    .find_partition(&self.config.kafka.topics.input, p as i32)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o as u64),
                        _ => None,
                    })
                    .unwrap_or(0);
                (p, y.min(x), x)
            })
            .collect())
    }

    /// One Kafka transaction: the messages, then the input offsets (with the
    /// transaction id as their metadata), then commit.
    fn transact<'e>(
        &mut self,
        id: &TxnId,
        entries: impl Iterator<Item = &'e [u8]>,
        offsets: &[(u32, u64)],
    ) -> Result<(), TxnFailure> {
        let txn = id.to_string();
        self.producer.begin_transaction().map_err(classify)?;
        produce(&self.producer, &self.config.kafka.topics, &txn, entries)?;
        self.commit_offsets(&txn, offsets)
    }

    /// The input offsets as the transaction `txn` commits them (its id as
    /// their metadata), and the consumer's group metadata, read fresh: a
    /// rebalance may have moved the generation, and stale metadata would
    /// let a zombie commit.
    fn offsets_to_commit(
        &self,
        txn: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(TopicPartitionList, ConsumerGroupMetadata), TxnFailure> {
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

    /// Adds the input offsets to the open transaction `txn` and commits it,
    /// on this thread.
    fn commit_offsets(&mut self, txn: &str, offsets: &[(u32, u64)]) -> Result<(), TxnFailure> {
        let (tpl, group) = self.offsets_to_commit(txn, offsets)?;
        committer::commit(&self.producer, &tpl, &group, self.timeout, &self.failpoint)
    }
}

/// The cycle's RocksDB commit (unsynced: the Kafka commit's thread syncs
/// the WAL) on this thread and, alongside, the Kafka side: the previous
/// transaction ends, then (if it committed) this one begins and its
/// records go to the producer, so librdkafka sends them meanwhile. None is
/// visible to readers before the Kafka commit, which waits for the RocksDB
/// commit; a crash in between leaves an open transaction the next start
/// aborts. Returns the previous cycle with its outcome, this one's
/// producing (none if not begun) and the RocksDB commit's result.
#[allow(clippy::type_complexity)]
fn write_and_begin(
    store: &Store,
    batch: crate::store::LedgerBatch<'_>,
    (producer, topics, failpoint): (&BaseProducer, &crate::config::TopicsConfig, &Failpoint),
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
fn begin_and_produce(
    producer: &BaseProducer,
    topics: &crate::config::TopicsConfig,
    txn: &str,
    sinks: &mut [outbox::OutboxSink],
) -> Option<TxnFailure> {
    producer.begin_transaction().err().map(classify).or_else(|| {
        let entries = sinks.iter_mut().flat_map(|s| s.entries().map(|(_, entry)| entry));
        produce(producer, topics, txn, entries).err()
    })
}

/// Produces the messages of encoded outbox entries into the open
/// transaction `txn`.
fn produce<'e>(
    producer: &BaseProducer,
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
