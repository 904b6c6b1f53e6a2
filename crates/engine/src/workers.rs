//! The processing of a cycle, spread over worker threads by partition.
//!
//! Partitions never share state, so each worker runs its partitions
//! through a [`Processor`] of its own (its own account cache, decoder and
//! scratch space) and stages them in a RocksDB batch of its own; the
//! engine appends the batches into the cycle's one WriteBatch, so the
//! commit stays atomic. What a partition produces does not depend on the
//! worker or on how many there are: the same inputs in the same order,
//! from the same committed state.
//!
//! Each worker is a thread that lives as long as the engine, so a cycle
//! pays no thread start and each worker keeps one allocator heap. (Two
//! workers still peak higher than one over 2M events, 1.3-1.4 GiB against
//! ~0.9: two allocator heaps each holding its peak, two batches; see
//! docs/tuning.md.) The cycle's messages stay in one buffer, shared with
//! the workers while they run.
//!
//! A partition stays with its worker while it is owned, so the worker's
//! cache of its accounts is the only one holding them and stays valid; a
//! partition revoked is forgotten, and if it comes back it may go to
//! another worker, which reads its accounts from RocksDB.

use super::EngineError;
use super::outbox::OutboxSink;
use accrual_core::pipeline::{BatchStats, Input, Processor};
use accrual_core::rules::Timeline;
use accrual_core::time::Timestamp;
use accrual_store::owner::Owner;
use accrual_store::{Progress, Staged, Store};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// One input message of a cycle: where its key and payload are in the
/// cycle's buffer.
#[derive(Debug, Clone)]
pub struct Message {
    pub offset: u64,
    pub key: Range<usize>,
    pub payload: Range<usize>,
    /// The broker timestamp, when the message has one.
    pub timestamp: Option<Timestamp>,
}

/// One partition's work in a cycle: its progress before, and its messages.
pub struct PartitionWork {
    pub partition: u32,
    pub progress: Progress,
    pub messages: Vec<Message>,
}

/// What one partition's inputs became in a cycle (its outbox value is
/// staged in the cycle's batch; the sink keeps the entries to produce).
pub struct PartitionDone {
    pub partition: u32,
    pub sink: OutboxSink,
    pub stats: BatchStats,
    /// The partition's progress after its inputs.
    pub progress: Progress,
    /// A clock that left accounts due: its time and id.
    pub cut_clock: Option<(Timestamp, String)>,
}

/// A worker's share of a cycle.
struct Job {
    buffer: Arc<Vec<u8>>,
    work: Vec<PartitionWork>,
    /// The batches processed before this job are committed.
    committed: bool,
    /// Partitions whose cached states to drop first.
    forget: Vec<u32>,
    /// Sinks to reuse.
    sinks: Vec<OutboxSink>,
    /// Who processes the partitions, recorded with their progress.
    owner: Arc<Owner>,
    /// Rules reloaded since the worker's last job.
    timeline: Option<Arc<Timeline>>,
}

type Done = Result<(Staged, Vec<PartitionDone>), accrual_store::StoreError>;

