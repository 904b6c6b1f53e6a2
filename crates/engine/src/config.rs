//! The engine's configuration: a TOML file (`deny_unknown_fields`), then
//! environment overrides (`ACCRUAL_KAFKA__BROKERS=...`), validated once at
//! start with errors that name the field. Every setting is documented in
//! `docs/configuration.md`.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Prefix of environment overrides; `__` separates path segments.
pub const ENV_PREFIX: &str = "ACCRUAL_";
const SECTIONS: [&str; 4] = ["KAFKA", "ENGINE", "HTTP", "LOG"];

/// librdkafka settings the engine owns: setting them in
/// `[kafka.properties]` would break exactly-once.
const MANAGED_PROPERTIES: &[&str] = &[
    "partitioner",
    "bootstrap.servers",
    "group.id",
    "transactional.id",
    "enable.idempotence",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transaction.timeout.ms",
    // Instances find each other's partitions by it (see `owners`).
    "client.id",
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub kafka: KafkaConfig,
    pub engine: EngineSection,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[http]`: metrics, health and the balance lookup.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub enabled: bool,
    /// Loopback by default: expose it deliberately.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token required by `/v1/accounts/...` (balances are customer
    /// data); empty: no token.
    #[serde(default)]
    pub token: String,
    /// A file holding the token (a mounted secret), read at load; its
    /// trailing newline is ignored. Not with `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Where other instances answer, for balance lookups of accounts whose
    /// partition another instance owns: a URL with `{instance_id}` in it
    /// (a StatefulSet's pods behind a headless service:
    /// `http://{instance_id}.accrual:9464`), ...
    #[serde(default)]
    pub peer_url: String,
    /// ... or each instance's URL by its id (taking precedence).
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: default_listen(),
            token: String::new(),
            token_file: None,
            peer_url: String::new(),
            peers: BTreeMap::new(),
        }
    }
}

