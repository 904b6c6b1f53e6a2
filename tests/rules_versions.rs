//! Versioned rules (issue 30, item 2): a directory of versions, each in
//! force from its `effective_from` instant of event time. "From 1 January,
//! groceries pay 3%" applies to the events from that instant on, whatever
//! order they arrive in, identically in one run and in a run stopped and
//! continued in the middle; a change that would rewrite what a state has
//! already applied is refused; `check-config` shows the timeline and lists
//! every problem of every version at once.

mod common;

use accrual::rules::Timeline;
use accrual::simulate::{self, SimulateError, SimulateOptions};
use accrual::time::Timestamp;
use common::{purchase, repo_path};
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTANT: &str = "2027-01-01T00:00:00";

/// The example program (groceries at 5%) from the beginning, and the same
/// with groceries at 3% from 2027-01-01T00:00 local (+03:00).
fn versions(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let base = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    std::fs::write(rules.join("2026-base.toml"), &base).unwrap();
    std::fs::write(rules.join("2027-groceries.toml"), groceries_at(&base, "3", INSTANT)).unwrap();
    rules
}

/// `base` with groceries at `percent`, in force from `from`.
fn groceries_at(base: &str, percent: &str, from: &str) -> String {
    let changed = base
        .replacen("effect = { percent = \"5\" }", &format!("effect = {{ percent = \"{percent}\" }}"), 1)
        .replacen("[settings]\n", &format!("[settings]\neffective_from = \"{from}\"\n"), 1);
    assert!(changed.contains("percent = \"3\"") || percent != "3", "the groceries rate is in the example");
    changed
}

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2027-02-01T00:00:00Z").unwrap()
}

/// Groceries purchases of 1,000.00 around the instant, one of them late
/// (dated before the instant, arriving after purchases dated after it).
fn events() -> Vec<String> {
    let at = |id: &str, account: &str, time: &str| purchase(id, account, "1000.00", "5411", time, "");
    vec![
        at("dec-30", "a1", "2026-12-30T10:00:00+03:00"),
        at("last-second", "a1", "2026-12-31T23:59:59+03:00"),
        at("first-instant", "a1", "2027-01-01T00:00:00+03:00"),
        at("jan-02", "a2", "2027-01-02T09:00:00+03:00"),
        at("late-dec-31", "a2", "2026-12-31T22:00:00+03:00"),
        at("jan-03", "a1", "2027-01-03T12:00:00+03:00"),
    ]
}

fn simulate(
    rules: &Path,
    lines: &[String],
    dir: &Path,
    name: &str,
    state: Option<&Path>,
) -> Result<Vec<String>, SimulateError> {
    let input = dir.join(format!("{name}.ndjson"));
    let out = dir.join(format!("{name}.out"));
    std::fs::write(&input, lines.join("\n")).unwrap();
    simulate::run(&SimulateOptions {
        rules: rules.to_path_buf(),
        input,
        out: Some(out.clone()),
        dlq: None,
        state_dir: state.map(Path::to_path_buf),
        batch_size: 2,
        show_progress: false,
        now: Some(now()),
    })?;
    Ok(std::fs::read_to_string(out).unwrap().lines().map(str::to_string).collect())
}

/// (event, version, amount) of each groceries record.
fn groceries(records: &[String]) -> Vec<(String, String, String)> {
    records
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|r| r["rule_id"] == "groceries-5pct")
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap().to_string();
            (field("source_event_id"), field("rules_version"), field("amount"))
        })
        .collect()
}

