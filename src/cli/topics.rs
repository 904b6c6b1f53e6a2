//! `accrual topics`: create the engine's topics.

use super::{load_config, say};
use accrual::kafka_tools;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Partitions of the input topic (the output topics and the state
    /// changelog get the same).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
}

pub fn run(Args { config, partitions }: Args) -> Result<ExitCode> {
    let config = load_config(&config)?;
    let t = &config.kafka.topics;
    let mut topics: Vec<kafka_tools::TopicSpec<'_>> = vec![
        (t.input.as_str(), partitions, &[]),
        (t.accruals.as_str(), partitions, &[]),
        (t.dead_letter.as_str(), partitions, &[]),
    ];
    if let Some(changelog) = &t.changelog {
        // Co-partitioned with the input: partition p's state in partition p.
        topics.push((changelog.as_str(), partitions, kafka_tools::CHANGELOG_CONFIGS));
    }
    kafka_tools::create_topics_with(&config.kafka.brokers, &topics)?;
    for (name, p, _) in topics {
        say!(
            "topic {name}: {} partitions",
            kafka_tools::partitions(&config.kafka.brokers, name).unwrap_or(p)
        );
    }
    Ok(ExitCode::SUCCESS)
}
