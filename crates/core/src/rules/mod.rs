//! The rules language: a bank's loyalty program as a TOML file, validated
//! at load and compiled into the form the core evaluates. The language is
//! documented in `docs/rules.md`.

mod compile;
mod describe;
pub mod file;
mod mcc;
mod timeline;

pub use compile::{load, parse};
pub use file::{BonusTrigger, CalendarPeriod, CapMeasure, CapPeriod, ProgramKind, TakesEffect, TierMeasure};
pub use mcc::{Candidates, DatedMccSet, MccSet};
pub use timeline::{Recorded, Timeline, Version, local_text};

use crate::events::Mcc;
use crate::money::RoundingMode;
use crate::time::{Timestamp, TzOffset};
use rust_decimal::Decimal;
use std::fmt;
use std::sync::Arc;

/// Compiled rules: validated, references resolved to indices, rules in
/// evaluation order.
#[derive(Debug)]
pub struct Rules {
    /// Hash of the canonical rules file: every accrual names it.
    pub version: Arc<str>,
    pub name: String,
    pub currency: String,
    pub timezone: TzOffset,
    pub refund_window_ms: i64,
    pub dedupe_window_ms: i64,
    /// Bounds of an event's time around its message's broker timestamp
    /// (`pipeline::Admission`).
    pub max_event_ahead_ms: i64,
    pub max_event_delay_ms: i64,
    /// The most accounts one clock event fires in a partition.
    pub max_accounts_per_clock: usize,
    pub programs: Vec<Program>,
    pub categories: Vec<Category>,
    pub exclusions: Vec<Category>,
    pub partners: Vec<Partner>,
    /// Sorted by rank, lowest first.
    pub tiers: Vec<Tier>,
    pub tier_qualification: Option<TierQualification>,
    pub bonuses: Vec<Bonus>,
    pub category_choice: Option<ChoiceConfig>,
    /// Statement day of accounts that set none.
    pub statement_day: u32,
    /// When this version takes effect in a timeline of versions
    /// ([`Timeline`]); `None` for the first (or only) one.
    pub effective_from: Option<Timestamp>,
    pub caps: Vec<Cap>,
    /// In evaluation order: a multiplied rule before its multiplier, then
    /// priority (high first), then id.
    pub rules: Vec<Rule>,
    /// Exclusive groups.
    pub groups: Vec<Group>,
    // Looked up once per purchase: foldhash, not SipHash, which was a
    // visible share of an event; lookups only, so hash order never shows.
    partner_ids: foldhash::HashMap<String, usize>,
    partner_merchants: foldhash::HashMap<String, usize>,
    /// Whether any program's rewards expire, and whether any expire after
    /// inactivity: most programs' don't, and then the core skips looking
    /// balances' programs up by name on every event.
    any_expiry: bool,
    any_inactivity_expiry: bool,
    mcc_index: mcc::MccIndex,
}

impl Rules {
    /// The partner an event belongs to: by `partner_id`, else by merchant.
    pub fn partner_of(&self, partner_id: Option<&str>, merchant_id: &str) -> Option<usize> {
        partner_id
            .and_then(|id| self.partner_ids.get(id))
            .or_else(|| self.partner_merchants.get(merchant_id))
            .copied()
    }

    /// The first exclusion list (by name) holding `mcc` at `at`.
    pub fn exclusion_of(&self, mcc: Mcc, at: Timestamp) -> Option<&Category> {
        if !self.mcc_index.excludable(mcc) {
            return None;
        }
        self.exclusions.iter().find(|list| list.mcc.contains(mcc, at))
    }

    /// The rules whose MCC conditions may hold for a purchase with `mcc`:
    /// the others need not be evaluated.
    pub fn candidates(&self, mcc: Mcc) -> Candidates {
        self.mcc_index.candidates(mcc)
    }

    /// Whether any program's rewards expire.
    pub fn any_expiry(&self) -> bool {
        self.any_expiry
    }

