//! Any bytes as an event: no panic, and the one-pass reader of the flat
//! shape gives exactly what simd-json's general path gives.
#![no_main]

use accrual_core::events::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut both = Decoder::new();
    let fast = format!("{:?}", both.decode(data));
    let general = format!("{:?}", Decoder::new().decode_general(data));
    assert_eq!(fast, general, "the two decoding paths disagree on {:?}", String::from_utf8_lossy(data));
});
