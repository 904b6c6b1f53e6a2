//! What a customer asks: how much is available, how much pending, what
//! burns when, which tier and how far to the next.

use super::{earn, tiers};
use crate::rules::{CapMeasure, ExpiryPolicy, Rules};
use crate::state::AccountState;
use crate::time::{self, Timestamp};
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramView {
    pub program: String,
    pub unit: String,
    /// Decimal places of the program's amounts.
    pub decimals: u32,
    pub available: Decimal,
    pub pending: Decimal,
    pub lifetime_earned: Decimal,
    pub redeemed: Decimal,
    pub expired: Decimal,
    /// Taken back by refunds beyond the balance, repaid from future rewards.
    pub owed: Decimal,
    /// The next lots to expire: (when, how much), soonest first.
    pub next_expiring: Vec<(Timestamp, Decimal)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierProgress {
    /// The qualification period it counts in (e.g. `2026-Q4`).
    pub period: String,
    pub value: Decimal,
    /// The next tier up and its threshold, if any.
    pub next: Option<(String, Decimal)>,
}

/// How much of a cap the account has used in one of its periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapUsage {
    pub cap: String,
    pub description: Option<String>,
    /// The period, as explanations name it (`2026-11`, `2026-Q4`,
    /// `statement cycle from 2026-11`).
    pub period: String,
    /// `reward` or `spend`.
    pub measure: &'static str,
    /// Used, the limit and what is left, fixed to the reward's decimal
    /// places (a spend cap: the amounts' own).
    pub used: Decimal,
    pub limit: Decimal,
    pub left: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceView {
    pub tier: Option<String>,
    pub tier_progress: Option<TierProgress>,
    pub programs: Vec<ProgramView>,
    /// The caps the account has used, by cap then period (a period that
    /// ended is kept while a refund could still give some of it back).
    pub caps: Vec<CapUsage>,
}

/// The account's cap counters, with their caps' limits. A counter of a cap
/// no longer in the rules is left out (it can limit nothing).
fn cap_usage(rules: &Rules, state: &AccountState) -> Vec<CapUsage> {
    state
        .counters
        .iter()
        .filter_map(|counter| {
            let index = rules.caps.iter().position(|c| c.id == counter.cap)?;
            let cap = &rules.caps[index];
            let decimals = match cap.measure {
                // The program of the rules that count against it.
                CapMeasure::Reward => rules
                    .rules
                    .iter()
                    .find(|r| r.caps.contains(&index))
                    .map_or(0, |r| rules.programs[r.program].decimals),
                CapMeasure::Spend => counter.used.scale().max(cap.limit.scale()),
            };
            let fixed = |d: Decimal| crate::money::with_scale(d, decimals);
            let mut period = String::new();
            earn::push_period_label(&mut period, cap.period, counter.period);
            Some(CapUsage {
                cap: cap.id.to_string(),
                description: cap.description.as_deref().map(str::to_string),
                period,
                measure: match cap.measure {
                    CapMeasure::Reward => "reward",
                    CapMeasure::Spend => "spend",
                },
                used: fixed(counter.used),
                limit: fixed(cap.limit),
                left: fixed((cap.limit - counter.used).max(Decimal::ZERO)),
            })
        })
        .collect()
}

/// The account's balances as of its own time (the view does not move time;
/// holds and expiries due but not yet applied show as they are in state).
pub fn balance_view(rules: &Rules, state: &AccountState, lots: usize) -> BalanceView {
    let tz = &rules.timezone;
    let programs = state
        .balances
        .iter()
        .map(|b| {
            let program = rules.program(&b.program);
            let inactive = program.and_then(|p| p.expiry).and_then(|e| match e.policy {
                ExpiryPolicy::Inactive { months } => Some(months),
                _ => None,
            });
            let next_expiring = b
                .lots
                .iter()
                .filter_map(|l| {
                    let when = match inactive {
                        Some(months) => Some(time::add_months(
                            state.last_purchase.unwrap_or(l.earned_at).max(l.earned_at),
                            months,
                            tz,
                        )),
                        None => l.expires_at,
                    };
                    when.map(|w| (w, l.amount))
                })
                .take(lots)
                .collect();
            ProgramView {
                program: b.program.to_string(),
                unit: b.unit.to_string(),
                decimals: b.decimals,
                available: b.available,
                pending: b.pending,
                lifetime_earned: b.lifetime_earned,
                redeemed: b.redeemed,
                expired: b.expired,
                owed: b.owed,
                next_expiring,
            }
        })
        .collect();
    let tier_progress = tiers::progress(rules, state, state.watermark);
    BalanceView { tier: state.tier.clone(), tier_progress, programs, caps: cap_usage(rules, state) }
}
