//! Helpers shared by the integration tests: build events, run the core.
#![allow(dead_code, reason = "each test binary uses a part of the shared helpers")]

use accrual::accrue::{AccrualRecord, Core, DerivedEvent, Effects, Outcome};
use accrual::events::Decoder;
use accrual::rules::{self, Rules};
use accrual::state::AccountState;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Generated events as lines. Malformed lines may hold invalid UTF-8: only
/// valid text is kept, which is what a JSON producer sends anyway.
pub fn generated_lines(opts: &accrual::datagen::GenOptions) -> Vec<String> {
    let mut out = Vec::new();
    accrual::datagen::generate(opts, &mut out).expect("generate in memory");
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| String::from_utf8(l.to_vec()).ok())
        .collect()
}

/// Settings and the two programs most test rule sets build on.
pub const TEST_PROGRAMS: &str = r#"
[settings]
name = "test"
currency = "RUB"
timezone = "+03:00"

[programs.cashback]
kind = "cashback"
unit = "RUB"

[programs.points]
kind = "points"
unit = "PTS"
"#;

/// Rules from `TEST_PROGRAMS` plus `rest`.
pub fn test_rules(rest: &str) -> Arc<Rules> {
    rules_from(&format!("{TEST_PROGRAMS}\n{rest}"))
}

/// The instant test streams are received by (`simulate`'s `now`, the
/// stamp of produced messages): after every generated event, so no test
/// depends on the day the suite runs.
pub fn test_now() -> accrual::time::Timestamp {
    accrual::time::Timestamp::parse_rfc3339("2030-01-01T00:00:00Z").expect("a valid time")
}

/// Where generated streams sent through the broker start: they must end
/// before today, since a broker refuses messages stamped far ahead of its
/// clock and the engine events dated far ahead of their stamp.
pub fn past_start() -> accrual::time::Timestamp {
    accrual::time::Timestamp::parse_rfc3339("2026-09-01T00:00:00+03:00").expect("a valid time")
}

/// For hostile corpora: just after the generated events (November 2026),
/// so that anything dated past it is refused as future-dated on any day.
pub fn hostile_now() -> accrual::time::Timestamp {
    accrual::time::Timestamp::parse_rfc3339("2026-12-05T00:00:00Z").expect("a valid time")
}

/// A path of the repository. The crate's directory is read when the test
/// runs (cargo and nextest set it): a test binary reused from another
/// checkout of the same tree would carry that checkout's path.
pub fn repo_path(rel: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join(rel)
}

pub fn example_rules() -> Arc<Rules> {
    Arc::new(rules::load(&repo_path("config/rules.example.toml")).expect("shipped example loads"))
}

pub fn rules_from(text: &str) -> Arc<Rules> {
    match rules::parse(text, "test.toml") {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("test rules do not load:\n{e}"),
    }
}

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A purchase event as JSON; `extra` is appended inside the object.
pub fn purchase(id: &str, account: &str, amount: &str, mcc: &str, at: &str, extra: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"purchase","account_id":"{account}","amount":"{amount}","currency":"RUB","mcc":"{mcc}","merchant_id":"M-1"{extra},"occurred_at":"{at}"}}"#
    )
}

pub fn refund(id: &str, account: &str, original: &str, amount: &str, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"refund","account_id":"{account}","original_event_id":"{original}","amount":"{amount}","currency":"RUB","occurred_at":"{at}"}}"#
    )
}

pub fn reversal(id: &str, account: &str, original: &str, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"reversal","account_id":"{account}","original_event_id":"{original}","occurred_at":"{at}"}}"#
    )
}

/// Drives the core directly over events, keeping account states in memory.
pub struct Harness {
    pub core: Core,
    pub decoder: Decoder,
    pub accounts: BTreeMap<String, AccountState>,
}

impl Harness {
    pub fn new(rules: Arc<Rules>) -> Harness {
        Harness { core: Core::new(rules), decoder: Decoder::new(), accounts: BTreeMap::new() }
    }

    /// Applies one event; returns the outcome and the records it produced.
    pub fn apply(&mut self, line: &str) -> (Outcome, Vec<AccrualRecord>) {
        let (outcome, effects) = self.apply_effects(line);
        (outcome, effects.records)
    }

    /// Applies one event; returns the outcome, records and derived events.
    pub fn apply_effects(&mut self, line: &str) -> (Outcome, Effects) {
        let event = self.decoder.decode(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
        let state = self.accounts.entry(event.account_id.to_string()).or_default();
        let mut out = Effects::default();
        let outcome = self.core.apply(state, &event, &mut out);
        (outcome, out)
    }

    /// Brings an account to `at` as a clock event would.
    pub fn advance(&mut self, account: &str, at: &str) -> Vec<AccrualRecord> {
        let at = accrual::time::Timestamp::parse_rfc3339(at).expect("time");
        let state = self.accounts.entry(account.to_string()).or_default();
        let mut out = Effects::default();
        self.core.advance(state, account, at, "clock", &mut out);
        out.records
    }

    /// Derived events delivered as their own events.
    pub fn deliver(&mut self, derived: &[DerivedEvent]) -> Vec<(Outcome, Vec<AccrualRecord>)> {
        derived.iter().map(|d| self.apply(std::str::from_utf8(&d.payload).expect("utf8"))).collect()
    }

    /// Applies one event and returns `(rule, kind, amount)` per record.
    pub fn run(&mut self, line: &str) -> Vec<(String, &'static str, String)> {
        self.apply(line)
            .1
            .iter()
            .map(|r| (r.rule_id().to_string(), r.kind.name(), r.amount.to_string()))
            .collect()
    }

    pub fn available(&self, account: &str, program: &str) -> Decimal {
        self.accounts.get(account).and_then(|s| s.balance(program)).map_or(Decimal::ZERO, |b| b.available)
    }
}

/// `[(rule, kind, amount)]` literal helper.
pub fn recs(items: &[(&str, &'static str, &str)]) -> Vec<(String, &'static str, String)> {
    items.iter().map(|(r, k, a)| (r.to_string(), *k, a.to_string())).collect()
}

/// `lines` with a clock after every `every`-th, at the time of the last
/// event before it.
pub fn with_clocks(lines: Vec<String>, every: usize) -> Vec<String> {
    let mut decoder = accrual::events::Decoder::new();
    let mut out = Vec::new();
    let mut last = None;
    for (i, line) in lines.into_iter().enumerate() {
        if let Ok(e) = decoder.decode(line.as_bytes()) {
            last = Some(e.occurred_at);
        }
        out.push(line);
        if let (0, Some(at)) = (i % every, last) {
            out.push(format!(r#"{{"event_id":"clock-{i}","type":"clock","occurred_at":"{at}"}}"#));
        }
    }
    out
}

pub mod http;
pub mod kafka;
pub mod year;
