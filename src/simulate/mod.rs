//! `accrual simulate`: the core and the ledger over an NDJSON file, for
//! backtests ("what would this rule change have paid last month?").
//!
//! Each line is an input offset (line N is offset base + N - 1), processed
//! by the same [`Processor`] as the Kafka engine, so the records are the
//! same bytes the engine would publish. Malformed lines are reported with
//! their line number and counted, never fatal. A [`Simulation`] is one
//! run of rules over inputs; `accrual backtest` feeds two of them the
//! same inputs (a file's lines or a topic's messages).

mod sink;
mod summary;

pub use summary::{CapHits, Payout, RejectedLine, Summary};

use crate::pipeline::{BatchStats, Input, Processor};
use crate::rules::{RulesError, Timeline};
use crate::store::{Progress, Store, StoreError, StoreOptions};
use crate::time::Timestamp;
use sink::{Place, SimSink};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory for the account states `simulate` keeps decoded between batches.
const SIMULATE_ACCOUNT_CACHE: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub rules: PathBuf,
    pub input: PathBuf,
    /// Where accrual records go; `-` is stdout; none writes no records.
    pub out: Option<PathBuf>,
    /// Rejected lines as NDJSON (line, reason, detail, raw).
    pub dlq: Option<PathBuf>,
    /// Keep (and continue from) state here; a temporary directory otherwise.
    pub state_dir: Option<PathBuf>,
    pub batch_size: usize,
    pub show_progress: bool,
    /// What stands in for the broker timestamps a file lacks: each line is
    /// taken as received at its event time, but never after this instant
    /// (default: the wall clock when the run starts), so an event dated
    /// more than `max_event_ahead_minutes` after it is refused
    /// (`future_event_time`) as the engine refuses one ahead of its
    /// message. Give it for runs whose output must not depend on the day.
    pub now: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state in {0} was written under rules that differ from these from {1} on, and it holds events up to \
         {2}: a change must take effect after the last event applied (a new version with a later \
         effective_from). Use a fresh --state-dir to backtest other rules, or `accrual backtest --from-state` \
         (which works on a copy)."
    )]
    RulesChanged(PathBuf, Timestamp, Timestamp),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SimulateError + '_ {
    move |source| SimulateError::Io { path: path.to_path_buf(), source }
}

/// The state a simulation starts from.
#[derive(Debug, Clone, Copy)]
pub enum StartState<'a> {
    /// Empty, in a temporary directory.
    Fresh,
    /// This directory, continued (and kept): it must have been written
    /// under the same rules, if at all.
    Continue(&'a Path),
    /// A copy of this directory (say, a copy of a production instance's),
    /// in a temporary directory: the original is left as it is, and the
    /// rules may differ from those that wrote it.
    CopyOf(&'a Path),
}

/// What a [`Simulation`] runs and where its outputs go.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub rules: &'a Path,
    pub state: StartState<'a>,
    /// Records as NDJSON (`-`: stdout).
    pub out: Option<&'a Path>,
    /// Rejected inputs as NDJSON.
    pub dlq: Option<&'a Path>,
    /// See [`SimulateOptions::now`]; for a topic, the messages' own
    /// timestamps are used as the engine uses them.
    pub now: Option<Timestamp>,
    /// Sum the payout per account (for a backtest's most affected accounts).
    pub per_account: bool,
    /// Inputs are Kafka messages: their keys must be their accounts, as
    /// the engine checks.
    pub kafka_input: bool,
}

/// One run of rules over inputs, through the engine's processor and a
/// state store: fed batches of one partition at a time, it commits each
/// and tallies what its records add up to.
pub struct Simulation {
    timeline: Arc<Timeline>,
    store: Store,
    /// A temporary state directory lives as long as the simulation.
    _temp: Option<tempfile::TempDir>,
    processor: Processor,
    progress: BTreeMap<u32, Progress>,
    sink: SimSink,
    out_path: PathBuf,
    dlq_path: PathBuf,
    version_recorded: bool,
    stats: BatchStats,
    started: Instant,
}

