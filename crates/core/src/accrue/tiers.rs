//! Tiers: qualification (spend, or points earned, never the balance) per
//! period; an upgrade as soon as a threshold is crossed (effective from the
//! next event: the purchase that crosses it earns at the tier before it),
//! unless tiers take effect from the next period; at the end of each
//! period, the tier becomes what that period qualified for, so a tier
//! earned in one period holds through the next, and a period that misses
//! it downgrades. Rolling windows re-evaluate continuously.

use super::{AccrualRecord, Ctx, RecordKind};
use crate::rules::{Rules, TakesEffect, Tier, TierPeriod, TierQualification};
use crate::state::AccountState;
use crate::time::{self, LocalTime, MS_PER_DAY, Timestamp};
use rust_decimal::Decimal;

/// The period (or, rolling, the day) an instant counts in.
fn period_of(q: &TierQualification, local: &LocalTime) -> u32 {
    match q.period {
        TierPeriod::Month => local.month_key(),
        TierPeriod::Quarter => local.quarter_key(),
        TierPeriod::Year => local.year as u32,
        TierPeriod::Rolling { .. } => (local.at.0.div_euclid(MS_PER_DAY)) as u32,
    }
}

fn period_end(rules: &Rules, q: &TierQualification, key: u32) -> Option<Timestamp> {
    let tz = &rules.timezone;
    match q.period {
        TierPeriod::Month => Some(time::month_end(key, tz)),
        TierPeriod::Quarter => Some(time::quarter_end(key, tz)),
        TierPeriod::Year => Some(time::year_end_key(key, tz)),
        TierPeriod::Rolling { .. } => None,
    }
}

fn label(q: &TierQualification, key: u32) -> String {
    match q.period {
        TierPeriod::Month => time::month_label(key),
        TierPeriod::Quarter => time::quarter_label(key),
        TierPeriod::Year => key.to_string(),
        TierPeriod::Rolling { days } => format!("the last {days} days"),
    }
}

/// The highest tier a qualification value reaches.
fn reached(rules: &Rules, value: Decimal) -> Option<&Tier> {
    rules.tiers.iter().rev().find(|t| value >= t.threshold)
}

fn rank(rules: &Rules, tier: Option<&str>) -> Option<u32> {
    tier.and_then(|t| rules.tier(t)).map(|t| t.rank)
}

/// The qualification value now: the current period's, or the window's.
fn value_now(q: &TierQualification, state: &AccountState, now: &LocalTime) -> Decimal {
    let key = period_of(q, now);
    match q.period {
        TierPeriod::Rolling { days } => {
            state.qualifying.iter().filter(|e| e.period + days > key).map(|e| e.value).sum()
        }
        _ => state.qualifying_in(key),
    }
}

fn change(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    to: Option<&Tier>,
    id: String,
    at: Timestamp,
    why: String,
    out: &mut Vec<AccrualRecord>,
) {
    let from = state.tier.clone().unwrap_or_else(|| "none".into());
    let to_name = to.map_or_else(|| "none".to_string(), |t| t.name.clone());
    state.tier = to.map(|t| t.name.clone());
    let text = format!("tier {from} -> {to_name}: {why}");
    out.push(ctx.account_record(state, RecordKind::TierChanged, &id, "tier", at, &text));
}

/// Counts `amount` of qualification at `at` (negative: a refund), then
/// upgrades if a threshold is now reached.
pub fn qualify(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    at: Timestamp,
    amount: Decimal,
    out: &mut Vec<AccrualRecord>,
) {
    let Some(q) = &ctx.rules.tier_qualification else { return };
    let local = LocalTime::new(at, &ctx.rules.timezone);
    let key = period_of(q, &local);
    state.add_qualifying(key, amount);
    if state.tier_period.is_none() {
        state.tier_period = Some(key);
    }
    if q.takes_effect == TakesEffect::NextPeriod {
        // Granted when the period ends (`close_periods`).
        return;
    }
    let value = value_now(q, state, &LocalTime::new(at.max(state.watermark), &ctx.rules.timezone));
    let Some(target) = reached(ctx.rules, value) else { return };
    if Some(target.rank) > rank(ctx.rules, state.tier.as_deref()) {
        let why = format!("{value} in {} reached {}", label(q, key), target.threshold);
        let id = format!("{}:tier_changed", ctx.event_id);
        change(ctx, state, Some(target), id, at, why, out);
        state.tier_period = Some(period_of(q, &LocalTime::new(at.max(state.watermark), &ctx.rules.timezone)));
    }
}

