//! The state changelog without a broker: the changes a ledger batch
//! captures, written back into an empty store, give the same state:
//! accounts with their purchases, dedupe answers, timers and progress;
//! and so does only the latest value of each key (what a compacted topic
//! keeps).

mod common;

use accrual::accrue::AccrualRecord;
use accrual::datagen::GenOptions;
use accrual::events::Event;
use accrual::pipeline::{Input, Processor, Sink};
use accrual::store::changelog::{self, Family, Restore};
use accrual::store::{Store, StoreOptions};
use accrual::time::Timestamp;
use common::*;
use std::collections::BTreeMap;

struct Ignore;

impl Sink for Ignore {
    fn accrued(&mut self, _: u64, _: &Event<'_>, _: &[AccrualRecord]) {}
    fn no_effect(&mut self, _: u64, _: &Event<'_>, _: accrual::accrue::NoEffect) {}
    fn duplicate(&mut self, _: u64, _: &Event<'_>, _: Timestamp) {}
    fn dead_letter(&mut self, _: &Input<'_>, _: &'static str, _: &str) {}
}

/// A changelog message: key, and value or none (a tombstone).
type Message = (Vec<u8>, Option<Vec<u8>>);

/// The changelog message of a change.
fn message(change: &changelog::Change<'_>) -> Message {
    let mut key = Vec::new();
    changelog::message_key(change, &mut key);
    (key, change.value.map(<[u8]>::to_vec))
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, &StoreOptions { sync: false, ..StoreOptions::default() }).unwrap()
}

/// Generated events (refunds, reversals, duplicates, malformed lines),
/// with a clock after every 200th line.
fn lines() -> Vec<String> {
    let opts = GenOptions {
        events: 6_000,
        accounts: 150,
        seed: 77,
        days: 400,
        refund_percent: 5.0,
        reversal_percent: 2.0,
        duplicate_percent: 3.0,
        malformed_percent: 1.0,
        ..GenOptions::default()
    };
    with_clocks(generated_lines(&opts), 200)
}

/// Processes `lines` into partitions 1 and 2 (alternate batches of 250),
/// committing each batch, and returns the changelog messages captured.
fn process_capturing(store: &Store, lines: &[String]) -> Vec<Message> {
    // The lifecycle program: holds, expiry and tiers move timers around.
    let rules = accrual::rules::load(&repo_path("config/rules.lifecycle.toml")).unwrap();
    let mut processor = Processor::new(std::sync::Arc::new(rules)).with_received_by(test_now());
    let mut messages = Vec::new();
    for (n, chunk) in lines.chunks(250).enumerate() {
        let partition = 1 + (n % 2) as u32;
        let mut progress = store.progress(partition).unwrap().unwrap_or_default();
        let first = progress.next_offset;
        let inputs: Vec<Input<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| Input {
                offset: first + i as u64,
                key: b"",
                payload: l.as_bytes(),
                timestamp: None,
            })
            .collect();
        let mut batch = store.batch().capturing_changes();
        processor.process(store, partition, &mut progress, &inputs, &mut batch, &mut Ignore).unwrap();
        let captured = batch.take_changes().unwrap();
        for change in changelog::changes(&captured).unwrap() {
            assert_eq!(change.partition(), Some(partition), "a change of another partition");
            messages.push(message(&change));
        }
        store.commit(batch).unwrap();
    }
    messages
}

fn restore(store: &Store, messages: &[Message]) {
    let mut restore = Restore::new(store);
    for (key, value) in messages {
        let change = changelog::from_message(key, value.as_deref()).expect("a change");
        restore.apply(&change).unwrap();
    }
    restore.finish().unwrap();
}

/// What a compacted topic keeps: the last message of each key, without
/// tombstones (once compaction removed them).
fn compacted(messages: &[Message]) -> Vec<Message> {
    let mut last: BTreeMap<&[u8], &Option<Vec<u8>>> = BTreeMap::new();
    for (key, value) in messages {
        last.insert(key, value);
    }
    last.into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_vec(), Some(v.clone())))).collect()
}

/// The lifecycle program's dedupe window.
const WINDOW_MS: i64 = 7 * 86_400_000;

