//! Accrual records: what the core emits for every balance movement, and
//! their JSON form (written by hand so the bytes are fixed by this code,
//! field order and number formatting included).

use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::fmt::Write as _;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// A reward earned by a purchase.
    Earn,
    /// A reward taken back by a refund or reversal.
    Clawback,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Earn => "earn",
            RecordKind::Clawback => "clawback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccrualRecord {
    /// `<source_event_id>:<rule_id>:<kind>`: the same input always yields
    /// the same id, so downstream systems can deduplicate on it.
    pub accrual_id: String,
    pub source_event_id: String,
    pub account_id: String,
    pub program: Arc<str>,
    pub rule_id: Arc<str>,
    pub kind: RecordKind,
    /// Always positive; `kind` gives the direction. Fixed to the program's
    /// decimal places.
    pub amount: Decimal,
    pub unit: Arc<str>,
    pub balance_after: Decimal,
    pub rules_version: Arc<str>,
    pub occurred_at: Timestamp,
    /// The numbers used, for the customer and the auditor.
    pub explanation: String,
}

impl AccrualRecord {
    pub fn id(source_event_id: &str, rule_id: &str, kind: RecordKind) -> String {
        let mut id = String::with_capacity(source_event_id.len() + rule_id.len() + 10);
        id.push_str(source_event_id);
        id.push(':');
        id.push_str(rule_id);
        id.push(':');
        id.push_str(kind.name());
        id
    }

    /// Appends the record as one line of JSON (with the trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(384);
        s.push_str("{\"accrual_id\":");
        json_str(&mut s, &self.accrual_id);
        s.push_str(",\"source_event_id\":");
        json_str(&mut s, &self.source_event_id);
        s.push_str(",\"account_id\":");
        json_str(&mut s, &self.account_id);
        s.push_str(",\"program\":");
        json_str(&mut s, &self.program);
        s.push_str(",\"rule_id\":");
        json_str(&mut s, &self.rule_id);
        s.push_str(",\"kind\":\"");
        s.push_str(self.kind.name());
        let _ = write!(s, "\",\"amount\":\"{}\",\"unit\":", self.amount);
        json_str(&mut s, &self.unit);
        let _ = write!(
            s,
            ",\"balance_after\":\"{}\",\"rules_version\":\"{}\",\"occurred_at\":\"{}\",\"explanation\":",
            self.balance_after, self.rules_version, self.occurred_at
        );
        json_str(&mut s, &self.explanation);
        s.push_str("}\n");
        out.extend_from_slice(s.as_bytes());
    }
}

/// Writes a JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_valid_and_escaped() {
        let r = AccrualRecord {
            accrual_id: AccrualRecord::id("e\"1", "base", RecordKind::Earn),
            source_event_id: "e\"1".into(),
            account_id: "a\\b".into(),
            program: Arc::from("cashback"),
            rule_id: Arc::from("base"),
            kind: RecordKind::Earn,
            amount: Decimal::new(1234, 2),
            unit: Arc::from("RUB"),
            balance_after: Decimal::new(5000, 2),
            rules_version: Arc::from("abc"),
            occurred_at: Timestamp(0),
            explanation: "1% of 1234.00\n".into(),
        };
        let mut out = Vec::new();
        r.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["accrual_id"], "e\"1:base:earn");
        assert_eq!(v["account_id"], "a\\b");
        assert_eq!(v["amount"], "12.34");
        assert_eq!(v["balance_after"], "50.00");
        assert_eq!(v["occurred_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["explanation"], "1% of 1234.00\n");
        assert!(out.ends_with(b"}\n"));
    }
}
