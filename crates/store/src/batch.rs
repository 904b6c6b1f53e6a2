//! A batch of changes committed as one RocksDB `WriteBatch`: how the
//! processor's changes are staged (account states live in `accounts.rs`),
//! captured for the changelog, joined across a cycle's partitions, and
//! committed.

use super::changelog::{Capture, Family, capture};
use super::{
    CF_DEDUPE, CF_META, CF_OUTBOX, CF_TIMERS, META_FORMAT, PROGRESS, Progress, RULES_VERSION, Store,
    StoreError, dedupe_groups, global_key, owner, partition_key, timer_key,
};
use accrual_core::state::codec::Writer;
use accrual_core::time::Timestamp;
use rocksdb::{WriteBatch, WriteOptions};

impl Store {
    /// Starts a batch of changes, committed atomically by [`Store::commit`].
    pub fn batch(&self) -> LedgerBatch<'_> {
        self.batch_with_capacity(0)
    }

    /// A batch with room for `bytes` of changes, so a large one is not
    /// grown (and copied) step by step.
    pub fn batch_with_capacity(&self, bytes: usize) -> LedgerBatch<'_> {
        LedgerBatch {
            store: self,
            batch: WriteBatch::with_capacity_bytes(bytes),
            scratch: Writer::with_capacity(512),
            horizons: Vec::new(),
            capture: None,
            owner: Vec::new(),
            starts: Vec::new(),
        }
    }

    pub fn commit(&self, batch: LedgerBatch<'_>) -> Result<(), StoreError> {
        self.write(batch, &self.write)
    }

    /// Commits without syncing the write-ahead log: the changes are visible
    /// at once and survive a crash of the process, but not of the machine
    /// until [`Store::sync_wal`] (or a synced commit) has run.
    pub fn commit_unsynced(&self, batch: LedgerBatch<'_>) -> Result<(), StoreError> {
        self.write(batch, &WriteOptions::default())
    }

    /// Syncs the write-ahead log: everything committed so far is durable.
    /// Safe while other threads commit.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.db_err(e))
    }

    fn write(&self, batch: LedgerBatch<'_>, options: &WriteOptions) -> Result<(), StoreError> {
        let LedgerBatch { batch, horizons, .. } = batch;
        self.db.write_opt(batch, options).map_err(|e| self.db_err(e))?;
        if let Ok(mut map) = self.dedupe_horizons.write() {
            map.extend(horizons);
        }
        Ok(())
    }
}

/// A batch's changes apart from the store they were staged for, to send
/// to another thread and combine there (see [`Store::batch_from`]).
pub struct Staged {
    batch: WriteBatch,
    horizons: Vec<(u32, i64)>,
}

/// Changes to commit together: account states, dedupe keys, outbox entries
/// and progress, possibly for several partitions.
pub struct LedgerBatch<'s> {
    pub(crate) store: &'s Store,
    pub(crate) batch: WriteBatch,
    pub(crate) scratch: Writer,
    pub(crate) horizons: Vec<(u32, i64)>,
    /// The processor's changes, as changelog entries, when asked for
    /// ([`LedgerBatch::capturing_changes`]).
    pub(crate) capture: Option<Capture>,
    /// Appended to every progress record (see [`LedgerBatch::owned_by`]).
    pub(crate) owner: Vec<u8>,
    /// Where each partition's inputs in this batch start (see
    /// [`LedgerBatch::starts_at`]).
    pub(crate) starts: Vec<(u32, u64)>,
}

