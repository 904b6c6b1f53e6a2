//! `accrual backtest`: a candidate rule set against the baseline over the
//! same events (a file, or a topic's range), and what it pays differently.

use super::{load_config, parse_time, say};
use accrual::backtest::{self, BacktestOptions, Format, Source};
use accrual::kafka_tools::{Connection, RangeBound};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The rules in force: a file, or a directory of versions.
    #[arg(long)]
    baseline: PathBuf,
    /// The rules to compare with them: a file, or a directory of versions.
    #[arg(long)]
    candidate: PathBuf,
    /// Events, one JSON object per line (or give --topic).
    #[arg(long, conflicts_with = "topic")]
    input: Option<PathBuf>,
    /// Read the events from this topic (committed messages, joining no group).
    #[arg(long)]
    topic: Option<String>,
    /// With --topic: an engine config whose [kafka] section says how to connect.
    #[arg(long, requires = "topic")]
    config: Option<PathBuf>,
    /// With --topic: brokers (overrides the config's; alone: plaintext).
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// With --topic: start at this offset (in every partition) or time (RFC 3339).
    #[arg(long, requires = "topic")]
    from: Option<String>,
    /// With --topic: stop before this offset or time (default: the end as the read starts).
    #[arg(long, requires = "topic")]
    to: Option<String>,
    /// Start both sides from a copy of this state directory (never written
    /// to): a copy of a production instance's state, say.
    #[arg(long)]
    from_state: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the report here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Accounts listed per program, most affected first.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Lines or messages per batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: usize,
    /// For a file: take it as received by this instant (see `simulate --now`).
    #[arg(long)]
    now: Option<String>,
    /// Do not show progress on stderr.
    #[arg(long)]
    quiet: bool,
}

/// `--from`/`--to`: an offset, or an instant.
fn bound(flag: &str, text: Option<&str>) -> Result<Option<RangeBound>> {
    let Some(text) = text else { return Ok(None) };
    if let Ok(offset) = text.parse::<i64>() {
        if offset < 0 {
            bail!("{flag} {text}: an offset is never negative");
        }
        return Ok(Some(RangeBound::Offset(offset)));
    }
    Ok(Some(RangeBound::Time(parse_time(flag, text)?)))
}

fn source(args: &Args) -> Result<Source> {
    if let Some(path) = &args.input {
        return Ok(Source::File(path.clone()));
    }
    let Some(topic) = &args.topic else { bail!("give --input (a file) or --topic") };
    let mut connection = match (&args.config, &args.brokers) {
        (Some(path), _) => Connection::of(&load_config(path)?.kafka),
        (None, Some(brokers)) => Connection::plain(brokers),
        (None, None) => bail!("--topic needs --config (an engine config's [kafka] section) or --brokers"),
    };
    if let Some(brokers) = &args.brokers {
        connection.brokers = brokers.clone();
    }
    let from = bound("--from", args.from.as_deref())?;
    let to = bound("--to", args.to.as_deref())?;
    Ok(Source::Topic { connection, topic: topic.clone(), from, to })
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let now = args.now.as_deref().map(|t| parse_time("--now", t)).transpose()?;
    let opts = BacktestOptions {
        baseline: args.baseline.clone(),
        candidate: args.candidate.clone(),
        source: source(&args)?,
        from_state: args.from_state.clone(),
        now,
        batch_size: args.batch_size,
        top_accounts: args.top,
        show_progress: !args.quiet,
    };
    let report = backtest::run(&opts)?;
    match &args.out {
        Some(path) => {
            let mut file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
            report.write(args.format, &mut file).with_context(|| format!("{}", path.display()))?;
            say!("backtest report written to {}", path.display());
        }
        None => {
            let mut text = Vec::new();
            report.write(args.format, &mut text)?;
            say!("{}", String::from_utf8_lossy(&text).trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
