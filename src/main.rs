//! The `accrual` command line.

use accrual::config::{EngineConfig, LogFormat};
use accrual::datagen::{self, GenOptions};
use accrual::engine::{self, RunOptions, journal::Journal};
use accrual::kafka_tools;
use accrual::simulate::{self, SimulateOptions};
use accrual::store::Store;
use accrual::time::Timestamp;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};

// mimalloc, reached as `src/allocator.rs` explains.
#[global_allocator]
static ALLOCATOR: accrual::allocator::Allocator = accrual::allocator::Allocator;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

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
    Run(RunArgs),
    /// Benchmark end to end on a broker: a passthrough baseline and the
    /// engine over the same events; latency at steady loads; scaling.
    Bench(accrual::bench::BenchOptions),
    /// The benchmark's baseline: an exactly-once passthrough (used by `bench`).
    #[command(hide = true)]
    BenchBaseline(RunArgs),
    /// Create the engine's topics (input, accruals, dead letters).
    Topics {
        #[arg(long)]
        config: PathBuf,
        /// Partitions of the input topic (the output topics get the same).
        #[arg(long, default_value_t = 8)]
        partitions: i32,
    },
    /// Produce a clock event to every partition of the input topic (time
    /// passes for idle accounts: holds release, lots expire).
    Tick {
        #[arg(long)]
        config: PathBuf,
        /// The clock's time (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Produce an NDJSON file to a topic, one message per line, keyed by
    /// account, each stamped with its event time but never after now.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        input: PathBuf,
    },
    /// Read a topic from the beginning (read_committed by default).
    Consume {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
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
    },
    /// Show what the engine keeps in a state directory.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
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
        /// Take the file as received by this instant (RFC 3339): events
        /// dated more than the rules' max_event_ahead_minutes after it are
        /// refused. Default: now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Generate realistic card transactions as NDJSON (deterministic).
    Gen {
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        accounts: u64,
        /// Zipf exponent of account activity (0: uniform; 0.25: a card
        /// portfolio; 1.07: a few extremely busy accounts).
        #[arg(long, default_value_t = 1.07)]
        skew: f64,
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
        /// Hostile lines to mix in (random bytes, huge and deeply nested
        /// values, 40-digit amounts, far-future and late events, replays...).
        #[arg(long, default_value_t = 0)]
        hostile: u64,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// What `run` and the benchmark's baseline take.
#[derive(clap::Args)]
struct RunArgs {
    /// Engine config (TOML); `ACCRUAL_*` environment variables override it.
    #[arg(long)]
    config: PathBuf,
    /// Stop gracefully after this many seconds without input (demos, tests).
    #[arg(long)]
    stop_when_idle: Option<u64>,
    /// On exit, write what the run did (events, records, seconds from
    /// first input to last commit) here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Inspect {
    /// An account's balances: available, pending, lots to expire, tier.
    Balance {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        rules: PathBuf,
        #[arg(long)]
        account: String,
    },
    /// The transaction journal: each Kafka transaction's id and outcome.
    Transactions {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

fn load_config(path: &std::path::Path) -> Result<EngineConfig> {
    Ok(EngineConfig::load(path, std::env::vars())?)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
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
        Command::Run(RunArgs { config, .. }) => match load_config(config) {
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
    match run(cli) {
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

/// Set on SIGINT or SIGTERM: finish the cycle, then stop.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(RunArgs { config, stop_when_idle, report }) => {
            let config = load_config(&config)?;
            let stop = stop_flag()?;
            let options = RunOptions { stop_when_idle: stop_when_idle.map(Duration::from_secs) };
            let summary = engine::run(config, stop, options)?;
            if let Some(path) = report {
                engine::report::write_report(&path, &summary).with_context(|| path.display().to_string())?;
            }
            let rate = summary.events as f64 / summary.busy.as_secs_f64().max(1e-9);
            say!(
                "events {}, records {}, dead letters {}, duplicates {}, without effect {}, transactions {} (aborted {}), recoveries {}, {rate:.0} events/s",
                summary.events,
                summary.records,
                summary.dead_letters,
                summary.duplicates,
                summary.no_effect,
                summary.transactions,
                summary.aborted,
                summary.recoveries
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(options) => {
            accrual::bench::run(options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchBaseline(RunArgs { config, stop_when_idle, report }) => {
            let config = load_config(&config)?;
            let stop = stop_flag()?;
            let idle = Duration::from_secs(stop_when_idle.unwrap_or(u64::MAX / 4));
            let summary = accrual::bench::baseline::passthrough(&config, &stop, idle)?;
            if let Some(path) = report {
                accrual::bench::write_report(&path, &summary).with_context(|| path.display().to_string())?;
            }
            say!("events {}, transactions {}", summary.events, summary.transactions);
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics { config, partitions } => {
            let config = load_config(&config)?;
            let t = &config.kafka.topics;
            let topics = [
                (t.input.as_str(), partitions),
                (t.accruals.as_str(), partitions),
                (t.dead_letter.as_str(), partitions),
            ];
            kafka_tools::create_topics(&config.kafka.brokers, &topics)?;
            for (name, p) in topics {
                say!(
                    "topic {name}: {} partitions",
                    kafka_tools::partitions(&config.kafka.brokers, name).unwrap_or(p)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tick { config, at } => {
            let config = load_config(&config)?;
            let now = engine::wall_clock();
            let at = match at {
                Some(text) => parse_time("--at", &text)?,
                None => now,
            };
            // The engine refuses a clock beyond the rules' bound (as it
            // would any event): say so here rather than send it.
            let rules = accrual::rules::load(&config.engine.rules)?;
            if at.0 > now.0.saturating_add(rules.max_event_ahead_ms) {
                bail!(
                    "--at {at} is more than max_event_ahead_minutes ({}) after now ({now}): the engine would \
                     refuse it as future_event_time",
                    rules.max_event_ahead_ms / 60_000
                );
            }
            let id = format!("clock-{}", at.0);
            let n = kafka_tools::tick(&config.kafka.brokers, &config.kafka.topics.input, at, &id)?;
            say!("clock {at} ({id}) sent to {n} partitions of {}", config.kafka.topics.input);
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce { brokers, topic, input } => {
            let started = std::time::Instant::now();
            let n = kafka_tools::produce_file(&brokers, &topic, &input)?;
            let secs = started.elapsed().as_secs_f64();
            say!("produced {n} messages to {topic} in {secs:.1} s ({:.0}/s)", n as f64 / secs.max(1e-9));
            Ok(ExitCode::SUCCESS)
        }
        Command::Consume { brokers, topic, read_uncommitted, out, idle_ms, summary } => {
            let messages =
                kafka_tools::read_topic(&brokers, &topic, !read_uncommitted, Duration::from_millis(idle_ms))?;
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
        Command::Inspect { what: Inspect::Balance { state_dir, rules, account } } => {
            let rules = accrual::rules::load(&rules)?;
            let store = Store::open_read_only(&state_dir)?;
            let Some((partition, state)) = store.find_account(&account)? else {
                bail!("no account {account} in {}", state_dir.display());
            };
            let view = accrual::accrue::balance_view(&rules, &state, 3);
            say!("account {account} (partition {partition}), as of {}", state.watermark);
            say!("tier: {}", view.tier.as_deref().unwrap_or("none"));
            if let Some(p) = &view.tier_progress {
                let next = p
                    .next
                    .as_ref()
                    .map_or("top tier".to_string(), |(t, threshold)| format!("{t} from {threshold}"));
                say!("  {} in {} ({next})", p.value, p.period);
            }
            for p in &view.programs {
                say!(
                    "{}: available {} {u}, pending {}, earned {}, redeemed {}, expired {}, owed {}",
                    p.program,
                    p.available,
                    p.pending,
                    p.lifetime_earned,
                    p.redeemed,
                    p.expired,
                    p.owed,
                    u = p.unit
                );
                for (when, amount) in &p.next_expiring {
                    say!("  {amount} expire at {when}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { what: Inspect::Transactions { state_dir } } => {
            let store = Store::open_read_only(&state_dir)?;
            let instance = Journal::instance(&store)?.unwrap_or_default();
            for entry in Journal::entries(&store)? {
                say!("{instance}:{}:{} {}", entry.epoch, entry.seq, entry.status.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { files } => {
            let mut failed = false;
            for file in &files {
                match accrual::rules::load(file) {
                    Ok(rules) => {
                        say!("{}: OK", file.display());
                        say!("{}", rules.describe());
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Simulate { rules, input, out, dlq, state_dir, batch_size, quiet, now } => {
            if batch_size == 0 {
                bail!("--batch-size must be at least 1");
            }
            let to_stdout = out.as_ref().is_some_and(|p| p.as_os_str() == "-");
            let now = now.as_deref().map(|t| parse_time("--now", t)).transpose()?;
            let opts =
                SimulateOptions { rules, input, out, dlq, state_dir, batch_size, show_progress: !quiet, now };
            let summary = simulate::run(&opts)?;
            if to_stdout {
                eprintln!("{summary}");
            } else {
                say!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen {
            events,
            accounts,
            skew,
            seed,
            start,
            days,
            refunds,
            reversals,
            duplicates,
            malformed,
            hostile,
            out,
        } => {
            let start = parse_time("--start", &start)?;
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
            if !(0.0..=10.0).contains(&skew) {
                bail!("--skew must be between 0 and 10");
            }
            if refunds + reversals > 100.0 {
                bail!("--refunds plus --reversals exceed 100 percent");
            }
            let opts = GenOptions {
                events,
                accounts,
                skew,
                seed,
                start,
                days,
                refund_percent: refunds,
                reversal_percent: reversals,
                duplicate_percent: duplicates,
                malformed_percent: malformed,
                hostile,
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