impl LedgerBatch<'_> {
    /// Records `owner`, processing under the rules timeline `rules`, with
    /// every partition's progress the batch sets.
    pub fn owned_by(mut self, owner: &owner::Owner, rules: &str) -> Self {
        self.owner = owner::encode(owner, rules);
        self
    }

    /// Records that the partition's inputs in this batch start at
    /// `offset` (its progress before them). The progress records of an
    /// owned batch carry it (see [`owner::Stamped::start`]).
    pub fn starts_at(&mut self, partition: u32, offset: u64) {
        match self.start_of(partition) {
            Some(start) => *start = offset,
            None => self.starts.push((partition, offset)),
        }
    }

    fn start_of(&mut self, partition: u32) -> Option<&mut u64> {
        self.starts.iter_mut().find(|(p, _)| *p == partition).map(|(_, start)| start)
    }

    /// Also keeps every change the batch processor stages (account states,
    /// purchases, dedupe keys, timers, progress) as changelog entries, for
    /// [`LedgerBatch::take_changes`].
    pub fn capturing_changes(mut self) -> Self {
        self.capture = Some(Capture::default());
        self
    }

    /// The changes captured since the last call, encoded (see
    /// [`crate::changelog::changes`]); empty if none or not capturing.
    pub fn take_changes(&mut self) -> Result<Vec<u8>, StoreError> {
        let Some(capture) = self.capture.as_mut() else { return Ok(Vec::new()) };
        if let Some(failed) = capture.failed.take() {
            return Err(failed);
        }
        Ok(std::mem::take(&mut capture.buf.buf))
    }

    pub fn put_seen(&mut self, partition: u32, event_id: &str, at: Timestamp) {
        self.scratch.buf.clear();
        self.scratch.i64(at.0);
        let key = partition_key(partition, event_id.as_bytes());
        self.batch.put_cf(self.store.cf(CF_DEDUPE), &key, &self.scratch.buf);
        if let Some(capture) = &mut self.capture {
            // Published with the partition's progress, as one group.
            capture.dedupe.add(event_id.as_bytes(), at.0);
        }
    }

    /// Publishes the partition's pending dedupe keys as groups, and
    /// tombstones for the groups expired at `horizon` (see `dedupe_groups`).
    fn capture_dedupe_groups(&mut self, partition: u32, next_offset: u64, horizon: i64) {
        let Some(capture) = &mut self.capture else { return };
        let meta = self.store.cf(CF_META);
        for (key, value) in capture.dedupe.take(partition, next_offset) {
            self.batch.put_cf(meta, &key, []);
            capture.record(Family::DedupeGroup, &key, Some(&value));
        }
        match dedupe_groups::expired(self.store, partition, horizon) {
            Ok(expired) => {
                for key in expired {
                    self.batch.delete_cf(meta, &key);
                    capture.record(Family::DedupeGroup, &key, None);
                }
            }
            Err(e) => capture.failed = Some(e),
        }
    }

    pub fn put_outbox(&mut self, partition: u32, offset: u64, records: &[u8]) {
        let key = partition_key(partition, &offset.to_be_bytes());
        self.batch.put_cf(self.store.cf(CF_OUTBOX), key, records);
    }

    /// Moves an account's timer from `old` to `new` (either may be none).
    pub fn set_timer(
        &mut self,
        partition: u32,
        account: &str,
        old: Option<Timestamp>,
        new: Option<Timestamp>,
    ) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            let key = timer_key(partition, old, account);
            self.batch.delete_cf(self.store.cf(CF_TIMERS), &key);
            capture(&mut self.capture, Family::Timers, &key, None);
        }
        if let Some(new) = new {
            let key = timer_key(partition, new, account);
            self.batch.put_cf(self.store.cf(CF_TIMERS), &key, []);
            capture(&mut self.capture, Family::Timers, &key, Some(&[]));
        }
    }

    /// Drops outbox entries below `offset` (published and committed).
    pub fn clear_outbox_below(&mut self, partition: u32, offset: u64) {
        let from = partition_key(partition, &0u64.to_be_bytes());
        let to = partition_key(partition, &offset.to_be_bytes());
        self.batch.delete_range_cf(self.store.cf(CF_OUTBOX), from, to);
    }

    /// Records the partition's progress, and lets expired dedupe keys go.
    pub fn set_progress(&mut self, partition: u32, progress: Progress, dedupe_window_ms: i64) {
        let horizon = progress.stream_time.0.saturating_sub(dedupe_window_ms);
        self.capture_dedupe_groups(partition, progress.next_offset, horizon);
        self.scratch.buf.clear();
        self.scratch.u8(META_FORMAT);
        self.scratch.u64(progress.next_offset);
        self.scratch.i64(progress.stream_time.0);
        if !self.owner.is_empty() {
            self.scratch.buf.extend_from_slice(&self.owner);
            if let Some(start) = self.start_of(partition).copied() {
                self.scratch.u64(start);
            }
        }
        // A later progress of the partition in this batch starts here.
        self.starts_at(partition, progress.next_offset);
        let key = partition_key(partition, PROGRESS);
        self.batch.put_cf(self.store.cf(CF_META), &key, &self.scratch.buf);
        capture(&mut self.capture, Family::Progress, &key, Some(&self.scratch.buf));
        self.horizons.push((partition, horizon));
    }

    pub fn set_rules_version(&mut self, version: &str) {
        self.put_meta(RULES_VERSION, version.as_bytes());
    }

    /// Sets an engine-wide meta value.
    pub fn put_meta(&mut self, name: &[u8], value: &[u8]) {
        self.batch.put_cf(self.store.cf(CF_META), global_key(name), value);
    }

    /// Deletes engine-wide meta entries with names in `[from, to)`.
    pub fn delete_meta_range(&mut self, from: &[u8], to: &[u8]) {
        self.batch.delete_range_cf(self.store.cf(CF_META), global_key(from), global_key(to));
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The size of the batch's data, for sizing the next one.
    pub fn size_in_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    /// The changes, to append to a batch elsewhere.
    pub fn into_staged(self) -> Staged {
        Staged { batch: self.batch, horizons: self.horizons }
    }
}

