//! `accrual simulate`: the core and the ledger over an NDJSON file, for
//! backtests ("what would this rule change have paid last month?").
//!
//! Each line is an input offset (line N is offset base + N - 1), processed
//! by the same [`Processor`] as the Kafka engine, so the records are the
//! same bytes the engine would publish. Malformed lines are reported with
//! their line number and counted, never fatal.

use crate::accrue::{AccrualRecord, NoEffect, RecordKind, json_str};
use crate::events::Event;
use crate::pipeline::{BatchStats, Input, Processor, Sink};
use crate::rules::{self, Rules, RulesError};
use crate::store::{Store, StoreError, StoreOptions};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory for the account states `simulate` keeps decoded between batches.
const SIMULATE_ACCOUNT_CACHE: usize = 256 << 20;

/// Rejected lines listed in the summary; all of them go to `--dlq`.
const LISTED_REJECTS: usize = 20;

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
        "the state in {0} was written by rules version {1}; this run uses {2}. Use a fresh --state-dir to backtest other rules."
    )]
    RulesChanged(PathBuf, String, String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SimulateError + '_ {
    move |source| SimulateError::Io { path: path.to_path_buf(), source }
}

/// Records and amounts per record kind, for a rule or a program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payout {
    pub unit: String,
    pub by_kind: BTreeMap<RecordKind, (u64, Decimal)>,
}

impl Payout {
    fn add(&mut self, r: &AccrualRecord) {
        if self.unit.is_empty() {
            self.unit = r.unit().to_string();
        }
        let e = self.by_kind.entry(r.kind).or_insert((0, Decimal::ZERO));
        e.0 += 1;
        e.1 += r.amount;
    }

    pub fn amount(&self, kind: RecordKind) -> Decimal {
        self.by_kind.get(&kind).map_or(Decimal::ZERO, |e| e.1)
    }

    pub fn count(&self, kind: RecordKind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |e| e.0)
    }

    /// Earned, less what refunds took back (pending or available).
    pub fn net(&self) -> Decimal {
        self.amount(RecordKind::Earn) - self.amount(RecordKind::Clawback) - self.amount(RecordKind::Cancel)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: u64,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rules_name: String,
    pub rules_version: String,
    pub stats: BatchStats,
    /// Lines of nothing but spaces: no event, so no input.
    pub blank_lines: u64,
    pub no_effect: BTreeMap<&'static str, u64>,
    pub rejected: BTreeMap<&'static str, u64>,
    /// The first rejected lines, in input order.
    pub rejected_lines: Vec<RejectedLine>,
    /// Earnings and what refunds took back, keyed by (program, rule).
    pub by_rule: BTreeMap<(String, String), Payout>,
    /// Record counts per kind.
    pub by_kind: BTreeMap<RecordKind, u64>,
    pub by_program: BTreeMap<String, Payout>,
    pub elapsed: Duration,
}

struct SimSink<'a> {
    summary: &'a mut Summary,
    out: Option<Box<dyn Write>>,
    dlq: Option<BufWriter<File>>,
    base: u64,
    buf: Vec<u8>,
    error: Option<io::Error>,
    /// The summary's payouts while the run lasts, by program then rule:
    /// found by the records' names, a key built only for a new one.
    by_rule: BTreeMap<String, BTreeMap<String, Payout>>,
    by_program: BTreeMap<String, Payout>,
}

/// Runs `f` on the value under `key`, made empty when new: the key's
/// string is built only for a new value, not for every record.
fn with_entry<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => f(value),
        None => f(map.entry(key.to_string()).or_default()),
    }
}

impl SimSink<'_> {
    /// Moves the payouts into the summary.
    fn finish(&mut self) {
        for (program, rules) in std::mem::take(&mut self.by_rule) {
            for (rule, p) in rules {
                self.summary.by_rule.insert((program.clone(), rule), p);
            }
        }
        self.summary.by_program.append(&mut self.by_program);
    }

    fn line_of(&self, offset: u64) -> u64 {
        offset - self.base + 1
    }

    fn write(&mut self, to_dlq: bool) {
        let target: Option<&mut dyn Write> = if to_dlq {
            self.dlq.as_mut().map(|w| w as &mut dyn Write)
        } else {
            self.out.as_mut().map(|w| w.as_mut() as &mut dyn Write)
        };
        if let Some(w) = target {
            if let Err(e) = w.write_all(&self.buf) {
                self.error.get_or_insert(e);
            }
        }
        self.buf.clear();
    }
}

