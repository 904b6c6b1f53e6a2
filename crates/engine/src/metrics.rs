//! Every metric accrual exports, in one place: names (`accrual_` prefix,
//! base units, `_total` counters), help texts and label sets (partition,
//! program, rule, kind, reason: all low-cardinality). Updated once per batch
//! or commit cycle, never per record. Documented in `docs/operations.md`.
//!
//! The `metrics` facade has integer counters only; amounts of money and
//! points are fractional, so they are kept here as float counters and
//! rendered after the exporter's output, still Prometheus counters: one
//! metric for money (`accrual_cashback_amount_total`, in each currency's
//! major unit, the currency a label since the rules name it) and one for
//! points (`accrual_points_amount_total`, in each program's own unit), so
//! no metric name mixes money with points.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

pub const EVENTS_CONSUMED: &str = "accrual_events_consumed_total";
pub const RECORDS_EMITTED: &str = "accrual_records_emitted_total";
pub const CASHBACK_AMOUNT: &str = "accrual_cashback_amount_total";
pub const POINTS_AMOUNT: &str = "accrual_points_amount_total";
pub const DEAD_LETTERS: &str = "accrual_dead_letters_total";
pub const DUPLICATES: &str = "accrual_duplicates_total";
pub const BATCH_EVENTS: &str = "accrual_batch_events";
pub const BATCH_DURATION: &str = "accrual_batch_processing_duration_seconds";
pub const ROCKSDB_COMMIT: &str = "accrual_rocksdb_commit_duration_seconds";
pub const KAFKA_COMMIT: &str = "accrual_kafka_transaction_commit_duration_seconds";
pub const TRANSACTIONS: &str = "accrual_kafka_transactions_total";
pub const ABORTS: &str = "accrual_kafka_transaction_aborts_total";
pub const LATENCY: &str = "accrual_end_to_end_latency_seconds";
pub const LAG: &str = "accrual_consumer_lag_messages";
pub const ASSIGNED: &str = "accrual_assigned_partitions";
pub const REFUSED: &str = "accrual_refused_partitions";
pub const REBALANCES: &str = "accrual_rebalances_total";
pub const RECOVERIES: &str = "accrual_recoveries_total";
pub const CLOCK_ACCOUNTS: &str = "accrual_clock_accounts_total";
pub const CLOCKS_CUT: &str = "accrual_clocks_cut_total";
pub const INPUT_GAP: &str = "accrual_input_gap_messages_total";
pub const RESTORES: &str = "accrual_restores_total";
pub const RESTORED_RECORDS: &str = "accrual_restored_records_total";
pub const RESTORED_BYTES: &str = "accrual_restored_bytes_total";
pub const RESTORE_SECONDS: &str = "accrual_restore_duration_seconds";
pub const RESTORING: &str = "accrual_restoring_partitions";
pub const RESTORE_LEFT: &str = "accrual_restore_records_left";
pub const STANDBY_PARTITIONS: &str = "accrual_standby_partitions";
pub const STANDBY_LAG: &str = "accrual_standby_lag_records";
pub const IDLE_STATE: &str = "accrual_idle_state_partitions";
pub const STATE_DROPPED: &str = "accrual_state_dropped_partitions_total";
pub const LAST_COMMIT: &str = "accrual_last_commit_timestamp_seconds";
pub const READY: &str = "accrual_ready";
pub const RULES_INFO: &str = "accrual_rules_info";
pub const RULES_RELOADS: &str = "accrual_rules_reloads_total";
pub const BUILD_INFO: &str = "accrual_build_info";

/// The process's metrics: the exporter, and the float amount counters.
pub struct Metrics {
    handle: PrometheusHandle,
    /// (program, kind, unit) -> total, exact: rendered without float drift.
    amounts: Mutex<BTreeMap<(String, String, String), Decimal>>,
    /// The programs that pay money (see [`Metrics::set_programs`]).
    cashback: RwLock<BTreeSet<String>>,
}

static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const LATENCY_BUCKETS: [f64; 14] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
const BATCH_BUCKETS: [f64; 10] = [1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0];

