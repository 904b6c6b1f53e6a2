//! Batch processing of one input partition: decode, dedupe, apply the core,
//! fire timers on `clock` events, and stage everything for ONE atomic ledger
//! commit. Transport-free: the file-based `simulate` and the Kafka engine
//! feed it the same way, and a [`Sink`] receives what each input offset
//! became.
//!
//! Every input offset ends as exactly one of: records, no effect, a counted
//! duplicate, or a dead letter with a reason.

mod admit;
mod cache;
mod isolate;
mod ledger;

pub use admit::{Admission, Refusal};
pub use isolate::INTERNAL_ERROR;
pub use ledger::{Ledger, Progress, StagedWrites};

use crate::accrue::{AccrualRecord, Core, DerivedEvent, Effects, NoEffect, Outcome, PurchasesNeeded};
use crate::events::{Decoder, Event, EventBody};
use crate::rules::{Rules, Timeline};
use crate::state::AccountState;
use crate::time::Timestamp;
use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// One input message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub offset: u64,
    /// The message key (the account id, by convention); empty if none.
    pub key: &'a [u8],
    pub payload: &'a [u8],
    /// The broker's timestamp of the message; none in files.
    pub timestamp: Option<Timestamp>,
}

/// Receives what each input became, in input order.
pub trait Sink {
    fn accrued(&mut self, offset: u64, event: &Event<'_>, records: &[AccrualRecord]);
    fn no_effect(&mut self, offset: u64, event: &Event<'_>, why: NoEffect);
    fn duplicate(&mut self, offset: u64, event: &Event<'_>, first_seen: Timestamp);
    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str);
    /// An event for another account, to deliver through the input topic
    /// (not called when the processor applies derived events itself).
    fn derived(&mut self, _offset: u64, _event: &DerivedEvent) {}
}

/// Counts per batch (metrics are emitted from these, not per record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub inputs: u64,
    pub accrued: u64,
    pub records: u64,
    pub no_effect: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    /// Accounts brought to a clock's time by clock events.
    pub clock_accounts: u64,
    /// Clock events that left accounts due (see `max_accounts_per_clock`).
    pub clocks_cut: u64,
    /// Inputs left for the next batch (see
    /// [`Processor::ending_batches_after_clocks`]); not counted in `inputs`.
    pub unprocessed: u64,
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, s: BatchStats) {
        self.inputs += s.inputs;
        self.accrued += s.accrued;
        self.records += s.records;
        self.no_effect += s.no_effect;
        self.duplicates += s.duplicates;
        self.dead_letters += s.dead_letters;
        self.clock_accounts += s.clock_accounts;
        self.clocks_cut += s.clocks_cut;
        self.unprocessed += s.unprocessed;
    }
}

/// A cached account: its state, whether it changed, and the timer it had
/// registered when loaded.
struct Cached {
    /// Boxed: a state moves between the cache, this batch's map and the
    /// list awaiting commit, and through the maps' growth; a pointer moves
    /// instead of its few hundred bytes.
    state: Box<AccountState>,
    dirty: bool,
    registered: Option<Timestamp>,
    /// Encoded size, once staged.
    encoded: usize,
}

/// Processes batches of one partition at a time. Keep one per worker.
pub struct Processor {
    core: Core,
    /// Taken by each pass over a batch (the events it decodes borrow it
    /// while the rest of the processor changes), and put back after.
    decoder: Option<Decoder>,
    effects: Effects,
    /// Account states touched by the current batch (read once, written once).
    accounts: HashMap<String, Cached>,
    /// Committed states kept between batches.
    cache: cache::AccountCache,
    /// States of batches processed but not yet committed: they go to the
    /// cache once the caller says the batch is committed.
    uncommitted: Vec<(u32, String, Box<AccountState>, usize)>,
    /// Event ids first seen in the current batch.
    seen: HashMap<String, Timestamp>,
    /// Apply derived events right after the input that caused them (for
    /// `simulate`, where every account is in the one partition), instead of
    /// handing them to the sink.
    inline_derived: bool,
    /// What an input must satisfy before it touches state.
    admission: Admission,
    /// The place in the batch's work of the input being processed (to
    /// know which one panicked).
    position: usize,
    /// For tests of panic isolation only: processing this event id panics.
    #[cfg(feature = "failpoints")]
    panic_on: Option<String>,
    /// End a batch once its clocks have fired the rules' limit of accounts.
    end_after_clocks: bool,
    /// The last clock of the batch that left accounts due: its time and id.
    cut_clock: Option<(Timestamp, String)>,
}

