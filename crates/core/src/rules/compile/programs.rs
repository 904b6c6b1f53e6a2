//! Programs (with their hold, expiry and redemption) and the bonuses
//! paid into them.

use super::{Problems, check_name, positive};
use crate::rules::file::*;
use crate::rules::{Bonus, Expiry, ExpiryPolicy, Hold, Item, Program, Redemption};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The programs, and each one's place by name.
pub(super) fn compile_programs<'d>(
    def: &'d RulesFile,
    problems: &mut Problems,
) -> (Vec<Program>, HashMap<&'d str, usize>) {
    let mut programs = Vec::new();
    let mut program_index = HashMap::new();
    for (name, p) in &def.programs {
        let item = Item::Program(name.clone());
        check_name(name, &item, "name", problems);
        let decimals = p.decimals.unwrap_or(match p.kind {
            ProgramKind::Cashback => 2,
            ProgramKind::Points => 0,
        });
        if decimals > crate::money::MAX_SCALE {
            problems.add(
                &item,
                "decimals",
                format!("must be at most {}, got {decimals}", crate::money::MAX_SCALE),
            );
        }
        if p.unit.trim().is_empty() {
            problems.add(&item, "unit", "must not be empty");
        }
        let hold = p.hold.as_ref().map(|h| compile_hold(h, &item, problems));
        let expiry = p.expiry.as_ref().and_then(|e| compile_expiry(e, &item, problems));
        let redemption = p.redemption.as_ref().map(|r| compile_redemption(r, &def.tiers, &item, problems));
        program_index.insert(name.as_str(), programs.len());
        programs.push(Program {
            name: Arc::from(name.as_str()),
            kind: p.kind,
            unit: Arc::from(p.unit.as_str()),
            decimals,
            hold,
            expiry,
            redemption,
        });
    }
    (programs, program_index)
}

fn compile_hold(h: &HoldDef, item: &Item, problems: &mut Problems) -> Hold {
    match (h.days, h.until) {
        (Some(_), Some(_)) => problems.add(item, "hold", "give `days` or `until`, not both"),
        (None, None) => problems.add(item, "hold", "give `days = N` or `until = \"statement\"`"),
        (Some(d), None) if d > 3650 => {
            problems.add(item, "hold.days", format!("must be at most 3650, got {d}"))
        }
        _ => {}
    }
    Hold { days: h.days, until_statement: h.until.is_some(), require_clearing: h.require_clearing }
}

fn compile_expiry(e: &ExpiryDef, item: &Item, problems: &mut Problems) -> Option<Expiry> {
    let policies = [
        e.after_days.map(ExpiryPolicy::AfterDays),
        e.after_months.map(ExpiryPolicy::AfterMonths),
        e.end_of_year.filter(|b| *b).map(|_| ExpiryPolicy::EndOfYear),
        e.inactive_months.map(|months| ExpiryPolicy::Inactive { months }),
    ];
    let given: Vec<ExpiryPolicy> = policies.into_iter().flatten().collect();
    match given.as_slice() {
        [one] => {
            let zero = matches!(
                one,
                ExpiryPolicy::AfterDays(0)
                    | ExpiryPolicy::AfterMonths(0)
                    | ExpiryPolicy::Inactive { months: 0 }
            );
            if zero {
                problems.add(item, "expiry", "a period of 0 would expire everything at once");
            }
            Some(Expiry { policy: *one, warn_days: e.warn_days })
        }
        _ => {
            problems.add(
                item,
                "expiry",
                "give exactly one of after_days, after_months, end_of_year = true, inactive_months",
            );
            None
        }
    }
}

fn compile_redemption(
    r: &RedemptionDef,
    tiers: &BTreeMap<String, TierDef>,
    item: &Item,
    problems: &mut Problems,
) -> Redemption {
    positive(r.rate.0, item, "redemption.rate", problems);
    if let Some(min) = r.min {
        positive(min.0, item, "redemption.min", problems);
    }
    for (tier, rate) in &r.tier_rates {
        if !tiers.contains_key(tier) {
            problems.add(item, "redemption.tier_rates", format!("unknown tier \"{tier}\""));
        }
        positive(rate.0, item, "redemption.tier_rates", problems);
    }
    Redemption {
        rate: r.rate.0,
        tier_rates: r.tier_rates.iter().map(|(t, v)| (t.clone(), v.0)).collect(),
        min: r.min.map(|m| m.0),
        charities: r.charities.clone(),
    }
}

pub(super) fn compile_bonuses(
    def: &RulesFile,
    programs: &[Program],
    program_index: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> Vec<Bonus> {
    let mut bonuses = Vec::new();
    for (name, b) in &def.bonuses {
        let item = Item::Bonus(name.clone());
        check_name(name, &item, "name", problems);
        let Some(&program) = program_index.get(b.program.as_str()) else {
            problems.add(&item, "program", format!("unknown program \"{}\"", b.program));
            continue;
        };
        positive(b.amount.0, &item, "amount", problems);
        if b.amount.0.normalize().scale() > programs[program].decimals {
            problems.add(
                &item,
                "amount",
                format!("{} has more decimal places than program \"{}\" keeps", b.amount.0, b.program),
            );
        }
        let referral = b.on == crate::rules::BonusTrigger::Referral;
        for (field, given) in [
            ("min_purchase", b.min_purchase.is_some()),
            ("max_per_referrer", b.max_per_referrer.is_some()),
            ("per", b.per.is_some()),
        ] {
            if given && !referral {
                problems.add(&item, field, "only referral bonuses take this");
            }
        }
        if b.max_per_referrer.is_some() != b.per.is_some() {
            problems.add(&item, "per", "max_per_referrer and per go together");
        }
        if bonuses.iter().any(|o: &Bonus| o.trigger == b.on) {
            problems.add(&item, "on", "another bonus has the same trigger");
        }
        bonuses.push(Bonus {
            name: Arc::from(name.as_str()),
            trigger: b.on,
            program,
            amount: b.amount.0,
            min_purchase: b.min_purchase.map(|m| m.0),
            max_per_referrer: b.max_per_referrer,
            per: b.per,
        });
    }
    bonuses
}
