//! A cycle's dedupe keys as ONE changelog message per partition (a
//! group; a few when they would not fit one message), and a tombstone for
//! the group once every key in it has expired, so the changelog holds only
//! the dedupe keys still remembered.
//!
//! One message per event id would add a message to every event and never
//! be deleted: dedupe keys expire by time (the compaction filter), not by
//! a write a changelog could see. A group is keyed by the latest event
//! time in it, then the offset its cycle ends at, and the owner keeps that
//! key in the `meta` family (partition ++ "dedupe_group/" ++ time ++
//! offset -> nothing) as an index ordered by time: each cycle finds the
//! groups past the dedupe horizon with one bounded scan, deletes them and
//! publishes their tombstones. A restore or a standby writes a group's
//! keys into `dedupe` and its index entry into `meta`, so a new owner
//! expires the groups the old one left.

use super::{CF_DEDUPE, CF_META, Store, StoreError, partition_key};
use accrual_core::state::codec::{CodecError, Reader, Writer};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

const INDEX: &[u8] = b"dedupe_group/";

/// The dedupe keys of one partition's cycle, as they are staged: one
/// group, or several when they would not fit one Kafka message.
#[derive(Default)]
pub(crate) struct Pending {
    /// Groups already at [`MAX_GROUP_BYTES`].
    full: Vec<Group>,
    open: Group,
}

#[derive(Default)]
struct Group {
    entries: Writer,
    count: u64,
    latest: Option<i64>,
}

/// The most bytes of keys a group holds: far below the message size
/// brokers accept by default (1 MB), whatever the event ids' length and
/// the cycle's size (`max_batch`).
const MAX_GROUP_BYTES: usize = 256 * 1024;

impl Pending {
    pub(crate) fn add(&mut self, event_id: &[u8], seen_at: i64) {
        if self.open.entries.buf.len() >= MAX_GROUP_BYTES {
            self.full.push(std::mem::take(&mut self.open));
        }
        let group = &mut self.open;
        group.entries.bytes(event_id);
        group.entries.i64(seen_at);
        group.count += 1;
        group.latest = Some(group.latest.map_or(seen_at, |t| t.max(seen_at)));
    }

    pub(crate) fn len(&self) -> u64 {
        self.full.iter().map(|g| g.count).sum::<u64>() + self.open.count
    }

    /// Each group's index key and message value (none if no key is
    /// pending); empty afterwards. A cycle's first group is keyed by its
    /// latest time and `next_offset`, any further one by the same and its
    /// number, so each is a key of its own.
    pub(crate) fn take(&mut self, partition: u32, next_offset: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let open = std::mem::take(&mut self.open);
        let groups = std::mem::take(&mut self.full).into_iter().chain(std::iter::once(open));
        let mut out = Vec::new();
        for (number, mut group) in groups.enumerate() {
            let Some(latest) = group.latest else { continue };
            let mut value = Writer::with_capacity(group.entries.buf.len() + 10);
            value.u64(group.count);
            value.buf.append(&mut group.entries.buf);
            let mut key = index_key(partition, latest, next_offset);
            if number > 0 {
                key.extend_from_slice(&(number as u32).to_be_bytes());
            }
            out.push((key, value.buf));
        }
        out
    }
}

/// Event times in an order-preserving byte form (the sign bit flipped).
fn ordered(time: i64) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

fn index_key(partition: u32, latest: i64, next_offset: u64) -> Vec<u8> {
    let mut key = partition_key(partition, INDEX);
    key.extend_from_slice(&ordered(latest));
    key.extend_from_slice(&next_offset.to_be_bytes());
    key
}

/// Stages deleting every index entry of the partition's groups in `batch`
/// (a snapshot's groups replace them).
pub(crate) fn stage_drop_index(store: &Store, batch: &mut WriteBatch, partition: u32) {
    let from = partition_key(partition, INDEX);
    let mut to = from.clone();
    if let Some(last) = to.last_mut() {
        *last += 1; // past every key that starts with the index's prefix
    }
    batch.delete_range_cf(store.cf(CF_META), from, to);
}

/// Whether a `meta` key is a dedupe group's index entry.
pub(crate) fn is_index_key(key: &[u8]) -> bool {
    key.get(4..).is_some_and(|k| k.starts_with(INDEX))
}

