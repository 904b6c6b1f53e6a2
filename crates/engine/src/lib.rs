//! accrual's engine: `accrual run`, the exactly-once Kafka engine, with
//! its configuration ([`config`]), HTTP API ([`api`]), metrics ([`metrics`])
//! and the Kafka helpers it shares with the command line ([`kafka_tools`]).
//!
//! One thread runs commit cycles. A cycle polls up to `max_batch` messages
//! (or for `commit_interval_ms`), runs each partition's messages through the
//! [`Processor`](accrual_core::pipeline::Processor), commits state, outbox, progress and a journal entry in ONE
//! synced RocksDB WriteBatch, then publishes the outbox and commits the
//! input offsets in ONE Kafka transaction. The Kafka commit runs on a
//! thread of its own while the next cycle polls, processes and commits to
//! RocksDB ([`committer`]), so two journal entries may be open at a crash
//! ([`journal`]). A failed transaction is aborted (or the producer
//! replaced) and the outbox is published again, never skipped
//! ([`recovery`]). A cycle's steps are in [`cycle`], the producing in
//! [`publish`], the test-only crash points in [`failpoint`]. The protocol
//! and its crash points: `docs/exactly-once.md`. Partitions are taken up
//! after their restore in [`takeover`]; rules are reloaded in [`reload`].

pub mod api;
mod bootstrap;
pub mod changelog_check;
pub mod changelog_topic;
pub mod clients;
mod committer;
pub mod config;
mod cycle;
mod failpoint;
pub mod forward;
pub mod journal;
pub mod kafka_tools;
mod leftovers;
pub mod metrics;
pub mod outbox;
pub mod owners;
mod publish;
pub mod rebalance;
mod recovery;
mod reload;
pub mod report;
mod republish;
pub mod restore;
pub mod standby;
mod takeover;
mod ticker;
mod workers;

use cycle::{InFlight, Polled};
use failpoint::Failpoint;
use publish::produce;

use crate::config::EngineConfig;
use accrual_core::rules::{RulesError, Timeline};
use accrual_store::{Store, StoreError, StoreOptions};
use journal::{Journal, TxnId, TxnStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rebalance::{Assignment, EngineContext};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    PartitionCount(String),
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    #[error("kafka.topics.changelog: {0}")]
    ChangelogTopic(kafka_tools::ToolError),
    #[error(transparent)]
    Assignment(rebalance::AssignmentError),
    #[error("a worker thread stopped (see the log for its panic)")]
    WorkerStopped,
    /// A thread of the engine's own (a worker, the ticker, the rules
    /// watcher, the group watcher, the standby replicas) could not start.
    #[error("starting a thread: {0}")]
    WorkerStart(#[source] std::io::Error),
    #[error("the consumer has no group metadata (not in a group)")]
    NoGroupMetadata,
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    RulesHistory(String),
    #[error("could not publish for {seconds} s; exiting so a restart recovers from the outbox: {last}")]
    Unrecoverable { seconds: u64, last: String },
    #[error(
        "{0}; the transaction was aborted, and the engine stops rather than publish for partitions another \
         instance may own now (a restart rejoins the group, and local state is checked against the group's)"
    )]
    NotMember(String),
    #[error(
        "publishing partition {partition}'s state to the changelog again, as asked, failed: {source}. The \
         engine stops: the changelog may hold only part of the state now, and the partition must not go on \
         until it holds it whole (restarted, the instance publishes it when the partition is assigned to it)"
    )]
    Republish {
        partition: u32,
        #[source]
        source: restore::RestoreError,
    },
}

impl From<rebalance::AssignmentError> for EngineError {
    fn from(e: rebalance::AssignmentError) -> EngineError {
        match e {
            rebalance::AssignmentError::PartitionCount(problem) => EngineError::PartitionCount(problem),
            other => EngineError::Assignment(other),
        }
    }
}

/// Maps a librdkafka error to an [`EngineError`] that says what was being done.
pub fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> EngineError {
    move |source| EngineError::Kafka { what, source }
}

/// Now, for clock events. Clock events go into the input topic, so
/// replays see the same times.
pub use accrual_core::time::wall_clock;

/// Options of one run beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop (gracefully) after this long without input.
    pub stop_when_idle: Option<Duration>,
    /// Set (by SIGHUP) to read the rules again between two cycles.
    pub reload: Arc<AtomicBool>,
}

pub use report::RunSummary;

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
    /// This instance may have left the group meanwhile (a pause past its
    /// session timeout): abort it, and stop.
    NotMember(String),
}

fn classify(e: KafkaError) -> TxnFailure {
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnFailure::Fatal(e.to_string()),
        _ => TxnFailure::Abortable(e.to_string()),
    }
}

