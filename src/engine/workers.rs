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
//! A partition stays with its worker while it is owned, so the worker's
//! cache of its accounts is the only one holding them and stays valid; a
//! partition revoked is forgotten, and if it comes back it may go to
//! another worker, which reads its accounts from RocksDB.

use super::outbox::OutboxSink;
use crate::pipeline::{BatchStats, Input, Processor};
use crate::rules::Rules;
use crate::store::{LedgerBatch, Progress, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One worker's processor, and its outbox sinks of the last cycle
/// (emptied and reused: see [`OutboxSink::recycle`]).
struct Worker {
    processor: Processor,
    spare_sinks: Vec<OutboxSink>,
    /// The size of the last cycle's batch, to size the next one.
    batch_bytes: usize,
}

/// What one partition's inputs became in a cycle (its outbox value is
/// staged in the cycle's batch; the sink keeps the entries to produce).
pub struct PartitionDone {
    pub partition: u32,
    pub sink: OutboxSink,
    pub stats: BatchStats,
    /// The partition's progress after its inputs.
    pub progress: Progress,
}

/// One partition's work in a cycle: its progress before, and its inputs.
pub type PartitionWork<'i, 'a> = (u32, Progress, &'i [Input<'a>]);

pub struct Workers {
    workers: Vec<Worker>,
    /// The worker each partition was last processed by.
    placed: BTreeMap<u32, usize>,
}

impl Worker {
    fn process<'s>(
        &mut self,
        store: &'s Store,
        work: &[PartitionWork<'_, '_>],
    ) -> Result<(LedgerBatch<'s>, Vec<PartitionDone>), StoreError> {
        let mut batch = store.batch_with_capacity(self.batch_bytes + self.batch_bytes / 4);
        let mut done = Vec::with_capacity(work.len());
        for &(partition, mut progress, inputs) in work {
            let mut sink = match self.spare_sinks.pop() {
                Some(spare) => spare.recycle(partition),
                None => OutboxSink::new(partition),
            };
            let started_at = progress.next_offset;
            let stats =
                self.processor.process(store, partition, &mut progress, inputs, &mut batch, &mut sink)?;
            if let Some(value) = sink.stored() {
                batch.put_outbox(partition, started_at, value);
            }
            done.push(PartitionDone { partition, sink, stats, progress });
        }
        if !work.is_empty() {
            self.batch_bytes = batch.size_in_bytes();
        }
        Ok((batch, done))
    }
}

impl Workers {
    /// `count` workers (at least one) sharing an account cache budget of
    /// `cache_bytes`.
    pub fn new(rules: &Arc<Rules>, count: usize, cache_bytes: usize) -> Workers {
        let count = count.max(1);
        let workers = (0..count)
            .map(|_| Worker {
                processor: Processor::new(rules.clone()).with_account_cache(cache_bytes / count),
                spare_sinks: Vec::new(),
                batch_bytes: 0,
            })
            .collect();
        Workers { workers, placed: BTreeMap::new() }
    }

