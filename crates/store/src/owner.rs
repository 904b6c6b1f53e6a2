//! Who wrote a partition's state: every batch's progress record carries
//! the instance and the consumer group generation that processed it, so
//! local state can be matched with the changelog's to prove it is the
//! state the group committed, not a former owner's (see the engine's
//! `restore`).

use super::{Progress, decode_progress_from};
use accrual_core::state::codec::{CodecError, Reader, Writer};

/// The instance that processed a batch, and the group generation it held
/// the partition in (-1 if librdkafka did not know it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub instance: String,
    pub generation: i32,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "instance {:?} in group generation {}", self.instance, self.generation)
    }
}

/// A partition's progress and who recorded it (none: written before owners
/// were recorded, or by `simulate`), with the rules timeline it was
/// processed under (`rules::Timeline::record`; none: written before
/// timelines were recorded) and where the batch it ends started (none:
/// not recorded, see [`crate::batch::LedgerBatch::starts_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub progress: Progress,
    pub owner: Option<Owner>,
    pub rules: Option<String>,
    pub start: Option<u64>,
}

impl Stamped {
    /// Whether `self` (local state) continues the state `committed` (the
    /// changelog's at the group's offset): the same owner, in the same
    /// generation, wrote both, and `self` is not behind it. Nobody else
    /// can have committed the partition in between, since the group's
    /// offset would then be theirs.
    pub fn continues(&self, committed: &Stamped) -> bool {
        self.owner.is_some()
            && self.owner == committed.owner
            && self.progress.next_offset >= committed.progress.next_offset
    }
}

/// The bytes appended to a progress record for `owner`, processing under
/// the rules timeline `rules`. Readers that know no timeline ignore them.
pub(crate) fn encode(owner: &Owner, rules: &str) -> Vec<u8> {
    let mut w = Writer::with_capacity(24 + owner.instance.len() + rules.len());
    w.i64(i64::from(owner.generation));
    w.str(&owner.instance);
    w.str(rules);
    w.buf
}

/// A progress record's value, with its owner if it has one. Each field
/// after the progress is optional, later ones only written with earlier
/// ones: the owner, the rules timeline, and where the batch's inputs
/// started (the partition's progress before them), which lets the
/// changelog's readers tell a batch of a transaction that never
/// committed (see `segments`).
pub fn decode(value: &[u8]) -> Result<Stamped, CodecError> {
    let mut r = Reader::new(value);
    let progress = decode_progress_from(&mut r)?;
    let mut stamped = Stamped { progress, owner: None, rules: None, start: None };
    if r.is_empty() {
        return Ok(stamped);
    }
    let generation = i32::try_from(r.i64()?).map_err(|_| CodecError::Corrupt("owner generation"))?;
    let instance = r.str()?.to_string();
    stamped.owner = Some(Owner { instance, generation });
    if !r.is_empty() {
        stamped.rules = Some(r.str()?.to_string());
    }
    if !r.is_empty() {
        stamped.start = Some(r.u64()?);
    }
    Ok(stamped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};
    use accrual_core::time::Timestamp;

    fn at(next_offset: u64, owner: Option<(&str, i32)>) -> Stamped {
        Stamped {
            progress: Progress { next_offset, stream_time: Timestamp(0) },
            owner: owner.map(|(instance, generation)| Owner { instance: instance.into(), generation }),
            rules: None,
            start: None,
        }
    }

    #[test]
    fn progress_records_its_owner_and_older_records_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let owner = Owner { instance: "node-2".into(), generation: 7 };
        let progress = Progress { next_offset: 42, stream_time: Timestamp(9) };
        let mut b = store.batch().owned_by(&owner, "- 0123abcd");
        b.set_progress(3, progress, 5);
        let mut plain = store.batch();
        plain.set_progress(4, progress, 5);
        store.commit(b).unwrap();
        store.commit(plain).unwrap();
        assert_eq!(store.progress(3).unwrap(), Some(progress), "the progress reads as before");
        let rules = Some("- 0123abcd".to_string());
        assert_eq!(
            store.stamped_progress(3).unwrap(),
            Some(Stamped { progress, owner: Some(owner.clone()), rules, start: None })
        );
        let unowned = Stamped { progress, owner: None, rules: None, start: None };
        assert_eq!(store.stamped_progress(4).unwrap(), Some(unowned));
        // A record from before timelines were recorded: its owner alone.
        let mut older = Writer::default();
        older.u8(crate::META_FORMAT);
        older.u64(42);
        older.i64(9);
        older.i64(7);
        older.str("node-2");
        let read = decode(&older.buf).unwrap();
        assert_eq!(read, Stamped { progress, owner: Some(owner), rules: None, start: None });
    }

    #[test]
    fn an_owned_progress_record_says_where_its_batch_started() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..Default::default() }).unwrap();
        let owner = Owner { instance: "node-2".into(), generation: 7 };
        let at = |next_offset| Progress { next_offset, stream_time: Timestamp(9) };
        let mut b = store.batch().owned_by(&owner, "r");
        b.starts_at(3, 600);
        b.set_progress(3, at(712), 5);
        store.commit(b).unwrap();
        assert_eq!(store.stamped_progress(3).unwrap().and_then(|s| s.start), Some(600));
        let mut b = store.batch().owned_by(&owner, "r");
        b.starts_at(3, 712);
        b.set_progress(3, at(720), 5);
        b.set_progress(3, at(730), 5);
        store.commit(b).unwrap();
        let read = store.stamped_progress(3).unwrap();
        assert_eq!(
            read.and_then(|s| s.start),
            Some(720),
            "a later progress in a batch starts at the earlier"
        );
    }

    #[test]
    fn only_the_same_owner_in_the_same_generation_continues_a_committed_state() {
        let committed = at(100, Some(("node-1", 4)));
        assert!(at(100, Some(("node-1", 4))).continues(&committed), "the very state");
        assert!(at(130, Some(("node-1", 4))).continues(&committed), "ahead: its outbox is published again");
        assert!(!at(90, Some(("node-1", 4))).continues(&committed), "behind");
        assert!(!at(100, Some(("node-2", 4))).continues(&committed), "another instance's");
        assert!(!at(100, Some(("node-1", 5))).continues(&committed), "another generation's");
        assert!(!at(100, None).continues(&committed), "an unrecorded owner proves nothing");
        assert!(!at(100, None).continues(&at(100, None)));
    }
}
