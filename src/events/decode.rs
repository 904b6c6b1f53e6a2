//! Decoding events: the input is read by [`json::Scanner`] in one pass
//! over a reused copy (strings unescaped in place, borrowed from it), and
//! each known field is typed and validated. Unknown fields are ignored so
//! producers can add fields without breaking the engine.
//!
//! JSON numbers are never `f64`: an `amount` written as a number is read
//! from its digits, exactly.

use super::json::{Element, Scanner, Value};
use super::{
    CategoryChoice, DecodeError, Event, EventBody, EventKind, Mcc, Purchase, PurchaseStatus, Redemption,
    Refund, Reversal,
};
use crate::money::{self, AmountError};
use crate::time::Timestamp;
use rust_decimal::Decimal;

/// Events larger than this go to the dead-letter topic unparsed.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
const MAX_ID_LEN: usize = 128;

/// A reusable event decoder. Keep one per thread or partition task.
#[derive(Default)]
pub struct Decoder {
    scanner: Scanner,
}

/// A field's raw value.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Str(&'a str),
    /// A number's digits, as written.
    Number(&'a str),
    Bool,
    Object,
    /// Where its strings are in the event's array strings, or why it is
    /// not an array of strings.
    Array(Result<(usize, usize), &'static str>),
}

impl Raw<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::Number(_) => "a number",
            Raw::Bool => "a boolean",
            Raw::Object => "an object",
            Raw::Array(_) => "an array",
        }
    }
}

/// The fields the decoder reads, in this order.
const FIELDS: [&str; 20] = [
    "event_id",
    "type",
    "account_id",
    "card_id",
    "amount",
    "currency",
    "mcc",
    "merchant_id",
    "partner_id",
    "channel",
    "occurred_at",
    "original_event_id",
    "status",
    "program",
    "charity",
    "referrer_account_id",
    "referred_account_id",
    "month",
    "categories",
    "statement_day",
];

#[derive(Default)]
struct Fields<'a> {
    event_id: Option<Raw<'a>>,
    kind: Option<Raw<'a>>,
    account_id: Option<Raw<'a>>,
    card_id: Option<Raw<'a>>,
    amount: Option<Raw<'a>>,
    currency: Option<Raw<'a>>,
    mcc: Option<Raw<'a>>,
    merchant_id: Option<Raw<'a>>,
    partner_id: Option<Raw<'a>>,
    channel: Option<Raw<'a>>,
    occurred_at: Option<Raw<'a>>,
    original_event_id: Option<Raw<'a>>,
    status: Option<Raw<'a>>,
    program: Option<Raw<'a>>,
    charity: Option<Raw<'a>>,
    referrer_account_id: Option<Raw<'a>>,
    referred_account_id: Option<Raw<'a>>,
    month: Option<Raw<'a>>,
    categories: Option<Raw<'a>>,
    statement_day: Option<Raw<'a>>,
}

impl<'a> Fields<'a> {
    /// Takes the fields' values out of the scan, in [`FIELDS`] order.
    fn from_slots(mut slots: [Option<Raw<'a>>; 20]) -> Fields<'a> {
        let mut take = |i: usize| slots[i].take();
        Fields {
            event_id: take(0),
            kind: take(1),
            account_id: take(2),
            card_id: take(3),
            amount: take(4),
            currency: take(5),
            mcc: take(6),
            merchant_id: take(7),
            partner_id: take(8),
            channel: take(9),
            occurred_at: take(10),
            original_event_id: take(11),
            status: take(12),
            program: take(13),
            charity: take(14),
            referrer_account_id: take(15),
            referred_account_id: take(16),
            month: take(17),
            categories: take(18),
            statement_day: take(19),
        }
    }
}

/// Most strings a `categories` array may hold (checked again by the event).
const MAX_ARRAY_STRINGS: usize = 32;

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { scanner: Scanner::new() }
    }

