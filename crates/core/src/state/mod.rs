//! Per-account state: balances (as pending holds and available lots), cap
//! counters, the purchases a refund may still claw back, and the loyalty
//! lifecycle (enrolment, tier and its qualification, chosen categories,
//! statement day, referral). Plain data; the core updates it, the store
//! persists it with [`AccountState::encode`].
//!
//! Names (programs, rules, caps, tiers) are stored as strings, not indices,
//! so state stays meaningful when a new rules version reorders or removes
//! them.

pub mod codec;
mod encode;
pub(crate) mod purchases;

/// Helpers for the tests of this crate and of the store's.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    pub use super::purchases::purchase;
}

pub use purchases::{PurchaseChanges, Purchases, Search};

use crate::rules::{CapMeasure, Program};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::sync::Arc;

/// Format version of an encoded [`AccountState`].
pub const STATE_FORMAT: u8 = 3;
/// Format version of a retained purchase stored under its own key.
pub const PURCHASE_FORMAT: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountState {
    /// Latest event time seen on the account; retention and time-based
    /// effects are measured from it, so out-of-order events never move
    /// time backwards.
    pub watermark: Timestamp,
    /// Current tier, if any.
    pub tier: Option<String>,
    /// Sorted by program name.
    pub balances: Vec<Balance>,
    /// Sorted by (cap, period).
    pub counters: Vec<CapCounter>,
    /// Purchases within the refund window that earned something or await
    /// clearing, in arrival order (stored under keys of their own).
    pub purchases: Purchases,
    /// Received the welcome bonus.
    pub enrolled: bool,
    /// Statement day of month, if the account set one.
    pub statement_day: Option<u8>,
    pub last_purchase: Option<Timestamp>,
    /// Chosen categories per month, sorted by month.
    pub choices: Vec<Choice>,
    /// Tier qualification per period (or per day for rolling windows),
    /// sorted by period.
    pub qualifying: Vec<Qualifying>,
    /// The tier period the tier was last evaluated in.
    pub tier_period: Option<u32>,
    /// Who referred this account, and whether its qualifying purchase came.
    pub referral: Option<Referral>,
    /// As a referrer: bonuses received per period, sorted by period.
    pub referrals: Vec<(u32, u32)>,
    /// The timer this account has registered: when it next needs attention
    /// without an event of its own (a release, an expiry, a period end).
    pub next_due: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub program: Arc<str>,
    pub unit: Arc<str>,
    /// Decimal places the program keeps.
    pub decimals: u32,
    /// Spendable: always the sum of `lots`.
    pub available: Decimal,
    /// Earned but not yet released: always the sum of `holds`.
    pub pending: Decimal,
    /// Taken back by refunds beyond what was available; repaid first from
    /// future rewards, so the balance never goes negative.
    pub owed: Decimal,
    pub lifetime_earned: Decimal,
    pub clawed_back: Decimal,
    pub redeemed: Decimal,
    pub expired: Decimal,
    /// Available rewards by expiry, soonest first (no expiry last).
    pub lots: Vec<Lot>,
    /// Pending rewards, in order of earning.
    pub holds: Vec<Hold>,
}

/// Available rewards that expire together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// When it was (last) earned into.
    pub earned_at: Timestamp,
    pub amount: Decimal,
    /// `None`: no expiry, or expiry after inactivity (computed).
    pub expires_at: Option<Timestamp>,
    /// An expiry warning was sent.
    pub warned: bool,
}

