//! `accrual gen`: a deterministic generator of realistic card transactions
//! for demos, tests and benchmarks. The same options give the same bytes on
//! every machine: a fixed PRNG (SplitMix64), no clock, integer kopecks.
//!
//! What it models: the MCC mix of a retail card portfolio with typical
//! amounts per category, Zipf-distributed account activity, partner
//! merchants, a few percent refunds (full and partial) and reversals of
//! recent purchases, and on request exact duplicates and malformed lines.

pub mod hostile;

use accrual_core::time::{MS_PER_DAY, Timestamp};
use std::collections::VecDeque;
use std::io::{self, Write};

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub events: u64,
    pub accounts: u64,
    /// Zipf exponent of account activity: 1.07 puts a tenth of all events
    /// on the busiest account (a stress case); 0.25 is a card portfolio,
    /// the busiest card about 15 times the average; 0 is uniform.
    pub skew: f64,
    pub seed: u64,
    pub start: Timestamp,
    pub days: u32,
    /// Percent of events that are refunds of earlier purchases.
    pub refund_percent: f64,
    /// Percent of events that are reversals of recent purchases.
    pub reversal_percent: f64,
    /// Percent of lines that repeat an earlier event exactly.
    pub duplicate_percent: f64,
    /// Percent of lines that are malformed in one of several ways.
    pub malformed_percent: f64,
    /// Hostile lines mixed in ([`hostile`]), on top of `events`.
    pub hostile: u64,
    pub currency: String,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 10_000,
            accounts: 1_000,
            skew: 1.07,
            seed: 1,
            start: Timestamp(1_793_480_400_000), // 2026-11-01T00:00:00+03:00
            days: 30,
            refund_percent: 2.0,
            reversal_percent: 1.0,
            duplicate_percent: 0.0,
            malformed_percent: 0.0,
            hostile: 0,
            currency: "RUB".to_string(),
        }
    }
}

/// SplitMix64: tiny, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn percent(&mut self, p: f64) -> bool {
        self.unit() * 100.0 < p
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// (MCC, weight in the portfolio, median amount in roubles)
const MCC_MIX: &[(&str, f64, f64)] = &[
    ("5411", 22.0, 900.0),   // supermarkets
    ("5499", 4.0, 400.0),    // food stores
    ("5441", 0.7, 350.0),    // confectionery
    ("5451", 0.6, 300.0),    // dairy
    ("5462", 0.7, 250.0),    // bakeries
    ("5814", 7.0, 450.0),    // fast food
    ("5812", 4.0, 2_500.0),  // restaurants
    ("5813", 1.0, 1_800.0),  // bars
    ("5541", 5.0, 2_500.0),  // fuel
    ("5542", 2.0, 2_200.0),  // automated fuel
    ("5912", 4.0, 700.0),    // pharmacies
    ("8011", 0.5, 3_000.0),  // doctors
    ("5399", 4.0, 2_000.0),  // marketplaces
    ("5311", 2.0, 2_500.0),  // department stores
    ("5331", 2.0, 600.0),    // variety stores
    ("5651", 2.0, 4_000.0),  // clothing
    ("5691", 1.0, 5_000.0),  // clothing
    ("5661", 1.0, 4_500.0),  // shoes
    ("5977", 1.0, 1_500.0),  // cosmetics
    ("5732", 1.0, 15_000.0), // electronics
    ("5200", 1.0, 3_500.0),  // home supply
    ("5251", 1.0, 1_200.0),  // hardware
    ("4111", 4.0, 60.0),     // commuter transport
    ("4121", 3.0, 500.0),    // taxi
    ("4131", 1.0, 900.0),    // bus lines
    ("4814", 3.0, 500.0),    // telecom
    ("4900", 2.0, 3_500.0),  // utilities
    ("6011", 3.0, 5_000.0),  // cash withdrawal
    ("6051", 0.5, 3_000.0),  // quasi-cash
    ("4829", 2.0, 10_000.0), // transfers
    ("6538", 0.5, 8_000.0),  // card-to-card
    ("5815", 0.7, 300.0),    // digital media
    ("5816", 0.6, 500.0),    // games
    ("5818", 0.7, 400.0),    // digital goods
    ("4899", 1.0, 400.0),    // streaming, cable
    ("4511", 0.5, 15_000.0), // airlines
    ("7011", 0.5, 12_000.0), // hotels
    ("4722", 0.5, 20_000.0), // travel agencies
    ("7230", 1.0, 2_000.0),  // beauty
    ("8299", 0.5, 6_000.0),  // education
    ("7995", 0.3, 1_000.0),  // gambling
    ("6211", 0.2, 20_000.0), // securities
    ("9311", 0.3, 3_000.0),  // taxes
    ("0742", 0.2, 2_500.0),  // veterinary
    ("5942", 0.5, 900.0),    // books
    ("5941", 0.5, 3_000.0),  // sporting goods
];

