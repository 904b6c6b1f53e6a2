//! The `accrual` command line.

use accrual::datagen::{self, GenOptions};
use accrual::simulate::{self, SimulateOptions};
use accrual::time::Timestamp;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "accrual",
    version,
    about = "Exactly-once cashback and bonus-point accrual for card transaction streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate rules files and print a summary of each.
    CheckConfig {
        /// Rules files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the rules over an NDJSON file of events (a backtest).
    Simulate {
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
    },
    /// Generate realistic card transactions as NDJSON (deterministic).
    Gen {
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        accounts: u64,
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
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { files } => {
            let mut failed = false;
            for file in &files {
                match accrual::rules::load(file) {
                    Ok(rules) => {
                        println!("{}: OK", file.display());
                        println!("{}", rules.describe());
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Simulate { rules, input, out, dlq, state_dir, batch_size, quiet } => {
            if batch_size == 0 {
                bail!("--batch-size must be at least 1");
            }
            let to_stdout = out.as_ref().is_some_and(|p| p.as_os_str() == "-");
            let opts =
                SimulateOptions { rules, input, out, dlq, state_dir, batch_size, show_progress: !quiet };
            let summary = simulate::run(&opts)?;
            if to_stdout {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen {
            events,
            accounts,
            seed,
            start,
            days,
            refunds,
            reversals,
            duplicates,
            malformed,
            out,
        } => {
            let start = Timestamp::parse_rfc3339(&start).map_err(|e| anyhow::anyhow!("--start {e}"))?;
            for (name, p) in [
                ("refunds", refunds),
                ("reversals", reversals),
                ("duplicates", duplicates),
                ("malformed", malformed),
            ] {
                if !(0.0..=100.0).contains(&p) {
                    bail!("--{name} must be a percentage between 0 and 100");
                }
            }
            if refunds + reversals > 100.0 {
                bail!("--refunds plus --reversals exceed 100 percent");
            }
            let opts = GenOptions {
                events,
                accounts,
                seed,
                start,
                days,
                refund_percent: refunds,
                reversal_percent: reversals,
                duplicate_percent: duplicates,
                malformed_percent: malformed,
                currency: "RUB".to_string(),
            };
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
    }
}
