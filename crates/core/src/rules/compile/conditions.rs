//! A rule's conditions (`when`, `when.not`), names resolved to indices.

use super::Problems;
use crate::rules::file::*;
use crate::rules::{Conditions, Item, MccSet, Negated, Tier};
use crate::time::{TzOffset, Weekday};
use std::collections::HashMap;

/// The indices of `names` in `index`; an unknown one is a problem at
/// `field` ("unknown category \"fuels\"").
fn indices_of(
    names: &[String],
    index: &HashMap<&str, usize>,
    what: &str,
    item: &Item,
    field: &str,
    problems: &mut Problems,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match index.get(name.as_str()) {
            Some(&i) => out.push(i),
            None => problems.add(item, field, format!("unknown {what} \"{name}\"")),
        }
    }
    out
}

/// A condition's MCC list as a set; none if empty or wrong (a problem at
/// `field`).
fn mcc_condition(list: &[String], item: &Item, field: &str, problems: &mut Problems) -> Option<MccSet> {
    if list.is_empty() {
        return None;
    }
    MccSet::parse(list).map_err(|message| problems.add(item, field, message)).ok()
}

/// `when.not`, its names resolved like the positive conditions'.
fn compile_negated(
    not: &NegatedDef,
    item: &Item,
    categories: &HashMap<&str, usize>,
    partners: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> Negated {
    let mut n = Negated {
        categories: indices_of(
            &not.categories,
            categories,
            "category",
            item,
            "when.not.categories",
            problems,
        ),
        ..Negated::default()
    };
    n.mcc = mcc_condition(&not.mcc, item, "when.not.mcc", problems);
    n.partners = indices_of(&not.partners, partners, "partner", item, "when.not.partners", problems);
    if not.channels.iter().any(String::is_empty) {
        problems.add(item, "when.not.channels", "entries must not be empty");
    }
    n.channels = not.channels.clone();
    n
}

pub(super) fn compile_conditions(
    w: &ConditionsDef,
    tz: &TzOffset,
    item: &Item,
    categories: &HashMap<&str, usize>,
    partners: &HashMap<&str, usize>,
    tiers: &[Tier],
    problems: &mut Problems,
) -> Conditions {
    let mut c = Conditions {
        categories: indices_of(&w.categories, categories, "category", item, "when.categories", problems),
        ..Conditions::default()
    };
    c.mcc = mcc_condition(&w.mcc, item, "when.mcc", problems);
    c.partners = indices_of(&w.partners, partners, "partner", item, "when.partners", problems);
    for name in &w.tiers {
        if !tiers.iter().any(|t| &t.name == name) {
            problems.add(item, "when.tiers", format!("unknown tier \"{name}\""));
        }
    }
    for (field, list) in [("when.merchants", &w.merchants), ("when.channels", &w.channels)] {
        if list.iter().any(|s| s.is_empty()) {
            problems.add(item, field, "entries must not be empty");
        }
    }
    c.merchants = w.merchants.clone();
    c.channels = w.channels.clone();
    c.tiers = w.tiers.clone();
    for name in &w.weekdays {
        match Weekday::from_name(&name.to_ascii_lowercase()) {
            Some(day) => c.weekdays |= 1 << day as u8,
            None => problems.add(
                item,
                "when.weekdays",
                format!("\"{name}\" is not a weekday (mon, tue, ... sun)"),
            ),
        }
    }
    c.min_amount = w.min_amount.map(|d| d.0);
    c.max_amount = w.max_amount.map(|d| d.0);
    if let (Some(min), Some(max)) = (c.min_amount, c.max_amount) {
        if min > max {
            problems.add(item, "when.max_amount", format!("{max} is below min_amount {min}"));
        }
    }
    c.chosen = w.chosen;
    if let Some(not) = &w.not {
        c.not = compile_negated(not, item, categories, partners, problems);
    }
    c.from = w.from.as_ref().map(|t| t.resolve(tz));
    c.to = w.to.as_ref().map(|t| t.resolve(tz));
    if let (Some(from), Some(to)) = (c.from, c.to) {
        if from >= to {
            problems.add(item, "when.to", "must be after `from`");
        }
    }
    c
}
