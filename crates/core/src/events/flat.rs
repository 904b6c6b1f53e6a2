//! The common shape of an event, read in one forward pass: a single JSON
//! object of strings without escapes or control characters, whole
//! non-negative numbers, `true`, `false` and `null`, spaces at most between
//! them. That is what banks' producers send, and one pass finds its quotes
//! with SSE2 compares and walks from quote to quote, without simd-json's
//! structural index and tape: about two thirds of its cost
//! (docs/benchmarks-history.md, "Core benchmarks").
//!
//! Anything else (escapes, nested values, fractions or exponents, tabs or
//! newlines, invalid UTF-8 or JSON) returns `None`, and the event
//! takes the general simd-json path, which decides what it is. So this
//! path only ever accepts valid JSON, and gives the same fields simd-json
//! would (a property test compares the two).

use super::DecodeError;
use super::decode::{Fields, Raw};

/// Padding the caller leaves past the document: whole groups of 64 bytes
/// are read.
pub(super) const PADDING: usize = 64;

/// Of a block of 16 bytes (bit `i` for byte `i`): its quotes, and the
/// bytes that rule the fast path out: control characters (JSON forbids
/// them raw in strings; outside strings only a space is taken here) and
/// backslashes (escapes). A few SSE2 compares, which every x86-64 CPU has.
#[cfg(target_arch = "x86_64")]
fn block_bits(block: &[u8; 16]) -> (u16, u16) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: the pointer is to 16 readable bytes (an unaligned load is
    // allowed), and SSE2 is part of the x86-64 baseline.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)));
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let special = _mm_movemask_epi8(_mm_or_si128(control, backslash));
        (quote as u16, special as u16)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn block_bits(block: &[u8; 16]) -> (u16, u16) {
    block_bits_portable(block)
}

/// [`block_bits`] byte by byte: for other processors, and to test it.
#[cfg_attr(target_arch = "x86_64", allow(dead_code, reason = "only tests use it where SSE2 serves"))]
fn block_bits_portable(block: &[u8; 16]) -> (u16, u16) {
    block.iter().enumerate().fold((0, 0), |(quote, special), (i, &b)| {
        (quote | (u16::from(b == b'"') << i), special | (u16::from(b < 0x20 || b == b'\\') << i))
    })
}

/// Where the quotes of `bytes[..len]` are (bit `i % 64` of word `i / 64`);
/// `None` if any byte rules the fast path out (see [`block_bits`]).
/// `bytes` holds [`PADDING`] bytes past `len`.
fn quotes(bytes: &[u8], len: usize, words: &mut Vec<u64>) -> Option<()> {
    words.clear();
    let mut start = 0;
    while start < len {
        let (mut quote, mut special) = (0u64, 0u64);
        for i in 0..4 {
            let (q, s) = block_bits(bytes.get(start + 16 * i..)?.first_chunk::<16>()?);
            quote |= u64::from(q) << (16 * i);
            special |= u64::from(s) << (16 * i);
        }
        // Bytes past the end (padding) count for nothing.
        let real = if len - start >= 64 { u64::MAX } else { (1u64 << (len - start)) - 1 };
        if special & real != 0 {
            return None;
        }
        words.push(quote & real);
        start += 64;
    }
    Some(())
}

/// The quotes of a document in order, each taken once.
struct Quotes<'w> {
    words: &'w [u64],
    word: usize,
    bits: u64,
}

impl Quotes<'_> {
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.word += 1;
            self.bits = *self.words.get(self.word)?;
        }
        let at = self.word * 64 + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }

    /// The string opening at `at`: its contents' range, checking that the
    /// next quote is the one at `at`.
    fn string(&mut self, at: usize) -> Option<(usize, usize)> {
        if self.next()? != at {
            return None;
        }
        Some((at + 1, self.next()?))
    }
}

/// The text of `doc` from just past one quote to the next.
fn between(doc: &str, start: usize, end: usize) -> Option<&str> {
    doc.get(start..end)
}

/// Past the spaces at `at` (the zero padding stops it at the end).
fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    at
}

/// A whole number at `at` of at most 19 digits without a leading zero (so
/// it fits `u64`, as simd-json gives it), and where it ends. A fraction or
/// an exponent is for the general path (the caller finds no delimiter).
fn unsigned(bytes: &[u8], start: usize) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut at = start;
    while let Some(&d @ b'0'..=b'9') = bytes.get(at) {
        // Wraps past 19 digits (rejected below) instead of overflowing:
        // any number of digits is outside input.
        n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        at += 1;
    }
    let digits = at - start;
    let leading_zero = digits > 1 && bytes[start] == b'0';
    (digits > 0 && digits <= 19 && !leading_zero).then_some((n, at))
}

