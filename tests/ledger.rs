//! The batch processor over a real RocksDB: dedupe across batches and
//! restarts, the dedupe window, progress, what a rejected event leaves,
//! and what a panic leaves.

mod common;

use accrual::accrue::{AccrualRecord, NoEffect};
use accrual::events::Event;
use accrual::pipeline::{BatchStats, Input, Processor, Sink};
use accrual::store::{Progress, Store, StoreOptions};
use accrual::time::Timestamp;
use common::*;
use std::path::Path;

#[derive(Default)]
struct Collect {
    records: Vec<AccrualRecord>,
    duplicates: Vec<u64>,
    dead: Vec<(u64, &'static str)>,
}

impl Sink for Collect {
    fn accrued(&mut self, _: u64, _: &Event<'_>, records: &[AccrualRecord]) {
        self.records.extend_from_slice(records);
    }
    fn no_effect(&mut self, _: u64, _: &Event<'_>, _: NoEffect) {}
    fn duplicate(&mut self, offset: u64, _: &Event<'_>, _: Timestamp) {
        self.duplicates.push(offset);
    }
    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, _: &str) {
        self.dead.push((input.offset, reason));
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions { sync: true, ..StoreOptions::default() }).unwrap()
}

/// Processes `lines` as the next offsets of partition 3 and commits.
fn run(store: &Store, lines: &[String]) -> (BatchStats, Collect) {
    run_with(store, lines, Processor::new(example_rules()))
}

fn run_with(store: &Store, lines: &[String], mut processor: Processor) -> (BatchStats, Collect) {
    let mut progress = store.progress(3).unwrap().unwrap_or_default();
    let first = progress.next_offset;
    let inputs: Vec<Input<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Input { offset: first + i as u64, key: b"", payload: l.as_bytes(), timestamp: None })
        .collect();
    let mut batch = store.batch();
    let mut sink = Collect::default();
    let stats = processor.process(store, 3, &mut progress, &inputs, &mut batch, &mut sink).unwrap();
    store.commit(batch).unwrap();
    (stats, sink)
}

#[test]
fn a_duplicate_is_counted_not_accrued_within_a_batch_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = purchase("e1", "acc", "1000.00", "5411", "2026-11-10T10:00:00Z", "");
    {
        let store = open(dir.path());
        let (stats, sink) = run(&store, &[p1.clone(), p1.clone()]);
        assert_eq!((stats.accrued, stats.duplicates), (1, 1));
        assert_eq!(sink.duplicates, vec![1]);
        assert_eq!(sink.records.len(), 2);
    }
    let store = open(dir.path());
    let before = store.account(3, "acc").unwrap();
    let (stats, sink) = run(&store, std::slice::from_ref(&p1));
    assert_eq!((stats.accrued, stats.duplicates), (0, 1));
    assert_eq!(sink.duplicates, vec![2], "offsets continue from the stored progress");
    assert_eq!(store.account(3, "acc").unwrap(), before);
    assert_eq!(store.progress(3).unwrap().map(|p| p.next_offset), Some(3));
    assert_eq!(before.unwrap().balance("cashback").unwrap().available, d("50.00"));
}

#[test]
fn the_dedupe_window_is_measured_in_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let e1 = purchase("e1", "acc", "1000.00", "5411", "2026-11-10T10:00:00Z", "");
    run(&store, std::slice::from_ref(&e1));
    // Six days later the id is still remembered (window: 7 days).
    let (stats, _) =
        run(&store, &[purchase("e2", "other", "10.00", "5999", "2026-11-16T10:00:00Z", ""), e1.clone()]);
    assert_eq!(stats.duplicates, 1);
    // Once the partition's event time is past the window, the id is no
    // longer remembered: a copy could not be told from a new event, so it
    // is refused (too_late), never paid again.
    let (stats, sink) =
        run(&store, &[purchase("e3", "other", "10.00", "5999", "2026-11-17T10:00:01Z", ""), e1]);
    assert_eq!((stats.duplicates, stats.accrued, stats.dead_letters), (0, 1, 1));
    assert_eq!(sink.dead, vec![(4, "too_late")]);
    assert_eq!(
        store.progress(3).unwrap(),
        Some(Progress {
            next_offset: 5,
            stream_time: Timestamp::parse_rfc3339("2026-11-17T10:00:01Z").unwrap()
        })
    );
}

