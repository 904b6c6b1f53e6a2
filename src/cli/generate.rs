//! `accrual gen`: realistic card transactions as NDJSON (deterministic).

use super::parse_time;
use accrual::datagen::{self, GenOptions};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Zipf exponent of account activity (0: uniform; 0.25: a card
    /// portfolio; 1.07: a few extremely busy accounts).
    #[arg(long, default_value_t = 1.07)]
    skew: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00+03:00")]
    start: String,
    /// Days the events span.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Percent of events that are refunds.
    #[arg(long, default_value_t = 2.0)]
    refunds: f64,
    /// Percent of events that are reversals.
    #[arg(long, default_value_t = 1.0)]
    reversals: f64,
    /// Percent of lines repeating an earlier event (duplicates).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Percent of lines that are malformed.
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Hostile lines to mix in (random bytes, huge and deeply nested
    /// values, 40-digit amounts, far-future and late events, replays...).
    #[arg(long, default_value_t = 0)]
    hostile: u64,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let out = args.out.clone();
    let opts = options(args)?;
    match out {
        Some(path) => {
            let file = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            datagen::generate(&opts, &mut w).with_context(|| path.display().to_string())?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            match datagen::generate(&opts, &mut w).and_then(|_| w.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing to stdout")?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The generator's options, checked.
fn options(a: Args) -> Result<GenOptions> {
    let start = parse_time("--start", &a.start)?;
    for (name, p) in [
        ("refunds", a.refunds),
        ("reversals", a.reversals),
        ("duplicates", a.duplicates),
        ("malformed", a.malformed),
    ] {
        if !(0.0..=100.0).contains(&p) {
            bail!("--{name} must be a percentage between 0 and 100");
        }
    }
    if !(0.0..=10.0).contains(&a.skew) {
        bail!("--skew must be between 0 and 10");
    }
    if a.refunds + a.reversals > 100.0 {
        bail!("--refunds plus --reversals exceed 100 percent");
    }
    Ok(GenOptions {
        events: a.events,
        accounts: a.accounts,
        skew: a.skew,
        seed: a.seed,
        start,
        days: a.days,
        refund_percent: a.refunds,
        reversal_percent: a.reversals,
        duplicate_percent: a.duplicates,
        malformed_percent: a.malformed,
        hostile: a.hostile,
        currency: "RUB".to_string(),
    })
}
