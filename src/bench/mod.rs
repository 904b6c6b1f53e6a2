//! `accrual bench`: the end-to-end benchmark, on a real broker, in one run.
//!
//! The same pre-produced events are processed twice, each by a child
//! process measured by the kernel (peak RSS, CPU time):
//! - the **baseline** ([`baseline::passthrough`]): consume, produce the same
//!   bytes, commit offsets in the same Kafka transaction: the limit of an
//!   exactly-once hop on this broker and machine;
//! - **accrual**: `accrual run` with the example rules, from empty state.
//!
//! Both report events/s from the first poll to the last commit. Then each
//! runs again under a steady offered load for latency percentiles, and with
//! `--scaling` accrual runs over several partition counts and state sizes.
//! Results: a table on stdout and a JSON file. See `docs/benchmarks.md`.

pub mod baseline;
mod child;
pub mod latency;
pub mod seed;

use crate::config::EngineConfig;
use crate::datagen::{self, GenOptions};
use crate::kafka_tools;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Cores found busy before the first round above which the run warns:
/// the bench's own idle broker and the kernel stay well below.
const BUSY_WARNING_CORES: f64 = 0.1;

/// Progress on stdout; a closed pipe is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod failover;
mod restore;
mod results;
mod sweeps;
mod table;
pub use failover::FailoverRun;
pub use restore::RestoreRun;
pub use results::{Machine, Results, Round, Settings, StateSizeRun, Throughput};
use results::{busy_cores, machine, median_changelog_ratio, median_round};
pub use table::table;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Kafka(#[from] kafka_tools::ToolError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Run(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Engine config both runs start from (batching, commit interval,
    /// RocksDB and producer settings, rules); `ACCRUAL_*` variables apply.
    #[arg(long, default_value = "config/engine.toml")]
    pub config: PathBuf,
    /// Brokers to use instead of the config's.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Events produced before the throughput runs.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Accounts the generated events belong to.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: u64,
    /// Zipf exponent of account activity (see `accrual gen --skew`): 0.25
    /// is a card portfolio; 1.07 puts a tenth of all events on one account.
    #[arg(long, default_value_t = 0.25)]
    pub skew: f64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Throughput rounds over the same events, baseline and accrual (and
    /// with `--changelog` accrual without it) alternating (baseline first
    /// in odd rounds, last in even ones); the ratio reported is the median
    /// round's. On a VM whose neighbours come and go, one pair can be off
    /// by a tenth either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Offered loads (events/s) for the latency runs.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000u64, 50_000])]
    pub latency_rates: Vec<u64>,
    /// Seconds of steady load per rate; 0 skips the latency runs.
    #[arg(long, default_value_t = 15)]
    pub latency_seconds: u64,
    /// Run the engine with a state changelog (`kafka.topics.changelog`), a
    /// compacted topic of the bench's own: its cost shows in the ratio.
    #[arg(long)]
    pub changelog: bool,
    /// With `--changelog`: also measure failover (two instances, one
    /// killed), without and with a standby replica.
    #[arg(long)]
    pub failover: bool,
    /// Also measure accrual over partition counts and state sizes.
    #[arg(long)]
    pub scaling: bool,
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16])]
    pub scaling_partitions: Vec<i32>,
    /// Accounts already in state before the run (seeded directly).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000_000, 10_000_000])]
    pub scaling_accounts: Vec<u64>,
    /// Events per scaling run.
    #[arg(long, default_value_t = 500_000)]
    pub scaling_events: u64,
    /// Where event files, state directories and child logs go (emptied first).
    #[arg(long, default_value = "bench-work")]
    pub work_dir: PathBuf,
    /// The JSON results.
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
}

pub use crate::engine::report::{RunReport, write_report};

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Baseline,
    /// With the state changelog if `--changelog` is given.
    Accrual,
    /// With `--changelog`: accrual once more without it, for its cost.
    AccrualWithoutChangelog,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Baseline => "baseline",
            Target::Accrual => "accrual",
            Target::AccrualWithoutChangelog => "accrual-no-changelog",
        }
    }
}

/// Topics of one run, all with the same partition count.
struct Topics {
    input: String,
    output: String,
    dead_letter: String,
    /// The state changelog, for accrual runs with `--changelog`.
    changelog: Option<String>,
}

struct Bench {
    opts: BenchOptions,
    config: EngineConfig,
    brokers: String,
    /// Topic, group and transactional-id prefix unique to this run.
    prefix: String,
    runs: u32,
    /// The next child runs as this earlier run (its group and instance id).
    as_run: Option<u32>,
    /// The first round's accrual run, whose state the restore measures.
    first_accrual: Option<u32>,
    /// Set for the next children started (the failover runs' group).
    extra_env: Vec<(String, String)>,
}

