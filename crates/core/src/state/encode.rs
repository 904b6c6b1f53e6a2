//! The binary form of [`AccountState`]: fields in a fixed order, lists
//! with a length prefix. Decoding is total: corrupt bytes are an error,
//! never a panic.
//!
//! Format 3 (written now) holds the retained purchases' sequence numbers
//! only; each purchase is its own value ([`RetainedPurchase::encode`]),
//! stored under its own key. Format 2 (read, for state written before)
//! holds the purchases inline; they move to their own keys on the account's
//! next write.

use super::codec::{CodecError, Reader, Writer};
use super::*;

fn put_opt_time(w: &mut Writer, t: Option<Timestamp>) {
    match t {
        Some(t) => {
            w.u8(1);
            w.i64(t.0);
        }
        None => w.u8(0),
    }
}

fn opt_time(r: &mut Reader<'_>) -> Result<Option<Timestamp>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Timestamp(r.i64()?))),
        _ => Err(CodecError::Corrupt("optional time flag")),
    }
}

fn flag(r: &mut Reader<'_>) -> Result<bool, CodecError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(CodecError::Corrupt("flag")),
    }
}

/// The format before purchases moved to their own keys.
const LEGACY_INLINE_FORMAT: u8 = 2;

/// Where an encoded account's purchases are.
#[derive(Clone, Copy)]
enum Inline {
    /// In the value (format 2; only tests write it, to prove it is read).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "only tests write this format, to prove it is still read")
    )]
    Purchases,
    /// Under their own keys; the value holds their numbers (format 3).
    Numbers,
}

impl AccountState {
    /// The account's value in the store: everything but its purchases,
    /// which [`Purchases::changes`] lists for writing.
    pub fn encode(&self, w: &mut Writer) {
        self.encode_as(w, STATE_FORMAT, Inline::Numbers);
    }

    /// Format 2, as an earlier version wrote it (to test reading it).
    #[cfg(any(test, feature = "test-support"))]
    pub fn encode_legacy(&self, w: &mut Writer) {
        self.encode_as(w, LEGACY_INLINE_FORMAT, Inline::Purchases);
    }

    fn encode_as(&self, w: &mut Writer, version: u8, inline: Inline) {
        w.u8(version);
        w.i64(self.watermark.0);
        w.u8(u8::from(self.tier.is_some()));
        if let Some(t) = &self.tier {
            w.str(t);
        }
        w.u64(self.balances.len() as u64);
        for b in &self.balances {
            w.str(&b.program);
            w.str(&b.unit);
            w.u8(b.decimals as u8);
            for v in [b.available, b.pending, b.owed, b.lifetime_earned, b.clawed_back, b.redeemed, b.expired]
            {
                w.decimal(v);
            }
            w.u64(b.lots.len() as u64);
            for l in &b.lots {
                w.i64(l.earned_at.0);
                w.decimal(l.amount);
                put_opt_time(w, l.expires_at);
                w.u8(u8::from(l.warned));
            }
            w.u64(b.holds.len() as u64);
            for h in &b.holds {
                w.str(&h.source);
                w.str(&h.rule);
                w.i64(h.earned_at.0);
                w.decimal(h.amount);
                w.i64(h.release_at.0);
                w.u8(u8::from(h.cleared));
            }
        }
        w.u64(self.counters.len() as u64);
        for c in &self.counters {
            w.str(&c.cap);
            w.u64(u64::from(c.period));
            w.decimal(c.used);
        }
        match inline {
            Inline::Purchases => {
                w.u64(self.purchases.len() as u64);
                for p in self.purchases.iter() {
                    p.encode(w);
                }
            }
            Inline::Numbers => {
                w.u64(self.purchases.first_seq());
                w.u64(self.purchases.count());
                put_opt_time(w, self.purchases.first_at());
            }
        }
        w.u8(u8::from(self.enrolled));
        w.u8(self.statement_day.unwrap_or(0));
        put_opt_time(w, self.last_purchase);
        w.u64(self.choices.len() as u64);
        for c in &self.choices {
            w.u64(u64::from(c.month));
            w.u64(c.categories.len() as u64);
            for name in &c.categories {
                w.str(name);
            }
        }
        w.u64(self.qualifying.len() as u64);
        for q in &self.qualifying {
            w.u64(u64::from(q.period));
            w.decimal(q.value);
        }
        match self.tier_period {
            Some(p) => {
                w.u8(1);
                w.u64(u64::from(p));
            }
            None => w.u8(0),
        }
        match &self.referral {
            Some(r) => {
                w.u8(1);
                w.str(&r.referrer);
                w.u8(u8::from(r.qualified));
            }
            None => w.u8(0),
        }
        w.u64(self.referrals.len() as u64);
        for (period, count) in &self.referrals {
            w.u64(u64::from(*period));
            w.u64(u64::from(*count));
        }
        put_opt_time(w, self.next_due);
    }

