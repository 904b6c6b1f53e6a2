//! Shared bench input: the same realistic events for every bench.
#![allow(dead_code, reason = "each bench uses a part of the shared helpers")]

use accrual::accrue::{Core, Effects};
use accrual::datagen::{self, GenOptions};
use accrual::events::{Decoder, Event};
use accrual::rules::{self, Rules};
use accrual::state::AccountState;
// The hasher the pipeline's account maps use.
use foldhash::{HashMap, HashMapExt};
use std::hint::black_box;
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
    Arc::new(rules::load(&example_path()).expect("example rules load"))
}

fn example_path() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("config/rules.example.toml")
}

/// The example program in an IANA zone with daylight saving instead of
/// its fixed offset (what the zone lookup costs per event).
pub fn example_rules_in(zone: &str) -> Arc<Rules> {
    let text = std::fs::read_to_string(example_path()).expect("example rules");
    let text = text.replacen("timezone = \"+03:00\"", &format!("timezone = \"{zone}\""), 1);
    assert!(text.contains(zone), "the example's timezone line moved");
    Arc::new(rules::parse(&text, "rules.example.toml").expect("example rules parse"))
}

/// The loop of `core/apply_example_rules`: decoded events applied to
/// fresh account states. Returns the states (to be dropped outside the
/// timing) and the number of records.
pub fn apply_all<'e>(
    core: &mut Core,
    decoded: &[Event<'e>],
    out: &mut Effects,
) -> (HashMap<&'e str, AccountState>, usize) {
    let mut accounts = HashMap::<&str, AccountState>::new();
    let mut records = 0;
    for ev in decoded {
        out.clear();
        let state = accounts.entry(ev.account_id).or_default();
        black_box(core.apply(state, ev, out));
        records += out.records.len();
    }
    (accounts, records)
}

/// The loop of `core/decode_and_apply_example_rules`: each event decoded,
/// then applied to its account's state (created on first sight).
pub fn decode_and_apply_all(
    core: &mut Core,
    decoder: &mut Decoder,
    events: &[Vec<u8>],
    out: &mut Effects,
) -> (HashMap<String, AccountState>, usize) {
    let mut accounts = HashMap::<String, AccountState>::new();
    let mut records = 0;
    for e in events {
        if let Ok(ev) = decoder.decode(e) {
            out.clear();
            if !accounts.contains_key(ev.account_id) {
                accounts.insert(ev.account_id.to_string(), AccountState::default());
            }
            if let Some(state) = accounts.get_mut(ev.account_id) {
                black_box(core.apply(state, &ev, out));
                records += out.records.len();
            }
        }
    }
    (accounts, records)
}

// The allocator the binary uses, so the benches measure what runs; each
// bench also sets it up as the binary does (`accrual::allocator::configure`).
#[global_allocator]
static ALLOCATOR: accrual::allocator::Allocator = accrual::allocator::Allocator;
