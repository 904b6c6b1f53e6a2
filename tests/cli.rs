//! The `accrual` binary as a data engineer uses it: the commands from the
//! README and the issue's acceptance checks.

mod common;

use common::repo_path;
use std::process::{Command, Output};

fn accrual(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accrual")).args(args).output().expect("runs the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn gen_then_simulate_twice_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("ev.ndjson");
    let generated = accrual(&[
        "gen",
        "--events",
        "100000",
        "--accounts",
        "5000",
        "--seed",
        "7",
        "--out",
        ev.to_str().unwrap(),
    ]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let rules = repo_path("config/rules.example.toml");
    let mut outputs = Vec::new();
    for run in 0..2 {
        let out = dir.path().join(format!("acc-{run}.ndjson"));
        let sim = accrual(&[
            "simulate",
            "--rules",
            rules.to_str().unwrap(),
            "--input",
            ev.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(sim.status.success(), "{}", text(&sim.stderr));
        let summary = text(&sim.stdout);
        assert!(summary.contains("payout by rule:"), "{summary}");
        for rule in ["base-1pct", "groceries-5pct", "fuel-3pct", "partner-10pct", "points-base"] {
            assert!(summary.lines().any(|l| l.trim_start().starts_with(rule)), "{rule} in {summary}");
        }
        assert!(summary.contains("events: 100000 read"), "{summary}");
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs[0].len() > 1_000_000);
    assert!(outputs[0] == outputs[1], "two runs differ");
}

#[test]
fn gen_is_deterministic_on_stdout() {
    let a = accrual(&["gen", "--events", "500", "--seed", "3", "--malformed", "5"]);
    let b = accrual(&["gen", "--events", "500", "--seed", "3", "--malformed", "5"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout.iter().filter(|&&c| c == b'\n').count(), 500);
}

#[test]
fn check_config_accepts_the_example_and_summarises_it() {
    let out = accrual(&["check-config", repo_path("config/rules.example.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("rules.example.toml: OK"), "{shown}");
    assert!(shown.contains("rules version"), "{shown}");
    assert!(shown.contains("december-fridays"), "{shown}");
}

#[test]
fn check_config_names_file_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    let cases = [
        // A typo'd key in a rule.
        (
            example.replace(
                r#"group = "cashback-rate"
priority = 10
when = { categories = ["fuel"]"#,
                r#"group = "cashback-rate"
priorty = 10
when = { categories = ["fuel"]"#,
            ),
            r#"rule "fuel-3pct": field `priorty`: unknown field `priorty`"#,
        ),
        // An unknown category.
        (
            example.replace(r#"categories = ["fuel"]"#, r#"categories = ["fuels"]"#),
            r#"rule "fuel-3pct": field `when.categories`: unknown category "fuels""#,
        ),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = accrual(&["check-config", path.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{}: {expected}", path.display())), "{err}");
    }
    let missing = accrual(&["check-config", "/nonexistent/rules.toml"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nonexistent/rules.toml: cannot read"));
}

#[test]
fn simulate_survives_the_malformed_corpus() {
    let out = accrual(&[
        "simulate",
        "--rules",
        repo_path("config/rules.example.toml").to_str().unwrap(),
        "--input",
        repo_path("tests/data/malformed.ndjson").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("line 1: malformed_json"), "{shown}");
    assert!(shown.contains("line 17: invalid_amount: field `amount` is negative"), "{shown}");
    assert!(shown.contains("... 25 more"), "the first 20 are listed: {shown}");
    assert!(shown.contains("0 accrued"), "{shown}");
}

#[test]
fn inspect_balance_shows_available_pending_expiring_and_tier() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rules = repo_path("config/rules.lifecycle.toml");
    let sim = accrual(&[
        "simulate",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        repo_path("tests/data/year.ndjson").to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--quiet",
        // The year runs into 2027: received as of after its last event.
        "--now",
        "2028-01-01T00:00:00Z",
    ]);
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    assert!(text(&sim.stdout).contains("points     expire"), "payouts per kind: {}", text(&sim.stdout));
    let out = accrual(&[
        "inspect",
        "balance",
        "--state-dir",
        state.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--account",
        "year-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for expected in [
        "tier: none",
        "points: available 535 PTS, pending 0, earned 1065, redeemed 500, expired 20, owed 0",
        "20 expire at 2027-02-05T21:00:00Z",
        "cashback: available 10.00 RUB",
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    let missing = accrual(&[
        "inspect",
        "balance",
        "--state-dir",
        state.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--account",
        "nobody",
    ]);
    assert!(!missing.status.success());
}

#[test]
fn tick_refuses_a_clock_beyond_the_rules_bound_before_sending_it() {
    // Nothing listens on the discard port: the refusal comes first.
    let out = Command::new(env!("CARGO_BIN_EXE_accrual"))
        .current_dir(repo_path(""))
        .env("ACCRUAL_KAFKA__BROKERS", "127.0.0.1:9")
        .args(["tick", "--config", "config/engine.toml", "--at", "2099-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--at 2099-01-01T00:00:00Z is more than max_event_ahead_minutes (60) after now"),
        "{err}"
    );
}

#[test]
fn simulate_refuses_far_future_lines_and_gen_hostile_mixes_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("hostile.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    let generated = accrual(&[
        "gen",
        "--events",
        "2000",
        "--accounts",
        "100",
        "--seed",
        "3",
        "--days",
        "30",
        "--hostile",
        "1000",
        "--out",
        ev.to_str().unwrap(),
    ]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    assert_eq!(std::fs::read(&ev).unwrap().iter().filter(|&&b| b == b'\n').count(), 3_000);
    let rules = repo_path("config/rules.example.toml");
    let sim = accrual(&[
        "simulate",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        ev.to_str().unwrap(),
        "--dlq",
        dlq.to_str().unwrap(),
        "--now",
        "2026-12-05T00:00:00Z",
    ]);
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert!(dead.contains(r#""reason":"future_event_time""#) && dead.contains(r#""reason":"too_late""#));
    let bad_now = accrual(&[
        "simulate",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        ev.to_str().unwrap(),
        "--now",
        "soon",
    ]);
    assert!(!bad_now.status.success());
    assert!(
        text(&bad_now.stderr).contains("--now is not an RFC 3339 timestamp"),
        "{}",
        text(&bad_now.stderr)
    );
}
