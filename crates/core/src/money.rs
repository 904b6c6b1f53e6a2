//! Exact decimal money: strict parsing and explicit rounding.
//!
//! Amounts never pass through `f64`. Parsing builds the mantissa digit by
//! digit, so `"1234.56"` and the JSON number `1234.56` are the same exact
//! value, and anything out of range is a typed error instead of a silent
//! approximation.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Largest amount an event may carry (one trillion units): far above any card
/// transaction, and small enough that every rule computation fits in a
/// `Decimal` without overflow.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 1e12

/// Most decimal places an amount may carry.
pub const MAX_SCALE: u32 = 6;

/// Why a decimal could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is empty")]
    Empty,
    #[error("is not a decimal number")]
    NotANumber,
    #[error("is negative")]
    Negative,
    #[error("must be greater than zero")]
    Zero,
    #[error("exceeds the maximum of 1000000000000")]
    TooLarge,
    #[error("has more than {MAX_SCALE} decimal places")]
    TooPrecise,
}

/// Parses a plain decimal (`123`, `123.45`; with `allow_exponent`, also the
/// JSON forms `1.2345e2` and `-0`). No sign other than a leading `-`, no
/// whitespace, no thousands separators. Negative values are reported as
/// [`AmountError::Negative`] so callers can say so.
pub fn parse_decimal(text: &str, allow_exponent: bool) -> Result<Decimal, AmountError> {
    match parse_plain(text.as_bytes()) {
        Some(value) => Ok(value),
        None => parse_general(text, allow_exponent),
    }
}

/// The form nearly every amount takes, `1234` or `1234.56` (at most 19
/// bytes, at most [`MAX_SCALE`] places, no sign or exponent), in 64-bit
/// arithmetic, where the general parser works on a 128-bit mantissa with
/// checks this form never needs. `None` for anything else, which the
/// general parser then reads (or rejects) as before; a proptest checks
/// they agree.
fn parse_plain(bytes: &[u8]) -> Option<Decimal> {
    // 19 digits fit a u64 (10^19 - 1 < 2^64).
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut point = None;
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'0'..=b'9' => mantissa = mantissa * 10 + u64::from(c - b'0'),
            // A point needs a digit on each side.
            b'.' if point.is_none() && i > 0 && i + 1 < bytes.len() => point = Some(i),
            _ => return None,
        }
    }
    let scale = point.map_or(0, |p| bytes.len() - p - 1) as u32;
    if scale > MAX_SCALE {
        return None;
    }
    if mantissa == 0 {
        return Some(Decimal::ZERO);
    }
    Some(Decimal::from_i128_with_scale(i128::from(mantissa), scale))
}

/// Any decimal [`parse_decimal`] accepts.
fn parse_general(text: &str, allow_exponent: bool) -> Result<Decimal, AmountError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(AmountError::Empty);
    }
    let (negative, digits) = match bytes[0] {
        b'-' => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut mantissa: u128 = 0;
    let mut significant = 0u32;
    let mut scale: i64 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    let mut i = 0;
    while i < digits.len() {
        let c = digits[i];
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                if mantissa != 0 || c != b'0' {
                    significant += 1;
                }
                // 29 significant digits exceed what a Decimal holds.
                if significant > 28 {
                    return Err(AmountError::TooLarge);
                }
                mantissa = mantissa * 10 + u128::from(c - b'0');
                if seen_point {
                    scale += 1;
                }
            }
            b'.' if !seen_point && seen_digit => {
                seen_point = true;
                if i + 1 == digits.len() {
                    return Err(AmountError::NotANumber);
                }
            }
            b'e' | b'E' if allow_exponent && seen_digit => break,
            _ => return Err(AmountError::NotANumber),
        }
        i += 1;
    }
    if !seen_digit {
        return Err(AmountError::NotANumber);
    }
    if i < digits.len() {
        // Exponent part: e[+-]digits
        let exp_text = &digits[i + 1..];
        let (exp_negative, exp_digits) = match exp_text.first() {
            Some(b'-') => (true, &exp_text[1..]),
            Some(b'+') => (false, &exp_text[1..]),
            _ => (false, exp_text),
        };
        if exp_digits.is_empty() || exp_digits.len() > 4 {
            return Err(if exp_digits.is_empty() { AmountError::NotANumber } else { AmountError::TooLarge });
        }
        let mut exp: i64 = 0;
        for &d in exp_digits {
            if !d.is_ascii_digit() {
                return Err(AmountError::NotANumber);
            }
            exp = exp * 10 + i64::from(d - b'0');
        }
        scale += if exp_negative { exp } else { -exp };
    }
    if mantissa == 0 {
        return Ok(Decimal::ZERO);
    }
    if negative {
        return Err(AmountError::Negative);
    }
    // Fold a negative scale (positive exponent) into the mantissa.
    while scale < 0 {
        mantissa = mantissa.checked_mul(10).ok_or(AmountError::TooLarge)?;
        scale += 1;
    }
    // The written scale is kept ("1000.00" stays so in explanations), but
    // zeros beyond the precision limit carry no value.
    while scale > i64::from(MAX_SCALE) && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if scale > i64::from(MAX_SCALE) {
        return Err(AmountError::TooPrecise);
    }
    let mantissa = i128::try_from(mantissa).map_err(|_| AmountError::TooLarge)?;
    Decimal::try_from_i128_with_scale(mantissa, scale as u32).map_err(|_| AmountError::TooLarge)
}

