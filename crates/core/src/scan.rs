//! Branch-free scans of short byte strings. A record's ids and names and an
//! event's ids are 10-40 bytes: too short for the vector loop the compiler
//! makes of a plain pass (which ran byte by byte on them), so they are
//! checked in whole blocks of 16 (the last one overlapping the one before)
//! or two overlapping blocks of 8, each a few vector compares.

/// Whether `special` holds for any byte of `bytes`. `special` must be a
/// plain comparison (it runs on every byte, some of them twice).
#[inline]
pub(crate) fn any_byte(bytes: &[u8], special: impl Fn(u8) -> bool + Copy) -> bool {
    let any_in = |block: &[u8]| block.iter().fold(0u8, |any, &b| any | u8::from(special(b))) != 0;
    if let Some(last) = bytes.last_chunk::<16>() {
        let blocks = bytes.chunks_exact(16).filter_map(|block| block.first_chunk::<16>());
        blocks.fold(any_in(last), |any, block| any | any_in(block))
    } else if let (Some(first), Some(last)) = (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
        any_in(first) | any_in(last)
    } else {
        any_in(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::any_byte;
    use proptest::prelude::*;

    proptest! {
        /// The same answer as a plain search, for every length and place.
        #[test]
        fn finds_what_a_plain_search_finds(bytes in proptest::collection::vec(
            proptest::sample::select(b"a0-\"\\\x00\x1f\x7f\xc2".to_vec()), 0..70)) {
            let special = |b: u8| b < 0x20 || b == b'"';
            prop_assert_eq!(any_byte(&bytes, special), bytes.iter().any(|&b| special(b)));
        }
    }
}