    /// Processes each partition's inputs (sorted by partition) on its
    /// worker, the first worker on this thread; returns each worker's
    /// staged changes (to append into the cycle's batch) and each
    /// partition's outcome in partition order.
    pub fn process<'s>(
        &mut self,
        store: &'s Store,
        work: &[PartitionWork<'_, '_>],
    ) -> Result<(Vec<LedgerBatch<'s>>, Vec<PartitionDone>), StoreError> {
        let shares = self.share(work);
        let results: Vec<_> = std::thread::scope(|scope| {
            let mut each = self.workers.iter_mut().zip(&shares);
            let first = each.next();
            let spawned: Vec<_> = each
                .filter(|(_, share)| !share.is_empty())
                .map(|(worker, share)| scope.spawn(move || worker.process(store, share)))
                .collect();
            let mut results = Vec::with_capacity(shares.len());
            if let Some((worker, share)) = first {
                results.push(worker.process(store, share));
            }
            for handle in spawned {
                results.push(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            results
        });
        let mut batches = Vec::with_capacity(results.len());
        let mut done = Vec::with_capacity(work.len());
        for result in results {
            let (staged, partitions) = result?;
            batches.push(staged);
            done.extend(partitions);
        }
        done.sort_unstable_by_key(|d| d.partition);
        Ok((batches, done))
    }

    /// Splits the work between the workers. A partition stays with the
    /// worker it had; one new to them goes to the worker with the fewest,
    /// so the shares even out whatever the partitions' numbers.
    fn share<'i, 'a>(&mut self, work: &[PartitionWork<'i, 'a>]) -> Vec<Vec<PartitionWork<'i, 'a>>> {
        let n = self.workers.len();
        let mut shares = vec![Vec::new(); n];
        for &item in work {
            let worker = match self.placed.get(&item.0) {
                Some(&w) => w,
                None => {
                    let mut load = vec![0usize; n];
                    self.placed.values().for_each(|&w| load[w] += 1);
                    let w = (0..n).min_by_key(|&w| load[w]).unwrap_or(0);
                    self.placed.insert(item.0, w);
                    w
                }
            };
            shares[worker].push(item);
        }
        shares
    }

    /// Lets go of partitions no longer owned: their workers forget their
    /// states (if one comes back, it is read from RocksDB again).
    pub fn retain_owned(&mut self, owned: impl Fn(u32) -> bool) {
        let gone: Vec<(u32, usize)> =
            self.placed.iter().filter(|(p, _)| !owned(**p)).map(|(p, w)| (*p, *w)).collect();
        for (partition, worker) in gone {
            self.placed.remove(&partition);
            self.workers[worker].processor.forget_partition(partition);
        }
    }

    /// The cycle just processed is committed (see [`Processor::committed`]).
    pub fn committed(&mut self) {
        self.workers.iter_mut().for_each(|w| w.processor.committed());
    }

    /// Takes back a cycle's sinks for reuse, in turn among the workers.
    pub fn recycle(&mut self, sinks: impl IntoIterator<Item = OutboxSink>) {
        let n = self.workers.len();
        for (i, sink) in sinks.into_iter().enumerate() {
            self.workers[i % n].spare_sinks.push(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::{self, GenOptions};
    use crate::partitioner::Partitioner;
    use crate::state::AccountState;
    use crate::store::StoreOptions;

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

    /// Runs the events through `count` workers in cycles of 400 lines; in
    /// cycle `c` only the partitions `owned(c)` are owned, and the lines of
    /// the others wait for a cycle that owns them. Returns every outbox
    /// entry and the stored accounts of each partition.
    fn run(count: usize, owned: impl Fn(usize) -> Vec<u32>) -> Outcome {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() })
            .expect("store opens");
        let rules = Arc::new(
            crate::rules::load(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules.example.toml"),
            )
            .expect("example rules"),
        );
        let mut workers = Workers::new(&rules, count, 64 << 20);
        let events = events();
        let mut next_offset = [0u64; PARTITIONS as usize];
        let mut waiting: Vec<Vec<(u64, usize)>> = vec![Vec::new(); PARTITIONS as usize];
        let mut progress = [Progress::default(); PARTITIONS as usize];
        let mut entries = Vec::new();
        let mut lines = events.iter().enumerate().peekable();
        let mut cycle = 0;
        while lines.peek().is_some() || waiting.iter().any(|w| !w.is_empty()) {
            for (i, (p, _, _)) in lines.by_ref().take(400) {
                let offset = next_offset[*p as usize];
                next_offset[*p as usize] += 1;
                waiting[*p as usize].push((offset, i));
            }
            let mine = if lines.peek().is_some() { owned(cycle) } else { (0..PARTITIONS).collect() };
            workers.retain_owned(|p| mine.contains(&p));
            let inputs: Vec<(u32, Vec<Input<'_>>)> = mine
                .iter()
                .map(|&p| {
                    let taken = std::mem::take(&mut waiting[p as usize]);
                    let inputs = taken
                        .iter()
                        .map(|&(offset, i)| Input { offset, key: &events[i].1, payload: &events[i].2 })
                        .collect();
                    (p, inputs)
                })
                .filter(|(_, inputs): &(u32, Vec<Input<'_>>)| !inputs.is_empty())
                .collect();
            let work: Vec<PartitionWork<'_, '_>> =
                inputs.iter().map(|(p, inputs)| (*p, progress[*p as usize], inputs.as_slice())).collect();
            let (staged, done) = workers.process(&store, &work).expect("processed");
            let mut batch = store.batch();
            batch.append(staged);
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
    fn shares_are_sticky_and_even() {
        let rules = Arc::new(
            crate::rules::load(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules.example.toml"),
            )
            .expect("example rules"),
        );
        let mut workers = Workers::new(&rules, 2, 0);
        let work = |ps: &[u32]| -> Vec<PartitionWork<'static, 'static>> {
            ps.iter().map(|&p| (p, Progress::default(), &[][..])).collect()
        };
        let shares = |w: &mut Workers, ps: &[u32]| -> Vec<Vec<u32>> {
            w.share(&work(ps)).into_iter().map(|s| s.into_iter().map(|(p, _, _)| p).collect()).collect()
        };
        assert_eq!(
            shares(&mut workers, &[0, 2, 4, 6]),
            vec![vec![0, 4], vec![2, 6]],
            "even, whatever the numbers"
        );
        assert_eq!(
            shares(&mut workers, &[2, 6, 8]),
            vec![vec![8], vec![2, 6]],
            "kept, and the new one evens out"
        );
        workers.retain_owned(|p| p != 2 && p != 6);
        assert_eq!(shares(&mut workers, &[0, 4, 8, 6]), vec![vec![0, 4, 8], vec![6]]);
    }
}
