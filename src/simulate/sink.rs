//! Where a simulation's outcomes go: the records' file, the rejected
//! lines' file, and the tallies of its [`Summary`].

use super::summary::{CapHits, Payout, RejectedLine, Summary};
use crate::accrue::{AccrualRecord, NoEffect, RecordKind, caps_that_cut, json_str};
use crate::events::{Event, EventBody};
use crate::pipeline::{Input, Sink};
use crate::rules::Timeline;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;

/// Rejected lines listed in the summary; all of them go to `--dlq`.
const LISTED_REJECTS: usize = 20;

/// Where the inputs of the batch being fed come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place {
    /// A file: line numbers count from this offset (line 1).
    File { first_offset: u64 },
    /// A topic's partition: offsets are the messages' own.
    Topic { partition: u32 },
}

pub(crate) struct SimSink {
    pub summary: Summary,
    pub timeline: Arc<Timeline>,
    pub out: Option<Box<dyn Write>>,
    pub dlq: Option<BufWriter<File>>,
    pub place: Place,
    pub buf: Vec<u8>,
    pub error: Option<io::Error>,
    /// Whether to sum the payout per account (backtests).
    pub per_account: bool,
    /// The summary's tallies while the run lasts, by program then rule
    /// (category, partner, account): found by the records' names, a key
    /// built only for a new one.
    by_rule: Nested<Payout>,
    by_program: BTreeMap<String, Payout>,
    by_category: Nested<Payout>,
    by_partner: Nested<Payout>,
    by_account: Nested<rust_decimal::Decimal>,
}

/// Values by two names, the first then the second.
type Nested<V> = BTreeMap<String, BTreeMap<String, V>>;

/// Runs `f` on the value under `key`, made empty when new: the key's
/// string is built only for a new value, not for every record.
fn with_entry<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => f(value),
        None => f(map.entry(key.to_string()).or_default()),
    }
}

/// As [`with_entry`], for a key of two names.
fn with_pair<V: Default>(map: &mut Nested<V>, a: &str, b: &str, f: impl FnOnce(&mut V)) {
    with_entry(map, a, |inner| with_entry(inner, b, f))
}

/// The values of `map` under (first name, second name).
fn flatten<V>(map: Nested<V>) -> BTreeMap<(String, String), V> {
    let pairs =
        map.into_iter().flat_map(|(a, inner)| inner.into_iter().map(move |(b, v)| ((a.clone(), b), v)));
    pairs.collect()
}

impl SimSink {
    pub fn new(
        timeline: Arc<Timeline>,
        out: Option<Box<dyn Write>>,
        dlq: Option<BufWriter<File>>,
    ) -> SimSink {
        let summary = Summary {
            rules_name: timeline.first().name.clone(),
            rules_version: timeline.label(),
            ..Summary::default()
        };
        SimSink {
            summary,
            timeline,
            out,
            dlq,
            place: Place::File { first_offset: 0 },
            buf: Vec::new(),
            error: None,
            per_account: false,
            by_rule: BTreeMap::new(),
            by_program: BTreeMap::new(),
            by_category: BTreeMap::new(),
            by_partner: BTreeMap::new(),
            by_account: BTreeMap::new(),
        }
    }

    /// Moves the payouts into the summary, with a row for every rule of the
    /// rules (those that paid nothing included).
    pub fn finish(&mut self) {
        let s = &mut self.summary;
        s.by_rule = flatten(std::mem::take(&mut self.by_rule));
        s.by_category = flatten(std::mem::take(&mut self.by_category));
        s.by_partner = flatten(std::mem::take(&mut self.by_partner));
        s.by_account = flatten(std::mem::take(&mut self.by_account));
        for rules in self.timeline.versions().iter().map(|v| &v.rules) {
            for rule in &rules.rules {
                let program = &rules.programs[rule.program];
                let key = (program.name.to_string(), rule.id.to_string());
                let row = s.by_rule.entry(key).or_default();
                if row.unit.is_empty() {
                    row.unit = program.unit.to_string();
                }
            }
        }
        s.by_program.append(&mut self.by_program);
    }