/// The index keys of the partition's groups whose every key was seen
/// before `horizon`: expired.
pub(crate) fn expired(store: &Store, partition: u32, horizon: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let from = partition_key(partition, INDEX);
    let mut upper = from.clone();
    upper.extend_from_slice(&ordered(horizon));
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(upper);
    let cf = store.cf(CF_META);
    let mut out = Vec::new();
    for item in store.db.iterator_cf_opt(cf, options, IteratorMode::From(&from, rocksdb::Direction::Forward))
    {
        let (key, _) = item.map_err(|e| store.db_err(e))?;
        out.push(key.to_vec());
    }
    Ok(out)
}

/// A group read from the changelog as writes: its index entry, and each
/// of its keys as `put_seen` writes it; a tombstone deletes the index
/// entry (its keys have expired, and lookups ignore them until the
/// compaction filter drops them).
pub(crate) fn stage(
    store: &Store,
    batch: &mut WriteBatch,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), CodecError> {
    let meta = store.cf(CF_META);
    let Some(value) = value else {
        batch.delete_cf(meta, key);
        return Ok(());
    };
    let partition = key.get(..4).ok_or(CodecError::Truncated)?;
    let dedupe = store.cf(CF_DEDUPE);
    let mut r = Reader::new(value);
    let count = r.count()?;
    let mut dedupe_key = Vec::new();
    let mut seen = Writer::with_capacity(10);
    for _ in 0..count {
        let event_id = r.bytes()?;
        let at = r.i64()?;
        dedupe_key.clear();
        dedupe_key.extend_from_slice(partition);
        dedupe_key.extend_from_slice(event_id);
        seen.buf.clear();
        seen.i64(at);
        batch.put_cf(dedupe, &dedupe_key, &seen.buf);
    }
    if !r.is_empty() {
        return Err(CodecError::Corrupt("dedupe group: bytes after its keys"));
    }
    batch.put_cf(meta, key, []);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_order_by_time_then_offset_across_the_sign() {
        let keys: Vec<_> = [(-5, 9), (-1, 1), (0, 0), (7, 2), (7, 3), (i64::MAX, 0)]
            .map(|(t, o)| index_key(2, t, o))
            .to_vec();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| is_index_key(k)));
        assert!(!is_index_key(&partition_key(2, b"progress")));
    }

    #[test]
    fn a_group_holds_each_key_once_and_is_empty_after_it_is_taken() {
        let mut pending = Pending::default();
        assert!(pending.take(1, 10).is_empty());
        pending.add(b"e-1", 50);
        pending.add(b"e-2", 40);
        let groups = pending.take(1, 10);
        assert_eq!(groups.len(), 1);
        let (key, value) = &groups[0];
        assert_eq!(key, &index_key(1, 50, 10), "keyed by its latest time");
        let mut r = Reader::new(value);
        assert_eq!(r.count().unwrap(), 2);
        assert_eq!((r.bytes().unwrap(), r.i64().unwrap()), (&b"e-1"[..], 50));
        assert_eq!((r.bytes().unwrap(), r.i64().unwrap()), (&b"e-2"[..], 40));
        assert!(r.is_empty());
        assert!(pending.take(1, 11).is_empty());
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn a_cycle_too_large_for_one_message_is_several_groups_each_under_the_bound() {
        let mut pending = Pending::default();
        // The longest event ids (128 bytes) in a cycle of 60,000 events.
        let ids: Vec<Vec<u8>> = (0..60_000).map(|i| format!("{i:0>128}").into_bytes()).collect();
        for (i, id) in ids.iter().enumerate() {
            pending.add(id, i as i64);
        }
        assert_eq!(pending.len(), 60_000);
        let groups = pending.take(3, 77);
        assert!(groups.len() > 1, "{} groups", groups.len());
        let keys: std::collections::BTreeSet<_> = groups.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.len(), groups.len(), "every group has a key of its own");
        assert!(keys.iter().all(|k| is_index_key(k)));
        let mut read = Vec::new();
        for (key, value) in &groups {
            assert!(value.len() < 300 * 1024, "a group of {} bytes", value.len());
            let mut r = Reader::new(value);
            let mut latest = i64::MIN;
            for _ in 0..r.count().unwrap() {
                read.push(r.bytes().unwrap().to_vec());
                latest = latest.max(r.i64().unwrap());
            }
            assert!(r.is_empty());
            assert!(key.starts_with(&index_key(3, latest, 77)), "keyed by its own latest time");
        }
        assert_eq!(read, ids, "every key once, in order");
        assert!(pending.take(3, 78).is_empty());
    }
}
