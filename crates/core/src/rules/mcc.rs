//! MCC lists compiled to bitsets, with effective dates.

use crate::events::Mcc;
use crate::time::Timestamp;

const WORDS: usize = 10_000usize.div_ceil(64);

/// A set of merchant category codes: one bit per code, so membership is a
/// shift and a mask whatever the list's size.
#[derive(Clone, PartialEq, Eq)]
pub struct MccSet {
    bits: Box<[u64; WORDS]>,
}

impl std::fmt::Debug for MccSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MccSet({} codes)", self.len())
    }
}

impl Default for MccSet {
    fn default() -> Self {
        MccSet { bits: Box::new([0; WORDS]) }
    }
}

impl MccSet {
    pub fn insert_range(&mut self, lo: u16, hi: u16) {
        for code in lo..=hi {
            self.bits[usize::from(code) / 64] |= 1 << (code % 64);
        }
    }

    /// The codes any of `sets` holds.
    pub fn union_of<'a>(sets: impl IntoIterator<Item = &'a MccSet>) -> MccSet {
        let mut all = MccSet::default();
        for set in sets {
            all.bits.iter_mut().zip(set.bits.iter()).for_each(|(a, b)| *a |= b);
        }
        all
    }

    /// Keeps only the codes `other` holds too.
    pub fn intersect_with(&mut self, other: &MccSet) {
        self.bits.iter_mut().zip(other.bits.iter()).for_each(|(a, b)| *a &= b);
    }

    #[inline]
    pub fn contains(&self, mcc: Mcc) -> bool {
        let code = usize::from(mcc.0);
        code < 10_000 && self.bits[code / 64] & (1 << (code % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses list entries: `"5411"` or an inclusive range `"5811-5814"`.
    pub fn parse(entries: &[String]) -> Result<MccSet, String> {
        let mut set = MccSet::default();
        for entry in entries {
            let (lo, hi) = match entry.split_once('-') {
                Some((lo, hi)) => (Mcc::parse(lo.trim()), Mcc::parse(hi.trim())),
                None => (Mcc::parse(entry), Mcc::parse(entry)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => set.insert_range(lo.0, hi.0),
                (Some(_), Some(_)) => return Err(format!("range \"{entry}\" runs backwards")),
                _ => {
                    return Err(format!(
                        "\"{entry}\" is not a 4-digit MCC (\"5411\") or range (\"5811-5814\")"
                    ));
                }
            }
        }
        Ok(set)
    }
}

/// For each merchant category code, the rules that could match a purchase
/// with it and whether an exclusion list might hold it, over every
/// version of every list: built at load, so a purchase evaluates only the
/// rules its code allows. It only ever leaves out rules whose conditions
/// cannot hold for the code, and the rules it keeps are checked in full,
/// so it changes no result.
#[derive(Debug, Default)]
pub(super) struct MccIndex {
    /// Bit `i` of entry `code`: rule `i` may match. Empty when there are
    /// more rules than bits (then every rule is evaluated).
    rules: Vec<u64>,
    /// The codes some exclusion list holds in some version.
    excludable: MccSet,
}

impl MccIndex {
    /// `allowed[r]`: the codes rule `r`'s MCC conditions allow at some
    /// time (`None`: it has none, every code); `excludable`: the codes
    /// some exclusion list holds at some time.
    pub(super) fn new(allowed: &[Option<MccSet>], excludable: MccSet) -> MccIndex {
        let rules = if allowed.len() <= 64 {
            (0..10_000u16)
                .map(|code| {
                    let may = |set: &Option<MccSet>| set.as_ref().is_none_or(|set| set.contains(Mcc(code)));
                    allowed
                        .iter()
                        .enumerate()
                        .filter(|(_, set)| may(set))
                        .fold(0u64, |bits, (r, _)| bits | 1 << r)
                })
                .collect()
        } else {
            Vec::new()
        };
        MccIndex { rules, excludable }
    }

    /// The rules that may match a purchase with `mcc`, a bit per rule
    /// index (all bits set when not indexed; see [`Candidates::has`]).
    pub(super) fn candidates(&self, mcc: Mcc) -> Candidates {
        Candidates(self.rules.get(usize::from(mcc.0)).copied().unwrap_or(u64::MAX))
    }

    /// Whether some exclusion list may hold `mcc` (at some time).
    pub(super) fn excludable(&self, mcc: Mcc) -> bool {
        self.excludable.contains(mcc)
    }
}

/// The rules a purchase's MCC allows (see [`MccIndex`]).
#[derive(Debug, Clone, Copy)]
pub struct Candidates(u64);

impl Candidates {
    /// Whether rule `index` may match (rules past the 64th always may).
    #[inline]
    pub fn has(self, index: usize) -> bool {
        index >= 64 || self.0 & (1 << index) != 0
    }
}

/// An MCC list whose contents change at given instants. Before the first
/// version the list is empty.
#[derive(Debug, Clone)]
pub struct DatedMccSet {
    /// Sorted by start, strictly increasing.
    versions: Vec<(Timestamp, MccSet)>,
}

impl DatedMccSet {
    pub fn new(versions: Vec<(Timestamp, MccSet)>) -> DatedMccSet {
        DatedMccSet { versions }
    }

    /// The version in force at `at`.
    #[inline]
    pub fn at(&self, at: Timestamp) -> Option<&MccSet> {
        match self.versions.as_slice() {
            [(from, only)] => (*from <= at).then_some(only),
            versions => {
                let after = versions.partition_point(|(from, _)| *from <= at);
                after.checked_sub(1).map(|i| &versions[i].1)
            }
        }
    }

    #[inline]
    pub fn contains(&self, mcc: Mcc, at: Timestamp) -> bool {
        self.at(at).is_some_and(|set| set.contains(mcc))
    }

    /// When each version starts.
    #[cfg(test)]
    pub(super) fn starts(&self) -> impl Iterator<Item = Timestamp> + '_ {
        self.versions.iter().map(|(from, _)| *from)
    }

    /// The codes any version holds (whatever the time).
    pub fn ever(&self) -> MccSet {
        MccSet::union_of(self.versions.iter().map(|(_, set)| set))
    }

    pub fn version_count(&self) -> usize {
        self.versions.len()
    }

    /// Codes in the version in force at `at`.
    pub fn len_at(&self, at: Timestamp) -> usize {
        self.at(at).map_or(0, MccSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let set = MccSet::parse(&["5411".into(), "5811-5814".into(), "0742".into()]).unwrap();
        assert!(set.contains(Mcc(5411)));
        assert!(set.contains(Mcc(5813)));
        assert!(set.contains(Mcc(742)));
        assert!(!set.contains(Mcc(5815)));
        assert!(!set.contains(Mcc(9999)));
        assert_eq!(set.len(), 6);
        assert!(MccSet::parse(&["5814-5811".into()]).unwrap_err().contains("backwards"));
        assert!(MccSet::parse(&["541".into()]).is_err());
        assert!(MccSet::parse(&["54x1".into()]).is_err());
    }

    #[test]
    fn versions_switch_at_their_start() {
        let v1 = MccSet::parse(&["5912".into()]).unwrap();
        let v2 = MccSet::parse(&["5912".into(), "5122".into()]).unwrap();
        let dated = DatedMccSet::new(vec![(Timestamp(100), v1), (Timestamp(200), v2)]);
        assert!(!dated.contains(Mcc(5912), Timestamp(99)));
        assert!(dated.contains(Mcc(5912), Timestamp(100)));
        assert!(!dated.contains(Mcc(5122), Timestamp(199)));
        assert!(dated.contains(Mcc(5122), Timestamp(200)));
    }
}
