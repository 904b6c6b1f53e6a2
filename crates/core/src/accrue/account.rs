//! Events about the account rather than a purchase: enrolment (welcome
//! bonus), referrals, chosen categories.

use super::credit::{self, Credited};
use super::{AccrualId, AccrualRecord, Ctx, DerivedEvent, NoEffect, Outcome, RecordKind};
use crate::events::{CategoryChoice, Event};
use crate::rules::{Bonus, BonusTrigger, CalendarPeriod, Rules};
use crate::state::{AccountState, Choice, Referral};
use crate::time::{self, LocalTime, Timestamp};

fn bonus(rules: &Rules, trigger: BonusTrigger) -> Option<&Bonus> {
    rules.bonuses.iter().find(|b| b.trigger == trigger)
}

/// Credits a bonus (available at once, never held) and records it.
fn grant(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    b: &Bonus,
    at: Timestamp,
    why: String,
    out: &mut Vec<AccrualRecord>,
) {
    let program = &ctx.rules.programs[b.program];
    let credited =
        credit::credit(ctx.rules, state, program, b.amount, ctx.event_id, &b.name, at, false, false);
    let mut text = format!("{why}: {} {}", b.amount, program.unit);
    if let Credited::Available { repaid } = credited {
        if !repaid.is_zero() {
            text.push_str(&format!("; {repaid} of it repaid what was owed"));
        }
    }
    let id = AccrualId::Of { rule: &b.name, kind: RecordKind::Earn };
    out.push(ctx.record(state, &program.name, &b.name, RecordKind::Earn, id, b.amount, at, &text));
}

pub fn enrollment(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    if state.enrolled {
        return Outcome::NoEffect(NoEffect::AlreadyEnrolled);
    }
    state.enrolled = true;
    let Some(b) = bonus(ctx.rules, BonusTrigger::Enrollment) else {
        return Outcome::NoEffect(NoEffect::NoBonus);
    };
    grant(ctx, state, b, event.occurred_at, "welcome bonus".into(), out);
    Outcome::Applied(1)
}

pub fn referral(state: &mut AccountState, referrer: &str) -> Outcome {
    if state.referral.is_some() {
        return Outcome::NoEffect(NoEffect::AlreadyReferred);
    }
    state.referral = Some(Referral { referrer: referrer.to_string(), qualified: false });
    Outcome::NoEffect(NoEffect::ReferralRecorded)
}

/// After a purchase: the referred account's first qualifying purchase sends
/// the referrer's bonus as an event to the referrer's account.
pub fn after_purchase(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    amount: rust_decimal::Decimal,
    out: &mut Vec<DerivedEvent>,
) {
    let Some(b) = bonus(ctx.rules, BonusTrigger::Referral) else { return };
    let Some(referral) = state.referral.as_mut().filter(|r| !r.qualified) else { return };
    if b.min_purchase.is_some_and(|min| amount < min) {
        return;
    }
    referral.qualified = true;
    let event_id = format!("{}:referral_bonus", event.event_id);
    let mut payload = String::from("{\"event_id\":");
    super::json_str(&mut payload, &event_id);
    payload.push_str(",\"type\":\"referral_bonus\",\"account_id\":");
    super::json_str(&mut payload, &referral.referrer);
    payload.push_str(",\"referred_account_id\":");
    super::json_str(&mut payload, ctx.account_id);
    payload.push_str(&format!(",\"occurred_at\":\"{}\"}}", event.occurred_at));
    out.push(DerivedEvent { event_id, account_id: referral.referrer.clone(), payload: payload.into_bytes() });
}

/// The referral limit's current period key, if referral bonuses are limited.
pub fn referral_period(rules: &Rules, at: Timestamp) -> Option<u32> {
    let per = bonus(rules, BonusTrigger::Referral)?.per?;
    let local = LocalTime::new(at, &rules.timezone);
    Some(match per {
        CalendarPeriod::Month => local.month_key(),
        CalendarPeriod::Quarter => local.quarter_key(),
        CalendarPeriod::Year => local.year as u32,
    })
}

pub fn referral_bonus(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    referred: &str,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    let Some(b) = bonus(ctx.rules, BonusTrigger::Referral) else {
        return Outcome::NoEffect(NoEffect::NoBonus);
    };
    if let (Some(max), Some(period)) = (b.max_per_referrer, referral_period(ctx.rules, event.occurred_at)) {
        let slot = match state.referrals.iter().position(|(p, _)| *p == period) {
            Some(i) => i,
            None => {
                state.referrals.push((period, 0));
                state.referrals.len() - 1
            }
        };
        if state.referrals[slot].1 >= max {
            return Outcome::NoEffect(NoEffect::ReferralLimit);
        }
        state.referrals[slot].1 += 1;
    }
    grant(ctx, state, b, event.occurred_at, format!("referral bonus for {referred}"), out);
    Outcome::Applied(1)
}

pub fn category_choice(
    ctx: &Ctx<'_>,
    state: &mut AccountState,
    event: &Event<'_>,
    choice: &CategoryChoice<'_>,
    out: &mut Vec<AccrualRecord>,
) -> Outcome {
    let month = time::month_label(choice.month);
    let reject = |out: &mut Vec<AccrualRecord>, why: String| {
        let id = format!("{}:{}", event.event_id, RecordKind::ChoiceRejected.name());
        let text = format!("choice for {month} refused: {why}");
        out.push(ctx.account_record(
            state,
            RecordKind::ChoiceRejected,
            &id,
            "category_choice",
            event.occurred_at,
            &text,
        ));
        Outcome::Applied(1)
    };
    let Some(config) = &ctx.rules.category_choice else {
        return reject(out, "this program has no category choice".into());
    };
    let offered: Vec<&str> = config.offered.iter().map(|&i| ctx.rules.categories[i].name.as_str()).collect();
    if let Some(unknown) = choice.categories.iter().find(|c| !offered.contains(c)) {
        return reject(out, format!("\"{unknown}\" is not offered (offered: {})", offered.join(", ")));
    }
    let mut unique: Vec<&str> = choice.categories.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != choice.categories.len() {
        return reject(out, "a category is chosen twice".into());
    }
    if choice.categories.len() > config.choose as usize {
        return reject(out, format!("{} chosen, at most {} allowed", choice.categories.len(), config.choose));
    }
    let (year, m) = ((choice.month / 12) as i32, choice.month % 12 + 1);
    let deadline = Timestamp::local_midnight(year, m, config.deadline_day + 1, &ctx.rules.timezone);
    if event.occurred_at >= deadline {
        return reject(out, format!("choices for {month} closed at {deadline}"));
    }
    let categories: Vec<String> = choice.categories.iter().map(|c| c.to_string()).collect();
    let text = format!("chose {} for {month}", categories.join(", "));
    match state.choices.binary_search_by_key(&choice.month, |c| c.month) {
        Ok(i) => state.choices[i].categories = categories,
        Err(i) => state.choices.insert(i, Choice { month: choice.month, categories }),
    }
    let id = format!("{}:{}", event.event_id, RecordKind::CategoryChoice.name());
    out.push(ctx.account_record(
        state,
        RecordKind::CategoryChoice,
        &id,
        "category_choice",
        event.occurred_at,
        &text,
    ));
    Outcome::Applied(1)
}

/// Category indices chosen for the purchase's month.
pub fn chosen_categories(rules: &Rules, state: &AccountState, month: u32) -> Vec<usize> {
    state
        .chosen(month)
        .iter()
        .filter_map(|name| rules.categories.iter().position(|c| &c.name == name))
        .collect()
}