    /// Decodes one event. The result borrows this decoder's buffer until
    /// the next call.
    pub fn decode<'a>(&'a mut self, input: &[u8]) -> Result<Event<'a>, DecodeError> {
        if input.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge { size: input.len(), max: MAX_EVENT_BYTES });
        }
        // Which field each member is (positions only: the buffer is still
        // being written while scanning).
        let mut found: [Option<Value>; 20] = Default::default();
        self.scanner.scan(input, |key, value| {
            let Some(i) = FIELDS.iter().position(|f| f.as_bytes() == key) else { return Ok(()) };
            if found[i].is_some() {
                return Err(DecodeError::DuplicateField(FIELDS[i]));
            }
            // null means "absent", as for an optional field left out.
            if value != Value::Null {
                found[i] = Some(value);
            }
            Ok(())
        })?;
        let scanner = &self.scanner;
        let mut strings: [&str; MAX_ARRAY_STRINGS] = [""; MAX_ARRAY_STRINGS];
        let mut string_count = 0;
        let mut slots: [Option<Raw<'a>>; 20] = Default::default();
        for (i, (slot, value)) in slots.iter_mut().zip(found).enumerate() {
            *slot = match value {
                None => None,
                Some(Value::Str(r)) => Some(Raw::Str(scanner.text(r)?)),
                Some(Value::Number(r)) => Some(Raw::Number(scanner.text(r)?)),
                Some(Value::Bool(_)) => Some(Raw::Bool),
                Some(Value::Null) => None,
                Some(Value::Object) => Some(Raw::Object),
                // Only `categories` is read as an array; others are of the wrong type.
                Some(Value::Array(_)) if FIELDS[i] != "categories" => Some(Raw::Array(Err("not read"))),
                Some(Value::Array(elements)) => {
                    let elements = &scanner.elements[elements];
                    let first = string_count;
                    let shape = if elements.contains(&Element::Nested) {
                        Err("must hold strings only")
                    } else if elements.len() > MAX_ARRAY_STRINGS - string_count {
                        Err("has too many entries")
                    } else {
                        for e in elements {
                            let Element::Str(r) = e else { continue };
                            strings[string_count] = scanner.text(r.clone())?;
                            string_count += 1;
                        }
                        if string_count - first < elements.len() {
                            Err("must hold non-empty strings only")
                        } else {
                            Ok((first, string_count))
                        }
                    };
                    Some(Raw::Array(shape))
                }
            };
        }
        let fields = Fields::from_slots(slots);
        build_event(fields, &strings[..string_count])
    }
}

fn wrong(field: &'static str, expected: &'static str, raw: &Raw<'_>) -> DecodeError {
    DecodeError::WrongType { field, expected, found: raw.type_name() }
}

fn string<'a>(raw: Option<Raw<'a>>, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(Raw::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(field, "a string", &other)),
    }
}

/// An identifier: a non-empty string of at most 128 bytes without control
/// characters (they would corrupt keys and log lines).
fn id<'a>(raw: Option<Raw<'a>>, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
    let Some(s) = string(raw, field)? else { return Ok(None) };
    if s.is_empty() {
        return Err(DecodeError::Invalid { field, problem: "must not be empty" });
    }
    if s.len() > MAX_ID_LEN {
        return Err(DecodeError::Invalid { field, problem: "is longer than 128 bytes" });
    }
    if has_control(s) {
        return Err(DecodeError::Invalid { field, problem: "contains control characters" });
    }
    Ok(Some(s))
}

/// Whether `s` holds a control character (Unicode's Cc: U+0000-U+001F and
/// U+007F-U+009F), checked on the bytes rather than decoding every char:
/// in UTF-8 the C1 controls are 0xC2 followed by 0x80-0x9F.
fn has_control(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|next| (0x80..=0x9f).contains(next)))
    })
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField(field))
}

fn currency<'a>(raw: Option<Raw<'a>>) -> Result<Option<&'a str>, DecodeError> {
    let Some(s) = string(raw, "currency")? else { return Ok(None) };
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(DecodeError::Invalid {
            field: "currency",
            problem: "must be a 3-letter ISO 4217 code such as RUB",
        });
    }
    Ok(Some(s))
}

fn amount(raw: Option<Raw<'_>>) -> Result<Option<Decimal>, DecodeError> {
    let problem = |problem: AmountError| DecodeError::Amount { field: "amount", problem };
    let value = match raw {
        None => return Ok(None),
        Some(Raw::Str(s)) => money::parse_amount(s, false),
        // The number's own digits, exponent allowed: never through f64.
        Some(Raw::Number(digits)) => money::parse_amount(digits, true),
        Some(other) => return Err(wrong("amount", "a decimal string or number", &other)),
    };
    value.map(Some).map_err(problem)
}

fn mcc(raw: Option<Raw<'_>>) -> Result<Option<Mcc>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(Raw::Str(s)) => Mcc::parse(s).map(Some).ok_or(DecodeError::Mcc),
        Some(Raw::Number(digits)) => match unsigned(digits) {
            Some(n) if n <= 9999 => Ok(Some(Mcc(n as u16))),
            _ => Err(DecodeError::Mcc),
        },
        Some(other) => Err(wrong("mcc", "a 4-digit string", &other)),
    }
}

