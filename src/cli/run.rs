//! `accrual run`: the exactly-once streaming engine; and the benchmark's
//! passthrough baseline, which takes the same arguments.

use super::{load_config, say};
use accrual::engine::{self, RunOptions};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What `run` and the benchmark's baseline take.
#[derive(clap::Args)]
pub struct Args {
    /// Engine config (TOML); `ACCRUAL_*` environment variables override it.
    #[arg(long)]
    pub config: PathBuf,
    /// Stop gracefully after this many seconds without input (demos, tests).
    #[arg(long)]
    pub stop_when_idle: Option<u64>,
    /// On exit, write what the run did (events, records, aborts,
    /// recoveries, refusals, transactions a crash left open) here as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Set on SIGINT or SIGTERM: finish the cycle, then stop.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

pub fn run(Args { config, stop_when_idle, report }: Args) -> Result<ExitCode> {
    let config = load_config(&config)?;
    let stop = stop_flag()?;
    // SIGHUP: read the rules again between two cycles.
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    let options = RunOptions { stop_when_idle: stop_when_idle.map(Duration::from_secs), reload };
    let summary = engine::run(config, stop, options)?;
    if let Some(path) = report {
        engine::report::write_report(&path, &summary).with_context(|| path.display().to_string())?;
    }
    let rate = summary.events as f64 / summary.busy.as_secs_f64().max(1e-9);
    say!(
        "events {}, records {}, dead letters {}, duplicates {}, without effect {}, transactions {} (aborted {}), recoveries {}, {rate:.0} events/s",
        summary.events,
        summary.records,
        summary.dead_letters,
        summary.duplicates,
        summary.no_effect,
        summary.transactions,
        summary.aborted,
        summary.recoveries
    );
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's exactly-once passthrough (`accrual bench` runs it).
pub fn baseline(Args { config, stop_when_idle, report }: Args) -> Result<ExitCode> {
    let config = load_config(&config)?;
    let stop = stop_flag()?;
    let idle = Duration::from_secs(stop_when_idle.unwrap_or(u64::MAX / 4));
    let summary = accrual::bench::baseline::passthrough(&config, &stop, idle)?;
    if let Some(path) = report {
        accrual::bench::write_report(&path, &summary).with_context(|| path.display().to_string())?;
    }
    say!("events {}, transactions {}", summary.events, summary.transactions);
    Ok(ExitCode::SUCCESS)
}
