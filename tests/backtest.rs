//! `accrual backtest` over a file: the check (the example program
//! against a candidate with groceries at 6%, per-rule differences equal to
//! two `simulate` runs diffed, as a table and as JSON), the CSV form, and
//! starting from a copy of a state directory that is never written to.

mod common;

use common::repo_path;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const NOW: &str = "2027-01-01T00:00:00Z";

fn accrual(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_accrual")).args(args).output().expect("runs the binary");
    assert!(out.status.success(), "accrual {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The example rules with groceries at 6% instead of 5%.
fn candidate(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    let changed = text.replacen("effect = { percent = \"5\" }", "effect = { percent = \"6\" }", 1);
    assert_ne!(changed, text, "the groceries rate is in the example");
    let path = dir.join("candidate.toml");
    std::fs::write(&path, changed).unwrap();
    path
}

/// `simulate`'s "payout by rule" table: (program, rule) -> net.
fn simulated_nets(
    rules: &Path,
    input: &Path,
    state_dir: Option<&Path>,
) -> BTreeMap<(String, String), String> {
    let mut args = vec!["simulate", "--rules", s(rules), "--input", s(input), "--now", NOW, "--quiet"];
    if let Some(dir) = state_dir {
        args.extend(["--state-dir", s(dir)]);
    }
    let text = stdout(&accrual(&args));
    let table = text.split("payout by rule:\n").nth(1).expect("a rule table").split("\n\n").next().unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            ((cols[1].to_string(), cols[0].to_string()), cols[4].to_string())
        })
        .collect()
}

fn dec(text: &str) -> rust_decimal::Decimal {
    text.trim_start_matches('+').parse().unwrap()
}

/// The report's per-rule rows: (program, rule) -> (baseline net, candidate net, difference).
fn json_rules(report: &Value) -> BTreeMap<(String, String), (String, String, String)> {
    let rows = report["by_rule"].as_array().expect("by_rule");
    rows.iter()
        .map(|r| {
            let key = (r["program"].as_str().unwrap().to_string(), r["name"].as_str().unwrap().to_string());
            let net = |side: &str| r[side]["net"].as_str().unwrap().to_string();
            (key, (net("baseline"), net("candidate"), r["difference"].as_str().unwrap().to_string()))
        })
        .collect()
}

fn generate(path: &Path, events: &str) {
    accrual(&["gen", "--events", events, "--accounts", "400", "--seed", "11", "--out", s(path)]);
}

#[test]
fn the_difference_per_rule_is_two_simulate_runs_diffed() {
    let dir = tempfile::tempdir().unwrap();
    let (events, baseline) = (dir.path().join("ev.ndjson"), repo_path("config/rules.example.toml"));
    generate(&events, "20000");
    let candidate = candidate(dir.path());
    let base = ["backtest", "--baseline", s(&baseline), "--candidate", s(&candidate), "--input", s(&events)];
    let with = |extra: &[&str]| stdout(&accrual(&[&base[..], &["--now", NOW, "--quiet"], extra].concat()));

    let report: Value = serde_json::from_str(&with(&["--format", "json"])).expect("JSON");
    let rows = json_rules(&report);
    let (a, b) = (simulated_nets(&baseline, &events, None), simulated_nets(&candidate, &events, None));
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        a.keys().collect::<Vec<_>>(),
        "every rule, those that paid nothing too"
    );
    for (key, (net_a, net_b, difference)) in &rows {
        assert_eq!((net_a, net_b), (&a[key], &b[key]), "{key:?}: each side is what simulate reports");
        assert_eq!(dec(difference), dec(&b[key]) - dec(&a[key]), "{key:?}");
    }
    let groceries = &rows[&("cashback".to_string(), "groceries-5pct".to_string())];
    assert!(dec(&groceries.2) > rust_decimal::Decimal::ZERO, "6% pays more: {groceries:?}");
    assert!(
        rows.contains_key(&("points".to_string(), "december-fridays".to_string())),
        "a rule that paid nothing"
    );

    // The table shows the same numbers.
    let table = with(&[]);
    for ((program, rule), (net_a, net_b, difference)) in &rows {
        let line = table.lines().find(|l| l.trim_start().starts_with(&format!("{rule} "))).expect(rule);
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[1], cols[2], cols[3]), (program.as_str(), net_a.as_str(), net_b.as_str()), "{line}");
        assert_eq!(dec(cols[4]), dec(difference), "{line}");
    }
    for section in
        ["payout by program", "category that paid", "by partner", "accounts most affected", "caps that cut"]
    {
        assert!(table.contains(section), "{section} in {table}");
    }

    // By category: the groceries category carries the whole change of the
    // groceries rule's earnings; the accounts most affected are ordered.
    let category = report["by_category"].as_array().unwrap();
    let groceries =
        category.iter().find(|r| r["name"] == "groceries" && r["program"] == "cashback").expect("groceries");
    assert!(dec(groceries["difference"].as_str().unwrap()) > rust_decimal::Decimal::ZERO);
    let accounts = report["accounts"].as_array().unwrap();
    assert!(!accounts.is_empty() && accounts.len() <= 20, "10 per program at most: {}", accounts.len());
    let changes: Vec<_> = accounts
        .iter()
        .filter(|r| r["program"] == "cashback")
        .map(|r| dec(r["difference"].as_str().unwrap()).abs())
        .collect();
    assert!(changes.windows(2).all(|w| w[0] >= w[1]), "most affected first: {changes:?}");
    assert!(!report["caps"].as_array().unwrap().is_empty(), "caps cut rewards in a month of spending");

    // CSV: the same per-rule differences.
    let csv = with(&["--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("section,program,name,unit,baseline,candidate,difference,baseline_earns,candidate_earns")
    );
    let csv_rules: BTreeMap<(String, String), String> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[0] == "rule")
        .map(|c| ((c[1].to_string(), c[2].to_string()), c[6].to_string()))
        .collect();
    assert_eq!(csv_rules, rows.iter().map(|(k, v)| (k.clone(), v.2.clone())).collect());
}