/// What one `clock` event did in its partition.
struct Fired {
    accounts: usize,
    /// More accounts were due than the rules let one clock fire.
    cut: bool,
}

/// A `clock` event: the accounts of the partition whose timer is due by its
/// time are brought to it, soonest due first (then by account id), at most
/// the rules' `max_accounts_per_clock`; the rest stay due, for the next
/// clock. Which accounts one clock fires depends only on the partition's
/// state, never on where a batch begins, so every replay fires the same.
fn fire_timers<L: Ledger>(
    core: &Core,
    accounts: &mut HashMap<String, Cached>,
    cache: &mut cache::AccountCache,
    effects: &mut Effects,
    store: &L,
    partition: u32,
    clock: &Event<'_>,
) -> Result<Fired, L::Error> {
    let at = clock.occurred_at;
    let limit = core.rules().max_accounts_per_clock;
    // Enough stored timers that, less those of accounts this batch changed
    // (whose stored timers may be stale), one more than the limit is left.
    let stored = store.due_timers(partition, at, limit.saturating_add(accounts.len()).saturating_add(1))?;
    let mut due: BTreeSet<(Timestamp, String)> =
        stored.into_iter().filter(|(_, account)| !accounts.contains_key(account)).collect();
    for (account, cached) in accounts.iter() {
        if let Some(d) = core.next_due(&cached.state).filter(|d| *d <= at) {
            due.insert((d, account.clone()));
        }
    }
    let cut = due.len() > limit;
    let mut fired = 0;
    for (_, account) in due.into_iter().take(limit) {
        let cached = Processor::load(accounts, cache, store, partition, &account)?;
        if core.prunes_purchases(&cached.state, at) {
            store.load_purchases(partition, &account, &mut cached.state)?;
        }
        core.advance(&mut cached.state, &account, at, clock.event_id, effects);
        cached.dirty = true;
        fired += 1;
    }
    Ok(Fired { accounts: fired, cut })
}

/// Work for one batch: the inputs, then derived events applied inline.
enum Work<'a> {
    Input(Input<'a>),
    Derived(u64, DerivedEvent),
}

impl<'a> Work<'a> {
    /// The offset it counts under, its bytes, and the input if it is one.
    fn parts(&self) -> (u64, &[u8], Option<&Input<'a>>) {
        match self {
            Work::Input(input) => (input.offset, input.payload, Some(input)),
            Work::Derived(offset, d) => (*offset, d.payload.as_slice(), None),
        }
    }
}

impl Processor {
    pub fn new(rules: Arc<Rules>) -> Processor {
        Processor::with_timeline(Arc::new(Timeline::from(rules)))
    }

    /// A processor applying each event under the version of `timeline` in
    /// force at its time (admission reads the bounds every version shares).
    pub fn with_timeline(timeline: Arc<Timeline>) -> Processor {
        Processor {
            admission: Admission::new(timeline.first()),
            position: 0,
            #[cfg(feature = "failpoints")]
            panic_on: None,
            end_after_clocks: false,
            cut_clock: None,
            core: Core::with_timeline(timeline),
            decoder: Some(Decoder::new()),
            effects: Effects::default(),
            accounts: HashMap::new(),
            cache: cache::AccountCache::new(0),
            uncommitted: Vec::new(),
            seen: HashMap::new(),
            inline_derived: false,
        }
    }

    /// Applies derived events inline (see the field).
    pub fn with_inline_derived(mut self) -> Processor {
        self.inline_derived = true;
        self
    }

