//! Decoded account states kept between batches, so an account active in
//! consecutive cycles is neither read from RocksDB nor decoded again.
//!
//! It only ever holds states as committed: the processor takes a state out
//! while a batch works on it and gives it back only once that batch is
//! committed (see [`super::Processor::committed`]). The processor is the
//! only writer of the accounts it owns, so a cached state is never stale.
//!
//! Bounded by a number of accounts: two generations, each at most half the
//! capacity. New and reused states go into the current one; when it is
//! full, the previous generation is dropped and the current one becomes the
//! previous. An account used in either generation survives, so this is an
//! LRU approximation with O(1) work per account.

use crate::state::AccountState;
use std::collections::HashMap;

type Generation = HashMap<u32, HashMap<String, AccountState>>;

#[derive(Default)]
pub struct AccountCache {
    capacity: usize,
    current: Generation,
    /// Accounts in `current`.
    current_len: usize,
    previous: Generation,
}

impl AccountCache {
    /// A cache of at most `capacity` accounts (0: no caching).
    pub fn new(capacity: usize) -> AccountCache {
        AccountCache { capacity, ..AccountCache::default() }
    }

    /// Removes and returns the committed state of an account, if cached.
    pub fn take(&mut self, partition: u32, account: &str) -> Option<AccountState> {
        if let Some(state) = self.current.get_mut(&partition).and_then(|m| m.remove(account)) {
            self.current_len -= 1;
            return Some(state);
        }
        self.previous.get_mut(&partition).and_then(|m| m.remove(account))
    }

    /// Keeps a committed state.
    pub fn put(&mut self, partition: u32, account: String, state: AccountState) {
        if self.capacity == 0 {
            return;
        }
        if self.current.entry(partition).or_default().insert(account, state).is_none() {
            self.current_len += 1;
        }
        if self.current_len >= self.capacity.div_ceil(2) {
            self.previous = std::mem::take(&mut self.current);
            self.current_len = 0;
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Accounts cached (for tests and metrics).
    pub fn len(&self) -> usize {
        self.current_len + self.previous.values().map(HashMap::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn state(n: i64) -> AccountState {
        AccountState { watermark: Timestamp(n), ..AccountState::default() }
    }

    #[test]
    fn keeps_at_most_capacity_and_recently_used_accounts() {
        let mut cache = AccountCache::new(4);
        cache.put(1, "a0".into(), state(0));
        cache.put(1, "a1".into(), state(1));
        // The current generation was full: a0 and a1 are now the previous one.
        let a0 = cache.take(1, "a0").expect("a0 cached");
        assert_eq!(a0.watermark, Timestamp(0));
        cache.put(1, "a0".into(), a0);
        cache.put(1, "a2".into(), state(2));
        assert!(cache.take(1, "a1").is_none(), "a1 was not used since: evicted");
        assert!(cache.take(2, "a0").is_none(), "partitions are apart");
        assert_eq!(cache.take(1, "a0").map(|s| s.watermark), Some(Timestamp(0)), "a0 was used: kept");
        for n in 0..100 {
            cache.put(1, format!("b{n}"), state(n));
            assert!(cache.len() <= 4, "{}", cache.len());
        }
        assert_eq!(cache.take(1, "b99").map(|s| s.watermark), Some(Timestamp(99)));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut cache = AccountCache::new(0);
        cache.put(0, "a".into(), state(1));
        assert_eq!(cache.len(), 0);
        assert!(cache.take(0, "a").is_none());
    }
}
