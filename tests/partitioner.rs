//! The engine's partitioners against librdkafka's own partitioner
//! functions (its public C API, called with the same keys and partition
//! counts): account keys and arbitrary bytes land where a librdkafka
//! producer puts them. Kafka's and librdkafka's published hash vectors are
//! checked in `accrual_core::partitioner`.

use accrual::partitioner::Partitioner;
use rdkafka::bindings as rd;
use std::ffi::c_void;

type Native = unsafe extern "C" fn(
    *const rd::rd_kafka_topic_t,
    *const c_void,
    usize,
    i32,
    *mut c_void,
    *mut c_void,
) -> i32;

fn librdkafka(partitioner: Partitioner) -> Native {
    match partitioner {
        Partitioner::Consistent => rd::rd_kafka_msg_partitioner_consistent,
        Partitioner::ConsistentRandom => rd::rd_kafka_msg_partitioner_consistent_random,
        Partitioner::Murmur2 => rd::rd_kafka_msg_partitioner_murmur2,
        Partitioner::Murmur2Random => rd::rd_kafka_msg_partitioner_murmur2_random,
        Partitioner::Fnv1a => rd::rd_kafka_msg_partitioner_fnv1a,
        Partitioner::Fnv1aRandom => rd::rd_kafka_msg_partitioner_fnv1a_random,
    }
}

fn native_partition(partitioner: Partitioner, key: &[u8], partitions: i32) -> u32 {
    assert!(!key.is_empty(), "the random variants pick a random partition for an empty key");
    let f = librdkafka(partitioner);
    // SAFETY: for a non-empty key these partitioners only hash the key's
    // bytes (the topic handle and opaques are not read), and `key` is
    // valid for `key.len()` bytes for the duration of the call.
    let p = unsafe {
        f(
            std::ptr::null(),
            key.as_ptr().cast(),
            key.len(),
            partitions,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    u32::try_from(p).expect("a partition")
}

/// Account ids as the generator writes them, and arbitrary bytes.
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..10_000).map(|n| format!("acc-{n:07}").into_bytes()).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for len in 1..=2_000usize {
        let bytes = (0..len % 67 + 1)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        keys.push(bytes);
    }
    keys
}

#[test]
fn every_partitioner_places_keys_where_librdkafka_does() {
    let keys = keys();
    let all = [
        Partitioner::Consistent,
        Partitioner::ConsistentRandom,
        Partitioner::Murmur2,
        Partitioner::Murmur2Random,
        Partitioner::Fnv1a,
        Partitioner::Fnv1aRandom,
    ];
    for partitioner in all {
        for partitions in [1, 3, 8, 12, 64, 1000] {
            let differ = keys
                .iter()
                .filter(|k| {
                    partitioner.partition(k, partitions as u32)
                        != native_partition(partitioner, k, partitions)
                })
                .count();
            assert_eq!(
                differ, 0,
                "{partitioner:?} over {partitions} partitions: {differ} keys placed elsewhere"
            );
        }
    }
}