    fn write(&mut self, to_dlq: bool) {
        let target: Option<&mut dyn Write> = if to_dlq {
            self.dlq.as_mut().map(|w| w as &mut dyn Write)
        } else {
            self.out.as_mut().map(|w| w.as_mut() as &mut dyn Write)
        };
        if let Some(w) = target {
            if let Err(e) = w.write_all(&self.buf) {
                self.error.get_or_insert(e);
            }
        }
        self.buf.clear();
    }

    /// A purchase's reward, or a rule capped to nothing on it: by the
    /// category that paid, the purchase's partner, and the caps that cut it.
    /// `partner`: the purchase's, as (version, partner) indices.
    fn tally_purchase(&mut self, r: &AccrualRecord, partner: Option<(usize, usize)>) {
        let partner = partner.map_or("", |(v, i)| &*self.timeline.versions()[v].rules.partners[i].name);
        with_pair(&mut self.by_category, r.program(), r.category(), |p| p.add(r));
        with_pair(&mut self.by_partner, r.program(), partner, |p| p.add(r));
        for cap in caps_that_cut(r.explanation()) {
            with_entry(&mut self.summary.cap_hits, cap, |hits: &mut CapHits| match r.kind {
                RecordKind::Capped => hits.to_zero += 1,
                _ => hits.cut += 1,
            });
        }
    }
}

impl Sink for SimSink {
    fn accrued(&mut self, _offset: u64, event: &Event<'_>, records: &[AccrualRecord]) {
        let version = self.timeline.index_at(event.occurred_at);
        let partner = match &event.body {
            EventBody::Purchase(p) => {
                let rules = &self.timeline.versions()[version].rules;
                rules.partner_of(p.partner_id, p.merchant_id).map(|i| (version, i))
            }
            _ => None,
        };
        for r in records {
            // Per rule: what rules earned and what refunds took back.
            if matches!(r.kind, RecordKind::Earn | RecordKind::Clawback | RecordKind::Cancel) {
                with_pair(&mut self.by_rule, r.program(), r.rule_id(), |p| p.add(r));
                if self.per_account {
                    let signed = if r.kind == RecordKind::Earn { r.amount } else { -r.amount };
                    with_pair(&mut self.by_account, r.program(), r.account_id(), |net| *net += signed);
                }
            }
            if r.mcc.is_some() {
                self.tally_purchase(r, partner);
            }
            *self.summary.by_kind.entry(r.kind).or_default() += 1;
            if !r.program().is_empty() {
                with_entry(&mut self.by_program, r.program(), |p| p.add(r));
            }
            if self.out.is_some() {
                r.write_json(&mut self.buf);
            }
        }
        self.write(false);
    }

    fn no_effect(&mut self, _offset: u64, _event: &Event<'_>, why: NoEffect) {
        *self.summary.no_effect.entry(why.reason()).or_default() += 1;
    }

    fn duplicate(&mut self, _offset: u64, _event: &Event<'_>, _first_seen: Timestamp) {}

    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        let (line, partition) = match self.place {
            Place::File { first_offset } => (input.offset - first_offset + 1, None),
            Place::Topic { partition } => (input.offset, Some(partition)),
        };
        *self.summary.rejected.entry(reason).or_default() += 1;
        if self.summary.rejected_lines.len() < LISTED_REJECTS {
            let detail = detail.to_string();
            self.summary.rejected_lines.push(RejectedLine { line, partition, reason, detail });
        }
        if self.dlq.is_some() {
            let mut s = match partition {
                Some(p) => {
                    format!("{{\"partition\":{p},\"offset\":{line},\"reason\":\"{reason}\",\"detail\":")
                }
                None => format!("{{\"line\":{line},\"reason\":\"{reason}\",\"detail\":"),
            };
            json_str(&mut s, detail);
            s.push_str(",\"raw\":");
            json_str(&mut s, &String::from_utf8_lossy(input.payload));
            s.push_str("}\n");
            self.buf.extend_from_slice(s.as_bytes());
            self.write(true);
        }
    }
}
