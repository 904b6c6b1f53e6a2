//! Rules changed without a restart. On SIGHUP, or when a rules file's
//! size or modification time changes (checked every
//! `engine.rules_check_interval_ms`), the engine reads the rules again
//! between two cycles, when no batch is being processed, and takes the new
//! timeline only if it agrees, for every partition of the state, with the
//! rules that partition was processed under (its progress names them) at
//! every instant it has already applied: each event is computed by the version
//! in force at its own time, so a version must take effect after every
//! event applied so far, or replaying the input would give other rewards
//! than the ones published. Otherwise the running rules stay, and the log
//! and `accrual_rules_reloads_total{result="refused"}` say why.
//!
//! The same check runs at start against the timeline the state recorded.
//! Each instance checks the partitions its state holds (owned ones and
//! standby copies); see docs/rules.md, "Versions", for rolling a new
//! version out to several instances.

use accrual_core::rules::{Recorded, Timeline, local_text};
use accrual_core::time::Timestamp;
use accrual_store::owner::Stamped;
use accrual_store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crate::rebalance::{self, EngineContext};
use crate::{Engine, EngineError, kafka};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;

/// What reading the rules again came to.
pub enum Reload {
    /// The new timeline, to apply from the next cycle, and the instant
    /// from which it differs from the running one.
    Applied(Arc<Timeline>, Timestamp),
    /// Same versions at the same instants.
    Unchanged,
    /// It would change what was already applied; the message says where.
    Refused(String),
    /// The rules do not load, or drop what the state depends on.
    Invalid(String),
}

impl Reload {
    pub fn result(&self) -> &'static str {
        match self {
            Reload::Applied(..) => "applied",
            Reload::Unchanged => "unchanged",
            Reload::Refused(_) => "refused",
            Reload::Invalid(_) => "invalid",
        }
    }
}

/// Reads the rules at `path` again and decides whether they may replace
/// `current` over the partitions of `store`.
pub fn reload(path: &Path, current: &Timeline, store: &Store) -> Result<Reload, StoreError> {
    let next = match Timeline::load(path) {
        Ok(next) => next,
        Err(e) => return Ok(Reload::Invalid(e.to_string())),
    };
    if let Err(e) = current.keeps(&next) {
        return Ok(Reload::Invalid(e.to_string()));
    }
    let running = current.recorded();
    let Some(differs) = next.first_difference(&running) else {
        return Ok(Reload::Unchanged);
    };
    Ok(match rewrites_history(&next, &running, store, None)? {
        Some(why) => Reload::Refused(why),
        None => Reload::Applied(Arc::new(next), differs),
    })
}

/// At start: whether `timeline` may take over from the rules the state was
/// processed under (`None`: yes), saying why not. Only the partitions
/// this instance wrote count: another writer's state is never continued
/// as it is (it is restored from the changelog, or refused; see
/// [`check_partition`]).
pub fn check_at_start(
    timeline: &Timeline,
    recorded: &Recorded,
    store: &Store,
    instance: &str,
) -> Result<Option<String>, StoreError> {
    rewrites_history(timeline, recorded, store, Some(instance))
}

/// How a refusal by [`check_partition`] begins: a reload checks such
/// partitions again.
pub const REFUSED_OVER_RULES: &str = "its state was processed by";

/// Refuses a partition taken over (its state restored, or kept) that was
/// processed under rules differing from `timeline` before its latest
/// event: its previous owner applied a version this instance has not read,
/// or the reverse. Going on would compute its next events under other
/// rules than a replay would.
pub fn check_partition(store: &Store, timeline: &Timeline, p: u32) -> Result<(), String> {
    let Some(stamped) = store.stamped_progress(p).map_err(|e| e.to_string())? else { return Ok(()) };
    let Some(recorded) = stamped.rules.as_deref().map(Timeline::parse_record) else { return Ok(()) };
    let Some(differs) = differs_before(timeline, &recorded, &stamped) else { return Ok(()) };
    let zone = &timeline.first().timezone;
    let writer = stamped.owner.map_or_else(|| "an earlier instance".to_string(), |o| o.to_string());
    Err(format!(
        "{REFUSED_OVER_RULES} {writer} under rules that differ from this instance's from {} on, and it has \
         applied events up to {}: give every instance the same rules (a version must reach every instance \
         before its instant); this instance takes the partition up once it reads them",
        since(differs, zone),
        local_text(stamped.progress.stream_time, zone)
    ))
}

/// Where `timeline` parts from the rules a partition was processed under
/// (`recorded`), if that is at or before its latest event.
fn differs_before(timeline: &Timeline, recorded: &Recorded, stamped: &Stamped) -> Option<Timestamp> {
    timeline.first_difference(recorded).filter(|&differs| differs <= stamped.progress.stream_time)
}

/// An instant where two timelines part, as the messages say it.
pub(crate) fn since(differs: Timestamp, zone: &accrual_core::time::TzOffset) -> String {
    if differs.0 == i64::MIN { "the beginning".to_string() } else { local_text(differs, zone) }
}