/// The worker thread's side.
struct Worker {
    processor: Processor,
    store: Arc<Store>,
    spare_sinks: Vec<OutboxSink>,
    /// The size of the last cycle's batch, to size the next one.
    batch_bytes: usize,
    /// Publish every change of state to the changelog.
    changelog: bool,
    /// The processor's rules timeline as progress records name it.
    rules_record: String,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>, done: Sender<Done>) {
        while let Ok(job) = jobs.recv() {
            let result = self.process(job);
            if done.send(result).is_err() {
                return;
            }
        }
    }

    fn process(&mut self, job: Job) -> Done {
        if job.committed {
            self.processor.committed();
        }
        if let Some(timeline) = job.timeline {
            self.rules_record = timeline.record();
            self.processor.set_timeline(timeline);
        }
        for partition in job.forget {
            self.processor.forget_partition(partition);
        }
        self.spare_sinks.extend(job.sinks);
        let store = &*self.store;
        let buffer = &job.buffer[..];
        let mut batch = store
            .batch_with_capacity(self.batch_bytes + self.batch_bytes / 4)
            .owned_by(&job.owner, &self.rules_record);
        if self.changelog {
            batch = batch.capturing_changes();
        }
        let mut done = Vec::with_capacity(job.work.len());
        let mut inputs = Vec::new();
        for PartitionWork { partition, mut progress, messages } in job.work {
            inputs.clear();
            inputs.extend(messages.iter().map(|m| Input {
                offset: m.offset,
                key: &buffer[m.key.clone()],
                payload: &buffer[m.payload.clone()],
                timestamp: m.timestamp,
            }));
            let mut sink = match self.spare_sinks.pop() {
                Some(spare) => spare.recycle(partition),
                None => OutboxSink::new(partition),
            };
            let started_at = progress.next_offset;
            batch.starts_at(partition, started_at);
            let stats =
                self.processor.process(store, partition, &mut progress, &inputs, &mut batch, &mut sink)?;
            let changes = batch.take_changes()?;
            if !changes.is_empty() {
                // The batch's last input is the offset before its progress.
                let last = progress.next_offset.saturating_sub(1);
                sink.changelog(last, &changes)
                    .map_err(|e| store.corrupt("captured changes", partition, e))?;
            }
            if let Some(value) = sink.stored() {
                batch.put_outbox(partition, started_at, value);
            }
            let cut_clock = self.processor.take_cut_clock();
            done.push(PartitionDone { partition, sink, stats, progress, cut_clock });
        }
        self.batch_bytes = batch.size_in_bytes();
        Ok((batch.into_staged(), done))
    }
}

/// The engine's side of one worker thread.
struct Handle {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// Delivered with the next job.
    committed: bool,
    forget: Vec<u32>,
    sinks: Vec<OutboxSink>,
    timeline: Option<Arc<Timeline>>,
}

pub struct Workers {
    workers: Vec<Handle>,
    /// The worker each partition was last processed by.
    placed: BTreeMap<u32, usize>,
}