/// Runs the benchmark; prints progress and the table on stdout.
pub fn run(opts: BenchOptions) -> Result<Results, BenchError> {
    let config = EngineConfig::load(&opts.config, std::env::vars())?;
    let brokers = opts.brokers.clone().unwrap_or_else(|| config.kafka.brokers.clone());
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    std::fs::create_dir_all(&opts.work_dir).map_err(io(opts.work_dir.display().to_string()))?;
    let mut bench = Bench {
        prefix: format!("bench-{stamp}"),
        opts,
        config,
        brokers,
        runs: 0,
        as_run: None,
        first_accrual: None,
        extra_env: Vec::new(),
    };
    bench.all()
}

impl Bench {
    /// The config's connection, at the brokers the bench runs against.
    fn kafka(&self) -> kafka_tools::Connection {
        let mut kafka = kafka_tools::Connection::of(&self.config.kafka);
        kafka.brokers = self.brokers.clone();
        kafka
    }

    fn all(&mut self) -> Result<Results, BenchError> {
        let o = self.opts.clone();
        say!(
            "accrual bench: {} events, {} accounts, {} partitions, broker {}",
            o.events,
            o.accounts,
            o.partitions,
            self.brokers
        );
        let events = self.generate("events", o.events, o.accounts, o.seed)?;
        let topics = self.topics("main", o.partitions)?;
        let started = Instant::now();
        let produced = kafka_tools::produce_file(&self.kafka(), &topics.input, &events)?;
        let produce_rate = produced as f64 / started.elapsed().as_secs_f64().max(1e-9);
        say!("produced {produced} events ({produce_rate:.0}/s)");
        let busy_before = busy_cores(Duration::from_secs(1));
        if let Some(busy) = busy_before.filter(|b| *b >= BUSY_WARNING_CORES) {
            say!(
                "warning: {busy:.2} cores were busy before the first round (other processes, e.g. a broker \
                 compacting or a build): every figure below is lower than on an idle machine"
            );
        }
        let mut rounds = Vec::new();
        for n in 1..=o.rounds {
            if o.rounds > 1 {
                say!("round {n} of {}", o.rounds);
            }
            let round = self.round(n, &topics, o.partitions, produced)?;
            say!("accrual/baseline: {:.2}", round.ratio);
            rounds.push(round);
        }
        let median = median_round(&rounds).clone();
        if o.rounds > 1 {
            say!("median ratio of {} rounds: {:.2}", o.rounds, median.ratio);
        }
        let changelog_ratio = median_changelog_ratio(&rounds);
        let Round { baseline, accrual, ratio, accrual_without_changelog, .. } = median;
        let restore = match (o.changelog, self.first_accrual) {
            (true, Some(run)) => Some(self.restore_rate(&topics, run)?),
            _ => None,
        };
        let mut failover = Vec::new();
        if o.changelog && o.failover {
            for standby_replicas in [0, 1] {
                failover.push(self.failover(standby_replicas)?);
            }
        }

        let mut latency = Vec::new();
        if o.latency_seconds > 0 && !o.latency_rates.is_empty() {
            for target in [Target::Baseline, Target::Accrual] {
                latency.extend(self.latency(target)?);
            }
        }
        let (mut scaling_partitions, mut scaling_state) = (Vec::new(), Vec::new());
        if o.scaling {
            let file = self.generate("scaling", o.scaling_events, o.accounts, o.seed + 1)?;
            for &p in &o.scaling_partitions {
                let topics = self.topics(&format!("p{p}"), p)?;
                let n = kafka_tools::produce_file(&self.kafka(), &topics.input, &file)?;
                let base = self.throughput(Target::Baseline, &topics, p, None, n)?;
                let acc = self.throughput(Target::Accrual, &topics, p, None, n)?;
                scaling_partitions.push((base, acc));
            }
            for &accounts in &o.scaling_accounts {
                scaling_state.push(self.state_size(accounts)?);
            }
        }
        let results = Results {
            machine: machine(busy_before),
            settings: Settings {
                brokers: self.brokers.clone(),
                events: o.events,
                accounts: o.accounts,
                skew: o.skew,
                partitions: o.partitions,
                rules: self.config.engine.rules.display().to_string(),
                commit_interval_ms: self.config.engine.commit_interval_ms,
                max_batch: self.config.engine.max_batch,
                sync_wal: self.config.engine.sync_wal,
            },
            produce_events_per_second: produce_rate,
            baseline,
            accrual,
            ratio,
            accrual_without_changelog,
            changelog_ratio,
            rounds,
            latency,
            scaling_partitions,
            scaling_state,
            restore,
            failover,
        };
        let json = serde_json::to_vec_pretty(&results).map_err(|e| BenchError::Run(e.to_string()))?;
        std::fs::write(&o.out, json).map_err(io(o.out.display().to_string()))?;
        say!("{}", table(&results));
        say!("results: {}", o.out.display());
        Ok(results)
    }

