//! Decoding events with simd-json, the way that is fast on small messages:
//! the input is copied once into a reused, padded buffer; simd-json's
//! buffers and tape are reused across events; the tape is walked directly
//! (no serde, no DOM); strings are borrowed from the buffer.
//!
//! JSON numbers are never trusted as `f64`: integers arrive exact from the
//! tape, and a non-integer `amount` is re-read from its original digits,
//! located through simd-json's structural index.

use super::{
    CategoryChoice, DecodeError, Event, EventBody, EventKind, Mcc, Purchase, PurchaseStatus, Redemption,
    Refund, Reversal,
};
use crate::money::{self, AmountError};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use simd_json::{Buffers, INPUT_PADDING, Node, StaticNode, Tape};

/// Events larger than this go to the dead-letter topic unparsed.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
const MAX_ID_LEN: usize = 128;

/// A reusable event decoder. Keep one per thread or partition task.
pub struct Decoder {
    /// The event, padded, for the flat path ([`super::flat`]).
    flat: Vec<u8>,
    /// Where the flat path found quotes.
    quotes: Vec<u64>,
    /// The event, padded, for simd-json, which unescapes strings in place.
    buf: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// A field's raw value from the tape.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw<'a> {
    Str(&'a str),
    Unsigned(u64),
    Signed(i64),
    /// A non-integer number: the index of its tape node, to re-read its digits.
    Float(usize),
    Bool,
    Object,
    /// The index of the array's tape node.
    Array(usize),
}

impl Raw<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Raw::Str(_) => "a string",
            Raw::Unsigned(_) | Raw::Signed(_) | Raw::Float(_) => "a number",
            Raw::Bool => "a boolean",
            Raw::Object => "an object",
            Raw::Array(_) => "an array",
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Fields<'a> {
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
    /// The slot and the canonical field name for a key; unknown keys are
    /// ignored so producers can add fields without breaking the engine.
    pub(super) fn slot(&mut self, key: &str) -> Option<(&mut Option<Raw<'a>>, &'static str)> {
        Some(match key {
            "event_id" => (&mut self.event_id, "event_id"),
            "type" => (&mut self.kind, "type"),
            "account_id" => (&mut self.account_id, "account_id"),
            "card_id" => (&mut self.card_id, "card_id"),
            "amount" => (&mut self.amount, "amount"),
            "currency" => (&mut self.currency, "currency"),
            "mcc" => (&mut self.mcc, "mcc"),
            "merchant_id" => (&mut self.merchant_id, "merchant_id"),
            "partner_id" => (&mut self.partner_id, "partner_id"),
            "channel" => (&mut self.channel, "channel"),
            "occurred_at" => (&mut self.occurred_at, "occurred_at"),
            "original_event_id" => (&mut self.original_event_id, "original_event_id"),
            "status" => (&mut self.status, "status"),
            "program" => (&mut self.program, "program"),
            "charity" => (&mut self.charity, "charity"),
            "referrer_account_id" => (&mut self.referrer_account_id, "referrer_account_id"),
            "referred_account_id" => (&mut self.referred_account_id, "referred_account_id"),
            "month" => (&mut self.month, "month"),
            "categories" => (&mut self.categories, "categories"),
            "statement_day" => (&mut self.statement_day, "statement_day"),
            _ => return None,
        })
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            flat: Vec::with_capacity(1024 + super::flat::PADDING),
            quotes: Vec::with_capacity(32),
            buf: Vec::with_capacity(1024 + INPUT_PADDING),
            buffers: Buffers::new(1024),
            tape: Some(Tape::null()),
        }
    }

    /// Decodes one event. The result borrows this decoder's buffer until
    /// the next call.
    pub fn decode<'a>(&'a mut self, input: &[u8]) -> Result<Event<'a>, DecodeError> {
        self.decode_by(input, true)
    }

    /// Decodes through simd-json only, never the flat path: both must give
    /// the same answer (the property tests and the fuzz target compare them).
    pub fn decode_general<'a>(&'a mut self, input: &[u8]) -> Result<Event<'a>, DecodeError> {
        self.decode_by(input, false)
    }

    /// Decodes through the flat path when the event has its shape (and
    /// `flat_allowed`), through simd-json otherwise.
    pub(super) fn decode_by<'a>(
        &'a mut self,
        input: &[u8],
        flat_allowed: bool,
    ) -> Result<Event<'a>, DecodeError> {
        if input.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge { size: input.len(), max: MAX_EVENT_BYTES });
        }
        let Decoder { flat, quotes, buf, buffers, tape } = self;
        flat.clear();
        flat.extend_from_slice(input);
        flat.resize(input.len() + super::flat::PADDING, 0);
        let flat: &'a [u8] = flat;
        // Filled in place: the fields are a few hundred bytes, moved out
        // of each reader and into `build_event` otherwise.
        let mut fields = Fields::default();
        if flat_allowed {
            if let Some(read) = super::flat::read(flat, input.len(), quotes, &mut fields) {
                // Whole numbers only: no amount's digits to re-read.
                return read.and_then(|()| build_event(&fields, &[], |_| Err(AmountError::NotANumber)));
            }
        }
        buf.clear();
        buf.extend_from_slice(input);
        buf.resize(input.len() + INPUT_PADDING, 0);
        let mut nodes: Tape<'a> = tape.take().unwrap_or_else(Tape::null).reset();
        let parsed = simd_json::fill_tape_padded(buf.as_mut_slice(), input.len(), buffers, &mut nodes);
        let result = match parsed {
            Ok(()) => read_fields(&nodes.0, &mut fields).and_then(|()| {
                build_event(&fields, &nodes.0, |node| {
                    float_digits(input, buffers.structural_indexes(), node)
                        .map_or(Err(AmountError::NotANumber), |text| money::parse_amount(text, true))
                })
            }),
            Err(e) => Err(match e.error() {
                simd_json::ErrorType::InvalidUtf8 => DecodeError::NotUtf8,
                _ => DecodeError::Malformed(super::json_errors::describe(&e, input)),
            }),
        };
        *tape = Some(nodes.reset());
        result
    }
}

