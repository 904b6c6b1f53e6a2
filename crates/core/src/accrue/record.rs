//! Accrual records: what the core emits for every balance movement, and
//! their JSON form (written by hand so the bytes are fixed by this code,
//! field order and number formatting included).

use crate::events::Mcc;
use crate::money::push_decimal;
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::cell::RefCell;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// A reward earned (by a purchase or a bonus), pending or available.
    Earn,
    /// A pending reward became available.
    Release,
    /// A pending reward was cancelled (refund or reversal before release).
    Cancel,
    /// An available reward was taken back by a refund or reversal.
    Clawback,
    /// Available rewards burnt.
    Expire,
    /// Available rewards will burn soon (no balance change).
    ExpiryWarning,
    /// Rewards spent.
    Redeem,
    /// Rewards donated to a charity.
    Donation,
    /// A redemption refused, with the reason (no balance change).
    RedeemRejected,
    /// The account's tier changed.
    TierChanged,
    /// The account chose its boosted categories for a month.
    CategoryChoice,
    /// A category choice refused, with the reason.
    ChoiceRejected,
    /// A rule matched a purchase but its caps left nothing to pay (no
    /// balance change; the explanation shows the caps).
    Capped,
}

impl RecordKind {
    pub const ALL: [RecordKind; 13] = [
        RecordKind::Earn,
        RecordKind::Release,
        RecordKind::Cancel,
        RecordKind::Clawback,
        RecordKind::Expire,
        RecordKind::ExpiryWarning,
        RecordKind::Redeem,
        RecordKind::Donation,
        RecordKind::RedeemRejected,
        RecordKind::TierChanged,
        RecordKind::CategoryChoice,
        RecordKind::ChoiceRejected,
        RecordKind::Capped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Earn => "earn",
            RecordKind::Release => "release",
            RecordKind::Cancel => "cancel",
            RecordKind::Clawback => "clawback",
            RecordKind::Expire => "expire",
            RecordKind::ExpiryWarning => "expiry_warning",
            RecordKind::Redeem => "redeem",
            RecordKind::Donation => "donation",
            RecordKind::RedeemRejected => "redeem_rejected",
            RecordKind::TierChanged => "tier_changed",
            RecordKind::CategoryChoice => "category_choice",
            RecordKind::ChoiceRejected => "choice_rejected",
            RecordKind::Capped => "capped",
        }
    }
}

/// How a record's accrual id is made.
#[derive(Debug, Clone, Copy)]
pub enum AccrualId<'a> {
    /// `{source_event_id}:{rule}:{kind}` (see [`AccrualRecord::id`]).
    Of { rule: &'a str, kind: RecordKind },
    /// This text.
    Text(&'a str),
}

/// Room for what the usual accrual id adds to its event id and rule: two
/// `:` and a kind's name (the longest has 15 bytes).
const ID_FIXED_LEN: usize = 17;

/// Appends `{source_event_id}:{rule}:{kind}`, the usual accrual id.
fn push_id(out: &mut String, source_event_id: &str, rule: &str, kind: RecordKind) {
    out.push_str(source_event_id);
    out.push(':');
    out.push_str(rule);
    out.push(':');
    out.push_str(kind.name());
}

/// The names a record carries: its program, rule, unit, rules version
/// and, for a purchase's reward, the category that paid.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordNames<'a> {
    /// Empty for records about the account (tier, choices).
    pub program: &'a str,
    pub rule_id: &'a str,
    pub unit: &'a str,
    pub rules_version: &'a str,
    /// Empty unless the rule paid for a category it names.
    pub category: &'a str,
    /// For a record about the account (no program): every balance of the
    /// account after it, as a JSON array ([`push_balances`]).
    pub balances: &'a str,
}

/// A record's texts: its accrual id, source event id, account id, names
/// and explanation, one after another in one allocation: four strings of
/// their own were four allocations and frees a record, and the names as
/// shared `Arc<str>`s eight atomic counter updates, both dearer than
/// copying their few bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordText {
    text: String,
    /// Where each text but the last (the explanation) ends, in [`Part`] order.
    ends: [u32; 9],
}

/// The texts of a [`RecordText`], in their order.
#[derive(Clone, Copy)]
enum Part {
    AccrualId,
    SourceEventId,
    AccountId,
    Program,
    RuleId,
    Unit,
    RulesVersion,
    Category,
    Balances,
    Explanation,
}

