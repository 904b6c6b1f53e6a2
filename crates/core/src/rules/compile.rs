//! Loading a rules file: TOML syntax, then each section and each rule
//! deserialized on its own (so an error can name the rule), then semantic
//! checks. Every problem found is reported, not only the first.

use super::Negated;
use super::file::*;
use super::mcc::MccIndex;
use super::{
    Bonus, Cap, Category, ChoiceConfig, Conditions, DatedMccSet, Effect, Expiry, ExpiryPolicy, Group, Hold,
    Item, MccSet, Partner, Problem, Program, Redemption, Rounding, Rule, Rules, RulesError, Tier, TierPeriod,
    TierQualification,
};
use crate::time::{self, TzOffset, Weekday};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The names of items that could not be read, quoted as problems quote
/// them (`"groceries"`).
fn unreadable_names(problems: &[Problem]) -> Vec<String> {
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

fn read_sections(mut table: toml::Table, problems: &mut Problems) -> Option<RulesFile> {
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

/// An hour covers producers' clock skew and a time zone written wrong;
/// a week is the most any setting allows.
const DEFAULT_MAX_EVENT_AHEAD_MINUTES: u32 = 60;
const MAX_EVENT_AHEAD_MINUTES: u32 = 7 * 24 * 60;
/// Small enough that a clock's cycle stays within tens of megabytes, large
/// enough that a month-end's backlog drains in minutes (docs/benchmarks.md).
const DEFAULT_MAX_ACCOUNTS_PER_CLOCK: u32 = 5_000;
const MAX_ACCOUNTS_PER_CLOCK: u32 = 1_000_000;

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

/// What `[settings]` decides beyond the values copied as they are.
struct CompiledSettings {
    timezone: TzOffset,
    max_ahead_minutes: u32,
    max_delay_days: u32,
    per_clock: u32,
}

fn compile_settings(s: &SettingsDef, problems: &mut Problems) -> CompiledSettings {
    let settings = Item::Settings;
    if s.currency.len() != 3 || !s.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        problems.add(&settings, "currency", format!("\"{}\" is not a 3-letter ISO 4217 code", s.currency));
    }
    let timezone = TzOffset::parse(&s.timezone).unwrap_or_else(|| {
        let message = format!(
            "\"{}\" is neither a UTC offset like \"+03:00\" or \"Z\" nor a time zone of the IANA database \
             (version {}) like \"Europe/Berlin\"",
            s.timezone,
            time::tzdb_version()
        );
        problems.add(&settings, "timezone", message);
        TzOffset::default()
    });
    for (field, days) in
        [("refund_window_days", s.refund_window_days), ("dedupe_window_days", s.dedupe_window_days)]
    {
        if !(1..=3650).contains(&days) {
            problems.add(&settings, field, format!("must be between 1 and 3650 days, got {days}"));
        }
    }

    let max_ahead_minutes = s.max_event_ahead_minutes.unwrap_or(DEFAULT_MAX_EVENT_AHEAD_MINUTES);
    if !(1..=MAX_EVENT_AHEAD_MINUTES).contains(&max_ahead_minutes) {
        problems.add(
            &settings,
            "max_event_ahead_minutes",
            format!("must be between 1 and {MAX_EVENT_AHEAD_MINUTES} minutes, got {max_ahead_minutes}"),
        );
    }
    let max_delay_days = s.max_event_delay_days.unwrap_or(s.dedupe_window_days);
    if !(1..=s.dedupe_window_days).contains(&max_delay_days) {
        problems.add(
            &settings,
            "max_event_delay_days",
            format!(
                "must be between 1 day and dedupe_window_days ({}): an older event could repeat one no \
                 longer remembered; got {max_delay_days}",
                s.dedupe_window_days
            ),
        );
    }
    let per_clock = s.max_accounts_per_clock.unwrap_or(DEFAULT_MAX_ACCOUNTS_PER_CLOCK);
    if !(1..=MAX_ACCOUNTS_PER_CLOCK).contains(&per_clock) {
        problems.add(
            &settings,
            "max_accounts_per_clock",
            format!("must be between 1 and {MAX_ACCOUNTS_PER_CLOCK}, got {per_clock}"),
        );
    }
    if !(1..=28).contains(&s.statement_day) {
        problems.add(
            &settings,
            "statement_day",
            format!("must be a day from 1 to 28, got {}", s.statement_day),
        );
    }
    CompiledSettings { timezone, max_ahead_minutes, max_delay_days, per_clock }
}

/// The programs, and each one's place by name.
fn compile_programs<'d>(
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

/// Categories or exclusions: named MCC lists.
fn compile_lists(
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

fn compile_choice(
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
struct PartnerTables {
    partners: Vec<Partner>,
    ids: foldhash::HashMap<String, usize>,
    merchants: foldhash::HashMap<String, usize>,
}

fn compile_partners(def: &RulesFile, problems: &mut Problems) -> PartnerTables {
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

/// The tiers, lowest rank first.
fn compile_tiers(def: &RulesFile, problems: &mut Problems) -> Vec<Tier> {
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

fn compile_qualification(
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
        (super::TierMeasure::Earned, Some(p)) => {
            let found = program_index.get(p.as_str()).copied();
            if found.is_none() {
                problems.add(item, "program", format!("unknown program \"{p}\""));
            }
            found
        }
        (super::TierMeasure::Earned, None) => {
            problems.add(item, "program", "measure \"earned\" needs the program whose earnings count");
            None
        }
        (super::TierMeasure::Spend, Some(_)) => {
            problems.add(item, "program", "only measure \"earned\" takes a program");
            None
        }
        (super::TierMeasure::Spend, None) => None,
    }
}

fn qualification_period(q: &TierQualificationDef, item: &Item, problems: &mut Problems) -> TierPeriod {
    match (q.period, q.rolling_days) {
        (super::file::TierPeriodDef::Rolling, Some(days)) if (1..=3650).contains(&days) => {
            TierPeriod::Rolling { days }
        }
        (super::file::TierPeriodDef::Rolling, _) => {
            problems.add(item, "rolling_days", "a rolling period needs rolling_days from 1 to 3650");
            TierPeriod::Rolling { days: 1 }
        }
        (_, Some(_)) => {
            problems.add(item, "rolling_days", "only period \"rolling\" takes rolling_days");
            TierPeriod::Month
        }
        (super::file::TierPeriodDef::Month, None) => TierPeriod::Month,
        (super::file::TierPeriodDef::Quarter, None) => TierPeriod::Quarter,
        (super::file::TierPeriodDef::Year, None) => TierPeriod::Year,
    }
}

fn compile_bonuses(
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
        let referral = b.on == super::BonusTrigger::Referral;
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

/// The caps, each one's place by name, and the program each is limited to.
struct CapTables<'d> {
    caps: Vec<Cap>,
    index: HashMap<&'d str, usize>,
    program: Vec<Option<usize>>,
}

fn compile_caps<'d>(
    def: &'d RulesFile,
    program_index: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> CapTables<'d> {
    let mut caps = Vec::new();
    let mut cap_index = HashMap::new();
    let mut cap_program = Vec::new();
    for (name, c) in &def.caps {
        let item = Item::Cap(name.clone());
        check_name(name, &item, "name", problems);
        positive(c.limit.0, &item, "limit", problems);
        let program = c.program.as_ref().and_then(|p| {
            let found = program_index.get(p.as_str()).copied();
            if found.is_none() {
                problems.add(&item, "program", format!("unknown program \"{p}\""));
            }
            found
        });
        cap_index.insert(name.as_str(), caps.len());
        cap_program.push(program);
        caps.push(Cap {
            id: Arc::from(name.as_str()),
            limit: c.limit.0,
            period: c.period,
            measure: c.measure,
            description: c.description.as_deref().map(Arc::from),
        });
    }
    CapTables { caps, index: cap_index, program: cap_program }
}

/// Each rule's place by id; two rules with one id are a problem.
fn rule_index<'d>(def: &'d RulesFile, problems: &mut Problems) -> HashMap<&'d str, usize> {
    let mut rule_index = HashMap::new();
    for (i, r) in def.rules.iter().enumerate() {
        let item = Item::Rule(r.id.clone());
        check_name(&r.id, &item, "id", problems);
        if rule_index.insert(r.id.as_str(), i).is_some() {
            problems.add(&item, "id", "another rule has the same id");
        }
    }
    rule_index
}

/// What a rule may refer to, compiled before the rules.
struct Tables<'d, 't> {
    def: &'d RulesFile,
    timezone: &'t TzOffset,
    programs: &'t [Program],
    program_index: &'t HashMap<&'d str, usize>,
    category_index: &'t HashMap<&'d str, usize>,
    partner_index: &'t HashMap<&'d str, usize>,
    tiers: &'t [Tier],
    caps: &'t CapTables<'d>,
    rule_index: HashMap<&'d str, usize>,
}

/// One rule; `None` if its program is unknown (reported).
fn compile_rule(r: &RuleDef, t: &Tables<'_, '_>, problems: &mut Problems) -> Option<Rule> {
    let item = Item::Rule(r.id.clone());
    let Some(&program) = t.program_index.get(r.program.as_str()) else {
        problems.add(&item, "program", format!("unknown program \"{}\"", r.program));
        return None;
    };
    let when =
        compile_conditions(&r.when, t.timezone, &item, t.category_index, t.partner_index, t.tiers, problems);
    let effect = compile_effect(r, t, &item, problems);
    let decimals = t.programs[program].decimals;
    let step = r.rounding.step.map_or_else(|| Decimal::new(1, decimals), |s| s.0);
    positive(step, &item, "rounding.step", problems);
    if step.normalize().scale() > decimals {
        problems.add(
            &item,
            "rounding.step",
            format!("{step} is finer than program \"{}\" keeps ({decimals} decimal places)", r.program),
        );
    }
    if let Some(unit) = r.rounding.per_full {
        positive(unit.0, &item, "rounding.per_full", problems);
    }
    let caps = rule_caps(r, program, t.caps, &item, problems);
    if let Some(g) = &r.group {
        check_name(g, &item, "group", problems);
    }
    Some(Rule {
        id: Arc::from(r.id.as_str()),
        program,
        priority: r.priority,
        group: None,
        when,
        effect,
        rounding: Rounding { mode: r.rounding.mode, step, per_full: r.rounding.per_full.map(|u| u.0) },
        caps,
    })
}

fn compile_effect(r: &RuleDef, t: &Tables<'_, '_>, item: &Item, problems: &mut Problems) -> Effect {
    match &r.effect {
        EffectDef::Percent(p) => {
            if p.0 <= Decimal::ZERO || p.0 > Decimal::ONE_HUNDRED {
                problems.add(item, "effect.percent", format!("must be above 0 and at most 100, got {}", p.0));
            }
            Effect::Percent { percent: p.0, fraction: p.0 / Decimal::ONE_HUNDRED }
        }
        EffectDef::Fixed(v) => {
            positive(v.0, item, "effect.fixed", problems);
            Effect::Fixed(v.0)
        }
        EffectDef::PerUnit { every, award } => {
            positive(every.0, item, "effect.per_unit.every", problems);
            positive(award.0, item, "effect.per_unit.award", problems);
            Effect::PerUnit { every: every.0, award: award.0 }
        }
        EffectDef::Multiply { rule, factor } => {
            if factor.0 <= Decimal::ONE {
                problems.add(
                    item,
                    "effect.multiply.factor",
                    format!("must be greater than 1, got {}", factor.0),
                );
            }
            let target = t.rule_index.get(rule.as_str()).copied();
            let rules = &t.def.rules;
            match target {
                None => problems.add(item, "effect.multiply.rule", format!("unknown rule \"{rule}\"")),
                Some(i) if rules[i].id == r.id => {
                    problems.add(item, "effect.multiply.rule", "a rule cannot multiply itself")
                }
                Some(i) if rules[i].program != r.program => problems.add(
                    item,
                    "effect.multiply.rule",
                    format!(
                        "rule \"{rule}\" pays into program \"{}\", not \"{}\"",
                        rules[i].program, r.program
                    ),
                ),
                Some(_) => {}
            }
            if r.group.is_some() {
                problems.add(item, "group", "a multiply rule cannot be in an exclusive group");
            }
            Effect::Multiply { rule: target.unwrap_or(usize::MAX), factor: factor.0 }
        }
    }
}

/// The caps a rule counts against: those it names, and those limited to
/// its program (a spend cap only where the effect is computed from the
/// amount), in cap order.
fn rule_caps(
    r: &RuleDef,
    program: usize,
    caps: &CapTables<'_>,
    item: &Item,
    problems: &mut Problems,
) -> Vec<usize> {
    let mut rule_caps = Vec::new();
    for name in &r.caps {
        match caps.index.get(name.as_str()) {
            None => problems.add(item, "caps", format!("unknown cap \"{name}\"")),
            Some(&c) => {
                if caps.program[c].is_some_and(|p| p != program) {
                    problems.add(item, "caps", format!("cap \"{name}\" belongs to another program"));
                }
                let spend = caps.caps[c].measure == CapMeasure::Spend;
                if spend && matches!(r.effect, EffectDef::Fixed(_) | EffectDef::Multiply { .. }) {
                    problems.add(
                        item,
                        "caps",
                        format!("spend cap \"{name}\" needs an effect computed from the amount (percent or per_unit)"),
                    );
                }
                rule_caps.push(c);
            }
        }
    }
    for (c, p) in caps.program.iter().enumerate() {
        let spend_mismatch = caps.caps[c].measure == CapMeasure::Spend
            && matches!(r.effect, EffectDef::Fixed(_) | EffectDef::Multiply { .. });
        if *p == Some(program) && !rule_caps.contains(&c) && !spend_mismatch {
            rule_caps.push(c);
        }
    }
    rule_caps.sort_unstable();
    rule_caps
}

/// A reward cap adds up amounts of one unit: its rules share a program,
/// and what is left of it is paid out, so it must be payable.
fn check_caps(caps: &[Cap], rules: &[Rule], programs: &[Program], problems: &mut Problems) {
    for (c, cap) in caps.iter().enumerate() {
        let programs_using: BTreeSet<usize> =
            rules.iter().filter(|r| r.caps.contains(&c)).map(|r| r.program).collect();
        if programs_using.len() > 1 {
            problems.add(
                &Item::Cap(cap.id.to_string()),
                "program",
                "rules of different programs use this cap",
            );
        }
        // What is left of a reward cap is paid out: it must be payable.
        if let (CapMeasure::Reward, Some(&p)) = (cap.measure, programs_using.first()) {
            if cap.limit.normalize().scale() > programs[p].decimals {
                problems.add(
                    &Item::Cap(cap.id.to_string()),
                    "limit",
                    format!(
                        "{} has more decimal places than program \"{}\" keeps",
                        cap.limit, programs[p].name
                    ),
                );
            }
        }
    }
}

/// Puts the rules in evaluation order and gathers the exclusive groups,
/// each with its members highest priority first (once a member pays,
/// lower ones cannot win).
fn exclusive_groups(
    mut rules: Vec<Rule>,
    group_names: &[Option<Arc<str>>],
    problems: &mut Problems,
) -> Option<(Vec<Rule>, Vec<Group>)> {
    let mut group_programs: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (r, g) in rules.iter().zip(group_names) {
        if let Some(g) = g {
            group_programs.entry(g).or_default().insert(r.program);
        }
    }
    for (group, programs_in) in &group_programs {
        if programs_in.len() > 1 {
            let first = rules.iter().zip(group_names).find(|(_, g)| g.as_deref() == Some(*group));
            problems.add(
                &Item::Rule(first.map(|(r, _)| r.id.to_string()).unwrap_or_default()),
                "group",
                format!(
                    "exclusive group \"{group}\" mixes programs; values of different units cannot be compared"
                ),
            );
        }
    }
    let mut groups: Vec<Group> =
        group_programs.keys().map(|name| Group { name: Arc::from(*name), members: Vec::new() }).collect();
    for (rule, name) in rules.iter_mut().zip(group_names) {
        rule.group = name.as_deref().and_then(|n| groups.iter().position(|g| &*g.name == n));
    }

    let rules = evaluation_order(rules, problems)?;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(g) = rule.group {
            groups[g].members.push(i);
        }
    }
    // Highest priority first: once a member pays, lower ones cannot win.
    for group in &mut groups {
        group.members.sort_by_key(|&m| std::cmp::Reverse(rules[m].priority));
    }
    if !problems.0.is_empty() {
        return None;
    }
    Some((rules, groups))
}

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

