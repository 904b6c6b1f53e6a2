//! Failover time (`accrual bench --changelog --failover`): two instances
//! share a group over topics of their own; once they have committed the
//! first half of the events, one is killed with SIGKILL and the second
//! half produced; the time from the kill until the group has committed
//! every event (the lost instance's partitions taken over, restored and
//! processed by the other) is the failover. Run with and without a
//! standby replica. `session.timeout.ms` is set to 6 s for these runs:
//! the group notices the loss only after it.

use super::{Bench, BenchError, Target, kafka_tools};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The session timeout of the failover runs.
pub const SESSION_TIMEOUT_MS: u64 = 6_000;

#[derive(Debug, Clone, Serialize)]
pub struct FailoverRun {
    pub standby_replicas: usize,
    pub session_timeout_ms: u64,
    /// SIGKILL to every event committed.
    pub seconds: f64,
}

impl Bench {
    pub(super) fn failover(&mut self, standby_replicas: usize) -> Result<FailoverRun, BenchError> {
        let o = self.opts.clone();
        let name = format!("failover-{standby_replicas}");
        let first = self.generate(&format!("{name}-a"), o.events / 2, o.accounts, o.seed + 10)?;
        let second = self.generate(&format!("{name}-b"), o.events / 2, o.accounts, o.seed + 11)?;
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
        let produced = kafka_tools::produce_file(&self.brokers, &topics.input, &first)?;
        self.wait_committed(&group, &topics.input, Duration::from_secs(300))?;
        // The standby copies catch up with what was committed.
        std::thread::sleep(Duration::from_secs(5));
        let killed = Instant::now();
        let _ = lost.child.kill();
        let _ = lost.child.wait();
        let more = kafka_tools::produce_file(&self.brokers, &topics.input, &second)?;
        self.wait_committed(&group, &topics.input, Duration::from_secs(300))?;
        let seconds = killed.elapsed().as_secs_f64();
        super::child::terminate(&survivor.child);
        survivor.finish()?;
        say!(
            "failover with {standby_replicas} standby replicas: {seconds:.1} s from SIGKILL to all {} events committed (session timeout {} s)",
            produced + more,
            SESSION_TIMEOUT_MS / 1000
        );
        Ok(FailoverRun { standby_replicas, session_timeout_ms: SESSION_TIMEOUT_MS, seconds })
    }

    /// Waits until `group` has committed every message of `topic`.
    fn wait_committed(&self, group: &str, topic: &str, timeout: Duration) -> Result<(), BenchError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let committed = kafka_tools::committed_offsets(&self.brokers, group, topic)?;
            let ends = kafka_tools::high_watermarks(&self.brokers, topic)?;
            if ends.iter().all(|(p, end)| committed.get(p).is_some_and(|(o, _)| o >= end)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Run(format!("group {group} did not commit all of {topic} within {timeout:?}")))
    }
}
