//! Helpers for tests against a real Kafka-protocol broker, at the address
//! in `ACCRUAL_TEST_BROKERS` (`scripts/test.sh` starts the local broker and
//! sets it; point it at Apache Kafka to run the same suite there).

use super::repo_path;
use accrual::engine::journal::{Journal, TxnId, TxnStatus};
use accrual::engine::report::RunReport;
use accrual::kafka_tools::{self, Connection, Consumed};
use accrual::simulate::{self, SimulateOptions};
use accrual::state::AccountState;
use accrual::store::{Store, StoreOptions};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn brokers() -> String {
    match std::env::var("ACCRUAL_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "ACCRUAL_TEST_BROKERS is not set: these tests need a Kafka-protocol broker. \
             Run scripts/test.sh (it starts the local broker), or scripts/broker.sh start and \
             ACCRUAL_TEST_BROKERS=127.0.0.1:9092 cargo nextest run"
        ),
    }
}

/// A unique name, so tests never share topics or groups.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) % 1_000_000_000;
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The topics and group of one test.
#[derive(Debug, Clone)]
pub struct Setup {
    pub brokers: String,
    pub input: String,
    pub accruals: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
    /// The state changelog topic, if the engines are to use one.
    pub changelog: Option<String>,
}

impl Setup {
    pub fn new(name: &str, partitions: i32) -> Setup {
        let brokers = brokers();
        let base = unique(name);
        let s = Setup {
            input: format!("{base}.transactions"),
            accruals: format!("{base}.accruals"),
            dlq: format!("{base}.dlq"),
            group: format!("{base}.group"),
            brokers,
            partitions,
            changelog: None,
        };
        kafka_tools::create_topics(
            &s.kafka(),
            &[(&s.input, partitions), (&s.accruals, partitions), (&s.dlq, partitions)],
        )
        .expect("create topics");
        s
    }

    /// How the tests reach the broker (plaintext).
    pub fn kafka(&self) -> Connection {
        Connection::plain(&self.brokers)
    }

    /// The same, with a state changelog topic (compacted, co-partitioned)
    /// the engines publish to and restore from.
    pub fn with_changelog(mut self) -> Setup {
        let topic = self.input.replace(".transactions", ".changelog");
        kafka_tools::create_topics_with(
            &self.kafka(),
            &[(&topic, self.partitions, kafka_tools::CHANGELOG_CONFIGS)],
        )
        .expect("create the changelog topic");
        self.changelog = Some(topic);
        self
    }

    /// Writes an engine config for `instance` into `dir`.
    pub fn config(&self, dir: &Path, instance: &str, extra_engine: &str) -> PathBuf {
        self.config_with_rules(dir, instance, extra_engine, "config/rules.example.toml")
    }

    /// The same, with another rules file (relative to the repository).
    pub fn config_with_rules(&self, dir: &Path, instance: &str, extra_engine: &str, rules: &str) -> PathBuf {
        self.config_full(dir, instance, extra_engine, rules, "[http]\nenabled = false\n")
    }

    /// With an HTTP listener at `listen` (and a bearer token, if any).
    pub fn config_http(
        &self,
        dir: &Path,
        instance: &str,
        extra_engine: &str,
        listen: &str,
        token: &str,
    ) -> PathBuf {
        let http = format!("[http]\nlisten = \"{listen}\"\ntoken = \"{token}\"\n");
        self.config_full(dir, instance, extra_engine, "config/rules.example.toml", &http)
    }

