//! Reading a rules file's TOML into its sections, each item deserialized
//! on its own so that every problem names its item and field.

use super::Problems;
use crate::rules::file::*;
use crate::rules::{Item, Problem};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The names of items that could not be read, quoted as problems quote
/// them (`"groceries"`).
pub(super) fn unreadable_names(problems: &[Problem]) -> Vec<String> {
    let mut names: Vec<String> = problems
        .iter()
        .filter_map(|p| match &p.item {
            Item::Program(n)
            | Item::Category(n)
            | Item::Exclusion(n)
            | Item::Partner(n)
            | Item::Tier(n)
            | Item::Cap(n)
            | Item::Bonus(n) => Some(format!("\"{n}\"")),
            _ => None,
        })
        .collect();
    names.dedup();
    names
}

/// Most problems reported per item: each found by deserializing again
/// without the field the last one named.
const PROBLEMS_PER_ITEM: usize = 32;

/// Deserializes one item, or returns every problem it has (field path,
/// message): after each, the field it names is removed and the item read
/// again, so one run reports them all (a field missing only because an
/// earlier problem removed it is not reported).
fn typed<T: DeserializeOwned>(value: toml::Value) -> Result<T, Vec<(String, String)>> {
    let mut value = value;
    let mut found: Vec<(String, String)> = Vec::new();
    while found.len() < PROBLEMS_PER_ITEM {
        let e = match crate::typed_toml::from_value(value.clone()) {
            Ok(item) if found.is_empty() => return Ok(item),
            Ok(_) => break,
            Err(e) => e,
        };
        if e.message.starts_with("missing field") && found.iter().any(|(f, _)| *f == e.field) {
            break;
        }
        // A value left incomplete by an earlier removal (an `effect` table
        // emptied of its only key): not a problem of its own.
        let within =
            |f: &String| f.starts_with(&format!("{}.", e.field)) || f.starts_with(&format!("{}[", e.field));
        if found.iter().any(|(f, _)| within(f)) {
            if !remove_path(&mut value, &e.field) {
                break;
            }
            continue;
        }
        let removed = remove_path(&mut value, &e.field);
        let message = percent_hint(&e.field, e.message);
        found.push((e.field, message));
        if !removed {
            break;
        }
    }
    Err(found)
}

/// Removes the value at a field path (`when.weekdays`, `versions[1].mcc`);
/// false if there is none.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let mut segments: Vec<(&str, Option<usize>)> = Vec::new();
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
            None => (part, None),
        };
        segments.push((name, index));
    }
    let Some((&(last, last_index), parents)) = segments.split_last() else { return false };
    let mut current = value;
    for &(name, index) in parents {
        let Some(next) = current.get_mut(name) else { return false };
        current = match index {
            Some(i) => match next.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
            None => next,
        };
    }
    match (last_index, current) {
        (None, toml::Value::Table(t)) => t.remove(last).is_some(),
        (Some(i), toml::Value::Table(t)) => match t.get_mut(last) {
            Some(toml::Value::Array(a)) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A float given as a percent: say what the suggested string would mean,
/// since `percent = 0.05` usually means 5% and `"0.05"` is 0.05%.
fn percent_hint(field: &str, message: String) -> String {
    let float = message.split_once(" is a float").map(|(n, _)| n.to_string());
    match float {
        Some(n) if field.ends_with("percent") => {
            let as_percent = n.parse::<Decimal>().map(|d| (d * Decimal::ONE_HUNDRED).normalize().to_string());
            let meant = as_percent.map_or_else(
                |_| String::new(),
                |p| format!("; if you meant {n} as a fraction, that is \"{p}\""),
            );
            let hint = format!(" (as a percent, \"{n}\" means {n} percent{meant})");
            match message.split_once('\n') {
                Some((first, rest)) => format!("{first}{hint}\n{rest}"),
                None => format!("{message}{hint}"),
            }
        }
        _ => message,
    }
}

fn named<T: DeserializeOwned>(
    value: Option<toml::Value>,
    section: &str,
    item: fn(String) -> Item,
    problems: &mut Problems,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match value {
        None => {}
        Some(toml::Value::Table(entries)) => {
            for (name, value) in entries {
                match typed::<T>(value) {
                    Ok(v) => {
                        out.insert(name, v);
                    }
                    Err(found) => problems.add_all(&item(name), found),
                }
            }
        }
        Some(_) => problems.add(
            &Item::File,
            section,
            format!("must be a table of named entries, [{section}.<name>]"),
        ),
    }
    out
}

pub(super) fn read_sections(mut table: toml::Table, problems: &mut Problems) -> Option<RulesFile> {
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.add(
                &Item::File,
                key.as_str(),
                format!("unknown section, expected one of: {}", SECTIONS.join(", ")),
            );
        }
    }
    let settings = match table.remove("settings") {
        None => {
            problems.add(&Item::Settings, "settings", "missing section [settings]");
            None
        }
        Some(value) => {
            typed::<SettingsDef>(value).map_err(|found| problems.add_all(&Item::Settings, found)).ok()
        }
    };
    let programs = named(table.remove("programs"), "programs", Item::Program, problems);
    let categories = named(table.remove("categories"), "categories", Item::Category, problems);
    let exclusions = named(table.remove("exclusions"), "exclusions", Item::Exclusion, problems);
    let partners = named(table.remove("partners"), "partners", Item::Partner, problems);
    let tiers = named(table.remove("tiers"), "tiers", Item::Tier, problems);
    let tier_qualification = single(table.remove("tier_qualification"), "tier_qualification", problems);
    let bonuses = named(table.remove("bonuses"), "bonuses", Item::Bonus, problems);
    let category_choice = single(table.remove("category_choice"), "category_choice", problems);
    let caps = named(table.remove("caps"), "caps", Item::Cap, problems);
    let mut rules = Vec::new();
    match table.remove("rules") {
        None => {}
        Some(toml::Value::Array(list)) => {
            for (i, value) in list.into_iter().enumerate() {
                let label = value
                    .get("id")
                    .and_then(toml::Value::as_str)
                    .map_or_else(|| format!("#{} (no id)", i + 1), str::to_string);
                match typed::<RuleDef>(value) {
                    Ok(rule) => rules.push(rule),
                    Err(found) => problems.add_all(&Item::Rule(label), found),
                }
            }
        }
        Some(_) => problems.add(&Item::File, "rules", "must be an array of tables, [[rules]]"),
    }
    Some(RulesFile {
        settings: settings?,
        programs,
        categories,
        exclusions,
        partners,
        tiers,
        tier_qualification,
        bonuses,
        category_choice,
        caps,
        rules,
    })
}

/// A section that is one table, not named entries.
fn single<T: DeserializeOwned>(
    value: Option<toml::Value>,
    section: &'static str,
    problems: &mut Problems,
) -> Option<T> {
    let value = value?;
    typed::<T>(value).map_err(|found| problems.add_all(&Item::Section(section), found)).ok()
}
