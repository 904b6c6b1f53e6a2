//! What an input must satisfy before it may touch state: its key names its
//! account, and its event time is plausible. An event outside the bounds
//! is a dead letter with its own reason, so one mistaken or hostile event
//! can neither move the partition's clock (and with it dedupe expiry)
//! nor an account's holds, expiry and tiers far ahead, nor slip past
//! dedupe by arriving after its original's key has expired.
//!
//! The bounds (`docs/events.md`, "Event time"):
//! - no more than `max_event_ahead` after the message's broker timestamp
//!   (`future_event_time`);
//! - no more than `max_event_delay` before it (`too_late`);
//! - not older than the partition's clock less the dedupe window, the
//!   oldest time a duplicate can still be recognised (`too_late`).

use super::Input;
use crate::events::{Event, EventKind};
use crate::rules::Rules;
use crate::time::Timestamp;
use std::fmt;

/// Why an input was refused before it reached the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The message key is not the event's `account_id`: the event may sit
    /// in another partition than the rest of its account.
    KeyMismatch { key: String },
    /// The event time is further ahead of the broker timestamp than allowed.
    FutureEventTime { occurred_at: Timestamp, received: Timestamp, max_ahead_ms: i64 },
    /// The event time is further behind the broker timestamp than allowed.
    LateForBroker { occurred_at: Timestamp, received: Timestamp, max_delay_ms: i64 },
    /// The event is older than dedupe remembers: a copy of an event already
    /// accrued could not be told apart from a new one.
    OutsideDedupeWindow { occurred_at: Timestamp, clock: Timestamp, window_ms: i64 },
}

impl Refusal {
    /// Every reason label, for metrics to start at zero.
    pub const REASONS: [&'static str; 3] = ["key_mismatch", "future_event_time", "too_late"];

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::KeyMismatch { .. } => "key_mismatch",
            Refusal::FutureEventTime { .. } => "future_event_time",
            Refusal::LateForBroker { .. } | Refusal::OutsideDedupeWindow { .. } => "too_late",
        }
    }
}

/// Minutes, hours or days, whichever reads best.
struct Span(i64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MINUTE: i64 = 60_000;
        let (n, unit) = match self.0 {
            ms if ms % crate::time::MS_PER_DAY == 0 => (ms / crate::time::MS_PER_DAY, "day"),
            ms if ms % (60 * MINUTE) == 0 => (ms / (60 * MINUTE), "hour"),
            ms => (ms / MINUTE, "minute"),
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::KeyMismatch { key } if key.is_empty() => {
                write!(f, "the message has no key; it must be keyed by its account_id")
            }
            Refusal::KeyMismatch { key } => {
                write!(f, "the message key {key:?} is not the event's account_id")
            }
            Refusal::FutureEventTime { occurred_at, received, max_ahead_ms } => write!(
                f,
                "occurred_at {occurred_at} is more than {} after the message's timestamp {received}",
                Span(*max_ahead_ms)
            ),
            Refusal::LateForBroker { occurred_at, received, max_delay_ms } => write!(
                f,
                "occurred_at {occurred_at} is more than {} before the message's timestamp {received}",
                Span(*max_delay_ms)
            ),
            Refusal::OutsideDedupeWindow { occurred_at, clock, window_ms } => write!(
                f,
                "occurred_at {occurred_at} is more than the dedupe window ({}) before the partition's \
                 clock {clock}: a duplicate could not be recognised",
                Span(*window_ms)
            ),
        }
    }
}

/// The checks, with the rules' bounds and what stands in for a missing
/// broker timestamp.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    max_ahead_ms: i64,
    max_delay_ms: i64,
    window_ms: i64,
    /// Whether message keys are checked (Kafka; files have none).
    check_keys: bool,
    /// For inputs without a broker timestamp (`simulate`): each is taken as
    /// received at its event time, but never after this instant.
    received_by: Option<Timestamp>,
}

impl Admission {
    pub fn new(rules: &Rules) -> Admission {
        Admission {
            max_ahead_ms: rules.max_event_ahead_ms,
            max_delay_ms: rules.max_event_delay_ms,
            window_ms: rules.dedupe_window_ms,
            check_keys: false,
            received_by: None,
        }
    }

    pub fn checking_keys(self) -> Admission {
        Admission { check_keys: true, ..self }
    }

    pub fn received_by(self, now: Timestamp) -> Admission {
        Admission { received_by: Some(now), ..self }
    }

    /// When `event` counts as received: the broker timestamp, else the
    /// stand-in (if any).
    fn received(&self, input: &Input<'_>, event: &Event<'_>) -> Option<Timestamp> {
        input.timestamp.or_else(|| self.received_by.map(|now| now.min(event.occurred_at)))
    }

