//! State a partition leaves behind: the local state of a partition this
//! instance neither owns nor keeps a standby copy of (it moved to another
//! instance, one was added, or this one started without it). With a
//! changelog such state is never used again as it is: a later owner keeps
//! local state only if it provably continues the group's, and restores
//! otherwise. So it is dropped once it has been idle for
//! `engine.state_cleanup_delay_ms`, and a disk holds its instance's share
//! of the state rather than every partition it ever owned (Kafka Streams'
//! `state.cleanup.delay.ms` does the same). The delay spares a partition
//! that comes straight back, its state still the group's.
//!
//! A partition's state is dropped only when the changelog's tail shows a
//! progress record of it at the group's offset: until then (the changelog
//! was just turned on, or on again after it was off, and the partition's
//! state is not yet published) the local state may be its only copy.
//! The standby thread runs the cleanup (see `standby`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Since when each partition's local state has been idle here.
#[derive(Debug)]
pub struct Leftovers {
    delay: Duration,
    idle_since: BTreeMap<u32, Instant>,
}

impl Leftovers {
    pub fn new(delay: Duration) -> Leftovers {
        Leftovers { delay, idle_since: BTreeMap::new() }
    }

    /// Notes which of the partitions held locally (`local`) are idle (not
    /// `in_use`) at `now`, and returns those idle for the whole delay.
    pub fn due(&mut self, local: &[u32], in_use: impl Fn(u32) -> bool, now: Instant) -> Vec<u32> {
        let idle: Vec<u32> = local.iter().copied().filter(|&p| !in_use(p)).collect();
        self.idle_since.retain(|p, _| idle.contains(p));
        for &p in &idle {
            self.idle_since.entry(p).or_insert(now);
        }
        let delay = self.delay;
        self.idle_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= delay)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Partitions held locally and idle, as last noted.
    pub fn idle(&self) -> usize {
        self.idle_since.len()
    }

    /// Keeps `p` for another delay (its state could not be dropped yet).
    pub fn postpone(&mut self, p: u32, now: Instant) {
        self.idle_since.insert(p, now);
    }

    /// Forgets `p` (its state was dropped).
    pub fn dropped(&mut self, p: u32) {
        self.idle_since.remove(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(60);

    #[test]
    fn a_partition_is_due_once_idle_for_the_whole_delay() {
        let mut l = Leftovers::new(DELAY);
        let t0 = Instant::now();
        let owned = |p: u32| p == 0;
        assert_eq!(l.due(&[0, 1, 2], owned, t0), Vec::<u32>::new());
        assert_eq!(l.idle(), 2);
        assert_eq!(l.due(&[0, 1, 2], owned, t0 + DELAY - Duration::from_millis(1)), Vec::<u32>::new());
        assert_eq!(l.due(&[0, 1, 2], owned, t0 + DELAY), vec![1, 2]);
    }

    #[test]
    fn use_in_between_starts_the_delay_again() {
        let mut l = Leftovers::new(DELAY);
        let t0 = Instant::now();
        l.due(&[1], |_| false, t0);
        // Assigned back for a while, then idle again.
        assert!(l.due(&[1], |_| true, t0 + DELAY / 2).is_empty());
        assert_eq!(l.idle(), 0);
        assert!(l.due(&[1], |_| false, t0 + DELAY).is_empty());
        assert_eq!(l.due(&[1], |_| false, t0 + DELAY * 2), vec![1]);
    }

    #[test]
    fn postponed_and_dropped_partitions() {
        let mut l = Leftovers::new(DELAY);
        let t0 = Instant::now();
        l.due(&[1, 2], |_| false, t0);
        assert_eq!(l.due(&[1, 2], |_| false, t0 + DELAY), vec![1, 2]);
        l.postpone(1, t0 + DELAY);
        l.dropped(2);
        assert!(l.due(&[1], |_| false, t0 + DELAY).is_empty());
        assert_eq!(l.due(&[1], |_| false, t0 + DELAY * 2), vec![1]);
        // State gone from the store is forgotten.
        assert!(l.due(&[], |_| false, t0 + DELAY * 3).is_empty());
        assert_eq!(l.idle(), 0);
    }
}
