//! A backtest's report: each side's payout and their difference per rule,
//! program, category and partner, the accounts most affected and the caps
//! that cut rewards; as a table, JSON or CSV.

use crate::accrue::RecordKind;
use crate::simulate::{Payout, Summary};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// One side's run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub rules: String,
    pub rules_version: String,
    pub events: u64,
    pub accrued: u64,
    pub without_effect: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub records: u64,
}

/// What a rule (program, category, partner) paid on one side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    #[serde(with = "rust_decimal::serde::str")]
    pub earned: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub taken_back: Decimal,
    /// Earned less taken back.
    #[serde(with = "rust_decimal::serde::str")]
    pub net: Decimal,
    pub earns: u64,
}

impl Amounts {
    fn of(p: Option<&Payout>) -> Amounts {
        let Some(p) = p else { return Amounts::default() };
        Amounts {
            earned: p.amount(RecordKind::Earn),
            taken_back: p.amount(RecordKind::Clawback) + p.amount(RecordKind::Cancel),
            net: p.net(),
            earns: p.count(RecordKind::Earn),
        }
    }
}

/// A line of a comparison: `name` is the rule, program, category, partner
/// or account (empty for purchases without a category or partner).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub program: String,
    pub name: String,
    pub unit: String,
    pub baseline: Amounts,
    pub candidate: Amounts,
    /// Candidate's net less baseline's.
    #[serde(with = "rust_decimal::serde::str")]
    pub difference: Decimal,
}

/// How often a cap cut a reward on each side: partly, or to nothing.
#[derive(Debug, Clone, Serialize)]
pub struct CapRow {
    pub cap: String,
    pub baseline_cut: u64,
    pub baseline_to_zero: u64,
    pub candidate_cut: u64,
    pub candidate_to_zero: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the events were.
    pub source: String,
    pub baseline: Run,
    pub candidate: Run,
    /// Every rule of either side.
    pub by_rule: Vec<Row>,
    pub by_program: Vec<Row>,
    /// Earnings of purchases by the category that paid (before refunds).
    pub by_category: Vec<Row>,
    /// Earnings of purchases by the purchase's partner (before refunds).
    pub by_partner: Vec<Row>,
    /// Per program, the accounts whose net payout changed most.
    pub accounts: Vec<Row>,
    pub caps: Vec<CapRow>,
}

impl Run {
    fn of(s: &Summary) -> Run {
        Run {
            rules: s.rules_name.clone(),
            rules_version: s.rules_version.clone(),
            events: s.stats.inputs,
            accrued: s.stats.accrued,
            without_effect: s.stats.no_effect,
            duplicates: s.stats.duplicates,
            rejected: s.stats.dead_letters,
            records: s.stats.records,
        }
    }
}

/// A row per key of either side, in key order.
fn compare(a: &BTreeMap<(String, String), Payout>, b: &BTreeMap<(String, String), Payout>) -> Vec<Row> {
    let keys: BTreeSet<&(String, String)> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let (pa, pb) = (a.get(key), b.get(key));
            let unit = pa.or(pb).map(|p| p.unit.clone()).unwrap_or_default();
            let (baseline, candidate) = (Amounts::of(pa), Amounts::of(pb));
            let difference = candidate.net - baseline.net;
            Row { program: key.0.clone(), name: key.1.clone(), unit, baseline, candidate, difference }
        })
        .collect()
}

/// Per program, the `top` accounts whose net changed most (then by id).
fn most_affected(a: &Summary, b: &Summary, top: usize) -> Vec<Row> {
    let keys: BTreeSet<&(String, String)> = a.by_account.keys().chain(b.by_account.keys()).collect();
    let mut rows: Vec<Row> = keys
        .into_iter()
        .filter_map(|key| {
            let (na, nb) = (
                a.by_account.get(key).copied().unwrap_or_default(),
                b.by_account.get(key).copied().unwrap_or_default(),
            );
            let unit = a
                .by_program
                .get(&key.0)
                .or(b.by_program.get(&key.0))
                .map(|p| p.unit.clone())
                .unwrap_or_default();
            let amounts = |net| Amounts { net, ..Amounts::default() };
            (na != nb).then(|| Row {
                program: key.0.clone(),
                name: key.1.clone(),
                unit,
                baseline: amounts(na),
                candidate: amounts(nb),
                difference: nb - na,
            })
        })
        .collect();
    rows.sort_by(|x, y| {
        (&x.program, y.difference.abs(), &x.name).cmp(&(&y.program, x.difference.abs(), &y.name))
    });
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    rows.retain(|r| {
        let n = shown.entry(r.program.clone()).or_default();
        *n += 1;
        *n <= top
    });
    rows
}