impl RecordText {
    pub fn new(
        accrual_id: AccrualId<'_>,
        source_event_id: &str,
        account_id: &str,
        names: RecordNames<'_>,
        explanation: &str,
    ) -> Self {
        let id_len = match accrual_id {
            AccrualId::Of { rule, .. } => source_event_id.len() + rule.len() + ID_FIXED_LEN,
            AccrualId::Text(id) => id.len(),
        };
        let RecordNames { program, rule_id, unit, rules_version, category, balances } = names;
        let mut text = spare_text(
            id_len
                + source_event_id.len()
                + account_id.len()
                + program.len()
                + rule_id.len()
                + unit.len()
                + rules_version.len()
                + category.len()
                + balances.len()
                + explanation.len(),
        );
        match accrual_id {
            AccrualId::Of { rule, kind } => push_id(&mut text, source_event_id, rule, kind),
            AccrualId::Text(id) => text.push_str(id),
        }
        // Each part after the accrual id starts where the one before ends.
        let mut ends = [0u32; 9];
        let rest = [
            source_event_id,
            account_id,
            program,
            rule_id,
            unit,
            rules_version,
            category,
            balances,
            explanation,
        ];
        for (end, part) in ends.iter_mut().zip(rest) {
            *end = text_len(&text);
            text.push_str(part);
        }
        RecordText { text, ends }
    }

    fn part(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        // In bounds and on character boundaries by construction.
        self.text.get(start..end).unwrap_or_default()
    }
}

thread_local! {
    /// Texts of records dropped on this thread, for the next records to
    /// reuse. Records live for one event (the pipeline and the benches
    /// clear them before the next): allocating a text and freeing it an
    /// event later left the allocator's pages empty and freed in turn, and
    /// fetching fresh pages for every event was a measurable share of it.
    static SPARE_TEXTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// At most this many spare texts are kept per thread, each at most
/// [`SPARE_TEXT_MAX`] bytes: a few kilobytes.
const SPARE_TEXTS_MAX: usize = 32;
const SPARE_TEXT_MAX: usize = 1024;

/// An empty string of at least `capacity` bytes: a spare text if there is
/// one (see [`SPARE_TEXTS`]).
fn spare_text(capacity: usize) -> String {
    let spare = SPARE_TEXTS.try_with(|spare| spare.try_borrow_mut().ok()?.pop()).ok().flatten();
    match spare {
        Some(mut text) => {
            text.clear();
            text.reserve(capacity);
            text
        }
        None => String::with_capacity(capacity),
    }
}

impl Drop for RecordText {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.text);
        if text.capacity() == 0 || text.capacity() > SPARE_TEXT_MAX {
            return;
        }
        // During the thread's exit the list is gone: the text is freed.
        let _ = SPARE_TEXTS.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARE_TEXTS_MAX {
                    spare.push(text);
                }
            }
        });
    }
}

