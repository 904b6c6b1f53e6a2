//! Refunds and reversals: take back what the original purchase earned, in
//! proportion to the share refunded, and give back the cap usage it
//! consumed. Cumulative: after any sequence of partial refunds the customer
//! keeps `floor(earned x not-yet-refunded / amount)`, so a full refund takes
//! back exactly what was earned.

use super::{AccrualRecord, NoEffect, Outcome, RecordKind};
use crate::events::Event;
use crate::money;
use crate::rules::{CapMeasure, Rules};
use crate::state::AccountState;
use rust_decimal::Decimal;
use std::fmt::Write as _;

/// Spend-cap usage is given back at this precision (amounts carry at most
/// six decimals).
const SPEND_STEP: Decimal = Decimal::from_parts(1, 0, 0, false, 6);

pub(super) fn refund(
    rules: &Rules,
    state: &mut AccountState,
    event: &Event<'_>,
    original: &str,
    amount: Option<Decimal>,
    what: &str,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    let AccountState { balances, counters: _, purchases, .. } = state;
    let Some(purchase_at) = purchases.iter().rposition(|p| p.event_id == original) else {
        return Outcome::NoEffect(NoEffect::OriginalNotFound);
    };
    let purchase = &mut purchases[purchase_at];
    let open = purchase.amount - purchase.refunded;
    if open <= Decimal::ZERO {
        return Outcome::NoEffect(NoEffect::AlreadyRefunded);
    }
    // A refund larger than what is left refunds what is left.
    let this = amount.map_or(open, |a| a.min(open));
    purchase.refunded += this;
    let still_open = purchase.amount - purchase.refunded;
    let mut restores = Vec::new();
    let mut records = 0;
    for acc in &mut purchase.accruals {
        let Some(balance) = balances.iter_mut().find(|b| b.program == acc.program) else {
            continue;
        };
        let step = Decimal::new(1, balance.decimals);
        let keep =
            money::proportional_keep(acc.earned, still_open, purchase.amount, step).unwrap_or(Decimal::ZERO);
        let claw = acc.earned - keep - acc.clawed;
        for u in &mut acc.caps {
            let unit = match u.measure {
                CapMeasure::Reward => step,
                CapMeasure::Spend => SPEND_STEP,
            };
            let keep_use =
                money::proportional_keep(u.used, still_open, purchase.amount, unit).unwrap_or(Decimal::ZERO);
            let give_back = u.used - keep_use - u.restored;
            if give_back > Decimal::ZERO {
                u.restored += give_back;
                restores.push((u.cap.clone(), u.period, give_back));
            }
        }
        if claw <= Decimal::ZERO {
            continue;
        }
        acc.clawed += claw;
        balance.available -= claw;
        balance.clawed_back += claw;
        let mut explanation = String::with_capacity(96);
        let _ = write!(
            explanation,
            "{what} {this} of purchase {} ({}): keeps {} of {} earned, takes back {}",
            purchase.event_id,
            purchase.amount,
            money::with_scale(keep, balance.decimals),
            acc.earned,
            money::with_scale(claw, balance.decimals)
        );
        out.push(AccrualRecord {
            accrual_id: AccrualRecord::id(event.event_id, &acc.rule, RecordKind::Clawback),
            source_event_id: event.event_id.to_string(),
            account_id: event.account_id.to_string(),
            program: acc.program.clone(),
            rule_id: acc.rule.clone(),
            kind: RecordKind::Clawback,
            amount: money::with_scale(claw, balance.decimals),
            unit: balance.unit.clone(),
            balance_after: money::with_scale(balance.available, balance.decimals),
            rules_version: rules.version.clone(),
            occurred_at: event.occurred_at,
            explanation,
        });
        records += 1;
    }
    for (cap, period, give_back) in restores {
        // A counter already pruned belongs to a period long closed.
        if state.cap_used(&cap, period) > Decimal::ZERO {
            state.add_cap_use(&cap, period, -give_back);
        }
    }
    if records == 0 {
        // Rounding leaves nothing to take back for this part of the refund.
        return Outcome::NoEffect(NoEffect::NothingToClawBack);
    }
    Outcome::Applied(records)
}
