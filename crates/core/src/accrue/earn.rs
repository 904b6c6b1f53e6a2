//! Earning on a purchase: exclusions, conditions, effects, rounding, caps
//! and exclusive groups, in the rules' evaluation order.
//!
//! Two phases keep an event atomic: first every rule's grant is planned
//! against the state plus what earlier rules of this event consumed, with
//! checked arithmetic; only when the whole plan is valid is it committed.
//! A plan keeps the numbers behind each grant; the explanation text is
//! written from them at commit, so grants that lose in a group or are
//! never committed cost no text.

use super::credit::{self, Credited};
use super::{
    AccrualId, AccrualRecord, Ctx, Effects, Explain, NoEffect, Origin, Outcome, RecordKind, Rejection,
    account, lifecycle, tiers,
};
use crate::events::{Event, Purchase, PurchaseStatus};
use crate::money::{self, RoundingMode};
use crate::rules::{Candidates, Cap, CapMeasure, CapPeriod, Effect, ExpiryPolicy, Rule, Rules, TierMeasure};
use crate::state::{AccountState, CapUse, RetainedAccrual, RetainedPurchase, Search};
use crate::time::{self, LocalTime};
use rust_decimal::Decimal;

/// Per-worker scratch space, sized to the rules, reused across events.
pub(super) struct Scratch {
    /// This event's reward per rule (for `multiply` effects).
    results: Vec<Decimal>,
    group_done: Vec<bool>,
    /// Cap usage planned by earlier rules of this event, per cap.
    pending: Vec<Decimal>,
    grants: Vec<Grant>,
    /// Rules that matched but whose caps left nothing to pay: each gets a
    /// `capped` record saying so.
    capped: Vec<Grant>,
    /// The cap steps of this event's planned grants (see [`Grant::steps`]).
    steps: Vec<CapStep>,
    /// The explanation being written (copied into its record).
    explanation: String,
}

impl Scratch {
    pub(super) fn new(rules: &Rules) -> Scratch {
        Scratch {
            results: vec![Decimal::ZERO; rules.rules.len()],
            group_done: vec![false; rules.groups.len()],
            pending: vec![Decimal::ZERO; rules.caps.len()],
            grants: Vec::new(),
            capped: Vec::new(),
            steps: Vec::new(),
            explanation: String::with_capacity(256),
        }
    }
}

struct Grant {
    rule: usize,
    /// Zero when the rule's caps left nothing.
    amount: Decimal,
    /// The category of the rule's conditions the purchase fell in.
    category: Option<usize>,
    /// The numbers its explanation shows: the text is written only for
    /// the grants committed (not for the members of an exclusive group
    /// that lose, nor for a plan an overflow rejects).
    why: Why,
    /// The rule's caps, in its order: a range of [`Scratch::steps`] (no
    /// allocation of its own per grant).
    steps: std::ops::Range<usize>,
}

/// A cap of a grant's rule: what was left of it, whether it cut the
/// reward, and what the grant uses.
struct CapStep {
    cap: usize,
    left: Decimal,
    capped: bool,
    used: Decimal,
}

/// What a rule's reward was computed from, in the order of its steps.
struct Why {
    /// The amount that earns (after spend caps).
    eligible: Decimal,
    /// `eligible` in full units, when the rule counts them.
    base: Decimal,
    /// For `multiply`: the target rule's reward.
    of: Decimal,
    raw: Decimal,
    rounded: Decimal,
}

/// The cap periods a purchase falls in.
#[derive(Clone, Copy)]
struct Periods {
    month: u32,
    quarter: u32,
    /// The account's statement cycle.
    statement: u32,
}

/// What the rules need to know about a purchase, computed once.
struct Facts<'a> {
    amount: Decimal,
    purchase: &'a Purchase<'a>,
    partner: Option<usize>,
    local: LocalTime,
    tier: Option<&'a str>,
    periods: Periods,
    /// Categories the account chose for the month.
    chosen: Vec<usize>,
    /// The rules the purchase's MCC allows: the others are not evaluated.
    candidates: Candidates,
}

fn period_key(cap: &Cap, periods: &Periods) -> Option<u32> {
    match cap.period {
        CapPeriod::Transaction => None,
        CapPeriod::Month => Some(periods.month),
        CapPeriod::Quarter => Some(periods.quarter),
        CapPeriod::Statement => Some(periods.statement),
    }
}

