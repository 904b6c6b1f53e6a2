//! The accrual core: `(account state, event, rules) -> (new state, records)`.
//!
//! Pure and deterministic: no clock, no I/O, no randomness, no hash-map
//! iteration. The Kafka pipeline, `accrual simulate`, the benchmarks and the
//! tests all drive this same code.

mod clawback;
mod earn;
mod record;

pub use record::{AccrualRecord, RecordKind, json_str};

use crate::events::{Event, EventBody};
use crate::rules::Rules;
use crate::state::AccountState;
use crate::time::{self, Timestamp};
use std::sync::Arc;

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This many records were appended.
    Applied(usize),
    /// A valid event that moves no balance.
    NoEffect(NoEffect),
    /// A well-formed event the program cannot apply: it goes to the
    /// dead-letter topic, and the account is left untouched.
    Rejected(Rejection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoEffect {
    /// The MCC is on an exclusion list: no rule pays.
    Excluded,
    /// No rule's conditions matched (or every match was capped to zero).
    NoRuleMatched,
    /// A refund or reversal of a purchase not in state (never seen, earned
    /// nothing, or older than the refund window).
    OriginalNotFound,
    /// The purchase is already fully refunded.
    AlreadyRefunded,
    /// A partial refund so small that rounding leaves nothing to take back
    /// yet (later refunds still add up exactly).
    NothingToClawBack,
}

impl NoEffect {
    pub fn reason(self) -> &'static str {
        match self {
            NoEffect::Excluded => "excluded_mcc",
            NoEffect::NoRuleMatched => "no_rule_matched",
            NoEffect::OriginalNotFound => "original_not_found",
            NoEffect::AlreadyRefunded => "already_refunded",
            NoEffect::NothingToClawBack => "nothing_to_claw_back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("currency {found} is not the program's currency {expected}")]
    Currency { found: String, expected: String },
    #[error("amounts overflow the decimal range")]
    Overflow,
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Currency { .. } => "currency_mismatch",
            Rejection::Overflow => "overflow",
        }
    }
}

/// Applies events to account states under one rules version. Holds scratch
/// space reused across events, so keep one per worker.
pub struct Core {
    rules: Arc<Rules>,
    scratch: earn::Scratch,
}

impl Core {
    pub fn new(rules: Arc<Rules>) -> Core {
        let scratch = earn::Scratch::new(&rules);
        Core { rules, scratch }
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Applies `event` to `state` (the event's account), appending records
    /// to `out`. On [`Outcome::Rejected`] the state is unchanged.
    pub fn apply(
        &mut self,
        state: &mut AccountState,
        event: &Event<'_>,
        out: &mut Vec<AccrualRecord>,
    ) -> Outcome {
        let rules = &*self.rules;
        let currency = match &event.body {
            EventBody::Purchase(p) => Some(p.currency),
            EventBody::Refund(r) => Some(r.currency),
            EventBody::Reversal(r) => r.currency,
        };
        if let Some(found) = currency.filter(|c| *c != rules.currency) {
            return Outcome::Rejected(Rejection::Currency {
                found: found.to_string(),
                expected: rules.currency.clone(),
            });
        }
        advance(rules, state, event.occurred_at);
        match &event.body {
            EventBody::Purchase(p) => earn::purchase(rules, &mut self.scratch, state, event, p, out),
            EventBody::Refund(r) => {
                clawback::refund(rules, state, event, r.original_event_id, Some(r.amount), "refund", out)
            }
            EventBody::Reversal(r) => {
                clawback::refund(rules, state, event, r.original_event_id, r.amount, "reversal", out)
            }
        }
    }
}

/// Moves the account's watermark forward and drops what has aged out of
/// the refund window: retained purchases, and cap counters of periods that
/// ended before it.
fn advance(rules: &Rules, state: &mut AccountState, at: Timestamp) {
    let old_day = state.watermark.0.div_euclid(time::MS_PER_DAY);
    if at <= state.watermark {
        return;
    }
    state.watermark = at;
    let horizon = Timestamp(at.0.saturating_sub(rules.refund_window_ms));
    let aged = state.purchases.iter().take_while(|p| p.at < horizon).count();
    if aged > 0 {
        state.purchases.drain(..aged);
    }
    if at.0.div_euclid(time::MS_PER_DAY) != old_day {
        let tz = rules.timezone;
        state.counters.retain(|c| match rules.cap(&c.cap).map(|cap| cap.period) {
            Some(crate::rules::CapPeriod::Month) => time::month_end(c.period, tz) > horizon,
            Some(crate::rules::CapPeriod::Quarter) => time::quarter_end(c.period, tz) > horizon,
            // Transaction caps keep no counters; a cap no longer in the rules
            // can never be consulted again.
            _ => false,
        });
    }
}