impl HttpConfig {
    /// The base URL of `instance`'s HTTP listener, if configured.
    pub fn peer(&self, instance: &str) -> Option<String> {
        let url = match self.peers.get(instance) {
            Some(url) => url.clone(),
            None if self.peer_url.contains("{instance_id}") => {
                self.peer_url.replace("{instance_id}", instance)
            }
            None => return None,
        };
        Some(url.trim_end_matches('/').to_string())
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`: structured logs on stderr.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,rdkafka=warn`; RUST_LOG wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: default_log_level() }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    pub topics: TopicsConfig,
    /// How producers of the input topic pick a key's partition (librdkafka
    /// names; Java clients use `murmur2_random`). The engine must agree: it
    /// locates accounts by it and publishes events for other accounts.
    #[serde(default)]
    pub partitioner: accrual_core::partitioner::Partitioner,
    /// Kafka transaction timeout; a transaction open longer is aborted by
    /// the broker.
    #[serde(default = "default_transaction_timeout_ms", deserialize_with = "number")]
    pub transaction_timeout_ms: u64,
    /// Passed to librdkafka as is, for both clients (SASL/SSL, tuning).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Passed to the consumer only (e.g. `fetch.max.bytes`).
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// Passed to the producer only (e.g. `compression.type`, `linger.ms`).
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub input: String,
    pub accruals: String,
    pub dead_letter: String,
    /// The state's changelog: compacted, with the input's partition count.
    /// When set, every change of a partition's state is published to it in
    /// the transaction that commits its inputs, and an instance assigned a
    /// partition whose state it lacks (or holds only an older copy of)
    /// restores it from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Names this instance: its Kafka `transactional.id` is
    /// `<group_id>-<instance_id>`. Keep it stable across restarts and unique
    /// among the group's instances.
    pub instance_id: String,
    /// RocksDB state; relative paths are relative to the working directory.
    pub state_dir: PathBuf,
    /// The rules: one file, or a directory of versions each taking effect
    /// at its `effective_from` (docs/rules.md, "Versions").
    pub rules: PathBuf,
    /// How often the rules are checked for changes, to reload them without
    /// a restart (0: only on SIGHUP).
    #[serde(default = "default_rules_check_interval_ms", deserialize_with = "number")]
    pub rules_check_interval_ms: u64,
    /// How often a commit cycle (RocksDB batch + Kafka transaction) closes.
    #[serde(default = "default_commit_interval_ms", deserialize_with = "number")]
    pub commit_interval_ms: u64,
    /// Most input messages per commit cycle.
    #[serde(default = "default_max_batch", deserialize_with = "number")]
    pub max_batch: usize,
    /// Sync RocksDB's write-ahead log before each Kafka commit.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub sync_wal: bool,
    #[serde(default = "default_block_cache_mb", deserialize_with = "number")]
    pub block_cache_mb: usize,
    #[serde(default = "default_write_buffer_mb", deserialize_with = "number")]
    pub write_buffer_mb: usize,
    /// Memory for decoded account states kept between cycles (0: none).
    #[serde(default = "default_account_cache_mb", deserialize_with = "number")]
    pub account_cache_mb: usize,
    /// Threads that process a cycle's partitions (each partition on one).
    #[serde(default = "default_workers", deserialize_with = "number")]
    pub workers: usize,
    /// Timeout for Kafka calls that can block (commit, offsets, metadata).
    #[serde(default = "default_kafka_timeout_ms", deserialize_with = "number")]
    pub kafka_timeout_ms: u64,
    /// Send a clock event to every input partition this often (0: never;
    /// run `accrual tick` from a scheduler instead). With several
    /// instances, enable it on one.
    #[serde(default, deserialize_with = "number")]
    pub clock_interval_ms: u64,
    /// Go on past input that retention removed before it was processed
    /// (logged, counted and alerted either way). Default: refuse the
    /// partition, so no reward is lost silently.
    #[serde(default, deserialize_with = "boolean")]
    pub skip_input_gaps: bool,
    /// Warm copies of each partition kept by other instances, tailing its
    /// changelog (see `standby`; needs `kafka.topics.changelog`).
    #[serde(default, deserialize_with = "number")]
    pub standby_replicas: usize,
    /// With a changelog: how long the state of a partition this instance
    /// neither owns nor copies stays on disk before it is dropped (see
    /// `leftovers`).
    #[serde(default = "default_state_cleanup_delay_ms", deserialize_with = "number")]
    pub state_cleanup_delay_ms: u64,
}

fn default_group_id() -> String {
    "accrual".into()
}
fn default_transaction_timeout_ms() -> u64 {
    60_000
}
fn default_commit_interval_ms() -> u64 {
    100
}
fn default_rules_check_interval_ms() -> u64 {
    5_000
}
fn default_max_batch() -> usize {
    10_000
}
fn yes() -> bool {
    true
}
fn default_block_cache_mb() -> usize {
    256
}
fn default_write_buffer_mb() -> usize {
    64
}
fn default_account_cache_mb() -> usize {
    256
}
fn default_state_cleanup_delay_ms() -> u64 {
    600_000
}
fn default_workers() -> usize {
    1
}
fn default_kafka_timeout_ms() -> u64 {
    30_000
}

/// A number written natively or as a string (environment overrides are strings).
fn number<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    T: FromStr + TryFrom<u64>,
    <T as FromStr>::Err: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d).map_err(|_| de::Error::custom("expected a non-negative integer"))? {
        Raw::N(n) => T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is out of range"))),
        Raw::S(s) => s.trim().parse().map_err(|e| de::Error::custom(format!("\"{s}\": {e}"))),
    }
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        B(bool),
        S(String),
    }
    match Raw::deserialize(d).map_err(|_| de::Error::custom("expected true or false"))? {
        Raw::B(b) => Ok(b),
        Raw::S(s) => match s.trim() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(de::Error::custom(format!("\"{other}\" is not true or false"))),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: TOML syntax error: {message}")]
    Syntax { file: String, message: String },
    #[error("{origin}: field `{field}`: {message}")]
    Invalid { origin: String, field: String, message: String },
}

