//! Where an earned reward goes: pending (a hold, released later) or
//! available (a lot, expiring by the program's policy). What a refund took
//! beyond the available balance (owed) is repaid first.

use crate::rules::{ExpiryPolicy, Program, Rules};
use crate::state::{AccountState, Hold};
use crate::time::{self, LocalTime, MS_PER_DAY, Timestamp};
use rust_decimal::Decimal;
use std::sync::Arc;

/// When a lot earned at `earned_at` expires under the program's policy
/// (`None`: never, or after inactivity, which is computed). Lots expire at
/// local midnight ending the last day, so rewards earned on the same day
/// burn together.
pub fn lot_expiry(rules: &Rules, program: &Program, earned_at: Timestamp) -> Option<Timestamp> {
    let policy = program.expiry?.policy;
    let tz = &rules.timezone;
    let local = LocalTime::new(earned_at, tz);
    let midnight = Timestamp::local_midnight(local.year, local.month, local.day, tz);
    match policy {
        ExpiryPolicy::AfterDays(n) => Some(Timestamp(midnight.0 + (i64::from(n) + 1) * MS_PER_DAY)),
        ExpiryPolicy::AfterMonths(n) => Some(Timestamp(time::add_months(midnight, n, tz).0 + MS_PER_DAY)),
        ExpiryPolicy::EndOfYear => Some(time::year_end(local.year, tz)),
        ExpiryPolicy::Inactive { .. } => None,
    }
}

/// The statement day in force for the account.
pub fn statement_day(rules: &Rules, state: &AccountState) -> u32 {
    state.statement_day.map_or(rules.statement_day, u32::from)
}

/// When a reward earned at `earned_at` is released, if the program holds.
pub fn release_at(
    rules: &Rules,
    program: &Program,
    state: &AccountState,
    earned_at: Timestamp,
) -> Option<Timestamp> {
    let hold = program.hold?;
    Some(match hold.days {
        Some(days) => Timestamp(earned_at.0 + i64::from(days) * MS_PER_DAY),
        None => {
            let day = statement_day(rules, state);
            let cycle = time::statement_cycle(&LocalTime::new(earned_at, &rules.timezone), day);
            time::statement_end(cycle, day, &rules.timezone)
        }
    })
}

/// What became of a credited reward.
pub enum Credited {
    Pending {
        release_at: Timestamp,
    },
    /// Available, of which `repaid` went to what the account owed.
    Available {
        repaid: Decimal,
    },
}

/// Credits `amount` of `program` earned at `earned_at` by `rule` for
/// `source`. `awaiting_clearing`: an authorisation the program wants cleared.
#[expect(
    clippy::too_many_arguments,
    reason = "the facts of one credit, each used once, held apart by its three callers"
)]
pub fn credit(
    rules: &Rules,
    state: &mut AccountState,
    program: &Program,
    amount: Decimal,
    source: &str,
    rule: &Arc<str>,
    earned_at: Timestamp,
    held: bool,
    awaiting_clearing: bool,
) -> Credited {
    let release = if held { release_at(rules, program, state, earned_at) } else { None };
    let expiry = lot_expiry(rules, program, earned_at);
    let balance = state.balance_mut(program);
    balance.lifetime_earned += amount;
    if let Some(release_at) = release {
        balance.pending += amount;
        let cleared = !(awaiting_clearing && program.hold.is_some_and(|h| h.require_clearing));
        balance.holds.push(Hold {
            source: source.to_string(),
            rule: rule.clone(),
            earned_at,
            amount,
            release_at,
            cleared,
        });
        return Credited::Pending { release_at };
    }
    let repaid = repay_owed(balance, amount);
    if amount > repaid {
        balance.add_lot(amount - repaid, earned_at, expiry);
    }
    Credited::Available { repaid }
}

/// Repays what the balance owes from `amount`; returns the part repaid.
/// Most balances owe nothing: then three decimal operations are skipped
/// (with the same result, the balance's zero unchanged).
fn repay_owed(balance: &mut crate::state::Balance, amount: Decimal) -> Decimal {
    if balance.owed.is_zero() {
        return balance.owed;
    }
    let repaid = balance.owed.min(amount);
    balance.owed -= repaid;
    repaid
}

/// Moves a released hold's amount into the available lots.
pub fn release(rules: &Rules, state: &mut AccountState, program: &Program, hold: &Hold) -> Decimal {
    let expiry = lot_expiry(rules, program, hold.earned_at);
    let balance = state.balance_mut(program);
    balance.pending -= hold.amount;
    let repaid = repay_owed(balance, hold.amount);
    if hold.amount > repaid {
        balance.add_lot(hold.amount - repaid, hold.earned_at, expiry);
    }
    repaid
}
