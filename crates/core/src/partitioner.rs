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

    /// The partition of `key` among `partitions`.
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        if partitions == 0 {
            return 0;
        }
        match self {
            Partitioner::ConsistentRandom | Partitioner::Consistent => crc32fast::hash(key) % partitions,
            Partitioner::Murmur2Random | Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % partitions,
            Partitioner::Fnv1aRandom | Partitioner::Fnv1a => (fnv1a(key) & 0x7fff_ffff) % partitions,
        }
    }
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

    #[test]
    fn hashes_are_stable() {
        // The broker test (`kafka_partitioner`) checks these against real
        // producers; here, that they are deterministic and in range.
        for key in [&b""[..], b"a", b"acc-0000042", b"\xff\x00\x10"] {
            for p in [Partitioner::ConsistentRandom, Partitioner::Murmur2Random, Partitioner::Fnv1a] {
                let n = p.partition(key, 8);
                assert!(n < 8);
                assert_eq!(n, p.partition(key, 8));
            }
        }
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926, "the standard CRC-32 check value");
        assert_eq!(fnv1a(b"a"), 0xe40c_292c, "the standard FNV-1a test value");
    }
}
