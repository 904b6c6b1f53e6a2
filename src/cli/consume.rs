//! `accrual consume`: read a topic from the beginning.

use super::say;
use accrual::kafka_tools;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::TopicArgs,
    /// Also show records of open and aborted transactions.
    #[arg(long)]
    read_uncommitted: bool,
    /// Write the payloads here as NDJSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many milliseconds without a message.
    #[arg(long, default_value_t = 5_000)]
    idle_ms: u64,
    /// Print accruals per rule and kind, dead letters per reason.
    #[arg(long)]
    summary: bool,
}

pub fn run(Args { target, read_uncommitted, out, idle_ms, summary }: Args) -> Result<ExitCode> {
    let (kafka, topic) = (target.connection()?, &target.topic);
    let messages = kafka_tools::read_topic(&kafka, topic, !read_uncommitted, Duration::from_millis(idle_ms))?;
    if let Some(path) = out {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| path.display().to_string())?,
        );
        for m in &messages {
            w.write_all(&m.payload)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    say!("{} messages in {topic}", messages.len());
    if summary {
        say!("{}", kafka_tools::summarize(&messages));
    }
    Ok(ExitCode::SUCCESS)
}