    /// Baseline and accrual (with `--changelog`, accrual without it too)
    /// over the events in `topics.input`, in the order of round `n`. Each writes to topics of its own, and the state
    /// accrual built is removed once measured.
    fn round(&mut self, n: u32, topics: &Topics, partitions: i32, events: u64) -> Result<Round, BenchError> {
        let mut order = vec![Target::Baseline, Target::Accrual];
        if self.opts.changelog {
            order.push(Target::AccrualWithoutChangelog);
        }
        if n % 2 == 0 {
            order.reverse();
        }
        let (mut baseline, mut accrual, mut without_changelog) = (None, None, None);
        for target in order {
            let own;
            let topics = if n == 1 {
                topics
            } else {
                own =
                    self.outputs(&format!("main-{n}-{}", target.name()), partitions, topics.input.clone())?;
                &own
            };
            let state = self.opts.work_dir.join(format!("state-{}", self.runs + 1));
            let t = self.throughput(target, topics, partitions, None, events)?;
            if self.opts.rounds > 1 {
                let _ = std::fs::remove_dir_all(&state);
            }
            match target {
                Target::Baseline => baseline = Some(t),
                Target::Accrual => {
                    self.first_accrual.get_or_insert(self.runs);
                    accrual = Some(t);
                }
                Target::AccrualWithoutChangelog => without_changelog = Some(t),
            }
        }
        let (Some(baseline), Some(accrual)) = (baseline, accrual) else {
            return Err(BenchError::Run("a round ran without both targets".into()));
        };
        let ratio = accrual.events_per_second / baseline.events_per_second.max(1e-9);
        let changelog_ratio =
            without_changelog.as_ref().map(|w| accrual.events_per_second / w.events_per_second.max(1e-9));
        if let Some(r) = changelog_ratio {
            say!("accrual with the changelog/without it: {r:.2}");
        }
        Ok(Round { baseline, accrual, ratio, accrual_without_changelog: without_changelog, changelog_ratio })
    }