/// The period of a cap, as explanations name it.
fn period_label(text: &mut String, cap: &Cap, p: &Periods) {
    push_period_label(text, cap.period, period_key(cap, p).unwrap_or_default());
}

/// A cap's period by its kind and key (`2026-11`, `2026-Q4`, ...).
pub(super) fn push_period_label(text: &mut String, period: CapPeriod, key: u32) {
    match period {
        CapPeriod::Transaction => text.push_str("this purchase"),
        CapPeriod::Month => time::push_month_label(text, key),
        CapPeriod::Quarter => time::push_quarter_label(text, key),
        CapPeriod::Statement => {
            text.push_str("statement cycle from ");
            time::push_month_label(text, key);
        }
    }
}

fn matches(rules: &Rules, rule: &Rule, f: &Facts<'_>) -> bool {
    let w = &rule.when;
    let at = f.local.at;
    let p = f.purchase;
    (w.min_amount.is_none_or(|min| !money::lt(f.amount, min)))
        && (w.max_amount.is_none_or(|max| !money::lt(max, f.amount)))
        && (w.from.is_none_or(|from| at >= from))
        && (w.to.is_none_or(|to| at < to))
        && (w.weekdays == 0 || w.weekdays & (1 << f.local.weekday as u8) != 0)
        && (w.categories.is_empty()
            || w.categories.iter().any(|&c| rules.categories[c].mcc.contains(p.mcc, at)))
        && (w.mcc.as_ref().is_none_or(|set| set.contains(p.mcc)))
        && (w.partners.is_empty() || f.partner.is_some_and(|x| w.partners.contains(&x)))
        && (w.merchants.is_empty() || w.merchants.iter().any(|m| m == p.merchant_id))
        && (w.channels.is_empty() || p.channel.is_some_and(|c| w.channels.iter().any(|x| x == c)))
        && (w.tiers.is_empty() || f.tier.is_some_and(|t| w.tiers.iter().any(|x| x == t)))
        && (!w.chosen || f.chosen.iter().any(|&c| rules.categories[c].mcc.contains(p.mcc, at)))
        && !negated_holds(rules, &w.not, f)
}

/// Whether anything `when.not` names holds for this purchase.
fn negated_holds(rules: &Rules, not: &crate::rules::Negated, f: &Facts<'_>) -> bool {
    let p = f.purchase;
    not.categories.iter().any(|&c| rules.categories[c].mcc.contains(p.mcc, f.local.at))
        || not.mcc.as_ref().is_some_and(|set| set.contains(p.mcc))
        || f.partner.is_some_and(|x| not.partners.contains(&x))
        || p.channel.is_some_and(|c| not.channels.iter().any(|x| x == c))
}

/// How much of a cap is left for this event.
fn cap_left(cap: &Cap, idx: usize, periods: &Periods, state: &AccountState, pending: &[Decimal]) -> Decimal {
    let stored = period_key(cap, periods).map_or(Decimal::ZERO, |period| state.cap_used(&cap.id, period));
    (cap.limit - stored - pending[idx]).max(Decimal::ZERO)
}