    /// Refuses account events whose message key is not their `account_id`
    /// (Kafka input, where the key decides the partition).
    pub fn with_key_checks(mut self) -> Processor {
        self.admission = self.admission.checking_keys();
        self
    }

    /// For inputs without a broker timestamp: take each as received at its
    /// event time, but never after `now` (see [`Admission`]).
    pub fn with_received_by(mut self, now: Timestamp) -> Processor {
        self.admission = self.admission.received_by(now);
        self
    }

    /// Ends a batch after the clock event that brings the accounts its
    /// clocks fired to the rules' `max_accounts_per_clock`: the inputs after
    /// it are left (counted in [`BatchStats::unprocessed`]) for the caller
    /// to feed again, and the batch's progress stops after that clock. So
    /// one batch fires fewer than twice the limit, however many clocks a
    /// backlog holds. What each input does is the same either way.
    pub fn ending_batches_after_clocks(mut self) -> Processor {
        self.end_after_clocks = true;
        self
    }

    /// The time and id of the last clock of the last batch that left
    /// accounts of its partition due for a later clock.
    pub fn take_cut_clock(&mut self) -> Option<(Timestamp, String)> {
        self.cut_clock.take()
    }

    /// Makes processing the event `event_id` panic, to test that a panic
    /// costs one dead letter and nothing else. Only in builds with the
    /// `failpoints` feature (the test suite's).
    #[cfg(feature = "failpoints")]
    pub fn panicking_on(mut self, event_id: &str) -> Processor {
        self.panic_on = Some(event_id.to_string());
        self
    }

    /// Keeps committed account states decoded between batches, within
    /// about `bytes` of memory. The caller must then report each batch's
    /// fate: call [`Processor::committed`] once the batches processed since
    /// the last call are committed, or [`Processor::discard`] if they never
    /// will be.
    pub fn with_account_cache(mut self, bytes: usize) -> Processor {
        self.cache = cache::AccountCache::new(bytes);
        self
    }

    pub fn rules(&self) -> &Arc<Rules> {
        self.core.rules()
    }

    pub fn timeline(&self) -> &Arc<Timeline> {
        self.core.timeline()
    }

    /// Applies the batches from now on under `timeline` (a reload). The
    /// caller has checked it agrees with the one before at every instant
    /// already applied ([`Timeline::first_difference`]), and that it keeps
    /// the admission bounds.
    pub fn set_timeline(&mut self, timeline: Arc<Timeline>) {
        self.core = Core::with_timeline(timeline);
    }

    /// The batches processed since the last call are committed: their
    /// account states may serve the next batches.
    pub fn committed(&mut self) {
        for (partition, account, state, encoded) in self.uncommitted.drain(..) {
            self.cache.put(partition, account, state, encoded);
        }
    }

    /// The batches processed since the last call will not be committed.
    pub fn discard(&mut self) {
        self.uncommitted.clear();
    }

    /// Forgets the cached states of `partition`: another processor takes
    /// it over, and what this one holds would go stale.
    pub fn forget_partition(&mut self, partition: u32) {
        self.cache.forget(partition);
    }

    /// Accounts held decoded between batches.
    pub fn cached_accounts(&self) -> usize {
        self.cache.len()
    }

