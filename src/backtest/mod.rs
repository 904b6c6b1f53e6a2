//! `accrual backtest`: two rule sets over the same events, side by side,
//! and what the candidate would pay differently from the baseline.
//!
//! Each rule set runs in its own [`Simulation`] (the engine's processor
//! and a state store of its own), fed the same batches: a file's lines, or
//! a range of a topic read without joining the engine's group. Both may
//! start from a copy of a production instance's state directory. So each
//! side's per-rule payout is exactly what `accrual simulate` over the same
//! input reports, and the report is their difference.

mod report;

pub use report::{Amounts, CapRow, Format, Report, Row};

use crate::kafka_tools::{self, Connection, RangeBound, ToolError};
use crate::pipeline::Input;
use crate::simulate::{self, ProgressMeter, Setup, SimulateError, Simulation, StartState};
use crate::time::Timestamp;
use std::path::PathBuf;

/// The events a backtest runs over.
#[derive(Debug, Clone)]
pub enum Source {
    /// An NDJSON file, as `accrual simulate` reads it.
    File(PathBuf),
    /// `[from, to)` of a topic's partitions (committed messages only).
    Topic { connection: Connection, topic: String, from: Option<RangeBound>, to: Option<RangeBound> },
}

#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub baseline: PathBuf,
    pub candidate: PathBuf,
    pub source: Source,
    /// Start both sides from a copy of this state directory (the original
    /// is not written to). From a topic, each partition's messages the
    /// state has already applied are skipped.
    pub from_state: Option<PathBuf>,
    /// See `SimulateOptions::now` (files only).
    pub now: Option<Timestamp>,
    pub batch_size: usize,
    /// Accounts listed per program, most affected first.
    pub top_accounts: usize,
    pub show_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("baseline {0}")]
    Baseline(#[source] SimulateError),
    #[error("candidate {0}")]
    Candidate(#[source] SimulateError),
    /// Reading the events (not a side's run).
    #[error(transparent)]
    Input(#[from] SimulateError),
    #[error(transparent)]
    Kafka(#[from] ToolError),
    #[error(
        "the state in {0} holds partitions {1:?}: a file is read as partition 0, so the accounts of the others \
         would start empty. Read the events from the topic (--topic), where each message is in its partition."
    )]
    FileOverPartitions(PathBuf, Vec<u32>),
}

/// The two sides, fed the same inputs.
struct Sides {
    baseline: Simulation,
    candidate: Simulation,
}

impl Sides {
    fn each(
        &mut self,
        mut f: impl FnMut(&mut Simulation) -> Result<(), SimulateError>,
    ) -> Result<(), BacktestError> {
        f(&mut self.baseline).map_err(BacktestError::Baseline)?;
        f(&mut self.candidate).map_err(BacktestError::Candidate)
    }
}

pub fn run(opts: &BacktestOptions) -> Result<Report, BacktestError> {
    let state = opts.from_state.as_deref().map_or(StartState::Fresh, StartState::CopyOf);
    let kafka_input = matches!(opts.source, Source::Topic { .. });
    let setup =
        |rules| Setup { rules, state, out: None, dlq: None, now: opts.now, per_account: true, kafka_input };
    let mut sides = Sides {
        baseline: Simulation::open(&setup(&opts.baseline)).map_err(BacktestError::Baseline)?,
        candidate: Simulation::open(&setup(&opts.candidate)).map_err(BacktestError::Candidate)?,
    };
    let mut blank_lines = 0;
    let source = match &opts.source {
        Source::File(path) => {
            let partitions = sides.baseline.partitions().map_err(BacktestError::Baseline)?;
            if let (Some(state), true) = (&opts.from_state, partitions.iter().any(|&p| p != 0)) {
                return Err(BacktestError::FileOverPartitions(state.clone(), partitions));
            }
            blank_lines = run_file(&mut sides, path, opts)?;
            format!("file {}", path.display())
        }
        Source::Topic { connection, topic, from, to } => {
            let skipped = run_topic(&mut sides, connection, topic, *from, *to, opts.batch_size)?;
            let mut text = format!("topic {topic}");
            if skipped > 0 {
                text.push_str(&format!(" ({skipped} messages already in the starting state skipped)"));
            }
            text
        }
    };
    let mut baseline = sides.baseline.finish().map_err(BacktestError::Baseline)?;
    let mut candidate = sides.candidate.finish().map_err(BacktestError::Candidate)?;
    baseline.blank_lines = blank_lines;
    candidate.blank_lines = blank_lines;
    Ok(Report::new(source, &baseline, &candidate, opts.top_accounts))
}

/// A file's lines, continuing from the state's offset in partition 0 (as
/// `simulate` does). Returns the blank lines skipped.
fn run_file(sides: &mut Sides, path: &std::path::Path, opts: &BacktestOptions) -> Result<u64, BacktestError> {
    let first_offset = sides.baseline.next_offset(0).map_err(BacktestError::Baseline)?;
    let mut meter = ProgressMeter::new(opts.show_progress);
    simulate::read_lines(path, first_offset, opts.batch_size, &mut meter, |inputs| {
        sides.each(|sim| sim.feed_lines(first_offset, inputs))
    })
}

/// A topic's range, partition by partition, each message with its own
/// partition, offset, key and timestamp, as the engine reads it. Returns
/// how many messages the starting state had already applied (skipped).
fn run_topic(
    sides: &mut Sides,
    connection: &Connection,
    topic: &str,
    from: Option<RangeBound>,
    to: Option<RangeBound>,
    batch_size: usize,
) -> Result<u64, BacktestError> {
    let mut skipped = 0;
    kafka_tools::read_range(connection, topic, from, to, batch_size, |partition, messages| {
        let partition = partition as u32;
        let next = sides.baseline.next_offset(partition).map_err(BacktestError::Baseline)?;
        let inputs: Vec<Input<'_>> = messages
            .iter()
            .filter(|m| m.offset as u64 >= next)
            .map(|m| Input {
                offset: m.offset as u64,
                key: &m.key,
                payload: &m.payload,
                timestamp: m.timestamp.map(Timestamp),
            })
            .collect();
        skipped += (messages.len() - inputs.len()) as u64;
        if inputs.is_empty() {
            return Ok(());
        }
        sides.each(|sim| sim.feed_messages(partition, &inputs))
    })?;
    Ok(skipped)
}
