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