/// Everything the processor reads of a partition, and every stored key
/// and value the changelog carries, for comparison: dedupe keys only while
/// remembered (an expired one answers nothing, and a compacted changelog
/// no longer holds it).
fn state(store: &Store, partition: u32, event_ids: &[String]) -> String {
    let progress = store.progress(partition).unwrap().unwrap();
    let horizon = progress.stream_time.0 - WINDOW_MS;
    let mut entries = changelog::partition_entries(store, partition).unwrap();
    entries.retain(|(family, _, value)| *family != Family::Dedupe || decode_seen(value) >= horizon);
    let accounts = store.accounts(partition).unwrap();
    let timers = store.due_timers(partition, Timestamp(i64::MAX), usize::MAX).unwrap();
    let seen: Vec<_> = event_ids
        .iter()
        .map(|id| store.seen(partition, id, progress.stream_time, WINDOW_MS).unwrap())
        .collect();
    format!("{entries:?}\n{accounts:?}\n{timers:?}\n{progress:?}\n{seen:?}")
}

/// The event ids among `lines` (those that parse).
fn event_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("event_id").and_then(|id| id.as_str()).map(str::to_string))
        .collect()
}

fn decode_seen(value: &[u8]) -> i64 {
    accrual::state::codec::Reader::new(value).i64().unwrap()
}

fn dedupe_keys(store: &Store, partition: u32) -> usize {
    let entries = changelog::partition_entries(store, partition).unwrap();
    entries.iter().filter(|(family, ..)| *family == Family::Dedupe).count()
}

#[test]
fn captured_changes_restore_the_same_state_whole_or_compacted() {
    let lines = lines();
    let event_ids = event_ids(&lines);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let original = open(dirs[0].path());
    let messages = process_capturing(&original, &lines);
    // The run deletes keys of purchases and timers, and its dedupe keys
    // expire: tombstones are tested.
    let family = |f: Family| f as u8;
    for f in [Family::Purchases, Family::Timers, Family::DedupeGroup] {
        assert!(messages.iter().any(|(k, v)| k[0] == family(f) && v.is_none()), "no delete in {f:?}");
    }
    // A batch's dedupe keys are one message, not one per event.
    assert!(!messages.iter().any(|(k, _)| k[0] == family(Family::Dedupe)));
    let groups = messages.iter().filter(|(k, v)| k[0] == family(Family::DedupeGroup) && v.is_some()).count();
    assert_eq!(groups, lines.len().div_ceil(250), "one dedupe group per batch");

    let replayed = open(dirs[1].path());
    restore(&replayed, &messages);
    let latest = compacted(&messages);
    assert!(latest.len() < messages.len());
    let from_compacted = open(dirs[2].path());
    restore(&from_compacted, &latest);

    for partition in [1, 2] {
        let want = state(&original, partition, &event_ids);
        assert!(want.len() > 1_000, "partition {partition} holds state");
        assert!(state(&replayed, partition, &event_ids) == want, "replayed changelog, partition {partition}");
        assert!(
            state(&from_compacted, partition, &event_ids) == want,
            "compacted changelog, partition {partition}"
        );
        // Compaction sheds the expired groups' keys.
        let (kept, all) = (dedupe_keys(&from_compacted, partition), dedupe_keys(&replayed, partition));
        assert!(kept > 0 && kept * 4 < all, "partition {partition}: {kept} of {all} dedupe keys kept");
    }
}

/// One owned batch of partition 1 over `lines` from `first`, its changes
/// captured as messages; committed to `store` or, if not `commit`, dropped
/// (a transaction that never committed: its records are in the log all
/// the same on a broker that shows aborted transactions).
fn owned_batch(store: &Store, lines: &[String], first: u64, commit: bool) -> Vec<Message> {
    let rules = accrual::rules::load(&repo_path("config/rules.lifecycle.toml")).unwrap();
    // A fresh processor, as after a crash: nothing of the dropped batch is
    // remembered.
    let mut processor = Processor::new(std::sync::Arc::new(rules)).with_received_by(test_now());
    let mut progress = store.progress(1).unwrap().unwrap_or_default();
    assert_eq!(progress.next_offset, first);
    let inputs: Vec<Input<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Input { offset: first + i as u64, key: b"", payload: l.as_bytes(), timestamp: None })
        .collect();
    let owner = accrual::store::owner::Owner { instance: "node-a".into(), generation: 3 };
    let mut batch = store.batch().owned_by(&owner, "r").capturing_changes();
    batch.starts_at(1, first);
    processor.process(store, 1, &mut progress, &inputs, &mut batch, &mut Ignore).unwrap();
    let changes = batch.take_changes().unwrap();
    let messages = changelog::changes(&changes).unwrap().iter().map(message).collect();
    if commit {
        store.commit(batch).unwrap();
    }
    messages
}

