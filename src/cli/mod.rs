//! The subcommands of the `accrual` binary, one module each: its
//! arguments and its `run`. Shared here: config and time parsing, and
//! printing to stdout.

pub mod backtest;
pub mod changelog;
pub mod check_config;
pub mod consume;
pub mod generate;
pub mod health;
pub mod inspect;
pub mod produce;
pub mod run;
pub mod simulate;
pub mod tick;
pub mod topics;

use accrual::config::EngineConfig;
use accrual::time::Timestamp;
use anyhow::Result;

/// Prints to stdout; a closed pipe (`| head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

/// A topic, and how to reach its cluster (`produce`, `consume`): the
/// `[kafka]` section of an engine config (brokers, SASL/SSL properties,
/// secrets), or plain brokers.
#[derive(clap::Args)]
pub struct TopicArgs {
    /// An engine config: its `[kafka]` section says how to connect.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Brokers (overrides the config's; alone: plaintext, no properties).
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long)]
    pub topic: String,
}

impl TopicArgs {
    pub fn connection(&self) -> Result<accrual::kafka_tools::Connection> {
        use accrual::kafka_tools::Connection;
        let mut connection = match (&self.config, &self.brokers) {
            (Some(path), _) => Connection::of(&load_config(path)?.kafka),
            (None, Some(brokers)) => Connection::plain(brokers),
            (None, None) => anyhow::bail!("give --config (an engine config's [kafka] section) or --brokers"),
        };
        if let Some(brokers) = &self.brokers {
            connection.brokers = brokers.clone();
        }
        Ok(connection)
    }
}

pub fn parse_time(flag: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

pub fn load_config(path: &std::path::Path) -> Result<EngineConfig> {
    Ok(EngineConfig::load(path, std::env::vars())?)
}
