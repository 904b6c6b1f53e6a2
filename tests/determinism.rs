//! Same input, same state, same rules: byte-identical output. Also across
//! batch sizes and across a stop and resume from the RocksDB state, which
//! is what makes replay and recovery harmless.

mod common;

use accrual::datagen::{self, GenOptions};
use accrual::simulate::{self, SimulateOptions, Summary};
use accrual::store::{Store, StoreOptions};
use common::repo_path;
use std::path::{Path, PathBuf};

fn events(dir: &Path) -> PathBuf {
    let path = dir.join("events.ndjson");
    let opts = GenOptions {
        events: 30_000,
        accounts: 400,
        seed: 11,
        days: 75,
        refund_percent: 4.0,
        reversal_percent: 1.5,
        duplicate_percent: 1.0,
        malformed_percent: 0.5,
        ..GenOptions::default()
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    datagen::generate(&opts, &mut file).unwrap();
    path
}

fn simulate(input: &Path, out: &Path, batch_size: usize, state_dir: Option<&Path>) -> Summary {
    simulate::run(&SimulateOptions {
        rules: repo_path("config/rules.example.toml"),
        input: input.to_path_buf(),
        out: Some(out.to_path_buf()),
        dlq: None,
        state_dir: state_dir.map(Path::to_path_buf),
        batch_size,
        show_progress: false,
        now: Some(common::test_now()),
    })
    .unwrap()
}

#[test]
fn same_input_gives_byte_identical_output_whatever_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let reference = dir.path().join("ref.ndjson");
    let summary = simulate(&input, &reference, 10_000, None);
    let expected = std::fs::read(&reference).unwrap();
    assert!(summary.stats.records > 30_000, "a real workload: {:?}", summary.stats);
    assert!(summary.stats.duplicates > 0 && summary.stats.dead_letters > 0);
    assert!(summary.by_rule.contains_key(&("points".to_string(), "december-fridays".to_string())));
    let s = summary.stats;
    assert_eq!(s.inputs, 30_000, "every line is an input");
    assert_eq!(
        s.inputs,
        s.accrued + s.no_effect + s.duplicates + s.dead_letters,
        "every input accounted for"
    );

    for batch_size in [1, 7, 999, 100_000] {
        let out = dir.path().join(format!("out-{batch_size}.ndjson"));
        let again = simulate(&input, &out, batch_size, None);
        assert!(std::fs::read(&out).unwrap() == expected, "batch size {batch_size} changed the output");
        assert_eq!(again.stats, summary.stats);
    }
}

#[test]
fn stopping_and_resuming_from_state_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let whole_out = dir.path().join("whole.ndjson");
    let whole_state = dir.path().join("whole-state");
    simulate(&input, &whole_out, 5_000, Some(&whole_state));

    // The same lines in two files, the second run continuing from the
    // first run's state on disk.
    let text = std::fs::read(&input).unwrap();
    let cut = text.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(12_345).unwrap().0 + 1;
    let (first, second) = (dir.path().join("first.ndjson"), dir.path().join("second.ndjson"));
    std::fs::write(&first, &text[..cut]).unwrap();
    std::fs::write(&second, &text[cut..]).unwrap();
    let state = dir.path().join("split-state");
    let (out1, out2) = (dir.path().join("out1.ndjson"), dir.path().join("out2.ndjson"));
    simulate(&first, &out1, 5_000, Some(&state));
    simulate(&second, &out2, 5_000, Some(&state));
    let mut joined = std::fs::read(&out1).unwrap();
    joined.extend(std::fs::read(&out2).unwrap());
    assert!(joined == std::fs::read(&whole_out).unwrap(), "resumed run differs from the whole run");

    // And the ledgers hold the same account states.
    let options = StoreOptions { sync: false, ..StoreOptions::default() };
    let a = Store::open(&whole_state, &options).unwrap().accounts(0).unwrap();
    let b = Store::open(&state, &options).unwrap().accounts(0).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a == b, "account states differ");
    assert!(a.len() > 300);
}