/// The fields simd-json reads from `input` (for tests of the flat path).
#[cfg(test)]
pub(super) fn general_fields(input: &[u8]) -> String {
    let mut buf = input.to_vec();
    buf.resize(input.len() + INPUT_PADDING, 0);
    let mut buffers = Buffers::new(1024);
    let mut nodes = Tape::null();
    match simd_json::fill_tape_padded(buf.as_mut_slice(), input.len(), &mut buffers, &mut nodes) {
        Ok(()) => {
            let mut fields = Fields::default();
            format!("{:?}", read_fields(&nodes.0, &mut fields).map(|()| fields))
        }
        Err(e) => format!("{e}"),
    }
}

/// Walks the top-level object, keeping the known fields.
fn read_fields<'a>(nodes: &[Node<'a>], fields: &mut Fields<'a>) -> Result<(), DecodeError> {
    let Some(Node::Object { len, .. }) = nodes.first() else {
        return Err(DecodeError::NotAnObject);
    };
    *fields = Fields::default();
    let mut i = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = nodes.get(i) else {
            return Err(DecodeError::Malformed("object key expected".into()));
        };
        let value_at = i + 1;
        let (raw, skip) = match nodes.get(value_at) {
            Some(Node::String(s)) => (Some(Raw::Str(s)), 1),
            Some(Node::Static(StaticNode::U64(n))) => (Some(Raw::Unsigned(*n)), 1),
            Some(Node::Static(StaticNode::I64(n))) => (Some(Raw::Signed(*n)), 1),
            Some(Node::Static(StaticNode::F64(_))) => (Some(Raw::Float(value_at)), 1),
            Some(Node::Static(StaticNode::Bool(_))) => (Some(Raw::Bool), 1),
            // null means "absent", as for an optional field left out.
            Some(Node::Static(StaticNode::Null)) => (None, 1),
            Some(Node::Object { count, .. }) => (Some(Raw::Object), 1 + count),
            Some(Node::Array { count, .. }) => (Some(Raw::Array(value_at)), 1 + count),
            None => return Err(DecodeError::Malformed("object value expected".into())),
        };
        if let Some((slot, name)) = fields.slot(key) {
            if slot.is_some() {
                return Err(DecodeError::DuplicateField(name));
            }
            *slot = raw;
        }
        i = value_at + skip;
    }
    Ok(())
}

/// The original digits of the number at tape node `node`: the tape has one
/// node per structural character except `:`, `,`, `}` and `]`, so the
/// node's structural index gives its byte offset in the input.
fn float_digits<'i>(input: &'i [u8], structurals: &[u32], node: usize) -> Option<&'i str> {
    let start = structurals
        .iter()
        .map(|&at| at as usize)
        .filter(|&at| !matches!(input.get(at), Some(b':' | b',' | b'}' | b']')))
        .nth(node)?;
    let rest = input.get(start..)?;
    let len = rest
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..len]).ok()
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
    // Printable ASCII (ids almost always are) has none: a branch-free pass.
    if !crate::scan::any_byte(bytes, |b| !(0x20..0x7f).contains(&b)) {
        return false;
    }
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|next| (0x80..=0x9f).contains(next)))
    })
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    // Not `ok_or`: it builds and drops an error for every present field.
    match value {
        Some(value) => Ok(value),
        None => Err(DecodeError::MissingField(field)),
    }
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

fn amount(
    raw: Option<Raw<'_>>,
    parse_float: impl Fn(usize) -> Result<Decimal, AmountError>,
) -> Result<Option<Decimal>, DecodeError> {
    let problem = |problem| DecodeError::Amount { field: "amount", problem };
    let value = match raw {
        None => return Ok(None),
        Some(Raw::Str(s)) => money::parse_amount(s, false),
        Some(Raw::Unsigned(n)) => money::check_amount(Decimal::from(n)),
        Some(Raw::Signed(n)) => money::check_amount(Decimal::from(n)),
        Some(Raw::Float(node)) => parse_float(node),
        Some(other) => return Err(wrong("amount", "a decimal string or number", &other)),
    };
    value.map(Some).map_err(problem)
}