fn compile_conditions(
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

/// Orders rules so a multiplied rule comes before its multiplier; otherwise
/// by priority (high first), then id. Reports cycles.
fn evaluation_order(rules: Vec<Rule>, problems: &mut Problems) -> Option<Vec<Rule>> {
    let n = rules.len();
    let mut waiting_on = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in rules.iter().enumerate() {
        if let Effect::Multiply { rule, .. } = r.effect {
            waiting_on[i] += 1;
            dependents[rule].push(i);
        }
    }
    let key = |i: usize| (std::cmp::Reverse(rules[i].priority), rules[i].id.clone());
    let mut ready: BTreeSet<(std::cmp::Reverse<i32>, Arc<str>, usize)> =
        (0..n).filter(|&i| waiting_on[i] == 0).map(|i| (key(i).0, key(i).1, i)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(next) = ready.pop_first() {
        let i = next.2;
        order.push(i);
        for &d in &dependents[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.insert((key(d).0, key(d).1, d));
            }
        }
    }
    if order.len() < n {
        for i in (0..n).filter(|i| !order.contains(i)) {
            problems.add(
                &Item::Rule(rules[i].id.to_string()),
                "effect.multiply.rule",
                "multiply references form a cycle",
            );
        }
        return None;
    }
    let mut new_position = vec![0; n];
    for (pos, &old) in order.iter().enumerate() {
        new_position[old] = pos;
    }
    let mut slots: Vec<Option<Rule>> = rules.into_iter().map(Some).collect();
    let mut sorted = Vec::with_capacity(n);
    for &old in &order {
        let mut rule = slots[old].take()?;
        if let Effect::Multiply { rule: target, .. } = &mut rule.effect {
            *target = new_position[*target];
        }
        sorted.push(rule);
    }
    Some(sorted)
}
