//! Refunds and reversals: take back what the original purchase earned, in
//! proportion to the share refunded, and give back the cap usage it
//! consumed. Cumulative: after any sequence of partial refunds the customer
//! keeps `floor(earned x not-yet-refunded / amount)`, so a full refund takes
//! back exactly what was earned.
//!
//! What is taken back comes first from the reward still pending (a `cancel`:
//! it was never spendable), then from the available lots, the purchase's own
//! lot first (a `clawback`). Anything the customer already spent is owed,
//! and repaid from future rewards: the balance never goes negative.

use super::credit;
use super::{AccrualId, AccrualRecord, Ctx, Explain, NoEffect, Outcome, RecordKind, tiers};
use crate::events::Event;
use crate::money;
use crate::rules::{CapMeasure, TierMeasure};
use crate::state::{AccountState, Balance, RetainedPurchase, Search};
use rust_decimal::Decimal;

/// Spend-cap usage is given back at this precision (amounts carry at most
/// six decimals).
const SPEND_STEP: Decimal = Decimal::from_parts(1, 0, 0, false, 6);

pub(super) fn refund(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    original: &str,
    amount: Option<Decimal>,
    what: &str,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    let rules = ctx.rules;
    let Some(purchase) = state.purchases.find_mut(Search::any(original)) else {
        return Outcome::NoEffect(NoEffect::OriginalNotFound);
    };
    let open = purchase.amount - purchase.refunded;
    if open <= Decimal::ZERO {
        return Outcome::NoEffect(NoEffect::AlreadyRefunded);
    }
    // A refund larger than what is left refunds what is left.
    let this = amount.map_or(open, |a| a.min(open));
    purchase.refunded += this;
    let refunding = Refunding {
        what,
        this,
        total: purchase.amount,
        bought_at: purchase.at,
        source: purchase.event_id.clone(),
        at: event.occurred_at,
    };
    let still_open = refunding.total - purchase.refunded;
    let (takes, restores) = shares_to_take(purchase, &state.balances, still_open);
    for (cap, period, give_back) in restores {
        // A counter already pruned belongs to a period long closed.
        if state.cap_used(&cap, period) > Decimal::ZERO {
            state.add_cap_use(&cap, period, -give_back);
        }
    }

    let before = out.len();
    let qualifying_program =
        rules.tier_qualification.as_ref().and_then(|q| q.program).map_or("", |i| &*rules.programs[i].name);
    let mut earned_taken = Decimal::ZERO;
    for take in takes {
        let counts = take.program.as_ref() == qualifying_program;
        let amount = take.take;
        if take_back(ctx, state, &refunding, take, out) && counts {
            earned_taken += amount;
        }
    }
    // Tier qualification follows the net: spend refunded, or points taken back.
    if let Some(q) = &rules.tier_qualification {
        let less = match q.measure {
            TierMeasure::Spend => this,
            TierMeasure::Earned => earned_taken,
        };
        if less > Decimal::ZERO {
            tiers::qualify(ctx, state, refunding.bought_at, -less, out);
        }
    }
    if out.len() == before {
        // Rounding leaves nothing to take back for this part of the refund.
        return Outcome::NoEffect(NoEffect::NothingToClawBack);
    }
    Outcome::Applied(out.len() - before)
}

/// The refund being applied, as its records explain it.
struct Refunding<'a> {
    /// "refund" or "reversal".
    what: &'a str,
    /// The amount refunded now.
    this: Decimal,
    /// The purchase's amount, time and event id.
    total: Decimal,
    bought_at: crate::time::Timestamp,
    source: String,
    /// The refund's time.
    at: crate::time::Timestamp,
}

/// What one rule gives back of what it paid for the purchase.
struct Take {
    rule: std::sync::Arc<str>,
    program: std::sync::Arc<str>,
    earned: Decimal,
    keep: Decimal,
    take: Decimal,
}

/// Cap usage to restore: (cap, period, amount).
type Restore = (std::sync::Arc<str>, u32, Decimal);

