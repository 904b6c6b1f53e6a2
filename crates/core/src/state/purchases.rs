//! The purchases an account retains for refunds and clearings, in arrival
//! order, each numbered by a per-account sequence.
//!
//! The store keeps each purchase under its own key (account, sequence)
//! rather than inside the account's value: an active card retains hundreds
//! of purchases over a refund window, and rewriting all of them on every
//! purchase made the write-ahead log, the memtable and compaction carry
//! the whole history again each time. So the list also remembers what the
//! store holds, and a write sends only what changed: new purchases, the
//! ones a refund or clearing touched, and deletes for those aged out.
//!
//! Only this module's methods change the list, so no change can bypass
//! that bookkeeping.
//!
//! Most events never look at old purchases: only a refund, a reversal or a
//! clearing searches them, and pruning needs them only once the oldest ages
//! out. So an account may be loaded without them (the engine's account
//! cache then holds a few hundred bytes per account instead of its whole
//! history): the list holds only the newest purchases, the older ones stay
//! in the store, and [`Purchases::is_complete`] says which. The caller
//! loads what an event needs first (`Core::purchases_needed`): a refund
//! or clearing, newest first, back to the purchase it names (refunds
//! mostly follow their purchase by days, so this is one or a few reads
//! instead of the whole history); pruning, all of them.

use super::RetainedPurchase;
use crate::time::Timestamp;
use std::ops::{Deref, Range};

#[derive(Debug, Clone, Default)]
pub struct Purchases {
    /// The newest purchases; all of them when `unloaded` is 0.
    list: Vec<RetainedPurchase>,
    /// Sequence number of the first retained purchase.
    first_seq: u64,
    /// How many purchases from `first_seq` on are in the store only; the
    /// list starts at `first_seq + unloaded`.
    unloaded: u64,
    /// Arrival time of the first retained purchase, loaded or not.
    first_at: Option<Timestamp>,
    /// Sequence numbers the store holds (as last written or read).
    stored: Range<u64>,
    /// Stored purchases changed in place since (sequence numbers, may repeat).
    changed: Vec<u64>,
}

/// The purchase a refund, reversal or clearing looks for: the newest with
/// this event id (and, for a clearing, still authorised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search<'a> {
    pub event_id: &'a str,
    pub authorized_only: bool,
}