struct Engine {
    /// The standby replicas' thread, if any. First, so it stops before the
    /// consumer closes (fields drop in order).
    standby: Option<standby::Running>,
    config: EngineConfig,
    store: Arc<Store>,
    consumer: BaseConsumer<EngineContext>,
    producer: Arc<clients::EngineProducer>,
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
    /// Where committed state ends in the changelog, to record likewise.
    pending_positions: BTreeMap<u32, accrual_store::changelog::OwnerPosition>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Partitions of the input topic, for the API's account lookup.
    partitions: Arc<std::sync::atomic::AtomicU32>,
    rebalances_seen: u64,
    /// When the current cycle began polling: the last sign that this
    /// instance is a member of the group (see `committer::end`).
    polled_at: Instant,
    /// Sends the engine's own clock events (see `ticker`).
    ticker: ticker::Ticker,
    /// The rules running, and their copy the HTTP API reads (see `reload`).
    timeline: Arc<Timeline>,
    shared_rules: api::SharedTimeline,
}

/// Runs the engine until `stop` is set (SIGINT/SIGTERM), the idle limit in
/// `options` passes, or an unrecoverable error.
pub fn run(
    config: EngineConfig,
    stop: Arc<AtomicBool>,
    options: RunOptions,
) -> Result<RunSummary, EngineError> {
    let (timeline, store) = open_state(&config)?;
    let e = &config.engine;
    let shared: api::SharedTimeline = Arc::new(std::sync::RwLock::new(timeline.clone()));

    let timeout = Duration::from_millis(e.kafka_timeout_ms);
    let assignment = Arc::new(Mutex::new(Assignment::default()));
    let commits = Arc::new(committer::Gate::default());
    let context = EngineContext {
        store: store.clone(),
        instance: config.engine.instance_id.clone(),
        topic: config.kafka.topics.input.clone(),
        assignment: assignment.clone(),
        timeout,
        commits: commits.clone(),
        skip_input_gaps: e.skip_input_gaps,
        changelog: config.kafka.topics.changelog.as_ref().map(|topic| rebalance::ChangelogSource {
            config: Arc::new(config.clone()),
            topic: topic.clone(),
        }),
    };
    let owners = Arc::new(std::sync::RwLock::new(owners::Owners::default()));
    if config.http.enabled || config.engine.standby_replicas > 0 {
        owners::watch(&config, owners.clone(), OWNERS_REFRESH).map_err(EngineError::WorkerStart)?;
    }
    // Up before Kafka is reached: /healthz answers while the broker is down.
    let (metrics, partitions) = start_http(&config, &store, &shared, &assignment, &owners)?;
    // Keeps copies, and drops what partitions that moved away left behind.
    let standby = match &config.kafka.topics.changelog {
        None => None,
        Some(_) => standby::Standby {
            config: Arc::new(config.clone()),
            store: store.clone(),
            assignment: assignment.clone(),
            owners,
        }
        .start()
        .map_err(EngineError::WorkerStart)?,
    };
    let consumer = clients::consumer(&config, context).map_err(kafka("creating the consumer"))?;
    let producer = Arc::new(clients::producer(&config).map_err(kafka("creating the producer"))?);
    // Fences an older producer with our transactional id and completes (or
    // aborts) whatever transaction it left open.
    producer.init_transactions(timeout).map_err(kafka("initialising transactions"))?;
    let journal = Journal::start(&store, &config.engine.instance_id)?;
    let workers = workers::Workers::new(
        &timeline,
        &store,
        config.engine.workers,
        config.engine.account_cache_mb << 20,
        config.kafka.topics.changelog.is_some(),
    )?;
    let ticker = ticker::Ticker::start(&config).map_err(EngineError::WorkerStart)?;
    if config.engine.rules_check_interval_ms > 0 {
        let every = Duration::from_millis(config.engine.rules_check_interval_ms);
        reload::watch(config.engine.rules.clone(), every, &options.reload)
            .map_err(EngineError::WorkerStart)?;
    }
    let mut engine = Engine {
        standby,
        ticker,
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
        pending_positions: BTreeMap::new(),
        metrics,
        partitions,
        rebalances_seen: 0,
        polled_at: Instant::now(),
        config,
        timeline: timeline.clone(),
        shared_rules: shared,
    };
    engine.resolve_journal()?;
    engine.check_topics()?;
    engine.consumer.subscribe(&[&engine.config.kafka.topics.input]).map_err(kafka("subscribing"))?;
    tracing::info!(
        instance = %engine.config.engine.instance_id,
        epoch = engine.journal.epoch(),
        rules_version = %timeline.label(),
        topic = %engine.config.kafka.topics.input,
        "engine started"
    );
    engine.main_loop(&stop, &options)?;
    // Stopped before the partitions are given up (the consumer closes).
    engine.standby = None;
    engine.count_restores();
    tracing::info!(summary = ?engine.summary, "engine stopped");
    Ok(engine.summary)
}

