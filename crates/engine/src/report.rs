//! What a run did: the engine's summary, which `accrual run --report FILE`
//! writes as JSON when the engine stops, for the benchmark's child runs and
//! for tests that check what happened (recoveries, aborts, refusals,
//! transactions a crash left open) instead of reading the log.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub events: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub duplicates: u64,
    pub no_effect: u64,
    pub transactions: u64,
    /// Transactions that failed and were aborted (each published again).
    pub aborted: u64,
    /// Outbox republishes: after a crash, an abort or a partition's return.
    pub recoveries: u64,
    /// Assignments of a partition this instance refused (state missing or
    /// behind, or input removed before it was processed).
    pub refused_partitions: u64,
    /// Partitions whose state was restored from the changelog, and the
    /// changes applied.
    #[serde(default)]
    pub restored_partitions: u64,
    #[serde(default)]
    pub restored_changes: u64,
    /// Their keys' and values' bytes, and the longest restore's time in
    /// seconds (partitions restore at once, each on a thread).
    #[serde(default)]
    pub restored_bytes: u64,
    #[serde(default, rename = "restore_seconds", with = "seconds")]
    pub restore_longest: Duration,
    /// Transactions a crash had left open, as the start decided them.
    pub resolved: Vec<Resolved>,
    /// From the first input message to the last commit.
    #[serde(rename = "busy_seconds", with = "seconds")]
    pub busy: Duration,
}

/// The report is the summary, as written.
pub type RunReport = RunSummary;

/// A transaction left open by a crash and decided at the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// `<instance>:<epoch>:<sequence>`.
    pub txn: String,
    /// `committed` or `aborted`.
    pub status: String,
}

/// A duration as seconds (a float), as the report has always shown it.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

pub fn write_report(path: &Path, summary: &RunSummary) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}
