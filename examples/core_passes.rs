//! The loop of the `core/decode_and_apply_example_rules` bench, run a
//! given number of passes over the bench's 10,000 events, for
//! `scripts/core-instructions.sh`: callgrind counts two runs (1 and 11
//! passes) and the difference, divided by the events of 10 passes, is the
//! core's instructions per event with setup cancelled out.
//!
//!     cargo run --release --example core_passes -- PASSES [apply]
//!
//! `apply` runs the apply-only loop instead (events decoded once, before).

use accrual::accrue::{Core, Effects};
use accrual::datagen::{self, GenOptions};
use accrual::events::Decoder;
use accrual::state::AccountState;
use foldhash::{HashMap, HashMapExt};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: accrual::allocator::Allocator = accrual::allocator::Allocator;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let passes: usize = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let apply_only = args.next().is_some_and(|a| a == "apply");

    // The bench's input (benches/common): 10,000 events over 2,000 accounts.
    let opts = GenOptions { events: 10_000, accounts: 2_000, seed: 42, ..GenOptions::default() };
    let mut text = Vec::new();
    datagen::generate(&opts, &mut text)?;
    let events: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rules.example.toml");
    let rules = Arc::new(accrual::rules::load(&path)?);

    let mut core = Core::new(rules);
    let mut out = Effects::default();
    let mut records = 0usize;
    if apply_only {
        let mut decoders: Vec<Decoder> = events.iter().map(|_| Decoder::new()).collect();
        let decoded: Vec<_> =
            decoders.iter_mut().zip(&events).filter_map(|(d, e)| d.decode(e).ok()).collect();
        for _ in 0..passes {
            let mut accounts = HashMap::<&str, AccountState>::new();
            for ev in &decoded {
                out.clear();
                let state = accounts.entry(ev.account_id).or_default();
                black_box(core.apply(state, ev, &mut out));
                records += out.records.len();
            }
        }
    } else {
        let mut decoder = Decoder::new();
        for _ in 0..passes {
            let mut accounts = HashMap::<String, AccountState>::new();
            for e in &events {
                if let Ok(ev) = decoder.decode(e) {
                    out.clear();
                    if !accounts.contains_key(ev.account_id) {
                        accounts.insert(ev.account_id.to_string(), AccountState::default());
                    }
                    if let Some(state) = accounts.get_mut(ev.account_id) {
                        black_box(core.apply(state, &ev, &mut out));
                        records += out.records.len();
                    }
                }
            }
        }
    }
    println!("{passes} passes over {} events: {records} records", events.len());
    Ok(())
}