    /// Any config: `sections` are top-level TOML appended at the end.
    pub fn config_full(
        &self,
        dir: &Path,
        instance: &str,
        extra_engine: &str,
        rules: &str,
        sections: &str,
    ) -> PathBuf {
        let path = dir.join(format!("{instance}.toml"));
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
transaction_timeout_ms = 10000

[kafka.topics]
input = "{input}"
accruals = "{accruals}"
dead_letter = "{dlq}"
{changelog}

[kafka.consumer_properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[engine]
instance_id = "{instance}"
state_dir = "{state}"
rules = "{rules}"
commit_interval_ms = 50
kafka_timeout_ms = 10000
# More than the default of one: the broker tests cover partitions
# processed in parallel and appended into one commit.
workers = 2
{extra_engine}

{sections}
"#,
            brokers = self.brokers,
            group = self.group,
            input = self.input,
            accruals = self.accruals,
            dlq = self.dlq,
            changelog = self.changelog.as_ref().map(|t| format!("changelog = \"{t}\"")).unwrap_or_default(),
            state = dir.join(instance).display(),
            rules = repo_path(rules).display(),
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn produce(&self, dir: &Path, lines: &[String]) {
        let file = dir.join(unique("produce"));
        std::fs::write(&file, lines.join("\n")).expect("write input");
        let n = kafka_tools::produce_file(&self.kafka(), &self.input, &file).expect("produce");
        assert_eq!(n as usize, lines.len());
    }

    /// Writes records into the state changelog by hand, each (partition,
    /// message key, value or none for a tombstone), and waits until they
    /// are delivered: what a tampered or stale changelog holds.
    pub fn write_to_changelog(&self, records: &[ChangelogRecord]) {
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("producer");
        let changelog = self.changelog.as_deref().expect("a changelog");
        for (partition, key, value) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(changelog).partition(*partition).key(&key[..]);
            if let Some(value) = value {
                record = record.payload(&value[..]);
            }
            producer.send(record).map_err(|(e, _)| e).expect("send to the changelog");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
    }

    pub fn read(&self, topic: &str) -> Vec<Consumed> {
        kafka_tools::read_topic(&self.kafka(), topic, true, Duration::from_secs(5)).expect("read topic")
    }

    /// Waits until the group has committed every input offset.
    pub fn wait_all_committed(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.lag() == Some(0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Input messages the group has not committed yet.
    pub fn lag(&self) -> Option<i64> {
        let committed = kafka_tools::committed_offsets(&self.kafka(), &self.group, &self.input).ok()?;
        let mut lag = 0;
        for p in 0..self.partitions {
            let high = high_watermark(&self.brokers, &self.input, p)?;
            let done = committed.get(&p).map_or(0, |(o, _)| *o);
            lag += (high - done).max(0);
        }
        Some(lag)
    }
}

fn high_watermark(brokers: &str, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().ok()?;
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)).ok().map(|(_, high)| high)
}

/// The engine as a child process, its output in a log file, and what it
/// did (`--report`) in a JSON file once it stops.
pub struct EngineProcess {
    pub child: Child,
    pub log: PathBuf,
    pub report: PathBuf,
}

impl EngineProcess {
    pub fn spawn(config: &Path, env: &[(&str, &str)], stop_when_idle: Option<u64>) -> EngineProcess {
        assert!(
            cfg!(feature = "failpoints") || !env.iter().any(|(k, _)| *k == "ACCRUAL_FAILPOINT"),
            "this test sets failure points: build with --features failpoints (scripts/test.sh does)"
        );
        let log = config.with_extension(format!("{}.log", unique("run")));
        let file = std::fs::File::create(&log).expect("log file");
        let report = log.with_extension("report.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_accrual"));
        cmd.arg("run").arg("--config").arg(config).arg("--report").arg(&report);
        if let Some(secs) = stop_when_idle {
            cmd.arg("--stop-when-idle").arg(secs.to_string());
        }
        cmd.env("RUST_LOG", "info,rdkafka=warn")
            .env_remove("ACCRUAL_FAILPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().expect("log")))
            .stderr(Stdio::from(file));
        EngineProcess { child: cmd.spawn().expect("spawn engine"), log, report }
    }

    /// What the run did, as it reported when it stopped (panics with the
    /// log if it wrote no report: it did not stop by itself).
    pub fn report(&self) -> RunReport {
        match std::fs::read(&self.report) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("a valid report"),
            Err(e) => panic!("no run report ({e}); log:\n{}", self.log_text()),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for exit; panics with the log after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("engine did not stop within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What `accrual simulate` writes for these lines: the reference output.
pub fn reference(dir: &Path, lines: &[String]) -> (Vec<String>, BTreeMap<String, AccountState>) {
    reference_with_rules(dir, lines, "config/rules.example.toml")
}

pub fn reference_with_rules(
    dir: &Path,
    lines: &[String],
    rules: &str,
) -> (Vec<String>, BTreeMap<String, AccountState>) {
    let input = dir.join(unique("reference-input"));
    let out = dir.join(unique("reference-out"));
    let state = dir.join(unique("reference-state"));
    std::fs::write(&input, lines.join("\n")).expect("write");
    simulate::run(&SimulateOptions {
        rules: repo_path(rules),
        input,
        out: Some(out.clone()),
        dlq: None,
        state_dir: Some(state.clone()),
        batch_size: 1000,
        show_progress: false,
        now: Some(super::test_now()),
    })
    .expect("simulate");
    let records = std::fs::read_to_string(out).expect("read").lines().map(str::to_string).collect();
    let store = open_store(&state);
    let accounts = store.accounts(0).expect("accounts").into_iter().collect();
    (records, accounts)
}

pub fn open_store(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions { sync: false, ..StoreOptions::default() }).expect("open store")
}

/// Every account state the engine keeps in a state directory.
pub fn engine_accounts(state_dir: &Path, partitions: i32) -> BTreeMap<String, AccountState> {
    let store = open_store(state_dir);
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        for (account, state) in store.accounts(p as u32).expect("accounts") {
            assert!(all.insert(account.clone(), state).is_none(), "account {account} in two partitions");
        }
    }
    all
}

/// A record written into the changelog by hand: partition, message key,
/// value (none: a tombstone).
pub type ChangelogRecord = (i32, Vec<u8>, Option<Vec<u8>>);

/// The changelog message key of a stored key of `family` (a partition's
/// reset: its partition's 4 bytes then `reset`).
pub fn changelog_key(family: accrual::store::changelog::Family, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let change = accrual::store::changelog::Change { family, key, value: None };
    accrual::store::changelog::message_key(&change, &mut out);
    out
}

/// Every stored key and value of a state directory's partitions, but
/// dedupe keys (which RocksDB's compaction may drop once expired, at any
/// time): what a restore from the changelog must give back byte for byte.
pub fn stored_entries(state: &Path, partitions: i32) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    entries_of(&open_store(state), partitions)
}

/// [`stored_entries`] of an open store (a running engine's, read only).
pub fn entries_of(store: &Store, partitions: i32) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for p in 0..partitions as u32 {
        for (family, key, value) in
            accrual::store::changelog::partition_entries(store, p).expect("state entries")
        {
            if family != accrual::store::changelog::Family::Dedupe {
                all.push((p, key, value));
            }
        }
    }
    all
}

/// Fails naming what differs between two [`stored_entries`]: how many
/// entries each side alone holds, and the first few of them (partition,
/// key and value in hex).
pub fn assert_same_entries(
    expected: &[(u32, Vec<u8>, Vec<u8>)],
    actual: &[(u32, Vec<u8>, Vec<u8>)],
    what: &str,
) {
    if expected == actual {
        return;
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let show = |(p, k, v): &&(u32, Vec<u8>, Vec<u8>)| format!("  p{p} key {} value {}", hex(k), hex(v));
    let only_expected: Vec<_> = expected.iter().filter(|e| !actual.contains(e)).collect();
    let only_actual: Vec<_> = actual.iter().filter(|e| !expected.contains(e)).collect();
    panic!(
        "{what}: {} entries expected, {} found; {} only expected, e.g.\n{}\n{} only found, e.g.\n{}",
        expected.len(),
        actual.len(),
        only_expected.len(),
        only_expected.iter().take(4).map(show).collect::<Vec<_>>().join("\n"),
        only_actual.len(),
        only_actual.iter().take(4).map(show).collect::<Vec<_>>().join("\n"),
    );
}

/// The engine's journal: transaction id -> outcome.
pub fn journal(state_dir: &Path) -> BTreeMap<String, TxnStatus> {
    let store = open_store(state_dir);
    let instance = Journal::instance(&store).expect("journal").unwrap_or_default();
    Journal::entries(&store)
        .expect("journal")
        .into_iter()
        .map(|e| (TxnId { instance: instance.clone(), epoch: e.epoch, seq: e.seq }.to_string(), e.status))
        .collect()
}

/// Whether read_committed readers of this broker skip records of aborted
/// transactions (Apache Kafka does; the local broker does not).
pub fn broker_filters_aborted() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let brokers = brokers();
        let topic = unique("probe-abort");
        kafka_tools::create_topics(&Connection::plain(&brokers), &[(&topic, 1)]).expect("probe topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("transactional.id", unique("probe"))
            .create()
            .expect("producer");
        producer.init_transactions(Duration::from_secs(10)).expect("init");
        producer.begin_transaction().expect("begin");
        producer.send(BaseRecord::<(), _>::to(&topic).payload("aborted")).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(10)).expect("flush");
        producer.abort_transaction(Duration::from_secs(10)).expect("abort");
        let seen =
            kafka_tools::read_topic(&Connection::plain(&brokers), &topic, true, Duration::from_secs(3))
                .expect("read");
        seen.is_empty()
    })
}