/// Installs the exporter as the process's recorder (once) and describes
/// every metric. Later calls return the same instance.
pub fn install() -> Result<Arc<Metrics>, String> {
    if let Some(m) = GLOBAL.get() {
        return Ok(m.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &DURATION_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(LATENCY.into()), &LATENCY_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_EVENTS.into()), &BATCH_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    let metrics = Arc::new(Metrics { handle, amounts: Mutex::default(), cashback: RwLock::default() });
    Ok(GLOBAL.get_or_init(|| metrics).clone())
}

fn describe() {
    describe_counter!(EVENTS_CONSUMED, Unit::Count, "Input messages processed, by partition");
    describe_counter!(RECORDS_EMITTED, Unit::Count, "Accrual records emitted, by program, rule and kind");
    describe_counter!(DEAD_LETTERS, Unit::Count, "Input messages sent to the dead-letter topic, by reason");
    describe_counter!(DUPLICATES, Unit::Count, "Input events skipped as duplicates (event id seen)");
    describe_histogram!(BATCH_EVENTS, Unit::Count, "Input messages per partition batch");
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Time to run a commit cycle's batches through the core"
    );
    describe_histogram!(
        ROCKSDB_COMMIT,
        Unit::Seconds,
        "Time to commit (and sync) a cycle's RocksDB WriteBatch"
    );
    describe_histogram!(
        KAFKA_COMMIT,
        Unit::Seconds,
        "Time to publish and commit a cycle's Kafka transaction"
    );
    describe_counter!(TRANSACTIONS, Unit::Count, "Kafka transactions committed");
    describe_counter!(ABORTS, Unit::Count, "Kafka transactions that failed, by kind (abortable, fatal)");
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "Oldest message of a partition batch: Kafka timestamp to commit"
    );
    describe_gauge!(
        LAG,
        Unit::Count,
        "Messages in the partition not yet processed (last stable offset minus next offset)"
    );
    describe_gauge!(ASSIGNED, Unit::Count, "Input partitions assigned to this instance and processed");
    describe_gauge!(REFUSED, Unit::Count, "Input partitions assigned but refused (state missing or behind)");
    describe_counter!(REBALANCES, Unit::Count, "Partition assignments and revocations");
    describe_counter!(
        INPUT_GAP,
        Unit::Count,
        "Input messages removed by retention before they were processed (never accrued)"
    );
    describe_counter!(RESTORES, Unit::Count, "Partitions whose state was restored from the changelog");
    describe_counter!(RESTORED_RECORDS, Unit::Count, "Changelog records applied by restores");
    describe_counter!(RESTORED_BYTES, Unit::Bytes, "Keys and values applied by restores");
    describe_histogram!(
        RESTORE_SECONDS,
        Unit::Seconds,
        "Time each restore of a partition from the changelog took"
    );
    describe_counter!(
        CLOCK_ACCOUNTS,
        Unit::Count,
        "Idle accounts brought to a clock event's time (holds released, points expired, tier periods closed)"
    );
    describe_counter!(
        CLOCKS_CUT,
        Unit::Count,
        "Clock events that found more due accounts than max_accounts_per_clock; a follow-up clock goes on"
    );
    describe_counter!(
        RECOVERIES,
        Unit::Count,
        "Outbox republishes (after a crash, an abort, or a partition's return)"
    );
    describe_gauge!(
        STANDBY_PARTITIONS,
        Unit::Count,
        "Partitions this instance keeps warm copies of (standbys)"
    );
    describe_gauge!(STANDBY_LAG, Unit::Count, "Changelog records the standby copies have not applied yet");
    describe_gauge!(
        IDLE_STATE,
        Unit::Count,
        "Partitions whose state is on this instance's disk though it neither owns nor copies them (dropped after engine.state_cleanup_delay_ms)"
    );
    describe_counter!(
        STATE_DROPPED,
        Unit::Count,
        "Partitions whose state this instance dropped, owned elsewhere and held by the changelog"
    );
    describe_gauge!(LAST_COMMIT, Unit::Seconds, "Unix time of the last committed Kafka transaction");
    describe_gauge!(READY, Unit::Count, "1 when every assigned partition is recovered and consuming");
    describe_gauge!(
        RULES_INFO,
        Unit::Count,
        "1 for each rules version in use (labels name, version and effective_from), 0 once replaced"
    );
    describe_counter!(
        RULES_RELOADS,
        Unit::Count,
        "Rules reloads by result: applied, unchanged, refused (would change what was already applied), invalid"
    );
    describe_gauge!(BUILD_INFO, Unit::Count, "The accrual build (label version)");
}

