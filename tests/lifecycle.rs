//! The loyalty lifecycle, mechanic by mechanic, with hand-computed
//! expectations: holds and clearing, expiry, redemption, bonuses and
//! referrals, tiers, chosen categories, statement cycles, and time passing
//! with nothing else happening. Times are Moscow (+03:00).

mod common;

use accrual::accrue::{AccrualRecord, NoEffect, Outcome, balance_view};
use accrual::rules::Rules;
use common::*;
use std::sync::Arc;

fn lifecycle_rules() -> Arc<Rules> {
    Arc::new(
        accrual::rules::load(&repo_path("config/rules.lifecycle.toml")).expect("lifecycle example loads"),
    )
}

/// `(rule, kind, amount, available after, pending after)` of each record.
fn brief(records: &[AccrualRecord]) -> Vec<(String, &'static str, String, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.rule_id().to_string(),
                r.kind.name(),
                r.amount.to_string(),
                r.balance_after.to_string(),
                r.pending_after.to_string(),
            )
        })
        .collect()
}

/// The records of the event itself, without the releases and expiries that
/// fell due before it.
fn own(records: Vec<AccrualRecord>) -> Vec<AccrualRecord> {
    records
        .into_iter()
        .filter(|r| !matches!(r.kind.name(), "release" | "expire" | "expiry_warning"))
        .collect()
}

fn b(
    rule: &str,
    kind: &'static str,
    amount: &str,
    available: &str,
    pending: &str,
) -> (String, &'static str, String, String, String) {
    (rule.into(), kind, amount.into(), available.into(), pending.into())
}

