//! Failover time (`accrual bench --changelog --failover`): two instances
//! share a group over topics of their own; once they have committed the
//! first half of the events, one is killed with SIGKILL and a trickle of
//! the second half produced (1%, at least 1,000 events); the time from the
//! kill until every partition has committed past its offset at the kill
//! (the lost instance's ones taken over by the other, restored, and their
//! first new events committed) is the failover. The rest is produced
//! after. Run with and without a standby replica. `session.timeout.ms` is
//! set to 6 s for these runs: the group notices the loss only after it.

use super::{Bench, BenchError, Target, kafka_tools};
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Events produced after the kill, at least: enough to reach every
/// partition.
const TRICKLE_MIN: usize = 1_000;

/// The session timeout of the failover runs.
pub const SESSION_TIMEOUT_MS: u64 = 6_000;

#[derive(Debug, Clone, Serialize)]
pub struct FailoverRun {
    pub standby_replicas: usize,
    pub session_timeout_ms: u64,
    /// SIGKILL to every partition committing again.
    pub seconds: f64,
    /// SIGKILL to the broker listing one member fewer in the group (the
    /// session timeout, in the broker's own rhythm of checking it).
    pub noticed_seconds: Option<f64>,
}

impl FailoverRun {
    /// `noticed_seconds` as the reports print it.
    pub fn noticed(&self) -> String {
        self.noticed_seconds.map_or("?".to_string(), |s| format!("{s:.1} s"))
    }
}

impl Bench {
    pub(super) fn failover(&mut self, standby_replicas: usize) -> Result<FailoverRun, BenchError> {
        let o = self.opts.clone();
        let name = format!("failover-{standby_replicas}");
        // One stream cut in two, so the second half follows the first in
        // event time (two streams over the same days would make most of
        // the second `too_late` once the first has moved the clocks on).
        let all = self.generate(&name, o.events, o.accounts, o.seed + 10)?;
        let trickle = (o.events as usize / 100).max(TRICKLE_MIN);
        let [first, next, rest] = cut(&all, trickle).map_err(super::io(all.display().to_string()))?;
        let topics = self.topics(&name, o.partitions)?;
        let group = format!("{}-{name}", self.prefix);
        self.extra_env = vec![
            ("ACCRUAL_KAFKA__GROUP_ID".into(), group.clone()),
            ("ACCRUAL_ENGINE__STANDBY_REPLICAS".into(), standby_replicas.to_string()),
            ("ACCRUAL_KAFKA__CONSUMER_PROPERTIES__SESSION_TIMEOUT_MS".into(), SESSION_TIMEOUT_MS.to_string()),
            ("ACCRUAL_KAFKA__CONSUMER_PROPERTIES__HEARTBEAT_INTERVAL_MS".into(), "500".into()),
        ];
        let started = (
            self.start(Target::Accrual, &topics, None, None),
            self.start(Target::Accrual, &topics, None, None),
        );
        self.extra_env.clear();
        let (mut lost, survivor) = (started.0?, started.1?);
        let produced = kafka_tools::produce_file(&self.kafka(), &topics.input, &first)?;
        let before = kafka_tools::high_watermarks(&self.kafka(), &topics.input)?;
        self.wait_committed(&group, &topics.input, &before, Duration::from_secs(300))?;
        // The standby copies catch up with what was committed.
        std::thread::sleep(Duration::from_secs(5));
        // Taken now, not from the input's end: the engines publish derived
        // events to the input as they go, so the group commits past it.
        let at_kill = kafka_tools::committed_offsets(&self.kafka(), &group, &topics.input)?;
        let killed = Instant::now();
        let _ = lost.child.kill();
        let _ = lost.child.wait();
        let noticed = self.watch_members(&group, 2, killed);
        // A trickle, not the whole second half: a survivor flooded with
        // its own partitions' backlog would take the lost ones up behind it.
        let mut more = kafka_tools::produce_file(&self.kafka(), &topics.input, &next)?;
        let past: BTreeMap<i32, i64> =
            before.keys().map(|p| (*p, at_kill.get(p).map_or(0, |(o, _)| *o) + 1)).collect();
        self.wait_committed(&group, &topics.input, &past, Duration::from_secs(300))?;
        let seconds = killed.elapsed().as_secs_f64();
        let run = FailoverRun {
            standby_replicas,
            session_timeout_ms: SESSION_TIMEOUT_MS,
            seconds,
            noticed_seconds: noticed.join().ok().flatten(),
        };
        more += kafka_tools::produce_file(&self.kafka(), &topics.input, &rest)?;
        let ends = kafka_tools::high_watermarks(&self.kafka(), &topics.input)?;
        self.wait_committed(&group, &topics.input, &ends, Duration::from_secs(300))?;
        super::child::terminate(&survivor.child);
        survivor.finish()?;
        say!(
            "failover with {standby_replicas} standby replicas: {seconds:.1} s from SIGKILL to every partition committing again, the loss noticed by the group after {} ({} events; session timeout {} s)",
            run.noticed(),
            produced + more,
            SESSION_TIMEOUT_MS / 1000
        );
        Ok(run)
    }

    /// Seconds from `since` until the broker lists fewer than `members`
    /// in `group`, watched on a thread of its own (`None`: not within a
    /// minute).
    fn watch_members(
        &self,
        group: &str,
        members: usize,
        since: Instant,
    ) -> std::thread::JoinHandle<Option<f64>> {
        let (kafka, group) = (self.kafka(), group.to_string());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = kafka.consumer().create().ok()?;
            while since.elapsed() < Duration::from_secs(60) {
                if kafka_tools::group_members(&consumer, &group).is_ok_and(|n| n < members) {
                    return Some(since.elapsed().as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    }

    /// Waits until `group` has committed each partition of `topic` up to
    /// at least `offsets`.
    fn wait_committed(
        &self,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
        timeout: Duration,
    ) -> Result<(), BenchError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let committed = kafka_tools::committed_offsets(&self.kafka(), group, topic)?;
            if offsets.iter().all(|(p, end)| committed.get(p).is_some_and(|(o, _)| o >= end)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Run(format!("group {group} did not commit all of {topic} within {timeout:?}")))
    }
}

/// Cuts an NDJSON file in three (`<file>.a.ndjson`, `.b`, `.c`): its first
/// half, then the next `trickle` lines (all of the rest if fewer), then the
/// rest.
fn cut(path: &Path, trickle: usize) -> std::io::Result<[PathBuf; 3]> {
    let lines = BufReader::new(std::fs::File::open(path)?).split(b'\n').count();
    let out = |part: &str| path.with_extension(format!("{part}.ndjson"));
    let parts = [out("a"), out("b"), out("c")];
    let mut writers = Vec::new();
    for part in &parts {
        writers.push(BufWriter::new(std::fs::File::create(part)?));
    }
    let half = lines / 2;
    for (i, line) in BufReader::new(std::fs::File::open(path)?).split(b'\n').enumerate() {
        let w = &mut writers[usize::from(i >= half) + usize::from(i >= half + trickle)];
        w.write_all(&line?)?;
        w.write_all(b"\n")?;
    }
    for mut w in writers {
        w.flush()?;
    }
    Ok(parts)
}
