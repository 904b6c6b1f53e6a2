//! The store as the batch processor's [`Ledger`]: each method is the
//! store's own, of the same name.

use super::{LedgerBatch, Progress, Store, StoreError};
use accrual_core::pipeline::{Ledger, StagedWrites};
use accrual_core::state::{AccountState, Search};
use accrual_core::time::Timestamp;

impl Ledger for Store {
    type Error = StoreError;

    fn account_lazy(&self, partition: u32, account_id: &str) -> Result<Option<AccountState>, StoreError> {
        Store::account_lazy(self, partition, account_id)
    }

    fn load_purchases(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
    ) -> Result<(), StoreError> {
        Store::load_purchases(self, partition, account_id, state)
    }

    fn load_purchases_back_to(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
        search: Search<'_>,
    ) -> Result<(), StoreError> {
        Store::load_purchases_back_to(self, partition, account_id, state, search)
    }

    fn due_timers(
        &self,
        partition: u32,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>, StoreError> {
        Store::due_timers(self, partition, up_to, limit)
    }

    fn seen(
        &self,
        partition: u32,
        event_id: &str,
        stream_time: Timestamp,
        window_ms: i64,
    ) -> Result<Option<Timestamp>, StoreError> {
        Store::seen(self, partition, event_id, stream_time, window_ms)
    }
}

impl StagedWrites for LedgerBatch<'_> {
    fn put_seen(&mut self, partition: u32, event_id: &str, at: Timestamp) {
        LedgerBatch::put_seen(self, partition, event_id, at)
    }

    fn set_timer(&mut self, partition: u32, account: &str, old: Option<Timestamp>, new: Option<Timestamp>) {
        LedgerBatch::set_timer(self, partition, account, old, new)
    }

    fn put_account(&mut self, partition: u32, account_id: &str, state: &mut AccountState) -> usize {
        LedgerBatch::put_account(self, partition, account_id, state)
    }

    fn set_progress(&mut self, partition: u32, progress: Progress, dedupe_window_ms: i64) {
        LedgerBatch::set_progress(self, partition, progress, dedupe_window_ms)
    }
}