impl EngineConfig {
    /// Loads a config file and applies `ACCRUAL_*` overrides from `env`.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<EngineConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, &file, env)
    }

    pub fn parse(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<EngineConfig, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: file.to_string(), message: e.to_string() })?;
        let mut overridden = Vec::new();
        // Only variables naming a section (ACCRUAL_KAFKA__..., ACCRUAL_ENGINE__...)
        // override; other ACCRUAL_* variables belong to scripts and tests.
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| SECTIONS.iter().any(|s| k.starts_with(&format!("{ENV_PREFIX}{s}__"))))
            .collect();
        env.sort();
        for (key, value) in env {
            let path = env_path(&key);
            if path.is_empty() || path.iter().any(String::is_empty) {
                continue;
            }
            set_path(&mut table, &path, value);
            overridden.push((path.join("."), key));
        }
        let config: EngineConfig =
            accrual_core::typed_toml::from_value(toml::Value::Table(table)).map_err(|e| {
                let origin = overridden
                    .iter()
                    .find(|(path, _)| *path == e.field)
                    .map_or_else(|| file.to_string(), |(_, var)| format!("{file} (environment {var})"));
                ConfigError::Invalid { origin, field: e.field, message: e.message }
            })?;
        let mut config = config;
        config.read_secret_files(file)?;
        config.validate(file)?;
        Ok(config)
    }

    /// Replaces every `<name>_file` setting by `<name>` with the file's
    /// content (trailing newline ignored): Kafka properties such as
    /// `sasl.password_file` (in `properties` and the consumer- and
    /// producer-only tables) and `http.token_file`. Errors name the setting
    /// and the file, never the content.
    fn read_secret_files(&mut self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: file.to_string(),
            field,
            message,
        };
        let read = |field: &str, path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| invalid(field.to_string(), format!("cannot read {path}: {e}")))
        };
        let k = &mut self.kafka;
        for (table, map) in [
            ("properties", &mut k.properties),
            ("consumer_properties", &mut k.consumer_properties),
            ("producer_properties", &mut k.producer_properties),
        ] {
            let files: Vec<(String, String)> = map
                .iter()
                .filter(|(key, _)| key.ends_with("_file"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, path) in files {
                let field = format!("kafka.{table}.\"{key}\"");
                let name = key.trim_end_matches("_file").to_string();
                if map.contains_key(&name) {
                    return Err(invalid(field, format!("give `{name}` or `{key}`, not both")));
                }
                map.remove(&key);
                map.insert(name, read(&field, &path)?);
            }
        }
        if let Some(path) = self.http.token_file.take() {
            if !self.http.token.is_empty() {
                return Err(invalid(
                    "http.token_file".into(),
                    "give `token` or `token_file`, not both".into(),
                ));
            }
            self.http.token = read("http.token_file", &path)?;
        }
        Ok(())
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |(field, message): (String, String)| ConfigError::Invalid {
            origin: file.to_string(),
            field,
            message,
        };
        self.validate_kafka().map_err(invalid)?;
        self.validate_http().map_err(invalid)?;
        self.validate_engine().map_err(invalid)
    }

    /// The `[kafka]` section: brokers, names, distinct topics, and no
    /// client property the engine manages itself. An error is the field
    /// and what is wrong with it (as in the other sections' checks).
    fn validate_kafka(&self) -> Result<(), (String, String)> {
        let k = &self.kafka;
        if k.brokers.split(',').all(|b| b.trim().is_empty()) {
            return fail("kafka.brokers", "must list at least one host:port".into());
        }
        for (field, name) in [
            ("kafka.group_id", &k.group_id),
            ("kafka.topics.input", &k.topics.input),
            ("kafka.topics.accruals", &k.topics.accruals),
            ("kafka.topics.dead_letter", &k.topics.dead_letter),
            ("engine.instance_id", &self.engine.instance_id),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 200
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return fail(field, format!("\"{name}\" must be 1-200 letters, digits, '.', '_' or '-'"));
            }
        }
        let t = &k.topics;
        if t.input == t.accruals || t.input == t.dead_letter || t.accruals == t.dead_letter {
            return fail("kafka.topics", "input, accruals and dead_letter must be different topics".into());
        }
        let tables = [
            ("properties", &k.properties),
            ("consumer_properties", &k.consumer_properties),
            ("producer_properties", &k.producer_properties),
        ];
        for (table, key) in tables.iter().flat_map(|(t, m)| m.keys().map(move |k| (*t, k))) {
            if MANAGED_PROPERTIES.contains(&key.as_str()) {
                return fail(
                    &format!("kafka.{table}.{key}"),
                    "is set by the engine (exactly-once depends on it); use the engine's own setting".into(),
                );
            }
        }
        Ok(())
    }

    /// The `[http]` section: the listener and how peers are reached.
    fn validate_http(&self) -> Result<(), (String, String)> {
        let h = &self.http;
        let peers = h.peers.iter().map(|(id, url)| (format!("http.peers.{id}"), url));
        for (field, url) in
            peers.chain((!h.peer_url.is_empty()).then(|| ("http.peer_url".to_string(), &h.peer_url)))
        {
            if !url.starts_with("http://") {
                return fail(
                    &field,
                    format!("\"{url}\" must be an http:// URL (the instance's HTTP listener)"),
                );
            }
        }
        if !h.peer_url.is_empty() && !h.peer_url.contains("{instance_id}") {
            return fail("http.peer_url", "must contain {instance_id}, replaced by the owner's id".into());
        }
        if h.enabled && h.listen.parse::<std::net::SocketAddr>().is_err() {
            return fail("http.listen", format!("\"{}\" is not an address like 127.0.0.1:9464", h.listen));
        }
        Ok(())
    }

    /// The `[engine]` section's ranges, and what they depend on elsewhere.
    fn validate_engine(&self) -> Result<(), (String, String)> {
        let (e, k) = (&self.engine, &self.kafka);
        if e.standby_replicas > 0 && k.topics.changelog.is_none() {
            return fail(
                "engine.standby_replicas",
                "standbys tail the state changelog: set kafka.topics.changelog too".into(),
            );
        }
        if e.standby_replicas > 16 {
            return fail("engine.standby_replicas", format!("must be 0-16, got {}", e.standby_replicas));
        }
        if e.commit_interval_ms == 0 || e.commit_interval_ms > 60_000 {
            return fail(
                "engine.commit_interval_ms",
                format!("must be 1-60000, got {}", e.commit_interval_ms),
            );
        }
        if e.commit_interval_ms * 2 > k.transaction_timeout_ms {
            return fail(
                "engine.commit_interval_ms",
                format!(
                    "{} ms is more than half of kafka.transaction_timeout_ms ({} ms): transactions would time out",
                    e.commit_interval_ms, k.transaction_timeout_ms
                ),
            );
        }
        if e.max_batch == 0 || e.max_batch > 1_000_000 {
            return fail("engine.max_batch", format!("must be 1-1000000, got {}", e.max_batch));
        }
        if e.workers == 0 || e.workers > 64 {
            return fail("engine.workers", format!("must be 1-64, got {}", e.workers));
        }
        if e.kafka_timeout_ms < 1_000 {
            return fail(
                "engine.kafka_timeout_ms",
                format!("must be at least 1000, got {}", e.kafka_timeout_ms),
            );
        }
        if e.block_cache_mb == 0 || e.write_buffer_mb == 0 {
            return fail("engine.block_cache_mb", "cache and buffer sizes must be at least 1 MiB".into());
        }
        Ok(())
    }

    /// How long the group keeps a member that stops showing signs of life:
    /// the shorter of `session.timeout.ms` and `max.poll.interval.ms` as
    /// the consumer is configured (librdkafka's defaults otherwise).
    pub fn membership_timeout(&self) -> Duration {
        let setting = |name: &str, default: u64| {
            let k = &self.kafka;
            k.consumer_properties
                .get(name)
                .or_else(|| k.properties.get(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Duration::from_millis(
            setting("session.timeout.ms", 45_000).min(setting("max.poll.interval.ms", 300_000)),
        )
    }

    /// The Kafka `transactional.id` of this instance.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.kafka.group_id, self.engine.instance_id)
    }
}

/// `ACCRUAL_KAFKA__PROPERTIES__SASL_MECHANISM` -> `kafka.properties.sasl.mechanism`:
/// segments split on `__` and lower-cased; librdkafka property names use
/// dots where environment variables need `_`.
fn env_path(key: &str) -> Vec<String> {
    let rest = &key[ENV_PREFIX.len()..];
    let mut path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.len() == 3 && path[0] == "kafka" && path[1].ends_with("properties") {
        // A property's dots are underscores in a variable's name; a
        // trailing `_FILE` names a file holding the value.
        path[2] = match path[2].strip_suffix("_file") {
            Some(name) => format!("{}_file", name.replace('_', ".")),
            None => path[2].replace('_', "."),
        };
    }
    path
}

fn set_path(table: &mut toml::Table, path: &[String], value: String) {
    let (last, parents) = match path.split_last() {
        Some(split) => split,
        None => return,
    };
    let mut current = table;
    for segment in parents {
        let entry = current.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => current = t,
            _ => return,
        }
    }
    current.insert(last.clone(), toml::Value::String(value));
}

