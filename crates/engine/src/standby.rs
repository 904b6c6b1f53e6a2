//! Standby replicas: warm copies of partitions this instance does not own,
//! kept by tailing their changelog, so that taking one over (see
//! `restore`) only reads the changelog's tail.
//!
//! Placement: librdkafka has no pluggable assignor, so the group's
//! assignor cannot be told where the copies are. Instead the copies go
//! where it will move a partition: a partition's first copy is on the
//! instance the cooperative-sticky assignor (the engine's default) gives
//! it if its owner is lost (`heirs`), further copies on the instances
//! after the owner in the ring of instance ids (sorted). The owners and
//! members come from the group (see `owners`). With another assignor, a
//! partition that moves lands on a copy only when every other instance
//! holds one (docs/scaling.md).
//!
//! A copy is written a whole batch at a time (its changes with its
//! progress record and the changelog offset to go on from), and only
//! while the partition is not assigned here: the check and the write are
//! made under the assignment's lock, which the rebalance callback takes to
//! assign a partition. Each batch is held back until the next one shows
//! it committed, or the group's committed offset is where it ends (see
//! `changelog::TailBatch`): a broker that shows aborted transactions to
//! `read_committed` readers (the local one) would otherwise leave a
//! batch that never committed in the copy.
//!
//! The same thread owns every local state that is not the engine's: it
//! also drops what partitions that moved away left behind (see
//! `leftovers`), so it runs whenever there is a changelog, copies or not.

use crate::config::EngineConfig;
use crate::leftovers::Leftovers;
use crate::owners::Owners;
use crate::rebalance::{Assignment, EngineContext};
use crate::restore::Continuation;
use accrual_store::Store;
use accrual_store::changelog::{self, TailBatch};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the copies to keep are worked out again.
const PLAN_EVERY: Duration = Duration::from_secs(2);

/// How often batches held back are checked against the group's committed
/// offsets.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// The partitions `me` keeps copies of. The first copy of a partition
/// goes where the group's assignor would move it if its owner were lost
/// (see `heirs`), so that a takeover finds it; more copies go to the
/// instances after the owner in the ring of instance ids (sorted).
pub fn placement(owners: &Owners, me: &str, replicas: usize) -> BTreeSet<u32> {
    let mut ring: BTreeSet<&str> = owners.members.keys().map(String::as_str).collect();
    ring.extend(owners.by_partition.values().map(String::as_str));
    ring.insert(me);
    let ring: Vec<&str> = ring.into_iter().collect();
    let copies = replicas.min(ring.len() - 1);
    let mut out = BTreeSet::new();
    if copies == 0 {
        return out;
    }
    let owners_of: BTreeSet<&str> = owners.by_partition.values().map(String::as_str).collect();
    for owner in owners_of.into_iter().filter(|o| *o != me) {
        let mut staying = owners.members.clone();
        staying.remove(owner);
        staying.entry(me.to_string()).or_insert_with(|| format!("{}{me}", crate::owners::CLIENT_ID_PREFIX));
        let heirs = heirs(&owners.by_partition, &staying);
        let Some(i) = ring.iter().position(|r| *r == owner) else { continue };
        let after = (1..ring.len()).map(|k| ring[(i + k) % ring.len()]);
        for (p, _) in owners.by_partition.iter().filter(|(_, o)| *o == owner) {
            let heir = heirs.get(p).map(String::as_str);
            let holders = heir.into_iter().chain(after.clone().filter(|r| Some(*r) != heir));
            if holders.take(copies).any(|h| h == me) {
                out.insert(*p);
            }
        }
    }
    out
}

/// Where the group's assignor moves the partitions whose owners are not
/// among `staying` (instance id -> member id), given the owners in
/// `by_partition`. librdkafka's cooperative-sticky assignor (the engine's
/// default) keeps the staying members' partitions where they are and
/// hands the others out highest partition first, each to the member
/// holding the fewest partitions, the lowest member id among equals
/// (`rdkafka_sticky_assignor.c`: `sortPartitions`, `maybeAssign`). As the
/// result is balanced, its rebalancing moves nothing more.
/// `tests/kafka_standby_placement.rs` holds this to the assignor.
pub fn heirs(
    by_partition: &BTreeMap<u32, String>,
    staying: &BTreeMap<String, String>,
) -> BTreeMap<u32, String> {
    let mut held: BTreeMap<&str, usize> = staying.keys().map(|m| (m.as_str(), 0)).collect();
    let mut orphans = Vec::new();
    for (p, owner) in by_partition {
        match held.get_mut(owner.as_str()) {
            Some(n) => *n += 1,
            None => orphans.push(*p),
        }
    }
    let mut out = BTreeMap::new();
    for p in orphans.into_iter().rev() {
        let heir = held.iter_mut().min_by_key(|(instance, n)| (**n, staying.get(**instance)));
        let Some((instance, n)) = heir else { break };
        *n += 1;
        out.insert(p, instance.to_string());
    }
    out
}

