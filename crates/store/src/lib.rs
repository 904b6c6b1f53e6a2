//! The RocksDB ledger: account states, dedupe keys, the outbox and
//! per-partition progress, each in its own column family, every key
//! prefixed by the input partition so one partition's state can be dropped
//! or restored alone. A batch of work is committed as ONE `WriteBatch`.
//!
//! Layout (partition as 4 big-endian bytes, offsets as 8):
//! - `accounts`: partition ++ account id -> [`AccountState`](accrual_core::state::AccountState) (versioned)
//! - `purchases`: partition ++ account id length ++ account id ++ sequence
//!   number -> one retained purchase (see `accounts.rs`)
//! - `dedupe`:   partition ++ event id -> event time first seen
//! - `outbox`:   partition ++ the input offset a cycle started from -> the
//!   records its inputs publish, until committed (see `engine::outbox`)
//! - `timers`:   partition ++ due time ++ account id -> (): when an account
//!   next needs attention without an event of its own
//! - `meta`:     partition ++ "progress" -> next input offset, stream time;
//!   and engine-wide keys under the prefix FF FF FF FF (not a valid Kafka
//!   partition): "rules_version", and whatever the engine keeps there (the
//!   transaction journal).

mod accounts;
mod batch;
pub mod changelog;
pub mod compare;
mod dedupe_groups;
mod ledger;
pub mod owner;
mod segments;

pub use accrual_core::pipeline::Progress;
pub use batch::{LedgerBatch, Staged};

use accrual_core::state::codec::{CodecError, Reader};
use accrual_core::time::Timestamp;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions, compaction_filter::Decision,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const CF_ACCOUNTS: &str = "accounts";
const CF_DEDUPE: &str = "dedupe";
const CF_OUTBOX: &str = "outbox";
const CF_META: &str = "meta";
const CF_TIMERS: &str = "timers";
const CF_PURCHASES: &str = "purchases";
/// Every column family, in the order they are opened.
const FAMILIES: [&str; 6] = [CF_ACCOUNTS, CF_PURCHASES, CF_DEDUPE, CF_OUTBOX, CF_META, CF_TIMERS];
const PROGRESS: &[u8] = b"progress";
const RULES_VERSION: &[u8] = b"rules_version";
/// Prefix of engine-wide meta keys: no Kafka partition is 0xFFFFFFFF.
const GLOBAL: [u8; 4] = [0xff; 4];

/// The keys of `partition`, from (inclusive) and to (exclusive); none for
/// the engine-wide keys' prefix.
fn partition_range(partition: u32) -> Option<(Vec<u8>, Vec<u8>)> {
    if partition == u32::MAX {
        return None;
    }
    Some((partition.to_be_bytes().to_vec(), (partition + 1).to_be_bytes().to_vec()))
}

fn global_key(name: &[u8]) -> Vec<u8> {
    let mut key = GLOBAL.to_vec();
    key.extend_from_slice(name);
    key
}
const META_FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("state store {path}: no RocksDB state there")]
    Missing { path: PathBuf },
    #[error(
        "state store {path}: account {account} in partition {partition} lacks its retained purchase {seq}"
    )]
    MissingPurchase { path: PathBuf, partition: u32, account: String, seq: u64 },
    #[error("state store {path}: corrupt {what} in partition {partition}: {source}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        partition: u32,
        #[source]
        source: CodecError,
    },
}

/// Tuning of the store; see `docs/configuration.md`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync the write-ahead log on every commit (needed for exactly-once
    /// across power loss; simulate can skip it).
    pub sync: bool,
    pub block_cache_bytes: usize,
    pub write_buffer_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { sync: true, block_cache_bytes: 256 << 20, write_buffer_bytes: 64 << 20 }
    }
}

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

pub struct Store {
    db: DB,
    path: PathBuf,
    write: WriteOptions,
    /// For point lookups: one set kept, rather than RocksDB's options
    /// created and dropped (through its C API) for each of an event's
    /// lookups.
    point_read: ReadOptions,
    /// Per partition, the event time before which dedupe keys have expired:
    /// the compaction filter drops them. Lookups check expiry themselves, so
    /// when compaction runs never changes an answer.
    dedupe_horizons: Arc<RwLock<HashMap<u32, i64>>>,
}

