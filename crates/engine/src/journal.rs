//! The transaction journal: which Kafka transactions this instance opened,
//! and whether each committed or aborted.
//!
//! Every transaction gets an id, `<instance>:<epoch>:<sequence>`, stamped on
//! each accrual, dead letter and derived event it publishes (header
//! `accrual.txn`; not on changelog records, whose readers go by progress
//! records; also set as the metadata of the offsets it commits, for
//! operators, where the broker keeps it). The epoch grows at every start
//! and every new producer, and is at least the start's Unix time in
//! seconds, so that a state directory lost and started afresh does not
//! repeat the ids its predecessor gave. An entry is written
//! `open` in the same RocksDB batch as the state it publishes. That batch
//! also records the outcome of every earlier transaction already known;
//! the one still committing on its own thread (the previous cycle's) is
//! recorded with the next batch. So at most two entries are open when the
//! process dies, and at the next start, after `init_transactions` has
//! completed or aborted what was in flight, each is decided from the
//! group's committed offsets. That is sound because:
//! - our transactions commit one at a time, in order, and each moves every
//!   partition it names past where any earlier one left it;
//! - a transaction that failed is recorded `aborted` before any later one
//!   begins, and before its partitions can move to another instance (the
//!   commit's thread records it before the rebalance callback may go on).
//!
//! So an entry still open either committed, and every partition's committed
//! offset has reached the offset it carried, or it did not and nothing
//! after it did, and some partition's has not. So the engine always knows
//! which of its transactions committed, and a reader on a broker that does
//! not filter aborted transactions can tell an extra copy from a committed
//! one.

use accrual_core::state::codec::{CodecError, Reader, Writer};
use accrual_store::{LedgerBatch, Store, StoreError};
use std::fmt;

const EPOCH: &[u8] = b"epoch";
const INSTANCE: &[u8] = b"instance";
const PREFIX: &[u8] = b"txn/";
const FORMAT: u8 = 1;
/// Entries kept, across every epoch: older ones are dropped as new ones
/// are written, and at each start.
const KEEP: u64 = 1_000_000;
/// Entries read at a start to find those a crash left open: at most two
/// are ever open, and they are always the newest two written (a new entry
/// is written only once every earlier one but the one still committing is
/// decided, and a start decides all before writing any).
const OPEN_SCAN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId {
    pub instance: String,
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.instance, self.epoch, self.seq)
    }
}

