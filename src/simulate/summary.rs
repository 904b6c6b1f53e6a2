//! What a simulation's records add up to: payouts per rule, program,
//! category and partner, cap hits, and (for backtests) per account; and
//! the summary `accrual simulate` prints.

use crate::accrue::{AccrualRecord, RecordKind};
use crate::pipeline::BatchStats;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Records and amounts per record kind, for a rule or a program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payout {
    pub unit: String,
    pub by_kind: BTreeMap<RecordKind, (u64, Decimal)>,
}

impl Payout {
    pub(crate) fn add(&mut self, r: &AccrualRecord) {
        if self.unit.is_empty() {
            self.unit = r.unit().to_string();
        }
        let e = self.by_kind.entry(r.kind).or_insert((0, Decimal::ZERO));
        e.0 += 1;
        e.1 += r.amount;
    }

    pub fn amount(&self, kind: RecordKind) -> Decimal {
        self.by_kind.get(&kind).map_or(Decimal::ZERO, |e| e.1)
    }

    pub fn count(&self, kind: RecordKind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |e| e.0)
    }

    /// Earned, less what refunds took back (pending or available).
    pub fn net(&self) -> Decimal {
        self.amount(RecordKind::Earn) - self.amount(RecordKind::Clawback) - self.amount(RecordKind::Cancel)
    }
}

/// How often a cap cut a reward: partly, or to nothing (a `capped` record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapHits {
    pub cut: u64,
    pub to_zero: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    /// The line of the file; for a topic, the message's offset.
    pub line: u64,
    /// For a topic, the message's partition.
    pub partition: Option<u32>,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rules_name: String,
    pub rules_version: String,
    pub stats: BatchStats,
    /// Lines of nothing but spaces: no event, so no input.
    pub blank_lines: u64,
    pub no_effect: BTreeMap<&'static str, u64>,
    pub rejected: BTreeMap<&'static str, u64>,
    /// The first rejected lines, in input order.
    pub rejected_lines: Vec<RejectedLine>,
    /// Earnings and what refunds took back, keyed by (program, rule):
    /// every rule of the rules, those that paid nothing included.
    pub by_rule: BTreeMap<(String, String), Payout>,
    /// Record counts per kind.
    pub by_kind: BTreeMap<RecordKind, u64>,
    pub by_program: BTreeMap<String, Payout>,
    /// Earnings (and `capped` records) by (program, category that paid;
    /// empty when the rule names none).
    pub by_category: BTreeMap<(String, String), Payout>,
    /// Earnings (and `capped` records) by (program, partner of the
    /// purchase; empty for none).
    pub by_partner: BTreeMap<(String, String), Payout>,
    /// Per cap, how often it cut a reward.
    pub cap_hits: BTreeMap<String, CapHits>,
    /// Net payout per (program, account), when asked for (backtests).
    pub by_account: BTreeMap<(String, String), Decimal>,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "rules: {} (version {})", self.rules_name, self.rules_version)?;
        writeln!(
            f,
            "events: {} read, {} accrued, {} without effect, {} duplicates, {} rejected",
            s.inputs, s.accrued, s.no_effect, s.duplicates, s.dead_letters
        )?;
        if self.blank_lines > 0 {
            writeln!(f, "  blank lines skipped (no event): {}", self.blank_lines)?;
        }
        if s.clocks_cut > 0 {
            writeln!(
                f,
                "  clocks that left accounts due (max_accounts_per_clock): {} ({} accounts brought to a clock's \
                 time in all; the rest wait for a later clock or their own next event)",
                s.clocks_cut, s.clock_accounts
            )?;
        }
        if !self.no_effect.is_empty() {
            let parts: Vec<String> = self.no_effect.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(f, "  without effect: {}", parts.join(", "))?;
        }
        let kinds: Vec<String> = self.by_kind.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        writeln!(f, "accrual records: {} ({})", s.records, kinds.join(", "))?;
        writeln!(f)?;
        self.fmt_rules(f)?;
        writeln!(f)?;
        writeln!(f, "payout by program and kind:")?;
        for (program, p) in &self.by_program {
            for (kind, (n, amount)) in &p.by_kind {
                writeln!(
                    f,
                    "  {:<10} {:<16} {:>9} records {:>16} {}",
                    program,
                    kind.name(),
                    n,
                    amount,
                    p.unit
                )?;
            }
        }
        if !self.cap_hits.is_empty() {
            writeln!(f)?;
            writeln!(f, "caps that cut rewards:")?;
            for (cap, hits) in &self.cap_hits {
                writeln!(f, "  {cap:<24} {:>9} cut, {:>9} to nothing", hits.cut, hits.to_zero)?;
            }
        }
        self.fmt_rejected(f)?;
        let secs = self.elapsed.as_secs_f64();
        writeln!(f)?;
        write!(f, "time: {:.2} s, {:.0} events/s", secs, s.inputs as f64 / secs.max(1e-9))
    }
}

impl Summary {
    fn fmt_rules(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "payout by rule:")?;
        writeln!(
            f,
            "  {:<22} {:<10} {:>16} {:>14} {:>16} {:>9} {:>9}",
            "rule", "program", "earned", "taken back", "net", "earns", "takebacks"
        )?;
        for ((program, rule), p) in &self.by_rule {
            let back = p.amount(RecordKind::Clawback) + p.amount(RecordKind::Cancel);
            let backs = p.count(RecordKind::Clawback) + p.count(RecordKind::Cancel);
            writeln!(
                f,
                "  {:<22} {:<10} {:>16} {:>14} {:>16} {:>9} {:>9}",
                rule,
                program,
                p.amount(RecordKind::Earn),
                back,
                p.net(),
                p.count(RecordKind::Earn),
                backs
            )?;
        }
        Ok(())
    }

    fn fmt_rejected(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dead_letters = self.stats.dead_letters;
        if dead_letters == 0 {
            return Ok(());
        }
        writeln!(f)?;
        let parts: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(f, "rejected lines: {} ({})", dead_letters, parts.join(", "))?;
        for r in &self.rejected_lines {
            match r.partition {
                Some(p) => writeln!(f, "  partition {p} offset {}: {}: {}", r.line, r.reason, r.detail)?,
                None => writeln!(f, "  line {}: {}: {}", r.line, r.reason, r.detail)?,
            }
        }
        if dead_letters as usize > self.rejected_lines.len() {
            writeln!(f, "  ... {} more", dead_letters as usize - self.rejected_lines.len())?;
        }
        Ok(())
    }
}