/// Plans one rule's reward for this purchase, or `None` if it pays nothing.
fn plan(
    rules: &Rules,
    index: usize,
    f: &Facts<'_>,
    state: &AccountState,
    scratch: &mut Scratch,
) -> Result<Option<Grant>, Rejection> {
    let rule = &rules.rules[index];
    let decimals = rules.programs[rule.program].decimals;

    // A spend cap limits the part of the amount that earns.
    let mut eligible = f.amount;
    for &c in &rule.caps {
        let cap = &rules.caps[c];
        if cap.measure == CapMeasure::Spend {
            let left = cap_left(cap, c, &f.periods, state, &scratch.pending);
            if money::lt(left, eligible) {
                eligible = left;
            }
        }
    }
    let mut base = eligible;
    if let Some(unit) = rule.rounding.per_full {
        base = money::full_units(eligible, unit).ok_or(Rejection::Overflow)?;
    }
    let mut of = Decimal::ZERO;
    let raw = match &rule.effect {
        Effect::Percent { fraction, .. } => base.checked_mul(*fraction).ok_or(Rejection::Overflow)?,
        Effect::Fixed(v) => *v,
        Effect::PerUnit { every, award } => {
            let units = money::full_units(base, *every).ok_or(Rejection::Overflow)?;
            let units = units.checked_div(*every).ok_or(Rejection::Overflow)?;
            units.checked_mul(*award).ok_or(Rejection::Overflow)?
        }
        Effect::Multiply { rule: target, factor } => {
            of = scratch.results[*target];
            of.checked_mul(factor - Decimal::ONE).ok_or(Rejection::Overflow)?
        }
    };
    if raw <= Decimal::ZERO {
        return Ok(None);
    }
    let rounded =
        money::round_to_step(raw, rule.rounding.step, rule.rounding.mode).ok_or(Rejection::Overflow)?;
    let mut granted = rounded;
    let first = scratch.steps.len();
    for &c in &rule.caps {
        let cap = &rules.caps[c];
        let left = cap_left(cap, c, &f.periods, state, &scratch.pending);
        let capped = cap.measure == CapMeasure::Reward && money::lt(left, granted);
        if capped {
            granted = left;
        }
        scratch.steps.push(CapStep { cap: c, left, capped, used: Decimal::ZERO });
    }
    let steps = first..scratch.steps.len();
    if granted <= Decimal::ZERO && !scratch.steps[steps.clone()].iter().any(|s| s.capped) {
        scratch.steps.truncate(first);
        return Ok(None);
    }
    let granted = granted.max(Decimal::ZERO);
    // A rule capped to nothing uses nothing of its caps.
    for step in &mut scratch.steps[steps.clone()] {
        step.used = match rules.caps[step.cap].measure {
            CapMeasure::Reward => granted,
            CapMeasure::Spend if granted > Decimal::ZERO => eligible,
            CapMeasure::Spend => Decimal::ZERO,
        };
    }
    let why = Why { eligible, base, of, raw, rounded };
    // The category is found for the grants kept only (see `purchase`).
    Ok(Some(Grant { rule: index, amount: money::with_scale(granted, decimals), category: None, why, steps }))
}

/// The category of the rule's conditions (or the account's choices) that
/// the purchase's code falls in: the one that paid.
fn category_paid(rules: &Rules, rule: &Rule, f: &Facts<'_>) -> Option<usize> {
    let (mcc, at) = (f.purchase.mcc, f.local.at);
    let holds = |c: &usize| rules.categories[*c].mcc.contains(mcc, at);
    let named = rule.when.categories.iter().find(|c| holds(c));
    named.or_else(|| rule.when.chosen.then(|| f.chosen.iter().find(|c| holds(c))).flatten()).copied()
}

/// Writes the explanation of a grant to `text`: how its numbers came
/// about, cap by cap.
fn explain(
    text: &mut String,
    rules: &Rules,
    grant: &Grant,
    steps: &[CapStep],
    amount: Decimal,
    periods: &Periods,
) {
    let rule = &rules.rules[grant.rule];
    let why = &grant.why;
    match &rule.effect {
        Effect::Percent { percent, .. } => {
            text.d(*percent).s("% of ").d(why.base);
        }
        Effect::Fixed(v) => {
            text.s("fixed ").d(*v);
        }
        Effect::PerUnit { every, award } => {
            text.d(*award).s(" per full ").d(*every).s(" of ").d(why.base);
        }
        Effect::Multiply { rule: target, factor } => {
            text.d(*factor).s("x ").s(&rules.rules[*target].id).s(" (").d(why.of).s("), extra ");
            text.d(factor - Decimal::ONE).s("x");
        }
    }
    if why.eligible != amount {
        text.s(" (the part of ").d(amount).s(" within the spend cap)");
    }
    if let Some(unit) = rule.rounding.per_full.filter(|_| why.base != why.eligible) {
        text.s(" (in full ").d(unit).s("s of ").d(why.eligible).s(")");
    }
    text.s(" = ").d(why.raw.normalize());
    if why.rounded != why.raw || rule.rounding.mode != RoundingMode::Floor {
        text.s(", ").s(rule.rounding.mode.name()).s(" to ").d(rule.rounding.step).s(": ").d(why.rounded);
    }
    let reward_decimals = rules.programs[rule.program].decimals;
    for step in &steps[grant.steps.clone()] {
        explain_cap(text, &rules.caps[step.cap], step, periods, reward_decimals, amount.scale());
    }
}

/// What a cap that cut a reward starts with in its explanation.
const CAPPED_BY: &str = "; capped by ";

/// The caps that cut the reward an explanation is of (see [`explain_cap`]):
/// partly for an `earn` record, to nothing for a `capped` one.
pub fn caps_that_cut(explanation: &str) -> impl Iterator<Item = &str> {
    explanation.split(CAPPED_BY).skip(1).filter_map(|rest| rest.split_once(" (").map(|(cap, _)| cap))
}