/// How much each of the purchase's rules gives back so that it keeps its
/// share of `still_open`, and the cap usage to restore; both are recorded
/// on the purchase as taken.
fn shares_to_take(
    purchase: &mut RetainedPurchase,
    balances: &[Balance],
    still_open: Decimal,
) -> (Vec<Take>, Vec<Restore>) {
    let total = purchase.amount;
    let mut takes = Vec::new();
    let mut restores = Vec::new();
    for acc in &mut purchase.accruals {
        let decimals = balances.iter().find(|b| b.program == acc.program).map_or(0, |b| b.decimals);
        let step = Decimal::new(1, decimals);
        let keep = money::proportional_keep(acc.earned, still_open, total, step).unwrap_or(Decimal::ZERO);
        let take = acc.earned - keep - acc.clawed;
        for u in &mut acc.caps {
            let unit = match u.measure {
                CapMeasure::Reward => step,
                CapMeasure::Spend => SPEND_STEP,
            };
            let keep_use = money::proportional_keep(u.used, still_open, total, unit).unwrap_or(Decimal::ZERO);
            let give_back = u.used - keep_use - u.restored;
            if give_back > Decimal::ZERO {
                u.restored += give_back;
                restores.push((u.cap.clone(), u.period, give_back));
            }
        }
        if take > Decimal::ZERO {
            acc.clawed += take;
            takes.push(Take {
                rule: acc.rule.clone(),
                program: acc.program.clone(),
                earned: acc.earned,
                keep,
                take,
            });
        }
    }
    (takes, restores)
}

/// Takes back one rule's share: first what is still pending (a `cancel`),
/// then from the available lots, the purchase's own first (a `clawback`);
/// what was already spent is owed. False if the account has no balance of
/// the rule's program (nothing to take back from).
fn take_back(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    r: &Refunding<'_>,
    t: Take,
    out: &mut Vec<AccrualRecord>,
) -> bool {
    let rules = ctx.rules;
    let Take { rule, program: program_name, earned, keep, take } = t;
    let own_lot = rules.program(&program_name).map(|p| credit::lot_expiry(rules, p, r.bought_at));
    let Some(balance) = state.balances.iter_mut().find(|b| b.program == program_name) else { return false };
    let mut head = String::with_capacity(160);
    head.s(r.what).s(" ").d(r.this).s(" of purchase ").s(&r.source).s(" (").d(r.total).s("): keeps ");
    head.d(keep).s(" of ").d(earned).s(" earned");
    // Still pending: cancel it.
    let mut cancelled = Decimal::ZERO;
    if let Some(i) = balance.holds.iter().position(|h| h.source == r.source && h.rule == rule) {
        cancelled = balance.holds[i].amount.min(take);
        balance.holds[i].amount -= cancelled;
        balance.pending -= cancelled;
        if balance.holds[i].amount.is_zero() {
            balance.holds.remove(i);
        }
    }
    if cancelled > Decimal::ZERO {
        let id = AccrualId::Of { rule: &rule, kind: RecordKind::Cancel };
        let mut text = head.clone();
        text.s("; cancels ").d(cancelled).s(" still pending");
        out.push(ctx.record(state, &program_name, &rule, RecordKind::Cancel, id, cancelled, r.at, &text));
    }
    let rest = take - cancelled;
    if rest <= Decimal::ZERO {
        return true;
    }
    let Some(balance) = state.balances.iter_mut().find(|b| b.program == program_name) else { return true };
    let taken = balance.take_from_lots(rest, own_lot);
    let owed = rest - taken;
    balance.owed += owed;
    balance.clawed_back += rest;
    let mut text = head;
    text.s("; takes back ").d(rest);
    if owed > Decimal::ZERO {
        text.s(" (").d(owed).s(" already spent: owed, repaid from future rewards)");
    }
    let id = AccrualId::Of { rule: &rule, kind: RecordKind::Clawback };
    out.push(ctx.record(state, &program_name, &rule, RecordKind::Clawback, id, rest, r.at, &text));
    true
}