const PARTNER_MERCHANTS: [&str; 2] = ["M-MEGAMART-001", "M-MEGAMART-002"];
const CHANNELS: [(&str, f64); 3] = [("pos", 60.0), ("online", 30.0), ("mobile", 10.0)];

/// Inverse-CDF sampling over cumulative weights.
struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl Iterator<Item = f64>) -> Weighted {
        let mut total = 0.0;
        let cumulative = weights
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Weighted { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        self.cumulative.partition_point(|&c| c <= x).min(self.cumulative.len().saturating_sub(1))
    }
}

/// A purchase that later events may refund or reverse.
#[derive(Clone)]
struct Recent {
    event_id: String,
    account: u64,
    kopecks: u64,
    at: i64,
}

fn amount_text(kopecks: u64) -> String {
    format!("{}.{:02}", kopecks / 100, kopecks % 100)
}

/// Writes `opts.events` lines of NDJSON to `out`.
pub fn generate(opts: &GenOptions, out: &mut impl Write) -> io::Result<()> {
    if opts.hostile == 0 {
        return generate_valid(opts, out);
    }
    let mut valid = Vec::new();
    generate_valid(opts, &mut valid)?;
    let lines: Vec<Vec<u8>> =
        valid.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    for line in hostile::mix(&lines, opts.hostile as usize, opts.seed) {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn generate_valid(opts: &GenOptions, out: &mut impl Write) -> io::Result<()> {
    let mut rng = Rng::new(opts.seed);
    let accounts = opts.accounts.max(1);
    // Zipf over account ranks: a few very active accounts, a long tail.
    let zipf = Weighted::new((1..=accounts).map(|k| 1.0 / (k as f64).powf(opts.skew)));
    let mcc = Weighted::new(MCC_MIX.iter().map(|m| m.1));
    let channel = Weighted::new(CHANNELS.iter().map(|c| c.1));
    let span_ms = i64::from(opts.days.max(1)) * MS_PER_DAY;
    let step_ms = (span_ms / opts.events.max(1) as i64).max(1);
    // Queues: the oldest leave from the front on every event.
    let mut recent: VecDeque<Recent> = VecDeque::with_capacity(4096);
    let mut lines: VecDeque<String> = VecDeque::with_capacity(256);
    let mut line = String::with_capacity(400);

    for i in 0..opts.events {
        // Event time advances evenly with a little jitter, so the stream is
        // nearly (not perfectly) in time order, like a real one.
        let at = opts.start.0 + i as i64 * step_ms + rng.below(step_ms as u64 * 4) as i64;
        let stamp = Timestamp(at).to_string();
        let event_id = format!("e{}-{:09}", opts.seed, i);
        line.clear();

        if opts.malformed_percent > 0.0 && rng.percent(opts.malformed_percent) {
            out.write_all(&malformed(&mut rng, &event_id, &stamp))?;
            out.write_all(b"\n")?;
            continue;
        }
        if opts.duplicate_percent > 0.0 && !lines.is_empty() && rng.percent(opts.duplicate_percent) {
            let again = &lines[rng.below(lines.len() as u64) as usize];
            out.write_all(again.as_bytes())?;
            out.write_all(b"\n")?;
            continue;
        }

        let roll = rng.unit() * 100.0;
        if roll < opts.refund_percent + opts.reversal_percent && !recent.is_empty() {
            let pick = recent.len() - 1 - rng.below(recent.len().min(2000) as u64) as usize;
            let original = recent[pick].clone();
            let account = format!("acc-{:07}", original.account);
            if roll < opts.refund_percent {
                // 60% refund in full, the rest part of the amount.
                let kopecks =
                    if rng.percent(60.0) { original.kopecks } else { 1 + rng.below(original.kopecks.max(1)) };
                line.push_str(&format!(
                    r#"{{"event_id":"{event_id}","type":"refund","account_id":"{account}","original_event_id":"{}","amount":"{}","currency":"{}","occurred_at":"{stamp}"}}"#,
                    original.event_id,
                    amount_text(kopecks),
                    opts.currency
                ));
            } else {
                line.push_str(&format!(
                    r#"{{"event_id":"{event_id}","type":"reversal","account_id":"{account}","original_event_id":"{}","occurred_at":"{stamp}"}}"#,
                    original.event_id
                ));
                recent.swap_remove_back(pick);
            }
        } else {
            let account = 1 + zipf.sample(&mut rng) as u64;
            let (code, _, median) = MCC_MIX[mcc.sample(&mut rng)];
            // Log-normal amounts around the category's median.
            let roubles = median * (0.8 * rng.normal()).exp();
            let kopecks = ((roubles * 100.0).round() as u64).clamp(100, 50_000_000);
            let partner = code == "5411" && rng.percent(12.0);
            let merchant = if partner {
                PARTNER_MERCHANTS[rng.below(2) as usize].to_string()
            } else {
                format!("M-{code}-{:03}", rng.below(200))
            };
            let partner_field = if partner { r#","partner_id":"MEGAMART""# } else { "" };
            let card = rng.below(2);
            line.push_str(&format!(
                r#"{{"event_id":"{event_id}","type":"purchase","account_id":"acc-{account:07}","card_id":"card-{account:07}-{card}","amount":"{}","currency":"{}","mcc":"{code}","merchant_id":"{merchant}"{partner_field},"channel":"{}","occurred_at":"{stamp}"}}"#,
                amount_text(kopecks),
                opts.currency,
                CHANNELS[channel.sample(&mut rng)].0,
            ));
            if recent.len() == 4096 {
                recent.pop_front();
            }
            recent.push_back(Recent { event_id, account, kopecks, at });
        }
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        if opts.duplicate_percent > 0.0 {
            if lines.len() == 256 {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // Reversals concern recent authorisations only: forget old ones.
        while recent.front().is_some_and(|r| at - r.at > 45 * MS_PER_DAY) {
            recent.pop_front();
        }
    }
    out.flush()
}

/// One malformed line, of a kind chosen at random.
fn malformed(rng: &mut Rng, event_id: &str, stamp: &str) -> Vec<u8> {
    let good = format!(
        r#"{{"event_id":"{event_id}","type":"purchase","account_id":"acc-0000001","amount":"100.00","currency":"RUB","mcc":"5411","merchant_id":"M-5411-001","occurred_at":"{stamp}"}}"#
    );
    match rng.below(10) {
        0 => good.as_bytes()[..good.len() / 2].to_vec(),
        1 => good.replace(r#""100.00""#, "true").into_bytes(),
        2 => good.replace(r#""100.00""#, r#""-100.00""#).into_bytes(),
        3 => good.replace(r#""5411""#, r#""54A1""#).into_bytes(),
        4 => good.replace(r#""account_id":"acc-0000001","#, "").into_bytes(),
        5 => {
            let mut bytes = good.replace("M-5411-001", "M-\u{1}").into_bytes();
            if let Some(at) = bytes.iter().position(|&b| b == 1) {
                bytes[at] = 0xff;
            }
            bytes
        }
        6 => good.replace(r#""100.00""#, "1e30").into_bytes(),
        7 => b"[\"not\",\"an\",\"object\"]".to_vec(),
        8 => good.replace(r#""purchase""#, r#""gift""#).into_bytes(),
        _ => good.replace(stamp, "yesterday").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let opts = GenOptions {
            events: 2_000,
            accounts: 100,
            malformed_percent: 2.0,
            duplicate_percent: 1.0,
            ..Default::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&opts, &mut a).unwrap();
        generate(&opts, &mut b).unwrap();
        assert_eq!(a, b);
        let other = GenOptions { seed: 2, ..opts };
        let mut c = Vec::new();
        generate(&other, &mut c).unwrap();
        assert_ne!(a, c);
        assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 2_000);
    }

    #[test]
    fn produces_the_requested_mix() {
        let opts = GenOptions {
            events: 20_000,
            accounts: 500,
            refund_percent: 3.0,
            reversal_percent: 1.0,
            ..Default::default()
        };
        let mut out = Vec::new();
        generate(&opts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count() as f64;
        let n = 20_000.0;
        assert!((count(r#""type":"refund""#) / n - 0.03).abs() < 0.01);
        assert!((count(r#""type":"reversal""#) / n - 0.01).abs() < 0.005);
        assert!(count(r#""mcc":"5411""#) / n > 0.15);
        assert!(count(r#""partner_id":"MEGAMART""#) > 0.0);
        // Zipf: the most active account has far more than an average one.
        assert!(count(r#""account_id":"acc-0000001""#) > 10.0 * n / 500.0);
    }
}
