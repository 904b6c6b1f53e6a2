//! Named MCC lists (categories and exclusions), the category choice, and
//! partners with the ids that name them.

use super::{Problems, check_name};
use crate::rules::file::*;
use crate::rules::{Category, ChoiceConfig, DatedMccSet, Item, MccSet, Partner};
use crate::time::{self, TzOffset};
use std::collections::{BTreeMap, HashMap};

fn compile_mcc_list(def: &MccListDef, tz: &TzOffset, item: &Item, problems: &mut Problems) -> DatedMccSet {
    let mut versions = Vec::new();
    match (&def.mcc, &def.versions) {
        (Some(list), None) => match MccSet::parse(list) {
            Ok(set) => versions.push((time::Timestamp(i64::MIN), set)),
            Err(message) => problems.add(item, "mcc", message),
        },
        (None, Some(dated)) if !dated.is_empty() => {
            for (i, version) in dated.iter().enumerate() {
                let from = version.from.resolve(tz);
                if versions.last().is_some_and(|(prev, _)| *prev >= from) {
                    problems.add(
                        item,
                        format!("versions[{i}].from"),
                        "versions must be in increasing order of `from`",
                    );
                }
                match MccSet::parse(&version.mcc) {
                    Ok(set) => versions.push((from, set)),
                    Err(message) => problems.add(item, format!("versions[{i}].mcc"), message),
                }
            }
        }
        _ => problems.add(item, "mcc", "give exactly one of `mcc = [...]` or `[[...versions]]`"),
    }
    DatedMccSet::new(versions)
}

/// Categories or exclusions: named MCC lists.
pub(super) fn compile_lists(
    defs: &BTreeMap<String, MccListDef>,
    item: fn(String) -> Item,
    timezone: &TzOffset,
    problems: &mut Problems,
) -> Vec<Category> {
    defs.iter()
        .map(|(name, list)| {
            let item = item(name.clone());
            check_name(name, &item, "name", problems);
            Category { name: name.clone(), mcc: compile_mcc_list(list, timezone, &item, problems) }
        })
        .collect()
}

pub(super) fn compile_choice(
    c: &CategoryChoiceDef,
    category_index: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> ChoiceConfig {
    let item = Item::Section("category_choice");
    let mut offered = Vec::new();
    for name in &c.offered {
        match category_index.get(name.as_str()) {
            Some(&i) if !offered.contains(&i) => offered.push(i),
            Some(_) => problems.add(&item, "offered", format!("\"{name}\" is offered twice")),
            None => problems.add(&item, "offered", format!("unknown category \"{name}\"")),
        }
    }
    if c.choose == 0 || c.choose as usize > c.offered.len() {
        problems.add(
            &item,
            "choose",
            format!("must be from 1 to the {} offered, got {}", c.offered.len(), c.choose),
        );
    }
    if !(1..=28).contains(&c.deadline_day) {
        problems.add(&item, "deadline_day", format!("must be a day from 1 to 28, got {}", c.deadline_day));
    }
    ChoiceConfig { offered, choose: c.choose, deadline_day: c.deadline_day }
}

/// The partners, and which partner each partner id and merchant id names.
pub(super) struct PartnerTables {
    pub(super) partners: Vec<Partner>,
    pub(super) ids: foldhash::HashMap<String, usize>,
    pub(super) merchants: foldhash::HashMap<String, usize>,
}

pub(super) fn compile_partners(def: &RulesFile, problems: &mut Problems) -> PartnerTables {
    let mut partners = Vec::new();
    let mut partner_ids = foldhash::HashMap::default();
    let mut partner_merchants = foldhash::HashMap::default();
    for (i, (name, p)) in def.partners.iter().enumerate() {
        let item = Item::Partner(name.clone());
        check_name(name, &item, "name", problems);
        if p.partner_ids.is_empty() && p.merchant_ids.is_empty() {
            problems.add(&item, "partner_ids", "give at least one partner id or merchant id");
        }
        for (field, ids, index) in [
            ("partner_ids", &p.partner_ids, &mut partner_ids),
            ("merchant_ids", &p.merchant_ids, &mut partner_merchants),
        ] {
            for id in ids {
                if let Some(other) = index.insert(id.clone(), i) {
                    if other != i {
                        let other_name = def.partners.keys().nth(other).cloned().unwrap_or_default();
                        problems.add(
                            &item,
                            field,
                            format!("\"{id}\" already belongs to partner \"{other_name}\""),
                        );
                    }
                }
            }
        }
        partners.push(Partner { name: name.clone() });
    }
    PartnerTables { partners, ids: partner_ids, merchants: partner_merchants }
}
