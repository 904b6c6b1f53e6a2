//! Restoring a partition's state from the changelog. On assignment, local
//! state is kept only if it provably continues what the group committed:
//! the changelog's progress record at the group's offset (near its end)
//! names the instance and group generation that committed it, and the
//! local progress must name the same and not be behind. Otherwise (no
//! local state, state behind the group, or a former owner's) the
//! partition's local state is dropped and its changelog partition read
//! from the beginning (`read_committed`) up to the state as of the group's
//! committed offset, every change written back in large RocksDB batches. The changelog is
//! written in the transactions that commit the input offsets, so it holds
//! that state; the engine then checks that the restore ends exactly there.
//!
//! A restore runs on a thread of its own ([`Restoring`]) while the
//! partition stays assigned and paused at the group's offset: the engine
//! goes on with its other partitions, `/readyz` says which are restoring
//! and how far, and the engine takes the partition up once it is done.

use crate::config::EngineConfig;
use accrual_store::changelog::{self, Restore};
use accrual_store::owner::Stamped;
use accrual_store::{Progress, Store, StoreError};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How far a running restore is, and its stop switch.
#[derive(Debug, Default)]
pub struct Watch {
    /// Changelog records applied so far.
    pub applied: AtomicU64,
    /// The offset read last, and the changelog's end (its high watermark
    /// when the restore started).
    pub position: AtomicI64,
    pub end: AtomicI64,
    cancel: AtomicBool,
}

impl Watch {
    /// Whether the work was asked to stop (the partition was revoked).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Records of the changelog not read yet.
    pub fn left(&self) -> u64 {
        (self.end.load(Ordering::Relaxed) - self.position.load(Ordering::Relaxed)).max(0) as u64
    }
}

/// A restore running on a thread of its own.
#[derive(Debug)]
pub struct Restoring {
    /// The group's committed offset: where the restored state must end
    /// (none: the group has no offset, and the changelog decides).
    pub committed: Option<u64>,
    pub watch: Arc<Watch>,
    /// Records already counted in the metrics.
    pub reported: u64,
    pub purpose: Purpose,
    handle: JoinHandle<Result<Restored, RestoreError>>,
}

/// Why a partition is paused on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Assigned: its state is checked against the changelog, restored if
    /// it must be.
    Restore,
    /// Owned, and its whole state published to the changelog again, as
    /// an operator asked (`POST /v1/partitions/{p}/changelog/republish`):
    /// the state stays as it is and answers lookups meanwhile.
    Republish,
}

/// What a restore needs to run on its own thread.
pub struct RestoreJob {
    pub config: Arc<EngineConfig>,
    pub store: Arc<Store>,
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    pub idle: Duration,
}

