//! `accrual backtest --topic`: a topic's range read without joining any
//! group, each message in its own partition as the engine reads it, gives
//! the same report as the same events from a file; `--from`/`--to` as
//! times and as offsets select what they say.

mod common;

use common::generated_lines;
use common::kafka::Setup;
use common::repo_path;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const NOW: &str = "2027-01-01T00:00:00Z";

fn backtest(candidate: &Path, extra: &[&str]) -> Value {
    let baseline = repo_path("config/rules.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_accrual"))
        .args([
            "backtest",
            "--baseline",
            baseline.to_str().unwrap(),
            "--candidate",
            candidate.to_str().unwrap(),
        ])
        .args(["--format", "json", "--quiet", "--now", NOW])
        .args(extra)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The report without where its events came from.
fn comparable(mut report: Value) -> Value {
    report.as_object_mut().unwrap().remove("source");
    report
}

fn occurred_at(line: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let v: Value = serde_json::from_str(line).unwrap();
    chrono::DateTime::parse_from_rfc3339(v["occurred_at"].as_str().unwrap()).unwrap()
}

#[test]
fn a_topic_range_reports_what_the_same_events_from_a_file_do() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new("backtest", 3);
    let opts = accrual::datagen::GenOptions { events: 6000, accounts: 300, seed: 5, ..Default::default() };
    // In time order, so a time bound is a cut through every partition.
    let mut lines = generated_lines(&opts);
    lines.sort_by_key(|l| occurred_at(l));
    setup.produce(dir.path(), &lines);
    let text = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        text.replacen("effect = { percent = \"5\" }", "effect = { percent = \"6\" }", 1),
    )
    .unwrap();
    let file = |name: &str, lines: &[&String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
        path
    };
    let topic = ["--topic", setup.input.as_str(), "--brokers", setup.brokers.as_str()];

    let all: Vec<&String> = lines.iter().collect();
    let from_file = backtest(&candidate, &["--input", file("all.ndjson", &all).to_str().unwrap()]);
    let from_topic = backtest(&candidate, &topic);
    assert_eq!(from_topic["baseline"]["events"], 6000);
    assert!(from_topic["source"].as_str().unwrap().contains(&setup.input));
    assert_eq!(comparable(from_topic), comparable(from_file), "a topic reads as the file does");

    // [from, to) as times: the events of the middle of the month.
    let (from, to) = ("2026-11-10T00:00:00+03:00", "2026-11-20T00:00:00+03:00");
    let (t1, t2) = (
        chrono::DateTime::parse_from_rfc3339(from).unwrap(),
        chrono::DateTime::parse_from_rfc3339(to).unwrap(),
    );
    let middle: Vec<&String> = lines.iter().filter(|l| (t1..t2).contains(&occurred_at(l))).collect();
    assert!(middle.len() > 1000 && middle.len() < 4000, "{}", middle.len());
    let from_file = backtest(&candidate, &["--input", file("middle.ndjson", &middle).to_str().unwrap()]);
    let from_topic = backtest(&candidate, &[&topic[..], &["--from", from, "--to", to]].concat());
    assert_eq!(from_topic["baseline"]["events"].as_u64(), Some(middle.len() as u64));
    assert_eq!(comparable(from_topic), comparable(from_file), "a time range reads as those lines do");

    // As offsets: [100, 250) of each of the 3 partitions.
    let by_offsets = backtest(&candidate, &[&topic[..], &["--from", "100", "--to", "250"]].concat());
    assert_eq!(by_offsets["baseline"]["events"], 450);
    assert_eq!(by_offsets["candidate"]["events"], 450);

    // Nothing was committed for any group: the engine's offsets are not
    // touched (the read joins none).
    let committed =
        accrual::kafka_tools::committed_offsets(&setup.kafka(), &setup.group, &setup.input).unwrap();
    assert!(committed.is_empty(), "{committed:?}");
}
