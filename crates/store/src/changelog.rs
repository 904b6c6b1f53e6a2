//! The ledger's changes as changelog entries: every write the batch
//! processor stages for a partition (account states, retained purchases,
//! dedupe keys, timers, progress) can be captured as it is staged, and
//! written back, byte for byte, into an empty partition (a restore).
//!
//! An entry is (family, RocksDB key, value or none for a delete). Its
//! changelog message key is the family's byte then the RocksDB key, which
//! starts with the partition (see the crate's layout); a delete is a
//! tombstone. The engine publishes the entries in the Kafka transaction
//! that commits their inputs, so the changelog holds exactly the state of
//! the committed offsets.

use super::segments::{Encoded, Segments};
use super::{
    CF_ACCOUNTS, CF_DEDUPE, CF_META, CF_PURCHASES, CF_TIMERS, PROGRESS, Store, StoreError, dedupe_groups,
};
use accrual_core::state::codec::{CodecError, Reader, Writer};
use rocksdb::{Direction, IteratorMode, WriteBatch};

/// The column family of a changelog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Accounts = 0,
    Purchases = 1,
    Dedupe = 2,
    Timers = 3,
    /// A partition's progress (in the `meta` family).
    Progress = 4,
    /// A cycle's dedupe keys in one message (see `dedupe_groups`); older
    /// changelogs carry them one by one, as [`Family::Dedupe`].
    DedupeGroup = 5,
    /// The start of a snapshot (see [`snapshot`]): the partition's state is
    /// what follows, nothing before it. Its key is the partition's, so a
    /// compacted log keeps the last one.
    Reset = 6,
}

impl Family {
    fn from_byte(b: u8) -> Option<Family> {
        Some(match b {
            0 => Family::Accounts,
            1 => Family::Purchases,
            2 => Family::Dedupe,
            3 => Family::Timers,
            4 => Family::Progress,
            5 => Family::DedupeGroup,
            6 => Family::Reset,
            _ => return None,
        })
    }

    /// The family's name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Family::Accounts => "accounts",
            Family::Purchases => "purchases",
            Family::Dedupe => "dedupe",
            Family::Timers => "timers",
            Family::Progress => "progress",
            Family::DedupeGroup => "dedupe groups",
            Family::Reset => "reset",
        }
    }

    fn column_family(self) -> &'static str {
        match self {
            Family::Accounts => CF_ACCOUNTS,
            Family::Purchases => CF_PURCHASES,
            Family::Dedupe => CF_DEDUPE,
            Family::Timers => CF_TIMERS,
            // A reset is never stored as a key (see `stage`).
            Family::Progress | Family::DedupeGroup | Family::Reset => CF_META,
        }
    }
}

/// One change, borrowed from encoded changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub family: Family,
    pub key: &'a [u8],
    /// `None`: the key is deleted.
    pub value: Option<&'a [u8]>,
}

impl Change<'_> {
    /// The partition the change belongs to (every key starts with it).
    pub fn partition(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.key.get(..4)?.try_into().ok()?))
    }
}

/// Changes as they are staged: (family, key, present, value) after another.
#[derive(Default)]
pub(crate) struct Capture {
    pub(crate) buf: Writer,
    /// The dedupe keys staged since the last progress (see `dedupe_groups`).
    pub(crate) dedupe: dedupe_groups::Pending,
    /// A failure to find expired dedupe groups, reported by `take_changes`.
    pub(crate) failed: Option<StoreError>,
}

/// Records a change if the batch captures them (a free function, so the
/// batch's other fields stay free to borrow for the value).
pub(crate) fn capture(capture: &mut Option<Capture>, family: Family, key: &[u8], value: Option<&[u8]>) {
    if let Some(capture) = capture {
        capture.record(family, key, value);
    }
}

impl Capture {
    pub(crate) fn record(&mut self, family: Family, key: &[u8], value: Option<&[u8]>) {
        encode(&mut self.buf, &Change { family, key, value });
    }
}