/// One cap of a grant: what it counted of this purchase, and what was left
/// of it before and after, in the reward's (or the spend's) decimals.
fn explain_cap(
    text: &mut String,
    cap: &Cap,
    step: &CapStep,
    periods: &Periods,
    reward_decimals: u32,
    spend_decimals: u32,
) {
    let (decimals, prefix, counted) = match cap.measure {
        CapMeasure::Reward if step.capped => (reward_decimals, CAPPED_BY, " paid"),
        CapMeasure::Reward => (reward_decimals, "; cap ", " paid"),
        CapMeasure::Spend => (spend_decimals, "; spend cap ", " of spend counted"),
    };
    let fixed = |d: Decimal| money::with_scale(d, decimals);
    text.s(prefix).s(&cap.id).s(" (");
    if let Some(description) = &cap.description {
        text.s(description).s(", ");
    }
    period_label(text, cap, periods);
    text.s("): ").d(fixed(step.used)).s(counted).s(", ");
    text.d(fixed(step.left)).s(" of ").d(fixed(cap.limit)).s(" left before, ");
    text.d(fixed((step.left - step.used).max(Decimal::ZERO))).s(" after");
}

/// Keeps a planned grant: one that pays, or one capped to nothing (for its
/// `capped` record).
fn take(scratch: &mut Scratch, grant: Grant) {
    if grant.amount <= Decimal::ZERO {
        scratch.capped.push(grant);
        return;
    }
    scratch.results[grant.rule] = grant.amount;
    for &CapStep { cap: c, used, .. } in &scratch.steps[grant.steps.clone()] {
        scratch.pending[c] += used;
    }
    scratch.grants.push(grant);
}