impl Restoring {
    pub fn start(job: RestoreJob, purpose: Purpose) -> std::io::Result<Restoring> {
        let watch = Arc::new(Watch::default());
        let committed = job.committed;
        let name = match purpose {
            Purpose::Restore => format!("restore-{}", job.partition),
            Purpose::Republish => format!("republish-{}", job.partition),
        };
        let handle = std::thread::Builder::new().name(name).spawn({
            let watch = watch.clone();
            move || match purpose {
                Purpose::Restore => {
                    let RestoreJob { config, store, topic, partition, committed, idle } = &job;
                    restore_partition(config, store, topic, *partition, *committed, *idle, &watch)
                }
                Purpose::Republish => crate::bootstrap::republish_partition(&job, &watch),
            }
        })?;
        Ok(Restoring { committed, watch, reported: 0, purpose, handle })
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Asks the restore to stop (the partition was revoked); it stops
    /// within a poll, leaving no progress for the partition.
    pub fn cancel(&self) {
        self.watch.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread and returns what it did.
    pub fn join(self) -> Result<Restored, RestoreError> {
        self.handle.join().unwrap_or_else(|_| Err(RestoreError::Panicked))
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The partition's progress as the changelog left it (none: the
    /// changelog held no progress of it since its last reset).
    pub progress: Option<Progress>,
    /// The local state was kept: it continues the group's.
    pub kept: bool,
    /// Kept, but the changelog does not hold the group's state of the
    /// partition (see [`publish_local_state`]) and the local state is
    /// ahead of the group's offset (work a crash left uncommitted): the
    /// state is published to the changelog once the outbox is published
    /// again and committed, not before. Published now, the changelog
    /// would hold changes whose accruals never committed, and a restore
    /// elsewhere would start after them.
    pub publish_after_recovery: bool,
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
    #[error("publishing the local state to changelog {topic} partition {partition}: {reason}")]
    Publish { topic: String, partition: u32, reason: String },
    #[error("the partition was revoked while restoring")]
    Cancelled,
    #[error("the restore's thread panicked")]
    Panicked,
}

/// Makes `partition`'s local state the group's: kept if it provably
/// continues what the group committed ([`Stamped::continues`] the
/// changelog's progress record at the group's offset), else replaced by
/// what the changelog holds up to that offset ([`replace_partition`]).
pub fn restore_partition(
    config: &EngineConfig,
    store: &Store,
    topic: &str,
    partition: u32,
    committed: Option<u64>,
    idle: Duration,
    watch: &Watch,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let kafka = |source| RestoreError::Kafka { topic: topic.to_string(), partition, source };
    let consumer = crate::clients::restore_consumer(config).map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition as i32, idle).map_err(kafka)?;
    watch.position.store(low, Ordering::Relaxed);
    watch.end.store(high, Ordering::Relaxed);
    let local = store.stamped_progress(partition)?;
    let reader = Reader { consumer: &consumer, topic, partition, idle, watch };
    // A standby's copy (see `standby`) catches up on the rest, if behind;
    // so does this instance's own state, left as it last committed it.
    let continued = match continuation(store, partition)? {
        Continuation::Copy(position) => Some((position, "a standby copy")),
        Continuation::Own(position) => Some((position, "this instance's former state")),
        // Unless it is the group's state already (checked below).
        Continuation::StaleCopy if local.as_ref().map(|l| l.progress.next_offset) != committed => {
            tracing::info!(
                partition,
                "a standby copy too old to catch up (tombstones since may be gone): replacing it"
            );
            return replace_partition(&reader, store, low, high, committed, started);
        }
        Continuation::StaleCopy | Continuation::None => None,
    };
    if let (Some((position, what)), Some(copy)) = (continued, &local) {
        let at = copy.progress.next_offset;
        if committed.is_none_or(|c| at < c) {
            return catch_up(&reader, store, (position, what), high, committed, started);
        }
        if committed.is_some_and(|c| at > c) {
            // Changes of a transaction that never committed, which this
            // broker shows: the copy is not the group's state.
            tracing::info!(partition, at, "a standby copy past the group's offset: replacing it");
            return replace_partition(&reader, store, low, high, committed, started);
        }
    }
    if let Some(local) = local.filter(|l| committed.is_none_or(|c| l.progress.next_offset >= c)) {
        let mut publish_after_recovery = false;
        let stamps = reader.stamps(low, high, committed)?;
        let kept = match stamps.at_target {
            // Nothing to prove against: the changelog does not hold the
            // group's state of the partition, and is given the local state.
            None => {
                let ahead = committed.unwrap_or(0) < local.progress.next_offset;
                let held = stamps.last.map(|s| s.progress.next_offset);
                publish_after_recovery = publish_local_state(config, store, &reader, committed, held, ahead)?;
                true
            }
            Some(theirs) if local.continues(&theirs) => true,
            Some(theirs) => {
                tracing::info!(
                    partition,
                    local_offset = local.progress.next_offset,
                    committed_offset = theirs.progress.next_offset,
                    "local state was written by {}, the group's state by {}: replacing it from the changelog",
                    describe(&local),
                    describe(&theirs),
                );
                false
            }
        };
        if kept {
            watch.position.store(high, Ordering::Relaxed);
            return Ok(Restored {
                progress: Some(local.progress),
                kept: true,
                publish_after_recovery,
                changes: 0,
                bytes: 0,
                elapsed: started.elapsed(),
            });
        }
    }
    replace_partition(&reader, store, low, high, committed, started)
}

/// Publishes the local state to the changelog, which holds no progress of
/// the partition at the group's offset since its last reset: nothing of
/// the partition (it was turned on where state already existed; see
/// `bootstrap`), or an older state up to `held` (it was turned off for a
/// while, and misses the changes made meanwhile). The snapshot starts
/// with a reset, so that restores and standby copies drop the older
/// state, keys the local state no longer has too. If the local state is
/// `ahead` of the group's offset, returns true instead: it is published
/// after the outbox (see [`Restored::publish_after_recovery`]).
fn publish_local_state(
    config: &EngineConfig,
    store: &Store,
    reader: &Reader<'_>,
    committed: Option<u64>,
    held: Option<u64>,
    ahead: bool,
) -> Result<bool, RestoreError> {
    let partition = reader.partition;
    // What the changelog holds of the partition, for the log.
    let held_text = held.map_or_else(
        || "nothing of this partition".to_string(),
        |at| format!("its state up to offset {at}, not the group's"),
    );
    if ahead {
        tracing::info!(
            partition,
            committed_offset = committed,
            "the changelog holds {held_text}, and its local state is ahead of the group's offset: \
             the state is published once its outbox is published again"
        );
        return Ok(true);
    }
    let watch = reader.watch;
    let cancelled = || watch.cancelled();
    let started = Instant::now();
    let published =
        crate::bootstrap::publish_state(config, store, reader.topic, partition, reader.idle, &cancelled)?;
    tracing::info!(
        partition,
        committed_offset = committed,
        records = published,
        seconds = started.elapsed().as_secs_f64(),
        "the changelog held {held_text}: published its local state to it"
    );
    Ok(false)
}

/// Where a partition's local state continues in the changelog.
pub(crate) enum Continuation {
    /// A standby's copy, at this position.
    Copy(i64),
    /// A standby's copy whose last record is too old to catch up from
    /// (`changelog::may_catch_up`): read it all again.
    StaleCopy,
    /// This instance's own state, exactly as a committed transaction left
    /// it (its progress is the one recorded with the position), recently.
    Own(i64),
    None,
}

/// Where `partition`'s local state continues in the changelog, if it may
/// catch up on the tail from there (see [`Continuation`]).
pub(crate) fn continuation(store: &Store, partition: u32) -> Result<Continuation, StoreError> {
    let now = crate::wall_clock().0;
    if let Some(copy) = changelog::standby_position(store, partition)? {
        let fresh = changelog::may_catch_up(copy.written_at_ms, now);
        return Ok(if fresh { Continuation::Copy(copy.position) } else { Continuation::StaleCopy });
    }
    let Some(own) = changelog::owner_position(store, partition)? else { return Ok(Continuation::None) };
    let Some(local) = store.stamped_progress(partition)? else { return Ok(Continuation::None) };
    let unchanged = own.next_offset == local.progress.next_offset;
    let fresh = changelog::may_catch_up(Some(own.at_ms), now);
    Ok(if unchanged && fresh { Continuation::Own(own.position) } else { Continuation::None })
}

/// Applies the changelog from `position` (where a standby's copy, or this
/// instance's own committed state, stopped: `what`) up to the state as of
/// the group's offset, as [`replace_partition`] does from the beginning.
fn catch_up(
    reader: &Reader<'_>,
    store: &Store,
    (position, what): (i64, &str),
    high: i64,
    committed: Option<u64>,
    started: Instant,
) -> Result<Restored, RestoreError> {
    reader.watch.position.store(position, Ordering::Relaxed);
    let restore = apply_from(reader, Restore::new(store), Offset::Offset(position), high, committed)?;
    let restored = finish(restore, store, reader.partition, started)?;
    tracing::info!(
        partition = reader.partition,
        position,
        changes = restored.changes,
        "{what} caught up on the changelog's tail"
    );
    Ok(restored)
}

/// Writes the rest of a restore, and says what it did.
fn finish(
    restore: Restore<'_>,
    store: &Store,
    partition: u32,
    started: Instant,
) -> Result<Restored, RestoreError> {
    let (changes, bytes) = (restore.changes, restore.bytes);
    if restore.dropped() > 0 {
        tracing::info!(
            partition,
            batches = restore.dropped(),
            "left out changelog batches a later one replaced: transactions that never committed (this broker \
             shows them), or a state published again (`accrual changelog republish`)"
        );
    }
    restore.finish()?;
    let progress = store.progress(partition)?;
    Ok(Restored {
        progress,
        kept: false,
        publish_after_recovery: false,
        changes,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Reads the changelog from `start` into `restore`, up to the first
/// progress record at `committed` (or to `high`). A reset after that
/// record (the state published again at the same offset: `accrual
/// changelog republish`) replaces what came before it, so the read goes on
/// from the last reset, up to its first progress record at `committed`.
fn apply_from<'s>(
    reader: &Reader<'_>,
    mut restore: Restore<'s>,
    mut start: Offset,
    high: i64,
    committed: Option<u64>,
) -> Result<Restore<'s>, RestoreError> {
    loop {
        let Some(reached) = apply_until(reader, &mut restore, start, high, committed)? else {
            return Ok(restore);
        };
        match reader.last_reset(reached + 1, high)? {
            Some(reset) => start = Offset::Offset(reset),
            None => return Ok(restore),
        }
    }
}

/// Reads the changelog from `start` into `restore` up to the first
/// progress record at `committed`, and returns its offset; none if the
/// read reached `high` first.
fn apply_until(
    reader: &Reader<'_>,
    restore: &mut Restore<'_>,
    start: Offset,
    high: i64,
    committed: Option<u64>,
) -> Result<Option<i64>, RestoreError> {
    let watch = reader.watch;
    let mut reached = None;
    let mut applying = |m: &BorrowedMessage<'_>| -> Result<bool, RestoreError> {
        let change = reader.change(m)?;
        restore.apply(&change)?;
        watch.applied.fetch_add(1, Ordering::Relaxed);
        watch.position.store(m.offset() + 1, Ordering::Relaxed);
        let at = changelog::progress_of(&change).map(|p| p.next_offset);
        if committed.is_some() && at == committed {
            reached = Some(m.offset());
        }
        Ok(reached.is_none())
    };
    if high > 0 {
        reader.read(start, high - 1, &mut applying)?;
    }
    Ok(reached)
}

fn describe(stamped: &Stamped) -> String {
    stamped.owner.as_ref().map_or_else(|| "an unrecorded owner".to_string(), |o| o.to_string())
}

/// Replaces the partition's local state with what its changelog holds up
/// to the group's committed offset: every batch's changes end with its
/// progress, so the changes up to the first progress record at
/// `committed` are the state as of that offset. Later records belong to
/// later batches, or to transactions that never committed (which a broker
/// that does not filter aborted transactions still shows). Without a
/// committed offset, everything is applied.
fn replace_partition(
    reader: &Reader<'_>,
    store: &Store,
    low: i64,
    high: i64,
    committed: Option<u64>,
    started: Instant,
) -> Result<Restored, RestoreError> {
    let partition = reader.partition;
    store.drop_partition(partition)?;
    let restore = match high > low {
        true => apply_from(reader, Restore::new(store), Offset::Beginning, high, committed)?,
        false => Restore::new(store),
    };
    finish(restore, store, partition, started)
}

/// Progress records of a partition's changelog (see [`Reader::stamps`]).
#[derive(Default)]
struct Stamps {
    at_target: Option<Stamped>,
    last: Option<Stamped>,
}

/// Reads one changelog partition.
struct Reader<'a> {
    consumer: &'a crate::clients::ChangelogReader,
    topic: &'a str,
    partition: u32,
    idle: Duration,
    watch: &'a Watch,
}

impl Reader<'_> {
    fn kafka(&self, source: KafkaError) -> RestoreError {
        RestoreError::Kafka { topic: self.topic.to_string(), partition: self.partition, source }
    }