/// The changes of `batches`, in one: the biggest batch's bytes, then the
/// others' records. The caller's changes must not depend on their order (a
/// cycle's partitions and its housekeeping touch different keys). A lone
/// batch is taken as it is; joined ones are copied twice, into one buffer
/// and again by `WriteBatch::from_data`, since the crate cannot append to
/// a batch in place.
fn concatenate(batches: Vec<Staged>) -> Staged {
    let mut horizons = Vec::new();
    let mut others = Vec::with_capacity(batches.len());
    for staged in batches {
        horizons.extend(staged.horizons);
        if !staged.batch.is_empty() {
            others.push(staged.batch);
        }
    }
    let Some(biggest) = (0..others.len()).max_by_key(|&i| (others[i].data().len(), std::cmp::Reverse(i)))
    else {
        return Staged { batch: WriteBatch::default(), horizons };
    };
    let mut base = others.remove(biggest);
    if others.is_empty() {
        return Staged { batch: base, horizons };
    }
    // A WriteBatch's bytes are a 12-byte header (a sequence number, then
    // the record count as a little-endian u32) and its records, so batches
    // concatenate as RocksDB's own WriteBatchInternal::Append does it: one
    // header, every batch's records, the counts added.
    let count: usize = base.len() + others.iter().map(WriteBatch::len).sum::<usize>();
    let ours = base.data();
    let size = ours.len() + others.iter().map(|b| b.data().len() - WRITE_BATCH_HEADER).sum::<usize>();
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(ours);
    data[8..12].copy_from_slice(&(count as u32).to_le_bytes());
    for b in &others {
        data.extend_from_slice(&b.data()[WRITE_BATCH_HEADER..]);
    }
    base = WriteBatch::from_data(&data);
    Staged { batch: base, horizons }
}

impl Store {
    /// A batch made of a cycle's staged changes (see [`concatenate`]), for
    /// the cycle's own changes to be added to.
    pub fn batch_from(&self, staged: Vec<Staged>) -> LedgerBatch<'_> {
        let Staged { batch, horizons } = concatenate(staged);
        LedgerBatch {
            store: self,
            batch,
            scratch: Writer::with_capacity(512),
            horizons,
            capture: None,
            owner: Vec::new(),
            starts: Vec::new(),
        }
    }
}

/// Bytes before the first record of a WriteBatch's data.
const WRITE_BATCH_HEADER: usize = 12;