/// Reads the fields of `bytes[..len]` if it has the flat shape (see the
/// module) into `fields` (empty before); `None` for the general path, with
/// `fields` partly filled. `bytes` must hold [`PADDING`] bytes of zeros
/// past `len`; `words` is scratch space for the quotes. A duplicate known
/// field is an error either way.
pub(super) fn read<'a>(
    bytes: &'a [u8],
    len: usize,
    words: &mut Vec<u64>,
    fields: &mut Fields<'a>,
) -> Option<Result<(), DecodeError>> {
    quotes(bytes, len, words)?;
    let doc = std::str::from_utf8(&bytes[..len]).ok()?;
    let mut quotes = Quotes { words, word: 0, bits: *words.first()? };
    let mut duplicate = None;
    let mut at = skip_spaces(bytes, 0);
    if bytes[at] != b'{' {
        return None;
    }
    at = skip_spaces(bytes, at + 1);
    if bytes[at] == b'}' {
        at += 1;
    } else {
        loop {
            if bytes[at] != b'"' {
                return None;
            }
            let (start, end) = quotes.string(at)?;
            let key = between(doc, start, end)?;
            at = skip_spaces(bytes, end + 1);
            if bytes[at] != b':' {
                return None;
            }
            at = skip_spaces(bytes, at + 1);
            let raw = match bytes[at] {
                b'"' => {
                    let (start, end) = quotes.string(at)?;
                    at = end + 1;
                    Some(Raw::Str(between(doc, start, end)?))
                }
                b'0'..=b'9' => {
                    let (n, end) = unsigned(bytes, at)?;
                    at = end;
                    Some(Raw::Unsigned(n))
                }
                _ => {
                    let rest = doc.get(at..)?;
                    let (raw, word) = [(Some(Raw::Bool), "true"), (Some(Raw::Bool), "false"), (None, "null")]
                        .into_iter()
                        .find(|(_, word)| rest.starts_with(word))?;
                    at += word.len();
                    raw
                }
            };
            if let Some((slot, name)) = fields.slot(key) {
                if slot.is_some() {
                    duplicate.get_or_insert(name);
                }
                *slot = raw;
            }
            at = skip_spaces(bytes, at);
            match bytes[at] {
                b',' => at = skip_spaces(bytes, at + 1),
                b'}' => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_spaces(bytes, at) != len || quotes.next().is_some() {
        return None;
    }
    Some(match duplicate {
        Some(name) => Err(DecodeError::DuplicateField(name)),
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Decoder;
    use accrual_datagen::{self as datagen, GenOptions};
    use proptest::prelude::*;

    fn padded(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.resize(text.len() + PADDING, 0);
        v
    }

    /// Both paths on the same bytes, the fields read and the event decoded:
    /// the flat path's when it takes the event, and simd-json's.
    fn both(input: &[u8]) -> (Option<String>, String) {
        let mut d = Decoder::new();
        let text = {
            let mut v = input.to_vec();
            v.resize(input.len() + PADDING, 0);
            v
        };
        let mut fields = Fields::default();
        let flat = read(&text, input.len(), &mut Vec::new(), &mut fields).map(|read| {
            let fields = format!("{:?}", read.map(|()| fields));
            format!("{fields}\n{:?}", d.decode_by(input, true))
        });
        let general = format!(
            "{}\n{:?}",
            super::super::decode::general_fields(input),
            Decoder::new().decode_by(input, false)
        );
        (flat, general)
    }

    #[test]
    fn generated_events_take_the_flat_path_and_decode_as_simd_json_does() {
        let opts = GenOptions { events: 3_000, accounts: 100, seed: 5, ..GenOptions::default() };
        let mut text = Vec::new();
        datagen::generate(&opts, &mut text).unwrap();
        let mut flat = 0;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let (fast, general) = both(line);
            if let Some(fast) = fast {
                flat += 1;
                assert_eq!(fast, general, "{}", String::from_utf8_lossy(line));
            }
        }
        // Every generated event but the deliberately malformed ones.
        assert!(flat >= 2_900, "only {flat} of 3000 took the flat path");
    }

    #[test]
    fn shapes_outside_the_flat_path_go_to_simd_json() {
        for text in [
            r#"{"event_id":"a\"b"}"#,
            r#"{"x":{"y":1}}"#,
            r#"{"x":[1]}"#,
            r#"{"amount":1.5}"#,
            r#"{"amount":1e3}"#,
            r#"{"amount":-1}"#,
            r#"{"amount":01}"#,
            r#"{"amount":12345678901234567890}"#,
            r#"{"amount":99999999999999999999}"#,
            r#"{"mcc":1234567890123456789012345678901234567890}"#,
            "{\"a\":\"b\"}\n",
            "{\"a\":\t\"b\"}",
            r#"{"a":"b"} x"#,
            r#"{"a":"b",}"#,
            r#"{"a" "b"}"#,
            r#"{"a":tru}"#,
            r#"{"a":"b"#,
            r#"["a"]"#,
            "",
        ] {
            assert!(
                read(&padded(text), text.len(), &mut Vec::new(), &mut Fields::default()).is_none(),
                "{text}"
            );
        }
        let invalid_utf8 = b"{\"a\":\"\xc3\"}";
        let mut padded_bytes = invalid_utf8.to_vec();
        padded_bytes.resize(invalid_utf8.len() + PADDING, 0);
        assert!(read(&padded_bytes, invalid_utf8.len(), &mut Vec::new(), &mut Fields::default()).is_none());
        for text in
            [r#"{}"#, r#" { "a" : "b" , "c" : 12 , "d" : true , "e" : null } "#, r#"{"a":false,"b":"é€"}"#]
        {
            assert!(
                matches!(
                    read(&padded(text), text.len(), &mut Vec::new(), &mut Fields::default()),
                    Some(Ok(_))
                ),
                "{text}"
            );
        }
        let dup = r#"{"event_id":"a","event_id":"b"}"#;
        assert!(matches!(
            read(&padded(dup), dup.len(), &mut Vec::new(), &mut Fields::default()),
            Some(Err(DecodeError::DuplicateField("event_id")))
        ));
    }

    proptest! {
        /// The vector form finds what the byte-by-byte form finds.
        #[test]
        fn block_bits_agree(block in proptest::array::uniform16(proptest::sample::select(
            b"\"\\ \x00\x1f\x20\x7f\x80\xffa{".to_vec()))) {
            prop_assert_eq!(block_bits(&block), block_bits_portable(&block));
        }
    }

    proptest! {
        /// Whole numbers of any length in any field (20 digits and more
        /// overflowed the reader once): no panic, and whenever the flat
        /// path takes one it agrees with simd-json.
        #[test]
        fn long_numbers_never_panic(
            field in proptest::sample::select(vec!["amount", "mcc", "statement_day", "event_id", "other"]),
            digits in "[1-9][0-9]{0,44}",
        ) {
            let text = format!(r#"{{"event_id":"e","type":"purchase","{field}":{digits}}}"#);
            let (fast, general) = both(text.as_bytes());
            if let Some(fast) = fast {
                prop_assert!(digits.len() <= 19, "flat path took {}", text);
                prop_assert_eq!(fast, general, "{}", text);
            }
        }
    }

    const BASE: &str = r#"{"event_id":"e-1","type":"purchase","account_id":"acc-42","card_id":"c-9","amount":"1234.56","currency":"RUB","mcc":"5411","merchant_id":"m-7","partner_id":null,"channel":"pos","occurred_at":"2026-11-20T14:03:00+03:00","flag":true}"#;

    proptest! {
        /// Any edit of a flat event (bytes that matter to JSON inserted,
        /// replaced or removed anywhere): whenever the flat path takes the
        /// result, it is exactly simd-json's, error or event.
        #[test]
        fn edits_decode_as_simd_json_does(
            edits in proptest::collection::vec((0usize..400, 0u8..3, proptest::sample::select(
                b"\"{}[],: 0159.-eEtfnul\\\x01\x7f\xc3a".to_vec())), 1..4),
        ) {
            let mut bytes = BASE.as_bytes().to_vec();
            for (at, op, b) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, b),
                    1 if at < bytes.len() => bytes[at] = b,
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => {}
                }
            }
            let (fast, general) = both(&bytes);
            if let Some(fast) = fast {
                prop_assert_eq!(fast, general, "{}", String::from_utf8_lossy(&bytes));
            }
        }

        /// Objects of known and unknown keys with strings, whole numbers
        /// and literals, spaced or not: the flat path takes every one and
        /// agrees with simd-json.
        #[test]
        fn flat_objects_decode_as_simd_json_does(
            pairs in proptest::collection::vec((
                proptest::sample::select(vec!["event_id", "type", "account_id", "amount", "mcc", "currency",
                    "merchant_id", "occurred_at", "status", "statement_day", "other", ""]),
                prop_oneof![
                    "[ -~é€&&[^\"\\\\]]{0,30}".prop_map(|s| format!("\"{s}\"")),
                    (0u64..u64::MAX / 2).prop_map(|n| n.to_string()),
                    Just("true".to_string()), Just("false".to_string()), Just("null".to_string()),
                    Just("\"purchase\"".to_string()), Just("\"2026-11-20T14:03:00Z\"".to_string()),
                    Just("\"5411\"".to_string()), Just("\"12.50\"".to_string()),
                ],
            ), 0..12),
            spaced in any::<bool>(),
        ) {
            let sp = if spaced { " " } else { "" };
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{sp}\"{k}\"{sp}:{sp}{v}{sp}")).collect();
            let text = format!("{sp}{{{}}}{sp}", body.join(","));
            let (fast, general) = both(text.as_bytes());
            prop_assert!(fast.is_some(), "flat path refused {}", text);
            prop_assert_eq!(fast.unwrap(), general, "{}", text);
        }
    }
}
