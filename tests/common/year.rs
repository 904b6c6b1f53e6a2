//! The scripted year (`tests/data/year.ndjson`) and its expected records,
//! worked out by hand; see `tests/lifecycle_year.rs`.

/// (source event, kind, rule, amount, available after, pending after; for
/// a record about the account, every program's)
pub const EXPECTED: [(&str, &str, &str, &str, &str, &str); 29] = [
    ("y01", "earn", "welcome", "500", "500", "0"),
    ("y02", "category_choice", "category_choice", "0", "points 500", "points 0"),
    // January groceries: no choice for January, so the 1% base rate.
    ("y03", "earn", "base-1pct", "20.00", "0.00", "20.00"),
    ("y03", "earn", "points-base", "20", "500", "20"),
    // February groceries: chosen, 5%.
    ("y04", "earn", "chosen-5pct", "150.00", "0.00", "170.00"),
    ("y04", "earn", "points-base", "30", "500", "50"),
    // The statement date (the 15th) releases the points.
    ("c02", "release", "points-base", "20", "520", "30"),
    ("c02", "release", "points-base", "30", "550", "0"),
    // 30 days after y03 its cashback releases.
    ("c03", "release", "base-1pct", "20.00", "20.00", "150.00"),
    // Refund of a third of y04: its cashback is still pending (cancelled),
    // its points were released (clawed back).
    ("y05", "cancel", "chosen-5pct", "50.00", "20.00", "100.00"),
    ("y05", "clawback", "points-base", "10", "540", "0"),
    // 500 points spent from the oldest lot (the welcome bonus), at 0.50.
    ("y06", "redeem", "redemption", "500", "40", "0"),
    ("c04", "release", "chosen-5pct", "100.00", "120.00", "0.00"),
    // An authorisation: pending; Q1 spend reaches 54,000 (net of the refund): silver.
    ("y08", "earn", "base-1pct", "500.00", "120.00", "500.00"),
    ("y08", "earn", "points-base", "500", "40", "500"),
    ("y08", "tier_changed", "tier", "0", "cashback 120.00; points 40", "cashback 500.00; points 500"),
    // Statement day now the 1st: points release on 1 April.
    ("c05", "release", "points-base", "500", "540", "0"),
    // Cleared on 22 March; released 30 days after the purchase.
    ("c06", "release", "base-1pct", "500.00", "620.00", "0.00"),
    // Silver: 1.5 points per 100.
    ("y10", "earn", "base-1pct", "10.00", "620.00", "10.00"),
    ("y10", "earn", "points-base", "10", "540", "10"),
    ("y10", "earn", "silver-points", "5", "540", "15"),
    // Before the redemption, what fell due meanwhile.
    ("y11", "release", "points-base", "10", "550", "5"),
    ("y11", "release", "silver-points", "5", "555", "0"),
    ("y11", "release", "base-1pct", "10.00", "630.00", "0.00"),
    ("y11", "redeem", "redemption", "620.00", "10.00", "0.00"),
    // Q2 spend 1,000: silver lost when Q2 ends.
    ("c07", "tier_changed", "tier", "0", "cashback 10.00; points 555", "cashback 0.00; points 0"),
    // Idle months: January's points are warned about, then burn.
    ("c09", "expiry_warning", "expiry", "20", "555", "0"),
    ("c09", "expiry_warning", "expiry", "20", "555", "0"),
    ("c09", "expire", "expiry", "20", "535", "0"),
];

/// The records of an NDJSON output in the brief form of [`EXPECTED`].
pub fn brief(lines: &[String]) -> Vec<(String, String, String, String, String, String)> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("record JSON");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            // A record about the account carries every balance instead.
            let all = |k: &str| {
                let balances = v["balances"].as_array().into_iter().flatten();
                let each: Vec<String> = balances
                    .map(|b| format!("{} {}", b["program"].as_str().unwrap(), b[k].as_str().unwrap()))
                    .collect();
                each.join("; ")
            };
            let (available, pending) = match v["program"].is_null() {
                true => (all("available"), all("pending")),
                false => (s("balance_after"), s("pending_after")),
            };
            (s("source_event_id"), s("kind"), s("rule_id"), s("amount"), available, pending)
        })
        .collect()
}

pub fn expected() -> Vec<(String, String, String, String, String, String)> {
    EXPECTED
        .iter()
        .map(|(a, b, c, d, e, f)| {
            (a.to_string(), b.to_string(), c.to_string(), d.to_string(), e.to_string(), f.to_string())
        })
        .collect()
}