    /// Decodes an account's value. In format 3 its purchases are not
    /// loaded ([`Purchases::unloaded_seqs`] names their keys); format 2
    /// brings them inline.
    pub fn decode(bytes: &[u8]) -> Result<AccountState, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != STATE_FORMAT && version != LEGACY_INLINE_FORMAT {
            return Err(CodecError::Version(version, STATE_FORMAT));
        }
        let mut s = AccountState { watermark: Timestamp(r.i64()?), ..AccountState::default() };
        if flag(&mut r)? {
            s.tier = Some(r.str()?.to_string());
        }
        for _ in 0..r.count()? {
            s.balances.push(decode_balance(&mut r)?);
        }
        for _ in 0..r.count()? {
            s.counters.push(CapCounter { cap: Arc::from(r.str()?), period: r.u32()?, used: r.decimal()? });
        }
        s.purchases = decode_purchases(&mut r, version)?;
        s.enrolled = flag(&mut r)?;
        s.statement_day = match r.u8()? {
            0 => None,
            d => Some(d),
        };
        s.last_purchase = opt_time(&mut r)?;
        for _ in 0..r.count()? {
            let month = r.u32()?;
            let mut categories = Vec::new();
            for _ in 0..r.count()? {
                categories.push(r.str()?.to_string());
            }
            s.choices.push(Choice { month, categories });
        }
        for _ in 0..r.count()? {
            s.qualifying.push(Qualifying { period: r.u32()?, value: r.decimal()? });
        }
        if flag(&mut r)? {
            s.tier_period = Some(r.u32()?);
        }
        if flag(&mut r)? {
            s.referral = Some(Referral { referrer: r.str()?.to_string(), qualified: flag(&mut r)? });
        }
        for _ in 0..r.count()? {
            s.referrals.push((r.u32()?, r.u32()?));
        }
        s.next_due = opt_time(&mut r)?;
        if !r.is_empty() {
            return Err(CodecError::Corrupt("trailing bytes"));
        }
        Ok(s)
    }
}

/// One balance of an account's value.
#[inline]
fn decode_balance(r: &mut Reader<'_>) -> Result<Balance, CodecError> {
    let program = Arc::from(r.str()?);
    let unit = Arc::from(r.str()?);
    let decimals = u32::from(r.u8()?);
    let mut v = [Decimal::ZERO; 7];
    for slot in &mut v {
        *slot = r.decimal()?;
    }
    let mut lots = Vec::new();
    for _ in 0..r.count()? {
        lots.push(Lot {
            earned_at: Timestamp(r.i64()?),
            amount: r.decimal()?,
            expires_at: opt_time(r)?,
            warned: flag(r)?,
        });
    }
    let mut holds = Vec::new();
    for _ in 0..r.count()? {
        holds.push(Hold {
            source: r.str()?.to_string(),
            rule: Arc::from(r.str()?),
            earned_at: Timestamp(r.i64()?),
            amount: r.decimal()?,
            release_at: Timestamp(r.i64()?),
            cleared: flag(r)?,
        });
    }
    let [available, pending, owed, lifetime_earned, clawed_back, redeemed, expired] = v;
    Ok(Balance {
        program,
        unit,
        decimals,
        available,
        pending,
        owed,
        lifetime_earned,
        clawed_back,
        redeemed,
        expired,
        lots,
        holds,
    })
}