#[test]
fn rejected_and_malformed_events_leave_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let usd = purchase("u1", "acc-usd", "10.00", "5411", "2026-11-10T10:00:00Z", "").replace("RUB", "USD");
    let (stats, sink) = run(&store, &[usd.clone(), "{oops".to_string()]);
    assert_eq!(stats.dead_letters, 2);
    assert_eq!(sink.dead, vec![(0, "currency_mismatch"), (1, "malformed_json")]);
    assert_eq!(store.account(3, "acc-usd").unwrap(), None);
    // Not remembered as seen: a corrected resend is not a duplicate.
    assert_eq!(store.seen(3, "u1", Timestamp(i64::MAX / 2), i64::MAX / 2).unwrap(), None);
    assert_eq!(store.progress(3).unwrap().map(|p| p.next_offset), Some(2), "every offset is accounted for");
}

/// A panic while processing one event, in the middle of a batch whose
/// earlier events touched the same account: that event is a dead letter
/// `internal_error`, and everything else (records, state, progress, later
/// events of the batch and the next batch) is exactly as if it had never
/// come.
#[test]
#[cfg(feature = "failpoints")] // the panic is injected
fn a_panic_costs_one_dead_letter_and_nothing_else() {
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let account = if i % 3 == 0 { "acc-b" } else { "acc-a" };
            purchase(
                &format!("e{i}"),
                account,
                &format!("{}.00", 500 + 100 * i),
                "5411",
                "2026-11-10T10:00:00Z",
                "",
            )
        })
        .collect();
    let boom = 7; // acc-a, after four of its purchases
    let without: Vec<String> =
        lines.iter().enumerate().filter(|(i, _)| *i != boom).map(|(_, l)| l.clone()).collect();
    let next = vec![purchase("e99", "acc-a", "1000.00", "5411", "2026-11-11T10:00:00Z", "")];

    let clean_dir = tempfile::tempdir().unwrap();
    let clean = open(clean_dir.path());
    let (clean_stats, clean_sink) = run(&clean, &without);

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let processor = Processor::new(example_rules()).panicking_on("e7");
    let (stats, sink) = run_with(&store, &lines, processor);
    assert_eq!(sink.dead, vec![(boom as u64, accrual::pipeline::INTERNAL_ERROR)]);
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.inputs, clean_stats.inputs + 1);
    assert_eq!((stats.accrued, stats.records), (clean_stats.accrued, clean_stats.records));
    assert_eq!(sink.records, clean_sink.records, "every other event's records, once each");
    for account in ["acc-a", "acc-b"] {
        assert_eq!(store.account(3, account).unwrap(), clean.account(3, account).unwrap(), "{account}");
    }
    assert_eq!(store.progress(3).unwrap().map(|p| p.next_offset), Some(lines.len() as u64));
    // The id of the event that panicked is not remembered: a resend is new.
    assert_eq!(store.seen(3, "e7", Timestamp(i64::MAX / 2), i64::MAX / 2).unwrap(), None);
    let (_, after) = run(&store, &next);
    let (_, clean_next) = run(&clean, &next);
    assert_eq!(after.records, clean_next.records, "the partition goes on");
}

/// The lifecycle example (holds, expiry, tiers) with a clock limit.
fn lifecycle_limited(per_clock: u32) -> std::sync::Arc<accrual::rules::Rules> {
    let text = std::fs::read_to_string(repo_path("config/rules.lifecycle.toml")).unwrap();
    rules_from(&text.replacen(
        "statement_day = 15",
        &format!("statement_day = 15\nmax_accounts_per_clock = {per_clock}"),
        1,
    ))
}

