//! Restore rate (`accrual bench --changelog`): the state the first round's
//! accrual run built is restored from its changelog into an empty state
//! directory, by a run in the same group, under the same instance id (as a
//! pod on a fresh volume would be), which restores every partition and
//! processes nothing.

use super::{Bench, BenchError, RunReport, Target, Topics, io};
use serde::Serialize;

/// What the restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreRun {
    pub partitions: u64,
    /// Changelog records applied, and their keys' and values' bytes.
    pub records: u64,
    pub bytes: u64,
    /// The longest partition's restore (they run at once).
    pub seconds: f64,
    pub records_per_second: f64,
    pub mib_per_second: f64,
}

impl Bench {
    /// Restores the state of accrual run `run` (over `topics`).
    pub(super) fn restore_rate(&mut self, topics: &Topics, run: u32) -> Result<RestoreRun, BenchError> {
        let state = self.opts.work_dir.join(format!("restore-of-{run}"));
        self.as_run = Some(run);
        let running = self.start(Target::Accrual, topics, Some(&state), Some("2"))?;
        let (report, log) = (running.report.clone(), running.log.clone());
        running.finish()?;
        let text = std::fs::read(&report).map_err(io(report.display().to_string()))?;
        let r: RunReport = serde_json::from_slice(&text)
            .map_err(|e| BenchError::Run(format!("{}: {e}", report.display())))?;
        if r.restored_partitions == 0 || r.events != 0 {
            return Err(BenchError::Run(format!(
                "the restore run restored {} partitions and processed {} events; see {}",
                r.restored_partitions,
                r.events,
                log.display()
            )));
        }
        let seconds = r.restore_longest.as_secs_f64().max(1e-9);
        let restored = RestoreRun {
            partitions: r.restored_partitions,
            records: r.restored_changes,
            bytes: r.restored_bytes,
            seconds,
            records_per_second: r.restored_changes as f64 / seconds,
            mib_per_second: r.restored_bytes as f64 / seconds / f64::from(1 << 20),
        };
        say!(
            "restore: {} partitions, {} changelog records ({} MiB) in {:.2} s: {:.0} records/s, {:.1} MiB/s",
            restored.partitions,
            restored.records,
            restored.bytes >> 20,
            restored.seconds,
            restored.records_per_second,
            restored.mib_per_second
        );
        let _ = std::fs::remove_dir_all(&state);
        Ok(restored)
    }
}
