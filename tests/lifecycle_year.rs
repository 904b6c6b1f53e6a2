//! A scripted year of one account (`tests/data/year.ndjson`) under the
//! lifecycle example: enrolment, a category choice, purchases (one
//! authorised, then cleared), a partial refund, redemptions, a statement
//! day change, a tier won and lost, clocks carrying time through idle
//! months. The expected records are worked out by hand, in order; the
//! Kafka test (`kafka_lifecycle`) checks the engine against the same list.

mod common;

use accrual::simulate::{self, SimulateOptions};
use common::repo_path;
use common::year::{brief, expected};

#[test]
fn the_scripted_year_produces_exactly_the_expected_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("year-out.ndjson");
    let summary = simulate::run(&SimulateOptions {
        rules: repo_path("config/rules.lifecycle.toml"),
        input: repo_path("tests/data/year.ndjson"),
        out: Some(out.clone()),
        dlq: None,
        state_dir: None,
        batch_size: 3,
        show_progress: false,
        // The year runs into 2027: received after its last event.
        now: Some(common::test_now()),
    })
    .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    assert_eq!(brief(&lines), expected());
    assert_eq!(summary.stats.dead_letters, 0);
    let text: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["explanation"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text[15], "tier none -> silver: 54000.00 in 2026-Q1 reached 30000");
    assert_eq!(text[25], "tier silver -> none: 1000.00 in 2026-Q2, which has ended");
    // The summary reports payouts per record kind.
    let shown = summary.to_string();
    for kind in ["earn", "release", "cancel", "clawback", "redeem", "expire"] {
        assert!(shown.contains(kind), "{kind} in {shown}");
    }
}
