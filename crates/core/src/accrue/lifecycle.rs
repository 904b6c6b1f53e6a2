//! Time passing for an account: pending rewards released, lots warned
//! about and expired, tier periods closed, old data pruned. Driven by event
//! time only (the account's events and its partition's `clock`).
//!
//! The account's next due item (across all its programs) is applied, then
//! the next, until nothing is due by the new time: effects happen in
//! chronological order however far time jumps, and [`next_due`] (the
//! account's timer) is the same computation, so timers and advancing can
//! never disagree.

use super::credit;
use super::{AccrualId, AccrualRecord, Ctx, RecordKind, tiers};
use crate::rules::{CapPeriod, ExpiryPolicy, Program, Rules};
use crate::state::AccountState;
use crate::time::{self, MS_PER_DAY, Timestamp, TzOffset};
use rust_decimal::Decimal;
use std::sync::Arc;

/// Something due on an account, in the order ties are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// Hold `index` of balance `balance` is released.
    Release { balance: usize, index: usize },
    /// A tier period ends.
    TierPeriod,
    /// Lot `index` of balance `balance` will expire soon.
    Warn { balance: usize, index: usize },
    /// Lot `index` of balance `balance` expires.
    Expire { balance: usize, index: usize },
}

/// The instant a lot burns: fixed, or after inactivity.
fn expiry_of(
    program: &Program,
    state: &AccountState,
    lot_expires: Option<Timestamp>,
    earned_at: Timestamp,
    tz: &TzOffset,
) -> Option<Timestamp> {
    match program.expiry?.policy {
        ExpiryPolicy::Inactive { months } => {
            let active = state.last_purchase.unwrap_or(earned_at).max(earned_at);
            Some(time::add_months(active, months, tz))
        }
        _ => lot_expires,
    }
}

/// The account's earliest due item, if any.
fn next_item(rules: &Rules, state: &AccountState) -> Option<(Timestamp, Due)> {
    let tz = &rules.timezone;
    let mut best: Option<(Timestamp, Due)> = None;
    let mut consider = |t: Timestamp, d: Due| {
        if best.is_none_or(|b| (t, d) < b) {
            best = Some((t, d));
        }
    };
    for (bi, b) in state.balances.iter().enumerate() {
        // Nothing of a balance without holds is due when no program
        // expires: its program need not be looked up by name.
        if b.holds.is_empty() && !rules.any_expiry() {
            continue;
        }
        let Some(program) = rules.program(&b.program) else { continue };
        for (index, h) in b.holds.iter().enumerate().filter(|(_, h)| h.cleared) {
            consider(h.release_at, Due::Release { balance: bi, index });
        }
        let Some(policy) = program.expiry else { continue };
        for (index, lot) in b.lots.iter().enumerate() {
            let Some(expires) = expiry_of(program, state, lot.expires_at, lot.earned_at, tz) else {
                continue;
            };
            consider(expires, Due::Expire { balance: bi, index });
            if let (Some(days), false) = (policy.warn_days, lot.warned) {
                let warn_at = Timestamp(expires.0 - i64::from(days) * MS_PER_DAY);
                consider(warn_at, Due::Warn { balance: bi, index });
            }
        }
    }
    if let Some(t) = tiers::next_period_end(rules, state) {
        consider(t, Due::TierPeriod);
    }
    best
}

/// Brings the account to `at` (never backwards): everything due by then,
/// in order, then pruning.
pub fn advance(ctx: &Ctx<'_>, state: &mut AccountState, at: Timestamp, out: &mut Vec<AccrualRecord>) {
    let now = at.max(state.watermark);
    apply_due(ctx, state, now, out);
    tiers::close_periods(ctx, state, now, out);
    if now > state.watermark {
        let old_day = state.watermark.0.div_euclid(MS_PER_DAY);
        state.watermark = now;
        prune(ctx.rules, state, now, now.0.div_euclid(MS_PER_DAY) != old_day);
    }
}