    fn load<'c, L: Ledger>(
        accounts: &'c mut HashMap<String, Cached>,
        cache: &mut cache::AccountCache,
        store: &L,
        partition: u32,
        account: &str,
    ) -> Result<&'c mut Cached, L::Error> {
        if !accounts.contains_key(account) {
            let state = match cache.take(partition, account) {
                Some(state) => state,
                None => Box::new(store.account_lazy(partition, account)?.unwrap_or_default()),
            };
            let registered = state.next_due;
            accounts.insert(account.to_string(), Cached { state, dirty: false, registered, encoded: 0 });
        }
        Ok(accounts.get_mut(account).expect("inserted above"))
    }

    /// Runs `inputs` of `partition` through the core and stages the result
    /// in `batch`: account states, their timers, dedupe keys and the new
    /// progress. `progress` is the partition's progress before the batch and
    /// is advanced past the last input. Nothing is written to the store; the
    /// caller commits `batch`.
    ///
    /// A panic while processing an input makes it a dead letter
    /// ([`INTERNAL_ERROR`]) and nothing else (see `isolate.rs`).
    pub fn process<L: Ledger, W: StagedWrites, S: Sink>(
        &mut self,
        store: &L,
        partition: u32,
        progress: &mut Progress,
        inputs: &[Input<'_>],
        batch: &mut W,
        sink: &mut S,
    ) -> Result<BatchStats, L::Error> {
        let before = *progress;
        let mut poisoned: Vec<usize> = Vec::new();
        loop {
            let mut muted =
                isolate::Muted { sink: &mut *sink, from: poisoned.last().copied().unwrap_or(0), at: 0 };
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.attempt(store, partition, progress, inputs, batch, &mut muted, &poisoned)
            }));
            match attempt {
                Ok(result) => return result,
                Err(panic) => {
                    let at = self.position;
                    tracing::error!(
                        partition,
                        position = at,
                        "processing an input panicked: {}; it becomes a dead letter ({INTERNAL_ERROR}) and the \
                         batch is processed again without it",
                        isolate::panic_text(panic.as_ref())
                    );
                    poisoned.push(at);
                    *progress = before;
                    // Whatever the panic interrupted is dropped; the states
                    // are read again from the store, as they were committed.
                    self.core = Core::with_timeline(self.core.timeline().clone());
                    self.decoder = None;
                    self.effects = Effects::default();
                    self.accounts.clear();
                }
            }
        }
    }

    /// One pass over a batch (see [`Processor::process`]): the work at the
    /// places in `poisoned` becomes a dead letter untouched.
    #[expect(
        clippy::too_many_arguments,
        reason = "the arguments of `process`, which runs it again after a panic, and the places to skip"
    )]
    fn attempt<L: Ledger, W: StagedWrites, S: Sink>(
        &mut self,
        store: &L,
        partition: u32,
        progress: &mut Progress,
        inputs: &[Input<'_>],
        batch: &mut W,
        sink: &mut isolate::Muted<'_, S>,
        poisoned: &[usize],
    ) -> Result<BatchStats, L::Error> {
        let mut stats = BatchStats::default();
        let window = self.core.rules().dedupe_window_ms;
        let clock_limit = self.core.rules().max_accounts_per_clock as u64;
        self.accounts.clear();
        self.seen.clear();
        self.cut_clock = None;
        let mut queue: VecDeque<Work<'_>> = inputs.iter().copied().map(Work::Input).collect();
        let mut decoder = self.decoder.take().unwrap_or_default();
        let mut position = 0;
        while let Some(work) = queue.pop_front() {
            (self.position, sink.at) = (position, position);
            position += 1;
            let (offset, payload, input) = work.parts();
            if let Some(input) = input {
                stats.inputs += 1;
                progress.next_offset = progress.next_offset.max(input.offset + 1);
            }
            // A derived event is a dead letter as an input of its source's offset.
            let fallback = Input { offset, key: &[], payload, timestamp: None };
            let source = input.unwrap_or(&fallback);
            let mut dead_letter = |reason: &'static str, detail: &str| {
                stats.dead_letters += 1;
                sink.dead_letter(source, reason, detail);
            };
            if poisoned.contains(&self.position) {
                dead_letter(
                    INTERNAL_ERROR,
                    "processing it panicked (a bug: the engine logged where); nothing of it was applied",
                );
                continue;
            }
            let event = match decoder.decode(payload) {
                Ok(event) => event,
                Err(e) => {
                    dead_letter(e.reason(), &e.to_string());
                    continue;
                }
            };
            if let Some(input) = input {
                if let Err(refusal) = self.admission.check(input, &event, progress.stream_time) {
                    stats.dead_letters += 1;
                    sink.dead_letter(input, refusal.reason(), &refusal.to_string());
                    continue;
                }
            }
            if let Some(first_seen) = self.first_seen(store, partition, event.event_id, progress)? {
                stats.duplicates += 1;
                sink.duplicate(offset, &event, first_seen);
                continue;
            }
            #[cfg(feature = "failpoints")]
            if self.panic_on.as_deref() == Some(event.event_id) {
                panic!("a test asked for a panic on {}", event.event_id);
            }
            let outcome = match event.body {
                EventBody::Clock => self.run_clock(store, partition, &event, &mut stats)?,
                _ => self.apply(store, partition, &event)?,
            };
            if !report_outcome(outcome, source, &event, &self.effects.records, &mut stats, sink) {
                continue;
            }
            self.seen.insert(event.event_id.to_string(), event.occurred_at);
            progress.stream_time = progress.stream_time.max(event.occurred_at);
            // Derived events go after this one: inline, or to the sink.
            for (i, d) in self.effects.derived.drain(..).enumerate() {
                if self.inline_derived {
                    queue.insert(i, Work::Derived(offset, d));
                } else {
                    sink.derived(offset, &d);
                }
            }
            let derived_next = matches!(queue.front(), Some(Work::Derived(..)));
            if self.end_after_clocks && stats.clock_accounts >= clock_limit && !derived_next {
                stats.unprocessed = queue.len() as u64;
                break;
            }
        }
        self.decoder = Some(decoder);
        self.stage(partition, batch);
        batch.set_progress(partition, *progress, window);
        // The states written are now as the batch commits them (the few
        // loaded but unchanged are not worth keeping).
        if self.cache.capacity() > 0 {
            let written = self.accounts.drain().filter(|(_, c)| c.dirty);
            self.uncommitted.extend(written.map(|(account, c)| (partition, account, c.state, c.encoded)));
        }
        Ok(stats)
    }

    /// When `event_id` was first seen within the dedupe window, if it was:
    /// in this batch, or in the store.
    fn first_seen<L: Ledger>(
        &self,
        store: &L,
        partition: u32,
        event_id: &str,
        progress: &Progress,
    ) -> Result<Option<Timestamp>, L::Error> {
        let window = self.core.rules().dedupe_window_ms;
        let horizon = progress.stream_time.0.saturating_sub(window);
        match self.seen.get(event_id) {
            Some(at) => Ok(Some(*at).filter(|at| at.0 >= horizon)),
            None => store.seen(partition, event_id, progress.stream_time, window),
        }
    }

    /// A clock event: fires the partition's due timers and counts them; a
    /// clock that left accounts due is remembered for the caller.
    fn run_clock<L: Ledger>(
        &mut self,
        store: &L,
        partition: u32,
        clock: &Event<'_>,
        stats: &mut BatchStats,
    ) -> Result<Outcome, L::Error> {
        self.effects.clear();
        let (core, effects) = (&self.core, &mut self.effects);
        let fired = fire_timers(core, &mut self.accounts, &mut self.cache, effects, store, partition, clock)?;
        stats.clock_accounts += fired.accounts as u64;
        if fired.cut {
            stats.clocks_cut += 1;
            self.cut_clock = Some((clock.occurred_at, clock.event_id.to_string()));
        }
        Ok(match fired.accounts {
            0 => Outcome::NoEffect(NoEffect::NothingDue),
            _ => Outcome::Applied(self.effects.records.len()),
        })
    }

    /// Applies one admitted, new event of an account, with the retained
    /// purchases it needs. What it produced is in `self.effects`.
    fn apply<L: Ledger>(
        &mut self,
        store: &L,
        partition: u32,
        event: &Event<'_>,
    ) -> Result<Outcome, L::Error> {
        self.effects.clear();
        let cached = Self::load(&mut self.accounts, &mut self.cache, store, partition, event.account_id)?;
        match self.core.purchases_needed(&cached.state, event) {
            PurchasesNeeded::None => {}
            PurchasesNeeded::BackTo(search) => {
                store.load_purchases_back_to(partition, event.account_id, &mut cached.state, search)?
            }
            PurchasesNeeded::All => store.load_purchases(partition, event.account_id, &mut cached.state)?,
        }
        let outcome = self.core.apply(&mut cached.state, event, &mut self.effects);
        cached.dirty |= !matches!(outcome, Outcome::Rejected(_));
        Ok(outcome)
    }

    /// Stages changed accounts and their timers, and the dedupe keys, sorted
    /// so the batch (and so the store's bytes) never depends on hash order.
    fn stage<W: StagedWrites>(&mut self, partition: u32, batch: &mut W) {
        let mut touched: Vec<_> =
            self.accounts.iter_mut().filter(|(_, c)| c.dirty).map(|(a, c)| (SortKey::of(a), c)).collect();
        touched.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (SortKey(_, account), cached) in touched {
            let due = self.core.next_due(&cached.state);
            batch.set_timer(partition, account, cached.registered, due);
            cached.state.next_due = due;
            let value = batch.put_account(partition, account, &mut cached.state);
            // Cached between batches without their history (read again by
            // the few events that need it): a few hundred bytes per account.
            cached.state.purchases.unload_stored();
            cached.encoded =
                value + cached.state.purchases.iter().map(|p| p.approx_encoded_len()).sum::<usize>();
        }
        let mut seen: Vec<_> = self.seen.iter().map(|(id, at)| (SortKey::of(id), at)).collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (SortKey(_, event_id), at) in seen {
            batch.put_seen(partition, event_id, *at);
        }
    }
}