/// The purchases of an account's value: inline in the legacy format,
/// otherwise the numbers of their own keys, not loaded.
fn decode_purchases(r: &mut Reader<'_>, version: u8) -> Result<Purchases, CodecError> {
    if version == LEGACY_INLINE_FORMAT {
        let mut list = Vec::new();
        for _ in 0..r.count()? {
            let purchase = RetainedPurchase::decode(r, list.last())?;
            list.push(purchase);
        }
        return Ok(Purchases::unstored(0, list));
    }
    let first = r.u64()?;
    let count = r.u64()?;
    first.checked_add(count).ok_or(CodecError::Corrupt("purchase numbers"))?;
    Ok(Purchases::unloaded(first, count, opt_time(r)?))
}

impl RetainedPurchase {
    /// The purchase's fields, as a part of a larger value.
    pub fn encode(&self, w: &mut Writer) {
        w.str(&self.event_id);
        w.i64(self.at.0);
        w.decimal(self.amount);
        w.decimal(self.refunded);
        w.u8(u8::from(self.authorized));
        w.u64(self.accruals.len() as u64);
        for a in &self.accruals {
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

    /// Decodes a purchase; the names it shares with `like` (the one
    /// decoded before it: an account's purchases mostly earn under the same
    /// rules and caps) are shared, not allocated again.
    pub fn decode(
        r: &mut Reader<'_>,
        like: Option<&RetainedPurchase>,
    ) -> Result<RetainedPurchase, CodecError> {
        fn name(text: &str, like: Option<&Arc<str>>) -> Arc<str> {
            match like {
                Some(same) if **same == *text => same.clone(),
                _ => Arc::from(text),
            }
        }
        let event_id = r.str()?.to_string();
        let at = Timestamp(r.i64()?);
        let amount = r.decimal()?;
        let refunded = r.decimal()?;
        let authorized = flag(r)?;
        let mut accruals = Vec::new();
        for i in 0..r.count()? {
            let like = like.and_then(|p| p.accruals.get(i));
            let rule = name(r.str()?, like.map(|a| &a.rule));
            let program = name(r.str()?, like.map(|a| &a.program));
            let earned = r.decimal()?;
            let clawed = r.decimal()?;
            let mut caps = Vec::new();
            for j in 0..r.count()? {
                caps.push(CapUse {
                    cap: name(r.str()?, like.and_then(|a| a.caps.get(j)).map(|u| &u.cap)),
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
        Ok(RetainedPurchase { event_id, at, amount, refunded, authorized, accruals })
    }

    /// About how many bytes [`RetainedPurchase::encode`] writes (decimals
    /// counted at a typical size), without encoding.
    pub fn approx_encoded_len(&self) -> usize {
        let accruals: usize = self
            .accruals
            .iter()
            .map(|a| {
                let caps: usize = a.caps.iter().map(|u| u.cap.len() + 15).sum();
                a.rule.len() + a.program.len() + 12 + caps
            })
            .sum();
        self.event_id.len() + 22 + accruals
    }

    /// The purchase as a value of its own (versioned).
    pub fn encode_value(&self, w: &mut Writer) {
        w.u8(PURCHASE_FORMAT);
        self.encode(w);
    }

    /// Decodes a value written by [`RetainedPurchase::encode_value`].
    pub fn decode_value(
        bytes: &[u8],
        like: Option<&RetainedPurchase>,
    ) -> Result<RetainedPurchase, CodecError> {
        let mut r = Reader::new(bytes);
        r.version(PURCHASE_FORMAT)?;
        let p = RetainedPurchase::decode(&mut r, like)?;
        if !r.is_empty() {
            return Err(CodecError::Corrupt("trailing bytes"));
        }
        Ok(p)
    }
}