    /// The change a record carries, if it is one of this partition's.
    fn change<'m>(&self, m: &'m BorrowedMessage<'_>) -> Result<changelog::Change<'m>, RestoreError> {
        let foreign = |what: &str| RestoreError::Foreign {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: m.offset(),
            what: what.to_string(),
        };
        let key = m.key().ok_or_else(|| foreign("a record without a key"))?;
        let change = changelog::from_message(key, m.payload())
            .ok_or_else(|| foreign("a key this engine does not write"))?;
        if change.partition() != Some(self.partition) {
            return Err(foreign("a change of another partition (is the topic co-partitioned?)"));
        }
        Ok(change)
    }

    /// The progress records since the partition's last reset (a snapshot
    /// replaced what came before it): the last at `target` (the group's
    /// offset; none: any), and the last of all. Read from the changelog's
    /// tail: each transaction ends with its partitions' progress, so the
    /// target is near the end; the window read grows until it is found, a
    /// reset is, or the whole log was read (then `last` is the last since
    /// the reset, too).
    fn stamps(&self, low: i64, high: i64, target: Option<u64>) -> Result<Stamps, RestoreError> {
        if high <= low {
            return Ok(Stamps::default());
        }
        let mut window = 1024i64;
        loop {
            let from = high.saturating_sub(window).max(low);
            let (mut found, mut reset) = (Stamps::default(), false);
            self.read(Offset::Offset(from), high - 1, &mut |m| {
                let change = self.change(m)?;
                if changelog::is_reset(&change) {
                    (found, reset) = (Stamps::default(), true);
                }
                if let Some(stamped) = changelog::stamped_of(&change) {
                    if target.is_none_or(|t| stamped.progress.next_offset == t) {
                        found.at_target = Some(stamped.clone());
                    }
                    found.last = Some(stamped);
                }
                Ok(true)
            })?;
            if found.at_target.is_some() || reset || from == low {
                return Ok(found);
            }
            window = window.saturating_mul(16);
        }
    }

