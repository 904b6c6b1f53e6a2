//! Hand-computed cases against the shipped example program
//! (`config/rules.example.toml`), exact to the kopeck. Times are Moscow
//! (+03:00), the program's calendar.

mod common;

use accrual::accrue::{NoEffect, Outcome, Rejection};
use common::*;

const A: &str = "acc-1";

fn h() -> Harness {
    Harness::new(example_rules())
}

#[test]
fn base_cashback_counts_full_hundreds_and_points_full_tens() {
    let mut h = h();
    let (outcome, records) = h.apply(&purchase("p1", A, "1234.56", "5999", "2026-11-10T12:00:00+03:00", ""));
    assert_eq!(outcome, Outcome::Applied(2));
    assert_eq!(records[0].amount.to_string(), "12.00");
    assert!(
        records[0].explanation().starts_with("1% of 1200 (in full 100s of 1234.56) = 12"),
        "{}",
        records[0].explanation()
    );
    assert_eq!(records[1].amount.to_string(), "123");
    assert_eq!(records[0].accrual_id(), "p1:base-1pct:earn");
    assert_eq!(records[0].balance_after.to_string(), "12.00");
    // Below the 100 RUB minimum: points only.
    assert_eq!(
        h.run(&purchase("p2", A, "99.99", "5999", "2026-11-10T12:01:00+03:00", "")),
        recs(&[("points-base", "earn", "9")])
    );
    assert_eq!(
        h.run(&purchase("p3", A, "100.00", "5999", "2026-11-10T12:02:00+03:00", "")),
        recs(&[("base-1pct", "earn", "1.00"), ("points-base", "earn", "10")])
    );
    assert_eq!(h.available(A, "cashback"), d("13.00"));
    assert_eq!(h.available(A, "points"), d("142"));
}

#[test]
fn groceries_five_percent_floors_to_the_kopeck() {
    let mut h = h();
    let (_, records) = h.apply(&purchase("g1", A, "1234.56", "5411", "2026-11-10T12:00:00+03:00", ""));
    assert_eq!(records[0].rule_id(), "groceries-5pct");
    assert_eq!(records[0].amount.to_string(), "61.72");
    assert!(
        records[0].explanation().contains("5% of 1234.56 = 61.728, floor to 0.01: 61.72"),
        "{}",
        records[0].explanation()
    );
    assert_eq!(records[1].amount.to_string(), "123");
}

#[test]
fn the_purchase_crossing_the_grocery_cap_earns_the_remainder() {
    let mut h = h();
    assert_eq!(
        h.run(&purchase("g1", A, "50000.00", "5411", "2026-11-05T10:00:00+03:00", "")),
        recs(&[("groceries-5pct", "earn", "2500.00"), ("points-base", "earn", "5000")])
    );
    let (_, records) = h.apply(&purchase("g2", A, "20000.00", "5411", "2026-11-06T10:00:00+03:00", ""));
    assert_eq!(records[0].amount.to_string(), "500.00", "5% would be 1000; 500 is left of the cap");
    assert!(
        records[0].explanation().contains(
            "; capped by groceries-monthly (Grocery cashback per calendar month, 2026-11): 500.00 paid, \
             500.00 of 3000.00 left before, 0.00 after"
        ),
        "{}",
        records[0].explanation()
    );
    assert_eq!(
        (records[0].mcc.map(|m| m.to_string()), records[0].category()),
        (Some("5411".into()), "groceries")
    );
    // Cap used up: the exclusive group falls back to the 1% base rate.
    assert_eq!(
        h.run(&purchase("g3", A, "10000.00", "5411", "2026-11-07T10:00:00+03:00", "")),
        recs(&[("base-1pct", "earn", "100.00"), ("points-base", "earn", "1000")])
    );
    // A new calendar month (Moscow time) has a fresh cap.
    assert_eq!(
        h.run(&purchase("g4", A, "10000.00", "5411", "2026-11-30T21:00:00Z", "")),
        recs(&[("groceries-5pct", "earn", "500.00"), ("points-base", "earn", "1000")])
    );
    assert_eq!(h.available(A, "cashback"), d("3600.00"));
    // The balance view shows each cap's use per period, as fixed decimals.
    let view = accrual::accrue::balance_view(h.core.rules(), &h.accounts[A], 3);
    let caps: Vec<_> = view
        .caps
        .iter()
        .map(|c| {
            (c.cap.as_str(), c.period.as_str(), c.used.to_string(), c.limit.to_string(), c.left.to_string())
        })
        .collect();
    let row = |cap, period, used: &str, limit: &str, left: &str| {
        (cap, period, used.to_string(), limit.to_string(), left.to_string())
    };
    assert_eq!(
        caps,
        [
            row("cashback-monthly", "2026-11", "3100.00", "5000.00", "1900.00"),
            row("cashback-monthly", "2026-12", "500.00", "5000.00", "4500.00"),
            row("groceries-monthly", "2026-11", "3000.00", "3000.00", "0.00"),
            row("groceries-monthly", "2026-12", "500.00", "3000.00", "2500.00"),
        ],
        "November's use is kept while a refund could still give some back"
    );
    assert_eq!(view.caps[3].description.as_deref(), Some("Grocery cashback per calendar month"));
}