/// The diagnosed crash: a batch over 1,250..1,500 never committed, and its
/// inputs were processed again in a batch ending at 1,460. A standby copy
/// tailing the log (which shows the aborted batch) holds each batch back
/// and leaves that one out; its last batch is written once the group's
/// committed offset is where it ends.
#[test]
fn a_standby_copy_leaves_out_a_batch_that_never_committed() {
    let lines = lines();
    let lines = &lines[..3_000];
    let event_ids = event_ids(lines);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let owner = open(dirs[0].path());
    let mut log = Vec::new();
    for (from, to) in [(0, 250), (250, 600), (600, 1_000), (1_000, 1_250)] {
        log.extend(owned_batch(&owner, &lines[from..to], from as u64, true));
    }
    let aborted = owned_batch(&owner, &lines[1_250..1_500], 1_250, false);
    log.extend(aborted.iter().cloned());
    for (from, to) in [(1_250, 1_460), (1_460, 2_000), (2_000, 3_000)] {
        log.extend(owned_batch(&owner, &lines[from..to], from as u64, true));
    }
    // The aborted batch's dedupe group is keyed by where it ends: nothing
    // committed overwrites it, so a copy that kept it would differ.
    let group = |(k, v): &&Message| k[0] == Family::DedupeGroup as u8 && v.is_some();
    let stray = aborted.iter().find(group).expect("the aborted batch has a dedupe group");
    assert!(!log.iter().filter(|m| !aborted.contains(m)).any(|(k, _)| *k == stray.0));

    let copy = open(dirs[1].path());
    let mut tail = changelog::TailBatch::default();
    let mut left_out = 0;
    for (position, (key, value)) in log.iter().enumerate() {
        let change = changelog::from_message(key, value.as_deref()).expect("a change");
        tail.add(&copy, &change).unwrap();
        if let Some(progress) = change.value.filter(|_| changelog::is_progress(&change)) {
            let at = changelog::CopyPosition { position: position as i64 + 1, written_at_ms: None };
            left_out += u32::from(tail.end(&copy, 1, progress, at).unwrap());
        }
    }
    assert_eq!(left_out, 1, "the aborted batch is left out, and only it");
    assert_eq!(tail.held_end(), Some(3_000), "the last batch is held back");
    assert!(copy.progress(1).unwrap().unwrap().next_offset == 2_000, "the copy is as of the batch before");
    assert!(!tail.confirm(&copy, 2_000).unwrap(), "the group has not committed the held batch");
    assert!(tail.confirm(&copy, 3_000).unwrap(), "the group committed it");
    assert_eq!(tail.held_end(), None);
    let position = changelog::standby_position(&copy, 1).unwrap().map(|at| at.position);
    assert_eq!(position, Some(log.len() as i64), "the copy goes on after the last record");
    let entries = changelog::partition_entries(&copy, 1).unwrap();
    assert!(
        !entries.iter().any(|(family, key, _)| *family == Family::DedupeGroup && key[..] == stray.0[1..])
    );
    assert!(state(&copy, 1, &event_ids) == state(&owner, 1, &event_ids), "the copy differs from the owner");
}

/// What a compacted topic keeps, in the log's order: the last message of
/// each key where it was written, without tombstones.
fn compacted_in_order(messages: &[Message]) -> Vec<Message> {
    let last: BTreeMap<&[u8], usize> = messages.iter().enumerate().map(|(i, (k, _))| (&k[..], i)).collect();
    let kept = messages.iter().enumerate().filter(|(i, (k, v))| last[&k[..]] == *i && v.is_some());
    kept.map(|(_, m)| m.clone()).collect()
}

/// A partition's snapshot (see `changelog::snapshot`) as messages.
fn snapshot(store: &Store) -> Vec<Message> {
    let mut messages = Vec::new();
    changelog::snapshot(store, 1, |change| -> Result<(), accrual::store::StoreError> {
        messages.push(message(change));
        Ok(())
    })
    .unwrap();
    messages
}