/// Why `next` would change what some partition of `store` (written by
/// `writer`, if given) already applied, if it would: each partition is
/// compared with the rules its progress says it was processed under, or
/// with `otherwise` if it does not say.
fn rewrites_history(
    next: &Timeline,
    otherwise: &Recorded,
    store: &Store,
    writer: Option<&str>,
) -> Result<Option<String>, StoreError> {
    for partition in store.partitions()? {
        let Some(stamped) = store.stamped_progress(partition)? else { continue };
        // State from before owners were recorded counts as this instance's.
        let counts = match (writer, &stamped.owner) {
            (Some(instance), Some(owner)) => owner.instance == instance,
            _ => true,
        };
        let recorded = stamped.rules.as_deref().map(Timeline::parse_record);
        let Some(differs) =
            differs_before(next, recorded.as_ref().unwrap_or(otherwise), &stamped).filter(|_| counts)
        else {
            continue;
        };
        let zone = &next.first().timezone;
        return Ok(Some(format!(
            "the rules differ from those applied from {} on, but partition {partition} has applied events up \
             to {}: a change must take effect after every event applied, as a new version (a rules file with \
             effective_from after that) in the rules directory",
            since(differs, zone),
            local_text(stamped.progress.stream_time, zone)
        )));
    }
    Ok(None)
}

/// The size and modification time of each rules file, to notice a change.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let files: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => vec![path.to_path_buf()],
    };
    let mut out: Vec<_> = files
        .into_iter()
        .map(|file| {
            // Follows symbolic links, as a Kubernetes ConfigMap's are swapped.
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            (file, size, meta.and_then(|m| m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// Sets `flag` whenever the rules at `path` change, checking every
/// `every`, until the flag is dropped.
pub fn watch(path: PathBuf, every: Duration, flag: &Arc<AtomicBool>) -> std::io::Result<()> {
    let flag: Weak<AtomicBool> = Arc::downgrade(flag);
    let mut seen = fingerprint(&path);
    std::thread::Builder::new().name("rules-watch".into()).spawn(move || {
        loop {
            std::thread::sleep(every);
            let Some(flag) = flag.upgrade() else { return };
            let now = fingerprint(&path);
            if now != seen {
                seen = now;
                flag.store(true, Ordering::Relaxed);
            }
        }
    })?;
    Ok(())
}

/// The engine's side: applying a reload between two cycles.
impl Engine {
    /// Reads the rules again and, if they may replace the running ones,
    /// applies them from the next cycle on (see `reload`).
    pub(crate) fn reload_rules(&mut self) -> Result<(), EngineError> {
        let path = &self.config.engine.rules;
        let outcome = reload(path, &self.timeline, &self.store)?;
        crate::metrics::rules_reloaded(outcome.result());
        match outcome {
            Reload::Applied(next, from) => {
                self.workers.set_timeline(&next);
                *self.shared_rules.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next.clone();
                crate::metrics::rules_in_use(Some(&self.timeline), &next);
                if let Some(m) = &self.metrics {
                    m.set_programs(&next);
                }
                let mut batch = self.store.batch();
                batch.set_rules_version(&next.record());
                self.store.commit(batch)?;
                let from = since(from, &next.first().timezone);
                tracing::info!(rules = %path.display(), versions = %next.label(), from = %from, "rules reloaded");
                self.timeline = next;
                self.retry_refused_over_rules()?;
            }
            Reload::Unchanged => {
                tracing::info!(rules = %path.display(), "rules read again: unchanged")
            }
            Reload::Refused(why) | Reload::Invalid(why) => {
                tracing::error!(rules = %path.display(), "rules reload refused, the running rules stay: {why}")
            }
        }
        Ok(())
    }

    /// After a reload: the partitions refused because they were processed
    /// under other rules go through their restore again (their state is
    /// kept if it still continues the group's), and are taken up if the
    /// rules agree now (`finish_restores`).
    fn retry_refused_over_rules(&mut self) -> Result<(), EngineError> {
        let retry: Vec<u32> = EngineContext::lock(&self.assignment)
            .refused
            .iter()
            .filter(|(_, why)| why.starts_with(REFUSED_OVER_RULES))
            .map(|(p, _)| *p)
            .collect();
        if retry.is_empty() {
            return Ok(());
        }
        let topic = &self.config.kafka.topics.input;
        let mut tpl = TopicPartitionList::new();
        for p in &retry {
            tpl.add_partition(topic, *p as i32);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, self.timeout)
            .map_err(kafka("reading the group's offsets"))?;
        let context = self.consumer.context();
        let mut a = EngineContext::lock(&self.assignment);
        for p in retry {
            let offset = rebalance::committed_offset(&committed, topic, p);
            tracing::info!(partition = p, "rules reloaded: checking the refused partition again");
            if let Err(reason) = context.start_restore(&mut a, p, offset) {
                context.refuse(&mut a, p, reason);
            }
        }
        Ok(())
    }
}
