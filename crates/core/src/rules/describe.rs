//! A readable summary of compiled rules, printed by `accrual check-config`.

use super::{CapMeasure, CapPeriod, Effect, Rules};
use crate::time::Timestamp;
use std::fmt::Write as _;

impl Rules {
    /// Lines describing the program, in evaluation order.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        self.describe_settings(&mut s);
        self.describe_sections(&mut s);
        self.describe_programs(&mut s);
        self.describe_caps(&mut s);
        self.describe_rules(&mut s);
        s
    }

    fn describe_settings(&self, s: &mut String) {
        let _ = writeln!(s, "  program \"{}\", rules version {}", self.name, self.version);
        if let Some(from) = self.effective_from {
            let _ = writeln!(s, "  in force from {} ({from})", super::local_text(from, &self.timezone));
        }
        let _ = writeln!(
            s,
            "  currency {}, time zone {}, refund window {} days, dedupe window {} days",
            self.currency,
            match &self.timezone {
                crate::time::TzOffset::Iana { .. } => {
                    format!("{} (IANA time zone database {})", self.timezone, crate::time::tzdb_version())
                }
                fixed => fixed.to_string(),
            },
            self.refund_window_ms / crate::time::MS_PER_DAY,
            self.dedupe_window_ms / crate::time::MS_PER_DAY
        );
        let _ = writeln!(
            s,
            "  event times accepted from {} days before to {} minutes after the message's timestamp",
            self.max_event_delay_ms / crate::time::MS_PER_DAY,
            self.max_event_ahead_ms / 60_000
        );
        let _ = writeln!(
            s,
            "  a clock brings at most {} accounts of a partition to its time",
            self.max_accounts_per_clock
        );
    }

    /// The programs, categories, exclusions, partners and tiers by name.
    fn describe_sections(&self, s: &mut String) {
        let programs: Vec<String> = self
            .programs
            .iter()
            .map(|p| format!("{} ({:?}, {}, {} decimals)", p.name, p.kind, p.unit, p.decimals).to_lowercase())
            .collect();
        let _ = writeln!(s, "  programs: {}", programs.join(", "));
        let now = Timestamp(i64::MAX);
        for (title, lists) in [("categories", &self.categories), ("exclusions", &self.exclusions)] {
            let items: Vec<String> = lists
                .iter()
                .map(|c| match c.mcc.version_count() {
                    1 => format!("{} ({} MCCs)", c.name, c.mcc.len_at(now)),
                    n => format!("{} ({n} versions, latest {} MCCs)", c.name, c.mcc.len_at(now)),
                })
                .collect();
            let _ =
                writeln!(s, "  {title}: {}", if items.is_empty() { "none".into() } else { items.join(", ") });
        }
        let partners: Vec<&str> = self.partners.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(
            s,
            "  partners: {}",
            if partners.is_empty() { "none".into() } else { partners.join(", ") }
        );
        if !self.tiers.is_empty() {
            let tiers: Vec<String> =
                self.tiers.iter().map(|t| format!("{} (from {})", t.name, t.threshold)).collect();
            let q = self.tier_qualification.as_ref().map_or(String::new(), |q| {
                format!(", qualifying by {:?} per {:?}", q.measure, q.period).to_lowercase()
            });
            let _ = writeln!(s, "  tiers: {}{q}", tiers.join(", "));
        }
    }

    /// Each program's holds, expiry and redemption; bonuses; the category
    /// choice.
    fn describe_programs(&self, s: &mut String) {
        for p in &self.programs {
            let mut parts = Vec::new();
            if let Some(h) = &p.hold {
                let until = match (h.days, h.until_statement) {
                    (Some(d), _) => format!("{d} days"),
                    (None, _) => "the next statement date".to_string(),
                };
                let clearing = if h.require_clearing { ", and clearing" } else { "" };
                parts.push(format!("pending until {until}{clearing}"));
            }
            if let Some(e) = &p.expiry {
                let warn = e.warn_days.map_or(String::new(), |d| format!(", warned {d} days before"));
                parts.push(format!("expires {}{warn}", e.policy));
            }
            if let Some(r) = &p.redemption {
                parts.push(format!("redeemable at {} {} per {}", r.rate, self.currency, p.unit));
            }
            if !parts.is_empty() {
                let _ = writeln!(s, "  {}: {}", p.name, parts.join("; "));
            }
        }
        for b in &self.bonuses {
            let _ = writeln!(
                s,
                "  bonus {}: {} {} on {:?}",
                b.name, b.amount, self.programs[b.program].unit, b.trigger
            );
        }
        if let Some(c) = &self.category_choice {
            let offered: Vec<&str> = c.offered.iter().map(|&i| self.categories[i].name.as_str()).collect();
            let _ = writeln!(
                s,
                "  category choice: {} of {}, until day {}",
                c.choose,
                offered.join(", "),
                c.deadline_day
            );
        }
    }

    fn describe_caps(&self, s: &mut String) {
        for cap in &self.caps {
            let period = match cap.period {
                CapPeriod::Transaction => "per purchase",
                CapPeriod::Month => "per calendar month",
                CapPeriod::Quarter => "per calendar quarter",
                CapPeriod::Statement => "per statement cycle",
            };
            let measure = match cap.measure {
                CapMeasure::Reward => "reward",
                CapMeasure::Spend => "spend",
            };
            let _ = writeln!(s, "  cap {}: {} {measure} {period}", cap.id, cap.limit);
        }
    }

    fn describe_rules(&self, s: &mut String) {
        let _ = writeln!(s, "  rules, in evaluation order:");
        for rule in &self.rules {
            let effect = match &rule.effect {
                Effect::Percent { percent, .. } => format!("{percent}%"),
                Effect::Fixed(v) => format!("fixed {v}"),
                Effect::PerUnit { every, award } => format!("{award} per full {every}"),
                Effect::Multiply { rule: target, factor } => format!("{factor}x {}", self.rules[*target].id),
            };
            let _ = write!(
                s,
                "    {:<20} {:<10} priority {:>3}  {effect}",
                rule.id, self.programs[rule.program].name, rule.priority
            );
            if let Some(g) = rule.group {
                let _ = write!(s, ", exclusive group {}", self.groups[g].name);
            }
            if !rule.caps.is_empty() {
                let caps: Vec<&str> = rule.caps.iter().map(|&c| &*self.caps[c].id).collect();
                let _ = write!(s, ", caps {}", caps.join(" "));
            }
            s.push('\n');
        }
    }
}