impl Metrics {
    /// Which programs pay money and which points (from the rules).
    pub fn set_programs(&self, timeline: &accrual_core::rules::Timeline) {
        let programs = timeline.versions().iter().flat_map(|v| v.rules.programs.iter());
        let cashback = programs.filter(|p| p.kind == accrual_core::rules::ProgramKind::Cashback);
        *self.cashback.write().unwrap_or_else(|p| p.into_inner()) =
            cashback.map(|p| p.name.to_string()).collect();
    }

    /// Prometheus text: the exporter's metrics, then the amounts.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        let amounts = self.amounts.lock().unwrap_or_else(|p| p.into_inner());
        let cashback = self.cashback.read().unwrap_or_else(|p| p.into_inner());
        let (money, points): (Vec<_>, Vec<_>) = amounts.iter().partition(|((p, ..), _)| cashback.contains(p));
        let _ = writeln!(
            text,
            "# HELP {CASHBACK_AMOUNT} Money moved by accrual records of cashback programs, in the currency's major unit, by program, kind and currency\n# TYPE {CASHBACK_AMOUNT} counter"
        );
        for ((program, kind, currency), value) in money {
            let labels = format!("program=\"{program}\",kind=\"{kind}\",currency=\"{currency}\"");
            let _ = writeln!(text, "{CASHBACK_AMOUNT}{{{labels}}} {value}");
        }
        let _ = writeln!(
            text,
            "# HELP {POINTS_AMOUNT} Points moved by accrual records of points programs, in each program's own unit, by program and kind\n# TYPE {POINTS_AMOUNT} counter"
        );
        for ((program, kind, _), value) in points {
            let _ = writeln!(text, "{POINTS_AMOUNT}{{program=\"{program}\",kind=\"{kind}\"}} {value}");
        }
        text
    }

    /// Adds amounts (per program, kind and unit) from one batch.
    pub fn add_amounts<'a>(&self, amounts: impl IntoIterator<Item = (&'a str, &'a str, &'a str, Decimal)>) {
        let mut map = self.amounts.lock().unwrap_or_else(|p| p.into_inner());
        for (program, kind, unit, amount) in amounts {
            *map.entry((program.to_string(), kind.to_string(), unit.to_string())).or_default() += amount;
        }
    }
}

/// (program, rule, kind, unit) of accrual records.
pub type RecordKey = (Arc<str>, Arc<str>, &'static str, Arc<str>);

/// Records and amounts per [`RecordKey`], tallied per batch. A batch's
/// records have a few keys: found by a scan comparing the names (a few
/// bytes each), a key built only for a new one.
#[derive(Debug, Default)]
pub struct RecordTally(Vec<(RecordKey, u64, Decimal)>);

impl RecordTally {
    pub fn add(&mut self, r: &accrual_core::accrue::AccrualRecord) {
        let kind = r.kind.name();
        let (rule_id, program, unit) = (r.rule_id(), r.program(), r.unit());
        let found = self.0.iter_mut().find(|((p, rule, k, u), ..)| {
            **rule == *rule_id && *k == kind && **p == *program && **u == *unit
        });
        match found {
            Some((_, n, amount)) => {
                *n += 1;
                *amount += r.amount;
            }
            None => {
                self.0.push(((Arc::from(program), Arc::from(rule_id), kind, Arc::from(unit)), 1, r.amount))
            }
        }
    }

    pub fn merge(&mut self, other: RecordTally) {
        for (key, n, amount) in other.0 {
            match self.0.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, total, sum)) => {
                    *total += n;
                    *sum += amount;
                }
                None => self.0.push((key, n, amount)),
            }
        }
    }

    /// Each key's records and amount.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordKey, u64, Decimal)> {
        self.0.iter().map(|(key, n, amount)| (key, *n, *amount))
    }
}

/// What one commit cycle did, reported at once.
#[derive(Debug, Default)]
pub struct CycleReport {
    /// partition -> (messages, oldest Kafka timestamp in ms)
    pub partitions: BTreeMap<u32, (u64, Option<i64>)>,
    pub records: RecordTally,
    pub dead_letters: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub clock_accounts: u64,
    pub clocks_cut: u64,
    /// Collecting the cycle's input from the consumer.
    pub polling: Duration,
    pub processing: Duration,
    /// Waiting for the previous cycle's Kafka commit to end.
    pub waiting: Duration,
    /// Handing the records to the producer.
    pub producing: Duration,
    pub rocksdb_commit: Duration,
}

