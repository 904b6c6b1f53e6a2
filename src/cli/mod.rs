//! The subcommands of the `accrual` binary, one module each: its
//! arguments and its `run`. Shared here: config and time parsing, and
//! printing to stdout.

pub mod check_config;
pub mod consume;
pub mod generate;
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

/// A broker and a topic on it (`produce`, `consume`).
#[derive(clap::Args)]
pub struct TopicArgs {
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
}

pub fn parse_time(flag: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

pub fn load_config(path: &std::path::Path) -> Result<EngineConfig> {
    Ok(EngineConfig::load(path, std::env::vars())?)
}
