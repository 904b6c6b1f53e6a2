//! A corpus of malformed events (`tests/data/malformed.ndjson`): each gives
//! the typed error listed in `malformed.expected`, never a panic; through
//! `simulate` each is reported with its line number and none is fatal.

mod common;

use accrual::events::Decoder;
use accrual::simulate::{self, SimulateOptions};
use common::repo_path;

fn corpus() -> Vec<(Vec<u8>, String, String)> {
    let lines = std::fs::read(repo_path("tests/data/malformed.ndjson")).unwrap();
    let expected = std::fs::read_to_string(repo_path("tests/data/malformed.expected")).unwrap();
    let expected: Vec<(String, String)> = expected
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (reason, field) = l.split_once(' ').unwrap();
            (reason.to_string(), field.to_string())
        })
        .collect();
    let lines: Vec<Vec<u8>> =
        lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    assert_eq!(lines.len(), expected.len(), "corpus and expectations line up");
    lines.into_iter().zip(expected).map(|(l, (r, f))| (l, r, f)).collect()
}

#[test]
fn every_malformed_event_gets_its_typed_error() {
    let mut decoder = Decoder::new();
    for (i, (line, reason, field)) in corpus().into_iter().enumerate() {
        let err = match decoder.decode(&line) {
            Ok(ev) => panic!("line {} decoded: {ev:?}", i + 1),
            Err(e) => e,
        };
        assert_eq!(err.reason(), reason, "line {}: {err}", i + 1);
        assert_eq!(err.field().unwrap_or("-"), field, "line {}: {err}", i + 1);
        if field != "-" {
            assert!(err.to_string().contains(&field), "line {}: message names the field: {err}", i + 1);
        }
    }
}

#[test]
fn simulate_reports_each_bad_line_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed.ndjson");
    let dlq = dir.path().join("dlq.ndjson");
    // Valid purchases around the corpus: they are accrued, nothing is lost.
    let mut text =
        common::purchase("ok-1", "acc-1", "1000.00", "5411", "2026-11-20T10:00:00Z", "").into_bytes();
    text.push(b'\n');
    for (line, _, _) in corpus() {
        text.extend_from_slice(&line);
        text.push(b'\n');
    }
    text.extend_from_slice(
        common::purchase("ok-2", "acc-1", "1000.00", "5411", "2026-11-21T10:00:00Z", "").as_bytes(),
    );
    text.push(b'\n');
    std::fs::write(&mixed, &text).unwrap();

    let opts = SimulateOptions {
        rules: repo_path("config/rules.example.toml"),
        input: mixed,
        out: None,
        dlq: Some(dlq.clone()),
        state_dir: None,
        batch_size: 7,
        show_progress: false,
        now: Some(common::test_now()),
    };
    let summary = simulate::run(&opts).unwrap();
    let n = corpus().len() as u64;
    assert_eq!(summary.stats.inputs, n + 2);
    assert_eq!(summary.stats.dead_letters, n);
    assert_eq!(summary.stats.accrued, 2);
    assert_eq!(summary.rejected_lines[0].line, 2);
    assert_eq!(summary.rejected_lines[0].reason, "malformed_json");
    let shown = summary.to_string();
    assert!(shown.contains("line 2: malformed_json"), "{shown}");
    assert!(shown.contains(&format!("rejected lines: {n}")), "{shown}");

    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(&dlq).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len() as u64, n);
    let lines: Vec<u64> = dead.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, (2..n + 2).collect::<Vec<_>>());
    assert!(dead.iter().all(|v| !v["reason"].as_str().unwrap().is_empty() && v["raw"].is_string()));
}