/// Opens the state directory and loads the rules, refusing rules that
/// disagree with what the state has applied; records the rules' version.
fn open_state(config: &EngineConfig) -> Result<(Arc<Timeline>, Arc<Store>), EngineError> {
    let timeline = Arc::new(Timeline::load(&config.engine.rules)?);
    let e = &config.engine;
    let store = Arc::new(Store::open(
        &e.state_dir,
        &StoreOptions {
            sync: e.sync_wal,
            block_cache_bytes: e.block_cache_mb << 20,
            write_buffer_bytes: e.write_buffer_mb << 20,
        },
    )?);
    if let Some(recorded) = store.rules_version()? {
        let recorded = Timeline::parse_record(&recorded);
        if let Some(why) = reload::check_at_start(&timeline, &recorded, &store, &e.instance_id)? {
            return Err(EngineError::RulesHistory(format!("{}: {why}", e.rules.display())));
        }
        if let Some(from) = timeline.first_difference(&recorded) {
            tracing::info!(from = %from, versions = %timeline.label(), "rules changed; events from that instant on are computed by the new versions")
        }
    }
    let mut batch = store.batch();
    batch.set_rules_version(&timeline.record());
    store.commit(batch)?;
    Ok((timeline, store))
}

/// How often the group's partition owners are read, for lookups.
const OWNERS_REFRESH: Duration = Duration::from_secs(2);

/// Installs the metrics and starts the HTTP listener (if enabled); returns
/// the metrics and the input topic's partition count it reads.
fn start_http(
    config: &EngineConfig,
    store: &Arc<Store>,
    rules: &api::SharedTimeline,
    assignment: &Arc<Mutex<Assignment>>,
    owners: &Arc<std::sync::RwLock<owners::Owners>>,
) -> Result<(Option<Arc<crate::metrics::Metrics>>, Arc<std::sync::atomic::AtomicU32>), EngineError> {
    let metrics = match crate::metrics::install() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "metrics not installed");
            None
        }
    };
    let timeline = rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    crate::metrics::info(&timeline);
    if let Some(m) = &metrics {
        m.set_programs(&timeline);
    }
    let partitions = Arc::new(std::sync::atomic::AtomicU32::new(0));
    if config.http.enabled {
        let peers =
            forward::Peers::new(config.engine.instance_id.clone(), config.http.clone(), owners.clone());
        let api = crate::api::ApiState {
            store: store.clone(),
            rules: rules.clone(),
            assignment: assignment.clone(),
            partitions: partitions.clone(),
            partitioner: config.kafka.partitioner,
            token: Some(config.http.token.clone()).filter(|t| !t.is_empty()),
            metrics: metrics.clone(),
            peers: Arc::new(peers),
            changelog: config.kafka.topics.changelog.is_some(),
        };
        crate::api::serve(&config.http.listen, api)
            .map_err(|e| EngineError::Http(format!("HTTP listener {}: {e}", config.http.listen)))?;
    }
    Ok((metrics, partitions))
}

impl Engine {
    /// Checks the input topic's partition count against the state's, and
    /// the changelog topic (present, co-partitioned, compacted).
    fn check_topics(&mut self) -> Result<(), EngineError> {
        let input = &self.config.kafka.topics.input;
        match rebalance::topic_partitions(&self.consumer, input, self.timeout) {
            Some(count) => {
                rebalance::check_partition_count(&self.store, input, count)
                    .map_err(EngineError::PartitionCount)?;
                self.partitions.store(count, Ordering::Relaxed);
            }
            None => tracing::warn!("could not read the input topic's partition count"),
        }
        if let Some(changelog) = &self.config.kafka.topics.changelog {
            changelog_topic::check(&clients::Connection::of(&self.config.kafka), changelog, input)
                .map_err(EngineError::ChangelogTopic)?;
        }
        Ok(())
    }

    /// The run's restores and refusals, into its summary.
    fn count_restores(&mut self) {
        let a = EngineContext::lock(&self.assignment);
        self.summary.refused_partitions = a.refusals;
        self.summary.restored_partitions = a.restores;
        self.summary.restored_changes = a.restored_changes;
        self.summary.restored_bytes = a.restored_bytes;
        self.summary.restore_longest = a.restore_longest;
    }