#[test]
fn state_written_under_other_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let state = dir.path().join("state");
    simulate(&input, &dir.path().join("a.ndjson"), 10_000, Some(&state));
    let other_rules = dir.path().join("other.toml");
    let text = std::fs::read_to_string(repo_path("config/rules.example.toml")).unwrap();
    std::fs::write(
        &other_rules,
        text.replace(r#"effect = { percent = "3" }"#, r#"effect = { percent = "4" }"#),
    )
    .unwrap();
    let err = simulate::run(&SimulateOptions {
        rules: other_rules,
        input,
        out: None,
        dlq: None,
        state_dir: Some(state),
        batch_size: 100,
        show_progress: false,
        now: Some(common::test_now()),
    })
    .unwrap_err();
    assert!(matches!(err, simulate::SimulateError::RulesChanged(..)), "{err}");
    assert!(err.to_string().contains("written under rules that differ from these from"), "{err}");
}

/// Records as JSON lines, as the engine publishes them.
#[derive(Default)]
struct Lines(Vec<u8>);

impl accrual::pipeline::Sink for Lines {
    fn accrued(
        &mut self,
        _: u64,
        _: &accrual::events::Event<'_>,
        records: &[accrual::accrue::AccrualRecord],
    ) {
        for r in records {
            r.write_json(&mut self.0);
            self.0.push(b'\n');
        }
    }
    fn no_effect(&mut self, _: u64, _: &accrual::events::Event<'_>, _: accrual::accrue::NoEffect) {}
    fn duplicate(&mut self, _: u64, _: &accrual::events::Event<'_>, _: accrual::time::Timestamp) {}
    fn dead_letter(&mut self, _: &accrual::pipeline::Input<'_>, _: &'static str, _: &str) {}
}

/// Runs `lines` through a processor in batches of 50 on its own store, with
/// an account cache of `cache` bytes. With `discard_every`, every n-th
/// batch is first processed and thrown away (never committed), as when a
/// cycle fails, then processed again. Returns the records and every
/// account's final stored state.
fn run_batches(lines: &[String], cache: usize, discard_every: Option<usize>) -> (Vec<u8>, Vec<u8>) {
    use accrual::pipeline::{Input, Processor};
    use accrual::store::Progress;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let rules = std::sync::Arc::new(accrual::rules::load(&repo_path("config/rules.example.toml")).unwrap());
    let mut processor = Processor::new(rules).with_account_cache(cache);
    let mut progress = Progress::default();
    let mut out = Lines::default();
    for (n, chunk) in lines.chunks(50).enumerate() {
        let base = (n * 50) as u64;
        let inputs: Vec<Input<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| Input { offset: base + i as u64, key: b"", payload: l.as_bytes(), timestamp: None })
            .collect();
        if discard_every.is_some_and(|k| n % k == 0) {
            let mut scratch = progress;
            let mut batch = store.batch();
            processor.process(&store, 0, &mut scratch, &inputs, &mut batch, &mut Lines::default()).unwrap();
            drop(batch);
            processor.discard();
        }
        let mut batch = store.batch();
        processor.process(&store, 0, &mut progress, &inputs, &mut batch, &mut out).unwrap();
        store.commit(batch).unwrap();
        processor.committed();
    }
    if cache == 0 {
        assert_eq!(processor.cached_accounts(), 0);
    }
    let mut states = Vec::new();
    for (account, state) in store.accounts(0).unwrap() {
        states.extend_from_slice(format!("{account}: {state:?}\n").as_bytes());
    }
    (out.0, states)
}

#[test]
fn the_account_cache_changes_nothing_even_when_batches_are_thrown_away() {
    let lines = common::generated_lines(&GenOptions {
        events: 4_000,
        accounts: 60,
        seed: 5,
        days: 60,
        refund_percent: 5.0,
        reversal_percent: 2.0,
        duplicate_percent: 1.0,
        ..GenOptions::default()
    });
    let (records, states) = run_batches(&lines, 0, None);
    assert!(records.len() > 100_000 && states.len() > 1_000, "a real workload");
    // 64 KiB holds a few dozen of these accounts: evictions all along.
    for (cache, discard) in [(256 << 20, None), (64 << 10, None), (256 << 20, Some(3)), (64 << 10, Some(2))] {
        let (r, s) = run_batches(&lines, cache, discard);
        assert!(r == records, "records differ with cache {cache}, discarding {discard:?}");
        assert!(s == states, "stored states differ with cache {cache}, discarding {discard:?}");
    }
}

/// Runs `lines` through a processor in batches of `size` on a store of its
/// own, as the engine does when `end_after_clocks` (each batch ends once
/// its clocks fired the rules' limit; the rest is fed again). Returns the
/// records, every account's stored state, the totals, and how many
/// batches ended early.
fn run_clocked(
    lines: &[String],
    rules: &std::sync::Arc<accrual::rules::Rules>,
    size: usize,
    end_after_clocks: bool,
) -> (Vec<u8>, Vec<u8>, accrual::pipeline::BatchStats, usize) {
    use accrual::pipeline::{BatchStats, Input, Processor};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let mut processor = Processor::new(rules.clone());
    if end_after_clocks {
        processor = processor.ending_batches_after_clocks();
    }
    let (mut progress, mut out, mut total, mut ended_early) =
        (accrual::store::Progress::default(), Lines::default(), BatchStats::default(), 0);
    let mut next = 0;
    while next < lines.len() {
        let inputs: Vec<Input<'_>> = lines[next..(next + size).min(lines.len())]
            .iter()
            .enumerate()
            .map(|(i, l)| Input {
                offset: (next + i) as u64,
                key: b"",
                payload: l.as_bytes(),
                timestamp: None,
            })
            .collect();
        let mut batch = store.batch();
        let stats = processor.process(&store, 0, &mut progress, &inputs, &mut batch, &mut out).unwrap();
        store.commit(batch).unwrap();
        next += inputs.len() - stats.unprocessed as usize;
        assert_eq!(progress.next_offset, next as u64, "progress stops where the batch ended");
        ended_early += usize::from(stats.unprocessed > 0);
        total += BatchStats { unprocessed: 0, ..stats };
    }
    let mut states = Vec::new();
    for (account, state) in store.accounts(0).unwrap() {
        states.extend_from_slice(format!("{account}: {state:?}\n").as_bytes());
    }
    (out.0, states, total, ended_early)
}

#[test]
fn clocks_cut_to_their_limit_fire_the_same_whatever_the_batches() {
    let lines = common::with_clocks(
        common::generated_lines(&GenOptions {
            events: 6_000,
            accounts: 300,
            seed: 17,
            days: 90,
            refund_percent: 3.0,
            duplicate_percent: 1.0,
            ..GenOptions::default()
        }),
        150,
    );
    let text = std::fs::read_to_string(repo_path("config/rules.lifecycle.toml")).unwrap();
    let rules = common::rules_from(&text.replacen(
        "statement_day = 15",
        "statement_day = 15\nmax_accounts_per_clock = 5",
        1,
    ));
    let (records, states, stats, _) = run_clocked(&lines, &rules, 100_000, false);
    assert!(stats.clocks_cut > 5 && stats.clock_accounts > 100, "clocks were cut often: {stats:?}");
    for (size, end_after_clocks) in [(1, false), (37, true), (500, true), (100_000, true)] {
        let (r, s, st, ended_early) = run_clocked(&lines, &rules, size, end_after_clocks);
        assert!(r == records, "records differ in batches of {size}, ending after clocks: {end_after_clocks}");
        assert!(
            s == states,
            "stored states differ in batches of {size}, ending after clocks: {end_after_clocks}"
        );
        assert_eq!(st, stats);
        if end_after_clocks && size > 1 {
            assert!(ended_early > 0, "batches of {size} ended after their clocks");
        }
    }
}