impl Simulation {
    pub fn open(setup: &Setup<'_>) -> Result<Simulation, SimulateError> {
        let started = Instant::now();
        let timeline = Arc::new(Timeline::load(setup.rules)?);
        let (store, temp) = open_state(setup.state, &timeline)?;
        let (out, dlq) = open_outputs(setup.out, setup.dlq)?;
        // Derived events (a referrer's bonus) are applied right after the
        // event that caused them.
        let mut processor = Processor::with_timeline(timeline.clone())
            .with_inline_derived()
            .with_account_cache(SIMULATE_ACCOUNT_CACHE)
            .with_received_by(setup.now.unwrap_or_else(crate::time::wall_clock));
        if setup.kafka_input {
            processor = processor.with_key_checks();
        }
        let mut sink = SimSink::new(timeline.clone(), out, dlq);
        sink.per_account = setup.per_account;
        Ok(Simulation {
            timeline,
            store,
            _temp: temp,
            processor,
            progress: BTreeMap::new(),
            sink,
            out_path: setup.out.unwrap_or(Path::new("-")).to_path_buf(),
            dlq_path: setup.dlq.unwrap_or(Path::new("dlq")).to_path_buf(),
            version_recorded: false,
            stats: BatchStats::default(),
            started,
        })
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The partitions the state holds progress for.
    pub fn partitions(&self) -> Result<Vec<u32>, SimulateError> {
        Ok(self.store.partitions()?)
    }

    /// The offset the state has reached in `partition`: the next input
    /// it expects (0 for a fresh state).
    pub fn next_offset(&mut self, partition: u32) -> Result<u64, SimulateError> {
        Ok(self.progress_of(partition)?.next_offset)
    }

    fn progress_of(&mut self, partition: u32) -> Result<&mut Progress, SimulateError> {
        if !self.progress.contains_key(&partition) {
            let stored = self.store.progress(partition)?.unwrap_or_default();
            self.progress.insert(partition, stored);
        }
        Ok(self.progress.entry(partition).or_default())
    }

    /// Lines of a file: line numbers in rejections count from `first_offset`.
    pub fn feed_lines(&mut self, first_offset: u64, inputs: &[Input<'_>]) -> Result<(), SimulateError> {
        self.sink.place = Place::File { first_offset };
        self.feed(0, inputs)
    }

    /// Messages of a topic's partition, in offset order.
    pub fn feed_messages(&mut self, partition: u32, inputs: &[Input<'_>]) -> Result<(), SimulateError> {
        self.sink.place = Place::Topic { partition };
        self.feed(partition, inputs)
    }

    /// One batch through the processor, committed; the first also records
    /// the rules version the state is now written under.
    fn feed(&mut self, partition: u32, inputs: &[Input<'_>]) -> Result<(), SimulateError> {
        let mut progress = *self.progress_of(partition)?;
        let mut batch = self.store.batch();
        if !self.version_recorded {
            batch.set_rules_version(&self.timeline.record());
            self.version_recorded = true;
        }
        self.stats += self.processor.process(
            &self.store,
            partition,
            &mut progress,
            inputs,
            &mut batch,
            &mut self.sink,
        )?;
        self.store.commit(batch)?;
        self.processor.committed();
        self.progress.insert(partition, progress);
        match self.sink.error.take() {
            Some(e) => Err(SimulateError::Io { path: self.out_path.clone(), source: e }),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Flushes the outputs and returns what the records added up to.
    pub fn finish(mut self) -> Result<Summary, SimulateError> {
        self.sink.finish();
        if let Some(mut w) = self.sink.out.take() {
            w.flush().map_err(io_err(&self.out_path))?;
        }
        if let Some(mut w) = self.sink.dlq.take() {
            w.flush().map_err(io_err(&self.dlq_path))?;
        }
        let mut summary = std::mem::take(&mut self.sink.summary);
        summary.stats = self.stats;
        summary.elapsed = self.started.elapsed();
        Ok(summary)
    }
}

/// The lines of an NDJSON file in batches: `(first offset, inputs)` for
/// each batch, through `feed`. Blank lines take an offset but are no
/// input; returns how many there were. An error of `feed` stops the read
/// and is returned.
pub fn read_lines<E: From<SimulateError>>(
    path: &Path,
    first_offset: u64,
    batch_size: usize,
    meter: &mut ProgressMeter,
    mut feed: impl FnMut(&[Input<'_>]) -> Result<(), E>,
) -> Result<u64, E> {
    let input = File::open(path).map_err(io_err(path))?;
    meter.total_bytes = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut arena: Vec<u8> = Vec::with_capacity(batch_size * 320);
    let mut spans: Vec<(u64, usize, usize)> = Vec::with_capacity(batch_size);
    let mut line = Vec::with_capacity(1024);
    let (mut offset, mut bytes_read, mut blank_lines, mut events) = (first_offset, 0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
        let end_of_input = n == 0;
        if !end_of_input {
            bytes_read += n as u64;
            let mut text: &[u8] = &line;
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                blank_lines += 1;
            } else {
                let start = arena.len();
                arena.extend_from_slice(text);
                spans.push((offset, start, arena.len()));
            }
            offset += 1;
        }
        if spans.len() >= batch_size || (end_of_input && !spans.is_empty()) {
            let inputs: Vec<Input<'_>> = spans
                .iter()
                .map(|&(offset, start, end)| Input {
                    offset,
                    key: &[],
                    payload: &arena[start..end],
                    timestamp: None,
                })
                .collect();
            feed(&inputs)?;
            events += inputs.len() as u64;
            arena.clear();
            spans.clear();
            meter.update(bytes_read, events);
        }
        if end_of_input {
            break;
        }
    }
    meter.finish();
    Ok(blank_lines)
}

/// Runs a simulation and returns its summary.
pub fn run(opts: &SimulateOptions) -> Result<Summary, SimulateError> {
    let state = match &opts.state_dir {
        Some(dir) => StartState::Continue(dir),
        None => StartState::Fresh,
    };
    let setup = Setup {
        rules: &opts.rules,
        state,
        out: opts.out.as_deref(),
        dlq: opts.dlq.as_deref(),
        now: opts.now,
        per_account: false,
        kafka_input: false,
    };
    let mut sim = Simulation::open(&setup)?;
    // One file is one partition, continuing from where the state is.
    let first_offset = sim.next_offset(0)?;
    let mut meter = ProgressMeter::new(opts.show_progress);
    let blank_lines = read_lines(&opts.input, first_offset, opts.batch_size, &mut meter, |inputs| {
        sim.feed_lines(first_offset, inputs)
    })?;
    let mut summary = sim.finish()?;
    summary.blank_lines = blank_lines;
    Ok(summary)
}

/// The state store and, for a temporary one, its directory (to live as
/// long as the store).
fn open_state(
    start: StartState<'_>,
    timeline: &Timeline,
) -> Result<(Store, Option<tempfile::TempDir>), SimulateError> {
    let options = StoreOptions { sync: false, ..StoreOptions::default() };
    let temp = || tempfile::tempdir().map_err(io_err(Path::new("temporary state directory")));
    match start {
        StartState::Fresh => {
            let temp = temp()?;
            Ok((Store::open(temp.path(), &options)?, Some(temp)))
        }
        StartState::CopyOf(original) => {
            let temp = temp()?;
            copy_state(original, temp.path())?;
            Ok((Store::open(temp.path(), &options)?, Some(temp)))
        }
        StartState::Continue(dir) => {
            let store = Store::open(dir, &options)?;
            if let Some(recorded) = store.rules_version()? {
                let applied = max_stream_time(&store)?;
                let differs = timeline.first_difference(&Timeline::parse_record(&recorded));
                if let Some(at) = differs.filter(|&at| applied.is_some_and(|applied| at <= applied)) {
                    return Err(SimulateError::RulesChanged(dir.to_path_buf(), at, applied.unwrap_or(at)));
                }
            }
            Ok((store, None))
        }
    }
}

/// The latest event time any partition of `store` has applied.
pub fn max_stream_time(store: &Store) -> Result<Option<Timestamp>, StoreError> {
    let mut latest = None;
    for partition in store.partitions()? {
        if let Some(progress) = store.progress(partition)? {
            latest = latest.max(Some(progress.stream_time));
        }
    }
    Ok(latest)
}

/// Copies a state directory: its table files (never changed once written)
/// as hard links where the file system allows, everything else as copies,
/// so the original is never written to.
fn copy_state(from: &Path, to: &Path) -> Result<(), SimulateError> {
    let entries = std::fs::read_dir(from).map_err(io_err(from))?;
    let mut any = false;
    for entry in entries {
        let entry = entry.map_err(io_err(from))?;
        let source = entry.path();
        if !entry.file_type().map_err(io_err(&source))?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        let is_table = source.extension().is_some_and(|e| e == "sst");
        if !(is_table && std::fs::hard_link(&source, &target).is_ok()) {
            std::fs::copy(&source, &target).map_err(io_err(&source))?;
        }
        any |= entry.file_name() == "CURRENT";
    }
    if !any {
        let missing = io::Error::new(io::ErrorKind::NotFound, "not a state directory (no CURRENT file)");
        return Err(SimulateError::Io { path: from.to_path_buf(), source: missing });
    }
    Ok(())
}

/// The records' output (`-`: stdout) and the dead letters' file, if asked for.
type Outputs = (Option<Box<dyn Write>>, Option<BufWriter<File>>);

fn open_outputs(out: Option<&Path>, dlq: Option<&Path>) -> Result<Outputs, SimulateError> {
    let out: Option<Box<dyn Write>> = match out {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(BufWriter::with_capacity(1 << 20, io::stdout()))),
        Some(p) => Some(Box::new(BufWriter::with_capacity(1 << 20, File::create(p).map_err(io_err(p))?))),
    };
    let dlq = match dlq {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(io_err(p))?)),
        None => None,
    };
    Ok((out, dlq))
}

/// Shows progress on stderr for long inputs: a live line on a terminal,
/// a line per quarter otherwise.
pub struct ProgressMeter {
    enabled: bool,
    total_bytes: u64,
    started: Instant,
    last: Instant,
    next_quarter: u64,
    live: bool,
}

impl ProgressMeter {
    pub fn new(enabled: bool) -> ProgressMeter {
        let now = Instant::now();
        let live = io::stderr().is_terminal();
        ProgressMeter { enabled, total_bytes: 0, started: now, last: now, next_quarter: 1, live }
    }

    fn update(&mut self, bytes: u64, events: u64) {
        // Short runs need no progress report.
        if !self.enabled || self.total_bytes == 0 || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        let percent = bytes * 100 / self.total_bytes;
        let rate = events as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if self.live {
            if self.last.elapsed() >= Duration::from_millis(250) {
                self.last = Instant::now();
                eprint!("\r  {percent:3}%  {events} events  {rate:.0} events/s   ");
            }
        } else if percent >= self.next_quarter * 25 && percent < 100 {
            self.next_quarter = percent / 25 + 1;
            eprintln!("  {percent}%  {events} events  {rate:.0} events/s");
        }
    }

    fn finish(&self) {
        if self.enabled && self.live && self.total_bytes > 0 {
            eprint!("\r{:60}\r", "");
        }
    }
}