#[test]
fn the_monthly_program_cap_limits_all_cashback() {
    let mut h = h();
    assert_eq!(
        h.run(&purchase("f1", A, "100000.00", "5541", "2026-11-10T10:00:00+03:00", ""))[0],
        recs(&[("fuel-3pct", "earn", "3000.00")])[0]
    );
    assert_eq!(
        h.run(&purchase("f2", A, "100000.00", "5541", "2026-11-11T10:00:00+03:00", ""))[0],
        recs(&[("fuel-3pct", "earn", "2000.00")])[0]
    );
    // Nothing left for any cashback rule this month; points still accrue,
    // and the base rate says it was capped to nothing.
    let (_, records) = h.apply(&purchase("f3", A, "1000.00", "5999", "2026-11-12T10:00:00+03:00", ""));
    assert_eq!(
        records.iter().map(|r| (r.rule_id(), r.kind.name(), r.amount.to_string())).collect::<Vec<_>>(),
        [("points-base", "earn", "100".to_string()), ("base-1pct", "capped", "0.00".to_string())]
    );
    let capped = &records[1];
    assert_eq!(capped.accrual_id(), "f3:base-1pct:capped");
    assert_eq!((capped.balance_after.to_string(), capped.category()), ("5000.00".to_string(), ""));
    assert!(
        capped.explanation().ends_with(
            "= 10; capped by cashback-monthly (All cashback per calendar month, 2026-11): 0.00 paid, \
             0.00 of 5000.00 left before, 0.00 after"
        ),
        "{}",
        capped.explanation()
    );
    assert_eq!(h.available(A, "cashback"), d("5000.00"));
}

#[test]
fn partner_rate_wins_and_is_capped_per_purchase() {
    let mut h = h();
    let partner = r#","partner_id":"MEGAMART""#;
    assert_eq!(
        h.run(&purchase("m1", A, "5000.00", "5411", "2026-11-10T10:00:00+03:00", partner)),
        recs(&[("partner-10pct", "earn", "500.00"), ("points-base", "earn", "500")])
    );
    assert_eq!(
        h.run(&purchase("m2", A, "15000.00", "5411", "2026-11-10T11:00:00+03:00", partner))[0],
        recs(&[("partner-10pct", "earn", "1000.00")])[0]
    );
    // Recognised by merchant id alone.
    let by_merchant = r#"{"event_id":"m3","type":"purchase","account_id":"acc-1","amount":"100.00","currency":"RUB","mcc":"5311","merchant_id":"M-MEGAMART-002","occurred_at":"2026-11-10T12:00:00+03:00"}"#;
    assert_eq!(h.run(by_merchant)[0], recs(&[("partner-10pct", "earn", "10.00")])[0]);
}

#[test]
fn excluded_mccs_earn_nothing_from_any_rule() {
    let mut h = h();
    for (i, mcc) in ["6011", "6051", "4829", "6536", "6540", "4814", "4900", "9311", "6211", "7995", "7801"]
        .iter()
        .enumerate()
    {
        let (outcome, records) =
            h.apply(&purchase(&format!("x{i}"), A, "5000.00", mcc, "2026-11-10T10:00:00+03:00", ""));
        assert_eq!(outcome, Outcome::NoEffect(NoEffect::Excluded), "MCC {mcc}");
        assert!(records.is_empty());
    }
    // Even at a partner, and even with no minimum on the partner rule.
    let (outcome, _) = h.apply(&purchase(
        "x-partner",
        A,
        "5000.00",
        "6051",
        "2026-11-10T11:00:00+03:00",
        r#","partner_id":"MEGAMART""#,
    ));
    assert_eq!(outcome, Outcome::NoEffect(NoEffect::Excluded));
    assert_eq!(h.available(A, "cashback"), d("0"));
    assert_eq!(h.available(A, "points"), d("0"));
}

