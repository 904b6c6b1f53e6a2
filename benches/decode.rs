//! Decoding events: the engine's decoder (the flat one-pass reader these
//! events take, simd-json's tape for other shapes; reused buffers,
//! borrowed strings) against plain simd-json serde and serde_json on the
//! same events, each producing the same typed fields.

mod common;

use accrual::events::{Decoder, Mcc};
use accrual::money;
use accrual::time::Timestamp;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use std::hint::black_box;

/// The fields a serde-based decoder would borrow.
#[derive(Deserialize)]
struct Borrowed<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    account_id: &'a str,
    amount: Option<&'a str>,
    mcc: Option<&'a str>,
    merchant_id: Option<&'a str>,
    occurred_at: &'a str,
}

/// Turns borrowed strings into the same typed values our decoder yields.
fn typed(e: &Borrowed<'_>) -> usize {
    let amount = e.amount.map(|a| money::parse_amount(a, false).is_ok());
    let mcc = e.mcc.and_then(Mcc::parse);
    let at = Timestamp::parse_rfc3339(e.occurred_at).is_ok();
    e.event_id.len()
        + e.kind.len()
        + e.account_id.len()
        + e.merchant_id.map_or(0, str::len)
        + usize::from(amount.unwrap_or(false))
        + usize::from(mcc.is_some())
        + usize::from(at)
}

fn bench(c: &mut Criterion) {
    accrual::allocator::configure();
    let events = common::events();
    let bytes: usize = events.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    eprintln!("decode input: {} events, {} bytes on average", events.len(), bytes / events.len());

    group.bench_function("engine_decoder_reused", |b| {
        let mut decoder = Decoder::new();
        b.iter(|| {
            let mut ok = 0;
            for e in &events {
                ok += usize::from(decoder.decode(black_box(e)).is_ok());
            }
            ok
        })
    });
    group.bench_function("simd_json_serde_fresh_buffers", |b| {
        b.iter(|| {
            let mut n = 0;
            for e in &events {
                let mut copy = e.clone();
                if let Ok(ev) = simd_json::serde::from_slice::<Borrowed<'_>>(black_box(&mut copy)) {
                    n += typed(&ev);
                }
            }
            n
        })
    });
    group.bench_function("simd_json_serde_reused_buffers", |b| {
        let mut buffers = simd_json::Buffers::default();
        let mut copy = Vec::with_capacity(1024);
        b.iter(|| {
            let mut n = 0;
            for e in &events {
                copy.clear();
                copy.extend_from_slice(e);
                if let Ok(ev) = simd_json::serde::from_slice_with_buffers::<Borrowed<'_>>(
                    black_box(&mut copy),
                    &mut buffers,
                ) {
                    n += typed(&ev);
                }
            }
            n
        })
    });
    group.bench_function("serde_json_borrowed", |b| {
        b.iter(|| {
            let mut n = 0;
            for e in &events {
                if let Ok(ev) = serde_json::from_slice::<Borrowed<'_>>(black_box(e)) {
                    n += typed(&ev);
                }
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
