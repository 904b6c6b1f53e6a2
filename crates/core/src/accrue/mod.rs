//! The accrual core: `(account state, event, rules) -> (new state, records)`.
//!
//! Pure and deterministic: no clock, no I/O, no randomness, no hash-map
//! iteration. The Kafka pipeline, `accrual simulate`, the benchmarks and the
//! tests all drive this same code.
//!
//! Before any event is applied, the account is brought to the event's time
//! ([`lifecycle`]): pending rewards due are released, lots due burn, a tier
//! period that ended is evaluated. So a release or an expiry happens at the
//! same point of an account's history whichever event (or `clock`) brings
//! the account past its instant.

mod account;
mod clawback;
mod credit;
mod earn;
mod lifecycle;
mod record;
mod redeem;
mod tiers;
mod view;

pub use earn::caps_that_cut;
pub use record::{AccrualId, AccrualRecord, RecordKind, RecordNames, RecordText, json_str};
pub use view::{BalanceView, CapUsage, ProgramView, TierProgress, balance_view};

use crate::events::{Event, EventBody};
use crate::rules::{Rules, Timeline};
use crate::state::{AccountState, Search};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::sync::Arc;

/// What the stored purchases of an account must be loaded for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchasesNeeded<'e> {
    None,
    /// Newest first, back to the newest purchase the search accepts (all
    /// of them when none does).
    BackTo(Search<'e>),
    All,
}

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
    /// No rule's conditions matched (a rule that matched but was capped to
    /// nothing has a `capped` record instead).
    NoRuleMatched,
    /// A refund or reversal of a purchase not in state (never seen, earned
    /// nothing, or older than the refund window).
    OriginalNotFound,
    /// The purchase is already fully refunded.
    AlreadyRefunded,
    /// A partial refund so small that rounding leaves nothing to take back
    /// yet (later refunds still add up exactly).
    NothingToClawBack,
    /// A clearing of an authorisation: its pending rewards may now release.
    Cleared,
    /// Enrolment of an account already enrolled.
    AlreadyEnrolled,
    /// No bonus is configured for this event.
    NoBonus,
    /// A referral recorded; the bonus comes with the first qualifying purchase.
    ReferralRecorded,
    /// A second referral for an already referred account.
    AlreadyReferred,
    /// The referrer has had the most referral bonuses of the period.
    ReferralLimit,
    /// The statement day was set.
    StatementDaySet,
    /// A clock event found no account due.
    NothingDue,
}

impl NoEffect {
    pub fn reason(self) -> &'static str {
        match self {
            NoEffect::Excluded => "excluded_mcc",
            NoEffect::NoRuleMatched => "no_rule_matched",
            NoEffect::OriginalNotFound => "original_not_found",
            NoEffect::AlreadyRefunded => "already_refunded",
            NoEffect::NothingToClawBack => "nothing_to_claw_back",
            NoEffect::Cleared => "cleared",
            NoEffect::AlreadyEnrolled => "already_enrolled",
            NoEffect::NoBonus => "no_bonus_configured",
            NoEffect::ReferralRecorded => "referral_recorded",
            NoEffect::AlreadyReferred => "already_referred",
            NoEffect::ReferralLimit => "referral_limit_reached",
            NoEffect::StatementDaySet => "statement_day_set",
            NoEffect::NothingDue => "nothing_due",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("currency {found} is not the program's currency {expected}")]
    Currency { found: String, expected: String },
    #[error("amounts overflow the decimal range")]
    Overflow,
    #[error("clock events have no account; they are handled by the pipeline")]
    Clock,
}

impl Rejection {
    /// Every reason label, for metrics to start at zero.
    pub const REASONS: [&'static str; 3] = ["currency_mismatch", "overflow", "clock_without_partition"];

    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Currency { .. } => "currency_mismatch",
            Rejection::Overflow => "overflow",
            Rejection::Clock => "clock_without_partition",
        }
    }
}

/// An event the core asks to be delivered to another account (through the
/// input topic, keyed by that account): a referrer's bonus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedEvent {
    pub event_id: String,
    pub account_id: String,
    /// The event as JSON, in the input schema.
    pub payload: Vec<u8>,
}

/// What applying events produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    pub records: Vec<AccrualRecord>,
    pub derived: Vec<DerivedEvent>,
}

impl Effects {
    pub fn clear(&mut self) {
        self.records.clear();
        self.derived.clear();
    }
}

/// Explanations are appended piece by piece: `write!` goes through
/// `fmt::write` for every piece, a measurable share of each purchase.
pub(crate) trait Explain {
    fn s(&mut self, text: &str) -> &mut Self;
    /// A decimal, as [`crate::money::Dec`] writes it.
    fn d(&mut self, value: Decimal) -> &mut Self;
}

impl Explain for String {
    fn s(&mut self, text: &str) -> &mut Self {
        self.push_str(text);
        self
    }

    fn d(&mut self, value: Decimal) -> &mut Self {
        crate::money::push_decimal(self, value);
        self
    }
}

