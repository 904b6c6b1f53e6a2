//! The rules file as written: TOML sections deserialized into typed structs
//! with `deny_unknown_fields`, so a typo is an error at load. Semantic
//! checks (references, ranges) happen in `compile`.

use crate::money::RoundingMode;
use crate::time::{self, TimeError, Timestamp, TzOffset};
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A decimal written as a string (`"0.5"`) or an integer (`5`); TOML floats
/// are refused because `0.1` cannot be held exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDecimal(pub Decimal);

impl<'de> Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDecimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal as a string, such as \"0.5\", or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ConfigDecimal, E> {
                crate::money::parse_decimal(s, false)
                    .map(ConfigDecimal)
                    .map_err(|e| E::custom(format!("\"{s}\" {e}")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigDecimal, E> {
                if n < 0 {
                    return Err(E::custom(format!("{n} is negative")));
                }
                Ok(ConfigDecimal(Decimal::from(n)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigDecimal, E> {
                Ok(ConfigDecimal(Decimal::from(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ConfigDecimal, E> {
                Err(E::custom(format!(
                    "{n} is a float; write decimals as strings (\"{n}\") so they stay exact"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ConfigDecimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A point in time in the rules: a date (`2026-12-01`, local midnight), a
/// local date-time (`2026-12-01T10:00:00`), both in the program's time
/// zone, or an RFC 3339 instant with an offset. Written as a TOML date or a
/// string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTime {
    pub text: String,
    kind: TimeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKind {
    Local { days: i64, seconds: i64 },
    Instant(Timestamp),
}

impl ConfigTime {
    pub fn parse(text: &str) -> Result<ConfigTime, TimeError> {
        let kind = if text.len() == 10 {
            let (y, m, d) = time::parse_date(text)?;
            TimeKind::Local { days: time::days_from_civil(y, m, d), seconds: 0 }
        } else if text.len() == 19 {
            // A local date-time: parse it as UTC, then shift at resolve time.
            let utc = Timestamp::parse_rfc3339(&format!("{text}Z"))?;
            let days = utc.0.div_euclid(time::MS_PER_DAY);
            TimeKind::Local { days, seconds: utc.0.rem_euclid(time::MS_PER_DAY) / 1000 }
        } else {
            TimeKind::Instant(Timestamp::parse_rfc3339(text)?)
        };
        Ok(ConfigTime { text: text.to_string(), kind })
    }

    /// The instant this denotes in the program's time zone.
    pub fn resolve(&self, tz: &TzOffset) -> Timestamp {
        match self.kind {
            TimeKind::Local { days, seconds } => tz.instant(days, seconds * 1000),
            TimeKind::Instant(t) => t,
        }
    }
}

impl<'de> Deserialize<'de> for ConfigTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConfigTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a date (2026-12-01) or date-time (2026-12-01T10:00:00+03:00)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ConfigTime, E> {
                ConfigTime::parse(s).map_err(|e| E::custom(format!("\"{s}\" {e}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ConfigTime, A::Error> {
                // A native TOML date arrives as toml's datetime map.
                let dt = toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
                self.visit_str(&dt.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ConfigTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// `[settings]`: the program as a whole.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsDef {
    pub name: String,
    /// The accounts' currency; events in another currency are rejected.
    pub currency: String,
    /// Fixed UTC offset of the program's calendar, e.g. "+03:00".
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How long a purchase can still be refunded and clawed back.
    #[serde(default = "default_refund_window")]
    pub refund_window_days: u32,
    /// How long an event id is remembered to drop duplicates.
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window_days: u32,
    /// How far an event's time may be ahead of its message's broker
    /// timestamp (default 60). Left out of the version hash when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_ahead_minutes: Option<u32>,
    /// How far an event's time may be behind its message's broker timestamp
    /// (default and at most `dedupe_window_days`: an older event could be a
    /// duplicate no longer remembered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_delay_days: Option<u32>,
    /// The most accounts one `clock` event brings to its time in a
    /// partition (default 5,000); later clocks go on with the rest.
    /// Left out of the version hash when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_accounts_per_clock: Option<u32>,
    /// Statement (billing) day of month of accounts that have not set one.
    #[serde(default = "default_statement_day")]
    pub statement_day: u32,
    #[serde(default)]
    pub description: Option<String>,
    /// The instant of event time this version takes effect, in a rules
    /// directory of versions (`rules::Timeline`): a date, a local
    /// date-time in `timezone`, or an instant with its offset. The version
    /// without it is the first. Left out of the version hash when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<ConfigTime>,
}

fn default_timezone() -> String {
    "Z".to_string()
}
fn default_refund_window() -> u32 {
    180
}
fn default_dedupe_window() -> u32 {
    35
}
fn default_statement_day() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    /// Money returned to the customer.
    Cashback,
    /// Bonus points.
    Points,
}

/// `[programs.<name>]`: a balance the customer accrues.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramDef {
    pub kind: ProgramKind,
    /// Unit of the balance: a currency code for cashback, e.g. "PTS" for points.
    pub unit: String,
    /// Decimal places of the balance (default: 2 for cashback, 0 for points).
    #[serde(default)]
    pub decimals: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    /// Rewards stay pending until released.
    #[serde(default)]
    pub hold: Option<HoldDef>,
    /// Available rewards expire ("burn").
    #[serde(default)]
    pub expiry: Option<ExpiryDef>,
    /// The balance can be spent.
    #[serde(default)]
    pub redemption: Option<RedemptionDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldUntil {
    /// The account's next statement date after the purchase.
    Statement,
}

/// `hold = { days = 30 }`, `hold = { until = "statement" }`; with
/// `require_clearing = true` an authorised purchase's reward also waits
/// for its clearing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HoldDef {
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub until: Option<HoldUntil>,
    #[serde(default)]
    pub require_clearing: bool,
}

/// Exactly one of the policies, and an optional warning before.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_months: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_year: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_months: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_days: Option<u32>,
}

/// What one unit of the balance is worth when spent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionDef {
    /// Value of one unit, in the program's currency (`settings.currency`).
    pub rate: ConfigDecimal,
    /// Tier-specific rates, by tier name.
    #[serde(default)]
    pub tier_rates: BTreeMap<String, ConfigDecimal>,
    /// Smallest amount (in units) one redemption may spend.
    #[serde(default)]
    pub min: Option<ConfigDecimal>,
    /// Charities a redemption may donate to (empty: donations refused).
    #[serde(default)]
    pub charities: Vec<String>,
}

/// `[categories.<name>]` or `[exclusions.<name>]`: an MCC list, either
/// fixed (`mcc = [...]`) or effective-dated (`[[...versions]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MccListDef {
    #[serde(default)]
    pub mcc: Option<Vec<String>>,
    #[serde(default)]
    pub versions: Option<Vec<MccVersionDef>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MccVersionDef {
    pub from: ConfigTime,
    pub mcc: Vec<String>,
}

/// `[partners.<name>]`: a coalition partner, recognised by the event's
/// `partner_id` or `merchant_id`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerDef {
    #[serde(default)]
    pub partner_ids: Vec<String>,
    #[serde(default)]
    pub merchant_ids: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `[tiers.<name>]`: a status level. Reached when the qualification
/// measure in a period reaches `threshold`; rules can require it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierDef {
    #[serde(default)]
    pub description: Option<String>,
    /// Order of tiers, higher is better.
    pub rank: u32,
    /// Qualifying spend (or points earned) in a period.
    pub threshold: ConfigDecimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMeasure {
    /// Purchase amounts (net of refunds).
    Spend,
    /// Points earned in `program` (never the balance).
    Earned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierPeriodDef {
    Month,
    Quarter,
    Year,
    Rolling,
}

/// `[tier_qualification]`: how tiers are earned and kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierQualificationDef {
    pub measure: TierMeasure,
    /// With `measure = "earned"`: the program whose earnings count.
    #[serde(default)]
    pub program: Option<String>,
    pub period: TierPeriodDef,
    /// With `period = "rolling"`: the window in days.
    #[serde(default)]
    pub rolling_days: Option<u32>,
    /// When a tier a period qualifies for is granted: as soon as the
    /// threshold is crossed (the default), or from the next period. Left
    /// out of the version hash when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takes_effect: Option<TakesEffect>,
}

/// `[tier_qualification] takes_effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TakesEffect {
    /// An upgrade as soon as a purchase takes the period over a threshold.
    #[default]
    Immediately,
    /// "Status for next month from this month's spend": the tier a period
    /// qualifies for is granted when it ends.
    NextPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BonusTrigger {
    /// Once per account, on its `enrollment` event.
    Enrollment,
    /// To the referrer, when a referred account's first qualifying purchase
    /// happens (once per referred account).
    Referral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarPeriod {
    Month,
    Quarter,
    Year,
}

/// `[bonuses.<name>]`: a fixed reward for an account-level event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BonusDef {
    pub on: BonusTrigger,
    pub program: String,
    pub amount: ConfigDecimal,
    /// Referral: the referred account's purchase must be at least this.
    #[serde(default)]
    pub min_purchase: Option<ConfigDecimal>,
    /// Referral: most bonuses one referrer receives per `per`.
    #[serde(default)]
    pub max_per_referrer: Option<u32>,
    #[serde(default)]
    pub per: Option<CalendarPeriod>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `[category_choice]`: customers pick which offered categories get the
/// boosted rate each month (rules with `when.chosen = true`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryChoiceDef {
    pub offered: Vec<String>,
    /// How many a customer picks (at most).
    pub choose: u32,
    /// A choice for a month is accepted until the end of this day of that
    /// month (local time); earlier months' choices stay as they were.
    pub deadline_day: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPeriod {
    Transaction,
    Month,
    Quarter,
    /// The account's statement cycle (from its statement day).
    Statement,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapMeasure {
    /// Limits the reward paid.
    #[default]
    Reward,
    /// Limits the purchase amount that earns ("5% on the first 1,500").
    Spend,
}

/// `[caps.<name>]`: a limit shared by the rules that name it, or by every
/// rule of `program` when that is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CapDef {
    pub limit: ConfigDecimal,
    pub period: CapPeriod,
    #[serde(default)]
    pub measure: CapMeasure,
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `when = {...}`: every condition given must hold; within a list, any
/// entry matches.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsDef {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merchants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_amount: Option<ConfigDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<ConfigDecimal>,
    /// Event time window, inclusive start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ConfigTime>,
    /// Event time window, exclusive end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ConfigTime>,
    /// The purchase's category is one the account chose for the month.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chosen: bool,
    /// `not = {...}`: none of these may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<NegatedDef>,
}

/// `when.not = {...}`: the purchase is in none of these categories, has
/// none of these MCCs, is at none of these partners, through none of these
/// channels.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NegatedDef {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// `effect = {...}`: exactly one way to compute the reward.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EffectDef {
    /// Percent of the purchase amount.
    Percent(ConfigDecimal),
    /// A fixed reward per qualifying purchase.
    Fixed(ConfigDecimal),
    /// `award` for every full `every` units of the amount.
    PerUnit { every: ConfigDecimal, award: ConfigDecimal },
    /// Raises another rule's result to `factor` times; this rule pays the
    /// extra `(factor - 1) x` that rule's reward.
    Multiply { rule: String, factor: ConfigDecimal },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoundingDef {
    #[serde(default)]
    pub mode: RoundingMode,
    /// Rounding step of the reward (default: the program's smallest unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<ConfigDecimal>,
    /// Count the amount in full units of this size first ("per full 100").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_full: Option<ConfigDecimal>,
}

/// `[[rules]]`: one way a purchase earns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    pub program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Higher wins within an exclusive group, and evaluates first.
    #[serde(default)]
    pub priority: i32,
    /// Exclusive group: of its matching rules only one pays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub when: ConditionsDef,
    pub effect: EffectDef,
    #[serde(default)]
    pub rounding: RoundingDef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
}

/// The whole file, in canonical form (sorted maps), which is also what the
/// rules version hashes.
#[derive(Debug, Clone, Serialize)]
pub struct RulesFile {
    pub settings: SettingsDef,
    pub programs: BTreeMap<String, ProgramDef>,
    pub categories: BTreeMap<String, MccListDef>,
    pub exclusions: BTreeMap<String, MccListDef>,
    pub partners: BTreeMap<String, PartnerDef>,
    pub tiers: BTreeMap<String, TierDef>,
    pub tier_qualification: Option<TierQualificationDef>,
    pub bonuses: BTreeMap<String, BonusDef>,
    pub category_choice: Option<CategoryChoiceDef>,
    pub caps: BTreeMap<String, CapDef>,
    pub rules: Vec<RuleDef>,
}

/// The top-level sections a rules file may have.
pub const SECTIONS: [&str; 11] = [
    "settings",
    "programs",
    "categories",
    "exclusions",
    "partners",
    "tiers",
    "tier_qualification",
    "bonuses",
    "category_choice",
    "caps",
    "rules",
];