    /// Whether any program's rewards expire after inactivity.
    pub fn any_inactivity_expiry(&self) -> bool {
        self.any_inactivity_expiry
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| &*p.name == name)
    }

    pub fn cap(&self, id: &str) -> Option<&Cap> {
        self.caps.iter().find(|c| &*c.id == id)
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    pub fn program_index(&self, name: &str) -> Option<usize> {
        self.programs.iter().position(|p| &*p.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Program {
    pub name: Arc<str>,
    pub kind: ProgramKind,
    pub unit: Arc<str>,
    pub decimals: u32,
    pub hold: Option<Hold>,
    pub expiry: Option<Expiry>,
    pub redemption: Option<Redemption>,
}

impl Program {
    /// The smallest amount the program keeps (0.01, 1...).
    pub fn step(&self) -> Decimal {
        Decimal::new(1, self.decimals)
    }
}

/// Rewards wait before they can be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Released this many days after the purchase...
    pub days: Option<u32>,
    /// ...or at the account's next statement date.
    pub until_statement: bool,
    /// An authorised purchase's reward also waits for its clearing.
    pub require_clearing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryPolicy {
    AfterDays(u32),
    AfterMonths(u32),
    /// At the end of the calendar year it was earned in.
    EndOfYear,
    /// All of it, after this many months without a purchase.
    Inactive {
        months: u32,
    },
}

impl fmt::Display for ExpiryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpiryPolicy::AfterDays(n) => write!(f, "{n} days after earning"),
            ExpiryPolicy::AfterMonths(n) => write!(f, "{n} months after earning"),
            ExpiryPolicy::EndOfYear => f.write_str("at the end of the year earned"),
            ExpiryPolicy::Inactive { months } => write!(f, "after {months} months without a purchase"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub policy: ExpiryPolicy,
    /// Warn this many days before a lot expires.
    pub warn_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Redemption {
    /// Value of one unit in the program's currency.
    pub rate: Decimal,
    /// Per tier name.
    pub tier_rates: Vec<(String, Decimal)>,
    pub min: Option<Decimal>,
    pub charities: Vec<String>,
}

impl Redemption {
    pub fn rate_for(&self, tier: Option<&str>) -> Decimal {
        tier.and_then(|t| self.tier_rates.iter().find(|(n, _)| n == t)).map_or(self.rate, |(_, r)| *r)
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub rank: u32,
    pub threshold: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierPeriod {
    Month,
    Quarter,
    Year,
    Rolling { days: u32 },
}

#[derive(Debug, Clone)]
pub struct TierQualification {
    pub measure: TierMeasure,
    /// For `earned`: the program whose earnings count.
    pub program: Option<usize>,
    pub period: TierPeriod,
    pub takes_effect: TakesEffect,
}

#[derive(Debug, Clone)]
pub struct Bonus {
    pub name: Arc<str>,
    pub trigger: BonusTrigger,
    pub program: usize,
    pub amount: Decimal,
    pub min_purchase: Option<Decimal>,
    pub max_per_referrer: Option<u32>,
    pub per: Option<CalendarPeriod>,
}

#[derive(Debug, Clone)]
pub struct ChoiceConfig {
    /// Category indices customers may choose from.
    pub offered: Vec<usize>,
    pub choose: u32,
    pub deadline_day: u32,
}

/// A named MCC list (a spending category or an exclusion list).
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub mcc: DatedMccSet,
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Cap {
    pub id: Arc<str>,
    pub limit: Decimal,
    pub period: CapPeriod,
    pub measure: CapMeasure,
    /// What the bank calls it, for explanations.
    pub description: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Arc<str>,
    pub program: usize,
    pub priority: i32,
    /// Index into [`Rules::groups`].
    pub group: Option<usize>,
    pub when: Conditions,
    pub effect: Effect,
    pub rounding: Rounding,
    /// Caps this rule counts against: those it names plus its program's.
    pub caps: Vec<usize>,
}

/// An exclusive group: of its members that would pay, only the one with
/// the highest priority, then the highest reward, then the smallest id does.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: Arc<str>,
    /// Rule indices, highest priority first (stable: evaluation order
    /// among equal priorities).
    pub members: Vec<usize>,
}

impl Conditions {
    /// The codes for which the MCC conditions (categories, codes, a chosen
    /// category) can hold at some time, given what each of the program's
    /// categories holds in any version (`ever`); `None` when there are no
    /// such conditions.
    fn mcc_allowed(&self, ever: &[MccSet]) -> Option<MccSet> {
        let limits = [
            (!self.categories.is_empty())
                .then(|| MccSet::union_of(self.categories.iter().map(|&c| &ever[c]))),
            self.mcc.clone(),
            self.chosen.then(|| MccSet::union_of(ever)),
        ];
        limits.into_iter().flatten().reduce(|mut allowed, limit| {
            allowed.intersect_with(&limit);
            allowed
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Category indices; any matches.
    pub categories: Vec<usize>,
    pub mcc: Option<MccSet>,
    pub partners: Vec<usize>,
    pub merchants: Vec<String>,
    pub channels: Vec<String>,
    pub tiers: Vec<String>,
    /// Bit `n` set: weekday `n` (Monday = 0) matches; 0 means any day.
    pub weekdays: u8,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// The category must be one the account chose for the month.
    pub chosen: bool,
    /// What must not hold (`when.not`).
    pub not: Negated,
}

/// `when.not`: a purchase matching any of these does not qualify.
#[derive(Debug, Clone, Default)]
pub struct Negated {
    /// Category indices.
    pub categories: Vec<usize>,
    pub mcc: Option<MccSet>,
    pub partners: Vec<usize>,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Effect {
    /// Fraction of the amount (5% is stored as 0.05).
    Percent {
        percent: Decimal,
        fraction: Decimal,
    },
    Fixed(Decimal),
    PerUnit {
        every: Decimal,
        award: Decimal,
    },
    /// Pays `(factor - 1)` times the reward of the rule at `rule`.
    Multiply {
        rule: usize,
        factor: Decimal,
    },
}

#[derive(Debug, Clone)]
pub struct Rounding {
    pub mode: RoundingMode,
    pub step: Decimal,
    pub per_full: Option<Decimal>,
}

/// Which part of a rules file a problem is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    File,
    Settings,
    Program(String),
    Category(String),
    Exclusion(String),
    Partner(String),
    Tier(String),
    Cap(String),
    Rule(String),
    Bonus(String),
    /// A section without named entries (`[tier_qualification]`...).
    Section(&'static str),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::File => f.write_str("top level"),
            Item::Settings => f.write_str("[settings]"),
            Item::Program(n) => write!(f, "program \"{n}\""),
            Item::Category(n) => write!(f, "category \"{n}\""),
            Item::Exclusion(n) => write!(f, "exclusion list \"{n}\""),
            Item::Partner(n) => write!(f, "partner \"{n}\""),
            Item::Tier(n) => write!(f, "tier \"{n}\""),
            Item::Cap(n) => write!(f, "cap \"{n}\""),
            Item::Rule(id) => write!(f, "rule \"{id}\""),
            Item::Bonus(n) => write!(f, "bonus \"{n}\""),
            Item::Section(n) => write!(f, "[{n}]"),
        }
    }
}

/// One thing wrong in a rules file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub item: Item,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_str() {
            "" => write!(f, "{}: {}", self.item, self.message),
            field => write!(f, "{}: field `{field}`: {}", self.item, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: TOML syntax error: {message}")]
    Syntax { file: String, message: String },
    #[error("{}", list_problems(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
    /// The problems of several files of a directory of versions.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<RulesError>),
}

fn list_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
    lines.join("\n")
}

impl RulesError {
    pub fn problems(&self) -> Vec<&Problem> {
        match self {
            RulesError::Invalid { problems, .. } => problems.iter().collect(),
            RulesError::Several(errors) => errors.iter().flat_map(RulesError::problems).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Categories that change over time, and a rule whose categories and
    /// codes both limit it (the shipped programs have none).
    const BOTH_LIMITS: &str = r#"
[settings]
name = "both"
currency = "RUB"
timezone = "+03:00"

[programs.points]
kind = "points"
unit = "PTS"

[categories.food]
[[categories.food.versions]]
from = 2026-01-01
mcc = ["5411", "5812-5814"]
[[categories.food.versions]]
from = 2026-06-01
mcc = ["5411", "5499"]

[exclusions.cash]
[[exclusions.cash.versions]]
from = 2026-03-01
mcc = ["6011"]

[[rules]]
id = "food-in-shops"
program = "points"
when = { categories = ["food"], mcc = ["5411", "5499", "5812", "7011"] }
effect = { fixed = "1" }

[[rules]]
id = "any"
program = "points"
effect = { fixed = "1" }
"#;

    /// The MCC index against the lists themselves, asked at every instant
    /// a list changes (and before any), for the shipped programs and one
    /// with categories and codes together: a rule is a candidate for a
    /// code exactly when its MCC conditions hold for it at one of those
    /// instants, and a code is excluded exactly as the lists say at each.
    #[test]
    fn the_mcc_index_keeps_exactly_the_rules_some_version_allows() {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from)
            .join("../../config");
        let programs = [
            load(&dir.join("rules.example.toml")).unwrap(),
            load(&dir.join("rules.lifecycle.toml")).unwrap(),
            parse(BOTH_LIMITS, "both.toml").unwrap(),
        ];
        assert!(programs[1].rules.iter().any(|r| r.when.chosen), "a rule on chosen categories");
        for rules in &programs {
            let lists = rules.categories.iter().chain(&rules.exclusions);
            let mut instants: Vec<Timestamp> = lists.flat_map(|c| c.mcc.starts()).collect();
            instants.push(Timestamp(i64::MIN));
            assert!(instants.len() > 2, "{}: lists that change over time", rules.name);
            let holds_at = |when: &Conditions, mcc: Mcc, at: Timestamp| {
                let in_list = |c: &Category| c.mcc.contains(mcc, at);
                (when.categories.is_empty() || when.categories.iter().any(|&c| in_list(&rules.categories[c])))
                    && when.mcc.as_ref().is_none_or(|set| set.contains(mcc))
                    && (!when.chosen || rules.categories.iter().any(in_list))
            };
            let (mut kept, mut left_out) = (0, 0);
            for code in (0..10_000).map(Mcc) {
                let candidates = rules.candidates(code);
                for (i, rule) in rules.rules.iter().enumerate() {
                    let expected = instants.iter().any(|&at| holds_at(&rule.when, code, at));
                    assert_eq!(
                        candidates.has(i),
                        expected,
                        "{}: rule {} for MCC {:04}",
                        rules.name,
                        rule.id,
                        code.0
                    );
                    if expected { kept += 1 } else { left_out += 1 }
                }
                for &at in &instants {
                    let direct = rules.exclusions.iter().find(|list| list.mcc.contains(code, at));
                    assert_eq!(
                        rules.exclusion_of(code, at).map(|c| &c.name),
                        direct.map(|c| &c.name),
                        "{}: exclusion of MCC {:04}",
                        rules.name,
                        code.0
                    );
                }
            }
            assert!(kept > 0 && left_out > 0, "{}: {kept} kept, {left_out} left out", rules.name);
        }
        // The rule limited by both: a code must be in both lists, in some version.
        let both = &programs[2];
        let food_in_shops = both.rules.iter().position(|r| &*r.id == "food-in-shops").unwrap();
        let allowed: Vec<u16> =
            (0..10_000).filter(|&code| both.candidates(Mcc(code)).has(food_in_shops)).collect();
        assert_eq!(allowed, [5411, 5499, 5812]);
    }
}