/// Appends a change as [`changes`] reads it back.
pub(crate) fn encode(w: &mut Writer, change: &Change<'_>) {
    w.u8(change.family as u8);
    w.bytes(change.key);
    match change.value {
        Some(value) => {
            w.u8(1);
            w.bytes(value);
        }
        None => w.u8(0),
    }
}

/// The changes of encoded captured bytes (see [`crate::LedgerBatch::take_changes`]).
pub fn changes(bytes: &[u8]) -> Result<Vec<Change<'_>>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let family = Family::from_byte(r.u8()?).ok_or(CodecError::Corrupt("changelog family"))?;
        let key = r.bytes()?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?),
            _ => return Err(CodecError::Corrupt("changelog value flag")),
        };
        out.push(Change { family, key, value });
    }
    Ok(out)
}

/// A changelog message's key: the family's byte, then the RocksDB key.
pub fn message_key(change: &Change<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.push(change.family as u8);
    out.extend_from_slice(change.key);
}

/// The change a changelog message stands for (`value`: none for a
/// tombstone); `None` if its key is not one this crate writes.
pub fn from_message<'a>(key: &'a [u8], value: Option<&'a [u8]>) -> Option<Change<'a>> {
    let (&family, key) = key.split_first()?;
    let change = Change { family: Family::from_byte(family)?, key, value };
    change.partition()?;
    Some(change)
}

/// Writes changes read from a changelog into the store, in large batches
/// (a restore). Nothing else may write the partition meanwhile. The
/// partition's progress is written last, with the final batch: a restore
/// cut short leaves none, so it is never taken for a state that ends
/// somewhere.
pub struct Restore<'s> {
    store: &'s Store,
    batch: WriteBatch,
    /// The changes read, a batch of the writer's at a time.
    segments: Segments<Encoded>,
    /// The last progress of each partition restored.
    progress: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    /// Changes read so far.
    pub changes: u64,
    /// Their keys' and values' bytes.
    pub bytes: u64,
}

/// Bytes of changes per RocksDB write while restoring.
const RESTORE_BATCH_BYTES: usize = 32 << 20;

