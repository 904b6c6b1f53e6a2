//! Properties that must hold for any input, checked with proptest.

mod common;

use accrual::accrue::RecordKind;
use accrual::events::Decoder;
use accrual::money;
use accrual::rules::CapPeriod;
use accrual::time::Timestamp;
use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// A program where caps bind often: small limits of every kind.
const TIGHT: &str = r#"
[categories.groceries]
mcc = ["5411", "5499"]

[caps.groceries-month]
limit = "150"
period = "month"

[caps.all-month]
limit = "400.50"
period = "month"
program = "cashback"

[caps.per-tx]
limit = "25"
period = "transaction"

[caps.spend-quarter]
limit = "3000"
period = "quarter"
measure = "spend"

[[rules]]
id = "base"
program = "cashback"
group = "rate"
effect = { percent = "1" }
rounding = { mode = "half-up" }

[[rules]]
id = "groceries"
program = "cashback"
group = "rate"
priority = 5
when = { categories = ["groceries"] }
effect = { percent = "7" }
caps = ["groceries-month", "per-tx"]

[[rules]]
id = "bonus"
program = "cashback"
when = { mcc = ["5400-5499"] }
effect = { percent = "3" }
caps = ["spend-quarter"]
rounding = { mode = "ceiling" }

[[rules]]
id = "points"
program = "points"
effect = { per_unit = { every = "10", award = "1" } }

[[rules]]
id = "points-x3"
program = "points"
when = { weekdays = ["sat"] }
effect = { multiply = { rule = "points", factor = "3" } }
"#;

#[derive(Debug, Clone)]
struct Buy {
    kopecks: u64,
    mcc: &'static str,
    day: u32,
}

fn buys(max: usize) -> impl Strategy<Value = Vec<Buy>> {
    let buy =
        (1u64..2_000_000, prop::sample::select(vec!["5411", "5499", "5451", "5999", "6011"]), 0u32..120)
            .prop_map(|(kopecks, mcc, day)| Buy { kopecks, mcc, day });
    prop::collection::vec(buy, 1..max)
}

fn amount(kopecks: u64) -> String {
    format!("{}.{:02}", kopecks / 100, kopecks % 100)
}