fn mcc(raw: Option<Raw<'_>>) -> Result<Option<Mcc>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(Raw::Str(s)) => Mcc::parse(s).map(Some).ok_or(DecodeError::Mcc),
        Some(Raw::Unsigned(n)) if n <= 9999 => Ok(Some(Mcc(n as u16))),
        Some(Raw::Unsigned(_) | Raw::Signed(_) | Raw::Float(_)) => Err(DecodeError::Mcc),
        Some(other) => Err(wrong("mcc", "a 4-digit string", &other)),
    }
}

/// The strings of an array field (a flat array of strings, at most `max`).
fn strings<'a>(
    raw: Option<Raw<'a>>,
    nodes: &[Node<'a>],
    field: &'static str,
    max: usize,
) -> Result<Option<Vec<&'a str>>, DecodeError> {
    let at = match raw {
        None => return Ok(None),
        Some(Raw::Array(at)) => at,
        Some(other) => return Err(wrong(field, "an array of strings", &other)),
    };
    let Some(Node::Array { len, count }) = nodes.get(at) else {
        return Err(DecodeError::Malformed("array expected".into()));
    };
    if *len != *count {
        return Err(DecodeError::Invalid { field, problem: "must hold strings only" });
    }
    if *len > max {
        return Err(DecodeError::Invalid { field, problem: "has too many entries" });
    }
    let mut out = Vec::with_capacity(*len);
    for node in nodes.get(at + 1..at + 1 + len).unwrap_or_default() {
        match node {
            Node::String(s) if !s.is_empty() && s.len() <= MAX_ID_LEN => out.push(*s),
            _ => return Err(DecodeError::Invalid { field, problem: "must hold non-empty strings only" }),
        }
    }
    Ok(Some(out))
}

fn small_integer(raw: Option<Raw<'_>>, field: &'static str) -> Result<Option<u64>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(Raw::Unsigned(n)) => Ok(Some(n)),
        Some(Raw::Str(s)) => {
            s.parse().map(Some).map_err(|_| DecodeError::Invalid { field, problem: "must be a whole number" })
        }
        Some(other) => Err(wrong(field, "a whole number", &other)),
    }
}

/// Whether a purchase is authorized or cleared; only a cleared one may
/// name the authorization it clears.
fn purchase_status(f: &Fields<'_>, clears: Option<&str>) -> Result<PurchaseStatus, DecodeError> {
    let status = match string(f.status, "status")? {
        None | Some("cleared") => PurchaseStatus::Cleared,
        Some("authorized") => PurchaseStatus::Authorized,
        Some(_) => {
            return Err(DecodeError::Invalid { field: "status", problem: "must be authorized or cleared" });
        }
    };
    if status == PurchaseStatus::Authorized && clears.is_some() {
        return Err(DecodeError::Invalid {
            field: "original_event_id",
            problem: "an authorization clears nothing; only a cleared purchase names its authorization",
        });
    }
    Ok(status)
}

fn category_choice<'a>(f: &Fields<'a>, nodes: &[Node<'a>]) -> Result<CategoryChoice<'a>, DecodeError> {
    let month = required(string(f.month, "month")?, "month")?;
    let month = crate::time::parse_month(month)
        .map_err(|_| DecodeError::Invalid { field: "month", problem: "must be a month like 2026-12" })?;
    let categories = required(strings(f.categories, nodes, "categories", 32)?, "categories")?;
    Ok(CategoryChoice { month, categories })
}

fn build_event<'a>(
    f: &Fields<'a>,
    nodes: &[Node<'a>],
    parse_float: impl Fn(usize) -> Result<Decimal, AmountError>,
) -> Result<Event<'a>, DecodeError> {
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
    let amount = amount(f.amount, parse_float)?;
    let currency = currency(f.currency)?;
    let original_event_id = id(f.original_event_id, "original_event_id")?;
    let body = match kind {
        EventKind::Purchase => EventBody::Purchase(Purchase {
            status: purchase_status(f, original_event_id)?,
            amount: required(amount, "amount")?,
            currency: required(currency, "currency")?,
            mcc: required(mcc(f.mcc)?, "mcc")?,
            merchant_id: required(id(f.merchant_id, "merchant_id")?, "merchant_id")?,
            partner_id: id(f.partner_id, "partner_id")?,
            channel: id(f.channel, "channel")?,
            card_id: id(f.card_id, "card_id")?,
            clears: original_event_id,
        }),
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
        EventKind::CategoryChoice => EventBody::CategoryChoice(category_choice(f, nodes)?),
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
            for prefix in [0, 1, 7, 8, 9, 31, 32, 33] {
                text.clear();
                text.extend(std::iter::repeat_n('a', prefix));
                text.push(c);
                text.push('\u{a0}');
                text.push_str("tail");
                assert_eq!(
                    has_control(&text),
                    text.chars().any(char::is_control),
                    "U+{:04X} at {prefix}",
                    c as u32
                );
            }
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
