//! Rule evaluation on the example program: the pure core applying events
//! to in-memory account states (no disk), with and without decoding.

mod common;

use accrual::accrue::{Core, Effects};
use accrual::events::Decoder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    accrual::allocator::configure();
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
        // The states are returned, so they are dropped outside the timing.
        b.iter_with_large_drop(|| common::apply_all(&mut core, &decoded, &mut out))
    });
    let berlin = common::example_rules_in("Europe/Berlin");
    group.bench_function("apply_example_rules_europe_berlin", |b| {
        let mut core = Core::new(berlin.clone());
        let mut out = Effects::default();
        b.iter_with_large_drop(|| common::apply_all(&mut core, &decoded, &mut out))
    });
    group.bench_function("decode_and_apply_example_rules", |b| {
        let mut core = Core::new(rules.clone());
        let mut decoder = Decoder::new();
        let mut out = Effects::default();
        b.iter_with_large_drop(|| common::decode_and_apply_all(&mut core, &mut decoder, &events, &mut out))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
