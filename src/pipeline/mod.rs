//! Batch processing of one input partition: decode, dedupe, apply the core,
//! and stage everything for ONE atomic ledger commit. Transport-free: the
//! file-based `simulate` and the Kafka engine feed it the same way, and a
//! [`Sink`] receives what each input offset became.
//!
//! Every input offset ends as exactly one of: records, no effect, a counted
//! duplicate, or a dead letter with a reason.

use crate::accrue::{AccrualRecord, Core, NoEffect, Outcome};
use crate::events::{Decoder, Event};
use crate::rules::Rules;
use crate::state::AccountState;
use crate::store::{LedgerBatch, Progress, Store, StoreError};
use crate::time::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;

/// One input message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub offset: u64,
    /// The message key (the account id, by convention); empty if none.
    pub key: &'a [u8],
    pub payload: &'a [u8],
}

/// Receives what each input became, in input order.
pub trait Sink {
    fn accrued(&mut self, offset: u64, event: &Event<'_>, records: &[AccrualRecord]);
    fn no_effect(&mut self, offset: u64, event: &Event<'_>, why: NoEffect);
    fn duplicate(&mut self, offset: u64, event: &Event<'_>, first_seen: Timestamp);
    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str);
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
}

/// Processes batches of one partition at a time. Keep one per worker.
pub struct Processor {
    core: Core,
    decoder: Decoder,
    records: Vec<AccrualRecord>,
    /// Account states touched by the current batch (read once, written
    /// once), with whether they changed.
    accounts: HashMap<String, (AccountState, bool)>,
    /// Event ids first seen in the current batch.
    seen: HashMap<String, Timestamp>,
}

impl Processor {
    pub fn new(rules: Arc<Rules>) -> Processor {
        Processor {
            core: Core::new(rules),
            decoder: Decoder::new(),
            records: Vec::with_capacity(16),
            accounts: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &Arc<Rules> {
        self.core.rules()
    }

    /// Runs `inputs` of `partition` through the core and stages the result
    /// in `batch`: account states, dedupe keys and the new progress.
    /// `progress` is the partition's progress before the batch and is
    /// advanced past the last input. Nothing is written to the store; the
    /// caller commits `batch`.
    pub fn process(
        &mut self,
        store: &Store,
        partition: u32,
        progress: &mut Progress,
        inputs: &[Input<'_>],
        batch: &mut LedgerBatch<'_>,
        sink: &mut impl Sink,
    ) -> Result<BatchStats, StoreError> {
        let mut stats = BatchStats::default();
        let window = self.core.rules().dedupe_window_ms;
        self.accounts.clear();
        self.seen.clear();
        for input in inputs {
            stats.inputs += 1;
            progress.next_offset = progress.next_offset.max(input.offset + 1);
            let event = match self.decoder.decode(input.payload) {
                Ok(event) => event,
                Err(e) => {
                    stats.dead_letters += 1;
                    sink.dead_letter(input, e.reason(), &e.to_string());
                    continue;
                }
            };
            let horizon = progress.stream_time.0.saturating_sub(window);
            let first_seen = match self.seen.get(event.event_id) {
                Some(at) => Some(*at).filter(|at| at.0 >= horizon),
                None => store.seen(partition, event.event_id, progress.stream_time, window)?,
            };
            if let Some(first_seen) = first_seen {
                stats.duplicates += 1;
                sink.duplicate(input.offset, &event, first_seen);
                continue;
            }
            if !self.accounts.contains_key(event.account_id) {
                let state = store.account(partition, event.account_id)?.unwrap_or_default();
                self.accounts.insert(event.account_id.to_string(), (state, false));
            }
            let Some((state, dirty)) = self.accounts.get_mut(event.account_id) else { continue };
            self.records.clear();
            let outcome = self.core.apply(state, &event, &mut self.records);
            *dirty |= !matches!(outcome, Outcome::Rejected(_));
            match outcome {
                Outcome::Applied(_) => {
                    stats.accrued += 1;
                    stats.records += self.records.len() as u64;
                    sink.accrued(input.offset, &event, &self.records);
                }
                Outcome::NoEffect(why) => {
                    stats.no_effect += 1;
                    sink.no_effect(input.offset, &event, why);
                }
                Outcome::Rejected(rejection) => {
                    stats.dead_letters += 1;
                    sink.dead_letter(input, rejection.reason(), &rejection.to_string());
                    continue;
                }
            }
            self.seen.insert(event.event_id.to_string(), event.occurred_at);
            progress.stream_time = progress.stream_time.max(event.occurred_at);
        }
        // Sorted so the staged batch (and so the store's bytes) never depends
        // on hash-map order.
        let mut touched: Vec<_> = self.accounts.iter().filter(|(_, (_, dirty))| *dirty).collect();
        touched.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (account, (state, _)) in touched {
            batch.put_account(partition, account, state);
        }
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (event_id, at) in seen {
            batch.put_seen(partition, event_id, *at);
        }
        batch.set_progress(partition, *progress, window);
        Ok(stats)
    }
}