impl<'s> Restore<'s> {
    pub fn new(store: &'s Store) -> Restore<'s> {
        Restore {
            store,
            batch: WriteBatch::default(),
            segments: Segments::default(),
            progress: Default::default(),
            changes: 0,
            bytes: 0,
        }
    }

    /// Reads a change. A writer's batch is written once the next one shows
    /// it committed (see `segments`).
    pub fn apply(&mut self, change: &Change<'_>) -> Result<(), StoreError> {
        if let Some(partition) = change.partition().filter(|_| is_reset(change)) {
            // What was read before is no longer the partition's: neither
            // its changes (staged as gone, see `stage`) nor its progress.
            let prefix = partition.to_be_bytes();
            self.progress.retain(|key, _| !key.starts_with(&prefix));
        }
        match change.value {
            Some(value) if is_progress(change) => {
                self.progress.insert(change.key.to_vec(), value.to_vec());
                if let Some(kept) = self.segments.end(value) {
                    self.stage(&kept)?;
                }
            }
            _ => self.segments.open().push(change),
        }
        self.changes += 1;
        self.bytes += (change.key.len() + change.value.map_or(0, <[u8]>::len)) as u64;
        // Only a snapshot's batch grows this large (a cycle's is a few MB):
        // written as it is read, not held back.
        if self.segments.open().len() >= RESTORE_BATCH_BYTES {
            for rest in self.segments.rest() {
                self.stage(&rest)?;
            }
        }
        if self.batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writer's batches left out as never committed.
    pub fn dropped(&self) -> u64 {
        self.segments.dropped
    }

    fn stage(&mut self, changes: &Encoded) -> Result<(), StoreError> {
        let changes = changes.changes().map_err(|e| self.store.corrupt("changes read back", u32::MAX, e))?;
        for change in &changes {
            stage(self.store, &mut self.batch, change)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut self.batch);
        self.store.write_raw(batch)
    }

    /// Writes what is left, the progress with it, and syncs it.
    pub fn finish(mut self) -> Result<(), StoreError> {
        for rest in self.segments.rest() {
            self.stage(&rest)?;
        }
        for (key, value) in std::mem::take(&mut self.progress) {
            self.batch.put_cf(self.store.cf(CF_META), key, value);
        }
        self.flush()?;
        self.store.sync_wal()
    }
}

/// A stored key and value of a family the changelog carries.
pub type Entry = (Family, Vec<u8>, Vec<u8>);

/// The families a partition's state is compared in, in the order
/// [`entries`] yields them.
pub const STATE_FAMILIES: [Family; 6] = [
    Family::Accounts,
    Family::Purchases,
    Family::Dedupe,
    Family::Timers,
    Family::Progress,
    Family::DedupeGroup,
];

/// Every key and value a partition holds in the families the changelog
/// carries, in family (as [`STATE_FAMILIES`]) then key order: what a
/// restore must reproduce.
pub fn entries(store: &Store, partition: u32) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
    let prefix = partition.to_be_bytes();
    STATE_FAMILIES.into_iter().flat_map(move |family| {
        let cf = store.cf(family.column_family());
        store
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
            .map(move |item| item.map_err(|e| store.db_err(e)))
            .take_while(move |item| {
                item.as_ref().is_ok_and(|(key, _)| key.starts_with(&prefix)) || item.is_err()
            })
            .filter(move |item| item.as_ref().map_or(true, |(key, value)| carried(family, key, value)))
            .map(move |item| item.map(|(key, value)| (family, key.into_vec(), value.into_vec())))
    })
}

/// Whether a stored key of `family` is part of the state the changelog
/// carries (the `meta` family holds other keys beside progress and the
/// dedupe groups' index).
fn carried(family: Family, key: &[u8], value: &[u8]) -> bool {
    match family {
        Family::Progress => is_progress(&Change { family, key, value: Some(value) }),
        Family::DedupeGroup => dedupe_groups::is_index_key(key),
        _ => true,
    }
}

/// [`entries`], collected.
pub fn partition_entries(store: &Store, partition: u32) -> Result<Vec<Entry>, StoreError> {
    entries(store, partition).collect()
}

/// Dedupe keys per group in a snapshot (a group is split further when
/// its bytes pass the bound of `dedupe_groups`).
const SNAPSHOT_GROUP_KEYS: u64 = 8_192;

/// The partition's whole state as changelog changes, a reset first and its
/// progress last, handed to `each`: what a changelog that does not hold the
/// partition's state is given before it can restore it (turning the
/// changelog on where state already exists, or on again after it was off).
/// The reset makes readers drop what they read before it, keys this state
/// no longer has too. Dedupe keys go as groups, their index entries
/// written to the store in place of those it had (a restore of the
/// snapshot holds only these), so that they expire like a cycle's; their index
/// keys end in offsets counted down from `u64::MAX`, which no cycle's
/// group uses. Returns the number of changes; none without progress.
pub fn snapshot<E: From<StoreError>>(
    store: &Store,
    partition: u32,
    mut each: impl FnMut(&Change<'_>) -> Result<(), E>,
) -> Result<u64, E> {
    let progress_key = super::partition_key(partition, PROGRESS);
    let progress = store.db.get_cf(store.cf(CF_META), &progress_key).map_err(|e| store.db_err(e))?;
    let Some(progress) = progress else { return Ok(0) };
    let reset_key = super::partition_key(partition, RESET);
    each(&Change { family: Family::Reset, key: &reset_key, value: Some(&progress) })?;
    let prefix = partition.to_be_bytes();
    let mut count = 1u64;
    for family in [Family::Accounts, Family::Purchases, Family::Timers] {
        let cf = store.cf(family.column_family());
        for item in store.db.prefix_iterator_cf(cf, prefix) {
            let (key, value) = item.map_err(|e| store.db_err(e))?;
            if !key.starts_with(&prefix) {
                break;
            }
            each(&Change { family, key: &key, value: Some(&value) })?;
            count += 1;
        }
    }
    let mut group = dedupe_groups::Pending::default();
    // The snapshot's groups hold every dedupe key: they replace the
    // groups indexed so far, as in a restore of the snapshot.
    let mut index = WriteBatch::default();
    dedupe_groups::stage_drop_index(store, &mut index, partition);
    let mut publish_group = |group: &mut dedupe_groups::Pending, index: &mut WriteBatch| -> Result<(), E> {
        for (key, value) in group.take(partition, u64::MAX - count) {
            index.put_cf(store.cf(CF_META), &key, []);
            each(&Change { family: Family::DedupeGroup, key: &key, value: Some(&value) })?;
            count += 1;
        }
        Ok(())
    };
    for item in store.db.prefix_iterator_cf(store.cf(CF_DEDUPE), prefix) {
        let (key, value) = item.map_err(|e| store.db_err(e))?;
        if !key.starts_with(&prefix) {
            break;
        }
        let seen = super::decode_seen(&value)
            .ok_or_else(|| store.corrupt("dedupe key", partition, CodecError::Truncated))?;
        group.add(&key[4..], seen.0);
        if group.len() >= SNAPSHOT_GROUP_KEYS {
            publish_group(&mut group, &mut index)?;
        }
    }
    publish_group(&mut group, &mut index)?;
    store.write_raw(index)?;
    each(&Change { family: Family::Progress, key: &progress_key, value: Some(&progress) })?;
    Ok(count + 1)
}

/// The progress a change records, if it is a partition's progress: the
/// last change of each batch the processor staged, so the state up to it
/// is the state as of its offset.
pub fn progress_of(change: &Change<'_>) -> Option<super::Progress> {
    change.value.filter(|_| is_progress(change)).and_then(|v| super::decode_progress(v).ok())
}

/// The progress key of a partition, as captured (to tell it from others).
pub fn is_progress(change: &Change<'_>) -> bool {
    change.family == Family::Progress && change.key.get(4..) == Some(PROGRESS)
}

/// The key of a partition's reset (see [`Family::Reset`]).
const RESET: &[u8] = b"reset";

/// Whether a change is a partition's reset: the state is what follows it.
/// Its value is the progress of the snapshot it starts (for reading the
/// log by hand).
pub fn is_reset(change: &Change<'_>) -> bool {
    change.family == Family::Reset
}

/// A progress record's progress and owner (see [`progress_of`]).
pub fn stamped_of(change: &Change<'_>) -> Option<super::owner::Stamped> {
    change.value.filter(|_| is_progress(change)).and_then(|v| super::owner::decode(v).ok())
}

/// A change as writes (a put, or a delete for a tombstone; a reset deletes
/// the whole partition) in `batch`.
fn stage(store: &Store, batch: &mut WriteBatch, change: &Change<'_>) -> Result<(), StoreError> {
    if change.family == Family::Reset {
        if let Some(partition) = change.partition() {
            store.stage_drop_partition(batch, partition);
        }
        return Ok(());
    }
    if change.family == Family::DedupeGroup {
        return dedupe_groups::stage(store, batch, change.key, change.value)
            .map_err(|e| store.corrupt("changelog dedupe group", change.partition().unwrap_or(u32::MAX), e));
    }
    let cf = store.cf(change.family.column_family());
    match change.value {
        Some(value) => batch.put_cf(cf, change.key, value),
        None => batch.delete_cf(cf, change.key),
    }
    Ok(())
}

const STANDBY_POSITION: &[u8] = b"standby_position";

/// A standby's copy of a partition, as it reads the changelog: a batch's
/// changes are kept until its progress record arrives, then held back
/// until the next batch shows it committed (see `segments`), or the
/// group's committed offset is where it ends (an owner with no more
/// input writes no next batch). A batch is written with the changelog
/// offset to read on from, in one write, so a standby's state is always
/// the owner's state as of some committed batch. A snapshot (see
/// [`snapshot`]) is the exception: written in parts as it is read.
pub struct TailBatch {
    /// Each batch with the position to read on from once it is written.
    segments: Segments<WriteBatch>,
    /// A reset came since the last progress record: the batch being read
    /// is a snapshot.
    in_snapshot: bool,
    /// A snapshot's bytes written at a time.
    part_bytes: usize,
}

impl Default for TailBatch {
    fn default() -> Self {
        TailBatch::with_part_bytes(RESTORE_BATCH_BYTES)
    }
}

impl TailBatch {
    /// A copy that writes a snapshot `part_bytes` at a time.
    pub fn with_part_bytes(part_bytes: usize) -> TailBatch {
        TailBatch { segments: Segments::default(), in_snapshot: false, part_bytes }
    }

    /// Stages a change in the batch being read.
    pub fn add(&mut self, store: &Store, change: &Change<'_>) -> Result<(), StoreError> {
        self.in_snapshot |= is_reset(change);
        stage(store, self.segments.open(), change)
    }

    /// Whether the batch being read is a snapshot grown to a part's size
    /// (see [`TailBatch::write_part`]).
    pub fn part_due(&mut self) -> bool {
        self.in_snapshot && self.segments.open().size_in_bytes() >= self.part_bytes
    }

    /// Writes the snapshot read so far. A snapshot may be a partition's
    /// whole state, and is never aborted (it is published outside
    /// transactions): it is written as it grows, not held in memory. Its
    /// reset, written with the first part, removes the copy's position and
    /// progress, so a copy cut short in a snapshot is never taken for
    /// state; the batch held back goes too, which the reset replaces.
    pub fn write_part(&mut self, store: &Store) -> Result<(), StoreError> {
        drop(self.segments.take_held());
        store.write_raw(std::mem::take(self.segments.open()))
    }

    /// Ends the batch being read with its progress record (`progress`, its
    /// value; the record read on from is `at`): writes the batch held
    /// before it unless this one shows it never committed, and holds this
    /// one. Returns whether the held batch was left out.
    pub fn end(
        &mut self,
        store: &Store,
        partition: u32,
        progress: &[u8],
        at: CopyPosition,
    ) -> Result<bool, StoreError> {
        put_copy_position(store, self.segments.open(), partition, at);
        self.in_snapshot = false;
        let dropped = self.segments.dropped;
        if let Some(batch) = self.segments.end(progress) {
            store.write_raw(batch)?;
        }
        Ok(self.segments.dropped > dropped)
    }

    /// Where the inputs of the batch held back end, if one is held.
    pub fn held_end(&self) -> Option<u64> {
        self.segments.held_end()
    }

    /// Writes the batch held back if the group's committed offset for the
    /// partition, `committed`, is where it ends: its transaction, or one
    /// that processed the same inputs from the same state (the same
    /// changes), committed. Returns whether it was written.
    pub fn confirm(&mut self, store: &Store, committed: u64) -> Result<bool, StoreError> {
        if self.held_end() != Some(committed) {
            return Ok(false);
        }
        match self.segments.take_held() {
            Some(batch) => store.write_raw(batch).map(|()| true),
            None => Ok(false),
        }
    }

    /// Drops everything read and not written.
    pub fn clear(&mut self) {
        *self = TailBatch::with_part_bytes(self.part_bytes);
    }
}

/// Puts a copy's position to read on from (see [`CopyPosition`]) in the
/// batch that brings the copy there.
pub(crate) fn put_copy_position(store: &Store, batch: &mut WriteBatch, partition: u32, at: CopyPosition) {
    let key = super::partition_key(partition, STANDBY_POSITION);
    let mut value = at.position.to_be_bytes().to_vec();
    if let Some(written) = at.written_at_ms {
        value.extend_from_slice(&written.to_be_bytes());
    }
    batch.put_cf(store.cf(CF_META), key, value);
}

/// Where a standby's copy continues in the changelog (just past the
/// progress record of the last batch it wrote), and when that record was
/// written (its message's timestamp, Unix ms; none if unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPosition {
    pub position: i64,
    pub written_at_ms: Option<i64>,
}

/// The standby copy's [`CopyPosition`], if the partition's state is such
/// a copy.
pub fn standby_position(store: &Store, partition: u32) -> Result<Option<CopyPosition>, StoreError> {
    let key = super::partition_key(partition, STANDBY_POSITION);
    let value = store.db.get_cf(store.cf(CF_META), key).map_err(|e| store.db_err(e))?;
    Ok(value.and_then(|v| {
        Some(CopyPosition {
            position: i64::from_be_bytes(word(&v, 0)?),
            written_at_ms: word(&v, 1).map(i64::from_be_bytes),
        })
    }))
}

/// How long after the record it continues from a copy (or an owner's own
/// state, [`OwnerPosition`]) may catch up on the changelog's tail: well
/// within `delete.retention.ms` (a day by default), so that every
/// tombstone written since is still in the log. Everything after the
/// record was written after it; tombstones go no sooner than
/// `delete.retention.ms` after they were written.
pub const CATCH_UP_WITHIN_MS: i64 = 60 * 60 * 1000;

/// Whether state continuing from a record written at `written_at_ms` may
/// catch up at `now_ms` (see [`CATCH_UP_WITHIN_MS`]); not if the time is
/// unknown or in the future (a clock moved back).
pub fn may_catch_up(written_at_ms: Option<i64>, now_ms: i64) -> bool {
    written_at_ms.is_some_and(|at| (0..CATCH_UP_WITHIN_MS).contains(&now_ms.saturating_sub(at)))
}

const OWNER_POSITION: &[u8] = b"owner_position";

/// Where this instance's own state of a partition sits in the changelog:
/// the state as of the progress `next_offset` is the changelog up to
/// `position` (just past the progress record its transaction committed),
/// recorded at `at_ms` (Unix ms). A former owner given the partition back
/// catches up from there, as a standby's copy does, instead of restoring
/// it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerPosition {
    pub next_offset: u64,
    pub position: i64,
    pub at_ms: i64,
}