/// Reports a cycle whose state is committed.
pub fn cycle(metrics: Option<&Metrics>, report: &CycleReport) {
    for (partition, (messages, _)) in &report.partitions {
        counter!(EVENTS_CONSUMED, "partition" => partition.to_string()).increment(*messages);
        histogram!(BATCH_EVENTS).record(*messages as f64);
    }
    for ((program, rule, kind, _), n, _) in report.records.iter() {
        counter!(RECORDS_EMITTED, "program" => program.to_string(), "rule" => rule.to_string(), "kind" => *kind)
            .increment(n);
    }
    if let Some(m) = metrics {
        m.add_amounts(
            report
                .records
                .iter()
                .filter(|((p, ..), ..)| !p.is_empty())
                .map(|((p, _, k, u), _, a)| (&**p, *k, &**u, a)),
        );
    }
    for (reason, n) in &report.dead_letters {
        counter!(DEAD_LETTERS, "reason" => *reason).increment(*n);
    }
    counter!(DUPLICATES).increment(report.duplicates);
    counter!(CLOCK_ACCOUNTS).increment(report.clock_accounts);
    counter!(CLOCKS_CUT).increment(report.clocks_cut);
    histogram!(BATCH_DURATION).record(report.processing.as_secs_f64());
    histogram!(ROCKSDB_COMMIT).record(report.rocksdb_commit.as_secs_f64());
}

/// A committed Kafka transaction: its duration, and each partition's
/// oldest message latency (Kafka timestamp to now).
pub fn committed(duration: Duration, report: &CycleReport, now_ms: i64) {
    counter!(TRANSACTIONS).increment(1);
    histogram!(KAFKA_COMMIT).record(duration.as_secs_f64());
    gauge!(LAST_COMMIT).set(now_ms as f64 / 1000.0);
    for (_, oldest) in report.partitions.values() {
        if let Some(ts) = oldest {
            histogram!(LATENCY).record(((now_ms - ts).max(0)) as f64 / 1000.0);
        }
    }
}

pub fn aborted(kind: &'static str) {
    counter!(ABORTS, "kind" => kind).increment(1);
}

pub fn recovery() {
    counter!(RECOVERIES).increment(1);
}

/// A partition restored from the changelog (`records`: those not yet
/// counted by [`restoring`]).
pub fn restored(records: u64, bytes: u64, took: std::time::Duration) {
    counter!(RESTORES).increment(1);
    counter!(RESTORED_RECORDS).increment(records);
    counter!(RESTORED_BYTES).increment(bytes);
    histogram!(RESTORE_SECONDS).record(took.as_secs_f64());
}

/// Restores running: records applied since the last call, partitions
/// restoring, and changelog records they have left to read.
pub fn restoring(applied: u64, partitions: usize, left: u64) {
    counter!(RESTORED_RECORDS).increment(applied);
    gauge!(RESTORING).set(partitions as f64);
    gauge!(RESTORE_LEFT).set(left as f64);
}

/// Partitions kept warm here, and the changelog records they are behind.
pub fn standby(partitions: usize, lag: i64) {
    gauge!(STANDBY_PARTITIONS).set(partitions as f64);
    gauge!(STANDBY_LAG).set(lag.max(0) as f64);
}

/// Partitions whose state is here, neither owned nor copied.
pub fn idle_state_partitions(partitions: usize) {
    gauge!(IDLE_STATE).set(partitions as f64);
}

pub fn state_dropped() {
    counter!(STATE_DROPPED).increment(1);
}

pub fn input_gap(messages: u64) {
    counter!(INPUT_GAP).increment(messages);
}

pub fn rebalances(n: u64) {
    counter!(REBALANCES).increment(n);
}

/// The assignment as it is now.
pub fn assignment(assigned: usize, refused: usize, ready: bool, lag: &BTreeMap<u32, i64>) {
    gauge!(ASSIGNED).set(assigned as f64);
    gauge!(REFUSED).set(refused as f64);
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    for (partition, lag) in lag {
        gauge!(LAG, "partition" => partition.to_string()).set(*lag as f64);
    }
}