/// A standby copy of partition 1 fed `log` (writing snapshots in parts of
/// 4 kB), its last batch confirmed by the group's offset `committed`
/// unless none.
fn tailed(copy: &Store, log: &[Message], committed: Option<u64>) {
    let mut tail = changelog::TailBatch::with_part_bytes(4_096);
    for (position, (key, value)) in log.iter().enumerate() {
        let change = changelog::from_message(key, value.as_deref()).expect("a change");
        tail.add(copy, &change).unwrap();
        if tail.part_due() {
            tail.write_part(copy).unwrap();
        }
        if let Some(progress) = change.value.filter(|_| changelog::is_progress(&change)) {
            let at = changelog::CopyPosition { position: position as i64 + 1, written_at_ms: None };
            tail.end(copy, 1, progress, at).unwrap();
        }
    }
    if let Some(committed) = committed {
        assert!(tail.confirm(copy, committed).unwrap(), "the last batch is the group's");
    }
}

/// The changelog was turned off while batches 1,000..2,000 ran (their
/// changes, deletes too, never reached it), then on again: the state is
/// published as a snapshot that starts with a reset. A restore (of the
/// whole log or of what compaction leaves) and a standby copy give the
/// owner's state, not the older keys from before the reset.
#[test]
fn a_snapshot_replaces_what_a_changelog_that_was_off_holds() {
    let lines = lines();
    let lines = &lines[..3_000];
    let event_ids = event_ids(lines);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let owner = open(dirs[0].path());
    let mut log = Vec::new();
    for (from, to) in [(0, 500), (500, 1_000)] {
        log.extend(owned_batch(&owner, &lines[from..to], from as u64, true));
    }
    for (from, to) in [(1_000, 1_500), (1_500, 2_000)] {
        owned_batch(&owner, &lines[from..to], from as u64, true);
    }
    // Keys the log holds that the owner's state no longer has (deleted
    // while the changelog was off): without the reset a restore keeps them.
    let stale: Vec<Vec<u8>> = {
        let held = compacted_in_order(&log);
        let now: Vec<Vec<u8>> = changelog::partition_entries(&owner, 1)
            .unwrap()
            .into_iter()
            .map(|(family, key, _)| [&[family as u8][..], &key].concat())
            .collect();
        held.into_iter().map(|(k, _)| k).filter(|k| !now.contains(k)).collect()
    };
    assert!(stale.len() > 10, "only {} keys gone while the changelog was off", stale.len());
    let snapshot = snapshot(&owner);
    assert_eq!(snapshot[0].0[0], Family::Reset as u8, "a snapshot starts with a reset");
    let snapshot_at = log.len();
    log.extend(snapshot.iter().cloned());
    // The snapshot alone gives the owner's state, dedupe groups included:
    // the groups the owner indexed before are replaced by the snapshot's.
    let just_after = tempfile::tempdir().unwrap();
    let just_after = open(just_after.path());
    restore(&just_after, &log);
    assert!(state(&just_after, 1, &event_ids) == state(&owner, 1, &event_ids), "restored from the snapshot");
    log.extend(owned_batch(&owner, &lines[2_000..3_000], 2_000, true));
    let want = state(&owner, 1, &event_ids);

    let whole = open(dirs[1].path());
    restore(&whole, &log);
    assert!(state(&whole, 1, &event_ids) == want, "restored from the whole log");
    let latest = compacted_in_order(&log);
    assert!(stale.iter().all(|k| latest.iter().any(|(key, _)| key == k)), "compaction keeps the stale keys");
    let from_compacted = open(dirs[2].path());
    restore(&from_compacted, &latest);
    assert!(state(&from_compacted, 1, &event_ids) == want, "restored from the compacted log");
    let copy = open(dirs[3].path());
    tailed(&copy, &log, Some(3_000));
    assert!(state(&copy, 1, &event_ids) == want, "the standby copy differs from the owner");

    // A snapshot cut short leaves a reset and no progress after it: a
    // restore then holds no progress, and is refused, not taken as state.
    let cut = tempfile::tempdir().unwrap();
    let cut_short = open(cut.path());
    let cut_log = &log[..snapshot_at + snapshot.len() / 2];
    restore(&cut_short, cut_log);
    assert_eq!(cut_short.progress(1).unwrap(), None, "a restore cut in a snapshot holds no progress");
    // A standby copy writes a snapshot in parts, and one cut short holds
    // no progress and no position to read on from: never taken for state.
    let cut_copy = tempfile::tempdir().unwrap();
    let cut_copy = open(cut_copy.path());
    tailed(&cut_copy, cut_log, None);
    assert!(changelog::partition_entries(&cut_copy, 1).unwrap().len() > 10, "parts of the snapshot written");
    assert_eq!(cut_copy.progress(1).unwrap(), None, "a copy cut in a snapshot holds no progress");
    assert_eq!(changelog::standby_position(&cut_copy, 1).unwrap(), None);
}