impl Sink for SimSink<'_> {
    fn accrued(&mut self, _offset: u64, _event: &Event<'_>, records: &[AccrualRecord]) {
        for r in records {
            // Per rule: what rules earned and what refunds took back.
            if matches!(r.kind, RecordKind::Earn | RecordKind::Clawback | RecordKind::Cancel) {
                with_entry(&mut self.by_rule, r.program(), |rules| {
                    with_entry(rules, r.rule_id(), |p| p.add(r))
                });
            }
            *self.summary.by_kind.entry(r.kind).or_default() += 1;
            if !r.program().is_empty() {
                with_entry(&mut self.by_program, r.program(), |p| p.add(r));
            }
            if self.out.is_some() {
                r.write_json(&mut self.buf);
            }
        }
        self.write(false);
    }

    fn no_effect(&mut self, _offset: u64, _event: &Event<'_>, why: NoEffect) {
        *self.summary.no_effect.entry(why.reason()).or_default() += 1;
    }

    fn duplicate(&mut self, _offset: u64, _event: &Event<'_>, _first_seen: Timestamp) {}

    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        let line = self.line_of(input.offset);
        *self.summary.rejected.entry(reason).or_default() += 1;
        if self.summary.rejected_lines.len() < LISTED_REJECTS {
            self.summary.rejected_lines.push(RejectedLine { line, reason, detail: detail.to_string() });
        }
        if self.dlq.is_some() {
            let mut s = format!("{{\"line\":{line},\"reason\":\"{reason}\",\"detail\":");
            json_str(&mut s, detail);
            s.push_str(",\"raw\":");
            json_str(&mut s, &String::from_utf8_lossy(input.payload));
            s.push_str("}\n");
            self.buf.extend_from_slice(s.as_bytes());
            self.write(true);
        }
    }
}

/// Runs a simulation and returns its summary.
pub fn run(opts: &SimulateOptions) -> Result<Summary, SimulateError> {
    let started = Instant::now();
    let rules: Arc<Rules> = Arc::new(rules::load(&opts.rules)?);
    // Kept until the end: a temporary state directory lives as long.
    let (store, _temp) = open_state(opts, &rules)?;
    let input = File::open(&opts.input).map_err(io_err(&opts.input))?;
    let input_len = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 20, input);

    let (out, dlq) = open_outputs(opts)?;

    let mut progress = store.progress(0)?.unwrap_or_default();
    let mut summary = Summary {
        rules_name: rules.name.clone(),
        rules_version: rules.version.to_string(),
        ..Summary::default()
    };
    // One file is one partition: derived events (a referrer's bonus) are
    // applied right after the event that caused them.
    let mut processor = Processor::new(rules.clone())
        .with_inline_derived()
        .with_account_cache(SIMULATE_ACCOUNT_CACHE)
        .with_received_by(opts.now.unwrap_or_else(crate::time::wall_clock));
    let mut sink = SimSink {
        summary: &mut summary,
        out,
        dlq,
        base: progress.next_offset,
        buf: Vec::new(),
        error: None,
        by_rule: BTreeMap::new(),
        by_program: BTreeMap::new(),
    };

    let mut arena: Vec<u8> = Vec::with_capacity(opts.batch_size * 320);
    let mut spans: Vec<(u64, usize, usize)> = Vec::with_capacity(opts.batch_size);
    let mut line = Vec::with_capacity(1024);
    let mut offset = progress.next_offset;
    let mut bytes_read: u64 = 0;
    let mut meter = ProgressMeter::new(opts.show_progress, input_len);
    let mut stats = BatchStats::default();
    let mut first_batch = true;
    let mut blank_lines = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_err(&opts.input))?;
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
        if spans.len() >= opts.batch_size || (end_of_input && !spans.is_empty()) {
            let inputs: Vec<Input<'_>> = spans
                .iter()
                .map(|&(offset, start, end)| Input {
                    offset,
                    key: &[],
                    payload: &arena[start..end],
                    timestamp: None,
                })
                .collect();
            let version = first_batch.then_some(&*rules.version);
            first_batch = false;
            stats += process_batch(&store, &mut processor, &mut progress, &inputs, version, &mut sink)?;
            if let Some(e) = sink.error.take() {
                return Err(SimulateError::Io { path: opts.out.clone().unwrap_or_default(), source: e });
            }
            arena.clear();
            spans.clear();
            meter.update(bytes_read, stats.inputs);
        }
        if end_of_input {
            break;
        }
    }
    meter.finish(stats.inputs);
    sink.finish();
    if let Some(mut w) = sink.out.take() {
        w.flush().map_err(io_err(opts.out.as_deref().unwrap_or(Path::new("-"))))?;
    }
    if let Some(mut w) = sink.dlq.take() {
        w.flush().map_err(io_err(opts.dlq.as_deref().unwrap_or(Path::new("dlq"))))?;
    }
    summary.stats = stats;
    summary.blank_lines = blank_lines;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The state store: `--state-dir`, which must have been written under
/// the same rules if it was, or a temporary directory (returned, to live
/// as long as the store).
fn open_state(
    opts: &SimulateOptions,
    rules: &Rules,
) -> Result<(Store, Option<tempfile::TempDir>), SimulateError> {
    let (state_dir, temp) = match &opts.state_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::tempdir().map_err(io_err(Path::new("temporary state directory")))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let store = Store::open(&state_dir, &StoreOptions { sync: false, ..StoreOptions::default() })?;
    if let Some(previous) = store.rules_version()? {
        if previous != *rules.version {
            return Err(SimulateError::RulesChanged(state_dir, previous, rules.version.to_string()));
        }
    }
    Ok((store, temp))
}