/// Closes the periods that ended by `now`: the tier becomes what each one
/// qualified for. Rolling windows: the tier follows the window's value.
pub fn close_periods(ctx: &Ctx<'_>, state: &mut AccountState, now: Timestamp, out: &mut Vec<AccrualRecord>) {
    let Some(q) = &ctx.rules.tier_qualification else { return };
    let local = LocalTime::new(now, &ctx.rules.timezone);
    let current = period_of(q, &local);
    if let TierPeriod::Rolling { days } = q.period {
        // Days that left the window no longer count.
        state.qualifying.retain(|e| e.period + days > current);
        let value = value_now(q, state, &local);
        let target = reached(ctx.rules, value);
        if target.map(|t| t.rank) < rank(ctx.rules, state.tier.as_deref()) {
            let id = format!("{}:tier_changed", ctx.event_id);
            change(
                ctx,
                state,
                target,
                id,
                now,
                format!("{value} in {} is below the tier", label(q, current)),
                out,
            );
        }
        return;
    }
    while let Some(period) = pending_period(q, state).filter(|p| *p < current) {
        let Some(end) = period_end(ctx.rules, q, period) else { break };
        let value = state.qualifying_in(period);
        let target = reached(ctx.rules, value);
        if target.map(|t| t.rank) != rank(ctx.rules, state.tier.as_deref()) {
            let id = format!("{}:tier_changed:{}", ctx.account_id, label(q, period));
            let why = format!("{value} in {}, which has ended", label(q, period));
            change(ctx, state, target, id, end, why, out);
        }
        state.tier_period = Some(period + 1);
    }
    // Without a tier, the periods before now can change nothing: jump ahead.
    if state.tier.is_none() && state.tier_period.is_some_and(|p| p < current) {
        state.tier_period = Some(current);
    }
}

/// The earliest period whose end may change the tier: a held tier's
/// period; without a tier, when tiers take effect from the next period,
/// the first period that counted something (immediate upgrades leave
/// nothing for a period's end to grant).
fn pending_period(q: &TierQualification, state: &AccountState) -> Option<u32> {
    let from = state.tier_period?;
    if state.tier.is_some() {
        return Some(from);
    }
    match q.takes_effect {
        TakesEffect::Immediately => None,
        TakesEffect::NextPeriod => state
            .qualifying
            .iter()
            .filter(|e| e.period >= from && e.value > Decimal::ZERO)
            .map(|e| e.period)
            .min(),
    }
}

/// When a held tier's period ends (the next time the tier can change
/// without an event).
pub fn next_period_end(rules: &Rules, state: &AccountState) -> Option<Timestamp> {
    let q = rules.tier_qualification.as_ref()?;
    match q.period {
        TierPeriod::Rolling { days } => {
            state.tier.as_ref()?;
            // The day the oldest counted day leaves the window.
            let oldest = state.qualifying.first()?.period;
            Some(Timestamp((i64::from(oldest) + i64::from(days)) * MS_PER_DAY))
        }
        _ => period_end(rules, q, pending_period(q, state)?),
    }
}

/// Keeps the qualification that can still matter.
pub fn prune(rules: &Rules, state: &mut AccountState, now: Timestamp) {
    let Some(q) = &rules.tier_qualification else {
        state.qualifying.clear();
        return;
    };
    let current = period_of(q, &LocalTime::new(now, &rules.timezone));
    let keep_from = match q.period {
        TierPeriod::Rolling { days } => current.saturating_sub(days),
        _ => state.tier_period.unwrap_or(current).min(current.saturating_sub(1)),
    };
    state.qualifying.retain(|e| e.period >= keep_from);
}

/// The tier's qualification progress, for the balance view.
pub fn progress(rules: &Rules, state: &AccountState, now: Timestamp) -> Option<super::TierProgress> {
    let q = rules.tier_qualification.as_ref()?;
    let local = LocalTime::new(now.max(state.watermark), &rules.timezone);
    let value = value_now(q, state, &local);
    let current_rank = rank(rules, state.tier.as_deref());
    let next =
        rules.tiers.iter().find(|t| Some(t.rank) > current_rank).map(|t| (t.name.clone(), t.threshold));
    Some(super::TierProgress { period: label(q, period_of(q, &local)), value, next })
}
