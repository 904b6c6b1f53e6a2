//! The runs beyond the throughput rounds: latency under a steady offered
//! load, and with `--scaling` accrual over a state of many accounts.

use super::latency::{LatencyResult, Outgoing, Probe};
use super::results::StateSizeRun;
use super::{Bench, BenchError, Target, child, io, seed};
use crate::events::Decoder;
use crate::kafka_tools;
use crate::store::StoreOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench {
    /// Latency of a target at each offered load, on topics of its own.
    pub(super) fn latency(&mut self, target: Target) -> Result<Vec<LatencyResult>, BenchError> {
        let o = self.opts.clone();
        let total: u64 = o.latency_rates.iter().map(|r| r * o.latency_seconds).sum::<u64>() + 1_000;
        let events = outgoing(&self.generate("latency", total, o.accounts, o.seed + 2)?)?;
        let topics = self.topics(&format!("lat-{}", target.name()), o.partitions)?;
        let mut probe = Probe::start(&self.kafka(), &topics.input, &topics.output)?;
        let running = self.start(target, &topics, None, None)?;
        let log = running.log.clone();
        let mut feed = events.iter();
        let measured = (|| -> Result<Vec<LatencyResult>, BenchError> {
            probe.warm_up(&mut feed, Duration::from_secs(60)).map_err(BenchError::Run)?;
            let mut results = Vec::new();
            for &rate in &o.latency_rates {
                let r = probe.measure(
                    target.name(),
                    rate,
                    o.latency_seconds,
                    &mut feed,
                    Duration::from_secs(3),
                )?;
                say!(
                    "{:<8} at {:>6}/s offered ({:.0}/s sent): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} events matched)",
                    r.target,
                    r.offered_per_second,
                    r.sent_per_second,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.matched,
                    r.sent
                );
                results.push(r);
            }
            Ok(results)
        })();
        child::terminate(&running.child);
        let finished = running.finish();
        drop(probe);
        let results = measured.map_err(|e| BenchError::Run(format!("{e}; see {}", log.display())))?;
        finished?;
        Ok(results)
    }

    /// Accrual over `accounts` accounts already in state.
    pub(super) fn state_size(&mut self, accounts: u64) -> Result<StateSizeRun, BenchError> {
        let o = self.opts.clone();
        let run = self.runs + 1;
        let state = o.work_dir.join(format!("state-{run}"));
        let e = &self.config.engine;
        let options = StoreOptions {
            sync: false,
            block_cache_bytes: e.block_cache_mb << 20,
            write_buffer_bytes: e.write_buffer_mb << 20,
        };
        let rules = Arc::new(crate::rules::load(&e.rules)?);
        let started = Instant::now();
        let seeded = seed::seed(
            &state,
            &options,
            rules,
            accounts,
            o.partitions as u32,
            self.config.kafka.partitioner,
        )?;
        let seed_seconds = started.elapsed().as_secs_f64();
        let disk = seed::disk_bytes(&state);
        say!(
            "seeded {seeded} accounts in {seed_seconds:.1} s (written and compacted), {} MiB on disk",
            disk >> 20
        );
        let file = self.generate(&format!("accounts-{accounts}"), o.scaling_events, accounts, o.seed + 3)?;
        let topics = self.topics(&format!("s{accounts}"), o.partitions)?;
        let n = kafka_tools::produce_file(&self.kafka(), &topics.input, &file)?;
        let run = self.throughput(Target::Accrual, &topics, o.partitions, Some(&state), n)?;
        Ok(StateSizeRun {
            accounts,
            seed_seconds,
            disk_bytes_per_account: disk as f64 / seeded.max(1) as f64,
            run,
        })
    }
}

/// The events of a file, keyed by account as producers key them.
fn outgoing(path: &Path) -> Result<Vec<Outgoing>, BenchError> {
    let text = std::fs::read(path).map_err(io(path.display().to_string()))?;
    let mut decoder = Decoder::new();
    let now = crate::time::wall_clock();
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let event = decoder.decode(line).ok();
            Outgoing {
                key: event.as_ref().map(|e| e.account_id.as_bytes().to_vec()).unwrap_or_default(),
                timestamp: kafka_tools::stamp(event.map_or(now, |e| e.occurred_at), now),
                payload: line.to_vec(),
            }
        })
        .collect())
}
