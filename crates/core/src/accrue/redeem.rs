//! Redemption: spending available (never pending) rewards, oldest lots
//! first, at the program's rate (tier-dependent if configured); or donating
//! them to a charity. Refused with a reason, never below zero.

use super::{AccrualId, AccrualRecord, Ctx, Outcome, RecordKind};
use crate::events::{Event, Redemption};
use crate::money;
use crate::state::AccountState;
use rust_decimal::Decimal;
use std::sync::Arc;

pub fn redeem(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    r: &Redemption<'_>,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    let kind = if r.charity.is_some() { RecordKind::Donation } else { RecordKind::Redeem };
    let program_name: Arc<str> = Arc::from(r.program);
    let rule: Arc<str> = Arc::from("redemption");
    let reject = |state: &AccountState, out: &mut Vec<AccrualRecord>, reason: &str, detail: String| {
        let id = AccrualId::Of { rule: &program_name, kind: RecordKind::RedeemRejected };
        let text = format!("{reason}: {detail}");
        out.push(ctx.record(
            state,
            &program_name,
            &rule,
            RecordKind::RedeemRejected,
            id,
            r.amount,
            event.occurred_at,
            &text,
        ));
        Outcome::Applied(1)
    };
    let Some(program) = ctx.rules.program(r.program) else {
        return reject(state, out, "unknown_program", format!("no program \"{}\"", r.program));
    };
    let Some(policy) = &program.redemption else {
        return reject(state, out, "not_redeemable", format!("program \"{}\" cannot be redeemed", r.program));
    };
    if r.amount.normalize().scale() > program.decimals {
        return reject(
            state,
            out,
            "too_precise",
            format!("{} is finer than the program's {} decimals", r.amount, program.decimals),
        );
    }
    if let Some(min) = policy.min.filter(|min| r.amount < *min) {
        return reject(state, out, "below_minimum", format!("{} is below the minimum of {min}", r.amount));
    }
    if let Some(charity) = r.charity {
        if !policy.charities.iter().any(|c| c == charity) {
            return reject(
                state,
                out,
                "unknown_charity",
                format!("\"{charity}\" is not a charity of this program"),
            );
        }
    }
    let (available, pending) =
        state.balance(r.program).map_or((Decimal::ZERO, Decimal::ZERO), |b| (b.available, b.pending));
    if available < r.amount {
        return reject(
            state,
            out,
            "insufficient_balance",
            format!("{} requested, {available} available ({pending} pending cannot be spent)", r.amount),
        );
    }
    let rate = policy.rate_for(state.tier.as_deref());
    let Some(value) = r.amount.checked_mul(rate) else {
        return Outcome::Rejected(super::Rejection::Overflow);
    };
    let value = money::with_scale(value, 2);
    let balance = state.balance_mut(program);
    balance.take_from_lots(r.amount, None);
    balance.redeemed += r.amount;
    let what = match r.charity {
        Some(charity) => format!("donated to {charity}"),
        None => "spent".to_string(),
    };
    let tier = state.tier.as_deref().map_or(String::new(), |t| format!(" (tier {t})"));
    let text =
        format!("{} {} {what}, worth {value} {} at {rate}{tier}", r.amount, program.unit, ctx.rules.currency);
    let id = AccrualId::Of { rule: &program_name, kind };
    let mut record = ctx.record(state, &program.name, &rule, kind, id, r.amount, event.occurred_at, &text);
    record.value = Some(value);
    out.push(record);
    Outcome::Applied(1)
}