/// Who, when and under which rules: what every record needs.
pub(crate) struct Ctx<'a> {
    pub rules: &'a Rules,
    pub event_id: &'a str,
    pub account_id: &'a str,
}

impl Ctx<'_> {
    /// A record about a program's balance, stamped with its balances after.
    #[expect(
        clippy::too_many_arguments,
        reason = "a record's fields, written once; a builder would copy them on the hot path"
    )]
    pub fn record(
        &self,
        state: &AccountState,
        program: &str,
        rule_id: &str,
        kind: RecordKind,
        accrual_id: AccrualId<'_>,
        amount: Decimal,
        at: Timestamp,
        explanation: &str,
    ) -> AccrualRecord {
        self.purchase_record(state, program, rule_id, kind, accrual_id, amount, at, explanation, None)
    }

    /// A record about a program's balance; for a rule's outcome on a
    /// purchase, with the purchase's code and the category that paid.
    #[expect(clippy::too_many_arguments, reason = "as `record`, plus the purchase it is about")]
    pub fn purchase_record(
        &self,
        state: &AccountState,
        program: &str,
        rule_id: &str,
        kind: RecordKind,
        accrual_id: AccrualId<'_>,
        amount: Decimal,
        at: Timestamp,
        explanation: &str,
        origin: Option<Origin<'_>>,
    ) -> AccrualRecord {
        let balance = state.balance(program);
        let decimals = balance.map_or(0, |b| b.decimals);
        let unit = balance.map_or("", |b| &b.unit);
        let category = origin.map_or("", |o| o.category);
        let names = RecordNames {
            program,
            rule_id,
            unit,
            rules_version: &self.rules.version,
            category,
            balances: "",
        };
        AccrualRecord {
            text: RecordText::new(accrual_id, self.event_id, self.account_id, names, explanation),
            kind,
            amount: crate::money::with_scale(amount, decimals),
            balance_after: crate::money::with_scale(balance.map_or(Decimal::ZERO, |b| b.available), decimals),
            pending_after: crate::money::with_scale(balance.map_or(Decimal::ZERO, |b| b.pending), decimals),
            value: None,
            occurred_at: at,
            mcc: origin.map(|o| o.mcc),
        }
    }

    /// A record about the account itself (tier, choices): no program, but
    /// every balance of the account.
    pub fn account_record(
        &self,
        state: &AccountState,
        kind: RecordKind,
        accrual_id: &str,
        rule_id: &str,
        at: Timestamp,
        explanation: &str,
    ) -> AccrualRecord {
        let mut balances = String::new();
        let fixed = |d, decimals| crate::money::with_scale(d, decimals);
        record::push_balances(
            &mut balances,
            state.balances.iter().map(|b| {
                (&*b.program, &*b.unit, fixed(b.available, b.decimals), fixed(b.pending, b.decimals))
            }),
        );
        let names = RecordNames {
            rule_id,
            rules_version: &self.rules.version,
            balances: &balances,
            ..RecordNames::default()
        };
        AccrualRecord {
            text: RecordText::new(
                AccrualId::Text(accrual_id),
                self.event_id,
                self.account_id,
                names,
                explanation,
            ),
            kind,
            amount: Decimal::ZERO,
            balance_after: Decimal::ZERO,
            pending_after: Decimal::ZERO,
            value: None,
            occurred_at: at,
            mcc: None,
        }
    }
}

/// The purchase a rule's record is about: its merchant category code, and
/// the category of the rule's conditions it fell in (empty if none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub mcc: crate::events::Mcc,
    pub category: &'a str,
}

/// Applies events to account states under a timeline of rules versions,
/// each event under the version in force at its time. Holds scratch space
/// reused across events, so keep one per worker.
pub struct Core {
    timeline: Arc<Timeline>,
    /// One per version (sized by its rules).
    scratch: Vec<earn::Scratch>,
}

impl Core {
    pub fn new(rules: Arc<Rules>) -> Core {
        Core::with_timeline(Arc::new(Timeline::from(rules)))
    }

    pub fn with_timeline(timeline: Arc<Timeline>) -> Core {
        let scratch = timeline.versions().iter().map(|v| earn::Scratch::new(&v.rules)).collect();
        Core { timeline, scratch }
    }