/// A failed check of `EngineConfig::validate`'s sections: the field and
/// what is wrong with it.
fn fail(field: &str, message: String) -> Result<(), (String, String)> {
    Err((field.to_string(), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
[kafka.topics]
input = "transactions"
accruals = "accruals"
dead_letter = "transactions.dlq"
[engine]
instance_id = "node-1"
state_dir = "state"
rules = "config/rules.example.toml"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn secrets_come_from_files_and_errors_name_the_setting_never_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (password, token) = (dir.path().join("password"), dir.path().join("token"));
        std::fs::write(&password, "p4ss-w0rd\n").unwrap();
        std::fs::write(&token, "t0ken").unwrap();
        let vars = [
            ("ACCRUAL_KAFKA__PROPERTIES__SASL_PASSWORD_FILE", password.to_str().unwrap()),
            ("ACCRUAL_HTTP__TOKEN_FILE", token.to_str().unwrap()),
        ];
        let c = EngineConfig::parse(BASE, "e.toml", env(&vars)).unwrap();
        assert_eq!(c.kafka.properties.get("sasl.password").map(String::as_str), Some("p4ss-w0rd"));
        assert!(!c.kafka.properties.contains_key("sasl.password_file"));
        assert_eq!((c.http.token.as_str(), c.http.token_file.as_deref()), ("t0ken", None));
        let connection = format!("{:?}", crate::clients::Connection::of(&c.kafka));
        assert!(connection.contains("sasl.password") && !connection.contains("p4ss"), "{connection}");

        let missing = dir.path().join("nothing");
        let e = EngineConfig::parse(
            BASE,
            "e.toml",
            env(&[("ACCRUAL_KAFKA__PRODUCER_PROPERTIES__SSL_KEY_PASSWORD_FILE", missing.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("e.toml: field `kafka.producer_properties.\"ssl.key.password_file\"`: cannot read"),
            "{e}"
        );
        assert!(e.contains(missing.to_str().unwrap()), "{e}");
        let both = [
            ("ACCRUAL_KAFKA__PROPERTIES__SASL_PASSWORD", "inline-secret"),
            ("ACCRUAL_KAFKA__PROPERTIES__SASL_PASSWORD_FILE", password.to_str().unwrap()),
        ];
        let e = EngineConfig::parse(BASE, "e.toml", env(&both)).unwrap_err().to_string();
        assert!(e.contains("not both") && !e.contains("inline-secret") && !e.contains("p4ss"), "{e}");
        let e = EngineConfig::parse(
            BASE,
            "e.toml",
            env(&[("ACCRUAL_HTTP__TOKEN", "x"), ("ACCRUAL_HTTP__TOKEN_FILE", token.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http.token_file") && e.contains("not both"), "{e}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = EngineConfig::parse(BASE, "e.toml", env(&[])).unwrap();
        assert_eq!(c.engine.commit_interval_ms, 100);
        assert!(c.engine.sync_wal);
        assert_eq!(c.transactional_id(), "accrual-node-1");
        let c = EngineConfig::parse(
            BASE,
            "e.toml",
            env(&[
                ("ACCRUAL_KAFKA__BROKERS", "10.0.0.1:9093"),
                ("ACCRUAL_ENGINE__MAX_BATCH", "500"),
                ("ACCRUAL_ENGINE__SYNC_WAL", "false"),
                ("ACCRUAL_KAFKA__PROPERTIES__SASL_MECHANISM", "SCRAM-SHA-512"),
                ("OTHER_VAR", "ignored"),
                ("ACCRUAL_TEST_BROKERS", "not config"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "10.0.0.1:9093");
        assert_eq!(c.engine.max_batch, 500);
        assert!(!c.engine.sync_wal);
        assert_eq!(c.kafka.properties.get("sasl.mechanism").map(String::as_str), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn standbys_and_peers_are_checked_at_load() {
        let fail =
            |vars: &[(&str, &str)]| EngineConfig::parse(BASE, "e.toml", env(vars)).unwrap_err().to_string();
        let e = fail(&[("ACCRUAL_ENGINE__STANDBY_REPLICAS", "1")]);
        assert!(e.contains("engine.standby_replicas") && e.contains("kafka.topics.changelog"), "{e}");
        let e = fail(&[("ACCRUAL_HTTP__PEER_URL", "https://{instance_id}:9464")]);
        assert!(e.contains("http.peer_url") && e.contains("http://"), "{e}");
        let e = fail(&[("ACCRUAL_HTTP__PEER_URL", "http://accrual:9464")]);
        assert!(e.contains("{instance_id}"), "{e}");
        let c = EngineConfig::parse(
            BASE,
            "e.toml",
            env(&[
                ("ACCRUAL_HTTP__PEER_URL", "http://{instance_id}.accrual:9464/"),
                ("ACCRUAL_HTTP__PEERS__NODE-2", "http://10.0.0.7:9464"),
                ("ACCRUAL_KAFKA__TOPICS__CHANGELOG", "accrual.state"),
                ("ACCRUAL_ENGINE__STANDBY_REPLICAS", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(c.engine.standby_replicas, 2);
        assert_eq!(c.http.peer("node-3").as_deref(), Some("http://node-3.accrual:9464"));
        assert_eq!(c.http.peer("node-2").as_deref(), Some("http://10.0.0.7:9464"), "listed peers first");
    }

    #[test]
    fn errors_name_the_field() {
        let typo = BASE.replace("brokers", "brokrs");
        let e = EngineConfig::parse(&typo, "e.toml", env(&[])).unwrap_err().to_string();
        assert!(e.starts_with("e.toml: field `kafka.brokrs`: unknown field `brokrs`"), "{e}");

        let e = EngineConfig::parse(BASE, "e.toml", env(&[("ACCRUAL_ENGINE__MAX_BATCH", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("e.toml (environment ACCRUAL_ENGINE__MAX_BATCH): field `engine.max_batch`"),
            "{e}"
        );

        let managed = format!("{BASE}\n[kafka.properties]\n\"isolation.level\" = \"read_uncommitted\"\n");
        let e = EngineConfig::parse(&managed, "e.toml", env(&[])).unwrap_err().to_string();
        assert!(e.contains("`kafka.properties.isolation.level`"), "{e}");

        let same = BASE.replace("accruals = \"accruals\"", "accruals = \"transactions\"");
        let e = EngineConfig::parse(&same, "e.toml", env(&[])).unwrap_err().to_string();
        assert!(e.contains("must be different topics"), "{e}");

        let slow = BASE.replace("[engine]", "[engine]\ncommit_interval_ms = 40000");
        let e = EngineConfig::parse(&slow, "e.toml", env(&[])).unwrap_err().to_string();
        assert!(e.contains("transactions would time out"), "{e}");
    }
}
