//! The rules language: a bank's loyalty program as a TOML file, validated
//! at load and compiled into the form the core evaluates. The language is
//! documented in `docs/rules.md`.

mod compile;
mod describe;
pub mod file;
mod mcc;

pub use compile::{load, parse};
pub use file::{CapMeasure, CapPeriod, ProgramKind};
pub use mcc::{DatedMccSet, MccSet};

use crate::events::Mcc;
use crate::money::RoundingMode;
use crate::time::{Timestamp, TzOffset};
use rust_decimal::Decimal;
use std::collections::HashMap;
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
    pub programs: Vec<Program>,
    pub categories: Vec<Category>,
    pub exclusions: Vec<Category>,
    pub partners: Vec<Partner>,
    pub tiers: Vec<String>,
    pub caps: Vec<Cap>,
    /// In evaluation order: a multiplied rule before its multiplier, then
    /// priority (high first), then id.
    pub rules: Vec<Rule>,
    /// Exclusive groups, members in evaluation order.
    pub groups: Vec<Group>,
    partner_ids: HashMap<String, usize>,
    partner_merchants: HashMap<String, usize>,
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
        self.exclusions.iter().find(|list| list.mcc.contains(mcc, at))
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| &*p.name == name)
    }

    pub fn cap(&self, id: &str) -> Option<&Cap> {
        self.caps.iter().find(|c| &*c.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct Program {
    pub name: Arc<str>,
    pub kind: ProgramKind,
    pub unit: Arc<str>,
    pub decimals: u32,
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
    pub members: Vec<usize>,
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
        write!(f, "{}: field `{}`: {}", self.item, self.field, self.message)
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
}

fn list_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
    lines.join("\n")
}

impl RulesError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}