    fn main_loop(&mut self, stop: &AtomicBool, options: &RunOptions) -> Result<(), EngineError> {
        let interval = Duration::from_millis(self.config.engine.commit_interval_ms);
        let max_batch = self.config.engine.max_batch;
        let mut arena: Vec<u8> = Vec::with_capacity(max_batch * 320);
        let mut polled: Vec<Polled> = Vec::with_capacity(max_batch);
        let mut last_input = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            arena.clear();
            polled.clear();
            let polling = Instant::now();
            self.polled_at = polling;
            self.poll(&mut arena, &mut polled, polling + interval, stop);
            if let Some(error) = EngineContext::lock(&self.assignment).error.take() {
                return Err(error.into());
            }
            self.recover_assigned()?;
            self.finish_restores()?;
            self.observe_assignment();
            self.start_republishes()?;
            if !polled.is_empty() {
                last_input = Instant::now();
                self.first_input.get_or_insert(last_input);
            }
            if options.reload.swap(false, Ordering::Relaxed) {
                self.reload_rules()?;
            }
            arena = self.cycle(arena, &polled, polling.elapsed())?;
            let (assigned, restoring) = {
                let a = EngineContext::lock(&self.assignment);
                (a.rebalances > 0, !a.restoring.is_empty())
            };
            // Idle counts only once there is something to read: a restoring
            // partition delivers nothing until it is done.
            if !assigned || restoring {
                last_input = Instant::now();
            }
            if options.stop_when_idle.is_some_and(|idle| last_input.elapsed() >= idle) {
                tracing::info!("no input for the idle limit; stopping");
                break;
            }
        }
        // Restores still running stop (a restore cut short leaves no
        // progress, so the next owner restores again).
        for r in EngineContext::lock(&self.assignment).restoring.values() {
            r.cancel();
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
            let mut a = EngineContext::lock(&self.assignment);
            let (mut applied, mut left) = (0, 0);
            for r in a.restoring.values_mut() {
                let now = r.watch.applied.load(Ordering::Relaxed);
                applied += now.saturating_sub(r.reported);
                r.reported = now;
                left += r.watch.left();
            }
            let republishing = a.republishing().count();
            crate::metrics::restoring(applied, a.restoring.len() - republishing, left);
            let lag: BTreeMap<u32, i64> = a
                .owned
                .iter()
                .filter_map(|(p, o)| {
                    a.stable_offsets.get(p).map(|s| (*p, (s - o.progress.next_offset as i64).max(0)))
                })
                .collect();
            let owned = a.owned.len() + republishing;
            (a.rebalances, owned, a.refused.len(), crate::api::readiness(&a).is_ok(), lag)
        };
        if rebalances > self.rebalances_seen {
            crate::metrics::rebalances(rebalances - self.rebalances_seen);
            self.rebalances_seen = rebalances;
            self.refresh_partition_count();
        }
        crate::metrics::assignment(assigned, refused, ready, &lag);
    }

    fn refresh_partition_count(&self) {
        match rebalance::topic_partitions(&self.consumer, &self.config.kafka.topics.input, self.timeout) {
            Some(n) => self.partitions.store(n, Ordering::Relaxed),
            None => tracing::warn!("could not read the input topic's partition count"),
        }
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

    /// Where each partition's state as committed (its progress at the
    /// committed offset) ends in the changelog: just past its progress
    /// record there (see `restore`: a former owner catches up from it).
    fn note_positions(&mut self, offsets: &[(u32, u64)], progress_at: &BTreeMap<u32, i64>, wall_ms: i64) {
        for &(p, next_offset) in offsets {
            if let Some(&at) = progress_at.get(&p) {
                let position =
                    accrual_store::changelog::OwnerPosition { next_offset, position: at + 1, at_ms: wall_ms };
                self.pending_positions.insert(p, position);
            }
        }
    }

    fn flush_marks(&mut self) -> Result<(), EngineError> {
        if self.pending_marks.is_empty() && self.pending_clear.is_empty() && self.pending_positions.is_empty()
        {
            return Ok(());
        }
        let store = self.store.clone();
        let mut batch = store.batch();
        self.stage_housekeeping(&mut batch);
        store.commit(batch)?;
        Ok(())
    }

    /// Journal outcomes and outbox clean-up ride along with the next batch.
    fn stage_housekeeping(&mut self, batch: &mut accrual_store::LedgerBatch<'_>) {
        for d in self.pending_marks.drain(..) {
            Journal::mark(batch, &d.id, d.status, &d.offsets);
        }
        for (p, x) in std::mem::take(&mut self.pending_clear) {
            batch.clear_outbox_below(p, x);
        }
        for (p, at) in std::mem::take(&mut self.pending_positions) {
            batch.set_owner_position(p, at);
        }
    }
}