/// A pending reward of one rule on one purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub source: String,
    pub rule: Arc<str>,
    pub earned_at: Timestamp,
    pub amount: Decimal,
    pub release_at: Timestamp,
    /// False while an authorisation awaits clearing (when required).
    pub cleared: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapCounter {
    pub cap: Arc<str>,
    /// Month, quarter or statement-cycle key.
    pub period: u32,
    pub used: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedPurchase {
    pub event_id: String,
    pub at: Timestamp,
    pub amount: Decimal,
    /// Refunded or reversed so far.
    pub refunded: Decimal,
    /// Authorised and not yet cleared.
    pub authorized: bool,
    pub accruals: Vec<RetainedAccrual>,
}

/// What one rule paid for a purchase, and what it consumed, so a refund can
/// take exactly that back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedAccrual {
    pub rule: Arc<str>,
    pub program: Arc<str>,
    pub earned: Decimal,
    pub clawed: Decimal,
    pub caps: Vec<CapUse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapUse {
    pub cap: Arc<str>,
    pub period: u32,
    pub measure: CapMeasure,
    pub used: Decimal,
    pub restored: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub month: u32,
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualifying {
    pub period: u32,
    pub value: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referral {
    pub referrer: String,
    pub qualified: bool,
}

impl Balance {
    fn new(program: &Program) -> Balance {
        Balance {
            program: program.name.clone(),
            unit: program.unit.clone(),
            decimals: program.decimals,
            available: Decimal::ZERO,
            pending: Decimal::ZERO,
            owed: Decimal::ZERO,
            lifetime_earned: Decimal::ZERO,
            clawed_back: Decimal::ZERO,
            redeemed: Decimal::ZERO,
            expired: Decimal::ZERO,
            lots: Vec::new(),
            holds: Vec::new(),
        }
    }

    /// Adds to the lot expiring at `expires_at` (creating it in order).
    pub fn add_lot(&mut self, amount: Decimal, earned_at: Timestamp, expires_at: Option<Timestamp>) {
        self.available += amount;
        if let Some(lot) = self.lots.iter_mut().find(|l| l.expires_at == expires_at) {
            lot.amount += amount;
            lot.earned_at = lot.earned_at.max(earned_at);
            return;
        }
        let at = self.lots.partition_point(|l| match (l.expires_at, expires_at) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        });
        self.lots.insert(at, Lot { earned_at, amount, expires_at, warned: false });
    }

    /// Takes up to `amount` from the lots, soonest-expiring first (or from
    /// `first` before the others); returns what it took.
    pub fn take_from_lots(&mut self, amount: Decimal, first: Option<Option<Timestamp>>) -> Decimal {
        let mut left = amount;
        let mut order: Vec<usize> = (0..self.lots.len()).collect();
        if let Some(preferred) = first {
            if let Some(i) = self.lots.iter().position(|l| l.expires_at == preferred) {
                order.retain(|&j| j != i);
                order.insert(0, i);
            }
        }
        for i in order {
            if left <= Decimal::ZERO {
                break;
            }
            let take = self.lots[i].amount.min(left);
            self.lots[i].amount -= take;
            left -= take;
        }
        self.lots.retain(|l| l.amount > Decimal::ZERO);
        let taken = amount - left;
        self.available -= taken;
        taken
    }
}

impl AccountState {
    pub fn balance(&self, program: &str) -> Option<&Balance> {
        self.balances.iter().find(|b| &*b.program == program)
    }

    /// The program's balance, created empty on first use.
    pub fn balance_mut(&mut self, program: &Program) -> &mut Balance {
        // A balance created while these rules run holds the rules' own
        // name: found by pointer, without comparing names on every credit.
        // Names read from the store compare by text.
        let found = match self.balances.iter().position(|b| Arc::ptr_eq(&b.program, &program.name)) {
            Some(i) => Ok(i),
            None => self.balances.binary_search_by(|b| (*b.program).cmp(&program.name)),
        };
        let at = match found {
            Ok(i) => i,
            Err(i) => {
                self.balances.insert(i, Balance::new(program));
                i
            }
        };
        &mut self.balances[at]
    }

    fn counter_position(&self, cap: &str, period: u32) -> Result<usize, usize> {
        // As for balances: a counter made while these rules run shares the
        // text of the rules' cap id, so the pointers tell first.
        let shared = |c: &CapCounter| {
            c.period == period && std::ptr::eq(c.cap.as_ptr(), cap.as_ptr()) && c.cap.len() == cap.len()
        };
        match self.counters.iter().position(shared) {
            Some(i) => Ok(i),
            None => self.counters.binary_search_by(|c| (&*c.cap, c.period).cmp(&(cap, period))),
        }
    }

    /// How much of a cap is used in a period.
    pub fn cap_used(&self, cap: &str, period: u32) -> Decimal {
        self.counter_position(cap, period).map_or(Decimal::ZERO, |i| self.counters[i].used)
    }

    /// Adds (or, negative, gives back) cap usage.
    pub fn add_cap_use(&mut self, cap: &Arc<str>, period: u32, delta: Decimal) {
        match self.counter_position(cap, period) {
            Ok(i) => self.counters[i].used += delta,
            Err(i) => self.counters.insert(i, CapCounter { cap: cap.clone(), period, used: delta }),
        }
    }

    /// Categories chosen for a month.
    pub fn chosen(&self, month: u32) -> &[String] {
        self.choices.iter().find(|c| c.month == month).map_or(&[], |c| &c.categories)
    }

    /// Qualification in a period.
    pub fn qualifying_in(&self, period: u32) -> Decimal {
        self.qualifying.iter().find(|q| q.period == period).map_or(Decimal::ZERO, |q| q.value)
    }

    /// Adds qualification to a period (negative for a refund).
    pub fn add_qualifying(&mut self, period: u32, delta: Decimal) {
        match self.qualifying.binary_search_by_key(&period, |q| q.period) {
            Ok(i) => self.qualifying[i].value += delta,
            Err(i) => self.qualifying.insert(i, Qualifying { period, value: delta }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec::{CodecError, Writer};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn program() -> Program {
        Program {
            name: Arc::from("cashback"),
            kind: crate::rules::ProgramKind::Cashback,
            unit: Arc::from("RUB"),
            decimals: 2,
            hold: None,
            expiry: None,
            redemption: None,
        }
    }

    pub(crate) fn sample() -> AccountState {
        let mut s = AccountState { watermark: Timestamp(1_700_000_000_000), ..Default::default() };
        s.tier = Some("gold".into());
        s.enrolled = true;
        s.statement_day = Some(15);
        s.last_purchase = Some(Timestamp(1_699_000_000_000));
        s.choices.push(Choice { month: 24_322, categories: vec!["groceries".into(), "fuel".into()] });
        s.add_qualifying(8_107, d("60000.00"));
        s.tier_period = Some(8_107);
        s.referral = Some(Referral { referrer: "acc-9".into(), qualified: true });
        s.referrals.push((2026, 3));
        s.next_due = Some(Timestamp(1_710_000_000_000));
        let b = s.balance_mut(&program());
        b.add_lot(d("61.72"), Timestamp(1_700_000_000_000), Some(Timestamp(1_730_000_000_000)));
        b.add_lot(d("5.00"), Timestamp(1_690_000_000_000), None);
        b.pending = d("10.00");
        b.holds.push(Hold {
            source: "e-2".into(),
            rule: Arc::from("groceries-5"),
            earned_at: Timestamp(1_700_000_000_000),
            amount: d("10.00"),
            release_at: Timestamp(1_702_000_000_000),
            cleared: false,
        });
        b.lifetime_earned = d("80.00");
        b.clawed_back = d("3.28");
        b.owed = d("0.50");
        b.redeemed = d("1");
        b.expired = d("0.5");
        s.add_cap_use(&Arc::from("groceries-monthly"), 24_322, d("61.72"));
        s.purchases.push(RetainedPurchase {
            event_id: "e-1".into(),
            at: Timestamp(1_700_000_000_000),
            amount: d("1234.56"),
            refunded: d("0"),
            authorized: true,
            accruals: vec![RetainedAccrual {
                rule: Arc::from("groceries-5"),
                program: Arc::from("cashback"),
                earned: d("61.72"),
                clawed: d("0"),
                caps: vec![CapUse {
                    cap: Arc::from("groceries-monthly"),
                    period: 24_322,
                    measure: CapMeasure::Reward,
                    used: d("61.72"),
                    restored: d("0"),
                }],
            }],
        });
        s
    }

    /// Encodes as the store does: the account's value, and each purchase
    /// as a value of its own.
    fn encode_split(s: &AccountState) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut w = Writer::default();
        s.encode(&mut w);
        let purchases = s
            .purchases
            .iter()
            .map(|p| {
                let mut pw = Writer::default();
                p.encode_value(&mut pw);
                pw.buf
            })
            .collect();
        (w.buf, purchases)
    }

    #[test]
    fn names_are_found_by_text_as_well_as_by_pointer() {
        let mut s = AccountState::default();
        let (p, other) = (program(), program());
        let cap: Arc<str> = Arc::from("groceries-monthly");
        s.balance_mut(&p).available = d("1.00");
        s.add_cap_use(&cap, 7, d("2.5"));
        // The same names in other allocations (as read from the store):
        // the same balance and counter, nothing added.
        assert!(!Arc::ptr_eq(&p.name, &other.name));
        s.balance_mut(&other).available += d("1.00");
        s.add_cap_use(&Arc::from("groceries-monthly"), 7, d("0.5"));
        assert_eq!((s.balances.len(), s.balances[0].available), (1, d("2.00")));
        assert_eq!((s.counters.len(), s.cap_used("groceries-monthly", 7)), (1, d("3.0")));
        // Another period of the same cap is a counter of its own.
        s.add_cap_use(&cap, 8, d("1"));
        assert_eq!((s.cap_used(&cap, 7), s.cap_used(&cap, 8), s.counters.len()), (d("3.0"), d("1"), 2));
    }

    #[test]
    fn a_purchase_decoded_after_another_shares_its_names() {
        let p = sample().purchases[0].clone();
        let mut w = Writer::default();
        p.encode_value(&mut w);
        let first = RetainedPurchase::decode_value(&w.buf, None).unwrap();
        let second = RetainedPurchase::decode_value(&w.buf, Some(&first)).unwrap();
        assert_eq!(second, p);
        let (a, b) = (&first.accruals[0], &second.accruals[0]);
        assert!(Arc::ptr_eq(&a.rule, &b.rule) && Arc::ptr_eq(&a.program, &b.program));
        assert!(Arc::ptr_eq(&a.caps[0].cap, &b.caps[0].cap));
        // Names that differ are its own.
        let mut other = p.clone();
        other.accruals[0].rule = Arc::from("fuel-3");
        let mut w = Writer::default();
        other.encode_value(&mut w);
        let third = RetainedPurchase::decode_value(&w.buf, Some(&first)).unwrap();
        assert_eq!(third, other);
        assert!(Arc::ptr_eq(&third.accruals[0].program, &a.program));
    }

    #[test]
    fn encodes_and_decodes() {
        let mut s = sample();
        s.purchases.drop_before(Timestamp(1_700_000_000_001)); // numbered from 1 now
        s.purchases.push(sample().purchases[0].clone());
        let (value, purchases) = encode_split(&s);
        let mut back = AccountState::decode(&value).unwrap();
        assert_eq!(back.purchases.unloaded_seqs(), 1..2);
        assert!(back.purchases.is_empty(), "purchases are not in the account's value");
        assert_eq!(back.purchases.first_at(), Some(Timestamp(1_700_000_000_000)));
        back.purchases
            .load(purchases.iter().map(|b| RetainedPurchase::decode_value(b, None).unwrap()).collect());
        assert_eq!(back, s);
    }

    #[test]
    fn reads_the_earlier_format_with_purchases_inline_and_writes_them_on_their_own_next() {
        let s = sample();
        let mut w = Writer::default();
        s.encode_legacy(&mut w);
        assert_eq!(w.buf[0], 2);
        let back = AccountState::decode(&w.buf).unwrap();
        assert!(back.purchases.is_complete(), "inline: nothing to read elsewhere");
        assert_eq!(back, s);
        let changes = back.purchases.changes();
        assert_eq!(changes.written.len(), 1, "the next write moves the purchase to its own key");
        assert_eq!(changes.written[0].1, &s.purchases[0]);
    }

    #[test]
    fn rejects_other_versions_and_truncation() {
        let (value, purchases) = encode_split(&sample());
        let mut wrong = value.clone();
        wrong[0] = 9;
        assert_eq!(AccountState::decode(&wrong), Err(CodecError::Version(9, STATE_FORMAT)));
        for cut in 0..value.len() {
            assert!(AccountState::decode(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = purchases[0].clone();
        wrong[0] = 7;
        assert_eq!(
            RetainedPurchase::decode_value(&wrong, None),
            Err(CodecError::Version(7, PURCHASE_FORMAT))
        );
        for cut in 0..purchases[0].len() {
            assert!(RetainedPurchase::decode_value(&purchases[0][..cut], None).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn approximate_purchase_size_is_close_to_the_encoded_size() {
        let s = sample();
        let (_, purchases) = encode_split(&s);
        let exact = purchases[0].len() - 1;
        let approx = s.purchases[0].approx_encoded_len();
        assert!(exact.abs_diff(approx) * 4 <= exact, "approx {approx}, exact {exact}");
    }

    #[test]
    fn lots_keep_order_and_spend_soonest_first() {
        let mut b = Balance::new(&program());
        b.add_lot(d("10"), Timestamp(1), Some(Timestamp(300)));
        b.add_lot(d("5"), Timestamp(2), None);
        b.add_lot(d("7"), Timestamp(3), Some(Timestamp(100)));
        b.add_lot(d("1"), Timestamp(4), Some(Timestamp(300)));
        let order: Vec<_> = b.lots.iter().map(|l| (l.expires_at, l.amount)).collect();
        assert_eq!(
            order,
            vec![(Some(Timestamp(100)), d("7")), (Some(Timestamp(300)), d("11")), (None, d("5"))]
        );
        assert_eq!(b.available, d("23"));
        assert_eq!(b.take_from_lots(d("9"), None), d("9"));
        assert_eq!(b.lots.iter().map(|l| l.amount).collect::<Vec<_>>(), vec![d("9"), d("5")]);
        assert_eq!(b.take_from_lots(d("6"), Some(None)), d("6"));
        assert_eq!(b.lots.iter().map(|l| l.amount).collect::<Vec<_>>(), vec![d("8")]);
        assert_eq!(b.take_from_lots(d("100"), None), d("8"));
        assert_eq!(b.available, d("0"));
    }
}
