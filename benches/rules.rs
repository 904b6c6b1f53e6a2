//! Rule evaluation on the example program: the pure core applying events
//! to in-memory account states (no disk), with and without decoding.

mod common;

use accrual::accrue::{Core, Effects};
use accrual::events::Decoder;
use accrual::state::AccountState;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
// The hasher the pipeline's account maps use.
use foldhash::{HashMap, HashMapExt};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let events = common::events();
    let rules = common::example_rules();
    // One decoder per event so decoded events can be kept for "apply only".
    let mut decoders: Vec<Decoder> = events.iter().map(|_| Decoder::new()).collect();
    let decoded: Vec<_> = decoders.iter_mut().zip(&events).filter_map(|(d, e)| d.decode(e).ok()).collect();

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("apply_example_rules", |b| {
        let mut core = Core::new(rules.clone());
        let mut out = Effects::default();
        b.iter_batched(
            HashMap::<&str, AccountState>::new,
            |mut accounts| {
                for ev in &decoded {
                    out.clear();
                    let state = accounts.entry(ev.account_id).or_default();
                    black_box(core.apply(state, ev, &mut out));
                }
                accounts
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode_and_apply_example_rules", |b| {
        let mut core = Core::new(rules.clone());
        let mut decoder = Decoder::new();
        let mut out = Effects::default();
        b.iter_batched(
            HashMap::<String, AccountState>::new,
            |mut accounts| {
                for e in &events {
                    if let Ok(ev) = decoder.decode(e) {
                        out.clear();
                        if !accounts.contains_key(ev.account_id) {
                            accounts.insert(ev.account_id.to_string(), AccountState::default());
                        }
                        if let Some(state) = accounts.get_mut(ev.account_id) {
                            black_box(core.apply(state, &ev, &mut out));
                        }
                    }
                }
                accounts
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
