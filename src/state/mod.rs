//! Per-account state: balances, cap counters and the purchases that a
//! refund may still claw back. Plain data; the core updates it, the store
//! persists it with [`AccountState::encode`].
//!
//! Names (programs, rules, caps) are stored as strings, not indices, so
//! state stays meaningful when a new rules version reorders or removes them.

pub mod codec;

use crate::rules::{CapMeasure, Program};
use crate::time::Timestamp;
use codec::{CodecError, Reader, Writer};
use rust_decimal::Decimal;
use std::sync::Arc;

/// Format version of an encoded [`AccountState`].
pub const STATE_FORMAT: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountState {
    /// Latest event time seen on the account; retention is measured from it,
    /// so out-of-order events never resurrect pruned data.
    pub watermark: Timestamp,
    /// Current tier, when the program has tiers.
    pub tier: Option<String>,
    /// Sorted by program name.
    pub balances: Vec<Balance>,
    /// Sorted by (cap, period).
    pub counters: Vec<CapCounter>,
    /// Purchases still within the refund window that earned something, in
    /// arrival order.
    pub purchases: Vec<RetainedPurchase>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub program: Arc<str>,
    pub unit: Arc<str>,
    /// Decimal places the program keeps (for proportional clawback).
    pub decimals: u32,
    pub available: Decimal,
    pub lifetime_earned: Decimal,
    pub clawed_back: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapCounter {
    pub cap: Arc<str>,
    /// Month or quarter key (see `time::LocalTime`).
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

impl AccountState {
    pub fn balance(&self, program: &str) -> Option<&Balance> {
        self.balances.iter().find(|b| &*b.program == program)
    }

    /// The program's balance, created empty on first use.
    pub fn balance_mut(&mut self, program: &Program) -> &mut Balance {
        let at = match self.balances.binary_search_by(|b| (*b.program).cmp(&program.name)) {
            Ok(i) => i,
            Err(i) => {
                self.balances.insert(
                    i,
                    Balance {
                        program: program.name.clone(),
                        unit: program.unit.clone(),
                        decimals: program.decimals,
                        available: Decimal::ZERO,
                        lifetime_earned: Decimal::ZERO,
                        clawed_back: Decimal::ZERO,
                    },
                );
                i
            }
        };
        &mut self.balances[at]
    }

    fn counter_position(&self, cap: &str, period: u32) -> Result<usize, usize> {
        self.counters.binary_search_by(|c| (&*c.cap, c.period).cmp(&(cap, period)))
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

    pub fn purchase_mut(&mut self, event_id: &str) -> Option<&mut RetainedPurchase> {
        self.purchases.iter_mut().rev().find(|p| p.event_id == event_id)
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(STATE_FORMAT);
        w.i64(self.watermark.0);
        match &self.tier {
            Some(t) => {
                w.u8(1);
                w.str(t);
            }
            None => w.u8(0),
        }
        w.u64(self.balances.len() as u64);
        for b in &self.balances {
            w.str(&b.program);
            w.str(&b.unit);
            w.u8(b.decimals as u8);
            w.decimal(b.available);
            w.decimal(b.lifetime_earned);
            w.decimal(b.clawed_back);
        }
        w.u64(self.counters.len() as u64);
        for c in &self.counters {
            w.str(&c.cap);
            w.u64(u64::from(c.period));
            w.decimal(c.used);
        }
        w.u64(self.purchases.len() as u64);
        for p in &self.purchases {
            w.str(&p.event_id);
            w.i64(p.at.0);
            w.decimal(p.amount);
            w.decimal(p.refunded);
            w.u64(p.accruals.len() as u64);
            for a in &p.accruals {
                w.str(&a.rule);
                w.str(&a.program);
                w.decimal(a.earned);
                w.decimal(a.clawed);
                w.u64(a.caps.len() as u64);
                for u in &a.caps {
                    w.str(&u.cap);
                    w.u64(u64::from(u.period));
                    w.u8(match u.measure {
                        CapMeasure::Reward => 0,
                        CapMeasure::Spend => 1,
                    });
                    w.decimal(u.used);
                    w.decimal(u.restored);
                }
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<AccountState, CodecError> {
        let mut r = Reader::new(bytes);
        r.version(STATE_FORMAT)?;
        let watermark = Timestamp(r.i64()?);
        let tier = match r.u8()? {
            0 => None,
            1 => Some(r.str()?.to_string()),
            _ => return Err(CodecError::Corrupt("tier flag")),
        };
        let n = r.count()?;
        let mut balances = Vec::with_capacity(n);
        for _ in 0..n {
            balances.push(Balance {
                program: Arc::from(r.str()?),
                unit: Arc::from(r.str()?),
                decimals: u32::from(r.u8()?),
                available: r.decimal()?,
                lifetime_earned: r.decimal()?,
                clawed_back: r.decimal()?,
            });
        }
        let n = r.count()?;
        let mut counters = Vec::with_capacity(n);
        for _ in 0..n {
            counters.push(CapCounter { cap: Arc::from(r.str()?), period: r.u32()?, used: r.decimal()? });
        }
        let n = r.count()?;
        let mut purchases = Vec::with_capacity(n);
        for _ in 0..n {
            let event_id = r.str()?.to_string();
            let at = Timestamp(r.i64()?);
            let amount = r.decimal()?;
            let refunded = r.decimal()?;
            let k = r.count()?;
            let mut accruals = Vec::with_capacity(k);
            for _ in 0..k {
                let rule = Arc::from(r.str()?);
                let program = Arc::from(r.str()?);
                let earned = r.decimal()?;
                let clawed = r.decimal()?;
                let m = r.count()?;
                let mut caps = Vec::with_capacity(m);
                for _ in 0..m {
                    caps.push(CapUse {
                        cap: Arc::from(r.str()?),
                        period: r.u32()?,
                        measure: match r.u8()? {
                            0 => CapMeasure::Reward,
                            1 => CapMeasure::Spend,
                            _ => return Err(CodecError::Corrupt("cap measure")),
                        },
                        used: r.decimal()?,
                        restored: r.decimal()?,
                    });
                }
                accruals.push(RetainedAccrual { rule, program, earned, clawed, caps });
            }
            purchases.push(RetainedPurchase { event_id, at, amount, refunded, accruals });
        }
        if !r.is_empty() {
            return Err(CodecError::Corrupt("trailing bytes"));
        }
        Ok(AccountState { watermark, tier, balances, counters, purchases })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub(crate) fn sample() -> AccountState {
        let cashback: Arc<str> = Arc::from("cashback");
        let mut s = AccountState { watermark: Timestamp(1_700_000_000_000), ..Default::default() };
        s.tier = Some("gold".into());
        let program = Program {
            name: cashback.clone(),
            kind: crate::rules::ProgramKind::Cashback,
            unit: Arc::from("RUB"),
            decimals: 2,
        };
        let b = s.balance_mut(&program);
        b.available = d("61.72");
        b.lifetime_earned = d("70.00");
        b.clawed_back = d("8.28");
        s.add_cap_use(&Arc::from("groceries-monthly"), 24_322, d("61.72"));
        s.purchases.push(RetainedPurchase {
            event_id: "e-1".into(),
            at: Timestamp(1_700_000_000_000),
            amount: d("1234.56"),
            refunded: d("0"),
            accruals: vec![RetainedAccrual {
                rule: Arc::from("groceries-5"),
                program: cashback,
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

    #[test]
    fn encodes_and_decodes() {
        let s = sample();
        let mut w = Writer::default();
        s.encode(&mut w);
        assert_eq!(AccountState::decode(&w.buf), Ok(s));
    }

    #[test]
    fn rejects_other_versions_and_truncation() {
        let mut w = Writer::default();
        sample().encode(&mut w);
        let mut wrong = w.buf.clone();
        wrong[0] = 9;
        assert_eq!(AccountState::decode(&wrong), Err(CodecError::Version(9, STATE_FORMAT)));
        for cut in 0..w.buf.len() {
            assert!(AccountState::decode(&w.buf[..cut]).is_err(), "cut at {cut}");
        }
    }
}
