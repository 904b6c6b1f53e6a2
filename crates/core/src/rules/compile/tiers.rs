//! Tiers and how customers qualify for them.

use super::{Problems, check_name};
use crate::rules::file::*;
use crate::rules::{Item, Tier, TierPeriod, TierQualification};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// The tiers, lowest rank first.
pub(super) fn compile_tiers(def: &RulesFile, problems: &mut Problems) -> Vec<Tier> {
    let mut tiers: Vec<Tier> = Vec::new();
    for (name, t) in &def.tiers {
        let item = Item::Tier(name.clone());
        check_name(name, &item, "name", problems);
        if t.threshold.0 < Decimal::ZERO {
            problems.add(&item, "threshold", "must not be negative");
        }
        if let Some(other) = tiers.iter().find(|o| o.rank == t.rank) {
            problems.add(&item, "rank", format!("tier \"{}\" has the same rank", other.name));
        }
        tiers.push(Tier { name: name.clone(), rank: t.rank, threshold: t.threshold.0 });
    }
    tiers.sort_by_key(|t| t.rank);
    for pair in tiers.windows(2) {
        if pair[1].threshold <= pair[0].threshold {
            problems.add(
                &Item::Tier(pair[1].name.clone()),
                "threshold",
                "must be above the thresholds of lower tiers",
            );
        }
    }
    tiers
}

pub(super) fn compile_qualification(
    def: &RulesFile,
    tiers: &[Tier],
    program_index: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> Option<TierQualification> {
    let qualification_item = Item::Section("tier_qualification");
    match (&def.tier_qualification, tiers.is_empty()) {
        (None, false) => {
            problems.add(
                &qualification_item,
                "tier_qualification",
                "tiers need a [tier_qualification] section",
            );
            None
        }
        (Some(_), true) => {
            problems.add(
                &qualification_item,
                "tier_qualification",
                "there are no [tiers.<name>] to qualify for",
            );
            None
        }
        (None, true) => None,
        (Some(q), false) => {
            let program = qualification_program(q, program_index, &qualification_item, problems);
            let period = qualification_period(q, &qualification_item, problems);
            let takes_effect = q.takes_effect.unwrap_or_default();
            if takes_effect == TakesEffect::NextPeriod && matches!(period, TierPeriod::Rolling { .. }) {
                let message = "\"next_period\" needs a calendar period (month, quarter or year): a rolling \
                               window has no next period";
                problems.add(&qualification_item, "takes_effect", message);
            }
            Some(TierQualification { measure: q.measure, program, period, takes_effect })
        }
    }
}

fn qualification_program(
    q: &TierQualificationDef,
    program_index: &HashMap<&str, usize>,
    item: &Item,
    problems: &mut Problems,
) -> Option<usize> {
    match (q.measure, &q.program) {
        (crate::rules::TierMeasure::Earned, Some(p)) => {
            let found = program_index.get(p.as_str()).copied();
            if found.is_none() {
                problems.add(item, "program", format!("unknown program \"{p}\""));
            }
            found
        }
        (crate::rules::TierMeasure::Earned, None) => {
            problems.add(item, "program", "measure \"earned\" needs the program whose earnings count");
            None
        }
        (crate::rules::TierMeasure::Spend, Some(_)) => {
            problems.add(item, "program", "only measure \"earned\" takes a program");
            None
        }
        (crate::rules::TierMeasure::Spend, None) => None,
    }
}

fn qualification_period(q: &TierQualificationDef, item: &Item, problems: &mut Problems) -> TierPeriod {
    match (q.period, q.rolling_days) {
        (crate::rules::file::TierPeriodDef::Rolling, Some(days)) if (1..=3650).contains(&days) => {
            TierPeriod::Rolling { days }
        }
        (crate::rules::file::TierPeriodDef::Rolling, _) => {
            problems.add(item, "rolling_days", "a rolling period needs rolling_days from 1 to 3650");
            TierPeriod::Rolling { days: 1 }
        }
        (_, Some(_)) => {
            problems.add(item, "rolling_days", "only period \"rolling\" takes rolling_days");
            TierPeriod::Month
        }
        (crate::rules::file::TierPeriodDef::Month, None) => TierPeriod::Month,
        (crate::rules::file::TierPeriodDef::Quarter, None) => TierPeriod::Quarter,
        (crate::rules::file::TierPeriodDef::Year, None) => TierPeriod::Year,
    }
}