/// The rules and build in use; also starts every counter an alert or panel
/// watches at zero, so a healthy system shows 0 rather than nothing.
pub fn info(timeline: &accrual_core::rules::Timeline) {
    for kind in ["abortable", "fatal", "not_member"] {
        counter!(ABORTS, "kind" => kind).increment(0);
    }
    for reason in accrual_core::events::DecodeError::REASONS
        .into_iter()
        .chain(accrual_core::accrue::Rejection::REASONS)
        .chain(accrual_core::pipeline::Refusal::REASONS)
        .chain([accrual_core::pipeline::INTERNAL_ERROR])
    {
        counter!(DEAD_LETTERS, "reason" => reason).increment(0);
    }
    for name in [
        TRANSACTIONS,
        RECOVERIES,
        REBALANCES,
        DUPLICATES,
        INPUT_GAP,
        CLOCK_ACCOUNTS,
        CLOCKS_CUT,
        RESTORES,
        RESTORED_RECORDS,
        RESTORED_BYTES,
    ] {
        counter!(name).increment(0);
    }
    for result in RELOAD_RESULTS {
        counter!(RULES_RELOADS, "result" => result).increment(0);
    }
    rules_in_use(None, timeline);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// What a rules reload can come to (`accrual_rules_reloads_total`).
pub const RELOAD_RESULTS: [&str; 4] = ["applied", "unchanged", "refused", "invalid"];

/// A rules reload came to `result` (one of [`RELOAD_RESULTS`]).
pub fn rules_reloaded(result: &'static str) {
    counter!(RULES_RELOADS, "result" => result).increment(1);
}

/// The info series of `timeline`'s versions at 1, those of `previous`
/// that it no longer has at 0.
pub fn rules_in_use(
    previous: Option<&accrual_core::rules::Timeline>,
    timeline: &accrual_core::rules::Timeline,
) {
    let series = |t: &accrual_core::rules::Timeline| -> Vec<[String; 3]> {
        t.versions()
            .iter()
            .map(|v| {
                let from = v.from.map_or_else(|| "-".to_string(), |t| t.to_string());
                [v.rules.name.clone(), v.rules.version.to_string(), from]
            })
            .collect()
    };
    let now = series(timeline);
    for [name, version, from] in
        previous.map(series).unwrap_or_default().into_iter().filter(|s| !now.contains(s))
    {
        gauge!(RULES_INFO, "name" => name, "version" => version, "effective_from" => from).set(0.0);
    }
    for [name, version, from] in now {
        gauge!(RULES_INFO, "name" => name, "version" => version, "effective_from" => from).set(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrual_core::accrue::{AccrualId, AccrualRecord, RecordKind, RecordNames, RecordText};
    use accrual_core::time::Timestamp;

    fn record(program: &str, rule: &str, kind: RecordKind, amount: i64) -> AccrualRecord {
        let names =
            RecordNames { program, rule_id: rule, unit: "RUB", rules_version: "v", ..RecordNames::default() };
        AccrualRecord {
            text: RecordText::new(AccrualId::Text(""), "", "", names, ""),
            kind,
            amount: Decimal::new(amount, 2),
            balance_after: Decimal::ZERO,
            pending_after: Decimal::ZERO,
            value: None,
            occurred_at: Timestamp(0),
            mcc: None,
        }
    }

    #[test]
    fn tallies_by_names() {
        let mut a = RecordTally::default();
        a.add(&record("cashback", "base", RecordKind::Earn, 150));
        a.add(&record("cashback", "base", RecordKind::Earn, 25));
        a.add(&record("cashback", "base", RecordKind::Clawback, -40));
        a.add(&record("points", "base", RecordKind::Earn, 700));
        let mut b = RecordTally::default();
        b.add(&record("points", "base", RecordKind::Earn, 300));
        b.add(&record("cashback", "groceries", RecordKind::Earn, 5));
        a.merge(b);
        let mut got: Vec<(String, String, &str, u64, Decimal)> =
            a.iter().map(|((p, r, k, _), n, amount)| (p.to_string(), r.to_string(), *k, n, amount)).collect();
        got.sort();
        let want = vec![
            ("cashback".into(), "base".into(), "clawback", 1, Decimal::new(-40, 2)),
            ("cashback".into(), "base".into(), "earn", 2, Decimal::new(175, 2)),
            ("cashback".into(), "groceries".into(), "earn", 1, Decimal::new(5, 2)),
            ("points".into(), "base".into(), "earn", 2, Decimal::new(1000, 2)),
        ];
        assert_eq!(got, want);
    }
}