/// Parses an event amount: a positive decimal no larger than [`MAX_AMOUNT`].
pub fn parse_amount(text: &str, allow_exponent: bool) -> Result<Decimal, AmountError> {
    let value = parse_decimal(text, allow_exponent)?;
    check_amount(value)
}

/// Checks the range of an event amount obtained some other way (an integer).
pub fn check_amount(value: Decimal) -> Result<Decimal, AmountError> {
    if value.is_sign_negative() && !value.is_zero() {
        Err(AmountError::Negative)
    } else if value.is_zero() {
        Err(AmountError::Zero)
    } else if cmp(value, MAX_AMOUNT) == Ordering::Greater {
        Err(AmountError::TooLarge)
    } else {
        Ok(value)
    }
}

/// How a computed reward is rounded to its step. Floor is the banking
/// default: the customer never gets a fraction of a kopeck they did not earn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundingMode {
    #[default]
    Floor,
    HalfUp,
    Ceiling,
}

impl RoundingMode {
    /// As the rules file names it.
    pub fn name(self) -> &'static str {
        match self {
            RoundingMode::Floor => "floor",
            RoundingMode::HalfUp => "half-up",
            RoundingMode::Ceiling => "ceiling",
        }
    }
}

impl fmt::Display for RoundingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decimal written exactly as `Decimal`'s `Display` writes it (same
/// bytes: sign, every digit of the scale), but from the mantissa as one
/// integer instead of a 96-bit division per digit: records and their
/// explanations write several decimals each, on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec(pub Decimal);

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Only ASCII digits, '.' and '-' were written.
        f.write_str(std::str::from_utf8(decimal_text(self.0, &mut buf)).unwrap_or(""))
    }
}

/// Appends `value` as [`Dec`] writes it.
pub fn push_decimal(out: &mut String, value: Decimal) {
    let mut buf = [0u8; 64];
    // SAFETY: `decimal_text` writes only digits, '-' and '.'.
    unsafe { push_ascii(out, decimal_text(value, &mut buf)) };
}

/// Appends text this crate wrote byte by byte from ASCII digits and
/// punctuation (decimals, timestamps), without checking it again: such
/// checks were a third of the cost of writing a decimal, and every record
/// writes several.
///
/// # Safety
///
/// `text` must be valid UTF-8 (the callers write only ASCII).
pub(crate) unsafe fn push_ascii(out: &mut String, text: &[u8]) {
    debug_assert!(text.is_ascii(), "not ASCII: {text:?}");
    // SAFETY: valid UTF-8, as the caller guarantees.
    out.push_str(unsafe { std::str::from_utf8_unchecked(text) });
}