impl Workers {
    /// `count` worker threads (at least one) sharing an account cache
    /// budget of `cache_bytes`.
    pub fn new(
        timeline: &Arc<Timeline>,
        store: &Arc<Store>,
        count: usize,
        cache_bytes: usize,
        changelog: bool,
    ) -> Result<Workers, EngineError> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let (jobs, job_queue) = channel();
            let (done_queue, done) = channel();
            let worker = Worker {
                processor: Processor::with_timeline(timeline.clone())
                    .with_key_checks()
                    .ending_batches_after_clocks()
                    .with_account_cache(cache_bytes / count),
                store: store.clone(),
                spare_sinks: Vec::new(),
                batch_bytes: 0,
                changelog,
                rules_record: timeline.record(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker.run(job_queue, done_queue))
                .map_err(EngineError::WorkerStart)?;
            workers.push(Handle {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
                committed: false,
                forget: Vec::new(),
                sinks: Vec::new(),
                timeline: None,
            });
        }
        Ok(Workers { workers, placed: BTreeMap::new() })
    }

    /// Every worker applies `timeline` from its next job on (a reload,
    /// between two cycles).
    pub fn set_timeline(&mut self, timeline: &Arc<Timeline>) {
        for handle in &mut self.workers {
            handle.timeline = Some(timeline.clone());
        }
    }

    /// Processes each partition's messages (of `buffer`) on its worker, in
    /// parallel; returns each worker's staged changes (to append into the
    /// cycle's batch) and each partition's outcome in partition order.
    pub fn process(
        &mut self,
        buffer: Arc<Vec<u8>>,
        work: Vec<PartitionWork>,
        owner: &Arc<Owner>,
    ) -> Result<(Vec<Staged>, Vec<PartitionDone>), EngineError> {
        let n = work.len();
        let mut shares: Vec<Vec<PartitionWork>> = (0..self.workers.len()).map(|_| Vec::new()).collect();
        for item in work {
            let w = self.place(item.partition);
            shares[w].push(item);
        }
        let mut busy = Vec::new();
        for (w, share) in shares.into_iter().enumerate().filter(|(_, share)| !share.is_empty()) {
            let handle = &mut self.workers[w];
            let job = Job {
                buffer: buffer.clone(),
                work: share,
                committed: std::mem::take(&mut handle.committed),
                forget: std::mem::take(&mut handle.forget),
                sinks: std::mem::take(&mut handle.sinks),
                owner: owner.clone(),
                timeline: handle.timeline.take(),
            };
            handle
                .jobs
                .as_ref()
                .ok_or(EngineError::WorkerStopped)?
                .send(job)
                .map_err(|_| EngineError::WorkerStopped)?;
            busy.push(w);
        }
        let mut staged = Vec::with_capacity(busy.len());
        let mut done = Vec::with_capacity(n);
        let mut failed = None;
        for w in busy {
            match self.workers[w].done.recv().map_err(|_| EngineError::WorkerStopped)? {
                Ok((batch, partitions)) => {
                    staged.push(batch);
                    done.extend(partitions);
                }
                // Every worker's answer is awaited before returning.
                Err(e) => failed = Some(EngineError::Store(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        done.sort_unstable_by_key(|d| d.partition);
        Ok((staged, done))
    }

    /// The worker of a partition. A partition stays with the worker it
    /// had; one new to them goes to the worker with the fewest, so the
    /// shares even out whatever the partitions' numbers.
    fn place(&mut self, partition: u32) -> usize {
        if let Some(&w) = self.placed.get(&partition) {
            return w;
        }
        let mut load = vec![0usize; self.workers.len()];
        self.placed.values().for_each(|&w| load[w] += 1);
        let w = (0..self.workers.len()).min_by_key(|&w| load[w]).unwrap_or(0);
        self.placed.insert(partition, w);
        w
    }

    /// Lets go of partitions no longer owned: their workers forget their
    /// states (if one comes back, it is read from RocksDB again).
    pub fn retain_owned(&mut self, owned: impl Fn(u32) -> bool) {
        let gone: Vec<(u32, usize)> =
            self.placed.iter().filter(|(p, _)| !owned(**p)).map(|(p, w)| (*p, *w)).collect();
        for (partition, worker) in gone {
            self.placed.remove(&partition);
            self.workers[worker].forget.push(partition);
        }
    }

    /// The cycle just processed is committed (see [`Processor::committed`]).
    pub fn committed(&mut self) {
        self.workers.iter_mut().for_each(|w| w.committed = true);
    }

    /// Takes back a cycle's sinks for reuse, in turn among the workers.
    pub fn recycle(&mut self, sinks: impl IntoIterator<Item = OutboxSink>) {
        let n = self.workers.len();
        for (i, sink) in sinks.into_iter().enumerate() {
            self.workers[i % n].sinks.push(sink);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None; // the thread's loop ends with its queue
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_core::partitioner::Partitioner;
    use accrual_core::state::AccountState;
    use accrual_datagen::{self as datagen, GenOptions};
    use accrual_store::StoreOptions;

    const PARTITIONS: u32 = 4;

    /// Generated events as (partition, key, payload), keyed by account.
    fn events() -> Vec<(u32, Vec<u8>, Vec<u8>)> {
        let opts = GenOptions {
            events: 6_000,
            accounts: 150,
            seed: 5,
            days: 40,
            refund_percent: 5.0,
            duplicate_percent: 2.0,
            malformed_percent: 1.0,
            ..GenOptions::default()
        };
        let mut out = Vec::new();
        datagen::generate(&opts, &mut out).expect("generated in memory");
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| {
                let key = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["account_id"].as_str().map(|s| s.as_bytes().to_vec()))
                    .unwrap_or_default();
                (Partitioner::Consistent.partition(&key, PARTITIONS), key, line.to_vec())
            })
            .collect()
    }

    type Outcome = (Vec<(u32, u64, Vec<u8>)>, Vec<Vec<(String, AccountState)>>);

    fn example_rules() -> Arc<Timeline> {
        let path = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from)
            .join("../../config/rules.example.toml");
        Arc::new(Timeline::load(&path).expect("example rules"))
    }

    /// Runs the events through `count` workers in cycles of 400 lines; in
    /// cycle `c` only the partitions `owned(c)` are owned, and the lines of
    /// the others wait for a cycle that owns them. Returns every outbox
    /// entry and the stored accounts of each partition.
    fn run(count: usize, owned: impl Fn(usize) -> Vec<u32>) -> Outcome {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() })
                .expect("store opens"),
        );
        let mut workers =
            Workers::new(&example_rules(), &store, count, 64 << 20, false).expect("workers start");
        let events = events();
        // Every message's key and payload, back to back, as the engine polls them.
        let mut buffer = Vec::new();
        let mut ranges = Vec::new();
        for (_, key, payload) in &events {
            let k = buffer.len()..buffer.len() + key.len();
            buffer.extend_from_slice(key);
            let v = buffer.len()..buffer.len() + payload.len();
            buffer.extend_from_slice(payload);
            ranges.push((k, v));
        }
        let buffer = Arc::new(buffer);
        let mut next_offset = [0u64; PARTITIONS as usize];
        let mut waiting: Vec<Vec<Message>> = vec![Vec::new(); PARTITIONS as usize];
        let mut progress = [Progress::default(); PARTITIONS as usize];
        let mut entries = Vec::new();
        let mut lines = events.iter().zip(ranges).peekable();
        let mut cycle = 0;
        while lines.peek().is_some() || waiting.iter().any(|w| !w.is_empty()) {
            for ((p, _, _), (key, payload)) in lines.by_ref().take(400) {
                let offset = next_offset[*p as usize];
                next_offset[*p as usize] += 1;
                waiting[*p as usize].push(Message { offset, key, payload, timestamp: None });
            }
            let mine = if lines.peek().is_some() { owned(cycle) } else { (0..PARTITIONS).collect() };
            workers.retain_owned(|p| mine.contains(&p));
            let work: Vec<PartitionWork> = mine
                .iter()
                .map(|&p| PartitionWork {
                    partition: p,
                    progress: progress[p as usize],
                    messages: std::mem::take(&mut waiting[p as usize]),
                })
                .filter(|w| !w.messages.is_empty())
                .collect();
            let (staged, done) = workers.process(buffer.clone(), work, &Arc::default()).expect("processed");
            let batch = store.batch_from(staged);
            let mut sinks = Vec::new();
            for mut d in done {
                for (offset, entry) in d.sink.entries() {
                    entries.push((d.partition, offset, entry.to_vec()));
                }
                progress[d.partition as usize] = d.progress;
                sinks.push(d.sink);
            }
            store.commit(batch).expect("committed");
            workers.committed();
            workers.recycle(sinks);
            cycle += 1;
        }
        entries.sort();
        let accounts = (0..PARTITIONS).map(|p| store.accounts(p).expect("accounts read")).collect();
        (entries, accounts)
    }

    #[test]
    fn any_number_of_workers_gives_the_same_records_and_state() {
        let all = |_| (0..PARTITIONS).collect();
        let (entries, accounts) = run(1, all);
        assert!(entries.len() > 3_000, "a real workload: {} outbox entries", entries.len());
        assert!(accounts.iter().all(|a| !a.is_empty()), "every partition has accounts");
        for count in [2, 3, 8] {
            let (e, a) = run(count, all);
            assert!(e == entries, "{count} workers changed the records");
            assert!(a == accounts, "{count} workers changed the state");
        }
    }

    #[test]
    fn partitions_moving_between_workers_never_see_stale_cached_states() {
        // Partition 1 goes from worker 1 to worker 0 (cycle 2) and back
        // (cycle 4), being processed in between: a worker that kept its
        // cached states of it would start again from stale ones.
        let schedule = |cycle: usize| match cycle {
            1 | 3 => vec![2, 3],
            2 => vec![1, 2, 3],
            _ => (0..PARTITIONS).collect(),
        };
        let reference = run(1, schedule);
        assert!(run(2, schedule) == reference, "moving partitions between workers changed the outcome");
    }

    #[test]
    fn placement_is_sticky_and_even() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() })
                .expect("store opens"),
        );
        let mut workers = Workers::new(&example_rules(), &store, 2, 0, false).expect("workers start");
        let place = |w: &mut Workers, ps: &[u32]| -> Vec<usize> { ps.iter().map(|&p| w.place(p)).collect() };
        assert_eq!(place(&mut workers, &[0, 2, 4, 6]), vec![0, 1, 0, 1], "even, whatever the numbers");
        assert_eq!(place(&mut workers, &[2, 6, 8]), vec![1, 1, 0], "kept, and the new one evens out");
        workers.retain_owned(|p| p != 2 && p != 6);
        assert_eq!(workers.workers[1].forget, vec![2, 6], "the old worker forgets them");
        assert_eq!(place(&mut workers, &[0, 4, 8, 6]), vec![0, 0, 0, 1]);
    }
}
