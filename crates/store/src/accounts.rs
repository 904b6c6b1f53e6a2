//! Account states in the ledger: the account's value in `accounts`, and
//! each retained purchase under its own key in `purchases`, so a write
//! sends only the purchases that changed (see [`accrual_core::state::Purchases`]).
//!
//! Purchase keys: partition (4 bytes BE) ++ account id length (4 bytes BE)
//! ++ account id ++ sequence number (8 bytes BE). The length keeps one
//! account's range apart from every other's, whatever bytes ids hold.

use super::{CF_ACCOUNTS, CF_PURCHASES, LedgerBatch, Store, StoreError, partition_key};
use crate::changelog::{Family, capture};
use accrual_core::state::{AccountState, RetainedPurchase, Search};
use rocksdb::{Direction, IteratorMode, ReadOptions};
use std::ops::Range;

fn purchase_key(partition: u32, account: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + account.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&(account.len() as u32).to_be_bytes());
    key.extend_from_slice(account.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Store {
    /// The stored state of an account, if it has any, with all its
    /// retained purchases.
    pub fn account(&self, partition: u32, account_id: &str) -> Result<Option<AccountState>, StoreError> {
        let Some(mut state) = self.account_lazy(partition, account_id)? else { return Ok(None) };
        self.load_purchases(partition, account_id, &mut state)?;
        Ok(Some(state))
    }

    /// The stored state of an account without its older purchases (see
    /// [`accrual_core::state::Purchases`]); [`Store::load_purchases`] reads them when needed.
    pub fn account_lazy(&self, partition: u32, account_id: &str) -> Result<Option<AccountState>, StoreError> {
        let key = partition_key(partition, account_id.as_bytes());
        match self.lookup(CF_ACCOUNTS, &key)? {
            None => Ok(None),
            Some(bytes) => AccountState::decode(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt("account state", partition, e)),
        }
    }

    /// Reads the purchases of `state` not loaded yet.
    pub fn load_purchases(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
    ) -> Result<(), StoreError> {
        if !state.purchases.is_complete() {
            let older = self.purchases(partition, account_id, state.purchases.unloaded_seqs())?;
            state.purchases.load(older);
        }
        Ok(())
    }

    /// Reads the purchases of `state` not loaded yet, newest first, until
    /// one `search` accepts is loaded or all are: a refund names a recent
    /// purchase far more often than an old one, so the first few reads
    /// mostly find it. Chunks grow fourfold (8, 32, 128, ...): an old one
    /// costs a few seeks more than reading the whole history at once.
    pub fn load_purchases_back_to(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
        search: Search<'_>,
    ) -> Result<(), StoreError> {
        if state.purchases.has_loaded(search) {
            return Ok(());
        }
        let mut chunk = 8;
        while !state.purchases.is_complete() {
            let newer = self.purchases(partition, account_id, state.purchases.newest_unloaded(chunk))?;
            // Only the chunk just read can hold it: the rest was searched.
            let found = newer.iter().any(|p| search.accepts(p));
            state.purchases.load_newest(newer);
            if found {
                break;
            }
            chunk *= 4;
        }
        Ok(())
    }

    /// The purchases numbered `numbers`, all of which must be there.
    fn purchases(
        &self,
        partition: u32,
        account_id: &str,
        numbers: Range<u64>,
    ) -> Result<Vec<RetainedPurchase>, StoreError> {
        let missing = |seq| StoreError::MissingPurchase {
            path: self.path.clone(),
            partition,
            account: account_id.to_string(),
            seq,
        };
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let Some(cf) = self.db.cf_handle(CF_PURCHASES) else { return Err(missing(numbers.start)) };
        let start = purchase_key(partition, account_id, numbers.start);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(purchase_key(partition, account_id, numbers.end));
        let mut list = Vec::with_capacity(numbers.clone().count());
        // The raw iterator lends each key and value; the plain one copies
        // both into boxes of their own (a refund reads ~100 purchases).
        let mut iter = self.db.raw_iterator_cf_opt(cf, read);
        iter.seek(&start);
        for seq in numbers.clone() {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else { break };
            if !key.ends_with(&seq.to_be_bytes()) {
                return Err(missing(seq));
            }
            let purchase = RetainedPurchase::decode_value(value, list.last())
                .map_err(|e| self.corrupt("retained purchase", partition, e))?;
            list.push(purchase);
            iter.next();
        }
        iter.status().map_err(|e| self.db_err(e))?;
        if (list.len() as u64) < numbers.end - numbers.start {
            return Err(missing(numbers.start + list.len() as u64));
        }
        Ok(list)
    }

    /// An account's state, in whichever partition holds it.
    pub fn find_account(&self, account_id: &str) -> Result<Option<(u32, AccountState)>, StoreError> {
        for p in self.partitions()? {
            if let Some(state) = self.account(p, account_id)? {
                return Ok(Some((p, state)));
            }
        }
        Ok(None)
    }

    /// Every account of a partition (for inspection and tests), in key order.
    pub fn accounts(&self, partition: u32) -> Result<Vec<(String, AccountState)>, StoreError> {
        let prefix = partition.to_be_bytes();
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(CF_ACCOUNTS), IteratorMode::From(&prefix, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if key.len() < 4 || key[..4] != prefix {
                break;
            }
            let account = String::from_utf8_lossy(&key[4..]).into_owned();
            let mut state =
                AccountState::decode(&value).map_err(|e| self.corrupt("account state", partition, e))?;
            self.load_purchases(partition, &account, &mut state)?;
            out.push((account, state));
        }
        Ok(out)
    }
}

impl LedgerBatch<'_> {
    /// Stages an account's state: its value, and of its purchases only
    /// what changed since the store last held it (the state then counts as
    /// stored). Returns the size of the account's value.
    pub fn put_account(&mut self, partition: u32, account_id: &str, state: &mut AccountState) -> usize {
        self.scratch.buf.clear();
        state.encode(&mut self.scratch);
        let key = partition_key(partition, account_id.as_bytes());
        self.batch.put_cf(self.store.cf(CF_ACCOUNTS), &key, &self.scratch.buf);
        capture(&mut self.capture, Family::Accounts, &key, Some(&self.scratch.buf));
        let size = self.scratch.buf.len();

        let changes = state.purchases.changes();
        let purchases = self.store.cf(CF_PURCHASES);
        for seq in changes.deleted {
            let key = purchase_key(partition, account_id, seq);
            self.batch.delete_cf(purchases, &key);
            capture(&mut self.capture, Family::Purchases, &key, None);
        }
        for (seq, purchase) in changes.written {
            self.scratch.buf.clear();
            purchase.encode_value(&mut self.scratch);
            let key = purchase_key(partition, account_id, seq);
            self.batch.put_cf(purchases, &key, &self.scratch.buf);
            capture(&mut self.capture, Family::Purchases, &key, Some(&self.scratch.buf));
        }
        state.purchases.mark_stored();
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;
    use accrual_core::state::codec::Writer;
    use accrual_core::state::testing::purchase;
    use accrual_core::time::Timestamp;
    use rust_decimal::Decimal;

    /// The purchase keys the store holds for partition 0, as (account, seq).
    fn purchase_keys(store: &Store) -> Vec<(String, u64)> {
        let cf = store.cf(CF_PURCHASES);
        store
            .db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|item| {
                let (key, _) = item.unwrap();
                let len = u32::from_be_bytes(key[4..8].try_into().unwrap()) as usize;
                let account = String::from_utf8(key[8..8 + len].to_vec()).unwrap();
                (account, u64::from_be_bytes(key[8 + len..].try_into().unwrap()))
            })
            .collect()
    }

    /// A fresh store (and the directory that must outlive it).
    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        (dir, store)
    }

    fn write(store: &Store, account: &str, state: &mut AccountState) {
        let mut b = store.batch();
        b.put_account(0, account, state);
        store.commit(b).unwrap();
    }

    #[test]
    fn purchases_live_under_their_own_keys_and_only_changes_are_written() {
        let (_dir, store) = open();
        let mut state = AccountState::default();
        for (i, id) in ["p1", "p2", "p3"].iter().enumerate() {
            state.purchases.push(purchase(id, i as i64 * 10));
        }
        // An account whose id extends this one's stays apart.
        let mut other = AccountState::default();
        other.purchases.push(purchase("q1", 5));
        write(&store, "acc", &mut state);
        write(&store, "acc1", &mut other);
        assert_eq!(store.account(0, "acc").unwrap().as_ref(), Some(&state));
        assert_eq!(store.account(0, "acc1").unwrap().as_ref(), Some(&other));

        // Refund p2, age out p1, add p4: the store follows, key by key.
        let mut loaded = store.account(0, "acc").unwrap().unwrap();
        loaded.purchases.find_mut(Search::any("p2")).unwrap().refunded = Decimal::ONE;
        loaded.purchases.drop_before(Timestamp(5));
        loaded.purchases.push(purchase("p4", 30));
        assert_eq!(loaded.purchases.changes().written.len(), 2, "p2 and p4, not p3");
        write(&store, "acc", &mut loaded);
        let back = store.account(0, "acc").unwrap().unwrap();
        assert_eq!(back, loaded);
        assert_eq!(back.purchases.first_seq(), 1);
        assert_eq!(back.purchases[0].refunded, Decimal::ONE);
        assert_eq!(
            purchase_keys(&store),
            vec![("acc".into(), 1), ("acc".into(), 2), ("acc".into(), 3), ("acc1".into(), 0)]
        );
        assert_eq!(store.accounts(0).unwrap(), vec![("acc".into(), back), ("acc1".into(), other)]);

        // Loaded without its purchases, the account reads them on request.
        let mut lazy = store.account_lazy(0, "acc").unwrap().unwrap();
        assert!(lazy.purchases.is_empty() && !lazy.purchases.is_complete());
        assert_eq!(lazy.purchases.count(), 3);
        store.load_purchases(0, "acc", &mut lazy).unwrap();
        assert_eq!(Some(lazy), store.account(0, "acc").unwrap());

        store.drop_partition(0).unwrap();
        assert!(purchase_keys(&store).is_empty());
    }

    #[test]
    fn a_search_reads_purchases_newest_first_back_to_the_one_it_names() {
        let (_dir, store) = open();
        let mut state = AccountState::default();
        for i in 0..100 {
            let mut p = purchase(&format!("p{i}"), i);
            p.authorized = i == 3;
            state.purchases.push(p);
        }
        write(&store, "acc", &mut state);
        let full = store.account(0, "acc").unwrap().unwrap();
        let lazy = || store.account_lazy(0, "acc").unwrap().unwrap();
        let search = |state: &mut AccountState, s: Search<'_>| {
            store.load_purchases_back_to(0, "acc", state, s).unwrap();
            let loaded = state.purchases.len();
            let found = state.purchases.find_mut(s).map(|p| p.event_id.clone());
            (loaded, found)
        };

        // The newest: one chunk of 8.
        let mut recent = lazy();
        assert_eq!(search(&mut recent, Search::any("p97")), (8, Some("p97".into())));
        assert_eq!(recent.purchases.unloaded_seqs(), 0..92);
        // Further back: chunks of 8, then 32 more (128, capped at what is
        // left, for the oldest).
        assert_eq!(search(&mut recent, Search::any("p60")), (48, Some("p60".into())));
        assert_eq!(search(&mut lazy(), Search::any("p3")), (100, Some("p3".into())));
        // Not there, or there but not authorised: everything is read.
        assert_eq!(search(&mut lazy(), Search::any("zz")), (100, None));
        assert_eq!(search(&mut lazy(), Search::authorized("p4")), (100, None));
        assert_eq!(search(&mut lazy(), Search::authorized("p3")), (100, Some("p3".into())));

        // Partly loaded, the account writes and reads back as it was.
        let mut partial = lazy();
        search(&mut partial, Search::any("p99")).1.unwrap();
        partial.purchases.find_mut(Search::any("p99")).unwrap().refunded = Decimal::ONE;
        partial.purchases.push(purchase("p100", 100));
        assert_eq!(written_seqs(&partial), vec![99, 100]);
        write(&store, "acc", &mut partial);
        let back = store.account(0, "acc").unwrap().unwrap();
        assert_eq!(back.purchases.len(), 101);
        assert_eq!(back.purchases[99].refunded, Decimal::ONE);
        assert_eq!(&back.purchases[..99], &full.purchases[..99]);
    }

    fn written_seqs(state: &AccountState) -> Vec<u64> {
        state.purchases.changes().written.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn a_missing_or_corrupt_purchase_is_an_error_naming_it() {
        let (_dir, store) = open();
        let mut state = AccountState::default();
        state.purchases.push(purchase("p1", 1));
        state.purchases.push(purchase("p2", 2));
        write(&store, "acc", &mut state);

        let cf = store.cf(CF_PURCHASES);
        store.db.put_cf(cf, purchase_key(0, "acc", 1), [9, 9]).unwrap();
        let err = store.account(0, "acc").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { what: "retained purchase", .. }), "{err}");

        store.db.delete_cf(cf, purchase_key(0, "acc", 1)).unwrap();
        let err = store.account(0, "acc").unwrap_err();
        assert!(matches!(err, StoreError::MissingPurchase { seq: 1, .. }), "{err}");
        assert!(err.to_string().contains("account acc in partition 0"), "{err}");

        store.db.delete_cf(cf, purchase_key(0, "acc", 0)).unwrap();
        let err = store.account(0, "acc").unwrap_err();
        assert!(matches!(err, StoreError::MissingPurchase { seq: 0, .. }), "{err}");
    }

    #[test]
    fn an_account_written_in_the_earlier_format_is_read_and_moved_on_its_next_write() {
        let (_dir, store) = open();
        let mut state = AccountState::default();
        state.purchases.push(purchase("p1", 1));
        let mut w = Writer::default();
        state.encode_legacy(&mut w);
        store.db.put_cf(store.cf(CF_ACCOUNTS), partition_key(0, b"acc"), &w.buf).unwrap();

        let mut loaded = store.account(0, "acc").unwrap().unwrap();
        assert_eq!(loaded, state);
        assert!(purchase_keys(&store).is_empty());
        write(&store, "acc", &mut loaded);
        assert_eq!(purchase_keys(&store), vec![("acc".into(), 0)]);
        assert_eq!(store.account(0, "acc").unwrap(), Some(state));
    }
}