    /// The first version: what every version shares (currency, windows,
    /// bounds, programs) is read from it.
    pub fn rules(&self) -> &Arc<Rules> {
        self.timeline.first()
    }

    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// Applies `event` to `state` (the event's account), appending records
    /// and derived events to `out`. On [`Outcome::Rejected`] the state is
    /// unchanged.
    pub fn apply(&mut self, state: &mut AccountState, event: &Event<'_>, out: &mut Effects) -> Outcome {
        let version = self.timeline.index_at(event.occurred_at);
        let rules = &*self.timeline.versions()[version].rules;
        let currency = match &event.body {
            EventBody::Purchase(p) => Some(p.currency),
            EventBody::Refund(r) => Some(r.currency),
            EventBody::Reversal(r) => r.currency,
            EventBody::Clock => return Outcome::Rejected(Rejection::Clock),
            _ => None,
        };
        if let Some(found) = currency.filter(|c| *c != rules.currency) {
            return Outcome::Rejected(Rejection::Currency {
                found: found.to_string(),
                expected: rules.currency.clone(),
            });
        }
        let ctx = Ctx { rules, event_id: event.event_id, account_id: event.account_id };
        let before = out.records.len();
        self.advance(state, event.account_id, event.occurred_at, event.event_id, out);
        let timed = out.records.len() - before;
        let outcome = match &event.body {
            EventBody::Purchase(p) => earn::purchase(&ctx, &mut self.scratch[version], state, event, p, out),
            EventBody::Refund(r) => clawback::refund(
                &ctx,
                state,
                event,
                r.original_event_id,
                Some(r.amount),
                "refund",
                &mut out.records,
            ),
            EventBody::Reversal(r) => clawback::refund(
                &ctx,
                state,
                event,
                r.original_event_id,
                r.amount,
                "reversal",
                &mut out.records,
            ),
            EventBody::Redemption(r) => redeem::redeem(&ctx, state, event, r, &mut out.records),
            EventBody::Enrollment => account::enrollment(&ctx, state, event, &mut out.records),
            EventBody::Referral { referrer } => account::referral(state, referrer),
            EventBody::ReferralBonus { referred } => {
                account::referral_bonus(&ctx, state, event, referred, &mut out.records)
            }
            EventBody::CategoryChoice(c) => account::category_choice(&ctx, state, event, c, &mut out.records),
            EventBody::StatementCycle { statement_day } => {
                state.statement_day = Some(*statement_day);
                Outcome::NoEffect(NoEffect::StatementDaySet)
            }
            EventBody::Clock => Outcome::Rejected(Rejection::Clock),
        };
        match outcome {
            // Time-based records are part of what the event applied.
            Outcome::NoEffect(_) if timed > 0 => Outcome::Applied(out.records.len() - before),
            Outcome::Applied(_) => Outcome::Applied(out.records.len() - before),
            other => other,
        }
    }

    /// Brings an account to `at` (for an event of its own, or a `clock`
    /// event `trigger` of its partition): releases, expiries, period ends.
    /// What falls due up to a version's instant is done under the version
    /// in force until then (so a period that ends at the instant is closed
    /// by the rules it ran under), the rest under the version in force at
    /// `at`. Returns the number of records appended.
    pub fn advance(
        &self,
        state: &mut AccountState,
        account_id: &str,
        at: Timestamp,
        trigger: &str,
        out: &mut Effects,
    ) -> usize {
        let before = out.records.len();
        let mut from = state.watermark;
        while let Some(change) = self.timeline.next_change_after(from).filter(|&change| change <= at) {
            let ctx = Ctx { rules: self.timeline.at(from), event_id: trigger, account_id };
            lifecycle::advance(&ctx, state, change, &mut out.records);
            from = change;
        }
        let ctx = Ctx { rules: self.timeline.at(at), event_id: trigger, account_id };
        lifecycle::advance(&ctx, state, at, &mut out.records);
        out.records.len() - before
    }

    /// Which purchases of the account not loaded (see
    /// [`crate::state::Purchases`]) applying `event` may look at: a refund,
    /// a reversal or a clearing searches back to the purchase it names;
    /// time passing may prune the oldest, which needs them all. The caller
    /// loads them first; other events never need them.
    pub fn purchases_needed<'e>(&self, state: &AccountState, event: &Event<'e>) -> PurchasesNeeded<'e> {
        if state.purchases.is_complete() {
            return PurchasesNeeded::None;
        }
        if self.prunes_purchases(state, event.occurred_at) {
            return PurchasesNeeded::All;
        }
        match &event.body {
            EventBody::Refund(r) => PurchasesNeeded::BackTo(Search::any(r.original_event_id)),
            EventBody::Reversal(r) => PurchasesNeeded::BackTo(Search::any(r.original_event_id)),
            EventBody::Purchase(p) => p
                .clears
                .map_or(PurchasesNeeded::None, |auth| PurchasesNeeded::BackTo(Search::authorized(auth))),
            _ => PurchasesNeeded::None,
        }
    }

    /// Whether bringing the account to `at` drops purchases that left the
    /// refund window (so they must be loaded first).
    pub fn prunes_purchases(&self, state: &AccountState, at: Timestamp) -> bool {
        lifecycle::prunes_purchases(self.timeline.at(at), state, at)
    }

    /// When the account next needs attention without an event of its own:
    /// the first thing due under the version in force when it falls due.
    pub fn next_due(&self, state: &AccountState) -> Option<Timestamp> {
        let mut from = state.watermark;
        let mut due = lifecycle::next_due(self.timeline.at(from), state);
        while let Some(change) = self.timeline.next_change_after(from) {
            if due.is_some_and(|due| due <= change) {
                break;
            }
            // The instant itself is still the earlier version's (see `advance`).
            from = change;
            let after = Timestamp(change.0.saturating_add(1));
            due = lifecycle::next_due(self.timeline.at(change), state).map(|due| due.max(after));
        }
        due
    }
}