#[test]
fn a_version_applies_to_the_events_from_its_instant_on_in_any_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let rules = versions(dir.path());
    let timeline = Timeline::load(&rules).unwrap();
    let [old, new] = [0, 1].map(|i| timeline.versions()[i].rules.version.to_string());
    assert_ne!(old, new);
    assert_eq!(
        timeline.versions()[1].from,
        Some(Timestamp::parse_rfc3339("2027-01-01T00:00:00+03:00").unwrap()),
        "a local date-time in the program's zone"
    );
    let records = simulate(&rules, &events(), dir.path(), "all", None).unwrap();
    let expected = [
        ("dec-30", &old, "50.00"),
        ("last-second", &old, "50.00"),
        ("first-instant", &new, "30.00"),
        ("jan-02", &new, "30.00"),
        // Late, after January's events: still December's rate.
        ("late-dec-31", &old, "50.00"),
        ("jan-03", &new, "30.00"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(e, v, a)| (e.to_string(), v.to_string(), a.to_string())).collect();
    assert_eq!(groceries(&records), expected);
    // Every record names the version that computed it, points too.
    for line in &records {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let january = r["occurred_at"].as_str().unwrap() >= "2026-12-31T21:00:00Z";
        assert_eq!(r["rules_version"], if january { new.as_str() } else { old.as_str() }, "{line}");
    }
}

#[test]
fn a_run_stopped_in_the_middle_continues_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rules = versions(dir.path());
    let lines = events();
    let whole = simulate(&rules, &lines, dir.path(), "whole", None).unwrap();
    // The state is written under the base version alone, then continued
    // with both (the second version's instant is after all it applied).
    let state = dir.path().join("state");
    let base_only = dir.path().join("base-only");
    std::fs::create_dir_all(&base_only).unwrap();
    std::fs::copy(rules.join("2026-base.toml"), base_only.join("2026-base.toml")).unwrap();
    let first = simulate(&base_only, &lines[..2], dir.path(), "first", Some(&state)).unwrap();
    let rest = simulate(&rules, &lines[2..], dir.path(), "rest", Some(&state)).unwrap();
    assert_eq!([first, rest].concat(), whole, "byte-identical records across the restart");
}

#[test]
fn a_version_behind_the_state_is_refused_with_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let rules = versions(dir.path());
    let state = dir.path().join("state");
    // The state has applied events up to 2027-01-02 09:00.
    simulate(&rules, &events()[..4], dir.path(), "first", Some(&state)).unwrap();
    let base = std::fs::read_to_string(rules.join("2026-base.toml")).unwrap();
    std::fs::write(rules.join("2027-groceries-7.toml"), groceries_at(&base, "7", "2027-01-02T00:00:00"))
        .unwrap();
    let err = simulate(&rules, &events()[4..], dir.path(), "rest", Some(&state)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SimulateError::RulesChanged(..)), "{text}");
    assert!(text.contains("2027-01-01T21:00:00Z") && text.contains("2027-01-02T06:00:00Z"), "{text}");
    // One taking effect after the last event applied is taken.
    std::fs::write(rules.join("2027-groceries-7.toml"), groceries_at(&base, "7", "2027-01-03T00:00:00"))
        .unwrap();
    let rest = simulate(&rules, &events()[4..], dir.path(), "rest", Some(&state)).unwrap();
    let amounts: Vec<String> = groceries(&rest).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(amounts, ["50.00", "70.00"], "the late December event at 5%, January 3rd at 7%");
}

fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_accrual")).arg("check-config").arg(path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn check_config_shows_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let rules = versions(dir.path());
    let (ok, text) = check_config(&rules);
    assert!(ok, "{text}");
    let timeline = Timeline::load(&rules).unwrap();
    let [old, new] = [0, 1].map(|i| timeline.versions()[i].rules.version.to_string());
    assert!(text.contains(&format!("from the beginning: version {old}")), "{text}");
    assert!(
        text.contains(&format!("from 2027-01-01T00:00:00+03:00 (2026-12-31T21:00:00Z): version {new}")),
        "{text}"
    );
    assert!(text.contains("in force from 2027-01-01T00:00:00+03:00"), "{text}");
}

