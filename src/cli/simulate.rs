//! `accrual simulate`: the rules over an NDJSON file of events.

use super::{parse_time, say};
use accrual::simulate::{self, SimulateOptions};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A rules file, or a directory of versions (each in force from its
    /// `effective_from`).
    #[arg(long)]
    rules: PathBuf,
    /// Events, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// Write accrual records here as NDJSON ("-" for stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write rejected lines here as NDJSON, with line numbers and reasons.
    #[arg(long)]
    dlq: Option<PathBuf>,
    /// Keep state in this directory (and continue from it); default: a
    /// temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Lines per ledger commit.
    #[arg(long, default_value_t = 10_000)]
    batch_size: usize,
    /// Do not show progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Take the file as received by this instant (RFC 3339): events
    /// dated more than the rules' max_event_ahead_minutes after it are
    /// refused. Default: now.
    #[arg(long)]
    now: Option<String>,
}

pub fn run(Args { rules, input, out, dlq, state_dir, batch_size, quiet, now }: Args) -> Result<ExitCode> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let to_stdout = out.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let now = now.as_deref().map(|t| parse_time("--now", t)).transpose()?;
    let opts = SimulateOptions { rules, input, out, dlq, state_dir, batch_size, show_progress: !quiet, now };
    let summary = simulate::run(&opts)?;
    if to_stdout {
        eprintln!("{summary}");
    } else {
        say!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}
