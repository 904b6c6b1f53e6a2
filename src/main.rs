//! The `accrual` command line: the subcommands, each in its module under
//! `src/cli/`, and what they share (logging, error reporting).

mod cli;

use accrual::config::LogFormat;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

// mimalloc, reached as `src/allocator.rs` explains.
#[global_allocator]
static ALLOCATOR: accrual::allocator::Allocator = accrual::allocator::Allocator;

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
    /// Run the exactly-once streaming engine.
    Run(cli::run::Args),
    /// Benchmark end to end on a broker: a passthrough baseline and the
    /// engine over the same events; latency at steady loads; scaling.
    Bench(accrual::bench::BenchOptions),
    /// The benchmark's baseline: an exactly-once passthrough (used by `bench`).
    #[command(hide = true)]
    BenchBaseline(cli::run::Args),
    /// Create the engine's topics (input, accruals, dead letters).
    Topics(cli::topics::Args),
    /// Produce a clock event to every partition of the input topic (time
    /// passes for idle accounts: holds release, lots expire).
    Tick(cli::tick::Args),
    /// Produce an NDJSON file to a topic, one message per line, keyed by
    /// account, each stamped with its event time but never after now.
    Produce(cli::produce::Args),
    /// Read a topic from the beginning (read_committed by default).
    Consume(cli::consume::Args),
    /// Check a state directory against the state changelog, or publish a
    /// partition's state to the changelog again.
    Changelog {
        #[command(subcommand)]
        what: cli::changelog::What,
    },
    /// Show what the engine keeps in a state directory.
    Inspect {
        #[command(subcommand)]
        what: cli::inspect::What,
    },
    /// Validate rules files and print a summary of each.
    CheckConfig(cli::check_config::Args),
    /// Run the rules over an NDJSON file of events (a backtest).
    Simulate(cli::simulate::Args),
    /// Compare a candidate rule set with the baseline over the same events
    /// (a file or a topic's range): the payout difference per rule,
    /// program, category and partner, the accounts most affected, cap hits.
    Backtest(cli::backtest::Args),
    /// Generate realistic card transactions as NDJSON (deterministic).
    Gen(cli::generate::Args),
    /// Ask a running engine whether it is healthy (or ready): exit 0 on
    /// 200, for container health checks.
    Health(cli::health::Args),
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => cli::run::run(args),
        Command::Bench(options) => {
            accrual::bench::run(options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchBaseline(args) => cli::run::baseline(args),
        Command::Topics(args) => cli::topics::run(args),
        Command::Tick(args) => cli::tick::run(args),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Inspect { what } => cli::inspect::run(what),
        Command::Changelog { what } => cli::changelog::run(what),
        Command::CheckConfig(args) => cli::check_config::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Backtest(args) => cli::backtest::run(args),
        Command::Gen(args) => cli::generate::run(args),
        Command::Health(args) => cli::health::run(args),
    }
}

/// Logs on stderr: text or JSON, at a level from RUST_LOG or the config.
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    accrual::allocator::configure();
    let cli = Cli::parse();
    // `run` logs as its config says; the other commands as text.
    let config_for_logs = match &cli.command {
        Command::Run(args) => match cli::load_config(&args.config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    match &config_for_logs {
        Some(c) => init_logging(c.log.format, &c.log.level),
        None => init_logging(LogFormat::Text, "info"),
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text the message
/// before it already includes (the library's errors name their source).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    for cause in error.chain().skip(1) {
        let message = cause.to_string();
        if !last.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        last = message;
    }
    text
}
