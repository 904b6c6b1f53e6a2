//! Decoded account states kept between batches, so an account active in
//! consecutive cycles is neither read from RocksDB nor decoded again.
//!
//! It only ever holds states as committed: the processor takes a state out
//! while a batch works on it and gives it back only once that batch is
//! committed (see [`super::Processor::committed`]). The processor is the
//! only writer of the accounts it owns, so a cached state is never stale.
//!
//! Bounded in memory: two generations, each up to half the budget. New
//! and reused states go into the current one; when it is full, the
//! previous generation is dropped and the current one becomes the
//! previous. An account used in either generation survives, so this is an
//! LRU approximation with O(1) work per account.

use crate::state::AccountState;
use foldhash::HashMap;

/// Memory a decoded state takes per byte of its encoded form, plus a fixed
/// part per account, allocator overhead included: measured as the growth of
/// peak RSS with the cache on the benchmark's portfolio (decimals, vectors
/// and shared names decode to several times their encoded size).
const DECODED_PER_ENCODED_BYTE: usize = 6;
const PER_ACCOUNT: usize = 800;

type Generation = HashMap<u32, HashMap<String, (Box<AccountState>, usize)>>;

#[derive(Default)]
pub struct AccountCache {
    /// Bytes of memory (estimated) the cache may hold.
    capacity: usize,
    current: Generation,
    /// Estimated bytes in `current`.
    current_bytes: usize,
    previous: Generation,
}

impl AccountCache {
    /// A cache of about `capacity` bytes (0: no caching).
    pub fn new(capacity: usize) -> AccountCache {
        AccountCache { capacity, ..AccountCache::default() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes and returns the committed state of an account, if cached.
    pub fn take(&mut self, partition: u32, account: &str) -> Option<Box<AccountState>> {
        if let Some((state, cost)) = self.current.get_mut(&partition).and_then(|m| m.remove(account)) {
            self.current_bytes -= cost;
            return Some(state);
        }
        self.previous.get_mut(&partition).and_then(|m| m.remove(account)).map(|(state, _)| state)
    }

    /// Keeps a committed state whose encoded form is `encoded` bytes long.
    pub fn put(&mut self, partition: u32, account: String, state: Box<AccountState>, encoded: usize) {
        let cost = PER_ACCOUNT + account.len() + encoded * DECODED_PER_ENCODED_BYTE;
        let half = self.capacity / 2;
        if cost > half {
            return;
        }
        if self.current_bytes + cost > half {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        if let Some((_, replaced)) = self.current.entry(partition).or_default().insert(account, (state, cost))
        {
            self.current_bytes -= replaced;
        }
        self.current_bytes += cost;
    }

    /// Drops every state of `partition` (its batches go elsewhere now).
    pub fn forget(&mut self, partition: u32) {
        if let Some(states) = self.current.remove(&partition) {
            self.current_bytes -= states.values().map(|(_, cost)| cost).sum::<usize>();
        }
        self.previous.remove(&partition);
    }

    /// Accounts cached.
    pub fn len(&self) -> usize {
        [&self.current, &self.previous].iter().flat_map(|g| g.values()).map(HashMap::len).sum()
    }

    /// Estimated bytes held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.current_bytes
            + self.previous.values().flat_map(|m| m.values()).map(|(_, cost)| cost).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn state(n: i64) -> Box<AccountState> {
        Box::new(AccountState { watermark: Timestamp(n), ..AccountState::default() })
    }

    /// The budget of `accounts` accounts of 100 encoded bytes and 2-byte ids.
    fn room_for(accounts: usize) -> usize {
        accounts * (PER_ACCOUNT + 2 + 100 * DECODED_PER_ENCODED_BYTE)
    }

    #[test]
    fn keeps_within_budget_and_recently_used_accounts() {
        let mut cache = AccountCache::new(room_for(4));
        cache.put(1, "a0".into(), state(0), 100);
        cache.put(1, "a1".into(), state(1), 100);
        // The current generation is full: a2 moves a0 and a1 to the previous one.
        cache.put(1, "a2".into(), state(2), 100);
        let a0 = cache.take(1, "a0").expect("a0 cached");
        assert_eq!(a0.watermark, Timestamp(0));
        cache.put(1, "a0".into(), a0, 100);
        cache.put(1, "a3".into(), state(3), 100);
        assert!(cache.take(1, "a1").is_none(), "a1 was not used since: evicted");
        assert!(cache.take(2, "a0").is_none(), "partitions are apart");
        assert_eq!(cache.take(1, "a0").map(|s| s.watermark), Some(Timestamp(0)), "a0 was used: kept");
        for n in 0..100 {
            cache.put(1, format!("b{n}"), state(n), 100);
            assert!(cache.bytes() <= room_for(4), "{}", cache.bytes());
        }
        assert!((2..=4).contains(&cache.len()), "{}", cache.len());
        assert_eq!(cache.take(1, "b99").map(|s| s.watermark), Some(Timestamp(99)));
        cache.put(2, "c".into(), state(5), 100);
        cache.forget(1);
        assert!(cache.take(1, "b99").is_none(), "the partition is forgotten");
        assert_eq!(
            cache.bytes(),
            PER_ACCOUNT + 1 + 100 * DECODED_PER_ENCODED_BYTE,
            "only partition 2's is left"
        );
        assert_eq!(cache.take(2, "c").map(|s| s.watermark), Some(Timestamp(5)));
        cache.put(1, "huge".into(), state(0), room_for(4));
        assert!(cache.take(1, "huge").is_none(), "a state bigger than half the budget is not kept");
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut cache = AccountCache::new(0);
        cache.put(0, "a".into(), state(1), 10);
        assert_eq!(cache.len(), 0);
        assert!(cache.take(0, "a").is_none());
    }
}