/// Applies every item due by `now`, earliest first.
pub fn apply_due(ctx: &Ctx<'_>, state: &mut AccountState, now: Timestamp, out: &mut Vec<AccrualRecord>) {
    // Named only when something expires (most calls find nothing due).
    let expiry_rule = || -> Arc<str> { Arc::from("expiry") };
    while let Some((instant, item)) = next_item(ctx.rules, state).filter(|(t, _)| *t <= now) {
        match item {
            Due::Release { balance, index } => {
                let program_name = state.balances[balance].program.clone();
                let Some(program) = ctx.rules.program(&program_name) else { break };
                let hold = state.balances[balance].holds.remove(index);
                let repaid = credit::release(ctx.rules, state, program, &hold);
                let mut text = format!("{} pending since {} released", hold.amount, hold.earned_at);
                if repaid > Decimal::ZERO {
                    text.push_str(&format!("; {repaid} of it repaid what was owed"));
                }
                let id = AccrualRecord::id(&hold.source, &hold.rule, RecordKind::Release);
                out.push(ctx.record(
                    state,
                    &program_name,
                    &hold.rule,
                    RecordKind::Release,
                    AccrualId::Text(&id),
                    hold.amount,
                    instant,
                    &text,
                ));
            }
            Due::Warn { balance, index } => {
                let program_name = state.balances[balance].program.clone();
                let lot = &mut state.balances[balance].lots[index];
                lot.warned = true;
                let amount = lot.amount;
                let expires = Timestamp(instant.0 + warn_ms(ctx.rules, &program_name));
                let id = format!("{}:{}:expiry_warning:{expires}", ctx.account_id, program_name);
                let text = format!("{amount} will expire at {expires}");
                out.push(ctx.record(
                    state,
                    &program_name,
                    &expiry_rule(),
                    RecordKind::ExpiryWarning,
                    AccrualId::Text(&id),
                    amount,
                    instant,
                    &text,
                ));
            }
            Due::Expire { balance, index } => {
                let b = &mut state.balances[balance];
                let program_name = b.program.clone();
                let lot = b.lots.remove(index);
                b.available -= lot.amount;
                b.expired += lot.amount;
                let id = format!("{}:{}:expire:{instant}", ctx.account_id, program_name);
                let text = format!("{} (last earned {}) expired at {instant}", lot.amount, lot.earned_at);
                out.push(ctx.record(
                    state,
                    &program_name,
                    &expiry_rule(),
                    RecordKind::Expire,
                    AccrualId::Text(&id),
                    lot.amount,
                    instant,
                    &text,
                ));
            }
            Due::TierPeriod => tiers::close_periods(ctx, state, instant, out),
        }
    }
}

fn warn_ms(rules: &Rules, program: &str) -> i64 {
    rules
        .program(program)
        .and_then(|p| p.expiry)
        .and_then(|e| e.warn_days)
        .map_or(0, |d| i64::from(d) * MS_PER_DAY)
}

/// When the account next needs attention without an event of its own.
pub fn next_due(rules: &Rules, state: &AccountState) -> Option<Timestamp> {
    next_item(rules, state).map(|(t, _)| t)
}

/// Purchases made before this leave the refund window at `now`.
fn refund_horizon(rules: &Rules, now: Timestamp) -> Timestamp {
    Timestamp(now.0.saturating_sub(rules.refund_window_ms))
}

/// Whether [`advance`] to `at` drops retained purchases.
pub fn prunes_purchases(rules: &Rules, state: &AccountState, at: Timestamp) -> bool {
    let now = at.max(state.watermark);
    now > state.watermark && state.purchases.any_before(refund_horizon(rules, now))
}

/// Drops what can no longer matter: purchases beyond the refund window,
/// counters of periods that ended before it, old choices and counts.
fn prune(rules: &Rules, state: &mut AccountState, now: Timestamp, new_day: bool) {
    let horizon = refund_horizon(rules, now);
    state.purchases.drop_before(horizon);
    if !new_day {
        return;
    }
    let tz = &rules.timezone;
    let statement_day = credit::statement_day(rules, state);
    state.counters.retain(|c| match rules.cap(&c.cap).map(|cap| cap.period) {
        Some(CapPeriod::Month) => time::month_end(c.period, tz) > horizon,
        Some(CapPeriod::Quarter) => time::quarter_end(c.period, tz) > horizon,
        Some(CapPeriod::Statement) => time::statement_end(c.period, statement_day, tz) > horizon,
        // Transaction caps keep no counters; a cap no longer in the rules
        // can never be consulted again.
        _ => false,
    });
    let month = time::LocalTime::new(now, tz).month_key();
    state.choices.retain(|c| c.month + 1 >= month);
    tiers::prune(rules, state, now);
    if let Some(current) = super::account::referral_period(rules, now) {
        state.referrals.retain(|(period, _)| *period >= current);
    }
}