/// The strings of an array field (a flat array of non-empty strings, at
/// most [`MAX_ARRAY_STRINGS`]), from the event's array strings.
fn strings<'a>(
    raw: Option<Raw<'a>>,
    array_strings: &[&'a str],
    field: &'static str,
) -> Result<Option<Vec<&'a str>>, DecodeError> {
    let (from, to) = match raw {
        None => return Ok(None),
        Some(Raw::Array(shape)) => shape.map_err(|problem| DecodeError::Invalid { field, problem })?,
        Some(other) => return Err(wrong(field, "an array of strings", &other)),
    };
    let list = array_strings.get(from..to).unwrap_or_default();
    if list.iter().any(|s| s.is_empty() || s.len() > MAX_ID_LEN) {
        return Err(DecodeError::Invalid { field, problem: "must hold non-empty strings only" });
    }
    Ok(Some(list.to_vec()))
}

/// Digits only: a whole number that is not negative.
fn unsigned(text: &str) -> Option<u64> {
    if text.bytes().all(|b| b.is_ascii_digit()) { text.parse().ok() } else { None }
}

fn small_integer(raw: Option<Raw<'_>>, field: &'static str) -> Result<Option<u64>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(Raw::Number(digits)) if unsigned(digits).is_some() => Ok(unsigned(digits)),
        Some(Raw::Str(s)) => {
            s.parse().map(Some).map_err(|_| DecodeError::Invalid { field, problem: "must be a whole number" })
        }
        Some(other) => Err(wrong(field, "a whole number", &other)),
    }
}