#[test]
fn every_problem_of_every_version_is_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rules = versions(dir.path());
    let base = std::fs::read_to_string(rules.join("2026-base.toml")).unwrap();
    // A second first version, a version that changes the currency and
    // the points' unit, and one with mistakes of its own.
    std::fs::write(rules.join("another-base.toml"), &base).unwrap();
    let euro = groceries_at(&base, "3", "2027-02-01").replace("currency = \"RUB\"", "currency = \"EUR\"");
    let miles = euro.replacen("unit = \"PTS\"", "unit = \"MILES\"", 1);
    std::fs::write(rules.join("2027-euro.toml"), miles).unwrap();
    std::fs::write(
        rules.join("2027-typo.toml"),
        groceries_at(&base, "3", "2027-03-01").replace("priority = 10", "priorty = 10"),
    )
    .unwrap();
    let (ok, text) = check_config(&rules);
    assert!(!ok);
    for expected in [
        "effective_from`: only the first version leaves it out",
        "2027-euro.toml: [settings]: field `currency`: is EUR here but RUB in",
        "2027-euro.toml: program \"points\": changes its kind, unit or decimals",
        "2027-typo.toml: rule \"groceries-5pct\": field `priorty`",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

/// Test programs with a monthly Silver tier from `threshold`, in force
/// from `from` (or from the beginning).
fn tiered(threshold: &str, from: Option<&str>) -> accrual::rules::Rules {
    let text = format!(
        "{}\n[tiers.silver]\nrank = 1\nthreshold = \"{threshold}\"\n\n[tier_qualification]\nmeasure = \"spend\"\n\
         period = \"month\"\n\n[[rules]]\nid = \"base\"\nprogram = \"cashback\"\neffect = {{ percent = \"1\" }}\n",
        common::TEST_PROGRAMS
    );
    let text = match from {
        Some(from) => text.replacen("[settings]\n", &format!("[settings]\neffective_from = \"{from}\"\n"), 1),
        None => text,
    };
    accrual::rules::parse(&text, "tiers.toml").unwrap()
}

/// December's 40,000 won Silver (from 30,000); a version raising it to
/// 50,000 from `from`; the account brought to January 2nd. Returns the
/// tier changes (tier, time, version) and the two versions' hashes.
fn december_closed_with_a_version_from(from: &str) -> (Vec<(String, String, String)>, [String; 2]) {
    let timeline = Timeline::of_versions(vec![
        ("v1.toml".into(), tiered("30000", None)),
        ("v2.toml".into(), tiered("50000", Some(from))),
    ])
    .unwrap();
    let hashes = [0, 1].map(|i| timeline.versions()[i].rules.version.to_string());
    let mut h = common::Harness::new(timeline.first().clone());
    h.core = accrual::accrue::Core::with_timeline(std::sync::Arc::new(timeline));
    let won = h.apply(&purchase("p1", "a1", "40000.00", "5411", "2026-12-10T12:00:00+03:00", "")).1;
    assert!(won.iter().any(|r| r.kind.name() == "tier_changed"), "Silver won in December");
    let due = h.core.next_due(&h.accounts["a1"]);
    assert_eq!(due, Some(Timestamp::parse_rfc3339("2027-01-01T00:00:00+03:00").unwrap()), "December's end");
    let changes = h
        .advance("a1", "2027-01-02T00:00:00+03:00")
        .iter()
        .filter(|r| r.kind.name() == "tier_changed")
        .map(|r| (r.explanation().to_string(), r.occurred_at.to_string(), r.rules_version().to_string()))
        .collect();
    (changes, hashes)
}

#[test]
fn a_period_ending_at_the_instant_is_closed_by_the_rules_it_ran_under() {
    // From January 1st: December closes under its own rules, Silver stays.
    let (changes, _) = december_closed_with_a_version_from("2027-01-01T00:00:00");
    assert_eq!(changes, Vec::new());
    // From December 31st: December ends under the new threshold.
    let (changes, [_, v2]) = december_closed_with_a_version_from("2026-12-31T00:00:00");
    assert_eq!(changes.len(), 1, "{changes:?}");
    let (why, at, version) = &changes[0];
    assert!(why.contains("40000.00 in 2026-12"), "{why}");
    assert_eq!((at.as_str(), version), ("2026-12-31T21:00:00Z", &v2));
}