fn event(kind: &str, id: &str, account: &str, at: &str, fields: &str) -> String {
    format!(r#"{{"event_id":"{id}","type":"{kind}","account_id":"{account}","occurred_at":"{at}"{fields}}}"#)
}

fn authorized(id: &str, account: &str, amount: &str, mcc: &str, at: &str) -> String {
    purchase(id, account, amount, mcc, at, r#","status":"authorized""#)
}

fn clearing(id: &str, account: &str, auth: &str, amount: &str, at: &str) -> String {
    purchase(id, account, amount, "5999", at, &format!(r#","status":"cleared","original_event_id":"{auth}""#))
}

fn redemption(
    id: &str,
    account: &str,
    program: &str,
    amount: &str,
    at: &str,
    charity: Option<&str>,
) -> String {
    let charity = charity.map_or(String::new(), |c| format!(r#","charity":"{c}""#));
    event("redemption", id, account, at, &format!(r#","program":"{program}","amount":"{amount}"{charity}"#))
}

const A: &str = "acc-1";

#[test]
fn rewards_wait_in_pending_until_released() {
    let mut h = Harness::new(lifecycle_rules());
    let (_, records) = h.apply(&purchase("p1", A, "1000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    assert_eq!(
        brief(&records),
        vec![b("base-1pct", "earn", "10.00", "0.00", "10.00"), b("points-base", "earn", "10", "0", "10")]
    );
    assert!(
        records[0].explanation().ends_with("pending until 2026-12-10T07:00:00Z"),
        "{}",
        records[0].explanation()
    );
    // Points wait for the next statement date: the 15th (local midnight).
    assert!(h.advance(A, "2026-11-14T20:59:59.999Z").is_empty());
    let released = h.advance(A, "2026-11-14T21:00:00Z");
    assert_eq!(brief(&released), vec![b("points-base", "release", "10", "10", "0")]);
    assert_eq!(released[0].accrual_id(), "p1:points-base:release");
    assert_eq!(released[0].occurred_at.to_string(), "2026-11-14T21:00:00Z");
    // Cashback waits 30 days to the millisecond.
    assert!(h.advance(A, "2026-12-10T06:59:59.999Z").is_empty());
    assert_eq!(
        brief(&h.advance(A, "2026-12-10T07:00:00Z")),
        vec![b("base-1pct", "release", "10.00", "10.00", "0.00")]
    );
}

#[test]
fn authorisations_wait_for_clearing_and_reversals_cancel() {
    let mut h = Harness::new(lifecycle_rules());
    h.apply(&authorized("a1", A, "2000.00", "5999", "2026-11-10T10:00:00+03:00"));
    // Long after 30 days: points (no clearing required) release, cashback waits.
    assert_eq!(
        brief(&h.advance(A, "2026-12-20T00:00:00Z")),
        vec![b("points-base", "release", "20", "20", "0")]
    );
    let (outcome, records) = h.apply(&clearing("c1", A, "a1", "2000.00", "2026-12-20T12:00:00+03:00"));
    assert_eq!(outcome, Outcome::Applied(1));
    assert_eq!(brief(&records), vec![b("base-1pct", "release", "20.00", "20.00", "0.00")]);
    assert_eq!(records[0].occurred_at.to_string(), "2026-12-10T07:00:00Z", "released as of when it was due");
    assert_eq!(records[0].source_event_id(), "c1");
    // The clearing earned nothing itself.
    assert_eq!(h.available(A, "cashback"), d("20.00"));

    // A reversed authorisation cancels what is still pending.
    h.apply(&authorized("a2", A, "500.00", "5999", "2026-12-21T10:00:00+03:00"));
    let (_, records) = h.apply(&reversal("r2", A, "a2", "2026-12-21T11:00:00+03:00"));
    assert_eq!(
        brief(&records),
        vec![b("base-1pct", "cancel", "5.00", "20.00", "0.00"), b("points-base", "cancel", "5", "20", "0")]
    );
    // Clearing before the hold ends: it releases on time, not at once.
    h.apply(&authorized("a3", A, "300.00", "5999", "2026-12-22T10:00:00+03:00"));
    assert_eq!(
        h.apply(&clearing("c3", A, "a3", "300.00", "2026-12-23T10:00:00+03:00")).0,
        Outcome::NoEffect(NoEffect::Cleared)
    );
    let records = h.advance(A, "2027-01-21T07:00:00Z");
    assert!(
        brief(&records).contains(&b("base-1pct", "release", "3.00", "23.00", "0.00")),
        "{:?}",
        brief(&records)
    );
}

#[test]
fn a_refund_after_the_hold_released_claws_back_the_available_balance() {
    let mut h = Harness::new(lifecycle_rules());
    h.apply(&purchase("p1", A, "1000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    h.advance(A, "2026-12-11T00:00:00Z");
    assert_eq!((h.available(A, "cashback"), h.available(A, "points")), (d("10.00"), d("10")));
    let (_, records) = h.apply(&refund("r1", A, "p1", "400.00", "2026-12-20T10:00:00+03:00"));
    assert_eq!(
        brief(&records),
        vec![b("base-1pct", "clawback", "4.00", "6.00", "0.00"), b("points-base", "clawback", "4", "6", "0")]
    );
}

#[test]
fn redemption_spends_available_only_and_refuses_with_a_reason() {
    let mut h = Harness::new(lifecycle_rules());
    assert_eq!(
        brief(&h.apply(&event("enrollment", "e1", A, "2026-11-01T10:00:00+03:00", "")).1),
        vec![b("welcome", "earn", "500", "500", "0")]
    );
    h.apply(&purchase("p1", A, "10000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    let refused = [
        (
            redemption("x1", A, "points", "600", "2026-11-12T10:00:00+03:00", None),
            "insufficient_balance: 600 requested, 500 available (100 pending cannot be spent)",
        ),
        (
            redemption("x2", A, "points", "400", "2026-11-12T10:00:00+03:00", None),
            "below_minimum: 400 is below the minimum of 500",
        ),
        (
            redemption("x3", A, "miles", "500", "2026-11-12T10:00:00+03:00", None),
            "unknown_program: no program \"miles\"",
        ),
        (redemption("x4", A, "points", "500.5", "2026-11-12T10:00:00+03:00", None), "too_precise"),
        (
            redemption("x5", A, "points", "500", "2026-11-12T10:00:00+03:00", Some("casino")),
            "unknown_charity",
        ),
    ];
    for (line, reason) in refused {
        let (outcome, records) = h.apply(&line);
        assert_eq!(outcome, Outcome::Applied(1));
        assert_eq!(records[0].kind.name(), "redeem_rejected");
        assert!(records[0].explanation().starts_with(reason), "{} vs {reason}", records[0].explanation());
        assert_eq!(h.available(A, "points"), d("500"), "a refusal changes nothing");
    }
    let (_, records) = h.apply(&redemption("x6", A, "points", "500", "2026-11-12T11:00:00+03:00", None));
    assert_eq!(brief(&records), vec![b("redemption", "redeem", "500", "0", "100")]);
    assert_eq!(records[0].value, Some(d("250.00")), "500 points at 0.50 RUB");
    assert_eq!(records[0].accrual_id(), "x6:points:redeem");
    // Cashback is redeemable 1:1 once released.
    h.advance(A, "2026-12-11T00:00:00Z");
    let (_, records) = h.apply(&redemption("x7", A, "cashback", "100", "2026-12-11T10:00:00+03:00", None));
    assert_eq!(brief(&records), vec![b("redemption", "redeem", "100.00", "0.00", "0.00")]);
    assert_eq!(records[0].value, Some(d("100.00")));
}

#[test]
fn a_donation_is_a_redemption_to_a_charity() {
    let mut h = Harness::new(lifecycle_rules());
    h.apply(&event("enrollment", "e1", A, "2026-11-01T10:00:00+03:00", ""));
    let (_, records) =
        h.apply(&redemption("x1", A, "points", "500", "2026-11-02T10:00:00+03:00", Some("children-fund")));
    assert_eq!(brief(&records), vec![b("redemption", "donation", "500", "0", "0")]);
    assert!(records[0].explanation().contains("donated to children-fund"), "{}", records[0].explanation());
}

const NO_HOLD_POINTS: &str = r#"
[programs.points.expiry]
after_days = 30
warn_days = 5

[programs.points.redemption]
rate = "1"

[[rules]]
id = "points"
program = "points"
effect = { per_unit = { every = "10", award = "1" } }
"#;

fn no_hold(extra: &str) -> Harness {
    // TEST_PROGRAMS defines [programs.points]; sub-tables extend it.
    Harness::new(test_rules(&format!("{extra}\n{NO_HOLD_POINTS}")))
}

#[test]
fn oldest_lots_are_spent_first_and_expire_on_the_exact_instant() {
    let mut h = no_hold("");
    // Earned 10 November: burns at local midnight ending 10 December.
    h.apply(&purchase("p1", A, "1000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    h.apply(&purchase("p2", A, "500.00", "5999", "2026-11-20T10:00:00+03:00", ""));
    let (_, records) = h.apply(&redemption("x1", A, "points", "80", "2026-12-01T10:00:00+03:00", None));
    assert_eq!(brief(&records), vec![b("redemption", "redeem", "80", "70", "0")]);
    // The warning comes 5 days before, to the millisecond.
    assert!(h.advance(A, "2026-12-05T20:59:59.999Z").is_empty());
    let warning = h.advance(A, "2026-12-05T21:00:00Z");
    assert_eq!(brief(&warning), vec![b("expiry", "expiry_warning", "20", "70", "0")]);
    assert_eq!(warning[0].accrual_id(), "acc-1:points:expiry_warning:2026-12-10T21:00:00Z");
    assert!(h.advance(A, "2026-12-10T20:59:59.999Z").is_empty());
    // A redemption at the very instant sees the lot already gone.
    let (_, records) = h.apply(&redemption("x2", A, "points", "60", "2026-12-10T21:00:00Z", None));
    assert_eq!(
        brief(&records),
        vec![b("expiry", "expire", "20", "50", "0"), b("redemption", "redeem_rejected", "60", "50", "0")]
    );
    assert_eq!(records[0].occurred_at.to_string(), "2026-12-10T21:00:00Z");
    let view = balance_view(&h.core.rules().clone(), &h.accounts[A], 3);
    assert_eq!(
        view.programs[0].next_expiring,
        vec![(accrual::time::Timestamp::parse_rfc3339("2026-12-20T21:00:00Z").unwrap(), d("50"))]
    );
}

#[test]
fn inactivity_expiry_moves_with_every_purchase() {
    let rules = test_rules(
        r#"
[programs.cashback.expiry]
inactive_months = 3
warn_days = 10

[[rules]]
id = "base"
program = "cashback"
effect = { percent = "1" }
"#,
    );
    let mut h = Harness::new(rules);
    h.apply(&purchase("p1", A, "1000.00", "5999", "2026-01-10T10:00:00+03:00", ""));
    h.apply(&purchase("p2", A, "1000.00", "5999", "2026-03-01T10:00:00+03:00", ""));
    // Three months after the last purchase (1 March): 1 June, 10:00.
    assert!(h.advance(A, "2026-04-10T10:00:00+03:00").is_empty(), "the first deadline moved");
    assert_eq!(
        brief(&h.advance(A, "2026-05-22T10:00:00+03:00")),
        vec![b("expiry", "expiry_warning", "20.00", "20.00", "0.00")]
    );
    assert!(h.advance(A, "2026-06-01T09:59:59+03:00").is_empty());
    assert_eq!(
        brief(&h.advance(A, "2026-06-01T10:00:00+03:00")),
        vec![b("expiry", "expire", "20.00", "0.00", "0.00")]
    );
}

#[test]
fn end_of_year_expiry() {
    let rules = test_rules(
        r#"
[programs.points.expiry]
end_of_year = true

[[rules]]
id = "points"
program = "points"
effect = { fixed = "7" }
"#,
    );
    let mut h = Harness::new(rules);
    h.apply(&purchase("p1", A, "10.00", "5999", "2026-12-31T23:59:59+03:00", ""));
    // The new year begins: last year's lot burns before the purchase earns.
    let (_, records) = h.apply(&purchase("p2", A, "10.00", "5999", "2027-01-01T00:00:00+03:00", ""));
    assert_eq!(
        brief(&records),
        vec![b("expiry", "expire", "7", "0", "0"), b("points", "earn", "7", "7", "0")]
    );
    assert_eq!(records[0].occurred_at.to_string(), "2026-12-31T21:00:00Z");
}

#[test]
fn a_refund_racing_a_redemption_never_makes_the_balance_negative() {
    let mut h = no_hold("");
    h.apply(&purchase("p1", A, "1000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    h.apply(&redemption("x1", A, "points", "100", "2026-11-10T10:01:00+03:00", None));
    let (_, records) = h.apply(&refund("r1", A, "p1", "1000.00", "2026-11-10T10:02:00+03:00"));
    assert_eq!(brief(&records), vec![b("points", "clawback", "100", "0", "0")]);
    assert!(records[0].explanation().contains("100 already spent: owed"), "{}", records[0].explanation());
    let (_, records) = h.apply(&purchase("p2", A, "500.00", "5999", "2026-11-11T10:00:00+03:00", ""));
    assert_eq!(brief(&records), vec![b("points", "earn", "50", "0", "0")]);
    assert!(records[0].explanation().contains("50 of it repaid what was owed"));
    assert_eq!(
        brief(&h.apply(&purchase("p3", A, "600.00", "5999", "2026-11-12T10:00:00+03:00", "")).1),
        vec![b("points", "earn", "60", "10", "0")]
    );
    assert_eq!(h.accounts[A].balance("points").unwrap().owed, d("0"));
}

#[test]
fn welcome_bonus_once_and_the_referrer_paid_through_a_derived_event() {
    let mut h = Harness::new(lifecycle_rules());
    let (_, welcome) = h.apply(&event("enrollment", "e1", "new", "2026-11-01T10:00:00+03:00", ""));
    assert_eq!(brief(&welcome), vec![b("welcome", "earn", "500", "500", "0")]);
    assert_eq!(
        h.apply(&event("enrollment", "e2", "new", "2026-11-02T10:00:00+03:00", "")).0,
        Outcome::NoEffect(NoEffect::AlreadyEnrolled)
    );
    let referral =
        event("referral", "f1", "new", "2026-11-01T11:00:00+03:00", r#","referrer_account_id":"old""#);
    assert_eq!(h.apply(&referral).0, Outcome::NoEffect(NoEffect::ReferralRecorded));
    assert!(
        h.apply_effects(&purchase("p1", "new", "999.99", "5999", "2026-11-03T10:00:00+03:00", ""))
            .1
            .derived
            .is_empty()
    );
    let (_, effects) =
        h.apply_effects(&purchase("p2", "new", "1000.00", "5999", "2026-11-04T10:00:00+03:00", ""));
    assert_eq!(effects.derived.len(), 1);
    assert_eq!(effects.derived[0].account_id, "old");
    let delivered = h.deliver(&effects.derived);
    assert_eq!(brief(&delivered[0].1), vec![b("referral", "earn", "1000", "1000", "0")]);
    assert_eq!(delivered[0].1[0].accrual_id(), "p2:referral_bonus:referral:earn");
    assert!(
        h.apply_effects(&purchase("p3", "new", "5000.00", "5999", "2026-11-05T10:00:00+03:00", ""))
            .1
            .derived
            .is_empty(),
        "once per referred account"
    );

    // At most 5 referral bonuses per referrer per year.
    for i in 0..5 {
        let bonus = event(
            "referral_bonus",
            &format!("rb{i}"),
            "old",
            "2026-12-01T10:00:00+03:00",
            &format!(r#","referred_account_id":"n{i}""#),
        );
        let (outcome, _) = h.apply(&bonus);
        let expected = if i < 4 { Outcome::Applied(1) } else { Outcome::NoEffect(NoEffect::ReferralLimit) };
        assert_eq!(outcome, expected, "bonus {i}");
    }
    let next_year =
        event("referral_bonus", "rb9", "old", "2027-01-01T10:00:00+03:00", r#","referred_account_id":"n9""#);
    assert_eq!(h.apply(&next_year).0, Outcome::Applied(1));
}

#[test]
fn tiers_upgrade_after_the_crossing_purchase_and_fall_at_the_end_of_a_missed_period() {
    let mut h = Harness::new(lifecycle_rules());
    let points = |records: &[AccrualRecord]| -> Vec<(String, String)> {
        own(records.to_vec())
            .iter()
            .filter(|r| r.program() == "points" || r.kind.name() == "tier_changed")
            .map(|r| (r.rule_id().to_string(), r.amount.to_string()))
            .collect()
    };
    h.apply(&purchase("p1", A, "20000.00", "5999", "2026-10-05T10:00:00+03:00", ""));
    // Crosses 30,000: this purchase still earns without a tier.
    let (_, records) = h.apply(&purchase("p2", A, "15000.00", "5999", "2026-10-06T10:00:00+03:00", ""));
    assert_eq!(points(&records), vec![("points-base".into(), "150".into()), ("tier".into(), "0".into())]);
    assert_eq!(
        records.last().unwrap().explanation(),
        "tier none -> silver: 35000.00 in 2026-Q4 reached 30000"
    );
    assert_eq!(h.accounts[A].tier.as_deref(), Some("silver"));
    // Silver: 1.5x, the extra half paid by silver-points.
    let (_, records) = h.apply(&purchase("p3", A, "10000.00", "5999", "2026-10-07T10:00:00+03:00", ""));
    assert_eq!(
        points(&records),
        vec![("points-base".into(), "100".into()), ("silver-points".into(), "50".into())]
    );
    // Crosses 100,000 at silver.
    let (_, records) = h.apply(&purchase("p4", A, "70000.00", "5999", "2026-11-01T10:00:00+03:00", ""));
    assert_eq!(
        points(&records),
        vec![
            ("points-base".into(), "700".into()),
            ("silver-points".into(), "350".into()),
            ("tier".into(), "0".into())
        ]
    );
    assert_eq!(h.accounts[A].tier.as_deref(), Some("gold"));
    // Q1 2027: gold holds through the quarter after it was earned.
    let (_, records) = h.apply(&purchase("p5", A, "1000.00", "5999", "2027-01-05T10:00:00+03:00", ""));
    assert_eq!(
        points(&records),
        vec![("points-base".into(), "10".into()), ("gold-points".into(), "10".into())]
    );
    // Q1 missed 30,000: when Q2 starts, the tier goes.
    let records = h.advance(A, "2027-05-01T00:00:00+03:00");
    let tier: Vec<_> = records.iter().filter(|r| r.kind.name() == "tier_changed").collect();
    assert_eq!(tier.len(), 1);
    assert_eq!(tier[0].explanation(), "tier gold -> none: 1000.00 in 2027-Q1, which has ended");
    assert_eq!(tier[0].occurred_at.to_string(), "2027-03-31T21:00:00Z");
    assert_eq!(tier[0].accrual_id(), "acc-1:tier_changed:2027-Q1");
    assert_eq!(h.accounts[A].tier, None);
    // The record about the account carries every balance, not a "0".
    let mut json = Vec::new();
    tier[0].write_json(&mut json);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(v["balance_after"].is_null() && v["program"].is_null(), "{v}");
    let balances = v["balances"].as_array().unwrap();
    assert!(!balances.is_empty(), "{v}");
    for b in balances {
        let state = h.accounts[A].balance(b["program"].as_str().unwrap()).unwrap();
        let fixed = |d| accrual::money::with_scale(d, state.decimals).to_string();
        assert_eq!(
            (b["available"].as_str(), b["pending"].as_str()),
            (Some(&*fixed(state.available)), Some(&*fixed(state.pending))),
            "{v}"
        );
        assert_eq!(b["unit"].as_str(), Some(&*state.unit));
    }
}

#[test]
fn customers_choose_categories_within_the_rules() {
    let mut h = Harness::new(lifecycle_rules());
    let choose = |id: &str, month: &str, list: &str, at: &str| {
        event("category_choice", id, A, at, &format!(r#","month":"{month}","categories":[{list}]"#))
    };
    let (_, records) = h.apply(&choose(
        "c1",
        "2026-12",
        r#""groceries","fuel","restaurants","pharmacy""#,
        "2026-11-20T10:00:00+03:00",
    ));
    assert_eq!(records[0].kind.name(), "category_choice");
    assert_eq!(records[0].explanation(), "chose groceries, fuel, restaurants, pharmacy for 2026-12");
    // December groceries earn the chosen 5%; November's do not.
    let (_, records) = h.apply(&purchase("p1", A, "1000.00", "5411", "2026-11-25T10:00:00+03:00", ""));
    assert_eq!(records[0].rule_id(), "base-1pct");
    let (_, records) = h.apply(&purchase("p2", A, "1000.00", "5411", "2026-12-03T10:00:00+03:00", ""));
    assert_eq!((records[0].rule_id(), records[0].amount.to_string().as_str()), ("chosen-5pct", "50.00"));
    let (_, records) = h.apply(&purchase("p3", A, "1000.00", "5651", "2026-12-03T11:00:00+03:00", ""));
    assert_eq!(records[0].rule_id(), "base-1pct", "clothing was not chosen");
    let refused = [
        (
            choose("c2", "2026-12", r#""clothing""#, "2026-12-06T00:00:00+03:00"),
            "choices for 2026-12 closed at 2026-12-05T21:00:00Z",
        ),
        (
            choose(
                "c3",
                "2027-01",
                r#""groceries","fuel","restaurants","pharmacy","beauty""#,
                "2026-12-20T10:00:00+03:00",
            ),
            "5 chosen, at most 4 allowed",
        ),
        (choose("c4", "2027-01", r#""casino""#, "2026-12-20T10:00:00+03:00"), "\"casino\" is not offered"),
        (
            choose("c5", "2027-01", r#""fuel","fuel""#, "2026-12-20T10:00:00+03:00"),
            "a category is chosen twice",
        ),
    ];
    for (line, why) in refused {
        let records = own(h.apply(&line).1);
        assert_eq!(records[0].kind.name(), "choice_rejected");
        assert!(records[0].explanation().contains(why), "{} vs {why}", records[0].explanation());
    }
    // A later choice before the deadline replaces the earlier one.
    h.apply(&choose("c6", "2027-01", r#""travel""#, "2026-12-20T10:00:00+03:00"));
    h.apply(&choose("c7", "2027-01", r#""beauty""#, "2027-01-05T23:59:59+03:00"));
    assert_eq!(h.accounts[A].chosen(2027 * 12), &["beauty".to_string()]);
}

#[test]
fn caps_and_releases_follow_the_statement_cycle() {
    let mut h = Harness::new(lifecycle_rules());
    // Statement day 15: 14 November is the last day of the cycle from 15 October.
    let (_, records) = h.apply(&purchase("p1", A, "300000.00", "5999", "2026-11-14T10:00:00+03:00", ""));
    assert_eq!(records[0].amount.to_string(), "3000.00");
    let (_, records) = h.apply(&purchase("p2", A, "1000.00", "5999", "2026-11-14T23:00:00+03:00", ""));
    let cashback: Vec<_> = records.iter().filter(|r| r.program() == "cashback").collect();
    assert!(
        cashback.iter().all(|r| r.kind.name() == "capped" && r.amount.is_zero()),
        "cap used up this cycle"
    );
    let (_, records) = h.apply(&purchase("p3", A, "1000.00", "5999", "2026-11-15T00:00:00+03:00", ""));
    // At local midnight on the 15th the cycle's points release, then p3 earns.
    assert_eq!(records[0].accrual_id(), "p1:points-base:release");
    assert_eq!(own(records)[0].amount.to_string(), "10.00", "a new cycle");
    // The account moves its statement day to the 1st: points now release then.
    h.apply(&event("statement_cycle", "s1", A, "2026-11-16T10:00:00+03:00", r#","statement_day":1"#));
    assert_eq!(h.accounts[A].statement_day, Some(1));
    let (_, records) = h.apply(&purchase("p4", A, "1000.00", "5999", "2026-11-20T10:00:00+03:00", ""));
    assert!(records[0].explanation().contains("pending until 2026-12-20T07:00:00Z"));
    let released = h.advance(A, "2026-11-30T21:00:00Z");
    assert!(released.iter().any(|r| r.accrual_id() == "p4:points-base:release"), "{:?}", brief(&released));
}

#[test]
fn a_partial_refund_of_a_capped_purchase_still_pending_cancels_and_frees_the_cap() {
    let mut h = Harness::new(lifecycle_rules());
    h.apply(&purchase("p1", A, "250000.00", "5999", "2026-11-01T10:00:00+03:00", ""));
    let (_, records) = h.apply(&purchase("p2", A, "100000.00", "5999", "2026-11-02T10:00:00+03:00", ""));
    assert_eq!(records[0].amount.to_string(), "500.00", "1000 would be due; 500 left of the cycle's cap");
    let (_, records) = h.apply(&refund("r2", A, "p2", "50000.00", "2026-11-03T10:00:00+03:00"));
    assert_eq!(brief(&records)[0], b("base-1pct", "cancel", "250.00", "0.00", "2750.00"));
    let (_, records) = h.apply(&purchase("p3", A, "100000.00", "5999", "2026-11-04T10:00:00+03:00", ""));
    assert_eq!(records[0].amount.to_string(), "250.00", "exactly what the refund gave back to the cap");
}

#[test]
fn a_clock_after_months_without_purchases_catches_up_in_order() {
    let mut h = Harness::new(lifecycle_rules());
    h.apply(&event("enrollment", "e1", A, "2026-11-01T10:00:00+03:00", ""));
    h.apply(&purchase("p1", A, "50000.00", "5999", "2026-11-10T10:00:00+03:00", ""));
    assert_eq!(h.accounts[A].tier.as_deref(), Some("silver"));
    let records = h.advance(A, "2028-01-01T00:00:00Z");
    let seen: Vec<(String, &str, String)> =
        records.iter().map(|r| (r.rule_id().to_string(), r.kind.name(), r.occurred_at.to_string())).collect();
    assert_eq!(
        seen,
        vec![
            ("points-base".into(), "release", "2026-11-14T21:00:00Z".into()),
            ("base-1pct".into(), "release", "2026-12-10T07:00:00Z".into()),
            ("tier".into(), "tier_changed", "2027-03-31T21:00:00Z".into()),
            ("expiry".into(), "expiry_warning", "2027-10-02T21:00:00Z".into()),
            ("expiry".into(), "expiry_warning", "2027-10-11T07:00:00Z".into()),
            ("expiry".into(), "expiry_warning", "2027-10-11T21:00:00Z".into()),
            ("expiry".into(), "expire", "2027-11-01T21:00:00Z".into()),
            ("expiry".into(), "expire", "2027-11-10T07:00:00Z".into()),
            ("expiry".into(), "expire", "2027-11-10T21:00:00Z".into()),
        ],
        "{records:#?}"
    );
    let view = balance_view(&h.core.rules().clone(), &h.accounts[A], 5);
    assert!(view.programs.iter().all(|p| p.available.is_zero() && p.pending.is_zero()));
    assert_eq!(view.tier, None);
}

#[test]
fn redemption_racing_a_refund_in_one_ledger_batch() {
    use accrual::accrue::{AccrualRecord, NoEffect};
    use accrual::events::Event;
    use accrual::pipeline::{Input, Processor, Sink};
    use accrual::store::{Progress, Store, StoreOptions};

    #[derive(Default)]
    struct Records(Vec<AccrualRecord>);
    impl Sink for Records {
        fn accrued(&mut self, _: u64, _: &Event<'_>, records: &[AccrualRecord]) {
            self.0.extend_from_slice(records);
        }
        fn no_effect(&mut self, _: u64, _: &Event<'_>, _: NoEffect) {}
        fn duplicate(&mut self, _: u64, _: &Event<'_>, _: accrual::time::Timestamp) {}
        fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, _: &str) {
            panic!("dead letter at {}: {reason}", input.offset);
        }
    }
    let rules = test_rules(NO_HOLD_POINTS);
    let lines = [
        purchase("p1", A, "1000.00", "5999", "2026-11-10T10:00:00+03:00", ""),
        redemption("x1", A, "points", "100", "2026-11-10T10:00:01+03:00", None),
        refund("r1", A, "p1", "1000.00", "2026-11-10T10:00:02+03:00"),
        purchase("p2", A, "300.00", "5999", "2026-11-10T10:00:03+03:00", ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let inputs: Vec<Input<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Input { offset: i as u64, key: b"", payload: l.as_bytes(), timestamp: None })
        .collect();
    let mut batch = store.batch();
    let mut sink = Records::default();
    let mut progress = Progress::default();
    Processor::new(rules).process(&store, 0, &mut progress, &inputs, &mut batch, &mut sink).unwrap();
    store.commit(batch).unwrap();
    assert_eq!(
        brief(&sink.0),
        vec![
            b("points", "earn", "100", "100", "0"),
            b("redemption", "redeem", "100", "0", "0"),
            b("points", "clawback", "100", "0", "0"),
            b("points", "earn", "30", "0", "0"),
        ]
    );
    let balance = store.account(0, A).unwrap().unwrap().balance("points").unwrap().clone();
    assert_eq!((balance.available, balance.owed), (d("0"), d("70")), "spent points are owed, never negative");
}

/// Monthly Silver and Gold granted from the next month: "status for next
/// month from this month's spend".
const NEXT_MONTH_TIERS: &str = r#"
[tiers.silver]
rank = 1
threshold = "30000"

[tiers.gold]
rank = 2
threshold = "100000"

[tier_qualification]
measure = "spend"
period = "month"
takes_effect = "next_period"

[[rules]]
id = "base"
program = "cashback"
effect = { percent = "1" }

[[rules]]
id = "gold-extra"
program = "cashback"
when = { tiers = ["gold"] }
effect = { percent = "2" }
"#;

#[test]
fn tiers_from_the_next_period_are_granted_when_the_qualifying_month_ends() {
    let mut h = Harness::new(test_rules(NEXT_MONTH_TIERS));
    let tiers = |records: &[AccrualRecord]| -> Vec<(String, String, String)> {
        records
            .iter()
            .filter(|r| r.kind.name() == "tier_changed")
            .map(|r| (r.explanation().to_string(), r.occurred_at.to_string(), r.accrual_id().to_string()))
            .collect()
    };
    // November: 110,000 of spend upgrades nothing while the month runs.
    let first = h.apply(&purchase("p1", A, "40000.00", "5411", "2026-11-10T12:00:00+03:00", "")).1;
    let second = h.apply(&purchase("p2", A, "70000.00", "5411", "2026-11-20T12:00:00+03:00", "")).1;
    assert_eq!(tiers(&[first, second].concat()), Vec::new());
    assert_eq!(h.accounts[A].tier, None);
    // Without a tier, the account is still due when November ends.
    let due = h.core.next_due(&h.accounts[A]).map(|t| t.to_string());
    assert_eq!(due.as_deref(), Some("2026-11-30T21:00:00Z"));
    let december = h.advance(A, "2026-12-02T00:00:00+03:00");
    assert_eq!(
        tiers(&december),
        vec![(
            "tier none -> gold: 110000.00 in 2026-11, which has ended".to_string(),
            "2026-11-30T21:00:00Z".to_string(),
            "acc-1:tier_changed:2026-11".to_string()
        )]
    );
    // December's purchases earn at Gold; 35,000 of spend keeps Silver for
    // January, and January without spend leaves no tier for February.
    let gold = h.run(&purchase("p3", A, "35000.00", "5411", "2026-12-05T12:00:00+03:00", ""));
    assert!(gold.contains(&("gold-extra".to_string(), "earn", "700.00".to_string())), "{gold:?}");
    let january = h.advance(A, "2027-01-02T00:00:00+03:00");
    assert_eq!(tiers(&january)[0].0, "tier gold -> silver: 35000.00 in 2026-12, which has ended");
    let february = h.advance(A, "2027-02-02T00:00:00+03:00");
    assert_eq!(tiers(&february)[0].0, "tier silver -> none: 0 in 2027-01, which has ended");
    assert_eq!(h.accounts[A].tier, None);
    // With neither a tier nor spend counted, nothing is due any more.
    assert_eq!(h.core.next_due(&h.accounts[A]), None);
}

#[test]
fn tiers_from_the_next_period_need_a_calendar_period() {
    let rolling = NEXT_MONTH_TIERS.replace("period = \"month\"", "period = \"rolling\"\nrolling_days = 90");
    let err =
        accrual::rules::parse(&format!("{}\n{rolling}", common::TEST_PROGRAMS), "bank.toml").unwrap_err();
    assert!(
        err.to_string()
            .contains("[tier_qualification]: field `takes_effect`: \"next_period\" needs a calendar period"),
        "{err}"
    );
}

#[test]
fn a_refund_takes_back_tier_spend_even_of_a_purchase_that_earned_nothing() {
    let rules = NEXT_MONTH_TIERS.replace("takes_effect = \"next_period\"\n", "").replace(
        "effect = { percent = \"1\" }",
        "when = { min_amount = \"100\" }\neffect = { percent = \"1\" }",
    );
    let mut h = Harness::new(test_rules(&rules));
    // 50.00 earns nothing (below 100) but counts as spend: Silver at 30,040.
    assert_eq!(h.run(&purchase("small", A, "50.00", "5411", "2026-11-02T12:00:00+03:00", "")), Vec::new());
    h.apply(&purchase("big", A, "29990.00", "5411", "2026-11-03T12:00:00+03:00", ""));
    assert_eq!(h.accounts[A].tier.as_deref(), Some("silver"));
    // Its refund takes the 50.00 back: November ends below Silver.
    h.apply(&refund("r-small", A, "small", "50.00", "2026-11-04T12:00:00+03:00"));
    let december = h.advance(A, "2026-12-02T00:00:00+03:00");
    let changes: Vec<&str> =
        december.iter().filter(|r| r.kind.name() == "tier_changed").map(|r| r.explanation()).collect();
    assert_eq!(changes, ["tier silver -> none: 29990.00 in 2026-11, which has ended"]);
}