impl super::LedgerBatch<'_> {
    /// Records where the partition's state, as a committed transaction
    /// left it, sits in the changelog (see [`OwnerPosition`]).
    pub fn set_owner_position(&mut self, partition: u32, at: OwnerPosition) {
        let mut value = Vec::with_capacity(24);
        value.extend_from_slice(&at.next_offset.to_be_bytes());
        value.extend_from_slice(&at.position.to_be_bytes());
        value.extend_from_slice(&at.at_ms.to_be_bytes());
        self.batch.put_cf(self.store.cf(CF_META), super::partition_key(partition, OWNER_POSITION), value);
    }
}

/// The partition's [`OwnerPosition`], if recorded (and readable).
pub fn owner_position(store: &Store, partition: u32) -> Result<Option<OwnerPosition>, StoreError> {
    let key = super::partition_key(partition, OWNER_POSITION);
    let value = store.db.get_cf(store.cf(CF_META), key).map_err(|e| store.db_err(e))?;
    Ok(value.and_then(|v| {
        Some(OwnerPosition {
            next_offset: u64::from_be_bytes(word(&v, 0)?),
            position: i64::from_be_bytes(word(&v, 1)?),
            at_ms: i64::from_be_bytes(word(&v, 2)?),
        })
    }))
}

/// The `i`-th 8-byte word of a stored value, if it has one.
fn word(value: &[u8], i: usize) -> Option<[u8; 8]> {
    value.get(i * 8..i * 8 + 8)?.try_into().ok()
}

/// Makes a standby's copy the partition's own state (its owner took it
/// over): it no longer follows the changelog.
pub fn forget_standby_position(store: &Store, partition: u32) -> Result<(), StoreError> {
    let key = super::partition_key(partition, STANDBY_POSITION);
    store.db.delete_cf_opt(store.cf(CF_META), key, &store.write).map_err(|e| store.db_err(e))
}
