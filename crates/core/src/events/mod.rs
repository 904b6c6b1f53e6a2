//! Input events: the card transactions a bank streams in, one JSON object
//! per line or per Kafka message. The schema is documented in
//! `docs/events.md`.

mod decode;
mod flat;
mod json_errors;

pub use decode::Decoder;

use crate::money::AmountError;
use crate::time::{TimeError, Timestamp};
use rust_decimal::Decimal;

/// A merchant category code (ISO 18245), 0000-9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mcc(pub u16);

impl Mcc {
    pub fn parse(text: &str) -> Option<Mcc> {
        let b = text.as_bytes();
        if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(Mcc(b.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))))
    }
}

impl std::fmt::Display for Mcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Purchase,
    Refund,
    Reversal,
    Redemption,
    Enrollment,
    Referral,
    ReferralBonus,
    CategoryChoice,
    StatementCycle,
    Clock,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Purchase,
        EventKind::Refund,
        EventKind::Reversal,
        EventKind::Redemption,
        EventKind::Enrollment,
        EventKind::Referral,
        EventKind::ReferralBonus,
        EventKind::CategoryChoice,
        EventKind::StatementCycle,
        EventKind::Clock,
    ];

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Purchase => "purchase",
            EventKind::Refund => "refund",
            EventKind::Reversal => "reversal",
            EventKind::Redemption => "redemption",
            EventKind::Enrollment => "enrollment",
            EventKind::Referral => "referral",
            EventKind::ReferralBonus => "referral_bonus",
            EventKind::CategoryChoice => "category_choice",
            EventKind::StatementCycle => "statement_cycle",
            EventKind::Clock => "clock",
        }
    }
}

/// A decoded event. Strings borrow from the decoder's buffer, so decoding
/// allocates nothing per event (a category choice's list aside).
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: &'a str,
    /// Empty for `clock` events, which concern a whole partition.
    pub account_id: &'a str,
    pub occurred_at: Timestamp,
    pub body: EventBody<'a>,
}

impl Event<'_> {
    pub fn kind(&self) -> EventKind {
        match self.body {
            EventBody::Purchase(_) => EventKind::Purchase,
            EventBody::Refund(_) => EventKind::Refund,
            EventBody::Reversal(_) => EventKind::Reversal,
            EventBody::Redemption(_) => EventKind::Redemption,
            EventBody::Enrollment => EventKind::Enrollment,
            EventBody::Referral { .. } => EventKind::Referral,
            EventBody::ReferralBonus { .. } => EventKind::ReferralBonus,
            EventBody::CategoryChoice(_) => EventKind::CategoryChoice,
            EventBody::StatementCycle { .. } => EventKind::StatementCycle,
            EventBody::Clock => EventKind::Clock,
        }
    }
}

/// The fields each event type requires, checked at decode time so the
/// core never meets a purchase without an amount.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody<'a> {
    Purchase(Purchase<'a>),
    Refund(Refund<'a>),
    Reversal(Reversal<'a>),
    Redemption(Redemption<'a>),
    /// The account joined the program (welcome bonus, once).
    Enrollment,
    /// This (new) account was referred by `referrer`.
    Referral {
        referrer: &'a str,
    },
    /// Derived by the engine on the referrer's account when `referred`
    /// made its first qualifying purchase.
    ReferralBonus {
        referred: &'a str,
    },
    CategoryChoice(CategoryChoice<'a>),
    /// The account's statement (billing) day of month.
    StatementCycle {
        statement_day: u8,
    },
    /// Time passes (a partition's ticker).
    Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseStatus {
    /// Authorised, not yet cleared: its reward can wait for clearing.
    Authorized,
    Cleared,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Purchase<'a> {
    pub amount: Decimal,
    pub currency: &'a str,
    pub mcc: Mcc,
    pub merchant_id: &'a str,
    pub partner_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub card_id: Option<&'a str>,
    pub status: PurchaseStatus,
    /// With status `cleared`: the authorisation this clears.
    pub clears: Option<&'a str>,
}

/// A (possibly partial) refund of an earlier purchase.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund<'a> {
    pub original_event_id: &'a str,
    pub amount: Decimal,
    pub currency: &'a str,
}

/// A reversal of an earlier purchase's authorisation; without an amount it
/// reverses whatever of the purchase is not yet refunded.
#[derive(Debug, Clone, PartialEq)]
pub struct Reversal<'a> {
    pub original_event_id: &'a str,
    pub amount: Option<Decimal>,
    pub currency: Option<&'a str>,
}

/// Spending `amount` of a program's balance (in its unit), or donating it.
#[derive(Debug, Clone, PartialEq)]
pub struct Redemption<'a> {
    pub program: &'a str,
    pub amount: Decimal,
    pub charity: Option<&'a str>,
}

/// The categories an account boosts for a month.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryChoice<'a> {
    /// Month key (`year * 12 + month - 1`).
    pub month: u32,
    pub categories: Vec<&'a str>,
}

/// Why an event could not be decoded: which field, what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event is {size} bytes, more than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("event is not valid UTF-8")]
    NotUtf8,
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType { field: &'static str, expected: &'static str, found: &'static str },
    #[error("field `{0}` appears more than once")]
    DuplicateField(&'static str),
    #[error("field `{field}` {problem}")]
    Amount { field: &'static str, problem: AmountError },
    #[error("field `mcc`: must be a 4-digit merchant category code")]
    Mcc,
    #[error("field `occurred_at` {0}")]
    Time(TimeError),
    #[error("field `type`: unknown event type `{0}`")]
    UnknownType(String),
    #[error("field `{field}`: {problem}")]
    Invalid { field: &'static str, problem: &'static str },
}

impl DecodeError {
    /// Every reason label, for metrics to start at zero.
    pub const REASONS: [&'static str; 12] = [
        "too_large",
        "not_utf8",
        "malformed_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "duplicate_field",
        "invalid_amount",
        "invalid_mcc",
        "invalid_timestamp",
        "unknown_type",
        "invalid_field",
    ];

    /// A low-cardinality label for metrics and the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::Malformed(_) => "malformed_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::DuplicateField(_) => "duplicate_field",
            DecodeError::Amount { .. } => "invalid_amount",
            DecodeError::Mcc => "invalid_mcc",
            DecodeError::Time(_) => "invalid_timestamp",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Invalid { .. } => "invalid_field",
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DecodeError::MissingField(f)
            | DecodeError::DuplicateField(f)
            | DecodeError::WrongType { field: f, .. }
            | DecodeError::Amount { field: f, .. }
            | DecodeError::Invalid { field: f, .. } => Some(f),
            DecodeError::Mcc => Some("mcc"),
            DecodeError::Time(_) => Some("occurred_at"),
            DecodeError::UnknownType(_) => Some("type"),
            _ => None,
        }
    }
}