    /// Checks one input against the bounds; `clock` is the partition's
    /// stream time before it.
    pub fn check(&self, input: &Input<'_>, event: &Event<'_>, clock: Timestamp) -> Result<(), Refusal> {
        let kind = event.kind();
        if self.check_keys && kind != EventKind::Clock && input.key != event.account_id.as_bytes() {
            let key = String::from_utf8_lossy(input.key).chars().take(128).collect();
            return Err(Refusal::KeyMismatch { key });
        }
        let occurred_at = event.occurred_at;
        if let Some(received) = self.received(input, event) {
            if occurred_at.0 > received.0.saturating_add(self.max_ahead_ms) {
                return Err(Refusal::FutureEventTime {
                    occurred_at,
                    received,
                    max_ahead_ms: self.max_ahead_ms,
                });
            }
            // A referrer's bonus is the engine's own, republished when its
            // purchase was processed (and checked): a catch-up far behind
            // the broker must not lose it.
            if kind != EventKind::ReferralBonus
                && occurred_at.0 < received.0.saturating_sub(self.max_delay_ms)
            {
                return Err(Refusal::LateForBroker {
                    occurred_at,
                    received,
                    max_delay_ms: self.max_delay_ms,
                });
            }
        }
        if occurred_at.0 < clock.0.saturating_sub(self.window_ms) {
            return Err(Refusal::OutsideDedupeWindow { occurred_at, clock, window_ms: self.window_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Decoder;
    use crate::time::MS_PER_DAY;

    fn admission() -> Admission {
        Admission {
            max_ahead_ms: 3_600_000,
            max_delay_ms: 7 * MS_PER_DAY,
            window_ms: 7 * MS_PER_DAY,
            check_keys: true,
            received_by: None,
        }
    }

    fn check(a: &Admission, key: &[u8], ts: Option<&str>, event: &str, clock: &str) -> Result<(), Refusal> {
        let input = Input {
            offset: 0,
            key,
            payload: event.as_bytes(),
            timestamp: ts.map(|t| Timestamp::parse_rfc3339(t).unwrap()),
        };
        let mut d = Decoder::new();
        let e = d.decode(event.as_bytes()).unwrap();
        a.check(&input, &e, Timestamp::parse_rfc3339(clock).unwrap())
    }

    const P: &str = r#"{"event_id":"e1","type":"purchase","account_id":"a","amount":"10","currency":"RUB","mcc":"5411","merchant_id":"m","occurred_at":"2026-11-20T12:00:00Z"}"#;
    const CLOCK: &str = r#"{"event_id":"c1","type":"clock","occurred_at":"2026-11-20T12:00:00Z"}"#;

    #[test]
    fn events_within_the_bounds_pass() {
        let a = admission();
        assert_eq!(check(&a, b"a", Some("2026-11-20T12:00:00Z"), P, "2026-11-20T12:00:00Z"), Ok(()));
        assert_eq!(check(&a, b"a", Some("2026-11-20T11:00:00Z"), P, "2026-11-13T12:00:00Z"), Ok(()));
        assert_eq!(check(&a, b"a", Some("2026-11-27T12:00:00Z"), P, "2026-11-27T12:00:00Z"), Ok(()));
        assert_eq!(check(&a, b"", Some("2026-11-20T12:00:00Z"), CLOCK, "2026-11-20T12:00:00Z"), Ok(()));
    }

    #[test]
    fn each_bound_is_refused_one_millisecond_past_it() {
        let a = admission();
        let r = check(&a, b"a", Some("2026-11-20T10:59:59.999Z"), P, "2026-11-01T00:00:00Z").unwrap_err();
        assert_eq!(r.reason(), "future_event_time");
        assert_eq!(
            r.to_string(),
            "occurred_at 2026-11-20T12:00:00Z is more than 1 hour after the message's timestamp 2026-11-20T10:59:59.999Z"
        );
        let r = check(&a, b"a", Some("2026-11-27T12:00:00.001Z"), P, "2026-11-01T00:00:00Z").unwrap_err();
        assert_eq!(r.reason(), "too_late");
        let r = check(&a, b"a", Some("2026-11-20T12:00:00Z"), P, "2026-11-27T12:00:00.001Z").unwrap_err();
        assert_eq!(r.reason(), "too_late");
        assert!(r.to_string().contains("dedupe window (7 days)"), "{r}");
    }

    #[test]
    fn keys_must_name_the_account_except_for_clocks() {
        let a = admission();
        let at = Some("2026-11-20T12:00:00Z");
        assert_eq!(check(&a, b"b", at, P, "2026-11-20T12:00:00Z").unwrap_err().reason(), "key_mismatch");
        let r = check(&a, b"", at, P, "2026-11-20T12:00:00Z").unwrap_err();
        assert_eq!(r.to_string(), "the message has no key; it must be keyed by its account_id");
        let unchecked = Admission { check_keys: false, ..a };
        assert_eq!(check(&unchecked, b"", at, P, "2026-11-20T12:00:00Z"), Ok(()));
    }

    #[test]
    fn the_stand_in_never_receives_an_event_after_its_instant() {
        let a = Admission { check_keys: false, ..admission() }
            .received_by(Timestamp::parse_rfc3339("2026-11-20T10:00:00Z").unwrap());
        assert_eq!(
            check(&a, b"", None, P, "2026-11-01T00:00:00Z").unwrap_err().reason(),
            "future_event_time"
        );
        let later = a.received_by(Timestamp::parse_rfc3339("2026-11-20T11:00:00Z").unwrap());
        assert_eq!(check(&later, b"", None, P, "2026-11-01T00:00:00Z"), Ok(()));
        // History is never late for the stand-in: it is received at its time.
        let much_later = a.received_by(Timestamp::parse_rfc3339("2030-01-01T00:00:00Z").unwrap());
        assert_eq!(check(&much_later, b"", None, P, "2026-11-20T12:00:00Z"), Ok(()));
        // Without a stand-in or a timestamp, only the dedupe window applies.
        let none = Admission { check_keys: false, ..admission() };
        assert_eq!(check(&none, b"", None, P, "2026-11-20T12:00:00Z"), Ok(()));
    }
}
