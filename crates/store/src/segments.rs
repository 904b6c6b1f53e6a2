//! A changelog read back one writer's batch at a time, held back by one
//! batch, so that a batch of a transaction that never committed is left
//! out. Apache Kafka never shows such records to `read_committed`
//! readers; a broker that does not filter aborted transactions (the local
//! one) does.
//!
//! Each batch's changes end with its progress record, which says where
//! the batch's inputs started (`owner::Stamped::start`). A batch that starts
//! before the end of the batch held back means its writer processed those
//! inputs again: the held batch never committed (the instance died before
//! its state or its transaction committed), and is dropped. Otherwise the
//! held batch is kept. A batch published again from the outbox repeats
//! the same changes, so keeping either copy gives the same state. Records
//! without a start (older changelogs, a snapshot's) keep what is held.
//!
//! A restore writes the last batch held when it reaches the end of the
//! log (it verifies progress against the group's offset after). A standby
//! copy, which never reaches an end, also writes it once the group's
//! committed offset for the partition is where the batch ends (see
//! `changelog::TailBatch`).

use super::changelog::{Change, changes, encode};
use super::owner;
use accrual_core::state::codec::{CodecError, Writer};

/// Changes, encoded as captured (see `changelog::changes`).
#[derive(Default)]
pub(crate) struct Encoded(Writer);

impl Encoded {
    pub(crate) fn changes(&self) -> Result<Vec<Change<'_>>, CodecError> {
        changes(&self.0.buf)
    }

    pub(crate) fn push(&mut self, change: &Change<'_>) {
        encode(&mut self.0, change);
    }

    /// Bytes of the changes.
    pub(crate) fn len(&self) -> usize {
        self.0.buf.len()
    }
}

/// One writer's batches, `B` each (changes as a restore or a standby copy
/// keeps them), the last one held back.
pub(crate) struct Segments<B> {
    /// The changes read since the last progress record.
    open: B,
    /// The last batch ended, and the offset its inputs end at.
    held: Option<(B, u64)>,
    /// Batches dropped as never committed.
    pub(crate) dropped: u64,
}

impl<B: Default> Default for Segments<B> {
    fn default() -> Self {
        Segments { open: B::default(), held: None, dropped: 0 }
    }
}

impl<B: Default> Segments<B> {
    /// The batch being read.
    pub(crate) fn open(&mut self) -> &mut B {
        &mut self.open
    }

    /// Ends the batch being read with its progress record (`progress`, its
    /// value): returns the batch held before it if that one committed.
    pub(crate) fn end(&mut self, progress: &[u8]) -> Option<B> {
        let stamped = owner::decode(progress).ok();
        let start = stamped.as_ref().and_then(|s| s.start);
        let end = stamped.map_or(u64::MAX, |s| s.progress.next_offset);
        let batch = std::mem::take(&mut self.open);
        match self.held.replace((batch, end)) {
            Some((_, held_end)) if start.is_some_and(|start| start < held_end) => {
                self.dropped += 1;
                None
            }
            held => held.map(|(held, _)| held),
        }
    }

    /// Where the inputs of the batch held back end, if one is.
    pub(crate) fn held_end(&self) -> Option<u64> {
        self.held.as_ref().map(|(_, end)| *end)
    }

    /// The batch held back, known to have committed some other way.
    pub(crate) fn take_held(&mut self) -> Option<B> {
        self.held.take().map(|(held, _)| held)
    }

    /// Everything not returned yet, the held batch first: at the end of a
    /// read, or when a batch grows too large to hold (only a snapshot's).
    pub(crate) fn rest(&mut self) -> impl Iterator<Item = B> + use<B> {
        let held = self.take_held();
        held.into_iter().chain(Some(std::mem::take(&mut self.open)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::Family;
    use crate::owner::Owner;

    /// A progress record's value as an owned batch writes it.
    fn progress(start: Option<u64>, end: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(crate::META_FORMAT);
        w.u64(end);
        w.i64(0);
        w.buf.extend_from_slice(&owner::encode(&Owner { instance: "a".into(), generation: 1 }, "r"));
        if let Some(start) = start {
            w.u64(start);
        }
        w.buf
    }

    fn change(key: &[u8]) -> Change<'_> {
        Change { family: Family::Accounts, key, value: Some(b"v") }
    }

    fn keys(batch: Option<Encoded>) -> Vec<Vec<u8>> {
        batch.map_or_else(Vec::new, |b| b.changes().unwrap().iter().map(|c| c.key.to_vec()).collect())
    }

    #[test]
    fn a_batch_is_kept_once_the_next_starts_where_it_ends() {
        let mut s = Segments::<Encoded>::default();
        s.open().push(&change(b"1"));
        assert!(s.end(&progress(Some(0), 10)).is_none(), "held back until the next batch");
        s.open().push(&change(b"2"));
        assert_eq!(keys(s.end(&progress(Some(10), 20))), [b"1".to_vec()]);
        let rest: Vec<_> = s.rest().flat_map(|b| keys(Some(b))).collect();
        assert_eq!(rest, [b"2".to_vec()], "the last batch at the end of the read");
        assert_eq!(s.dropped, 0);
    }

    #[test]
    fn a_batch_whose_inputs_were_processed_again_is_dropped() {
        // The diagnosed case: a batch 600..720 never committed; its
        // inputs were processed again, that batch ending at 712.
        let mut s = Segments::<Encoded>::default();
        s.open().push(&change(b"before"));
        s.end(&progress(Some(480), 600));
        s.open().push(&change(b"aborted"));
        assert_eq!(keys(s.end(&progress(Some(600), 720))), [b"before".to_vec()]);
        s.open().push(&change(b"retry"));
        assert!(s.end(&progress(Some(600), 712)).is_none(), "the aborted batch is dropped");
        s.open().push(&change(b"next"));
        assert_eq!(keys(s.end(&progress(Some(712), 832))), [b"retry".to_vec()]);
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn two_batches_left_behind_by_a_crash_are_told_apart() {
        // C committed its state but not its transaction, P not even its
        // state; the restart publishes C again (C') and goes on (Q).
        let mut s = Segments::<Encoded>::default();
        s.open().push(&change(b"C"));
        s.end(&progress(Some(0), 10));
        s.open().push(&change(b"P"));
        assert_eq!(keys(s.end(&progress(Some(10), 20))), [b"C".to_vec()]);
        s.open().push(&change(b"C'"));
        assert!(s.end(&progress(Some(0), 10)).is_none(), "P never committed");
        s.open().push(&change(b"Q"));
        assert_eq!(keys(s.end(&progress(Some(10), 30))), [b"C'".to_vec()]);
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn records_without_a_start_keep_what_is_held() {
        let mut s = Segments::<Encoded>::default();
        s.open().push(&change(b"1"));
        s.end(&progress(None, 10));
        s.open().push(&change(b"2"));
        assert_eq!(keys(s.end(&progress(None, 5))), [b"1".to_vec()]);
    }
}