/// A length within a record's text. The texts are ids, names and one
/// explanation: far below 4 GiB (saturating keeps it total regardless).
fn text_len(text: &str) -> u32 {
    u32::try_from(text.len()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccrualRecord {
    /// The accrual id, source event id, account id, program, rule id,
    /// unit, rules version and explanation: see the methods of those names.
    pub text: RecordText,
    pub kind: RecordKind,
    /// Never negative; `kind` gives the direction. Fixed to the program's
    /// decimal places.
    pub amount: Decimal,
    /// The program's available balance after this record.
    pub balance_after: Decimal,
    /// The program's pending balance after this record.
    pub pending_after: Decimal,
    /// For redemptions and donations: the money value spent.
    pub value: Option<Decimal>,
    /// When it took effect: the event's time, or for a release, expiry or
    /// period end, the instant it became due.
    pub occurred_at: Timestamp,
    /// For a purchase's reward (or a rule capped to nothing on it): the
    /// purchase's merchant category code.
    pub mcc: Option<Mcc>,
}

impl AccrualRecord {
    /// Deterministic: the same input always yields the same id, so
    /// downstream systems can deduplicate on it (see `docs/events.md`).
    pub fn accrual_id(&self) -> &str {
        self.text.part(Part::AccrualId)
    }

    /// The event that caused it (for time-based records, the event that
    /// brought the account's time past the instant).
    pub fn source_event_id(&self) -> &str {
        self.text.part(Part::SourceEventId)
    }

    pub fn account_id(&self) -> &str {
        self.text.part(Part::AccountId)
    }

    /// Empty for records about the account (tier, choices).
    pub fn program(&self) -> &str {
        self.text.part(Part::Program)
    }

    pub fn rule_id(&self) -> &str {
        self.text.part(Part::RuleId)
    }

    /// The program's unit; empty for records about the account.
    pub fn unit(&self) -> &str {
        self.text.part(Part::Unit)
    }

    pub fn rules_version(&self) -> &str {
        self.text.part(Part::RulesVersion)
    }

    /// For a purchase's reward: the category of the rule's conditions that
    /// the purchase's code fell in (empty when the rule names none).
    pub fn category(&self) -> &str {
        self.text.part(Part::Category)
    }

    /// For a record about the account: its balances after it, as a JSON
    /// array of `{program, unit, available, pending}`.
    pub fn balances(&self) -> &str {
        self.text.part(Part::Balances)
    }

    /// The numbers used, for the customer and the auditor.
    pub fn explanation(&self) -> &str {
        self.text.part(Part::Explanation)
    }

    pub fn id(source_event_id: &str, rule_id: &str, kind: RecordKind) -> String {
        let mut id = String::with_capacity(source_event_id.len() + rule_id.len() + ID_FIXED_LEN);
        push_id(&mut id, source_event_id, rule_id, kind);
        id
    }

    /// Appends the record as one line of JSON (with the trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(400);
        self.push_json(&mut s);
        s.push('\n');
        out.extend_from_slice(s.as_bytes());
    }

    /// Appends the record as a JSON object (no newline): the message
    /// payload, written straight into the caller's reused buffer.
    pub fn push_json(&self, s: &mut String) {
        s.push_str("{\"accrual_id\":");
        json_str(s, self.accrual_id());
        s.push_str(",\"source_event_id\":");
        json_str(s, self.source_event_id());
        s.push_str(",\"account_id\":");
        json_str(s, self.account_id());
        s.push_str(",\"program\":");
        json_opt_str(s, self.program());
        s.push_str(",\"rule_id\":");
        json_str(s, self.rule_id());
        s.push_str(",\"kind\":\"");
        s.push_str(self.kind.name());
        s.push('"');
        if let Some(mcc) = self.mcc {
            let _ = write!(s, ",\"mcc\":\"{mcc}\",\"category\":");
            json_opt_str(s, self.category());
        }
        s.push_str(",\"amount\":\"");
        push_decimal(s, self.amount);
        s.push_str("\",\"unit\":");
        json_opt_str(s, self.unit());
        if self.program().is_empty() {
            // About the account: no one balance, but all of them.
            s.push_str(",\"balance_after\":null,\"pending_after\":null,\"balances\":");
            s.push_str(if self.balances().is_empty() { "[]" } else { self.balances() });
        } else {
            s.push_str(",\"balance_after\":\"");
            push_decimal(s, self.balance_after);
            s.push_str("\",\"pending_after\":\"");
            push_decimal(s, self.pending_after);
            s.push('"');
        }
        if let Some(value) = self.value {
            s.push_str(",\"value\":\"");
            push_decimal(s, value);
            s.push('"');
        }
        s.push_str(",\"rules_version\":");
        json_str(s, self.rules_version());
        s.push_str(",\"occurred_at\":\"");
        self.occurred_at.push_to(s);
        s.push_str("\",\"explanation\":");
        json_str(s, self.explanation());
        s.push('}');
    }
}

/// Writes balances as a JSON array: `[{"program":..,"unit":..,
/// "available":"..","pending":".."}]`, amounts in each program's decimals.
pub fn push_balances<'a>(
    out: &mut String,
    balances: impl Iterator<Item = (&'a str, &'a str, Decimal, Decimal)>,
) {
    out.push('[');
    for (i, (program, unit, available, pending)) in balances.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"program\":");
        json_str(out, program);
        out.push_str(",\"unit\":");
        json_str(out, unit);
        out.push_str(",\"available\":\"");
        push_decimal(out, available);
        out.push_str("\",\"pending\":\"");
        push_decimal(out, pending);
        out.push_str("\"}");
    }
    out.push(']');
}

