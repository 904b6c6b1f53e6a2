//! What the processor needs of the ledger that keeps a partition's state:
//! reads of committed state, and writes staged for one atomic commit. The
//! RocksDB store implements both; the processor knows nothing of how they
//! are kept, so it stays free of I/O and builds without the store.

use crate::state::{AccountState, Search};
use crate::time::Timestamp;

/// A partition's progress: the next input offset to process and the
/// largest event time seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub next_offset: u64,
    pub stream_time: Timestamp,
}

/// Committed state, read by partition and account.
pub trait Ledger {
    type Error: std::error::Error + Send + Sync + 'static;

    /// An account's stored state without its older purchases (see
    /// [`crate::state::Purchases`]), if it has any.
    fn account_lazy(&self, partition: u32, account_id: &str) -> Result<Option<AccountState>, Self::Error>;

    /// Reads the purchases of `state` not loaded yet.
    fn load_purchases(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
    ) -> Result<(), Self::Error>;

    /// Reads the purchases of `state` not loaded yet, newest first, until
    /// one `search` accepts is loaded or all are.
    fn load_purchases_back_to(
        &self,
        partition: u32,
        account_id: &str,
        state: &mut AccountState,
        search: Search<'_>,
    ) -> Result<(), Self::Error>;

    /// Up to `limit` accounts of a partition with a timer due by `up_to`,
    /// soonest first (then by account id).
    fn due_timers(
        &self,
        partition: u32,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>, Self::Error>;

    /// When an event id was first seen in the partition, if it is still
    /// remembered at `stream_time` under a window of `window_ms`.
    fn seen(
        &self,
        partition: u32,
        event_id: &str,
        stream_time: Timestamp,
        window_ms: i64,
    ) -> Result<Option<Timestamp>, Self::Error>;
}

/// Changes staged for one atomic commit of the ledger.
pub trait StagedWrites {
    /// Remembers an event id as first seen at `at`, for dedupe.
    fn put_seen(&mut self, partition: u32, event_id: &str, at: Timestamp);

    /// Moves an account's timer from `old` to `new` (either may be none).
    fn set_timer(&mut self, partition: u32, account: &str, old: Option<Timestamp>, new: Option<Timestamp>);

    /// Stages an account's state (the state then counts as stored) and
    /// returns the size of its value.
    fn put_account(&mut self, partition: u32, account_id: &str, state: &mut AccountState) -> usize;

    /// Records the partition's progress, and lets dedupe keys older than
    /// the window go.
    fn set_progress(&mut self, partition: u32, progress: Progress, dedupe_window_ms: i64);
}
