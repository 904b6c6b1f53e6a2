//! `[settings]`: currency, time zone, windows and the limits on input.

use super::Problems;
use crate::rules::Item;
use crate::rules::file::*;
use crate::time::{self, TzOffset};

/// An hour covers producers' clock skew and a time zone written wrong;
/// a week is the most any setting allows.
const DEFAULT_MAX_EVENT_AHEAD_MINUTES: u32 = 60;
const MAX_EVENT_AHEAD_MINUTES: u32 = 7 * 24 * 60;
/// Small enough that a clock's cycle stays within tens of megabytes, large
/// enough that a month-end's backlog drains in minutes (docs/benchmarks.md).
const DEFAULT_MAX_ACCOUNTS_PER_CLOCK: u32 = 5_000;
const MAX_ACCOUNTS_PER_CLOCK: u32 = 1_000_000;

/// What `[settings]` decides beyond the values copied as they are.
pub(super) struct CompiledSettings {
    pub(super) timezone: TzOffset,
    pub(super) max_ahead_minutes: u32,
    pub(super) max_delay_days: u32,
    pub(super) per_clock: u32,
}

pub(super) fn compile_settings(s: &SettingsDef, problems: &mut Problems) -> CompiledSettings {
    let settings = Item::Settings;
    if s.currency.len() != 3 || !s.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        problems.add(&settings, "currency", format!("\"{}\" is not a 3-letter ISO 4217 code", s.currency));
    }
    let timezone = TzOffset::parse(&s.timezone).unwrap_or_else(|| {
        let message = format!(
            "\"{}\" is neither a UTC offset like \"+03:00\" or \"Z\" nor a time zone of the IANA database \
             (version {}) like \"Europe/Berlin\"",
            s.timezone,
            time::tzdb_version()
        );
        problems.add(&settings, "timezone", message);
        TzOffset::default()
    });
    for (field, days) in
        [("refund_window_days", s.refund_window_days), ("dedupe_window_days", s.dedupe_window_days)]
    {
        if !(1..=3650).contains(&days) {
            problems.add(&settings, field, format!("must be between 1 and 3650 days, got {days}"));
        }
    }

    let max_ahead_minutes = s.max_event_ahead_minutes.unwrap_or(DEFAULT_MAX_EVENT_AHEAD_MINUTES);
    if !(1..=MAX_EVENT_AHEAD_MINUTES).contains(&max_ahead_minutes) {
        problems.add(
            &settings,
            "max_event_ahead_minutes",
            format!("must be between 1 and {MAX_EVENT_AHEAD_MINUTES} minutes, got {max_ahead_minutes}"),
        );
    }
    let max_delay_days = s.max_event_delay_days.unwrap_or(s.dedupe_window_days);
    if !(1..=s.dedupe_window_days).contains(&max_delay_days) {
        problems.add(
            &settings,
            "max_event_delay_days",
            format!(
                "must be between 1 day and dedupe_window_days ({}): an older event could repeat one no \
                 longer remembered; got {max_delay_days}",
                s.dedupe_window_days
            ),
        );
    }
    let per_clock = s.max_accounts_per_clock.unwrap_or(DEFAULT_MAX_ACCOUNTS_PER_CLOCK);
    if !(1..=MAX_ACCOUNTS_PER_CLOCK).contains(&per_clock) {
        problems.add(
            &settings,
            "max_accounts_per_clock",
            format!("must be between 1 and {MAX_ACCOUNTS_PER_CLOCK}, got {per_clock}"),
        );
    }
    if !(1..=28).contains(&s.statement_day) {
        problems.add(
            &settings,
            "statement_day",
            format!("must be a day from 1 to 28, got {}", s.statement_day),
        );
    }
    CompiledSettings { timezone, max_ahead_minutes, max_delay_days, per_clock }
}
