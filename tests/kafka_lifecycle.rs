//! The scripted year of one account through the broker, the engine killed
//! with SIGKILL while it works and restarted: the committed accrual records
//! of the account are exactly the expected sequence, in order; every extra
//! copy comes from a transaction that never committed. Clock events reach
//! every partition.

mod common;

use common::kafka::*;
use common::year::{brief, expected};
use std::time::{Duration, Instant};

const RULES: &str = "config/rules.lifecycle.toml";

#[test]
fn the_scripted_year_through_the_broker_survives_kill_9() {
    let setup = Setup::new("year", 2);
    let dir = tempfile::tempdir().unwrap();
    let path = common::repo_path("tests/data/year.ndjson");
    // The year runs into 2027, past today: through a broker (which stamps
    // messages no later than now, and the engine refuses events far ahead
    // of their stamp) it goes one year earlier. 2025 and 2026 have the same
    // calendar but for weekdays, which the program does not use, and the
    // expected records carry no dates.
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| l.replace("\"2026-", "\"2025-").replace("\"2027-", "\"2026-"))
        .collect();
    let path = dir.path().join("year-2025.ndjson");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let produced = accrual::kafka_tools::produce_file(&setup.kafka(), &setup.input, &path).unwrap();
    let clocks = lines.iter().filter(|l| l.contains(r#""type":"clock""#)).count() as u64;
    assert_eq!(
        produced,
        lines.len() as u64 + clocks * (setup.partitions as u64 - 1),
        "clocks go to every partition"
    );

    // One event per transaction: many places for a kill to land.
    let config = setup.config_with_rules(dir.path(), "node-1", "max_batch = 1", RULES);
    for (kill, delay) in [150u64, 400, 700, 250].into_iter().enumerate() {
        let mut engine = EngineProcess::spawn(&config, &[], None);
        let started = Instant::now();
        while !engine.log_text().contains("partition assigned") && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(delay));
        engine.kill();
        eprintln!("kill {} at {delay} ms; lag {:?}", kill + 1, setup.lag());
    }
    let mut last = EngineProcess::spawn(&config, &[], Some(4));
    assert!(last.wait(Duration::from_secs(120)).success(), "{}", last.log_text());
    assert!(setup.wait_all_committed(Duration::from_secs(30)));

    let journal = journal(&dir.path().join("node-1"));
    let committed: Vec<String> = setup
        .read(&setup.accruals)
        .into_iter()
        .filter(|m| {
            journal.get(m.header("accrual.txn").unwrap_or_default())
                == Some(&accrual::engine::journal::TxnStatus::Committed)
        })
        .map(|m| String::from_utf8(m.payload).unwrap())
        .collect();
    assert_eq!(brief(&committed), expected(), "the committed records are the expected year, in order");
    let (reference, _) = reference_with_rules(dir.path(), &lines, RULES);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal);
}