    /// Generated events in a file of the work directory.
    fn generate(&self, name: &str, events: u64, accounts: u64, seed: u64) -> Result<PathBuf, BenchError> {
        let path = self.opts.work_dir.join(format!("{name}.ndjson"));
        let opts = GenOptions { events, accounts, seed, skew: self.opts.skew, ..GenOptions::default() };
        let file = std::fs::File::create(&path).map_err(io(path.display().to_string()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        datagen::generate(&opts, &mut w).map_err(io(path.display().to_string()))?;
        Ok(path)
    }

    fn topics(&self, name: &str, partitions: i32) -> Result<Topics, BenchError> {
        let input = format!("{}-{name}-in", self.prefix);
        kafka_tools::create_topics(&self.kafka(), &[(&input, partitions)])?;
        self.outputs(name, partitions, input)
    }

    /// Output and dead-letter topics of their own for a run reading `input`.
    fn outputs(&self, name: &str, partitions: i32, input: String) -> Result<Topics, BenchError> {
        let t = Topics {
            input,
            output: format!("{}-{name}-out", self.prefix),
            dead_letter: format!("{}-{name}-dlq", self.prefix),
            changelog: self.opts.changelog.then(|| format!("{}-{name}-changelog", self.prefix)),
        };
        kafka_tools::create_topics(&self.kafka(), &[(&t.output, partitions), (&t.dead_letter, partitions)])?;
        if let Some(changelog) = &t.changelog {
            kafka_tools::create_topics_with(
                &self.kafka(),
                &[(changelog, partitions, kafka_tools::CHANGELOG_CONFIGS)],
            )?;
        }
        Ok(t)
    }

    /// Environment for a child: this run's broker, topics, group, state.
    fn child_env(&mut self, target: Target, topics: &Topics, state_dir: &Path) -> Vec<(String, String)> {
        self.runs += 1;
        let name = format!("{}-{}", target.name(), self.as_run.take().unwrap_or(self.runs));
        let changelog = topics.changelog.iter().filter(|_| target == Target::Accrual);
        let changelog = changelog.map(|t| ("ACCRUAL_KAFKA__TOPICS__CHANGELOG", t.clone()));
        [
            ("ACCRUAL_KAFKA__BROKERS", self.brokers.clone()),
            ("ACCRUAL_KAFKA__GROUP_ID", format!("{}-{name}", self.prefix)),
            ("ACCRUAL_KAFKA__TOPICS__INPUT", topics.input.clone()),
            ("ACCRUAL_KAFKA__TOPICS__ACCRUALS", topics.output.clone()),
            ("ACCRUAL_KAFKA__TOPICS__DEAD_LETTER", topics.dead_letter.clone()),
            ("ACCRUAL_ENGINE__INSTANCE_ID", name),
            ("ACCRUAL_ENGINE__STATE_DIR", state_dir.display().to_string()),
            ("ACCRUAL_ENGINE__CLOCK_INTERVAL_MS", "0".to_string()),
            ("ACCRUAL_HTTP__ENABLED", "false".to_string()),
            // Quiet unless asked (e.g. `accrual::engine=debug` logs each cycle's phases).
            ("ACCRUAL_LOG__LEVEL", std::env::var("ACCRUAL_BENCH_LOG").unwrap_or_else(|_| "warn".to_string())),
        ]
        .into_iter()
        .chain(changelog)
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    fn child_args(&self, target: Target, idle: Option<&str>, report: &Path) -> Vec<String> {
        let command = match target {
            Target::Baseline => "bench-baseline",
            Target::Accrual | Target::AccrualWithoutChangelog => "run",
        };
        let mut args = vec![command.to_string(), "--config".into(), self.opts.config.display().to_string()];
        if let Some(idle) = idle {
            args.extend(["--stop-when-idle".into(), idle.to_string()]);
        }
        args.extend(["--report".into(), report.display().to_string()]);
        args
    }

    /// Starts a target as a child process on `topics`, with its state in
    /// `state_dir` (default: a fresh directory of the work directory).
    fn start(
        &mut self,
        target: Target,
        topics: &Topics,
        state_dir: Option<&Path>,
        idle: Option<&str>,
    ) -> Result<Running, BenchError> {
        let run = self.runs + 1;
        let dir = self.opts.work_dir.clone();
        let state = state_dir.map_or_else(|| dir.join(format!("state-{run}")), Path::to_path_buf);
        let env = self.child_env(target, topics, &state);
        let report = dir.join(format!("report-{run}.json"));
        let log = dir.join(format!("{}-{run}.log", target.name()));
        let args = self.child_args(target, idle, &report);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = child::spawn(&args, &env, &log).map_err(io("starting a run"))?;
        Ok(Running { target, child, report, log })
    }

    /// Runs a target over `expected` events already in `topics.input`.
    fn throughput(
        &mut self,
        target: Target,
        topics: &Topics,
        partitions: i32,
        state_dir: Option<&Path>,
        expected: u64,
    ) -> Result<Throughput, BenchError> {
        let running = self.start(target, topics, state_dir, Some("2"))?;
        let (report, log) = (running.report.clone(), running.log.clone());
        let usage = running.finish()?;
        let text = std::fs::read(&report).map_err(io(report.display().to_string()))?;
        let r: RunReport = serde_json::from_slice(&text)
            .map_err(|e| BenchError::Run(format!("{}: {e}", report.display())))?;
        if r.events != expected {
            return Err(BenchError::Run(format!(
                "{} processed {} of {expected} events; see {}",
                target.name(),
                r.events,
                log.display()
            )));
        }
        let t = Throughput {
            target: target.name().to_string(),
            partitions,
            events: r.events,
            records: r.records,
            transactions: r.transactions,
            seconds: r.busy.as_secs_f64(),
            events_per_second: r.events as f64 / r.busy.as_secs_f64().max(1e-9),
            peak_rss_bytes: usage.peak_rss_bytes,
            cpu_seconds: usage.cpu_seconds,
            cpu_seconds_per_million_events: usage.cpu_seconds * 1e6 / r.events.max(1) as f64,
        };
        say!(
            "{:<20} {:>2} partitions: {} events in {:.2} s, {:.0} events/s, peak RSS {} MiB, {:.1} CPU s per million",
            t.target,
            partitions,
            t.events,
            t.seconds,
            t.events_per_second,
            t.peak_rss_bytes >> 20,
            t.cpu_seconds_per_million_events
        );
        Ok(t)
    }
}

/// A target running as a child process.
struct Running {
    target: Target,
    child: std::process::Child,
    report: PathBuf,
    log: PathBuf,
}

impl Running {
    /// Waits for the child; an unclean exit is an error naming its log.
    fn finish(self) -> Result<child::Usage, BenchError> {
        let usage = child::wait(self.child).map_err(io("waiting for a run"))?;
        if usage.exit_code != Some(0) {
            return Err(BenchError::Run(format!(
                "{} run failed ({:?}); see {}",
                self.target.name(),
                usage.exit_code,
                self.log.display()
            )));
        }
        Ok(usage)
    }
}