fn partition_key(partition: u32, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + suffix.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(suffix);
    key
}

/// Timer keys sort by due time: the sign bit flipped makes i64 order
/// equal to byte order.
fn timer_key(partition: u32, due: Timestamp, account: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + account.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&((due.0 as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(account.as_bytes());
    key
}

fn decode_progress(value: &[u8]) -> Result<Progress, CodecError> {
    decode_progress_from(&mut Reader::new(value))
}

/// A progress record's progress; its owner, if any, follows (see [`owner`]).
fn decode_progress_from(r: &mut Reader<'_>) -> Result<Progress, CodecError> {
    r.version(META_FORMAT)?;
    Ok(Progress { next_offset: r.u64()?, stream_time: Timestamp(r.i64()?) })
}

fn decode_seen(value: &[u8]) -> Option<Timestamp> {
    Reader::new(value).i64().ok().map(Timestamp)
}

impl Store {
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let db_err = |source| StoreError::Db { path: path.to_path_buf(), source };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_bytes_per_sync(1 << 20);
        // A WAL file goes only once every column family has flushed what it
        // holds; the small ones (progress, journal, timers) rarely fill a
        // memtable, so without a bound WALs pile up to gigabytes, all
        // replayed at the next start. Past this size the column families
        // holding the oldest WAL are flushed.
        db_opts.set_max_total_wal_size((options.write_buffer_bytes as u64).saturating_mul(4).max(8 << 20));

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let cf_options = |bloom: bool| -> Result<Options, StoreError> {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // A cycle writes each partition's keys in key order (staging
            // sorts them; event ids mostly grow): each memtable insert
            // starts from where the partition's last one went instead of
            // from the skiplist's head. Not in RocksDB's C API; its options
            // string sets it.
            let mut o = Options::default()
                .get_options_from_string("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.4")
                .map_err(db_err)?;
            if bloom {
                table.set_bloom_filter(10.0, false);
                // Point lookups that find nothing (a new event id, a new
                // account) are most of them: a bloom filter over the
                // memtable answers those without searching its skiplist.
                o.set_memtable_prefix_bloom_ratio(0.05);
                o.set_memtable_whole_key_filtering(true);
            }
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(options.write_buffer_bytes);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            Ok(o)
        };
        let horizons: Arc<RwLock<HashMap<u32, i64>>> = Arc::default();
        let mut dedupe = cf_options(true)?;
        let filter_horizons = horizons.clone();
        dedupe.set_compaction_filter(
            "accrual-dedupe-expiry",
            move |_level: u32, key: &[u8], value: &[u8]| {
                let partition = key.get(..4).and_then(|p| p.try_into().ok()).map(u32::from_be_bytes);
                let horizon = partition.and_then(|p| filter_horizons.read().ok()?.get(&p).copied());
                match (horizon, decode_seen(value)) {
                    (Some(h), Some(seen)) if seen.0 < h => Decision::Remove,
                    _ => Decision::Keep,
                }
            },
        );
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_ACCOUNTS, cf_options(true)?),
            ColumnFamilyDescriptor::new(CF_PURCHASES, cf_options(false)?),
            ColumnFamilyDescriptor::new(CF_DEDUPE, dedupe),
            ColumnFamilyDescriptor::new(CF_OUTBOX, cf_options(false)?),
            ColumnFamilyDescriptor::new(CF_META, cf_options(false)?),
            ColumnFamilyDescriptor::new(CF_TIMERS, cf_options(false)?),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(db_err)?;
        let mut write = WriteOptions::default();
        write.set_sync(options.sync);
        Ok(Store {
            db,
            path: path.to_path_buf(),
            write,
            point_read: ReadOptions::default(),
            dedupe_horizons: horizons,
        })
    }

    /// Opens the store for reading while another process (a running
    /// engine) holds it: no lock, the write-ahead log replayed in memory,
    /// every write refused. For `accrual inspect`.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        // RocksDB would create the directory for its log file.
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::Missing { path: path.to_path_buf() });
        }
        let db_err = |source| StoreError::Db { path: path.to_path_buf(), source };
        // A store written before a family existed opens without it.
        let present = DB::list_cf(&Options::default(), path).map_err(db_err)?;
        let families = FAMILIES.into_iter().filter(|f| present.iter().any(|p| p == f));
        let db = DB::open_cf_for_read_only(&Options::default(), path, families, false).map_err(db_err)?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            write: WriteOptions::default(),
            point_read: ReadOptions::default(),
            dedupe_horizons: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A point lookup in family `cf`, with the store's one set of read
    /// options.
    fn lookup(&self, cf: &str, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        self.db.get_pinned_cf_opt(self.cf(cf), key, &self.point_read).map_err(|e| self.db_err(e))
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // The families are created at open; their absence is a bug. (Only a
        // read-only open of an older store may lack one, and it never writes.)
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn db_err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), source }
    }

    /// An error for bytes of this store that do not decode.
    pub fn corrupt(&self, what: &'static str, partition: u32, source: CodecError) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what, partition, source }
    }

    /// When an event id was first seen in the partition, if it is still
    /// remembered at `stream_time` under a window of `window_ms`.
    pub fn seen(
        &self,
        partition: u32,
        event_id: &str,
        stream_time: Timestamp,
        window_ms: i64,
    ) -> Result<Option<Timestamp>, StoreError> {
        let key = partition_key(partition, event_id.as_bytes());
        let Some(value) = self.lookup(CF_DEDUPE, &key)? else {
            return Ok(None);
        };
        let seen = decode_seen(&value)
            .ok_or_else(|| self.corrupt("dedupe key", partition, CodecError::Truncated))?;
        Ok((seen.0 >= stream_time.0.saturating_sub(window_ms)).then_some(seen))
    }

    pub fn progress(&self, partition: u32) -> Result<Option<Progress>, StoreError> {
        let key = partition_key(partition, PROGRESS);
        let Some(value) = self.lookup(CF_META, &key)? else {
            return Ok(None);
        };
        decode_progress(&value).map(Some).map_err(|e| self.corrupt("progress", partition, e))
    }

    /// The partition's progress and who recorded it.
    pub fn stamped_progress(&self, partition: u32) -> Result<Option<owner::Stamped>, StoreError> {
        let key = partition_key(partition, PROGRESS);
        let Some(value) = self.lookup(CF_META, &key)? else {
            return Ok(None);
        };
        owner::decode(&value).map(Some).map_err(|e| self.corrupt("progress", partition, e))
    }

    pub fn rules_version(&self) -> Result<Option<String>, StoreError> {
        Ok(self.meta(RULES_VERSION)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// An engine-wide meta value.
    pub fn meta(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_META), global_key(name)).map_err(|e| self.db_err(e))
    }

    /// Engine-wide meta entries whose name starts with `prefix`, in key order
    /// (names returned without the prefix).
    pub fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let start = global_key(prefix);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(CF_META), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if !key.starts_with(&start) {
                break;
            }
            out.push((key[start.len()..].to_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// The newest (last in key order) engine-wide meta entries whose name
    /// starts with `prefix`, at most `limit`, newest first (names without
    /// the prefix).
    pub fn meta_scan_newest(&self, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        self.meta_newest(prefix, limit, |name, value| out.push((name.to_vec(), value.to_vec())))?;
        Ok(out)
    }

    /// The name of the `n`-th newest meta entry under `prefix` (1: the
    /// newest), if there are that many; only names are read.
    pub fn meta_nth_newest(&self, prefix: &[u8], n: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let (mut seen, mut nth) = (0, None);
        self.meta_newest(prefix, n, |name, _| {
            seen += 1;
            if seen == n {
                nth = Some(name.to_vec());
            }
        })?;
        Ok(nth)
    }

    /// Visits up to `limit` meta entries under `prefix`, newest first.
    fn meta_newest(
        &self,
        prefix: &[u8],
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let start = global_key(prefix);
        // Just past every name with the prefix (whose last byte is below 0xFF).
        let mut end = start.clone();
        if let Some(last) = end.last_mut() {
            *last = last.saturating_add(1);
        }
        let mut visited = 0;
        for item in self.db.iterator_cf(self.cf(CF_META), IteratorMode::From(&end, Direction::Reverse)) {
            if visited == limit {
                break;
            }
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if key.as_ref() >= end.as_slice() {
                continue;
            }
            if !key.starts_with(&start) {
                break;
            }
            visit(&key[start.len()..], &value);
            visited += 1;
        }
        Ok(())
    }

    /// Outbox entries of a partition from `from_offset` on, in offset order.
    pub fn outbox(&self, partition: u32, from_offset: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = partition_key(partition, &from_offset.to_be_bytes());
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(CF_OUTBOX), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if key.len() != 12 || key[..4] != partition.to_be_bytes() {
                break;
            }
            let offset = u64::from_be_bytes(key[4..12].try_into().unwrap_or([0; 8]));
            out.push((offset, value.into_vec()));
        }
        Ok(out)
    }

    /// Up to `limit` accounts of a partition with a timer due by `up_to`,
    /// soonest first (then by account id).
    pub fn due_timers(
        &self,
        partition: u32,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>, StoreError> {
        let start = timer_key(partition, Timestamp(i64::MIN), "");
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(self.cf(CF_TIMERS), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, _) = item.map_err(|e| self.db_err(e))?;
            if key.len() < 12 || key[..4] != partition.to_be_bytes() {
                break;
            }
            let raw = u64::from_be_bytes(key[4..12].try_into().unwrap_or([0; 8]));
            let due = Timestamp((raw ^ (1 << 63)) as i64);
            if due > up_to || out.len() == limit {
                break;
            }
            out.push((due, String::from_utf8_lossy(&key[12..]).into_owned()));
        }
        Ok(out)
    }

    /// Compacts every column family whole, its memtable flushed first:
    /// the state as a node that has held it a while has it, each key once
    /// and no compaction owed. The benchmark's seeded state is written in
    /// one go, and without this the run measured after it paid for
    /// compacting all of it.
    pub fn compact_all(&self) {
        for cf in FAMILIES {
            self.db.compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
    }

    /// Removes everything stored for a partition.
    pub fn drop_partition(&self, partition: u32) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.stage_drop_partition(&mut batch, partition);
        self.write_raw(batch)
    }

    /// Stages removing everything stored for a partition in `batch`: what
    /// the batch puts after it stays.
    pub(crate) fn stage_drop_partition(&self, batch: &mut WriteBatch, partition: u32) {
        let Some((from, to)) = partition_range(partition) else { return };
        for cf in FAMILIES {
            batch.delete_range_cf(self.cf(cf), &from, &to);
        }
    }

    /// Writes `batch` as it is (no ledger bookkeeping), with the store's
    /// write options.
    pub(crate) fn write_raw(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db.write_opt(batch, &self.write).map_err(|e| self.db_err(e))
    }

    /// Compacts a dropped partition's key range, so its files go now rather
    /// than whenever compaction would reach them.
    pub fn reclaim_partition(&self, partition: u32) {
        let Some((from, to)) = partition_range(partition) else { return };
        for cf in FAMILIES {
            self.db.compact_range_cf(self.cf(cf), Some(&from), Some(&to));
        }
    }

    /// The partitions this store holds progress for.
    pub fn partitions(&self) -> Result<Vec<u32>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META), IteratorMode::Start) {
            let (key, _) = item.map_err(|e| self.db_err(e))?;
            if key.starts_with(&GLOBAL) {
                break; // the engine-wide keys (the journal's) sort last
            }
            if key.len() == 4 + PROGRESS.len() && &key[4..] == PROGRESS {
                out.push(u32::from_be_bytes([key[0], key[1], key[2], key[3]]));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_core::state::AccountState;

    #[test]
    fn read_only_open_sees_a_running_writers_commits_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing");
        assert!(matches!(Store::open_read_only(&missing), Err(StoreError::Missing { .. })));
        assert!(!missing.exists(), "a read-only open creates nothing");

        let writer = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut state = AccountState { watermark: Timestamp(7), ..AccountState::default() };
        let mut b = writer.batch();
        b.put_account(3, "a-9", &mut state);
        writer.commit(b).unwrap();
        // The writer still holds the lock; its commit is only in the WAL.
        let reader = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.account(3, "a-9").unwrap(), Some(state));
        let mut b = reader.batch();
        b.put_account(3, "a-10", &mut AccountState::default());
        assert!(reader.commit(b).is_err());
    }

    #[test]
    fn compacting_everything_keeps_every_account_and_leaves_nothing_in_memtables_or_level_0() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions { sync: false, write_buffer_bytes: 64 << 10, ..Default::default() };
        let store = Store::open(dir.path(), &options).unwrap();
        let state = |n: i64| AccountState { watermark: Timestamp(n), ..AccountState::default() };
        // Written twice, in small batches: several level-0 files, each
        // account in more than one of them.
        for round in 0..2 {
            for chunk in 0..20 {
                let mut b = store.batch();
                for n in chunk * 100..(chunk + 1) * 100 {
                    b.put_account(n as u32 % 4, &format!("a-{n}"), &mut state(n + round));
                }
                store.commit(b).unwrap();
            }
        }
        let accounts =
            |property: &str| store.db.property_int_value_cf(store.cf(CF_ACCOUNTS), property).unwrap();
        let (level0, in_memtable) = ("rocksdb.num-files-at-level0", "rocksdb.num-entries-active-mem-table");
        assert!(accounts(level0).unwrap_or(0) + accounts(in_memtable).unwrap_or(0) > 0);
        store.compact_all();
        assert_eq!(accounts(level0), Some(0));
        assert_eq!(accounts(in_memtable), Some(0));
        for n in 0..2000 {
            assert_eq!(store.account(n as u32 % 4, &format!("a-{n}")).unwrap(), Some(state(n + 1)), "a-{n}");
        }
    }

    #[test]
    fn write_ahead_logs_stay_bounded_when_a_small_column_family_never_fills() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions { sync: false, write_buffer_bytes: 1 << 20, ..Default::default() };
        let store = Store::open(dir.path(), &options).unwrap();
        let value = vec![7u8; 1 << 20];
        for i in 0..40u64 {
            let mut b = store.batch();
            b.put_outbox(0, i, &value);
            // Progress lives in a column family that never fills its
            // memtable: it alone would keep every WAL.
            b.set_progress(0, Progress { next_offset: i + 1, stream_time: Timestamp(0) }, 5);
            store.commit(b).unwrap();
            let mut b = store.batch();
            b.clear_outbox_below(0, i);
            store.commit(b).unwrap();
        }
        let wal_bytes = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wal_bytes() > 16 << 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(wal_bytes() <= 16 << 20, "{} bytes of WAL for 40 MiB written", wal_bytes());
        assert_eq!(store.progress(0).unwrap().map(|p| p.next_offset), Some(40));
    }

    #[test]
    fn an_unsynced_commit_is_visible_at_once_and_kept_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let mut b = store.batch();
            b.put_outbox(2, 40, b"records");
            b.set_progress(2, Progress { next_offset: 41, stream_time: Timestamp(9) }, 5);
            store.commit_unsynced(b).unwrap();
            // Readers (the next cycle, the API) see it before the sync.
            assert_eq!(store.progress(2).unwrap().map(|p| p.next_offset), Some(41));
            // Synced while another thread commits.
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| {
                    for i in 0..200u64 {
                        let mut b = store.batch();
                        b.put_outbox(3, i, b"more");
                        store.commit_unsynced(b).unwrap();
                    }
                });
                for _ in 0..20 {
                    store.sync_wal().unwrap();
                }
                writer.join().unwrap();
            });
            store.sync_wal().unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.outbox(2, 0).unwrap(), vec![(40, b"records".to_vec())]);
        assert_eq!(store.outbox(3, 0).unwrap().len(), 200);
    }

    #[test]
    fn batch_commits_atomically_and_partitions_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut state = AccountState { watermark: Timestamp(42), ..AccountState::default() };
        let mut b = store.batch();
        b.put_account(0, "a-1", &mut state);
        b.put_account(1, "a-1", &mut AccountState::default());
        b.put_seen(0, "e-1", Timestamp(1_000));
        b.put_outbox(0, 7, b"records");
        b.set_progress(0, Progress { next_offset: 8, stream_time: Timestamp(1_000) }, 500);
        store.commit(b).unwrap();

        assert_eq!(store.account(0, "a-1").unwrap(), Some(state));
        assert_eq!(store.account(1, "a-1").unwrap(), Some(AccountState::default()));
        assert_eq!(store.account(0, "nobody").unwrap(), None);
        assert_eq!(store.seen(0, "e-1", Timestamp(1_400), 500).unwrap(), Some(Timestamp(1_000)));
        assert_eq!(store.seen(0, "e-1", Timestamp(1_501), 500).unwrap(), None, "expired");
        assert_eq!(store.seen(1, "e-1", Timestamp(1_000), 500).unwrap(), None);
        assert_eq!(store.outbox(0, 0).unwrap(), vec![(7, b"records".to_vec())]);
        assert_eq!(store.outbox(0, 8).unwrap(), vec![]);
        assert_eq!(
            store.progress(0).unwrap(),
            Some(Progress { next_offset: 8, stream_time: Timestamp(1_000) })
        );

        let mut b = store.batch();
        b.clear_outbox_below(0, 8);
        store.commit(b).unwrap();
        assert_eq!(store.outbox(0, 0).unwrap(), vec![]);

        store.drop_partition(0).unwrap();
        assert_eq!(store.account(0, "a-1").unwrap(), None);
        assert_eq!(store.progress(0).unwrap(), None);
        assert!(store.account(1, "a-1").unwrap().is_some());
    }

    #[test]
    fn appended_batches_commit_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut first = store.batch();
        first.put_seen(0, "e-1", Timestamp(10));
        first.put_account(0, "a-1", &mut AccountState { watermark: Timestamp(1), ..Default::default() });
        first.set_progress(0, Progress { next_offset: 3, stream_time: Timestamp(10) }, 5);
        let mut second = store.batch();
        second.put_seen(1, "e-2", Timestamp(20));
        second.put_outbox(1, 4, b"two");
        second.set_progress(1, Progress { next_offset: 5, stream_time: Timestamp(20) }, 5);
        let mut third = store.batch();
        third.put_meta(b"third", b"3");
        let second_only = second.batch.data().to_vec();
        let second = store.batch_from(vec![store.batch().into_staged(), second.into_staged()]);
        assert_eq!(second.batch.data(), &second_only[..], "a batch alone is taken as it is");
        let mut empty = store.batch_from(vec![
            first.into_staged(),
            store.batch().into_staged(),
            second.into_staged(),
            third.into_staged(),
        ]);
        // The cycle's own changes go after the staged ones.
        empty.put_meta(b"fourth", b"4");
        assert_eq!(empty.batch.len(), 8, "every record of every batch");
        empty.horizons.sort_unstable();
        assert_eq!(empty.horizons, vec![(0, 5), (1, 15)]);
        assert!(store.batch_from(Vec::new()).is_empty());
        store.commit(empty).unwrap();
        assert_eq!(store.meta(b"third").unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.meta(b"fourth").unwrap(), Some(b"4".to_vec()));
        assert_eq!(store.seen(0, "e-1", Timestamp(10), 5).unwrap(), Some(Timestamp(10)));
        assert_eq!(store.seen(1, "e-2", Timestamp(20), 5).unwrap(), Some(Timestamp(20)));
        assert_eq!(store.account(0, "a-1").unwrap().map(|s| s.watermark), Some(Timestamp(1)));
        assert_eq!(store.outbox(1, 0).unwrap(), vec![(4, b"two".to_vec())]);
        assert_eq!(store.progress(0).unwrap().map(|p| p.next_offset), Some(3));
        assert_eq!(store.progress(1).unwrap().map(|p| p.next_offset), Some(5));
    }

    #[test]
    fn timers_come_back_in_due_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut b = store.batch();
        b.set_timer(1, "late", None, Some(Timestamp(300)));
        b.set_timer(1, "early", None, Some(Timestamp(-5)));
        b.set_timer(1, "moved", None, Some(Timestamp(100)));
        b.set_timer(2, "other", None, Some(Timestamp(1)));
        store.commit(b).unwrap();
        let mut b = store.batch();
        b.set_timer(1, "moved", Some(Timestamp(100)), Some(Timestamp(200)));
        store.commit(b).unwrap();
        let due = store.due_timers(1, Timestamp(250), 10).unwrap();
        assert_eq!(due, vec![(Timestamp(-5), "early".to_string()), (Timestamp(200), "moved".to_string())]);
        assert_eq!(store.due_timers(1, Timestamp(1000), 10).unwrap().len(), 3);
        assert_eq!(
            store.due_timers(1, Timestamp(1000), 1).unwrap(),
            vec![(Timestamp(-5), "early".to_string())]
        );
        assert_eq!(store.due_timers(2, Timestamp(0), 10).unwrap(), vec![]);
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let mut b = store.batch();
            b.put_account(3, "acc", &mut AccountState::default());
            b.set_rules_version("abc");
            store.commit(b).unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.account(3, "acc").unwrap().is_some());
        assert_eq!(store.rules_version().unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn global_meta_is_apart_from_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let mut b = store.batch();
        b.put_meta(b"txn/1", b"a");
        b.put_meta(b"txn/2", b"b");
        b.put_meta(b"tx", b"other");
        b.set_progress(0x7fff_ffff, Progress::default(), 1);
        store.commit(b).unwrap();
        assert_eq!(
            store.meta_scan(b"txn/").unwrap(),
            vec![(b"1".to_vec(), b"a".to_vec()), (b"2".to_vec(), b"b".to_vec())]
        );
        store.drop_partition(0x7fff_ffff).unwrap();
        assert_eq!(store.meta(b"tx").unwrap(), Some(b"other".to_vec()));
        let mut b = store.batch();
        b.delete_meta_range(b"txn/1", b"txn/2");
        store.commit(b).unwrap();
        assert_eq!(store.meta_scan(b"txn/").unwrap().len(), 1);
    }

    #[test]
    fn partitions_are_listed_apart_from_global_keys_and_dropping_one_takes_its_owner_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let at = changelog::OwnerPosition { next_offset: 42, position: 1_000, at_ms: 1_700_000_000_000 };
        let mut b = store.batch();
        for p in [1, 5] {
            b.set_progress(p, Progress::default(), 1);
            b.set_owner_position(p, at);
        }
        b.put_meta(b"txn/1", b"a");
        store.commit(b).unwrap();
        assert_eq!(store.partitions().unwrap(), vec![1, 5]);
        assert_eq!(changelog::owner_position(&store, 5).unwrap(), Some(at));
        assert_eq!(changelog::owner_position(&store, 2).unwrap(), None);
        store.drop_partition(5).unwrap();
        store.reclaim_partition(5);
        assert_eq!(store.partitions().unwrap(), vec![1]);
        assert_eq!(changelog::owner_position(&store, 5).unwrap(), None);
        assert_eq!(changelog::owner_position(&store, 1).unwrap(), Some(at));
        assert_eq!(store.meta(b"txn/1").unwrap(), Some(b"a".to_vec()));
    }

    #[test]
    fn a_copys_position_keeps_when_its_record_was_written_and_only_recent_ones_may_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let at = changelog::CopyPosition { position: 77, written_at_ms: Some(1_700_000_000_000) };
        let mut batch = rocksdb::WriteBatch::default();
        changelog::put_copy_position(&store, &mut batch, 3, at);
        store.write_raw(batch).unwrap();
        assert_eq!(changelog::standby_position(&store, 3).unwrap(), Some(at));
        // Written before record times were kept: the time is unknown.
        let unknown = changelog::CopyPosition { position: 78, written_at_ms: None };
        let mut batch = rocksdb::WriteBatch::default();
        changelog::put_copy_position(&store, &mut batch, 3, unknown);
        store.write_raw(batch).unwrap();
        assert_eq!(changelog::standby_position(&store, 3).unwrap(), Some(unknown));

        let written = 1_700_000_000_000;
        let within = changelog::CATCH_UP_WITHIN_MS;
        assert!(changelog::may_catch_up(Some(written), written));
        assert!(changelog::may_catch_up(Some(written), written + within - 1));
        assert!(!changelog::may_catch_up(Some(written), written + within), "tombstones may be gone");
        assert!(!changelog::may_catch_up(Some(written), written - 1), "a clock that moved back");
        assert!(!changelog::may_catch_up(None, written), "unknown age");
    }
}