/// "00" to "99": two digits per division by 100.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `value` into the end of `buf` and returns the text (ASCII).
fn decimal_text(value: Decimal, buf: &mut [u8; 64]) -> &[u8] {
    let scale = value.scale() as usize;
    let mantissa = value.mantissa().unsigned_abs();
    let end = buf.len();
    let mut at = end;
    if let Ok(mut small) = u64::try_from(mantissa) {
        // Within 64 bits (any amount of money): the fraction's digits one at
        // a time (programs keep 0-2), the point, then the whole part two
        // digits at a time, at least one.
        if scale > 0 {
            for _ in 0..scale {
                at -= 1;
                buf[at] = b'0' + (small % 10) as u8;
                small /= 10;
            }
            at -= 1;
            buf[at] = b'.';
        }
        while small >= 100 {
            let pair = (small % 100) as usize * 2;
            small /= 100;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if small >= 10 {
            let pair = small as usize * 2;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            at -= 1;
            buf[at] = b'0' + small as u8;
        }
    } else {
        at = wide_decimal_text(mantissa, scale, buf);
    }
    if value.is_sign_negative() {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// [`decimal_text`] for a mantissa beyond 64 bits, unsigned: where the
/// text starts in `buf`.
fn wide_decimal_text(mut mantissa: u128, scale: usize, buf: &mut [u8; 64]) -> usize {
    let end = buf.len();
    let mut at = end;
    while mantissa > 0 {
        at -= 1;
        buf[at] = b'0' + (mantissa % 10) as u8;
        mantissa /= 10;
    }
    // At least one digit before the point: zeros up to it.
    while end - at <= scale {
        at -= 1;
        buf[at] = b'0';
    }
    if scale > 0 {
        let point = end - scale;
        buf.copy_within(at..point, at - 1);
        at -= 1;
        buf[point - 1] = b'.';
    }
    at
}

/// Rounds `value` to a multiple of `step` (`0.01`, `1`, `10`...).
/// Returns `None` only on arithmetic overflow, which callers report.
pub fn round_to_step(value: Decimal, step: Decimal, mode: RoundingMode) -> Option<Decimal> {
    if step.is_zero() {
        return Some(value);
    }
    round_to_places(value, step, mode).or_else(|| round_by_division(value, step, mode))
}

fn round_by_division(value: Decimal, step: Decimal, mode: RoundingMode) -> Option<Decimal> {
    let units = value.checked_div(step)?;
    let rounded = match mode {
        RoundingMode::Floor => units.floor(),
        RoundingMode::Ceiling => units.ceil(),
        RoundingMode::HalfUp => units.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero),
    };
    rounded.checked_mul(step)
}

/// `m / divisor` (divisor > 0) rounded by `mode`, in the signed type `$t`
/// whose unsigned twin is `$u`: one rule for both widths, the 64-bit one
/// sparing amounts that fit it a 128-bit division.
macro_rules! rounded_quotient {
    ($m:expr, $divisor:expr, $mode:expr, $t:ty, $u:ty) => {{
        let (m, divisor): ($t, $t) = ($m, $divisor);
        let (q, r) = (m.div_euclid(divisor), m.rem_euclid(divisor));
        match $mode {
            RoundingMode::Floor => q,
            RoundingMode::Ceiling if r > 0 => q + 1,
            RoundingMode::Ceiling => q,
            // Half away from zero: compare the remainder of |m|.
            RoundingMode::HalfUp => {
                let (abs, d) = (m.unsigned_abs(), divisor as $u);
                let aq = if (abs % d) * 2 >= d { abs / d + 1 } else { abs / d } as $t;
                if m < 0 { -aq } else { aq }
            }
        }
    }};
}

/// Steps that are powers of ten (`0.01`, `1`, `10`, `100`...), the common
/// case: the same number at the same scale as dividing, rounding and
/// multiplying back, in integer arithmetic on the mantissa instead of two
/// 96-bit decimal operations (a measurable share of every purchase).
/// `None` where the general path might round differently or overflow, so
/// that it decides (and reports) those.
fn round_to_places(value: Decimal, step: Decimal, mode: RoundingMode) -> Option<Decimal> {
    const MAX_SCALE: i64 = 28;
    let step_zeros = power_of_ten(step.mantissa())?;
    // value / step = m * 10^-drop: `drop` digits of the mantissa go.
    let drop = i64::from(value.scale()) + i64::from(step_zeros) - i64::from(step.scale());
    let m = value.mantissa();
    // Amounts and rewards fit 64 bits: the whole computation in them (the
    // same number and scale as below, without 128-bit multiplications).
    if let (Ok(small), 1..=18, 0..=18) = (i64::try_from(m), drop, step_zeros) {
        let units = round_i64(small, POW10[drop as usize] as i64, mode);
        if units == 0 {
            return Some(Decimal::ZERO);
        }
        if let Some(mantissa) = units.checked_mul(POW10[step_zeros as usize] as i64) {
            return Some(Decimal::new(mantissa, step.scale()));
        }
    }
    let units = if drop <= 0 {
        m.checked_mul(10i128.checked_pow(u32::try_from(-drop).ok()?)?)?
    } else if let (Ok(small), true) = (i64::try_from(m), drop <= 18) {
        // Amounts fit 64 bits: the same arithmetic without 128-bit division.
        i128::from(round_i64(small, 10i64.pow(drop as u32), mode))
    } else if drop <= MAX_SCALE {
        rounded_quotient!(m, 10i128.pow(drop as u32), mode, i128, u128)
    } else {
        return None;
    };
    // The general path's quotient must fit a decimal too.
    if units.unsigned_abs() >= 1u128 << 96 {
        return None;
    }
    if units == 0 {
        // As the multiplication writes it: `0`, not `0.00`.
        return Some(Decimal::ZERO);
    }
    let mantissa = units.checked_mul(10i128.pow(step_zeros))?;
    Decimal::try_from_i128_with_scale(mantissa, step.scale()).ok()
}

/// `m / divisor` rounded by `mode`, as the 128-bit path rounds it.
fn round_i64(m: i64, divisor: i64, mode: RoundingMode) -> i64 {
    rounded_quotient!(m, divisor, mode, i64, u64)
}

/// 10^0 to 10^19, every power of ten a `u64` holds: a table, where `pow`
/// is a loop, and a rounding needs two of them.
const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `Some(k)` when `m` is `10^k`.
fn power_of_ten(m: i128) -> Option<u32> {
    let m = u64::try_from(m).ok().filter(|&m| m != 0)?;
    let k = m.ilog10();
    (POW10[k as usize] == m).then_some(k)
}

/// Orders two decimals as `Ord` does, faster where the scales differ by at
/// most 9 places (a purchase of `112.48` against a rule's `min_amount` of
/// `1000`): the smaller-scale mantissa is multiplied up in `i128` (a 96-bit
/// mantissa times 10^9 still fits) instead of `Ord`'s general rescaling,
/// which every amount condition of the rules would pay.
#[inline]
pub fn cmp(a: Decimal, b: Decimal) -> Ordering {
    let (sa, sb) = (a.scale(), b.scale());
    let (ma, mb) = (a.mantissa(), b.mantissa());
    match sa.cmp(&sb) {
        Ordering::Equal => ma.cmp(&mb),
        Ordering::Less if sb - sa <= 9 => (ma * 10i128.pow(sb - sa)).cmp(&mb),
        Ordering::Greater if sa - sb <= 9 => ma.cmp(&(mb * 10i128.pow(sa - sb))),
        _ => a.cmp(&b),
    }
}

/// `a < b`, by [`cmp`].
#[inline]
pub fn lt(a: Decimal, b: Decimal) -> bool {
    cmp(a, b) == Ordering::Less
}

/// The amount counted "per full N units": `value` floored to a multiple of `unit`.
pub fn full_units(value: Decimal, unit: Decimal) -> Option<Decimal> {
    round_to_step(value, unit, RoundingMode::Floor)
}

/// Sets the number of decimal places for output, so a balance is always
/// written the same way (`61.70`, never `61.7` in one record and `61.700`
/// in the next). Rounds toward zero only if the value carries more places,
/// which the rules' rounding steps prevent.
pub fn with_scale(value: Decimal, decimals: u32) -> Decimal {
    let scale = value.scale();
    if scale == decimals {
        return value;
    }
    // Money's mantissa fits 64 bits: scaled there (integer division
    // truncates toward zero) it costs a fraction of rust_decimal's rounding
    // and rescaling, and every record writes three such values.
    let scaled = i64::try_from(value.mantissa()).ok().and_then(|mantissa| {
        if scale < decimals {
            10i64.checked_pow(decimals - scale).and_then(|factor| mantissa.checked_mul(factor))
        } else {
            Some(10i64.checked_pow(scale - decimals).map_or(0, |factor| mantissa / factor))
        }
    });
    match scaled.and_then(|m| Decimal::try_new(m, decimals).ok()) {
        Some(v) => v,
        None => {
            let mut v = value.round_dp_with_strategy(decimals, RoundingStrategy::ToZero);
            v.rescale(decimals);
            v
        }
    }
}

/// The share of `total` that stays with the customer when `remaining` of
/// `original` is still not refunded, rounded down to `step`. Used for
/// proportional clawback and cap restoration so that successive partial
/// refunds add up exactly to the whole.
pub fn proportional_keep(
    total: Decimal,
    remaining: Decimal,
    original: Decimal,
    step: Decimal,
) -> Option<Decimal> {
    if remaining >= original {
        return Some(total);
    }
    if remaining <= Decimal::ZERO || original <= Decimal::ZERO {
        return Some(Decimal::ZERO);
    }
    let share = total.checked_mul(remaining)?.checked_div(original)?;
    round_to_step(share, step, RoundingMode::Floor).map(|v| v.min(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn rounding_to_places_agrees_with_division_in_value_and_scale() {
        let values = [
            "0",
            "0.004",
            "0.005",
            "0.015",
            "1.999",
            "-1.999",
            "-0.005",
            "12345.678901",
            "100",
            "7.1",
            "0.1234567890123456789012345678",
            "79228162514264337593543950335",
            "792281625142643375935439503.35",
            "9999999999999999999999999.999",
            "99999999999999999999999999.99",
            "-99999999999999999999999999.5",
            "150",
            "-150",
            "149.99",
            "-149.99",
            "250",
            "-250",
            "0.0000000000000000000000000001",
        ];
        let steps = ["1", "0.1", "0.01", "0.001", "0.0000000001", "10", "100", "1.0", "100.00", "0.05", "5"];
        for v in values {
            for step in steps {
                for mode in [RoundingMode::Floor, RoundingMode::Ceiling, RoundingMode::HalfUp] {
                    let (v, step) = (d(v), d(step));
                    let general = round_by_division(v, step, mode);
                    let got = round_to_step(v, step, mode);
                    assert_eq!(got, general, "{v} to {step} {mode}");
                    if let (Some(a), Some(b)) = (got, general) {
                        assert_eq!(Dec(a).to_string(), Dec(b).to_string(), "{v} to {step} {mode}");
                    }
                }
            }
        }
        // The fast path really serves the common steps.
        for step in ["0.01", "1", "10", "100", "1.0"] {
            assert!(round_to_places(d("12.345"), d(step), RoundingMode::Floor).is_some(), "{step}");
        }
        assert!(round_to_places(d("12.345"), d("0.05"), RoundingMode::Floor).is_none());
    }

    proptest::proptest! {
        /// Amounts in every form, plain or not: the 64-bit path gives the
        /// general parser's value and scale, or leaves it to it.
        #[test]
        fn plain_amounts_parse_as_the_general_parser_parses_them(
            text in "-?[0-9]{0,21}(\\.[0-9]{0,8})?(e-?[0-9]{1,2})?|[0-9.]{1,22}|0{1,3}\\.0{0,7}",
            exponent in proptest::bool::ANY,
        ) {
            let general = parse_general(&text, exponent);
            let parsed = parse_decimal(&text, exponent);
            proptest::prop_assert_eq!(parsed, general);
            if let (Ok(a), Ok(b)) = (parsed, general) {
                proptest::prop_assert_eq!(a.scale(), b.scale(), "{}", text);
            }
            if let Some(plain) = parse_plain(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(plain), general);
                proptest::prop_assert_eq!(plain.scale(), general.map_or(99, |g| g.scale()));
            }
        }

        /// Any two decimals, scales 0-28 (so both the fast path and the
        /// fallback are taken), zero and negative zero included.
        #[test]
        fn cmp_orders_as_ord_does(
            a in proptest::num::i128::ANY, sa in 0u32..=28, neg_a in proptest::bool::ANY,
            b in proptest::num::i128::ANY, sb in 0u32..=28, small in proptest::bool::ANY,
        ) {
            let mantissa = |m: i128| if small { m % 1_000_000 } else { m % (1i128 << 96) };
            let mut x = Decimal::from_i128_with_scale(mantissa(a), sa);
            x.set_sign_negative(neg_a);
            let y = Decimal::from_i128_with_scale(mantissa(b), sb);
            proptest::prop_assert_eq!(cmp(x, y), x.cmp(&y), "{} vs {}", x, y);
            proptest::prop_assert_eq!(cmp(x, x), Ordering::Equal);
            proptest::prop_assert_eq!(lt(x, y), x < y);
        }
    }

    proptest::proptest! {
        #[test]
        fn rounding_to_places_agrees_with_division_on_any_decimal(
            lo in proptest::prop_oneof![0u64..1_000_000, proptest::num::u64::ANY],
            hi in proptest::prop_oneof![proptest::strategy::Just(0u32), 0u32..=u32::MAX],
            negative in proptest::bool::ANY,
            scale in 0u32..=28,
            step_zeros in 0u32..=4,
            step_scale in 0u32..=6,
            mode in proptest::sample::select(vec![RoundingMode::Floor, RoundingMode::Ceiling, RoundingMode::HalfUp]),
        ) {
            let v = Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale);
            let step = Decimal::from_i128_with_scale(10i128.pow(step_zeros), step_scale);
            let general = round_by_division(v, step, mode);
            let got = round_to_step(v, step, mode);
            proptest::prop_assert_eq!(got, general);
            if let (Some(a), Some(b)) = (got, general) {
                proptest::prop_assert_eq!(Dec(a).to_string(), Dec(b).to_string());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn dec_and_push_decimal_write_what_display_writes_for_any_decimal(
            lo in proptest::prop_oneof![0u64..1_000, 0u64..100_000_000, proptest::num::u64::ANY],
            hi in proptest::prop_oneof![proptest::strategy::Just(0u32), 0u32..=u32::MAX],
            negative in proptest::bool::ANY,
            scale in 0u32..=28,
        ) {
            let v = Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale);
            proptest::prop_assert_eq!(Dec(v).to_string(), v.to_string());
            let mut s = String::from("x");
            push_decimal(&mut s, v);
            proptest::prop_assert_eq!(s, format!("x{v}"));
        }
    }

    #[test]
    fn powers_of_ten_are_found_and_nothing_else() {
        for k in 0..=19u32 {
            let p = i128::from(10u64.pow(k));
            assert_eq!(power_of_ten(p), Some(k));
            assert_eq!(power_of_ten(p + 1), None, "{p} + 1");
            assert_eq!(power_of_ten(p * 2), None, "{p} * 2");
        }
        for m in [0, -1, -10, i128::from(u64::MAX), i128::from(u64::MAX) + 1, 10i128.pow(20)] {
            assert_eq!(power_of_ten(m), None, "{m}");
        }
    }

    #[test]
    fn dec_writes_what_display_writes() {
        for text in ["0", "0.00", "-0.00", "1", "0.01", "0.001", "12.30", "-5", "1000000", "123456789.123456"]
        {
            let v = d(text);
            assert_eq!(Dec(v).to_string(), v.to_string(), "{text}");
        }
        for v in
            [Decimal::MAX, Decimal::MIN, Decimal::new(1, 28), Decimal::new(-1, 28), Decimal::from(u64::MAX)]
        {
            assert_eq!(Dec(v).to_string(), v.to_string());
            let mut s = String::from("x");
            push_decimal(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
        let negative_zero = Decimal::from_parts(0, 0, 0, true, 2);
        assert_eq!(Dec(negative_zero).to_string(), negative_zero.to_string());
    }

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_amount("1234.56", false), Ok(d("1234.56")));
        assert_eq!(parse_amount("0.01", false), Ok(d("0.01")));
        assert_eq!(parse_amount("100", false), Ok(d("100")));
        assert_eq!(parse_amount("100.500", false).map(|v| v.to_string()), Ok("100.500".into()));
        assert_eq!(parse_amount("1.50000000", false).map(|v| v.to_string()), Ok("1.500000".into()));
        assert_eq!(parse_amount("000100.10", false), Ok(d("100.1")));
        // The common forms take the 64-bit path; the rest the general one.
        for (text, plain) in
            [("1234.56", true), ("100", true), ("0.00", true), ("1.50000000", false), ("-5", false)]
        {
            assert_eq!(parse_plain(text.as_bytes()).is_some(), plain, "{text}");
        }
    }

    #[test]
    fn json_exponents_are_exact() {
        assert_eq!(parse_amount("1.23456e2", true), Ok(d("123.456")));
        assert_eq!(parse_amount("5E3", true), Ok(d("5000")));
        assert_eq!(parse_amount("12345e-2", true), Ok(d("123.45")));
        assert_eq!(parse_amount("1e2", false), Err(AmountError::NotANumber));
    }

    #[test]
    fn rejects_bad_amounts_with_reasons() {
        assert_eq!(parse_amount("", false), Err(AmountError::Empty));
        assert_eq!(parse_amount("-5", false), Err(AmountError::Negative));
        assert_eq!(parse_amount("0", false), Err(AmountError::Zero));
        assert_eq!(parse_amount("-0.00", false), Err(AmountError::Zero));
        assert_eq!(parse_amount("1.", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount(".5", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("1,5", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount(" 1", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("+1", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("NaN", false), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("1000000000000.01", false), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("1e400", true), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("99999999999999999999999999999999", false), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("1.0000001", false), Err(AmountError::TooPrecise));
        assert_eq!(parse_amount("1000000000000", false), Ok(MAX_AMOUNT));
    }

    #[test]
    fn rounding_modes() {
        let step = d("0.01");
        assert_eq!(round_to_step(d("61.7289"), step, RoundingMode::Floor), Some(d("61.72")));
        assert_eq!(round_to_step(d("61.7211"), step, RoundingMode::Ceiling), Some(d("61.73")));
        assert_eq!(round_to_step(d("61.725"), step, RoundingMode::HalfUp), Some(d("61.73")));
        assert_eq!(round_to_step(d("61.7249"), step, RoundingMode::HalfUp), Some(d("61.72")));
        assert_eq!(round_to_step(d("19.99"), d("1"), RoundingMode::Floor), Some(d("19")));
        assert_eq!(full_units(d("1999.99"), d("100")), Some(d("1900")));
    }

    #[test]
    fn proportional_keep_adds_up() {
        let step = d("0.01");
        // 10.00 earned on 300.00; refunds of 100 three times.
        let k1 = proportional_keep(d("10.00"), d("200"), d("300"), step).unwrap();
        let k2 = proportional_keep(d("10.00"), d("100"), d("300"), step).unwrap();
        let k3 = proportional_keep(d("10.00"), d("0"), d("300"), step).unwrap();
        assert_eq!((k1, k2, k3), (d("6.66"), d("3.33"), d("0")));
    }

    #[test]
    fn scale_is_fixed_for_output() {
        assert_eq!(with_scale(d("61.7"), 2).to_string(), "61.70");
        assert_eq!(with_scale(d("12"), 0).to_string(), "12");
        assert_eq!(with_scale(d("0"), 2).to_string(), "0.00");
    }

    #[test]
    fn fixing_the_scale_agrees_with_rust_decimal_in_value_sign_and_scale() {
        let values = [
            "0",
            "-0.001",
            "0.004",
            "61.7",
            "-61.7",
            "12",
            "1.999",
            "-1.999",
            "123456789.123456789",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7922816251426433759354395.0335",
            "0.0000000000000000000000000001",
            "-0.0000000000000000000000000001",
        ];
        for v in values {
            for decimals in [0, 1, 2, 3, 5, 10, 28] {
                let value = d(v);
                let mut expected = value.round_dp_with_strategy(decimals, RoundingStrategy::ToZero);
                expected.rescale(decimals);
                let got = with_scale(value, decimals);
                assert_eq!(
                    (got.to_string(), got.scale(), got.is_sign_negative()),
                    (expected.to_string(), expected.scale(), expected.is_sign_negative()),
                    "{v} to {decimals} places"
                );
            }
        }
    }
}