/// Of a group's members that would pay, the winner: highest priority, then
/// highest reward, then smallest rule id. If none pays but one matched and
/// was capped to nothing, that one (for its `capped` record).
fn decide_group(
    rules: &Rules,
    group: usize,
    f: &Facts<'_>,
    state: &AccountState,
    scratch: &mut Scratch,
) -> Result<Option<Grant>, Rejection> {
    let mut best: Option<Grant> = None;
    let mut capped: Option<Grant> = None;
    for &m in &rules.groups[group].members {
        // Members come highest priority first: a lower one cannot win.
        if best.as_ref().is_some_and(|b| rules.rules[m].priority < rules.rules[b.rule].priority) {
            break;
        }
        if !f.candidates.has(m) || !matches(rules, &rules.rules[m], f) {
            continue;
        }
        let Some(candidate) = plan(rules, m, f, state, scratch)? else { continue };
        if candidate.amount <= Decimal::ZERO {
            capped.get_or_insert(candidate);
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => {
                let (rc, rb) = (&rules.rules[candidate.rule], &rules.rules[b.rule]);
                (rc.priority, candidate.amount, std::cmp::Reverse(&rc.id))
                    > (rb.priority, b.amount, std::cmp::Reverse(&rb.id))
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    Ok(best.or(capped))
}

/// A cleared purchase naming its authorisation confirms it: the pending
/// rewards it earned may now release. Returns `None` when there is no such
/// authorisation in state (the purchase then earns as a purchase).
fn clearing(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    auth: &str,
    out: &mut Effects,
) -> Option<Outcome> {
    let purchase = state.purchases.find_mut(Search::authorized(auth))?;
    purchase.authorized = false;
    for b in &mut state.balances {
        for h in b.holds.iter_mut().filter(|h| h.source == auth) {
            h.cleared = true;
        }
    }
    let before = out.records.len();
    lifecycle::apply_due(ctx, state, event.occurred_at.max(state.watermark), &mut out.records);
    Some(match out.records.len() - before {
        0 => Outcome::NoEffect(NoEffect::Cleared),
        n => Outcome::Applied(n),
    })
}

pub(super) fn purchase(
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
    state: &mut AccountState,
    event: &Event<'_>,
    p: &Purchase<'_>,
    out: &mut Effects,
) -> Outcome {
    let rules = ctx.rules;
    if let (PurchaseStatus::Cleared, Some(auth)) = (p.status, p.clears) {
        if let Some(outcome) = clearing(ctx, state, event, auth, out) {
            return outcome;
        }
    }
    let at = event.occurred_at;
    if rules.exclusion_of(p.mcc, at).is_some() {
        return Outcome::NoEffect(NoEffect::Excluded);
    }
    let local = LocalTime::new(at, &rules.timezone);
    let periods = Periods {
        month: local.month_key(),
        quarter: local.quarter_key(),
        statement: time::statement_cycle(&local, credit::statement_day(rules, state)),
    };
    let chosen = if rules.category_choice.is_some() {
        account::chosen_categories(rules, state, periods.month)
    } else {
        Vec::new()
    };
    let facts = Facts {
        amount: p.amount,
        purchase: p,
        partner: rules.partner_of(p.partner_id, p.merchant_id),
        local,
        tier: state.tier.as_deref(),
        periods,
        chosen,
        candidates: rules.candidates(p.mcc),
    };
    scratch.results.iter_mut().for_each(|r| *r = Decimal::ZERO);
    scratch.pending.iter_mut().for_each(|r| *r = Decimal::ZERO);
    scratch.group_done.iter_mut().for_each(|g| *g = false);
    scratch.grants.clear();
    scratch.capped.clear();
    scratch.steps.clear();
    for (index, rule) in rules.rules.iter().enumerate() {
        let planned = match rule.group {
            Some(g) if scratch.group_done[g] => continue,
            Some(g) => {
                scratch.group_done[g] = true;
                decide_group(rules, g, &facts, state, scratch)
            }
            None if facts.candidates.has(index) && matches(rules, rule, &facts) => {
                plan(rules, index, &facts, state, scratch)
            }
            None => continue,
        };
        match planned {
            Ok(Some(mut grant)) => {
                grant.category = category_paid(rules, &rules.rules[grant.rule], &facts);
                take(scratch, grant)
            }
            Ok(None) => {}
            Err(rejection) => return Outcome::Rejected(rejection),
        }
    }
    // Headroom check before touching the state, so commit cannot overflow.
    for g in &scratch.grants {
        let program = &rules.programs[rules.rules[g.rule].program];
        let total: Decimal = scratch
            .grants
            .iter()
            .filter(|o| rules.rules[o.rule].program == rules.rules[g.rule].program)
            .map(|o| o.amount)
            .sum();
        let headroom = state.balance(&program.name).map_or(Some(total), |b| {
            b.available
                .checked_add(total)
                .and(b.lifetime_earned.checked_add(total))
                .and(b.pending.checked_add(total))
        });
        if headroom.is_none() {
            return Outcome::Rejected(Rejection::Overflow);
        }
    }
    let authorized = p.status == PurchaseStatus::Authorized;
    let before = out.records.len();
    commit(ctx, scratch, state, event, p, periods, authorized, &mut out.records);
    after_purchase(ctx, state, event, p, out);
    match out.records.len() - before {
        0 => Outcome::NoEffect(NoEffect::NoRuleMatched),
        n => Outcome::Applied(n),
    }
}

/// What every purchase does to the account, rewarded or not: activity for
/// inactivity expiry, tier qualification, the referral's first purchase.
fn after_purchase(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    p: &Purchase<'_>,
    out: &mut Effects,
) {
    let at = event.occurred_at;
    if state.last_purchase.is_none_or(|last| last < at) {
        state.last_purchase = Some(at);
        // Inactivity deadlines moved: warn again before the new one (no
        // balance to look at when no program expires on inactivity).
        let any_inactive = ctx.rules.any_inactivity_expiry();
        for b in state.balances.iter_mut().filter(|_| any_inactive) {
            let inactive = ctx
                .rules
                .program(&b.program)
                .and_then(|prog| prog.expiry)
                .is_some_and(|e| matches!(e.policy, ExpiryPolicy::Inactive { .. }));
            if inactive {
                b.lots.iter_mut().for_each(|l| l.warned = false);
            }
        }
    }
    if let Some(q) = &ctx.rules.tier_qualification {
        let amount = match q.measure {
            TierMeasure::Spend => p.amount,
            TierMeasure::Earned => {
                let program = q.program.map(|i| &*ctx.rules.programs[i].name);
                out.records
                    .iter()
                    .filter(|r| r.source_event_id() == event.event_id && r.kind == RecordKind::Earn)
                    .filter(|r| Some(r.program()) == program)
                    .map(|r| r.amount)
                    .sum()
            }
        };
        tiers::qualify(ctx, state, at, amount, &mut out.records);
    }
    account::after_purchase(ctx, state, event, p.amount, &mut out.derived);
}

#[expect(
    clippy::too_many_arguments,
    reason = "separate borrows of the context, the scratch space and the state, which one struct would tie together"
)]
fn commit(
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
    state: &mut AccountState,
    event: &Event<'_>,
    p: &Purchase<'_>,
    periods: Periods,
    authorized: bool,
    out: &mut Vec<AccrualRecord>,
) {
    let rules = ctx.rules;
    let Scratch { grants, steps, explanation, .. } = &mut *scratch;
    let mut retained = Vec::with_capacity(grants.len());
    for grant in grants.drain(..) {
        let rule = &rules.rules[grant.rule];
        let program = &rules.programs[rule.program];
        let grant_steps = &steps[grant.steps.clone()];
        let mut uses = Vec::with_capacity(grant_steps.len());
        for &CapStep { cap: c, used, .. } in grant_steps {
            let cap = &rules.caps[c];
            if let Some(period) = period_key(cap, &periods) {
                state.add_cap_use(&cap.id, period, used);
                uses.push(CapUse {
                    cap: cap.id.clone(),
                    period,
                    measure: cap.measure,
                    used,
                    restored: Decimal::ZERO,
                });
            }
        }
        let held = program.hold.is_some();
        let credited = credit::credit(
            rules,
            state,
            program,
            grant.amount,
            event.event_id,
            &rule.id,
            event.occurred_at,
            held,
            authorized,
        );
        explanation.clear();
        explain(explanation, rules, &grant, steps, p.amount, &periods);
        match credited {
            Credited::Pending { release_at } => {
                explanation.s("; pending until ");
                release_at.push_to(explanation);
                if authorized && program.hold.is_some_and(|h| h.require_clearing) {
                    explanation.push_str(" and clearing");
                }
            }
            Credited::Available { repaid } if repaid > Decimal::ZERO => {
                explanation.s("; ").d(repaid).s(" of it repaid what was owed");
            }
            Credited::Available { .. } => {}
        }
        retained.push(RetainedAccrual {
            rule: rule.id.clone(),
            program: program.name.clone(),
            earned: grant.amount,
            clawed: Decimal::ZERO,
            caps: uses,
        });
        let id = AccrualId::Of { rule: &rule.id, kind: RecordKind::Earn };
        out.push(ctx.purchase_record(
            state,
            &program.name,
            &rule.id,
            RecordKind::Earn,
            id,
            grant.amount,
            event.occurred_at,
            explanation,
            Some(origin(rules, &grant, p)),
        ));
    }
    record_capped(ctx, scratch, state, event, p, &periods, out);
    // Kept for refunds, and (if authorised) for the clearing to come; also
    // when it earned nothing but counts as tier spend, so that its refund
    // takes the spend back.
    let counts_as_spend = rules.tier_qualification.as_ref().is_some_and(|q| q.measure == TierMeasure::Spend);
    if !retained.is_empty() || authorized || counts_as_spend {
        state.purchases.push(RetainedPurchase {
            event_id: event.event_id.to_string(),
            at: event.occurred_at,
            amount: p.amount,
            refunded: Decimal::ZERO,
            authorized,
            accruals: retained,
        });
    }
}

/// The purchase a grant's record is about, and the category that paid.
fn origin<'r>(rules: &'r Rules, grant: &Grant, p: &Purchase<'_>) -> Origin<'r> {
    let category = grant.category.map_or("", |c| &*rules.categories[c].name);
    Origin { mcc: p.mcc, category }
}

/// A `capped` record for each rule that matched but was capped to nothing:
/// the purchase has an answer, with the caps that left nothing.
fn record_capped(
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
    state: &AccountState,
    event: &Event<'_>,
    p: &Purchase<'_>,
    periods: &Periods,
    out: &mut Vec<AccrualRecord>,
) {
    let rules = ctx.rules;
    let Scratch { capped, steps, explanation, .. } = scratch;
    for grant in capped.drain(..) {
        let rule = &rules.rules[grant.rule];
        explanation.clear();
        explain(explanation, rules, &grant, steps, p.amount, periods);
        let id = AccrualId::Of { rule: &rule.id, kind: RecordKind::Capped };
        out.push(ctx.purchase_record(
            state,
            &rules.programs[rule.program].name,
            &rule.id,
            RecordKind::Capped,
            id,
            Decimal::ZERO,
            event.occurred_at,
            explanation,
            Some(origin(rules, &grant, p)),
        ));
    }
}