impl Report {
    pub fn new(source: String, a: &Summary, b: &Summary, top_accounts: usize) -> Report {
        let programs = |s: &Summary| -> BTreeMap<(String, String), Payout> {
            s.by_program.iter().map(|(p, payout)| ((p.clone(), p.clone()), payout.clone())).collect()
        };
        let caps: BTreeSet<&String> = a.cap_hits.keys().chain(b.cap_hits.keys()).collect();
        let caps = caps
            .into_iter()
            .map(|cap| {
                let (ha, hb) = (
                    a.cap_hits.get(cap).copied().unwrap_or_default(),
                    b.cap_hits.get(cap).copied().unwrap_or_default(),
                );
                CapRow {
                    cap: cap.clone(),
                    baseline_cut: ha.cut,
                    baseline_to_zero: ha.to_zero,
                    candidate_cut: hb.cut,
                    candidate_to_zero: hb.to_zero,
                }
            })
            .collect();
        Report {
            source,
            baseline: Run::of(a),
            candidate: Run::of(b),
            by_rule: compare(&a.by_rule, &b.by_rule),
            by_program: compare(&programs(a), &programs(b)),
            by_category: compare(&a.by_category, &b.by_category),
            by_partner: compare(&a.by_partner, &b.by_partner),
            accounts: most_affected(a, b, top_accounts),
            caps,
        }
    }

    pub fn write(&self, format: Format, out: &mut dyn Write) -> io::Result<()> {
        match format {
            Format::Table => write!(out, "{self}"),
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, self)?;
                writeln!(out)
            }
            Format::Csv => self.write_csv(out),
        }
    }

    /// One table: a line per row of every section; for caps, the amounts'
    /// columns hold how often the cap cut a reward (partly or to nothing)
    /// and the counts' columns how often to nothing.
    fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        let header = [
            "section",
            "program",
            "name",
            "unit",
            "baseline",
            "candidate",
            "difference",
            "baseline_earns",
            "candidate_earns",
        ];
        w.write_record(header)?;
        for (section, rows) in self.sections() {
            for r in rows {
                let (b, c) = (&r.baseline, &r.candidate);
                w.write_record([
                    section,
                    &r.program,
                    &r.name,
                    &r.unit,
                    &b.net.to_string(),
                    &c.net.to_string(),
                    &r.difference.to_string(),
                    &b.earns.to_string(),
                    &c.earns.to_string(),
                ])?;
            }
        }
        for c in &self.caps {
            let (hb, hc) = (c.baseline_cut + c.baseline_to_zero, c.candidate_cut + c.candidate_to_zero);
            let difference = hc as i128 - hb as i128;
            w.write_record([
                "cap",
                "",
                &c.cap,
                "times cut",
                &hb.to_string(),
                &hc.to_string(),
                &difference.to_string(),
                &c.baseline_to_zero.to_string(),
                &c.candidate_to_zero.to_string(),
            ])?;
        }
        w.flush()
    }

    fn sections(&self) -> [(&'static str, &[Row]); 5] {
        [
            ("rule", &self.by_rule),
            ("program", &self.by_program),
            ("category", &self.by_category),
            ("partner", &self.by_partner),
            ("account", &self.accounts),
        ]
    }
}

/// A name for the table: `(none)` for purchases without one.
fn shown(name: &str) -> &str {
    if name.is_empty() { "(none)" } else { name }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.baseline, &self.candidate);
        writeln!(f, "backtest over {}", self.source)?;
        writeln!(f, "  baseline:  {} (version {})", a.rules, a.rules_version)?;
        writeln!(f, "  candidate: {} (version {})", b.rules, b.rules_version)?;
        writeln!(
            f,
            "events: {} read; baseline {} accrued, {} without effect, {} rejected; candidate {} accrued, {} without effect, {} rejected",
            a.events, a.accrued, a.without_effect, a.rejected, b.accrued, b.without_effect, b.rejected
        )?;
        let titles = [
            "payout by rule (net: earned less taken back by refunds)",
            "payout by program",
            "earned by the category that paid (before refunds)",
            "earned by partner (before refunds)",
            "accounts most affected (net)",
        ];
        for ((section, rows), title) in self.sections().into_iter().zip(titles) {
            writeln!(f)?;
            writeln!(f, "{title}:")?;
            writeln!(
                f,
                "  {:<24} {:<10} {:>16} {:>16} {:>16} {:>9} {:>9}",
                section, "program", "baseline", "candidate", "difference", "earns", "earns"
            )?;
            for r in rows {
                writeln!(
                    f,
                    "  {:<24} {:<10} {:>16} {:>16} {:>+16} {:>9} {:>9}  {}",
                    shown(&r.name),
                    r.program,
                    r.baseline.net,
                    r.candidate.net,
                    r.difference,
                    r.baseline.earns,
                    r.candidate.earns,
                    r.unit
                )?;
            }
        }
        writeln!(f)?;
        writeln!(f, "caps that cut rewards (partly / to nothing):")?;
        for c in &self.caps {
            writeln!(
                f,
                "  {:<24} baseline {:>7} / {:<7} candidate {:>7} / {:<7}",
                c.cap, c.baseline_cut, c.baseline_to_zero, c.candidate_cut, c.candidate_to_zero
            )?;
        }
        Ok(())
    }
}