fn at(day: u32) -> String {
    Timestamp(1_793_480_400_000 + i64::from(day) * 86_400_000 + 3_600_000).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fast_decimal_text_is_displays_text(lo: u32, mid: u32, hi: u32, negative: bool, scale in 0..=28u32, small: i64) {
        let big = Decimal::from_parts(lo, mid, hi, negative, scale);
        prop_assert_eq!(accrual::money::Dec(big).to_string(), big.to_string());
        let money = Decimal::new(small, scale.min(6));
        prop_assert_eq!(accrual::money::Dec(money).to_string(), money.to_string());
    }

    #[test]
    fn earning_never_goes_negative_nor_above_a_cap(seq in buys(40), rules_choice in 0..2usize) {
        let rules = if rules_choice == 0 { example_rules() } else { test_rules(TIGHT) };
        let mut h = Harness::new(rules.clone());
        let mut earned_per_tx: Vec<Decimal> = Vec::new();
        for (i, b) in seq.iter().enumerate() {
            let (_, records) = h.apply(&purchase(&format!("p{i}"), "a", &amount(b.kopecks), b.mcc, &at(b.day), ""));
            let mut groceries_tx = Decimal::ZERO;
            for r in &records {
                if r.kind == RecordKind::Capped {
                    prop_assert!(r.amount.is_zero() && r.explanation().contains("; capped by "));
                    continue;
                }
                prop_assert_eq!(r.kind, RecordKind::Earn);
                prop_assert!(r.amount > Decimal::ZERO);
                prop_assert!(r.balance_after >= Decimal::ZERO);
                if r.rule_id() == "groceries" { groceries_tx += r.amount; }
            }
            earned_per_tx.push(groceries_tx);
            let state = &h.accounts["a"];
            for b in &state.balances {
                prop_assert!(b.available >= Decimal::ZERO);
            }
            for c in &state.counters {
                let cap = rules.cap(&c.cap).expect("counter of a known cap");
                prop_assert!(c.used >= Decimal::ZERO && c.used <= cap.limit, "{} used {} of {}", c.cap, c.used, cap.limit);
                prop_assert!(cap.period != CapPeriod::Transaction);
            }
        }
        if rules_choice == 1 {
            prop_assert!(earned_per_tx.iter().all(|e| *e <= Decimal::from(25)));
        }
    }

    #[test]
    fn refunding_everything_restores_balances_and_cap_usage(
        before in buys(15),
        target in (1u64..2_000_000, prop::sample::select(vec!["5411", "5499", "5999"])),
        splits in prop::collection::vec(1u64..1000, 1..5),
        rules_choice in 0..2usize,
    ) {
        let rules = if rules_choice == 0 { example_rules() } else { test_rules(TIGHT) };
        let mut h = Harness::new(rules);
        for (i, b) in before.iter().enumerate() {
            h.apply(&purchase(&format!("b{i}"), "a", &amount(b.kopecks), b.mcc, &at(b.day % 20), ""));
        }
        let snapshot = h.accounts.get("a").cloned().unwrap_or_default();
        let day = 25;
        h.apply(&purchase("target", "a", &amount(target.0), target.1, &at(day), ""));
        // Split the amount into partial refunds that add up exactly.
        let total: u64 = splits.iter().sum();
        let mut left = target.0;
        for (i, w) in splits.iter().enumerate() {
            let part = if i + 1 == splits.len() { left } else { (target.0 * w / total).min(left) };
            if part == 0 { continue; }
            left -= part;
            h.apply(&refund(&format!("r{i}"), "a", "target", &amount(part), &at(day)));
        }
        let after = &h.accounts["a"];
        for b in &after.balances {
            let was = snapshot.balance(&b.program).map_or(Decimal::ZERO, |x| x.available);
            prop_assert_eq!(b.available, was, "program {}", b.program);
        }
        let mut keys: BTreeMap<(String, u32), ()> = BTreeMap::new();
        for c in snapshot.counters.iter().chain(after.counters.iter()) {
            keys.insert((c.cap.to_string(), c.period), ());
        }
        for (cap, period) in keys.keys() {
            prop_assert_eq!(after.cap_used(cap, *period), snapshot.cap_used(cap, *period), "cap {} period {}", cap, period);
        }
    }

    #[test]
    fn timestamps_agree_with_chrono(secs in 0i64..8_000_000_000, millis in 0u32..1000, offset_min in -720i32..840) {
        use chrono::{FixedOffset, TimeZone};
        let tz = FixedOffset::east_opt(offset_min * 60).unwrap();
        let t = tz.timestamp_opt(secs, millis * 1_000_000).unwrap();
        let text = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
        let ours = Timestamp::parse_rfc3339(&text).unwrap();
        prop_assert_eq!(ours.0, secs * 1000 + i64::from(millis));
        let back = chrono::DateTime::parse_from_rfc3339(&ours.to_string()).unwrap();
        prop_assert_eq!(back.timestamp_millis(), ours.0);
    }

    #[test]
    fn amounts_parse_exactly(int in 0u64..1_000_000_000_000, frac in 0u32..1_000_000, digits in 0usize..7) {
        let frac_text = format!("{frac:06}")[..digits].to_string();
        let text = if digits == 0 { int.to_string() } else { format!("{int}.{frac_text}") };
        let expected: Decimal = text.parse().unwrap();
        match money::parse_amount(&text, false) {
            Ok(v) => prop_assert_eq!(v, expected),
            Err(money::AmountError::Zero) => prop_assert!(expected.is_zero()),
            Err(e) => prop_assert!(false, "{} failed: {}", text, e),
        }
        // The same digits as a JSON number with an exponent.
        let shifted = format!("{}e-{}", text.replace('.', ""), digits);
        if let Ok(v) = money::parse_amount(&shifted, true) {
            prop_assert_eq!(v, expected);
        }
    }

    #[test]
    fn the_decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut d = Decoder::new();
        let _ = d.decode(&bytes);
    }

    #[test]
    fn the_decoder_never_panics_on_damaged_events(cut in 0usize..400, flips in prop::collection::vec((0usize..400, any::<u8>()), 0..6)) {
        let mut line = purchase("e-1", "acc-1", "1234.56", "5411", "2026-11-20T14:03:00+03:00", r#","partner_id":"P","channel":"pos","nested":{"a":[1,2.5,{"b":null}]}"#).into_bytes();
        for (at, byte) in flips {
            if at < line.len() { line[at] = byte; }
        }
        line.truncate(cut.min(line.len()));
        let mut d = Decoder::new();
        if let Ok(ev) = d.decode(&line) {
            prop_assert!(!ev.event_id.is_empty());
        }
    }
}
