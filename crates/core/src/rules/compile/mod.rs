//! Loading a rules file: TOML syntax, then each section and each rule
//! deserialized on its own (so an error can name the rule), then semantic
//! checks. Every problem found is reported, not only the first.
//!
//! One module per part of the file: [`read`] deserializes the sections,
//! the others compile one kind of section each, and [`compile`] puts them
//! together in the order their references need.

mod conditions;
mod lists;
mod programs;
mod read;
mod rule;
mod settings;
mod tiers;

use lists::{compile_choice, compile_lists, compile_partners};
use programs::{compile_bonuses, compile_programs};
use read::{read_sections, unreadable_names};
use rule::{Tables, check_caps, compile_caps, compile_rule, exclusive_groups, rule_index};
use settings::compile_settings;
use tiers::{compile_qualification, compile_tiers};

use super::file::RulesFile;
use super::mcc::MccIndex;
use super::{ExpiryPolicy, Item, MccSet, Problem, Rules, RulesError};
use crate::time;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Loads and compiles a rules file.
pub fn load(path: &Path) -> Result<Rules, RulesError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| RulesError::Read { file: file.clone(), source })?;
    parse(&text, &file)
}

/// Compiles rules from TOML text; `file` names the source in errors.
pub fn parse(text: &str, file: &str) -> Result<Rules, RulesError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| RulesError::Syntax { file: file.to_string(), message: e.to_string() })?;
    let mut problems = Problems::default();
    let def = read_sections(table, &mut problems);
    let unreadable = unreadable_names(&problems.0);
    let read = problems.0.len();
    let rules = def.and_then(|def| compile(def, &mut problems));
    // What refers to an item that could not be read is not wrong itself:
    // its problems are the item's, already reported.
    let mut index = 0;
    problems.0.retain(|p| {
        index += 1;
        index <= read
            || !p.message.starts_with("unknown ")
            || !unreadable.iter().any(|n| p.message.contains(n))
    });
    match rules {
        Some(rules) if problems.0.is_empty() => Ok(rules),
        _ => Err(RulesError::Invalid { file: file.to_string(), problems: problems.0 }),
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, item: &Item, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { item: item.clone(), field: field.into(), message: message.into() });
    }

    fn add_all(&mut self, item: &Item, found: Vec<(String, String)>) {
        for (field, message) in found {
            self.add(item, field, message);
        }
    }
}

/// Names that end up in ids, keys and metric labels stay plain.
fn check_name(name: &str, item: &Item, field: &str, problems: &mut Problems) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        problems.add(
            item,
            field,
            format!(
                "\"{name}\" must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        );
    }
}

fn positive(value: Decimal, item: &Item, field: &str, problems: &mut Problems) {
    if value <= Decimal::ZERO {
        problems.add(item, field, format!("must be greater than zero, got {value}"));
    }
}

/// Compiles the deserialized file, section by section, in the order their
/// references need (programs before the rules that pay into them, and so
/// on); every section reports its own problems.
fn compile(def: RulesFile, problems: &mut Problems) -> Option<Rules> {
    let settings = compile_settings(&def.settings, problems);
    let timezone = settings.timezone.clone();
    // The file, and for an IANA zone the time zone database's version: a
    // new database can move a period boundary, so it makes a new version.
    let version = {
        let mut canonical = serde_json::to_vec(&def).ok()?;
        if let time::TzOffset::Iana { .. } = timezone {
            canonical.extend_from_slice(timezone.versioned_name().as_bytes());
        }
        let digest = Sha256::digest(&canonical);
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Arc::<str>::from(hex)
    };
    let (programs, program_index) = compile_programs(&def, problems);
    let categories = compile_lists(&def.categories, Item::Category, &timezone, problems);
    let exclusions = compile_lists(&def.exclusions, Item::Exclusion, &timezone, problems);
    let category_index: HashMap<&str, usize> =
        categories.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let category_choice = def.category_choice.as_ref().map(|c| compile_choice(c, &category_index, problems));
    let partners = compile_partners(&def, problems);
    let partner_index: HashMap<&str, usize> =
        def.partners.keys().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let tiers = compile_tiers(&def, problems);
    let tier_qualification = compile_qualification(&def, &tiers, &program_index, problems);
    let bonuses = compile_bonuses(&def, &programs, &program_index, problems);
    let caps = compile_caps(&def, &program_index, problems);
    let tables = Tables {
        def: &def,
        timezone: &timezone,
        programs: &programs,
        program_index: &program_index,
        category_index: &category_index,
        partner_index: &partner_index,
        tiers: &tiers,
        caps: &caps,
        rule_index: rule_index(&def, problems),
    };
    let mut rules = Vec::with_capacity(def.rules.len());
    let mut group_names: Vec<Option<Arc<str>>> = Vec::with_capacity(def.rules.len());
    for r in &def.rules {
        if let Some(rule) = compile_rule(r, &tables, problems) {
            group_names.push(r.group.as_deref().map(Arc::from));
            rules.push(rule);
        }
    }
    if !problems.0.is_empty() {
        return None;
    }
    check_caps(&caps.caps, &rules, &programs, problems);
    let (rules, groups) = exclusive_groups(rules, &group_names, problems)?;
    let any_expiry = programs.iter().any(|p| p.expiry.is_some());
    let any_inactivity_expiry =
        programs.iter().any(|p| p.expiry.is_some_and(|e| matches!(e.policy, ExpiryPolicy::Inactive { .. })));
    let ever: Vec<MccSet> = categories.iter().map(|c| c.mcc.ever()).collect();
    let allowed: Vec<Option<MccSet>> = rules.iter().map(|r| r.when.mcc_allowed(&ever)).collect();
    let excluded: Vec<MccSet> = exclusions.iter().map(|e| e.mcc.ever()).collect();
    let mcc_index = MccIndex::new(&allowed, MccSet::union_of(&excluded));
    let s = &def.settings;
    Some(Rules {
        version,
        name: s.name.clone(),
        currency: s.currency.clone(),
        timezone: timezone.clone(),
        refund_window_ms: i64::from(s.refund_window_days) * time::MS_PER_DAY,
        dedupe_window_ms: i64::from(s.dedupe_window_days) * time::MS_PER_DAY,
        max_event_ahead_ms: i64::from(settings.max_ahead_minutes) * 60_000,
        max_event_delay_ms: i64::from(settings.max_delay_days) * time::MS_PER_DAY,
        max_accounts_per_clock: settings.per_clock as usize,
        programs,
        categories,
        exclusions,
        partners: partners.partners,
        tiers,
        tier_qualification,
        bonuses,
        category_choice,
        statement_day: s.statement_day,
        effective_from: s.effective_from.as_ref().map(|t| t.resolve(&timezone)),
        caps: caps.caps,
        rules,
        groups,
        partner_ids: partners.ids,
        partner_merchants: partners.merchants,
        any_expiry,
        any_inactivity_expiry,
        mcc_index,
    })
}