/// The published accruals are `simulate`'s over `lines`, each exactly
/// once (by the transactions' outcomes, `txns`), and the balances in
/// `state` are its too.
pub fn assert_simulated(
    setup: &Setup,
    dir: &Path,
    lines: &[String],
    txns: &BTreeMap<String, TxnStatus>,
    state: &Path,
) {
    let (reference, reference_accounts) = reference(dir, lines);
    assert_exactly_once(&setup.read(&setup.accruals), &reference, txns);
    assert!(engine_accounts(state, setup.partitions) == reference_accounts, "balances differ from simulate");
}

/// Checks the published accruals against the reference, exactly once:
/// the copies from committed transactions are exactly the reference; every
/// other copy comes from a transaction that never committed.
pub fn assert_exactly_once(
    published: &[Consumed],
    reference: &[String],
    committed: &BTreeMap<String, TxnStatus>,
) {
    let mut committed_view: Vec<String> = Vec::new();
    let mut extra = 0;
    for m in published {
        let txn = m.header("accrual.txn").expect("every record names its transaction");
        match committed.get(txn) {
            Some(TxnStatus::Committed) => {
                committed_view.push(String::from_utf8(m.payload.clone()).expect("utf8"))
            }
            Some(TxnStatus::Aborted) => extra += 1,
            other => panic!("record from transaction {txn} with status {other:?}"),
        }
    }
    if broker_filters_aborted() {
        assert_eq!(extra, 0, "a broker that filters aborted transactions showed {extra} of their records");
    }
    committed_view.sort();
    let mut expected = reference.to_vec();
    expected.sort();
    let missing: BTreeSet<&String> = expected.iter().filter(|r| !committed_view.contains(r)).collect();
    if let Some(first) = missing.iter().next() {
        // Where the missing records went: published by which transactions.
        let mut by_txn: BTreeMap<&str, usize> = BTreeMap::new();
        for m in
            published.iter().filter(|m| missing.contains(&String::from_utf8_lossy(&m.payload).to_string()))
        {
            *by_txn.entry(m.header("accrual.txn").unwrap_or("?")).or_default() += 1;
        }
        let seen: Vec<String> =
            by_txn.iter().map(|(txn, n)| format!("{txn} ({:?}): {n}", committed.get(*txn))).collect();
        panic!(
            "{} accruals missing, e.g. {first:?}; copies published by transactions that did not commit: {seen:?} (none: never published)",
            missing.len()
        );
    }
    assert_eq!(
        committed_view.len(),
        expected.len(),
        "committed records are not exactly the reference (duplicates)"
    );
    assert!(committed_view == expected, "committed records differ from the reference");
}

/// A small PRNG for kill timings, seeded from the clock unless
/// ACCRUAL_CRASH_SEED repeats a run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The seed of the kill timings: ACCRUAL_CRASH_SEED repeats a run.
pub fn crash_seed() -> u64 {
    std::env::var("ACCRUAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    })
}

/// Whether the long versions of the slow tests run (ACCRUAL_SOAK=1).
pub fn soak() -> bool {
    std::env::var("ACCRUAL_SOAK").is_ok_and(|v| v == "1")
}

/// Waits for a run that a failure point must abort (SIGABRT).
pub fn assert_aborted(crashed: &mut EngineProcess) {
    let status = crashed.wait(Duration::from_secs(120));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGABRT),
        "the failpoint should have aborted it:\n{}",
        crashed.log_text()
    );
}
