//! Ledger batch apply: the batch processor over 10,000 events (decode,
//! dedupe lookups, core, account reads) staged into one RocksDB WriteBatch
//! and committed, with and without syncing the WAL.

mod common;

use accrual::accrue::{AccrualRecord, NoEffect};
use accrual::events::Event;
use accrual::pipeline::{Input, Processor, Sink};
use accrual::store::{Progress, Store, StoreOptions};
use accrual::time::Timestamp;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Counts outcomes, as the engine's sinks do.
#[derive(Default)]
struct Count(u64);

impl Sink for Count {
    fn accrued(&mut self, _: u64, _: &Event<'_>, records: &[AccrualRecord]) {
        self.0 += records.len() as u64;
    }
    fn no_effect(&mut self, _: u64, _: &Event<'_>, _: NoEffect) {}
    fn duplicate(&mut self, _: u64, _: &Event<'_>, _: Timestamp) {}
    fn dead_letter(&mut self, _: &Input<'_>, _: &'static str, _: &str) {}
}

fn bench(c: &mut Criterion) {
    accrual::allocator::configure();
    let events = common::events();
    let inputs: Vec<Input<'_>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Input { offset: i as u64, key: b"", payload: e, timestamp: None })
        .collect();
    let rules = common::example_rules();
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.sample_size(20);
    for sync in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(dir.path(), &StoreOptions { sync, ..StoreOptions::default() }).expect("open store");
        let mut processor = Processor::new(rules.clone());
        // A fresh partition per iteration: empty state, nothing seen before.
        let mut partition = 0u32;
        let name = if sync { "batch_of_10k_synced" } else { "batch_of_10k_unsynced" };
        group.bench_function(name, |b| {
            b.iter(|| {
                partition += 1;
                let mut progress = Progress::default();
                let mut batch = store.batch();
                let mut sink = Count::default();
                processor
                    .process(&store, partition, &mut progress, &inputs, &mut batch, &mut sink)
                    .expect("process");
                store.commit(batch).expect("commit");
                sink.0
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