#[test]
fn records_carry_the_mcc_and_the_category_that_paid() {
    let dir = tempfile::tempdir().unwrap();
    let (events, out) = (dir.path().join("ev.ndjson"), dir.path().join("out.ndjson"));
    generate(&events, "3000");
    let rules = repo_path("config/rules.example.toml");
    accrual(&[
        "simulate",
        "--rules",
        s(&rules),
        "--input",
        s(&events),
        "--now",
        NOW,
        "--quiet",
        "--out",
        s(&out),
    ]);
    let records: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let earns: Vec<&Value> = records.iter().filter(|r| r["kind"] == "earn").collect();
    assert!(
        earns.iter().all(|r| r["mcc"].as_str().is_some_and(|m| m.len() == 4)),
        "every earn names its MCC"
    );
    let groceries: Vec<&&Value> = earns.iter().filter(|r| r["rule_id"] == "groceries-5pct").collect();
    assert!(!groceries.is_empty());
    assert!(groceries.iter().all(|r| r["category"] == "groceries"), "the category that paid");
    assert!(earns.iter().filter(|r| r["rule_id"] == "points-base").all(|r| r["category"].is_null()));
    let others: Vec<&Value> =
        records.iter().filter(|r| r["kind"] == "release" || r["kind"] == "clawback").collect();
    assert!(others.iter().all(|r| r.get("mcc").is_none()), "only a purchase's rewards carry it");
}

/// Every file of a directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_backtest_from_a_state_copy_continues_it_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.ndjson");
    generate(&events, "8000");
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = (dir.path().join("first.ndjson"), dir.path().join("second.ndjson"));
    std::fs::write(&first, lines[..5000].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[5000..].join("\n") + "\n").unwrap();
    let baseline = repo_path("config/rules.example.toml");
    let candidate = candidate(dir.path());

    // "Production" state after the first part.
    let production = dir.path().join("production");
    simulated_nets(&baseline, &first, Some(&production));
    let before = snapshot(&production);

    // The baseline continued over the second part, on a copy.
    let continued = dir.path().join("continued");
    copy_dir(&production, &continued);
    let expected = simulated_nets(&baseline, &second, Some(&continued));

    let out = accrual(&[
        "backtest",
        "--baseline",
        s(&baseline),
        "--candidate",
        s(&candidate),
        "--input",
        s(&second),
        "--from-state",
        s(&production),
        "--format",
        "json",
        "--now",
        NOW,
        "--quiet",
    ]);
    let rows = json_rules(&serde_json::from_str(&stdout(&out)).unwrap());
    for (key, (net_a, _, _)) in &rows {
        assert_eq!(net_a, &expected[key], "{key:?}: the baseline side continues the state");
    }
    // A fresh start differs: the state's caps and balances carried over.
    let fresh = simulated_nets(&baseline, &second, None);
    assert_ne!(fresh, expected, "starting from the state matters for this data");
    assert_eq!(snapshot(&production), before, "the state directory is not written to");
    // And simulate itself refuses to continue a state under other rules.
    let refused = Command::new(env!("CARGO_BIN_EXE_accrual"))
        .args(["simulate", "--rules", s(&candidate), "--input", s(&second), "--state-dir", s(&production)])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("accrual backtest --from-state"));
}

#[test]
fn a_file_is_refused_over_a_state_of_other_partitions() {
    use accrual::store::{Progress, Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.ndjson");
    generate(&events, "100");
    // A production instance's state: progress in partition 3.
    let state = dir.path().join("state");
    {
        let store = Store::open(&state, &StoreOptions::default()).unwrap();
        let mut batch = store.batch();
        batch.set_progress(3, Progress { next_offset: 10, ..Progress::default() }, 0);
        store.commit(batch).unwrap();
    }
    let rules = repo_path("config/rules.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_accrual"))
        .args(["backtest", "--baseline", s(&rules), "--candidate", s(&rules), "--input", s(&events)])
        .args(["--from-state", s(&state), "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds partitions [3]") && err.contains("--topic"), "{err}");
}
