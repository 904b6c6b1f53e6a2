//! Time passing for an account: pending rewards released, lots warned
//! about and expired, tier periods closed, old data pruned. Driven by
//! event time only (the account's events and its partition's `clock`).

use super::credit;
use super::{AccrualRecord, Ctx, RecordKind, tiers};
use crate::rules::{CapPeriod, ExpiryPolicy, Program, Rules};
use crate::state::AccountState;
use crate::time::{self, MS_PER_DAY, Timestamp};
use rust_decimal::Decimal;
use std::sync::Arc;

/// Brings the account to `at` (never backwards): releases, expiries and
/// tier period ends due by then, in that order, then pruning.
pub fn advance(ctx: &Ctx<'_>, state: &mut AccountState, at: Timestamp, out: &mut Vec<AccrualRecord>) {
    let now = at.max(state.watermark);
    release_due(ctx, state, now, out);
    expire_due(ctx, state, now, out);
    tiers::close_periods(ctx, state, now, out);
    if now > state.watermark {
        let old_day = state.watermark.0.div_euclid(MS_PER_DAY);
        state.watermark = now;
        prune(ctx.rules, state, now, now.0.div_euclid(MS_PER_DAY) != old_day);
    }
}

/// Releases every cleared hold due by `now`, oldest first.
pub fn release_due(ctx: &Ctx<'_>, state: &mut AccountState, now: Timestamp, out: &mut Vec<AccrualRecord>) {
    for b in 0..state.balances.len() {
        let program_name = state.balances[b].program.clone();
        let Some(program) = ctx.rules.program(&program_name) else { continue };
        loop {
            let due = state.balances[b]
                .holds
                .iter()
                .enumerate()
                .filter(|(_, h)| h.cleared && h.release_at <= now)
                .min_by(|(_, x), (_, y)| {
                    (x.release_at, &x.source, &x.rule).cmp(&(y.release_at, &y.source, &y.rule))
                })
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let hold = state.balances[b].holds.remove(i);
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
                id,
                hold.amount,
                hold.release_at,
                text,
            ));
        }
    }
}

/// The instant a lot burns: fixed, or after inactivity.
fn expiry_of(
    program: &Program,
    state: &AccountState,
    lot_expires: Option<Timestamp>,
    earned_at: Timestamp,
    tz: time::TzOffset,
) -> Option<Timestamp> {
    match program.expiry?.policy {
        ExpiryPolicy::Inactive { months } => {
            let active = state.last_purchase.unwrap_or(earned_at).max(earned_at);
            Some(time::add_months(active, months, tz))
        }
        _ => lot_expires,
    }
}

fn expire_due(ctx: &Ctx<'_>, state: &mut AccountState, now: Timestamp, out: &mut Vec<AccrualRecord>) {
    let tz = ctx.rules.timezone;
    let expiry_rule: Arc<str> = Arc::from("expiry");
    for b in 0..state.balances.len() {
        let program_name = state.balances[b].program.clone();
        let Some(program) = ctx.rules.program(&program_name) else { continue };
        let Some(policy) = program.expiry else { continue };
        let mut i = 0;
        while i < state.balances[b].lots.len() {
            let lot = state.balances[b].lots[i].clone();
            let Some(expires) = expiry_of(program, state, lot.expires_at, lot.earned_at, tz) else {
                i += 1;
                continue;
            };
            let stamp = expires.to_string();
            if expires <= now {
                let balance = &mut state.balances[b];
                balance.lots.remove(i);
                balance.available -= lot.amount;
                balance.expired += lot.amount;
                let id = format!("{}:{}:expire:{stamp}", ctx.account_id, program_name);
                let text = format!("{} earned by {} expired at {stamp}", lot.amount, lot.earned_at);
                out.push(ctx.record(
                    state,
                    &program_name,
                    &expiry_rule,
                    RecordKind::Expire,
                    id,
                    lot.amount,
                    expires,
                    text,
                ));
                continue;
            }
            if let Some(days) = policy.warn_days {
                let warn_at = Timestamp(expires.0 - i64::from(days) * MS_PER_DAY);
                if !lot.warned && warn_at <= now {
                    state.balances[b].lots[i].warned = true;
                    let id = format!("{}:{}:expiry_warning:{stamp}", ctx.account_id, program_name);
                    let text = format!("{} will expire at {stamp}", lot.amount);
                    out.push(ctx.record(
                        state,
                        &program_name,
                        &expiry_rule,
                        RecordKind::ExpiryWarning,
                        id,
                        lot.amount,
                        warn_at,
                        text,
                    ));
                }
            }
            i += 1;
        }
    }
}

/// When the account next needs attention without an event of its own.
pub fn next_due(rules: &Rules, state: &AccountState) -> Option<Timestamp> {
    let tz = rules.timezone;
    let mut due: Option<Timestamp> = None;
    let mut consider = |t: Timestamp| due = Some(due.map_or(t, |d| d.min(t)));
    for b in &state.balances {
        let Some(program) = rules.program(&b.program) else { continue };
        for h in b.holds.iter().filter(|h| h.cleared) {
            consider(h.release_at);
        }
        let Some(policy) = program.expiry else { continue };
        for lot in &b.lots {
            if let Some(expires) = expiry_of(program, state, lot.expires_at, lot.earned_at, tz) {
                consider(expires);
                if let (Some(days), false) = (policy.warn_days, lot.warned) {
                    consider(Timestamp(expires.0 - i64::from(days) * MS_PER_DAY));
                }
            }
        }
    }
    if let Some(t) = tiers::next_period_end(rules, state) {
        consider(t);
    }
    // Nothing in the past can be due again: the account is already there.
    due.filter(|d| *d > state.watermark)
}

/// Drops what can no longer matter: purchases beyond the refund window,
/// counters of periods that ended before it, old choices and counts.
fn prune(rules: &Rules, state: &mut AccountState, now: Timestamp, new_day: bool) {
    let horizon = Timestamp(now.0.saturating_sub(rules.refund_window_ms));
    let aged = state.purchases.iter().take_while(|p| p.at < horizon).count();
    if aged > 0 {
        state.purchases.drain(..aged);
    }
    if !new_day {
        return;
    }
    let tz = rules.timezone;
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