/// Tells the sink what an admitted, new event became (`records`: what it
/// produced). False if the core rejected it: a dead letter, nothing else.
fn report_outcome<S: Sink>(
    outcome: Outcome,
    source: &Input<'_>,
    event: &Event<'_>,
    records: &[AccrualRecord],
    stats: &mut BatchStats,
    sink: &mut S,
) -> bool {
    match outcome {
        Outcome::Applied(_) => {
            stats.accrued += 1;
            stats.records += records.len() as u64;
            sink.accrued(source.offset, event, records);
        }
        Outcome::NoEffect(why) => {
            stats.no_effect += 1;
            sink.no_effect(source.offset, event, why);
        }
        Outcome::Rejected(rejection) => {
            stats.dead_letters += 1;
            sink.dead_letter(source, rejection.reason(), &rejection.to_string());
            return false;
        }
    }
    true
}

/// A string to sort by, with its first 16 bytes as a big-endian number
/// (zero-padded): numbers compare as those prefixes do, so most of a sort's
/// comparisons of account and event ids (which share their first bytes:
/// `acc-000…`) are one integer comparison instead of a byte loop.
#[derive(PartialEq, Eq)]
struct SortKey<'a>(u128, &'a str);

impl<'a> SortKey<'a> {
    fn of(s: &'a str) -> SortKey<'a> {
        let mut head = [0u8; 16];
        let n = s.len().min(16);
        head[..n].copy_from_slice(&s.as_bytes()[..n]);
        SortKey(u128::from_be_bytes(head), s)
    }
}

impl Ord for SortKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0).then_with(|| self.1.cmp(other.1))
    }
}

impl PartialOrd for SortKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::SortKey;
    use proptest::prelude::*;

    proptest! {
        /// Sorting by the key orders strings exactly as `str`'s own order
        /// does, including ids that share 16 bytes, prefixes of each other
        /// and NUL bytes.
        #[test]
        fn sort_key_orders_as_strings(a in "(acc-000)?[01é\\x00]{0,12}", b in "(acc-000)?[01é\\x00]{0,12}") {
            prop_assert_eq!(SortKey::of(&a).cmp(&SortKey::of(&b)), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(SortKey::of(&b).cmp(&SortKey::of(&a)), b.as_str().cmp(a.as_str()));
            prop_assert_eq!(SortKey::of(&a).cmp(&SortKey::of(&a)), std::cmp::Ordering::Equal);
        }
    }
}
