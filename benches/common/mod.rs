//! Shared bench input: the same realistic events for every bench.
#![allow(dead_code)]

use accrual::datagen::{self, GenOptions};
use accrual::rules::{self, Rules};
use std::path::PathBuf;
use std::sync::Arc;

pub const EVENTS: usize = 10_000;

/// 10,000 generated events (the example portfolio: purchases, refunds,
/// reversals), one JSON document each.
pub fn events() -> Vec<Vec<u8>> {
    let opts = GenOptions { events: EVENTS as u64, accounts: 2_000, seed: 42, ..GenOptions::default() };
    let mut out = Vec::new();
    datagen::generate(&opts, &mut out).expect("generate in memory");
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

pub fn example_rules() -> Arc<Rules> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rules.example.toml");
    Arc::new(rules::load(&path).expect("example rules load"))
}

// The allocator the binary uses, so the benches measure what runs.
#[global_allocator]
static ALLOCATOR: accrual::allocator::Allocator = accrual::allocator::Allocator;
