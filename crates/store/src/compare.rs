//! Comparing a partition's state in two stores, key by key, in the
//! families the changelog carries: a state directory against what its
//! changelog restores (`accrual changelog check`). Both are walked in key
//! order side by side, so a state of any size is compared in little memory.

use super::changelog::{self, Entry, Family, STATE_FAMILIES};
use super::{Store, StoreError};
use std::cmp::Ordering;

/// How one key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    /// Both hold the key, with different values.
    Changed,
    /// Only the local state holds it.
    OnlyLocal,
    /// Only the restored state holds it.
    OnlyRestored,
}

/// One key that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub family: Family,
    pub key: Vec<u8>,
    pub kind: DifferenceKind,
}

/// What comparing a partition found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub local_entries: u64,
    pub restored_entries: u64,
    pub changed: u64,
    pub only_local: u64,
    pub only_restored: u64,
    /// The first differences, up to the number asked for.
    pub examples: Vec<Difference>,
}

impl Comparison {
    pub fn differing(&self) -> u64 {
        self.changed + self.only_local + self.only_restored
    }

    fn record(&mut self, (family, key, _): Entry, kind: DifferenceKind, examples: usize) {
        match kind {
            DifferenceKind::Changed => self.changed += 1,
            DifferenceKind::OnlyLocal => self.only_local += 1,
            DifferenceKind::OnlyRestored => self.only_restored += 1,
        }
        if self.examples.len() < examples {
            self.examples.push(Difference { family, key, kind });
        }
    }
}

/// Compares `partition`'s state in `local` with that in `restored`, byte
/// for byte, keeping the first `examples` differences. Dedupe keys seen
/// before `dedupe_horizon` are left out on both sides: they are expired,
/// answer no lookup, and compaction drops them from either store at any
/// time.
pub fn compare_partition(
    local: &Store,
    restored: &Store,
    partition: u32,
    dedupe_horizon: i64,
    examples: usize,
) -> Result<Comparison, StoreError> {
    let live = move |item: &Result<Entry, StoreError>| match item {
        Ok((Family::Dedupe, _, value)) => {
            super::decode_seen(value).is_none_or(|seen| seen.0 >= dedupe_horizon)
        }
        _ => true,
    };
    let mut ours = changelog::entries(local, partition).filter(live);
    let mut theirs = changelog::entries(restored, partition).filter(live);
    let mut out = Comparison::default();
    let (mut a, mut b) = (ours.next().transpose()?, theirs.next().transpose()?);
    loop {
        let order = match (&a, &b) {
            (None, None) => return Ok(out),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => (rank(x.0), &x.1).cmp(&(rank(y.0), &y.1)),
        };
        if order != Ordering::Greater {
            out.local_entries += 1;
        }
        if order != Ordering::Less {
            out.restored_entries += 1;
        }
        match (order, a.take(), b.take()) {
            (Ordering::Less, Some(x), y) => {
                out.record(x, DifferenceKind::OnlyLocal, examples);
                (a, b) = (ours.next().transpose()?, y);
            }
            (Ordering::Greater, x, Some(y)) => {
                out.record(y, DifferenceKind::OnlyRestored, examples);
                (a, b) = (x, theirs.next().transpose()?);
            }
            (_, x, y) => {
                if let (Some(x), Some(y)) = (x, y)
                    && x.2 != y.2
                {
                    out.record(x, DifferenceKind::Changed, examples);
                }
                (a, b) = (ours.next().transpose()?, theirs.next().transpose()?);
            }
        }
    }
}

/// A family's place in [`changelog::entries`]' order.
fn rank(family: Family) -> usize {
    STATE_FAMILIES.iter().position(|&f| f == family).unwrap_or(usize::MAX)
}

/// A stored key for people: the family, then the key after its partition
/// prefix, printable bytes as they are and the rest escaped.
pub fn describe_key(family: Family, key: &[u8]) -> String {
    let rest = key.get(4..).unwrap_or_default();
    format!("{} \"{}\"", family.name(), rest.escape_ascii())
}