impl TxnId {
    pub fn parse(text: &str) -> Option<TxnId> {
        let mut parts = text.rsplitn(3, ':');
        let seq = parts.next()?.parse().ok()?;
        let epoch = parts.next()?.parse().ok()?;
        let instance = parts.next()?.to_string();
        Some(TxnId { instance, epoch, seq })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Open,
    Committed,
    Aborted,
}

impl TxnStatus {
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Open => "open",
            TxnStatus::Committed => "committed",
            TxnStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub epoch: u64,
    pub seq: u64,
    pub status: TxnStatus,
    /// The input offsets the transaction commits: (partition, next offset).
    pub offsets: Vec<(u32, u64)>,
}

fn key(epoch: u64, seq: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode(status: TxnStatus, offsets: &[(u32, u64)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.u8(status as u8);
    w.u64(offsets.len() as u64);
    for &(p, o) in offsets {
        w.u64(u64::from(p));
        w.u64(o);
    }
    w.buf
}

fn decode(name: &[u8], value: &[u8]) -> Result<JournalEntry, CodecError> {
    let ids = name.get(..16).ok_or(CodecError::Truncated)?;
    let epoch = u64::from_be_bytes(ids[..8].try_into().map_err(|_| CodecError::Truncated)?);
    let seq = u64::from_be_bytes(ids[8..16].try_into().map_err(|_| CodecError::Truncated)?);
    let mut r = Reader::new(value);
    r.version(FORMAT)?;
    let status = match r.u8()? {
        0 => TxnStatus::Open,
        1 => TxnStatus::Committed,
        2 => TxnStatus::Aborted,
        _ => return Err(CodecError::Corrupt("transaction status")),
    };
    let n = r.count()?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        offsets.push((r.u32()?, r.u64()?));
    }
    Ok(JournalEntry { epoch, seq, status, offsets })
}

/// Hands out transaction ids for this run and records their fate.
pub struct Journal {
    instance: String,
    epoch: u64,
    next_seq: u64,
    keep: u64,
}

impl Journal {
    /// Starts a new epoch (persisted at once).
    pub fn start(store: &Store, instance: &str) -> Result<Journal, StoreError> {
        Self::start_keeping(store, instance, KEEP)
    }

    /// [`Journal::start`], keeping `keep` entries (at least [`OPEN_SCAN`]).
    pub fn start_keeping(store: &Store, instance: &str, keep: u64) -> Result<Journal, StoreError> {
        let unix_seconds = (accrual_core::time::wall_clock().0 / 1000).max(0) as u64;
        Self::start_at(store, instance, keep, unix_seconds)
    }

    /// [`Journal::start_keeping`] at `unix_seconds`: the new epoch is the
    /// stored one's next, or that time if later. So a state directory lost
    /// and started afresh (restored from the changelog) does not hand out
    /// the ids the lost one did, unless that one moved to a new epoch more
    /// often than once a second since its last start.
    fn start_at(store: &Store, instance: &str, keep: u64, unix_seconds: u64) -> Result<Journal, StoreError> {
        let keep = keep.max(OPEN_SCAN as u64);
        let mut journal = Journal { instance: instance.to_string(), epoch: 0, next_seq: 0, keep };
        journal.epoch = Self::stored_epoch(store)?.max(unix_seconds.saturating_sub(1));
        let mut batch = store.batch();
        batch.put_meta(INSTANCE, instance.as_bytes());
        // Every start is a new epoch: prune across epochs, or a node
        // restarted often would keep every entry it ever wrote.
        if let Some(oldest_kept) = store.meta_nth_newest(PREFIX, keep as usize)? {
            let mut upto = PREFIX.to_vec();
            upto.extend_from_slice(&oldest_kept);
            batch.delete_meta_range(&key(0, 0), &upto);
        }
        store.commit(batch)?;
        journal.new_epoch(store)?;
        Ok(journal)
    }

    /// The instance that last ran on this state.
    pub fn instance(store: &Store) -> Result<Option<String>, StoreError> {
        Ok(store.meta(INSTANCE)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn stored_epoch(store: &Store) -> Result<u64, StoreError> {
        Ok(store.meta(EPOCH)?.and_then(|v| v.try_into().ok().map(u64::from_be_bytes)).unwrap_or(0))
    }

    /// Moves to a new epoch, e.g. with a new producer.
    pub fn new_epoch(&mut self, store: &Store) -> Result<(), StoreError> {
        self.epoch += 1;
        self.next_seq = 0;
        let mut batch = store.batch();
        batch.put_meta(EPOCH, &self.epoch.to_be_bytes());
        store.commit(batch)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The id [`Journal::open`] will give next.
    fn next_id(&self) -> TxnId {
        TxnId { instance: self.instance.clone(), epoch: self.epoch, seq: self.next_seq }
    }

    /// The next transaction's id, recorded `open` in `batch`.
    pub fn open(&mut self, batch: &mut LedgerBatch<'_>, offsets: &[(u32, u64)]) -> TxnId {
        let id = self.next_id();
        self.next_seq += 1;
        batch.put_meta(&key(id.epoch, id.seq), &encode(TxnStatus::Open, offsets));
        if id.seq >= self.keep {
            batch.delete_meta_range(&key(0, 0), &key(id.epoch, id.seq - self.keep));
        }
        id
    }

    /// Records a transaction's outcome.
    pub fn mark(batch: &mut LedgerBatch<'_>, id: &TxnId, status: TxnStatus, offsets: &[(u32, u64)]) {
        batch.put_meta(&key(id.epoch, id.seq), &encode(status, offsets));
    }

    /// Every entry kept, oldest first.
    pub fn entries(store: &Store) -> Result<Vec<JournalEntry>, StoreError> {
        Self::decode_all(store, store.meta_scan(PREFIX)?)
    }

    /// The entries a crash left open (see [`OPEN_SCAN`]), oldest first.
    pub fn open_entries(store: &Store) -> Result<Vec<JournalEntry>, StoreError> {
        let mut newest = store.meta_scan_newest(PREFIX, OPEN_SCAN)?;
        newest.reverse();
        let mut entries = Self::decode_all(store, newest)?;
        entries.retain(|e| e.status == TxnStatus::Open);
        Ok(entries)
    }

    fn decode_all(
        store: &Store,
        stored: Vec<accrual_store::KeyValue>,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        stored
            .iter()
            .map(|(name, value)| {
                decode(name, value).map_err(|source| StoreError::Corrupt {
                    path: store.path().to_path_buf(),
                    what: "transaction journal entry",
                    partition: u32::MAX,
                    source,
                })
            })
            .collect()
    }

    /// Decides entries left `open` by a crash. `committed_offset` gives a
    /// partition's committed offset in the group: an entry committed if and
    /// only if every partition's has reached the offset it carried (see the
    /// module docs). Returns the decided entries, oldest first.
    pub fn resolve_open(
        &self,
        store: &Store,
        committed_offset: impl Fn(u32) -> Option<u64>,
    ) -> Result<Vec<(TxnId, TxnStatus)>, StoreError> {
        let mut decided = Vec::new();
        let mut batch = store.batch();
        for entry in Self::open_entries(store)? {
            let reached = entry.offsets.iter().all(|&(p, x)| committed_offset(p).is_some_and(|y| y >= x));
            let status = if reached { TxnStatus::Committed } else { TxnStatus::Aborted };
            let id = TxnId { instance: self.instance.clone(), epoch: entry.epoch, seq: entry.seq };
            Self::mark(&mut batch, &id, status, &entry.offsets);
            decided.push((id, status));
        }
        if !decided.is_empty() {
            store.commit(batch)?;
        }
        Ok(decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_store::StoreOptions;

    /// Restarted many times, a few transactions each, and crashed with
    /// two open at the end: the journal never holds more than it keeps
    /// (plus the epoch in progress), and the open ones survive to be decided.
    #[test]
    fn the_journal_stays_bounded_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let keep = 100;
        for restart in 0..300u64 {
            let mut j = Journal::start_at(&store, "node-1", keep, 0).unwrap();
            assert!(j.resolve_open(&store, |_| Some(u64::MAX)).unwrap().len() <= 2);
            for i in 0..7 {
                let mut batch = store.batch();
                let id = j.open(&mut batch, &[(0, restart * 7 + i)]);
                store.commit(batch).unwrap();
                // A crash leaves the last two open.
                if i < 5 {
                    let mut batch = store.batch();
                    Journal::mark(&mut batch, &id, TxnStatus::Committed, &[(0, restart * 7 + i)]);
                    store.commit(batch).unwrap();
                }
            }
            let n = Journal::entries(&store).unwrap().len() as u64;
            assert!(n <= keep + 7, "restart {restart}: {n} entries");
        }
        assert_eq!(Journal::open_entries(&store).unwrap().len(), 2);
        let j = Journal::start_at(&store, "node-1", keep, 0).unwrap();
        assert_eq!(Journal::open_entries(&store).unwrap().len(), 2, "pruning kept the open ones");
        let decided = j.resolve_open(&store, |_| Some(0)).unwrap();
        assert_eq!(decided.len(), 2);
        let newest = Journal::entries(&store).unwrap();
        assert_eq!(newest.last().map(|e| (e.epoch, e.seq)), Some((300, 6)));
        assert!(newest.len() as u64 <= keep);
    }

    #[test]
    fn an_epoch_is_at_least_its_start_time_so_a_fresh_directory_does_not_repeat_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let j = Journal::start_at(&store, "node-1", KEEP, 1_000).unwrap();
        assert_eq!(j.epoch(), 1_000);
        // Started again within the same second, or with the clock set back.
        assert_eq!(Journal::start_at(&store, "node-1", KEEP, 1_000).unwrap().epoch(), 1_001);
        assert_eq!(Journal::start_at(&store, "node-1", KEEP, 5).unwrap().epoch(), 1_002);
        assert_eq!(Journal::start_at(&store, "node-1", KEEP, 2_000).unwrap().epoch(), 2_000);
        // The directory is lost: a fresh one, started later, goes on past it.
        let fresh = tempfile::tempdir().unwrap();
        let store = Store::open(fresh.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let later = Journal::start(&store, "node-1").unwrap();
        assert!(later.epoch() > 1_700_000_000, "{}", later.epoch());
    }

    #[test]
    fn ids_epochs_and_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut j = Journal::start_at(&store, "node-1", KEEP, 0).unwrap();
        assert_eq!(j.epoch(), 1);
        let mut batch = store.batch();
        let a = j.open(&mut batch, &[(0, 10)]);
        let b = j.open(&mut batch, &[(1, 5), (2, 7)]);
        let c = j.open(&mut batch, &[(3, 1)]);
        store.commit(batch).unwrap();
        assert_eq!(a.to_string(), "node-1:1:0");
        assert_eq!(
            TxnId::parse("my:node:7:42"),
            Some(TxnId { instance: "my:node".into(), epoch: 7, seq: 42 })
        );
        let mut batch = store.batch();
        Journal::mark(&mut batch, &a, TxnStatus::Committed, &[(0, 10)]);
        store.commit(batch).unwrap();

        // Restart: a new epoch. c is the newest open entry and the group has
        // reached its offset on partition 3: it committed; b, older, did not.
        let j2 = Journal::start_at(&store, "node-1", KEEP, 0).unwrap();
        assert_eq!(j2.epoch(), 2);
        let decided = j2
            .resolve_open(&store, |p| match p {
                3 => Some(1),
                1 => Some(5),
                _ => Some(0),
            })
            .unwrap();
        assert_eq!(decided, vec![(b.clone(), TxnStatus::Aborted), (c.clone(), TxnStatus::Committed)]);
        let statuses: Vec<_> = Journal::entries(&store).unwrap().iter().map(|e| e.status).collect();
        assert_eq!(statuses, vec![TxnStatus::Committed, TxnStatus::Aborted, TxnStatus::Committed]);

        // An open entry whose offsets the group has not reached never committed.
        let mut j3 = Journal::start(&store, "node-1").unwrap();
        let mut batch = store.batch();
        let d = j3.open(&mut batch, &[(0, 20), (1, 9)]);
        store.commit(batch).unwrap();
        let decided = j3.resolve_open(&store, |p| Some(if p == 0 { 20 } else { 8 })).unwrap();
        assert_eq!(decided, vec![(d, TxnStatus::Aborted)]);

        // A crash while the previous transaction committed and the next one
        // was written: the older committed (its offsets were reached), the
        // newer did not, though it shares partition 0 with it.
        let mut j4 = Journal::start(&store, "node-1").unwrap();
        let mut batch = store.batch();
        let e = j4.open(&mut batch, &[(0, 30), (1, 12)]);
        store.commit(batch).unwrap();
        let mut batch = store.batch();
        let f = j4.open(&mut batch, &[(0, 41), (2, 3)]);
        store.commit(batch).unwrap();
        let committed = |p| match p {
            0 => Some(30),
            1 => Some(12),
            _ => None,
        };
        let decided = j4.resolve_open(&store, committed).unwrap();
        assert_eq!(decided, vec![(e.clone(), TxnStatus::Committed), (f.clone(), TxnStatus::Aborted)]);
        // Both committed: both decided so.
        let mut batch = store.batch();
        let g = j4.open(&mut batch, &[(0, 50)]);
        let h = j4.open(&mut batch, &[(0, 60), (1, 13)]);
        store.commit(batch).unwrap();
        let decided = j4.resolve_open(&store, |p| Some(if p == 0 { 60 } else { 13 })).unwrap();
        assert_eq!(decided, vec![(g, TxnStatus::Committed), (h, TxnStatus::Committed)]);
        assert!(Journal::entries(&store).unwrap().iter().all(|e| e.status != TxnStatus::Open));
    }
}
