//! `accrual topics`: create the engine's topics.

use super::{load_config, say};
use accrual::kafka_tools::{self, Connection};
use anyhow::{Result, bail};
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
    /// Replicas of every partition; -1: the cluster's
    /// `default.replication.factor`. Banks run 3.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    replication_factor: i32,
    /// `min.insync.replicas` of every topic (with `acks=all`, which the
    /// engine's idempotent producer uses, a write needs this many copies).
    #[arg(long)]
    min_insync_replicas: Option<u32>,
    /// A topic config, ROLE:KEY=VALUE, ROLE one of all, input, accruals,
    /// dead_letter, changelog (repeatable), e.g.
    /// `input:retention.ms=1209600000`.
    #[arg(long = "topic-config", value_name = "ROLE:KEY=VALUE")]
    topic_configs: Vec<String>,
}

const ROLES: [&str; 4] = ["input", "accruals", "dead_letter", "changelog"];

/// `ROLE:KEY=VALUE` as (role, key, value).
fn parse_topic_config(text: &str) -> Result<(&str, &str, &str)> {
    let parsed = text.split_once(':').and_then(|(role, kv)| kv.split_once('=').map(|(k, v)| (role, k, v)));
    match parsed {
        Some((role, key, value)) if (role == "all" || ROLES.contains(&role)) && !key.is_empty() => {
            Ok((role, key, value))
        }
        _ => {
            bail!("--topic-config {text}: expected ROLE:KEY=VALUE with ROLE one of all, {}", ROLES.join(", "))
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    let t = &config.kafka.topics;
    let mut topics = vec![
        ("input", t.input.as_str(), Vec::new()),
        ("accruals", t.accruals.as_str(), Vec::new()),
        ("dead_letter", t.dead_letter.as_str(), Vec::new()),
    ];
    if let Some(changelog) = &t.changelog {
        // Co-partitioned with the input: partition p's state in partition p.
        topics.push(("changelog", changelog.as_str(), kafka_tools::CHANGELOG_CONFIGS.to_vec()));
    }
    let min_insync = args.min_insync_replicas.map(|n| n.to_string());
    let extra: Vec<(&str, &str, &str)> =
        args.topic_configs.iter().map(|c| parse_topic_config(c)).collect::<Result<_>>()?;
    for (role, _, configs) in &mut topics {
        if let Some(n) = &min_insync {
            configs.push(("min.insync.replicas", n.as_str()));
        }
        configs.extend(extra.iter().filter(|(r, ..)| *r == "all" || r == role).map(|&(_, k, v)| (k, v)));
    }
    let specs: Vec<kafka_tools::TopicSpec<'_>> =
        topics.iter().map(|(_, name, configs)| (*name, args.partitions, &configs[..])).collect();
    let kafka = Connection::of(&config.kafka);
    kafka_tools::create_topics_replicated(&kafka, &specs, args.replication_factor)?;
    // An existing changelog keeps its configs: say so if they cannot hold the state.
    if let Some(changelog) = &t.changelog {
        accrual::engine::changelog_topic::check(&kafka, changelog, &t.input)?;
    }
    for (_, name, configs) in &topics {
        let partitions = kafka_tools::partitions(&kafka, name).unwrap_or(args.partitions);
        let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        say!("topic {name}: {partitions} partitions {}", configs.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_name_a_role_a_key_and_a_value() {
        assert_eq!(parse_topic_config("input:retention.ms=100").unwrap(), ("input", "retention.ms", "100"));
        assert_eq!(parse_topic_config("all:a=b=c").unwrap(), ("all", "a", "b=c"));
        for bad in ["retention.ms=1", "output:a=b", "input:=b", "input:a"] {
            let e = parse_topic_config(bad).unwrap_err().to_string();
            assert!(e.contains("ROLE:KEY=VALUE"), "{bad}: {e}");
        }
    }
}
