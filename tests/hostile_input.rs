//! Hostile input through `simulate` (in the profile the suite builds, with
//! overflow checks on): no panic, every line accounted for, no
//! `accrual_id` twice, and far-future events change nothing.

mod common;

use accrual::datagen::GenOptions;
use accrual::simulate::{self, SimulateOptions, Summary};
use common::repo_path;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every reason a dead letter may carry.
fn known_reasons() -> BTreeSet<&'static str> {
    accrual::events::DecodeError::REASONS
        .into_iter()
        .chain(accrual::accrue::Rejection::REASONS)
        .chain(accrual::pipeline::Refusal::REASONS)
        .chain([accrual::pipeline::INTERNAL_ERROR])
        .collect()
}

struct Run {
    summary: Summary,
    records: Vec<serde_json::Value>,
    dead: Vec<serde_json::Value>,
}

fn simulate(dir: &Path, name: &str, lines: &[Vec<u8>], rules: &str) -> Run {
    let input = dir.join(format!("{name}.ndjson"));
    let out = dir.join(format!("{name}.out"));
    let dlq = dir.join(format!("{name}.dlq"));
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let summary = simulate::run(&SimulateOptions {
        rules: repo_path(rules),
        input,
        out: Some(out.clone()),
        dlq: Some(dlq.clone()),
        state_dir: Some(dir.join(format!("{name}.state"))),
        batch_size: 97,
        show_progress: false,
        now: Some(common::hostile_now()),
    })
    .expect("simulate runs to the end");
    let parse = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    Run { summary, records: parse(&out), dead: parse(&dlq) }
}

fn hostile_corpus(valid: u64, hostile: u64, seed: u64) -> Vec<Vec<u8>> {
    let opts = GenOptions {
        events: valid,
        accounts: 80,
        skew: 0.5,
        seed,
        days: 30,
        refund_percent: 4.0,
        reversal_percent: 2.0,
        duplicate_percent: 2.0,
        malformed_percent: 1.0,
        hostile,
        ..GenOptions::default()
    };
    let mut text = Vec::new();
    accrual::datagen::generate(&opts, &mut text).unwrap();
    text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

#[test]
fn every_hostile_line_is_accounted_for_and_nothing_is_paid_twice() {
    let known = known_reasons();
    for (rules, seed) in [("config/rules.example.toml", 11), ("config/rules.lifecycle.toml", 12)] {
        let dir = tempfile::tempdir().unwrap();
        let lines = hostile_corpus(1_500, 2_200, seed);
        let run = simulate(dir.path(), "hostile", &lines, rules);
        let s = &run.summary.stats;

        // Every line that is not blank is one input, and ends one way.
        let blank = lines.iter().filter(|l| l.iter().all(u8::is_ascii_whitespace)).count() as u64;
        assert_eq!(s.inputs + blank, lines.len() as u64, "{rules}");
        assert_eq!(run.summary.blank_lines, blank, "{rules}: blank lines are counted, as no input");
        assert_eq!(s.accrued + s.no_effect + s.duplicates + s.dead_letters, s.inputs, "{rules}: {s:?}");
        assert_eq!(run.dead.len() as u64, s.dead_letters, "every dead letter is written with its line");
        for d in &run.dead {
            let reason = d["reason"].as_str().unwrap();
            assert!(known.contains(reason), "unknown reason {reason}");
            assert!(!d["detail"].as_str().unwrap().is_empty(), "{d}");
        }

        // No accrual id twice.
        let mut ids = BTreeSet::new();
        for r in &run.records {
            let id = r["accrual_id"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "{rules}: accrual_id {id} twice");
        }

        // The hostile kinds reached the checks meant for them.
        let by_reason: BTreeMap<&str, usize> = run.dead.iter().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d["reason"].as_str().unwrap()).or_default() += 1;
            m
        });
        for reason in [
            "future_event_time",
            "too_late",
            "too_large",
            "malformed_json",
            "not_utf8",
            "invalid_amount",
            "invalid_timestamp",
            "duplicate_field",
            "unknown_type",
            "wrong_type",
            "invalid_field",
        ] {
            assert!(by_reason.get(reason).copied().unwrap_or(0) > 0, "{rules}: no {reason} in {by_reason:?}");
        }
        assert!(s.duplicates > 0 && s.accrued > 500, "{rules}: {s:?}");
    }
}

/// Three accounts buying daily for 20 days: pending holds, lots and a
/// tier in the making.
fn lifecycle_stream() -> Vec<String> {
    let mut lines = Vec::new();
    for day in 1..=20u32 {
        let at = format!("2026-03-{day:02}T10:00:00+03:00");
        for account in ["a-1", "a-2", "a-3"] {
            lines.push(format!(
                r#"{{"event_id":"p-{account}-{day}","type":"purchase","account_id":"{account}","amount":"{}.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"{at}"}}"#,
                1_000 + 700 * day
            ));
        }
    }
    lines
}

/// Holds, lots and tiers (the lifecycle program): one far-future purchase,
/// statement cycle and clock, and a far-future replay, mixed into a stream,
/// change nothing: every record and balance is as without them, each is a
/// dead letter, and a later exact copy of an earlier event is still a
/// duplicate.
#[test]
fn far_future_events_neither_switch_dedupe_off_nor_burn_balances() {
    let rules = "config/rules.lifecycle.toml";
    let clean = lifecycle_stream();
    let mut hostile = clean.clone();
    let future = [
        r#"{"event_id":"f-1","type":"purchase","account_id":"a-9","amount":"10.00","currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"2099-01-01T00:00:00Z"}"#.to_string(),
        r#"{"event_id":"f-2","type":"statement_cycle","account_id":"a-1","statement_day":5,"occurred_at":"2099-01-01T00:00:00Z"}"#.to_string(),
        r#"{"event_id":"f-3","type":"clock","occurred_at":"2099-01-01T00:00:00Z"}"#.to_string(),
        clean[3].replace("2026-03-02", "2099-03-02").replace("p-a-1-2", "p-a-1-2-again"),
    ];
    for (i, line) in future.iter().enumerate() {
        hostile.insert(10 + 5 * i, line.clone());
    }
    // Exact copies of earlier events, after all of it.
    let copies = [clean[0].clone(), clean[50].clone()];
    hostile.extend(copies.iter().cloned());

    let dir = tempfile::tempdir().unwrap();
    let as_bytes = |lines: &[String]| lines.iter().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>();
    let before = simulate(dir.path(), "clean", &as_bytes(&clean), rules);
    let after = simulate(dir.path(), "hostile", &as_bytes(&hostile), rules);

    let reasons: Vec<&str> = after.dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    // The copy of the first event is older than the 7-day dedupe window by
    // now (too_late); the copy of a recent one is a duplicate. Neither pays.
    assert_eq!(reasons, ["future_event_time"; 4].into_iter().chain(["too_late"]).collect::<Vec<_>>());
    assert_eq!(after.summary.stats.duplicates, 1, "{:?}", after.summary.stats);
    assert_eq!(after.records, before.records, "the far-future lines changed records");

    for account in ["a-1", "a-2", "a-3"] {
        let balance = |run: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_accrual"))
                .args(["inspect", "balance", "--rules"])
                .arg(repo_path(rules))
                .arg("--state-dir")
                .arg(dir.path().join(format!("{run}.state")))
                .args(["--account", account])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(balance("hostile"), balance("clean"), "{account}'s holds, lots or tier changed");
    }
}
