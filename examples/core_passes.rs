//! The loops of the `core` benches (benches/rules.rs), run a given number
//! of passes over the bench's 10,000 events, for
//! `scripts/core-instructions.sh`: callgrind counts two runs (1 and 11
//! passes) and the difference, divided by the events of 10 passes, is the
//! core's instructions per event with setup cancelled out.
//!
//!     cargo run --release --example core_passes -- PASSES [apply]
//!
//! `apply` runs the apply-only loop instead (events decoded once, before).

// The benches' input, loops and allocator.
#[path = "../benches/common/mod.rs"]
mod common;

use accrual::accrue::{Core, Effects};
use accrual::events::Decoder;

fn main() -> anyhow::Result<()> {
    accrual::allocator::configure();
    let mut args = std::env::args().skip(1);
    let passes: usize = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let apply_only = args.next().is_some_and(|a| a == "apply");

    let events = common::events();
    let mut core = Core::new(common::example_rules());
    let mut out = Effects::default();
    let mut records = 0;
    if apply_only {
        let mut decoders: Vec<Decoder> = events.iter().map(|_| Decoder::new()).collect();
        let decoded: Vec<_> =
            decoders.iter_mut().zip(&events).filter_map(|(d, e)| d.decode(e).ok()).collect();
        for _ in 0..passes {
            records += common::apply_all(&mut core, &decoded, &mut out).1;
        }
    } else {
        let mut decoder = Decoder::new();
        for _ in 0..passes {
            records += common::decode_and_apply_all(&mut core, &mut decoder, &events, &mut out).1;
        }
    }
    println!("{passes} passes over {} events: {records} records", events.len());
    Ok(())
}
