//! Which partition a keyed message goes to, computed as Kafka producers do,
//! so the engine knows which partition (and so which instance) holds an
//! account, and publishes events for other accounts (a referrer's bonus) to
//! the partition that owns them. The producers of the input topic and the
//! engine must use the same partitioner (`kafka.partitioner`).

use serde::{Deserialize, Serialize};

/// librdkafka's partitioner names (the `partitioner` property); for keyed
/// messages the `_random` variants hash the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// CRC32 of the key (librdkafka's default).
    #[default]
    ConsistentRandom,
    Consistent,
    /// Kafka's Java client default.
    Murmur2Random,
    Murmur2,
    Fnv1aRandom,
    Fnv1a,
}

impl Partitioner {
    /// The librdkafka property value.
    pub fn name(self) -> &'static str {
        match self {
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Consistent => "consistent",
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Fnv1aRandom => "fnv1a_random",
            Partitioner::Fnv1a => "fnv1a",
        }
    }

    /// The partition of `key` among `partitions`, as librdkafka's
    /// partitioner of that name (and, for murmur2, Kafka's Java client)
    /// chooses it. For an empty key, `consistent_random` picks a random
    /// partition; this returns the `consistent` one (the engine's keys are
    /// account ids, never empty).
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        if partitions == 0 {
            return 0;
        }
        match self {
            Partitioner::ConsistentRandom | Partitioner::Consistent => crc32fast::hash(key) % partitions,
            // Java's `Utils.toPositive`: the sign bit masked off.
            Partitioner::Murmur2Random | Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % partitions,
            Partitioner::Fnv1aRandom | Partitioner::Fnv1a => fnv1a_positive(key) % partitions,
        }
    }
}

/// librdkafka's `rd_fnv1a`: the hash as a signed 32-bit number made
/// positive by negation, as Sarama's hash partitioner does (not masked, as
/// murmur2 is). The most negative value stays as it is, read unsigned.
fn fnv1a_positive(data: &[u8]) -> u32 {
    (fnv1a(data) as i32).wrapping_abs() as u32
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// FNV-1a, 32 bits (librdkafka's `fnv1a`).
pub fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT_UNALIGNED: &str = "1234";
    const UNALIGNED: &str = "PreAmbleWillBeRemoved,ThePrePartThatIs";

    /// The keys of librdkafka's own unit tests (`rdmurmur2.c`, `rdfnv1a.c`):
    /// the same bytes at every alignment, and the empty key.
    fn librdkafka_keys() -> [&'static str; 11] {
        [
            "kafka",
            "giberish123456789",
            SHORT_UNALIGNED,
            &SHORT_UNALIGNED[1..],
            &SHORT_UNALIGNED[2..],
            &SHORT_UNALIGNED[3..],
            UNALIGNED,
            &UNALIGNED[1..],
            &UNALIGNED[2..],
            &UNALIGNED[3..],
            "",
        ]
    }

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Kafka's `UtilsTest.testMurmur2`.
        let java = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            ("abc", 479470107),
        ];
        for (key, want) in java {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
        }
        // librdkafka's `unittest_murmur2` (results taken from Java).
        let librdkafka = [
            0xd067cf64u32,
            0x8f552b0c,
            0x9fc97b14,
            0xe7c009ca,
            0x873930da,
            0x5a4b5ca1,
            0x78424f1c,
            0x4a62b377,
            0xe0e4e09e,
            0x62b8b43f,
            0x106e08d9,
        ];
        for (key, want) in librdkafka_keys().into_iter().zip(librdkafka) {
            assert_eq!(murmur2(key.as_bytes()), want, "{key:?}");
        }
    }

    #[test]
    fn fnv1a_matches_librdkafka_and_takes_the_absolute_value() {
        // librdkafka's `unittest_fnv1a` (results from Go's hash/fnv, made
        // positive as librdkafka does).
        let librdkafka = [
            0x0d33c4e1u32,
            0x77a58295,
            0x023bdd03,
            0x2dea3cd2,
            0x740fa83e,
            0x310ca263,
            0x65cbd69c,
            0x6e49c79a,
            0x69eed356,
            0x6abcc023,
            0x7ee3623b,
        ];
        for (key, want) in librdkafka_keys().into_iter().zip(librdkafka) {
            assert_eq!(fnv1a_positive(key.as_bytes()), want, "{key:?}");
        }
        assert_eq!(fnv1a(b"a"), 0xe40c_292c, "the standard FNV-1a test value");
        // Negative as i32: negated, where a mask would give 0x640c292c.
        assert_eq!(fnv1a_positive(b"a"), 0x1bf3_d6d4);
        assert_eq!(Partitioner::Fnv1a.partition(b"a", 1000), 0x1bf3_d6d4 % 1000);
    }

    #[test]
    fn crc32_is_the_standard_one_and_partitions_are_in_range() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926, "the standard CRC-32 check value");
        for key in [&b""[..], b"a", b"acc-0000042", b"\xff\x00\x10"] {
            for p in [Partitioner::ConsistentRandom, Partitioner::Murmur2Random, Partitioner::Fnv1a] {
                assert!(p.partition(key, 8) < 8);
            }
        }
    }
}
