//! Any text as a rules file: a clear error or compiled rules, never a
//! panic; and rules that compile evaluate a purchase, a refund and a
//! clock without one.
#![no_main]

use accrual_core::accrue::{Core, Effects};
use accrual_core::events::Decoder;
use accrual_core::state::AccountState;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const EVENTS: [&str; 3] = [
    r#"{"event_id":"p1","type":"purchase","account_id":"a","amount":"1234.56","currency":"RUB","mcc":"5411","merchant_id":"M-1","partner_id":"MEGAMART","occurred_at":"2026-12-04T10:00:00+03:00"}"#,
    r#"{"event_id":"r1","type":"refund","account_id":"a","original_event_id":"p1","amount":"234.56","currency":"RUB","occurred_at":"2026-12-05T10:00:00+03:00"}"#,
    r#"{"event_id":"d1","type":"redemption","account_id":"a","program":"points","amount":"10","occurred_at":"2027-06-05T10:00:00+03:00"}"#,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(rules) = accrual_core::rules::parse(text, "fuzz.toml") else { return };
    let _ = rules.describe();
    let mut core = Core::new(Arc::new(rules));
    let mut state = AccountState::default();
    let mut effects = Effects::default();
    let mut decoder = Decoder::new();
    for line in EVENTS {
        let event = decoder.decode(line.as_bytes()).expect("the fixed events decode");
        effects.clear();
        core.apply(&mut state, &event, &mut effects);
    }
});