fn build_event<'a>(f: Fields<'a>, array_strings: &[&'a str]) -> Result<Event<'a>, DecodeError> {
    let kind_name = required(string(f.kind, "type")?, "type")?;
    let kind = EventKind::from_name(kind_name)
        .ok_or_else(|| DecodeError::UnknownType(kind_name.chars().take(32).collect()))?;
    let event_id = required(id(f.event_id, "event_id")?, "event_id")?;
    let occurred_at = required(string(f.occurred_at, "occurred_at")?, "occurred_at")?;
    let occurred_at = Timestamp::parse_rfc3339(occurred_at).map_err(DecodeError::Time)?;
    if kind == EventKind::Clock {
        return Ok(Event { event_id, account_id: "", occurred_at, body: EventBody::Clock });
    }
    let account_id = required(id(f.account_id, "account_id")?, "account_id")?;
    let amount = amount(f.amount)?;
    let currency = currency(f.currency)?;
    let original_event_id = id(f.original_event_id, "original_event_id")?;
    let body = match kind {
        EventKind::Purchase => {
            let status = match string(f.status, "status")? {
                None | Some("cleared") => PurchaseStatus::Cleared,
                Some("authorized") => PurchaseStatus::Authorized,
                Some(_) => {
                    return Err(DecodeError::Invalid {
                        field: "status",
                        problem: "must be authorized or cleared",
                    });
                }
            };
            if status == PurchaseStatus::Authorized && original_event_id.is_some() {
                return Err(DecodeError::Invalid {
                    field: "original_event_id",
                    problem: "an authorization clears nothing; only a cleared purchase names its authorization",
                });
            }
            EventBody::Purchase(Purchase {
                amount: required(amount, "amount")?,
                currency: required(currency, "currency")?,
                mcc: required(mcc(f.mcc)?, "mcc")?,
                merchant_id: required(id(f.merchant_id, "merchant_id")?, "merchant_id")?,
                partner_id: id(f.partner_id, "partner_id")?,
                channel: id(f.channel, "channel")?,
                card_id: id(f.card_id, "card_id")?,
                status,
                clears: original_event_id,
            })
        }
        EventKind::Refund => EventBody::Refund(Refund {
            original_event_id: required(original_event_id, "original_event_id")?,
            amount: required(amount, "amount")?,
            currency: required(currency, "currency")?,
        }),
        EventKind::Reversal => {
            if amount.is_some() && currency.is_none() {
                return Err(DecodeError::MissingField("currency"));
            }
            EventBody::Reversal(Reversal {
                original_event_id: required(original_event_id, "original_event_id")?,
                amount,
                currency,
            })
        }
        EventKind::Redemption => EventBody::Redemption(Redemption {
            program: required(id(f.program, "program")?, "program")?,
            amount: required(amount, "amount")?,
            charity: id(f.charity, "charity")?,
        }),
        EventKind::Enrollment => EventBody::Enrollment,
        EventKind::Referral => {
            let referrer =
                required(id(f.referrer_account_id, "referrer_account_id")?, "referrer_account_id")?;
            if referrer == account_id {
                return Err(DecodeError::Invalid {
                    field: "referrer_account_id",
                    problem: "an account cannot refer itself",
                });
            }
            EventBody::Referral { referrer }
        }
        EventKind::ReferralBonus => EventBody::ReferralBonus {
            referred: required(id(f.referred_account_id, "referred_account_id")?, "referred_account_id")?,
        },
        EventKind::CategoryChoice => {
            let month = required(string(f.month, "month")?, "month")?;
            let month = crate::time::parse_month(month).map_err(|_| DecodeError::Invalid {
                field: "month",
                problem: "must be a month like 2026-12",
            })?;
            let categories = required(strings(f.categories, array_strings, "categories")?, "categories")?;
            EventBody::CategoryChoice(CategoryChoice { month, categories })
        }
        EventKind::StatementCycle => {
            let day = required(small_integer(f.statement_day, "statement_day")?, "statement_day")?;
            if !(1..=28).contains(&day) {
                return Err(DecodeError::Invalid {
                    field: "statement_day",
                    problem: "must be a day from 1 to 28",
                });
            }
            EventBody::StatementCycle { statement_day: day as u8 }
        }
        EventKind::Clock => EventBody::Clock,
    };
    Ok(Event { event_id, account_id, occurred_at, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const PURCHASE: &str = r#"{"event_id":"e-1","type":"purchase","account_id":"acc-42","card_id":"c-9","amount":"1234.56","currency":"RUB","mcc":"5411","merchant_id":"m-7","partner_id":null,"channel":"pos","occurred_at":"2026-11-20T14:03:00+03:00","extra":{"nested":[1,2,{"x":"y"}]}}"#;

    fn purchase_amount(ev: &Event<'_>) -> Decimal {
        match &ev.body {
            EventBody::Purchase(p) => p.amount,
            other => panic!("not a purchase: {other:?}"),
        }
    }

    #[test]
    fn decodes_a_purchase() {
        let mut d = Decoder::new();
        let ev = d.decode(PURCHASE.as_bytes()).unwrap();
        assert_eq!(ev.event_id, "e-1");
        assert_eq!(ev.account_id, "acc-42");
        assert_eq!(ev.occurred_at.to_string(), "2026-11-20T11:03:00Z");
        let EventBody::Purchase(p) = &ev.body else { panic!() };
        assert_eq!(p.amount, Decimal::from_str("1234.56").unwrap());
        assert_eq!(p.mcc, Mcc(5411));
        assert_eq!(p.merchant_id, "m-7");
        assert_eq!(p.partner_id, None);
        assert_eq!(p.channel, Some("pos"));
        assert_eq!(p.card_id, Some("c-9"));
    }

    #[test]
    fn number_amounts_are_read_from_their_digits() {
        let mut d = Decoder::new();
        for (json, expect) in [
            ("1234.56", "1234.56"),
            ("0.1", "0.1"),
            ("100", "100"),
            ("1.5e2", "150"),
            ("99999999999.999999", "99999999999.999999"),
        ] {
            // Escaped strings before the number shift nothing: unescaping
            // happens inside string bounds.
            let line = format!(
                r#"{{"event_id":"a\"b\u00e9","type":"purchase","account_id":"x","nested":{{"k":[1.25,{{"z":2.5}}]}},"amount":{json},"currency":"RUB","mcc":5411,"merchant_id":"m","occurred_at":"2026-11-20T14:03:00Z"}}"#
            );
            let ev = d.decode(line.as_bytes()).unwrap();
            assert_eq!(ev.event_id, "a\"bé");
            assert_eq!(purchase_amount(&ev), Decimal::from_str(expect).unwrap(), "{json}");
        }
    }

    #[test]
    fn float_amount_precision_beyond_f64_is_kept_or_refused() {
        let mut d = Decoder::new();
        let line = r#"{"event_id":"e","type":"purchase","account_id":"a","amount":12345678901.123457,"currency":"RUB","mcc":"5411","merchant_id":"m","occurred_at":"2026-11-20T14:03:00Z"}"#;
        let ev = d.decode(line.as_bytes()).unwrap();
        assert_eq!(purchase_amount(&ev), Decimal::from_str("12345678901.123457").unwrap());
        let huge = line.replace("12345678901.123457", "1e30");
        assert!(matches!(
            d.decode(huge.as_bytes()),
            Err(DecodeError::Amount { problem: AmountError::TooLarge, .. })
        ));
    }

    #[test]
    fn refund_and_reversal() {
        let mut d = Decoder::new();
        let refund = r#"{"event_id":"r-1","type":"refund","account_id":"a","original_event_id":"e-1","amount":"10.00","currency":"RUB","occurred_at":"2026-11-21T00:00:00Z"}"#;
        let ev = d.decode(refund.as_bytes()).unwrap();
        assert_eq!(
            ev.body,
            EventBody::Refund(Refund {
                original_event_id: "e-1",
                amount: Decimal::from(10),
                currency: "RUB"
            })
        );
        let reversal = r#"{"event_id":"v-1","type":"reversal","account_id":"a","original_event_id":"e-1","occurred_at":"2026-11-21T00:00:00Z"}"#;
        let ev = d.decode(reversal.as_bytes()).unwrap();
        assert_eq!(
            ev.body,
            EventBody::Reversal(Reversal { original_event_id: "e-1", amount: None, currency: None })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut d = Decoder::new();
        let base = PURCHASE;
        let cases: Vec<(String, DecodeError)> = vec![
            (base.replace(r#""amount":"1234.56","#, ""), DecodeError::MissingField("amount")),
            (
                base.replace(r#""1234.56""#, "true"),
                DecodeError::WrongType {
                    field: "amount",
                    expected: "a decimal string or number",
                    found: "a boolean",
                },
            ),
            (
                base.replace(r#""1234.56""#, r#""-5""#),
                DecodeError::Amount { field: "amount", problem: AmountError::Negative },
            ),
            (
                base.replace(r#""1234.56""#, "-5"),
                DecodeError::Amount { field: "amount", problem: AmountError::Negative },
            ),
            (base.replace(r#""5411""#, r#""54111""#), DecodeError::Mcc),
            (base.replace(r#""5411""#, "12345"), DecodeError::Mcc),
            (base.replace(r#""purchase""#, r#""gift""#), DecodeError::UnknownType("gift".into())),
            (
                base.replace(r#""RUB""#, r#""rub""#),
                DecodeError::Invalid {
                    field: "currency",
                    problem: "must be a 3-letter ISO 4217 code such as RUB",
                },
            ),
            (
                base.replace(r#""acc-42""#, r#""""#),
                DecodeError::Invalid { field: "account_id", problem: "must not be empty" },
            ),
            (base.replace(r#""event_id":"e-1","#, r#""event_id":"e-1","event_id":"e-2","#), {
                DecodeError::DuplicateField("event_id")
            }),
            ("[1,2]".into(), DecodeError::NotAnObject),
            ("\"purchase\"".into(), DecodeError::NotAnObject),
        ];
        for (line, expect) in cases {
            assert_eq!(d.decode(line.as_bytes()).unwrap_err(), expect, "{line}");
        }
        assert!(matches!(d.decode(b"{\"event_id\":"), Err(DecodeError::Malformed(_))));
        assert!(matches!(d.decode(b""), Err(DecodeError::Malformed(_))));
        assert_eq!(d.decode(b"{\"event_id\":\"\xff\"}").unwrap_err(), DecodeError::NotUtf8);
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert!(matches!(d.decode(&big), Err(DecodeError::TooLarge { .. })));
        // A bad event does not poison the decoder.
        assert!(d.decode(PURCHASE.as_bytes()).is_ok());
    }

    #[test]
    fn control_characters_are_found_as_char_is_control_finds_them() {
        let mut text = String::new();
        for c in (0..0x3000u32).chain(0xfff0..0x10100).filter_map(char::from_u32) {
            text.clear();
            text.push('a');
            text.push(c);
            text.push('\u{a0}');
            assert_eq!(has_control(&text), text.chars().any(char::is_control), "U+{:04X}", c as u32);
        }
        assert!(!has_control("acc-1 é ü"));
        assert!(has_control("a\u{85}"));
    }

    #[test]
    fn every_reason_is_listed_for_metrics() {
        let samples = [
            DecodeError::TooLarge { size: 1, max: 0 },
            DecodeError::NotUtf8,
            DecodeError::Malformed(String::new()),
            DecodeError::NotAnObject,
            DecodeError::MissingField("x"),
            DecodeError::WrongType { field: "x", expected: "y", found: "z" },
            DecodeError::DuplicateField("x"),
            DecodeError::Amount { field: "amount", problem: AmountError::Zero },
            DecodeError::Mcc,
            DecodeError::Time(crate::time::TimeError::Format),
            DecodeError::UnknownType(String::new()),
            DecodeError::Invalid { field: "x", problem: "y" },
        ];
        let reasons: Vec<&str> = samples.iter().map(DecodeError::reason).collect();
        assert_eq!(reasons, DecodeError::REASONS);
    }
}