/// The records' output (`-`: stdout) and the dead letters' file, if asked for.
type Outputs = (Option<Box<dyn Write>>, Option<BufWriter<File>>);

fn open_outputs(opts: &SimulateOptions) -> Result<Outputs, SimulateError> {
    let out: Option<Box<dyn Write>> = match &opts.out {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(BufWriter::with_capacity(1 << 20, io::stdout()))),
        Some(p) => Some(Box::new(BufWriter::with_capacity(1 << 20, File::create(p).map_err(io_err(p))?))),
    };
    let dlq = match &opts.dlq {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(io_err(p))?)),
        None => None,
    };
    Ok((out, dlq))
}

/// One batch of lines through the processor, committed; the first also
/// records the rules `version` the state is written under.
fn process_batch(
    store: &Store,
    processor: &mut Processor,
    progress: &mut crate::store::Progress,
    inputs: &[Input<'_>],
    version: Option<&str>,
    sink: &mut SimSink<'_>,
) -> Result<BatchStats, SimulateError> {
    let mut batch = store.batch();
    if let Some(version) = version {
        batch.set_rules_version(version);
    }
    let stats = processor.process(store, 0, progress, inputs, &mut batch, sink)?;
    store.commit(batch)?;
    processor.committed();
    Ok(stats)
}

/// Shows progress on stderr for long inputs: a live line on a terminal,
/// a line per quarter otherwise.
struct ProgressMeter {
    enabled: bool,
    total_bytes: u64,
    started: Instant,
    last: Instant,
    next_quarter: u64,
    live: bool,
}

impl ProgressMeter {
    fn new(enabled: bool, total_bytes: u64) -> ProgressMeter {
        let now = Instant::now();
        let live = io::stderr().is_terminal();
        ProgressMeter { enabled, total_bytes, started: now, last: now, next_quarter: 1, live }
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

    fn finish(&self, _events: u64) {
        if self.enabled && self.live && self.total_bytes > 0 {
            eprint!("\r{:60}\r", "");
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "rules: {} (version {})", self.rules_name, self.rules_version)?;
        writeln!(
            f,
            "events: {} read, {} accrued, {} without effect, {} duplicates, {} rejected",
            s.inputs, s.accrued, s.no_effect, s.duplicates, s.dead_letters
        )?;
        if self.blank_lines > 0 {
            writeln!(f, "  blank lines skipped (no event): {}", self.blank_lines)?;
        }
        if s.clocks_cut > 0 {
            writeln!(
                f,
                "  clocks that left accounts due (max_accounts_per_clock): {} ({} accounts brought to a clock's \
                 time in all; the rest wait for a later clock or their own next event)",
                s.clocks_cut, s.clock_accounts
            )?;
        }
        if !self.no_effect.is_empty() {
            let parts: Vec<String> = self.no_effect.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(f, "  without effect: {}", parts.join(", "))?;
        }
        let kinds: Vec<String> = self.by_kind.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        writeln!(f, "accrual records: {} ({})", s.records, kinds.join(", "))?;
        writeln!(f)?;
        writeln!(f, "payout by rule:")?;
        writeln!(
            f,
            "  {:<22} {:<10} {:>16} {:>14} {:>16} {:>9} {:>9}",
            "rule", "program", "earned", "taken back", "net", "earns", "takebacks"
        )?;
        for ((program, rule), p) in &self.by_rule {
            let back = p.amount(RecordKind::Clawback) + p.amount(RecordKind::Cancel);
            let backs = p.count(RecordKind::Clawback) + p.count(RecordKind::Cancel);
            writeln!(
                f,
                "  {:<22} {:<10} {:>16} {:>14} {:>16} {:>9} {:>9}",
                rule,
                program,
                p.amount(RecordKind::Earn),
                back,
                p.net(),
                p.count(RecordKind::Earn),
                backs
            )?;
        }
        writeln!(f)?;
        writeln!(f, "payout by program and kind:")?;
        for (program, p) in &self.by_program {
            for (kind, (n, amount)) in &p.by_kind {
                writeln!(
                    f,
                    "  {:<10} {:<16} {:>9} records {:>16} {}",
                    program,
                    kind.name(),
                    n,
                    amount,
                    p.unit
                )?;
            }
        }
        if s.dead_letters > 0 {
            writeln!(f)?;
            let parts: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(f, "rejected lines: {} ({})", s.dead_letters, parts.join(", "))?;
            for r in &self.rejected_lines {
                writeln!(f, "  line {}: {}: {}", r.line, r.reason, r.detail)?;
            }
            if s.dead_letters as usize > self.rejected_lines.len() {
                writeln!(f, "  ... {} more", s.dead_letters as usize - self.rejected_lines.len())?;
            }
        }
        let secs = self.elapsed.as_secs_f64();
        writeln!(f)?;
        write!(f, "time: {:.2} s, {:.0} events/s", secs, s.inputs as f64 / secs.max(1e-9))
    }
}