    /// The offset of the last reset from `from` to the end (`high`), if any.
    fn last_reset(&self, from: i64, high: i64) -> Result<Option<i64>, RestoreError> {
        let mut last = None;
        if from < high {
            self.read(Offset::Offset(from), high - 1, &mut |m| {
                if changelog::is_reset(&self.change(m)?) {
                    last = Some(m.offset());
                }
                Ok(true)
            })?;
        }
        Ok(last)
    }

    /// Reads the partition from `start` until offset `end` (or its end
    /// of log), handing each record to `each` while it says to go on;
    /// stops if the restore is cancelled.
    fn read(
        &self,
        start: Offset,
        end: i64,
        each: &mut dyn FnMut(&BorrowedMessage<'_>) -> Result<bool, RestoreError>,
    ) -> Result<(), RestoreError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition as i32, start).map_err(|e| self.kafka(e))?;
        self.consumer.assign(&tpl).map_err(|e| self.kafka(e))?;
        let mut last = Instant::now();
        loop {
            if self.watch.cancelled() {
                return Err(RestoreError::Cancelled);
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None if last.elapsed() > self.idle => {
                    return Err(RestoreError::Stalled {
                        topic: self.topic.to_string(),
                        partition: self.partition,
                        end,
                        idle: self.idle,
                    });
                }
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(self.kafka(e)),
                Some(Ok(m)) => {
                    last = Instant::now();
                    if m.offset() > end || !each(&m)? || m.offset() == end {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// What became of a finished restore: the partition to own from the
/// group's offset, or the reason to refuse it.
pub fn outcome(
    topic: &str,
    committed: Option<u64>,
    result: Result<Restored, RestoreError>,
) -> Result<Restored, String> {
    let restored = result.map_err(|e| format!("restoring its state from the changelog failed: {e}"))?;
    if restored.kept {
        return Ok(restored);
    }
    let ends = restored.progress.map_or(0, |r| r.next_offset);
    // Without group offsets (expired, or never committed) the changelog's
    // own progress says where the partition resumes; an empty changelog
    // (a new partition) from the start. Changes with no progress after
    // them say nothing of where they end.
    let Some(committed) = committed else {
        if restored.progress.is_none() && restored.changes > 0 {
            return Err(format!(
                "the changelog {topic} holds changes of this partition but no progress record since its last \
                 reset (a snapshot cut short), and the group has no committed offset: nothing says where \
                 this state ends. Refusing to start it from the beginning; the instance that holds the \
                 partition's state publishes it again when it is assigned the partition"
            ));
        }
        return Ok(restored);
    };
    if ends < committed {
        return Err(format!(
            "the changelog {topic} holds this partition's state up to offset {ends}, but the group has committed \
             offset {committed}: the changelog is incomplete (was it configured after the group had started?). \
             Refusing to continue from older balances"
        ));
    }
    if ends > committed {
        return Err(format!(
            "the changelog {topic} holds this partition's state up to offset {ends}, past the group's committed \
             offset {committed}: it holds changes of a transaction that never committed. Refusing to continue \
             from them"
        ));
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_core::time::Timestamp;

    fn restored(at: Option<u64>, changes: u64) -> Result<Restored, RestoreError> {
        Ok(Restored {
            progress: at.map(|next_offset| Progress { next_offset, stream_time: Timestamp(0) }),
            kept: false,
            publish_after_recovery: false,
            changes,
            bytes: changes * 10,
            elapsed: Duration::ZERO,
        })
    }

    #[test]
    fn a_restore_is_taken_only_where_its_progress_says_the_state_ends() {
        let taken = |committed, at, changes| outcome("log", committed, restored(at, changes));
        assert!(taken(Some(10), Some(10), 5).is_ok());
        assert!(taken(Some(10), Some(8), 5).unwrap_err().contains("the changelog is incomplete"));
        assert!(taken(Some(10), Some(12), 5).unwrap_err().contains("never committed"));
        assert!(taken(None, Some(12), 5).is_ok(), "without group offsets the changelog's progress decides");
        assert!(taken(None, None, 0).is_ok(), "an empty changelog: a new partition, from the start");
        let cut = taken(None, None, 40).unwrap_err();
        assert!(cut.contains("no progress record since its last reset"), "{cut}");
        assert!(taken(Some(10), None, 40).is_err(), "a snapshot cut short, with group offsets");
    }
}