#[test]
fn category_list_changes_at_local_midnight() {
    let mut h = h();
    // 8011 joins the pharmacy list on 2026-12-01 00:00 Moscow = 2026-11-30 21:00 UTC.
    assert_eq!(
        h.run(&purchase("c1", A, "1000.00", "8011", "2026-11-30T20:59:59.999Z", ""))[0],
        recs(&[("base-1pct", "earn", "10.00")])[0]
    );
    assert_eq!(
        h.run(&purchase("c2", A, "1000.00", "8011", "2026-11-30T21:00:00Z", ""))[0],
        recs(&[("pharmacy-2pct", "earn", "20.00")])[0]
    );
    assert_eq!(
        h.run(&purchase("c3", A, "1000.00", "5912", "2026-11-30T20:00:00Z", ""))[0],
        recs(&[("pharmacy-2pct", "earn", "20.00")])[0]
    );
}

#[test]
fn double_points_on_fridays_in_december_local_time() {
    let mut h = h();
    // Friday 00:30 in Moscow is still Thursday in UTC.
    assert_eq!(
        h.run(&purchase("d1", A, "1234.56", "5999", "2026-12-03T21:30:00Z", "")),
        recs(&[
            ("base-1pct", "earn", "12.00"),
            ("points-base", "earn", "123"),
            ("december-fridays", "earn", "123")
        ])
    );
    let (_, records) = h.apply(&purchase("d1b", A, "55.00", "5999", "2026-12-25T12:00:00+03:00", ""));
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].explanation(), "2x points-base (5), extra 1x = 5");
    for (id, at) in [
        ("thursday", "2026-12-03T23:59:59+03:00"),
        ("november-friday", "2026-11-27T12:00:00+03:00"),
        ("after-campaign", "2027-01-01T12:00:00+03:00"),
    ] {
        assert_eq!(
            h.run(&purchase(id, A, "1234.56", "5999", at, "")),
            recs(&[("base-1pct", "earn", "12.00"), ("points-base", "earn", "123")]),
            "{id}"
        );
    }
}

#[test]
fn partial_refund_claws_back_proportionally_and_restores_the_cap() {
    let mut h = h();
    assert_eq!(
        h.run(&purchase("g1", A, "60000.00", "5411", "2026-11-03T10:00:00+03:00", ""))[0],
        recs(&[("groceries-5pct", "earn", "3000.00")])[0]
    );
    assert_eq!(
        h.run(&purchase("g2", A, "10000.00", "5411", "2026-11-04T10:00:00+03:00", ""))[0],
        recs(&[("base-1pct", "earn", "100.00")])[0]
    );
    let (outcome, records) = h.apply(&refund("r1", A, "g1", "20000.00", "2026-11-05T10:00:00+03:00"));
    assert_eq!(outcome, Outcome::Applied(2));
    assert_eq!(
        records
            .iter()
            .map(|r| (r.rule_id().to_string(), r.kind.name(), r.amount.to_string()))
            .collect::<Vec<_>>(),
        recs(&[("groceries-5pct", "clawback", "1000.00"), ("points-base", "clawback", "2000")])
    );
    assert_eq!(records[0].accrual_id(), "r1:groceries-5pct:clawback");
    assert_eq!(records[0].balance_after.to_string(), "2100.00");
    // 1000 of the grocery cap is free again.
    assert_eq!(
        h.run(&purchase("g3", A, "10000.00", "5411", "2026-11-06T10:00:00+03:00", ""))[0],
        recs(&[("groceries-5pct", "earn", "500.00")])[0]
    );
    assert_eq!(h.available(A, "cashback"), d("2600.00"));
    // 6000 + 1000 - 2000 + 1000
    assert_eq!(h.available(A, "points"), d("6000"));
}