/// What the standby thread shares with the engine.
pub struct Standby {
    pub config: Arc<EngineConfig>,
    pub store: Arc<Store>,
    pub assignment: Arc<Mutex<Assignment>>,
    pub owners: Arc<RwLock<Owners>>,
}

/// The standby thread, stopped and joined when dropped: before the
/// engine's consumer closes, since the partitions it gives up then are not
/// copies to drop.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Standby {
    /// Runs on a thread of its own until the returned handle is dropped
    /// (none if the changelog cannot be read).
    pub fn start(self) -> std::io::Result<Option<Running>> {
        let consumer = match crate::clients::changelog_reader(&self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "standby replicas cannot read the changelog; none are kept");
                return Ok(None);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || self.run(&consumer, &stopped))?;
        Ok(Some(Running { stop, thread: Some(thread) }))
    }

    fn run(self, consumer: &crate::clients::ChangelogReader, stop: &AtomicBool) {
        let Some(topic) = self.config.kafka.topics.changelog.clone() else { return };
        let mut tailing: BTreeMap<u32, TailBatch> = BTreeMap::new();
        let mut leftovers = Leftovers::new(Duration::from_millis(self.config.engine.state_cleanup_delay_ms));
        let mut planned = Instant::now() - PLAN_EVERY;
        let mut confirmed = Instant::now();
        // Made when first needed (a copy holds a batch, or state left
        // behind is due to be dropped): none on an instance with neither.
        let mut group: Option<BaseConsumer> = None;
        while !stop.load(Ordering::Relaxed) {
            if confirmed.elapsed() >= CONFIRM_EVERY {
                confirmed = Instant::now();
                if let Err(e) = self.confirm(&mut group, &mut tailing) {
                    tracing::debug!(error = %e, "standby replicas: could not read the group's offsets");
                }
            }
            if planned.elapsed() >= PLAN_EVERY {
                planned = Instant::now();
                if let Err(e) = self.plan(consumer, &topic, &mut tailing) {
                    tracing::warn!(error = %e, "standby replicas: could not follow the changelog");
                }
                if let Err(e) = self.clean_up(&topic, &mut group, &tailing, &mut leftovers) {
                    tracing::warn!(error = %e, "could not drop the state of partitions owned elsewhere");
                }
                let lag = tailing.keys().map(|&p| lag(consumer, &topic, p)).sum();
                crate::metrics::standby(tailing.len(), lag);
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => self.take(&mut tailing, &m),
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => tracing::debug!(error = %e, "standby replicas: reading the changelog"),
            }
        }
    }

    /// Works out the copies to keep; starts and stops tailing to match.
    fn plan(
        &self,
        consumer: &crate::clients::ChangelogReader,
        topic: &str,
        tailing: &mut BTreeMap<u32, TailBatch>,
    ) -> Result<(), String> {
        let me = &self.config.engine.instance_id;
        let replicas = self.config.engine.standby_replicas;
        let mut wanted = {
            let owners = self.owners.read().unwrap_or_else(|p| p.into_inner());
            let mut wanted = placement(&owners, me, replicas);
            if replicas > 0 {
                wanted.extend(owners.by_partition.iter().filter(|(_, o)| *o == me).map(|(p, _)| *p));
            }
            wanted
        };
        {
            let a = EngineContext::lock(&self.assignment);
            wanted.retain(|p| !assigned_here(&a, *p));
        }
        if wanted.iter().eq(tailing.keys()) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        let mut next = BTreeMap::new();
        for &p in &wanted {
            let position = self.position(consumer, topic, p)?;
            tpl.add_partition_offset(topic, p as i32, position).map_err(|e| e.to_string())?;
            // Read again from the copy's position: a batch half read is dropped.
            tailing.remove(&p);
            next.insert(p, TailBatch::default());
        }
        for (&p, _) in tailing.iter() {
            self.drop_copy(p)?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        tracing::info!(partitions = ?wanted, "standby replicas: keeping warm copies");
        *tailing = next;
        Ok(())
    }

    /// Where tailing `p` goes on: its copy's position (or where this
    /// instance's own state of it, as it last committed it, ends), or from
    /// the start (the copy dropped) if it has none or the log no longer
    /// reaches it.
    fn position(
        &self,
        consumer: &crate::clients::ChangelogReader,
        topic: &str,
        p: u32,
    ) -> Result<Offset, String> {
        let timeout = Duration::from_millis(self.config.engine.kafka_timeout_ms);
        let (low, _) = consumer.fetch_watermarks(topic, p as i32, timeout).map_err(|e| e.to_string())?;
        let kept = match crate::restore::continuation(&self.store, p).map_err(|e| e.to_string())? {
            Continuation::Copy(position) | Continuation::Own(position) => Some(position),
            Continuation::StaleCopy | Continuation::None => None,
        };
        match kept.filter(|&position| position >= low) {
            Some(position) => Ok(Offset::Offset(position)),
            None => {
                self.drop_copy(p)?;
                Ok(Offset::Beginning)
            }
        }
    }

    /// Drops the local state of `p`, unless the partition is assigned here
    /// (then false).
    fn drop_copy(&self, p: u32) -> Result<bool, String> {
        let a = EngineContext::lock(&self.assignment);
        if assigned_here(&a, p) {
            return Ok(false);
        }
        self.store.drop_partition(p).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Drops the state of partitions neither assigned nor copied here for
    /// the cleanup delay, if the changelog vouches for them (`leftovers`).
    fn clean_up(
        &self,
        topic: &str,
        group: &mut Option<BaseConsumer>,
        tailing: &BTreeMap<u32, TailBatch>,
        leftovers: &mut Leftovers,
    ) -> Result<(), String> {
        let local = self.store.partitions().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let due = {
            let a = EngineContext::lock(&self.assignment);
            leftovers.due(&local, |p| assigned_here(&a, p) || tailing.contains_key(&p), now)
        };
        crate::metrics::idle_state_partitions(leftovers.idle());
        if due.is_empty() {
            return Ok(());
        }
        let vouched = self.vouched(topic, group, &due).map_err(|e| e.to_string())?;
        for p in due {
            if !vouched.contains(&p) {
                tracing::info!(
                    partition = p,
                    "kept the local state of a partition owned elsewhere: the changelog's tail shows no progress record of it at the group's offset (yet), so this may be its only copy"
                );
                leftovers.postpone(p, now);
                continue;
            }
            if !self.drop_copy(p)? {
                continue; // assigned here meanwhile
            }
            leftovers.dropped(p);
            self.store.reclaim_partition(p);
            crate::metrics::state_dropped();
            tracing::info!(
                partition = p,
                cleanup_delay_ms = self.config.engine.state_cleanup_delay_ms,
                "dropped the local state of a partition neither owned nor copied here: the changelog holds it"
            );
        }
        crate::metrics::idle_state_partitions(leftovers.idle());
        Ok(())
    }

    /// The partitions of `due` whose state the changelog holds as the group
    /// committed it: its tail's last progress record since a reset is at
    /// the group's offset or past it. One at an older offset (it was off
    /// for a while) does not hold the changes since, which this instance's
    /// state may be the only copy of. The offsets are read first: the
    /// tail read after them is as new at least.
    fn vouched(&self, topic: &str, group: &mut Option<BaseConsumer>, due: &[u32]) -> KafkaResult<Vec<u32>> {
        let committed = self.committed_offsets(group, due)?;
        let reader = crate::clients::changelog_reader(&self.config)?;
        let timeout = Duration::from_millis(self.config.engine.kafka_timeout_ms);
        let stamps = crate::owners::tail_progress(&reader, topic, due, timeout)?;
        Ok(stamps
            .into_iter()
            .filter(|(p, stamped)| committed.get(p).is_none_or(|&at| stamped.progress.next_offset >= at))
            .map(|(p, _)| p)
            .collect())
    }

    /// The group's committed input offsets of `partitions` (those it has
    /// committed), read through the client made on first use.
    fn committed_offsets(
        &self,
        group: &mut Option<BaseConsumer>,
        partitions: &[u32],
    ) -> KafkaResult<BTreeMap<u32, u64>> {
        let group = match group {
            Some(group) => group,
            None => group.insert(crate::clients::group_offsets_reader(&self.config)?),
        };
        crate::changelog_check::group_offsets(&self.config, group, partitions)
    }

    /// Writes the batches held back that the group's committed offsets
    /// show committed.
    fn confirm(
        &self,
        group: &mut Option<BaseConsumer>,
        tailing: &mut BTreeMap<u32, TailBatch>,
    ) -> Result<(), KafkaError> {
        let held: Vec<u32> =
            tailing.iter().filter(|(_, tail)| tail.held_end().is_some()).map(|(&p, _)| p).collect();
        if held.is_empty() {
            return Ok(());
        }
        let committed = self.committed_offsets(group, &held)?;
        let mut failed = Vec::new();
        {
            let a = EngineContext::lock(&self.assignment);
            for (&p, tail) in tailing.iter_mut() {
                let Some(&offset) = committed.get(&p) else { continue };
                if assigned_here(&a, p) {
                    continue;
                }
                if let Err(e) = tail.confirm(&self.store, offset) {
                    failed.push((p, e));
                }
            }
        }
        for (p, e) in failed {
            self.abandon(tailing, p, &e);
        }
        Ok(())
    }

    /// Drops a copy that cannot follow (a change it could not stage, or a
    /// write that failed and took a batch with it); the next plan starts
    /// it again from the changelog's beginning.
    fn abandon(&self, tailing: &mut BTreeMap<u32, TailBatch>, p: u32, error: &dyn std::fmt::Display) {
        tracing::warn!(partition = p, error = %error, "standby replicas: dropping the copy");
        tailing.remove(&p);
        if let Err(e) = self.drop_copy(p) {
            tracing::warn!(partition = p, error = %e, "standby replicas: could not drop the copy");
        }
    }

    /// Keeps a changelog record; a progress record ends its batch, and the
    /// batch before it is written then if it committed.
    fn take(&self, tailing: &mut BTreeMap<u32, TailBatch>, m: &BorrowedMessage<'_>) {
        let p = m.partition() as u32;
        let Some(tail) = tailing.get_mut(&p) else { return };
        let change = m.key().and_then(|key| changelog::from_message(key, m.payload()));
        // A change of another partition would write (or, a reset, drop)
        // that partition's state, which may be owned here.
        let Some(change) = change.filter(|c| c.partition() == Some(p)) else {
            tracing::warn!(
                partition = p,
                offset = m.offset(),
                "standby replicas: not a change of this engine's to this partition (is the topic co-partitioned?)"
            );
            return;
        };
        if let Err(e) = self.follow(p, tail, &change, m) {
            self.abandon(tailing, p, &e);
        }
    }

    /// Stages a change in the copy of `p`, and writes what is due: a
    /// snapshot's part, or the batch a progress record shows committed.
    fn follow(
        &self,
        p: u32,
        tail: &mut TailBatch,
        change: &changelog::Change<'_>,
        m: &BorrowedMessage<'_>,
    ) -> Result<(), accrual_store::StoreError> {
        tail.add(&self.store, change)?;
        let progress = change.value.filter(|_| changelog::is_progress(change));
        if progress.is_none() && !tail.part_due() {
            return Ok(());
        }
        // Written under the lock, so that no restore of the partition here
        // starts meanwhile.
        let a = EngineContext::lock(&self.assignment);
        if assigned_here(&a, p) {
            tail.clear();
            return Ok(());
        }
        let Some(progress) = progress else { return tail.write_part(&self.store) };
        let at =
            changelog::CopyPosition { position: m.offset() + 1, written_at_ms: m.timestamp().to_millis() };
        if tail.end(&self.store, p, progress, at)? {
            tracing::info!(
                partition = p,
                offset = m.offset(),
                "standby replicas: left out a changelog batch that never committed (its inputs were processed again)"
            );
        }
        Ok(())
    }
}

/// Whether `p`'s local state is the engine's, not a copy's: assigned here
/// (owned, restoring, being taken up, refused), or a restore of it
/// cancelled by a revocation is still stopping.
fn assigned_here(a: &Assignment, p: u32) -> bool {
    a.owned.contains_key(&p)
        || a.restoring.contains_key(&p)
        || a.taking_up.contains(&p)
        || a.refused.contains_key(&p)
        || a.cancelled.iter().any(|(q, _)| *q == p)
}

/// Changelog records of `p` past the consumer's position (unknown: 0).
fn lag(consumer: &crate::clients::ChangelogReader, topic: &str, p: u32) -> i64 {
    let Ok((_, high)) = consumer.fetch_watermarks(topic, p as i32, Duration::from_secs(1)) else { return 0 };
    let position = consumer.position().ok().and_then(|tpl| {
        tpl.find_partition(topic, p as i32).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
    });
    position.map_or(0, |o| (high - o).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members named by instance id, with member ids as brokers make them.
    fn owners(members: &[&str], by_partition: &[(u32, &str)]) -> Owners {
        Owners {
            by_partition: by_partition.iter().map(|(p, o)| (*p, o.to_string())).collect(),
            members: members.iter().map(|m| (m.to_string(), format!("accrual-{m}-0000"))).collect(),
            read_at: None,
        }
    }

    fn map(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
        pairs.iter().map(|(p, o)| (*p, o.to_string())).collect()
    }

    const SIX: [(u32, &str); 6] = [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")];

    #[test]
    fn a_lost_members_partitions_go_highest_first_to_the_least_loaded_lowest_member_id() {
        let o = owners(&["a", "b", "c"], &SIX);
        let staying = |lost: &str| {
            o.members.iter().filter(|(m, _)| *m != lost).map(|(m, id)| (m.clone(), id.clone())).collect()
        };
        assert_eq!(heirs(&o.by_partition, &staying("c")), map(&[(5, "a"), (4, "b")]));
        assert_eq!(heirs(&o.by_partition, &staying("a")), map(&[(1, "b"), (0, "c")]));
        // Unequal loads: the lighter member is served first.
        let uneven = map(&[(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "c"), (5, "c"), (6, "c")]);
        assert_eq!(heirs(&uneven, &staying("c")), map(&[(6, "b"), (5, "b"), (4, "a")]));
        // Member ids, not instance ids, break ties (static members' ids
        // start with their group.instance.id).
        let by_id =
            BTreeMap::from([("a".to_string(), "z-1".to_string()), ("b".to_string(), "y-1".to_string())]);
        assert_eq!(heirs(&o.by_partition, &by_id), map(&[(5, "b"), (4, "a")]));
    }

    #[test]
    fn one_copy_of_each_partition_goes_to_its_heir() {
        let o = owners(&["a", "b", "c"], &SIX);
        assert_eq!(placement(&o, "a", 1), BTreeSet::from([3, 5]));
        assert_eq!(placement(&o, "b", 1), BTreeSet::from([1, 4]));
        assert_eq!(placement(&o, "c", 1), BTreeSet::from([0, 2]));
        assert_eq!(placement(&o, "c", 2), BTreeSet::from([0, 1, 2, 3]), "two copies: both others");
        assert_eq!(
            placement(&o, "a", 5),
            BTreeSet::from([2, 3, 4, 5]),
            "never more copies than other instances"
        );
        assert_eq!(placement(&o, "a", 0), BTreeSet::new());
    }

    #[test]
    fn more_copies_go_to_the_instances_after_the_owner_in_the_ring() {
        let four = [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c"), (6, "d"), (7, "d")];
        let o = owners(&["a", "b", "c", "d"], &four);
        // If d is lost, 7 goes to a and 6 to b; the second copies follow d
        // in the ring: 7's on b (a holds the first), 6's on a.
        let holders = |p: u32| -> Vec<&str> {
            ["a", "b", "c", "d"].into_iter().filter(|m| placement(&o, m, 2).contains(&p)).collect()
        };
        assert_eq!(holders(7), ["a", "b"]);
        assert_eq!(holders(6), ["a", "b"]);
        assert_eq!(holders(0), ["b", "c"], "a lost: 1 to b, 0 to c; then b after a");
    }

    #[test]
    fn a_partition_being_taken_up_is_not_a_copy() {
        // Between its restore and its ownership the partition is neither
        // restoring nor owned; a copy's plan must not drop its state then.
        let mut a = Assignment::default();
        assert!(!assigned_here(&a, 3));
        a.taking_up.insert(3);
        assert!(assigned_here(&a, 3));
        a.taking_up.clear();
        a.refused.insert(3, "behind the group".into());
        assert!(assigned_here(&a, 3));
    }

    #[test]
    fn an_owner_the_group_no_longer_lists_is_already_lost() {
        // c died: its partitions' last writer is still c; they go where the
        // assignor will put them among a and b.
        let o = owners(&["a", "b"], &[(0, "a"), (1, "b"), (2, "c"), (3, "c")]);
        assert_eq!(placement(&o, "a", 1), BTreeSet::from([1, 3]));
        assert_eq!(placement(&o, "b", 1), BTreeSet::from([0, 2]));
    }
}
