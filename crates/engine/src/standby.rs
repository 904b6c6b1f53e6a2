//! Standby replicas: warm copies of partitions this instance does not own,
//! kept by tailing their changelog, so that taking one over (see
//! `restore`) only reads the changelog's tail.
//!
//! Placement: each partition's copies go to the `engine.standby_replicas`
//! instances that follow its owner in the ring of instance ids (sorted).
//! The owners and members come from the group (see `owners`); librdkafka
//! has no pluggable assignor, so the group's assignor does not know where
//! the copies are, and a partition that moves lands on one only when
//! every other instance holds one (`standby_replicas` at least the
//! instances less one) or by chance (docs/scaling.md).
//!
//! A copy is written a whole batch at a time (its changes with its
//! progress record and the changelog offset to go on from), and only
//! while the partition is not assigned here: the check and the write are
//! made under the assignment's lock, which the rebalance callback takes to
//! assign a partition.

use crate::config::EngineConfig;
use crate::owners::Owners;
use crate::rebalance::{Assignment, EngineContext};
use accrual_store::Store;
use accrual_store::changelog::{self, TailBatch};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the copies to keep are worked out again.
const PLAN_EVERY: Duration = Duration::from_secs(2);

/// The partitions `me` keeps copies of: of every partition whose owner is
/// known, the `replicas` instances after the owner in the ring.
pub fn placement(owners: &Owners, me: &str, replicas: usize) -> BTreeSet<u32> {
    let mut ring: BTreeSet<&str> = owners.members.iter().map(String::as_str).collect();
    ring.extend(owners.by_partition.values().map(String::as_str));
    ring.insert(me);
    let ring: Vec<&str> = ring.into_iter().collect();
    let n = ring.len();
    let mut out = BTreeSet::new();
    for (p, owner) in &owners.by_partition {
        let Some(i) = ring.iter().position(|r| r == owner) else { continue };
        if owner != me && (1..=replicas.min(n - 1)).any(|k| ring[(i + k) % n] == me) {
            out.insert(*p);
        }
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

impl Standby {
    /// Runs on a thread of its own for the life of the process.
    pub fn start(self) -> std::io::Result<()> {
        let consumer = match crate::clients::restore_consumer(&self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "standby replicas cannot read the changelog; none are kept");
                return Ok(());
            }
        };
        std::thread::Builder::new().name("standby".into()).spawn(move || self.run(&consumer))?;
        Ok(())
    }

    fn run(self, consumer: &crate::clients::ChangelogReader) {
        let Some(topic) = self.config.kafka.topics.changelog.clone() else { return };
        let mut tailing: BTreeMap<u32, TailBatch> = BTreeMap::new();
        let mut planned = Instant::now() - PLAN_EVERY;
        loop {
            if planned.elapsed() >= PLAN_EVERY {
                planned = Instant::now();
                if let Err(e) = self.plan(consumer, &topic, &mut tailing) {
                    tracing::warn!(error = %e, "standby replicas: could not follow the changelog");
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
            wanted.extend(owners.by_partition.iter().filter(|(_, o)| *o == me).map(|(p, _)| *p));
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

    /// Where tailing `p` goes on: its copy's position, or from the start
    /// (the copy dropped) if it has none or the log no longer reaches it.
    fn position(
        &self,
        consumer: &crate::clients::ChangelogReader,
        topic: &str,
        p: u32,
    ) -> Result<Offset, String> {
        let timeout = Duration::from_millis(self.config.engine.kafka_timeout_ms);
        let (low, _) = consumer.fetch_watermarks(topic, p as i32, timeout).map_err(|e| e.to_string())?;
        let kept = changelog::standby_position(&self.store, p).map_err(|e| e.to_string())?;
        match kept.filter(|&position| position >= low) {
            Some(position) => Ok(Offset::Offset(position)),
            None => {
                self.drop_copy(p)?;
                Ok(Offset::Beginning)
            }
        }
    }

    /// Drops the local state of `p`, unless the partition is assigned here.
    fn drop_copy(&self, p: u32) -> Result<(), String> {
        let a = EngineContext::lock(&self.assignment);
        if assigned_here(&a, p) {
            return Ok(());
        }
        self.store.drop_partition(p).map_err(|e| e.to_string())
    }

    /// Keeps a changelog record; a progress record ends its batch, which
    /// is written then.
    fn take(&self, tailing: &mut BTreeMap<u32, TailBatch>, m: &BorrowedMessage<'_>) {
        let p = m.partition() as u32;
        let Some(tail) = tailing.get_mut(&p) else { return };
        let Some(change) = m.key().and_then(|key| changelog::from_message(key, m.payload())) else {
            tracing::warn!(
                partition = p,
                offset = m.offset(),
                "standby replicas: not a change of this engine's"
            );
            return;
        };
        if let Err(e) = tail.add(&self.store, &change) {
            // The copy cannot follow: it is dropped, and the next plan
            // starts it again from the changelog's beginning.
            tracing::warn!(partition = p, offset = m.offset(), error = %e, "standby replicas: dropping the copy");
            tailing.remove(&p);
            if let Err(e) = self.drop_copy(p) {
                tracing::warn!(partition = p, error = %e, "standby replicas: could not drop the copy");
            }
            return;
        }
        if !changelog::is_progress(&change) {
            return;
        }
        let a = EngineContext::lock(&self.assignment);
        if assigned_here(&a, p) {
            tail.clear();
            return;
        }
        if let Err(e) = tail.write(&self.store, p, m.offset() + 1) {
            tracing::warn!(partition = p, error = %e, "standby replicas: could not write the copy");
        }
    }
}

fn assigned_here(a: &Assignment, p: u32) -> bool {
    a.owned.contains_key(&p) || a.restoring.contains_key(&p) || a.refused.contains_key(&p)
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

    fn owners(members: &[&str], by_partition: &[(u32, &str)]) -> Owners {
        Owners {
            by_partition: by_partition.iter().map(|(p, o)| (*p, o.to_string())).collect(),
            members: members.iter().map(|m| m.to_string()).collect(),
            read_at: None,
        }
    }

    #[test]
    fn copies_go_to_the_instances_after_the_owner_in_the_ring() {
        let o = owners(&["a", "b", "c"], &[(0, "a"), (1, "b"), (2, "c"), (3, "a")]);
        assert_eq!(placement(&o, "b", 1), BTreeSet::from([0, 3]), "b follows a");
        assert_eq!(placement(&o, "a", 1), BTreeSet::from([2]), "the ring wraps: a follows c");
        assert_eq!(placement(&o, "c", 2), BTreeSet::from([0, 1, 3]), "two copies: both others");
        assert_eq!(placement(&o, "a", 5), BTreeSet::from([1, 2]), "never more copies than other instances");
        assert_eq!(placement(&o, "a", 0), BTreeSet::new());
    }

    #[test]
    fn an_owner_the_group_no_longer_lists_keeps_its_place_in_the_ring() {
        // c died: its partition's last writer is still c, and b follows it.
        let o = owners(&["a", "b"], &[(0, "a"), (2, "c")]);
        assert_eq!(placement(&o, "a", 1), BTreeSet::from([2]), "a follows c");
        assert_eq!(placement(&o, "b", 1), BTreeSet::from([0]));
    }
}
