//! `accrual produce`: an NDJSON file to a topic, keyed by account.

use super::say;
use accrual::kafka_tools;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::TopicArgs,
    #[arg(long)]
    input: PathBuf,
}

pub fn run(Args { target, input }: Args) -> Result<ExitCode> {
    let (kafka, topic) = (target.connection()?, &target.topic);
    let started = std::time::Instant::now();
    let n = kafka_tools::produce_file(&kafka, topic, &input)?;
    let secs = started.elapsed().as_secs_f64();
    say!("produced {n} messages to {topic} in {secs:.1} s ({:.0}/s)", n as f64 / secs.max(1e-9));
    Ok(ExitCode::SUCCESS)
}