impl<'a> Search<'a> {
    pub fn any(event_id: &'a str) -> Search<'a> {
        Search { event_id, authorized_only: false }
    }

    pub fn authorized(event_id: &'a str) -> Search<'a> {
        Search { event_id, authorized_only: true }
    }

    pub fn accepts(&self, purchase: &RetainedPurchase) -> bool {
        purchase.event_id == self.event_id && (purchase.authorized || !self.authorized_only)
    }
}

/// What a write must do to bring the store up to date with the list.
pub struct PurchaseChanges<'a> {
    /// Sequence numbers to delete (aged out since the last write).
    pub deleted: Range<u64>,
    /// Purchases to (re)write, with their sequence numbers, in order.
    pub written: Vec<(u64, &'a RetainedPurchase)>,
}

impl PartialEq for Purchases {
    /// Two accounts are equal when they retain the same purchases under the
    /// same numbers; what the store happens to hold is bookkeeping.
    fn eq(&self, other: &Purchases) -> bool {
        self.first_seq == other.first_seq && self.unloaded == other.unloaded && self.list == other.list
    }
}

impl Eq for Purchases {}

impl Deref for Purchases {
    type Target = [RetainedPurchase];
    /// The loaded purchases: all of them when [`Purchases::is_complete`].
    fn deref(&self) -> &[RetainedPurchase] {
        &self.list
    }
}

impl Purchases {
    /// Purchases as the store holds them, all loaded: numbered from
    /// `first_seq` (the store itself loads through [`Purchases::unloaded`]).
    #[cfg(test)]
    pub fn stored(first_seq: u64, list: Vec<RetainedPurchase>) -> Purchases {
        let end = first_seq + list.len() as u64;
        let first_at = list.first().map(|p| p.at);
        Purchases { list, first_seq, unloaded: 0, first_at, stored: first_seq..end, changed: Vec::new() }
    }

    /// Purchases the store does not hold yet (all written on the next write).
    pub fn unstored(first_seq: u64, list: Vec<RetainedPurchase>) -> Purchases {
        let first_at = list.first().map(|p| p.at);
        Purchases {
            list,
            first_seq,
            unloaded: 0,
            first_at,
            stored: first_seq..first_seq,
            changed: Vec::new(),
        }
    }

    /// `count` stored purchases from `first_seq` on, none of them loaded.
    pub fn unloaded(first_seq: u64, count: u64, first_at: Option<Timestamp>) -> Purchases {
        let end = first_seq + count;
        Purchases {
            list: Vec::new(),
            first_seq,
            unloaded: count,
            first_at,
            stored: first_seq..end,
            changed: Vec::new(),
        }
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Arrival time of the first retained purchase.
    pub fn first_at(&self) -> Option<Timestamp> {
        self.first_at
    }

    /// All retained purchases, loaded or not.
    pub fn count(&self) -> u64 {
        self.unloaded + self.list.len() as u64
    }

    /// Whether every retained purchase is loaded.
    pub fn is_complete(&self) -> bool {
        self.unloaded == 0
    }

    /// Sequence numbers of the purchases not loaded.
    pub fn unloaded_seqs(&self) -> Range<u64> {
        self.first_seq..self.first_seq + self.unloaded
    }

    /// Sequence numbers of the newest `count` purchases not loaded (all
    /// of them when fewer are unloaded).
    pub fn newest_unloaded(&self, count: u64) -> Range<u64> {
        let end = self.first_seq + self.unloaded;
        end - count.min(self.unloaded)..end
    }

    /// Puts the purchases [`Purchases::unloaded_seqs`] names (read from
    /// the store) before the loaded ones.
    pub fn load(&mut self, older: Vec<RetainedPurchase>) {
        debug_assert_eq!(older.len() as u64, self.unloaded);
        self.load_newest(older);
    }

    /// Puts the newest `newer.len()` unloaded purchases (read from the
    /// store, as [`Purchases::newest_unloaded`] names them) before the
    /// loaded ones.
    pub fn load_newest(&mut self, mut newer: Vec<RetainedPurchase>) {
        debug_assert!(newer.len() as u64 <= self.unloaded);
        self.unloaded -= newer.len() as u64;
        newer.append(&mut self.list);
        self.list = newer;
    }

    /// Whether a loaded purchase is one `search` accepts (then it is the
    /// one [`Purchases::find_mut`] finds, whatever is not loaded).
    pub fn has_loaded(&self, search: Search<'_>) -> bool {
        self.list.iter().any(|p| search.accepts(p))
    }

    /// Forgets the loaded purchases the store holds (to keep an account
    /// small in memory); they are read again when needed.
    pub fn unload_stored(&mut self) {
        if self.changes_pending() {
            return;
        }
        self.unloaded += self.list.len() as u64;
        self.list = Vec::new();
    }

    fn changes_pending(&self) -> bool {
        !self.changed.is_empty() || self.stored != (self.first_seq..self.first_seq + self.count())
    }

    pub fn push(&mut self, purchase: RetainedPurchase) {
        if self.count() == 0 {
            self.first_at = Some(purchase.at);
        }
        self.list.push(purchase);
    }

    /// The most recent purchase `search` accepts, to change in place.
    /// Needs the purchases loaded back to it, or all of them.
    pub fn find_mut(&mut self, search: Search<'_>) -> Option<&mut RetainedPurchase> {
        let found = self.list.iter().rposition(|p| search.accepts(p));
        debug_assert!(found.is_some() || self.is_complete(), "searching purchases not loaded");
        let index = found?;
        self.changed.push(self.first_seq + self.unloaded + index as u64);
        Some(&mut self.list[index])
    }

    /// Whether [`Purchases::drop_before`] would drop anything.
    pub fn any_before(&self, horizon: Timestamp) -> bool {
        self.first_at.is_some_and(|at| at < horizon)
    }

    /// Drops the leading purchases made before `horizon` (arrival order:
    /// a late-arriving older purchase waits behind a newer one). Needs
    /// every purchase loaded when any is that old.
    pub fn drop_before(&mut self, horizon: Timestamp) {
        if !self.any_before(horizon) {
            return;
        }
        debug_assert!(self.is_complete(), "pruning purchases not loaded");
        if !self.is_complete() {
            return; // kept a little longer rather than misnumbered
        }
        let aged = self.list.iter().take_while(|p| p.at < horizon).count();
        if aged > 0 {
            self.list.drain(..aged);
            self.first_seq += aged as u64;
            self.first_at = self.list.first().map(|p| p.at);
        }
    }

    /// What the next write must change in the store.
    pub fn changes(&self) -> PurchaseChanges<'_> {
        let loaded_from = self.first_seq + self.unloaded;
        let end = loaded_from + self.list.len() as u64;
        let deleted = self.stored.start..self.first_seq.min(self.stored.end);
        let mut seqs: Vec<u64> = self.changed.iter().copied().filter(|s| *s >= loaded_from).collect();
        // New since the last write: everything past what the store holds.
        seqs.extend(self.stored.end.max(loaded_from)..end);
        seqs.sort_unstable();
        seqs.dedup();
        let written = seqs.into_iter().map(|s| (s, &self.list[(s - loaded_from) as usize])).collect();
        PurchaseChanges { deleted, written }
    }

    /// The store now holds the purchases as they are.
    pub fn mark_stored(&mut self) {
        self.stored = self.first_seq..self.first_seq + self.count();
        self.changed.clear();
    }
}

/// A plain retained purchase of 100.00, for tests.
#[cfg(any(test, feature = "test-support"))]
pub fn purchase(id: &str, at: i64) -> RetainedPurchase {
    RetainedPurchase {
        event_id: id.into(),
        at: Timestamp(at),
        amount: rust_decimal::Decimal::ONE_HUNDRED,
        refunded: rust_decimal::Decimal::ZERO,
        authorized: false,
        accruals: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn written(p: &Purchases) -> Vec<(u64, String)> {
        p.changes().written.iter().map(|(s, p)| (*s, p.event_id.clone())).collect()
    }

    #[test]
    fn a_write_sends_only_new_changed_and_aged_out_purchases() {
        let mut p = Purchases::stored(10, vec![purchase("a", 1), purchase("b", 2), purchase("c", 3)]);
        assert!(p.changes().written.is_empty());
        assert!(p.changes().deleted.is_empty());

        p.push(purchase("d", 4));
        p.find_mut(Search::any("b")).unwrap().refunded = Decimal::ONE;
        assert!(p.find_mut(Search::any("zz")).is_none());
        assert_eq!(written(&p), vec![(11, "b".into()), (13, "d".into())]);

        p.drop_before(Timestamp(3)); // a and b age out; b's change no longer matters
        let changes = p.changes();
        assert_eq!(changes.deleted, 10..12);
        assert_eq!(written(&p), vec![(13, "d".into())]);

        p.mark_stored();
        assert!(p.changes().written.is_empty() && p.changes().deleted.is_empty());
        assert_eq!(p.first_seq(), 12);
        assert_eq!(p.first_at(), Some(Timestamp(3)));
        assert_eq!(p.iter().map(|x| x.event_id.as_str()).collect::<Vec<_>>(), ["c", "d"]);
    }

    #[test]
    fn an_account_loaded_without_its_purchases_adds_new_ones_and_loads_the_rest_when_asked() {
        let mut p = Purchases::unloaded(10, 2, Some(Timestamp(1)));
        assert!(!p.is_complete());
        assert_eq!((p.count(), p.len()), (2, 0));
        p.push(purchase("c", 5));
        assert_eq!(written(&p), vec![(12, "c".into())], "numbered after the unloaded ones");
        assert!(!p.any_before(Timestamp(1)));
        assert!(p.any_before(Timestamp(2)), "the oldest, not loaded, would age out");

        p.load(vec![purchase("a", 1), purchase("b", 2)]);
        assert!(p.is_complete());
        assert_eq!(written(&p), vec![(12, "c".into())]);
        p.find_mut(Search::any("a")).unwrap().refunded = Decimal::ONE;
        assert_eq!(written(&p), vec![(10, "a".into()), (12, "c".into())]);

        p.mark_stored();
        p.unload_stored();
        assert_eq!((p.count(), p.len()), (3, 0));
        assert_eq!(p.unloaded_seqs(), 10..13);
        assert_eq!(p.first_at(), Some(Timestamp(1)));
        assert!(p.changes().written.is_empty() && p.changes().deleted.is_empty());
    }

    #[test]
    fn purchases_with_unwritten_changes_stay_loaded() {
        let mut p = Purchases::stored(0, vec![purchase("a", 1)]);
        p.push(purchase("b", 2));
        p.unload_stored();
        assert!(p.is_complete());
        assert_eq!(p.len(), 2);
        let mut q = Purchases::unstored(0, vec![purchase("a", 1)]);
        q.unload_stored();
        assert_eq!(q.len(), 1, "never written: must stay");
    }

    #[test]
    fn purchases_added_and_aged_out_between_writes_are_never_written() {
        let mut p = Purchases::stored(0, vec![purchase("a", 1)]);
        p.push(purchase("b", 2));
        p.push(purchase("c", 9));
        p.drop_before(Timestamp(5));
        let changes = p.changes();
        assert_eq!(changes.deleted, 0..1, "only what the store held");
        assert_eq!(written(&p), vec![(2, "c".into())]);
    }

    #[test]
    fn unstored_purchases_are_all_written_and_equality_ignores_bookkeeping() {
        let list = vec![purchase("a", 1), purchase("b", 2)];
        let p = Purchases::unstored(5, list.clone());
        assert_eq!(written(&p), vec![(5, "a".into()), (6, "b".into())]);
        assert_eq!(p, Purchases::stored(5, list.clone()));
        assert_ne!(p, Purchases::stored(4, list));
    }
}