fn clock(id: &str, at: &str) -> String {
    format!(r#"{{"event_id":"{id}","type":"clock","occurred_at":"{at}"}}"#)
}

/// Ten accounts with held rewards, all due by the clocks' time.
fn ten_held_accounts() -> Vec<String> {
    (0..10)
        .map(|i| {
            purchase(&format!("p{i}"), &format!("acc-{i:02}"), "5000.00", "5411", "2026-10-01T10:00:00Z", "")
        })
        .collect()
}

/// `(account, kind, amount, balance after, pending after)` of each record:
/// what a record says, without the id of the event that triggered it.
fn effects(records: &[AccrualRecord]) -> Vec<(String, &'static str, String, String, String)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|r| {
            let account = r.account_id().to_string();
            (
                account,
                r.kind.name(),
                r.amount.to_string(),
                r.balance_after.to_string(),
                r.pending_after.to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_clock_fires_at_most_its_limit_soonest_due_first_and_later_clocks_go_on() {
    let at = "2027-01-20T00:00:00Z";
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let rules = lifecycle_limited(3);
    run_with(&store, &ten_held_accounts(), Processor::new(rules.clone()));
    let mut fired = Vec::new();
    let mut all = Vec::new();
    for (n, expected) in [
        (0, ["acc-00", "acc-01", "acc-02"].as_slice()),
        (1, &["acc-03", "acc-04", "acc-05"]),
        (2, &["acc-06", "acc-07", "acc-08"]),
        (3, &["acc-09"]),
    ] {
        let (stats, sink) = run_with(&store, &[clock(&format!("c{n}"), at)], Processor::new(rules.clone()));
        let mut accounts: Vec<&str> = sink.records.iter().map(|r| r.account_id()).collect();
        accounts.dedup();
        assert_eq!(accounts, expected, "clock {n}: the next accounts due, in order");
        assert_eq!(stats.clock_accounts, expected.len() as u64);
        assert_eq!(stats.clocks_cut, u64::from(n < 3), "clock {n} left accounts due");
        fired.extend(accounts.iter().map(|a| a.to_string()));
        all.extend(sink.records);
    }
    let (stats, sink) = run_with(&store, &[clock("c4", at)], Processor::new(rules));
    assert_eq!((stats.clock_accounts, stats.clocks_cut, sink.records.len()), (0, 0, 0), "nothing left due");

    // The same as one clock without a limit, but for the clock ids.
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = open(whole_dir.path());
    let unlimited = lifecycle_limited(1_000_000);
    run_with(&whole, &ten_held_accounts(), Processor::new(unlimited.clone()));
    let (stats, sink) = run_with(&whole, &[clock("c", at)], Processor::new(unlimited));
    assert_eq!((stats.clock_accounts, stats.clocks_cut), (10, 0));
    assert!(!sink.records.is_empty());
    assert_eq!(effects(&all), effects(&sink.records), "nothing lost or doubled by firing in chunks");
    for i in 0..10 {
        let account = format!("acc-{i:02}");
        assert_eq!(store.account(3, &account).unwrap(), whole.account(3, &account).unwrap(), "{account}");
    }
}

#[test]
fn a_batch_ended_after_its_clocks_reached_the_limit_leaves_the_rest_and_changes_nothing() {
    let at = "2027-01-20T00:00:00Z";
    let rules = lifecycle_limited(3);
    let tail = vec![
        clock("c1", at),
        purchase("late", "acc-04", "100.00", "5411", "2027-01-20T01:00:00Z", ""),
        clock("c2", "2027-01-20T02:00:00Z"),
        purchase("later", "acc-11", "100.00", "5411", "2027-01-20T03:00:00Z", ""),
    ];
    let one_batch_dir = tempfile::tempdir().unwrap();
    let one_batch = open(one_batch_dir.path());
    run_with(&one_batch, &ten_held_accounts(), Processor::new(rules.clone()));
    let (whole, expected) = run_with(&one_batch, &tail, Processor::new(rules.clone()));
    assert_eq!((whole.clocks_cut, whole.unprocessed), (2, 0));

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    run_with(&store, &ten_held_accounts(), Processor::new(rules.clone()));
    let mut left = &tail[..];
    let mut records = Vec::new();
    let mut batches = Vec::new();
    while !left.is_empty() {
        let before = store.progress(3).unwrap().unwrap_or_default().next_offset;
        let (stats, sink) =
            run_with(&store, left, Processor::new(rules.clone()).ending_batches_after_clocks());
        let taken = left.len() - stats.unprocessed as usize;
        assert_eq!(store.progress(3).unwrap().map(|p| p.next_offset), Some(before + taken as u64));
        batches.push(taken);
        records.extend(sink.records);
        left = &left[taken..];
    }
    assert_eq!(batches, vec![1, 2, 1], "each batch ends after the clock that reached the limit");
    assert_eq!(records, expected.records, "the same records, in the same order");
    for i in 0..12 {
        let account = format!("acc-{i:02}");
        assert_eq!(store.account(3, &account).unwrap(), one_batch.account(3, &account).unwrap(), "{account}");
    }
}