#[test]
fn refunding_a_purchase_that_crossed_the_cap() {
    let mut h = h();
    h.run(&purchase("g1", A, "50000.00", "5411", "2026-11-05T10:00:00+03:00", ""));
    assert_eq!(
        h.run(&purchase("g2", A, "20000.00", "5411", "2026-11-06T10:00:00+03:00", ""))[0],
        recs(&[("groceries-5pct", "earn", "500.00")])[0]
    );
    assert_eq!(
        h.run(&refund("r1", A, "g2", "10000.00", "2026-11-07T10:00:00+03:00")),
        recs(&[("groceries-5pct", "clawback", "250.00"), ("points-base", "clawback", "1000")])
    );
    // The 250 given back to the cap is earned again, and no more.
    assert_eq!(
        h.run(&purchase("g3", A, "10000.00", "5411", "2026-11-08T10:00:00+03:00", ""))[0],
        recs(&[("groceries-5pct", "earn", "250.00")])[0]
    );
    assert_eq!(
        h.run(&refund("r2", A, "g2", "10000.00", "2026-11-09T10:00:00+03:00")),
        recs(&[("groceries-5pct", "clawback", "250.00"), ("points-base", "clawback", "1000")])
    );
    let (outcome, _) = h.apply(&refund("r3", A, "g2", "1.00", "2026-11-09T11:00:00+03:00"));
    assert_eq!(outcome, Outcome::NoEffect(NoEffect::AlreadyRefunded));
    assert_eq!(h.available(A, "cashback"), d("2750.00"));
}

#[test]
fn successive_partial_refunds_add_up_to_exactly_what_was_earned() {
    let mut h = h();
    assert_eq!(
        h.run(&purchase("p", A, "333.33", "5411", "2026-11-03T10:00:00+03:00", "")),
        recs(&[("groceries-5pct", "earn", "16.66"), ("points-base", "earn", "33")])
    );
    let expected = [("5.56", "11"), ("5.55", "11"), ("5.55", "11")];
    for (i, (cash, points)) in expected.iter().enumerate() {
        assert_eq!(
            h.run(&refund(&format!("r{i}"), A, "p", "111.11", "2026-11-04T10:00:00+03:00")),
            recs(&[("groceries-5pct", "clawback", cash), ("points-base", "clawback", points)]),
            "refund {i}"
        );
    }
    assert_eq!(h.available(A, "cashback"), d("0"));
    assert_eq!(h.available(A, "points"), d("0"));
}

#[test]
fn reversal_takes_back_the_rest_and_odd_refunds_are_harmless() {
    let mut h = h();
    h.run(&purchase("p", A, "1000.00", "5411", "2026-11-03T10:00:00+03:00", ""));
    assert_eq!(
        h.run(&refund("r1", A, "p", "250.00", "2026-11-03T11:00:00+03:00")),
        recs(&[("groceries-5pct", "clawback", "12.50"), ("points-base", "clawback", "25")])
    );
    assert_eq!(
        h.run(&reversal("v1", A, "p", "2026-11-03T12:00:00+03:00")),
        recs(&[("groceries-5pct", "clawback", "37.50"), ("points-base", "clawback", "75")])
    );
    assert_eq!(
        h.apply(&refund("r2", A, "unknown", "10.00", "2026-11-03T13:00:00+03:00")).0,
        Outcome::NoEffect(NoEffect::OriginalNotFound)
    );
    // A refund larger than the purchase refunds what is left.
    h.run(&purchase("q", A, "200.00", "5411", "2026-11-03T14:00:00+03:00", ""));
    assert_eq!(
        h.run(&refund("r3", A, "q", "5000.00", "2026-11-03T15:00:00+03:00"))[0],
        recs(&[("groceries-5pct", "clawback", "10.00")])[0]
    );
    assert_eq!(h.available(A, "cashback"), d("0"));
}

#[test]
fn foreign_currency_is_rejected_and_changes_nothing() {
    let mut h = h();
    h.run(&purchase("p", A, "1000.00", "5411", "2026-11-03T10:00:00+03:00", ""));
    let before = h.accounts.get(A).cloned();
    let usd = purchase("u", A, "10.00", "5411", "2026-11-04T10:00:00+03:00", "").replace("RUB", "USD");
    let (outcome, records) = h.apply(&usd);
    assert!(matches!(outcome, Outcome::Rejected(Rejection::Currency { .. })));
    assert!(records.is_empty());
    assert_eq!(h.accounts.get(A).cloned(), before);
}

#[test]
fn every_record_names_the_rules_version_and_event_time() {
    let mut h = h();
    let version = h.core.rules().version.to_string();
    assert_eq!(version.len(), 16);
    let (_, records) = h.apply(&purchase("p", A, "500.00", "5411", "2026-11-03T10:00:00+03:00", ""));
    for r in &records {
        assert_eq!(r.rules_version(), version);
        assert_eq!(r.occurred_at.to_string(), "2026-11-03T07:00:00Z");
        assert_eq!(r.account_id(), A);
        assert_eq!(r.source_event_id(), "p");
    }
}