/// Whether any byte must be escaped in a JSON string.
fn needs_escape(bytes: &[u8]) -> bool {
    crate::scan::any_byte(bytes, |b| (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// A string, or `null` when empty.
fn json_opt_str(out: &mut String, s: &str) {
    if s.is_empty() { out.push_str("null") } else { json_str(out, s) }
}

/// Writes a JSON string literal: runs of plain characters are copied
/// whole, only `"`, `\\` and control characters are escaped.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Ids, names and explanations almost never need escaping: one
    // branch-free pass over the bytes finds out, and they are copied whole.
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_whether_plain_or_escaped() {
        let cases = [
            "",
            "acc-0001",
            "1% of 1 234,00 ₽ (x2)",
            "a\"b",
            "back\\slash",
            "tab\tnl\n",
            "\u{1f}\u{0}",
            "é\u{7f}",
        ];
        for s in cases {
            let mut out = String::from("x");
            json_str(&mut out, s);
            let back: String = serde_json::from_str(&out[1..]).expect("valid JSON string");
            assert_eq!(back, s, "{out}");
            let plain = !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(out == format!("x\"{s}\""), plain, "copied whole exactly when plain: {out}");
        }
    }

    proptest::proptest! {
        /// Strings long enough to fill several 16-byte blocks, with a
        /// character to escape (or none) anywhere: in a block or the tail.
        #[test]
        fn long_strings_round_trip(head in "[a-z0-9 %.é]{0,70}", special in "[\"\\\\\\x00\\x1f\\n]?", tail in "[a-z0-9 ]{0,40}") {
            let s = format!("{head}{special}{tail}");
            let mut out = String::new();
            json_str(&mut out, &s);
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            proptest::prop_assert_eq!(&back, &s);
            proptest::prop_assert_eq!(out == format!("\"{s}\""), special.is_empty());
        }
    }

    #[test]
    fn the_id_room_holds_every_kind() {
        for kind in RecordKind::ALL {
            assert!(kind.name().len() + 2 <= ID_FIXED_LEN, "{}", kind.name());
        }
    }

    fn names() -> RecordNames<'static> {
        RecordNames {
            program: "cashback",
            rule_id: "base",
            unit: "RUB",
            rules_version: "v1",
            ..RecordNames::default()
        }
    }

    #[test]
    fn a_dropped_records_text_is_reused_and_starts_empty() {
        let long = "x".repeat(300);
        let first = RecordText::new(AccrualId::Text(&long), &long, "acc-1", names(), &long);
        let capacity = first.text.capacity();
        drop(first);
        let second = RecordText::new(
            AccrualId::Of { rule: "base", kind: RecordKind::Earn },
            "e-2",
            "acc-2",
            names(),
            "2",
        );
        // The first record's string, cleared: nothing of its text is left.
        assert!(second.text.capacity() >= capacity, "reused: {} < {capacity}", second.text.capacity());
        assert_eq!(second.text, "e-2:base:earne-2acc-2cashbackbaseRUBv12");
        assert_eq!(second.part(Part::Category), "");
        assert_eq!(second.part(Part::AccountId), "acc-2");
        assert_eq!(second.part(Part::Explanation), "2");
    }

    #[test]
    fn spare_texts_stay_bounded() {
        let spare =
            || SPARE_TEXTS.with(|spare| spare.borrow().iter().map(String::capacity).collect::<Vec<_>>());
        // Nothing spare on this thread to begin with.
        SPARE_TEXTS.with(|spare| spare.borrow_mut().clear());
        let huge = RecordText::new(AccrualId::Text("id"), "e", "a", names(), &"y".repeat(5000));
        drop(huge);
        assert!(spare().is_empty(), "a text over the size limit is freed");
        let texts: Vec<RecordText> = (0..100)
            .map(|i| RecordText::new(AccrualId::Text("id"), "e", "a", names(), &i.to_string()))
            .collect();
        drop(texts);
        let kept = spare();
        assert_eq!(kept.len(), SPARE_TEXTS_MAX);
        assert!(kept.iter().all(|&c| c > 0 && c <= SPARE_TEXT_MAX), "{kept:?}");
    }

    #[test]
    fn json_is_valid_and_escaped() {
        let names = RecordNames {
            program: "cashback",
            rule_id: "base",
            unit: "RUB",
            rules_version: "abc",
            category: "food",
            balances: "",
        };
        let r = AccrualRecord {
            text: RecordText::new(
                AccrualId::Of { rule: "base", kind: RecordKind::Earn },
                "e\"1",
                "a\\b",
                names,
                "1% of 1234.00\n\u{1}é\t\"",
            ),
            kind: RecordKind::Earn,
            amount: Decimal::new(1234, 2),
            balance_after: Decimal::new(5000, 2),
            pending_after: Decimal::new(0, 2),
            value: None,
            occurred_at: Timestamp(0),
            mcc: Some(Mcc(5411)),
        };
        let parts = (r.program(), r.rule_id(), r.unit(), r.rules_version());
        assert_eq!(parts, ("cashback", "base", "RUB", "abc"));
        assert_eq!(r.accrual_id(), AccrualRecord::id("e\"1", "base", RecordKind::Earn));
        assert_eq!((r.source_event_id(), r.account_id()), ("e\"1", "a\\b"));
        let mut out = Vec::new();
        r.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["accrual_id"], "e\"1:base:earn");
        assert_eq!(v["account_id"], "a\\b");
        assert_eq!(v["amount"], "12.34");
        assert_eq!(v["balance_after"], "50.00");
        assert_eq!(v["pending_after"], "0.00");
        assert!(v.get("value").is_none());
        assert_eq!((&v["mcc"], &v["category"]), (&serde_json::json!("5411"), &serde_json::json!("food")));
        assert_eq!(r.category(), "food");
        assert_eq!(v["occurred_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["explanation"], "1% of 1234.00\n\u{1}é\t\"");
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#""explanation":"1% of 1234.00\n\u0001é\t\""}"#), "{text}");
        assert!(out.ends_with(b"}\n"));
    }
}
