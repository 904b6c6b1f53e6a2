//! `accrual tick`: a clock event to every partition of the input topic.

use super::{load_config, parse_time, say};
use accrual::engine;
use accrual::kafka_tools;
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// The clock's time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

pub fn run(Args { config, at }: Args) -> Result<ExitCode> {
    let config = load_config(&config)?;
    let now = engine::wall_clock();
    let at = match at {
        Some(text) => parse_time("--at", &text)?,
        None => now,
    };
    // The engine refuses a clock beyond the rules' bound (as it would any
    // event): say so here rather than send it.
    let timeline = accrual::rules::Timeline::load(&config.engine.rules)?;
    let rules = timeline.first();
    if at.0 > now.0.saturating_add(rules.max_event_ahead_ms) {
        bail!(
            "--at {at} is more than max_event_ahead_minutes ({}) after now ({now}): the engine would refuse it \
             as future_event_time",
            rules.max_event_ahead_ms / 60_000
        );
    }
    let id = format!("clock-{}", at.0);
    let kafka = kafka_tools::Connection::of(&config.kafka);
    let n = kafka_tools::tick(&kafka, &config.kafka.topics.input, at, &id)?;
    say!("clock {at} ({id}) sent to {n} partitions of {}", config.kafka.topics.input);
    Ok(ExitCode::SUCCESS)
}
