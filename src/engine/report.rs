//! What a run did, as `accrual run --report FILE` writes it (JSON) when the
//! engine stops: for the benchmark's child runs, and for tests that check
//! what happened (recoveries, aborts, refusals, transactions a crash left
//! open) instead of reading the log.

use super::RunSummary;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
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
    /// Transactions a crash had left open, as the start decided them.
    pub resolved: Vec<Resolved>,
    /// First input message to last commit.
    pub busy_seconds: f64,
}

/// A transaction left open by a crash and decided at the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// `<instance>:<epoch>:<sequence>`.
    pub txn: String,
    /// `committed` or `aborted`.
    pub status: String,
}

impl From<&RunSummary> for RunReport {
    fn from(s: &RunSummary) -> RunReport {
        RunReport {
            events: s.events,
            records: s.records,
            dead_letters: s.dead_letters,
            duplicates: s.duplicates,
            no_effect: s.no_effect,
            transactions: s.transactions,
            aborted: s.aborted,
            recoveries: s.recoveries,
            refused_partitions: s.refused_partitions,
            resolved: s.resolved.clone(),
            busy_seconds: s.busy.as_secs_f64(),
        }
    }
}

pub fn write_report(path: &Path, summary: &RunSummary) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&RunReport::from(summary)).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}
