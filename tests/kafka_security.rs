//! Secured clusters, for real: a broker of its own that takes TLS only
//! (its own certificate, signed by a CA made here with openssl), with and
//! without SASL/SCRAM-SHA-512 logins. Every command (`topics`, `produce`,
//! `tick`, `consume`) and the engine with its built-in ticker connect
//! through `[kafka.properties]` with `security.protocol = "SSL"`, or
//! `"SASL_SSL"` with the password read from a file
//! (`sasl.password_file`), which then appears in no log or metric.
//! Plaintext is refused.

mod common;

use common::http::get;
use common::kafka::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PASSWORD: &str = "correct-horse-battery-staple-7";

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, and a server certificate it signed for 127.0.0.1.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| sh(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=accrual test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ]);
}

/// The secured broker, stopped when dropped.
struct Broker {
    dir: PathBuf,
    addr: String,
}

impl Broker {
    fn script(&self, args: &[&str], tls: bool, logins: bool) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(common::repo_path("scripts/broker.sh"))
            .args(args)
            .env("ACCRUAL_BROKER_ADDR", &self.addr)
            .env("ACCRUAL_BROKER_DIR", self.dir.join("broker"));
        if tls {
            cmd.env("ACCRUAL_BROKER_TLS_CERT", self.dir.join("server.pem"))
                .env("ACCRUAL_BROKER_TLS_KEY", self.dir.join("server.key"));
        }
        if logins {
            cmd.env("ACCRUAL_BROKER_AUTH", "1");
        }
        sh(&mut cmd)
    }

    /// The broker with TLS only; with `logins`, a user is created on it
    /// without TLS first, then it starts again with TLS and logins
    /// required (the same storage).
    fn start(dir: &Path, addr: &str, logins: bool) -> Broker {
        let broker = Broker { dir: dir.to_path_buf(), addr: addr.to_string() };
        if logins {
            broker.script(&["start"], false, false);
            broker.script(&["user", "bank-engine", PASSWORD], false, false);
            broker.script(&["stop"], false, false);
        }
        broker.script(&["start"], true, logins);
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(common::repo_path("scripts/broker.sh"))
            .arg("stop")
            .env("ACCRUAL_BROKER_ADDR", &self.addr)
            .env("ACCRUAL_BROKER_DIR", self.dir.join("broker"))
            .output();
    }
}

fn accrual(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accrual")).args(args).output().expect("run accrual")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn every_command_and_the_engine_reach_a_sasl_ssl_cluster_through_the_kafka_section() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let addr = "127.0.0.1:19393";
    let _broker = Broker::start(dir.path(), addr, true);
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let security = format!(
        r#""security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "bank-engine"
"sasl.password_file" = "{}"
"#,
        password.display()
    );
    let (log, metrics) = every_command_and_the_engine(dir.path(), addr, &security, "127.0.0.1:19481");
    // The secret stays secret.
    for (what, text) in [("engine log", log), ("metrics", metrics)] {
        assert!(!text.contains(PASSWORD), "the password appears in the {what}");
    }
}

#[test]
fn every_command_and_the_engine_reach_an_ssl_cluster_through_the_kafka_section() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let addr = "127.0.0.1:19394";
    let _broker = Broker::start(dir.path(), addr, false);
    every_command_and_the_engine(dir.path(), addr, "\"security.protocol\" = \"SSL\"\n", "127.0.0.1:19482");
}

/// `topics`, `produce`, `tick`, the engine with its ticker, and `consume`
/// against the TLS broker at `addr`, configured by `security` (properties
/// besides the CA); a plaintext client is refused. Returns the engine's
/// log and its metrics.
fn every_command_and_the_engine(dir: &Path, addr: &str, security: &str, listen: &str) -> (String, String) {
    let base = unique("secure");
    let (input, accruals) = (format!("{base}.transactions"), format!("{base}.accruals"));
    let config = dir.join("engine.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{addr}"
group_id = "{base}.group"

[kafka.topics]
input = "{input}"
accruals = "{accruals}"
dead_letter = "{base}.dlq"

[kafka.properties]
{security}"ssl.ca.location" = "{ca}"

[engine]
instance_id = "secure-1"
state_dir = "{state}"
rules = "{rules}"
commit_interval_ms = 50
clock_interval_ms = 300

[http]
listen = "{listen}"
"#,
            ca = dir.join("ca.pem").display(),
            state = dir.join("state").display(),
            rules = common::repo_path("config/rules.example.toml").display(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let topics = [
        "topics",
        "--config",
        config,
        "--partitions",
        "2",
        "--replication-factor",
        "1",
        "--min-insync-replicas",
        "1",
        "--topic-config",
        "input:retention.ms=1209600000",
    ];
    let out = accrual(&topics);
    assert!(out.status.success(), "topics: {}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("topic {input}: 2 partitions min.insync.replicas=1 retention.ms=1209600000")),
        "{said}"
    );

    let lines = common::generated_lines(&accrual::datagen::GenOptions {
        events: 500,
        accounts: 40,
        seed: 4,
        start: common::past_start(),
        ..Default::default()
    });
    let events = dir.join("events.ndjson");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let out =
        accrual(&["produce", "--config", config, "--topic", &input, "--input", events.to_str().unwrap()]);
    assert!(out.status.success(), "produce: {}", text(&out));
    let out = accrual(&["tick", "--config", config]);
    assert!(out.status.success(), "tick: {}", text(&out));

    // The engine, its ticker sending clocks while it runs.
    let mut engine = EngineProcess::spawn(Path::new(config), &[], None);
    let started = std::time::Instant::now();
    let consumed = loop {
        let out = accrual(&["consume", "--config", config, "--topic", &accruals, "--idle-ms", "1000"]);
        let n: usize = text(&out)
            .lines()
            .find_map(|l| l.strip_suffix(&format!(" messages in {accruals}"))?.parse().ok())
            .unwrap_or(0);
        if n > 0 && started.elapsed() > Duration::from_secs(3) {
            break n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no accruals: {}\n{}",
            text(&out),
            engine.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_, metrics) = get(listen, "/metrics", &[]).expect("metrics");
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());

    let (reference, _) = reference(dir, &lines);
    assert!(consumed >= reference.len(), "{consumed} accruals, simulate gives {}", reference.len());
    // Clocks from `tick` and from the engine's ticker reached the input.
    let out = accrual(&[
        "consume",
        "--config",
        config,
        "--topic",
        &input,
        "--out",
        dir.join("in.ndjson").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let input_text = std::fs::read_to_string(dir.join("in.ndjson")).unwrap();
    assert!(input_text.contains("\"event_id\":\"clock-secure-1-"), "no clock from the built-in ticker");

    // Nothing reaches this broker in plaintext.
    let out = accrual(&["consume", "--brokers", addr, "--topic", &input, "--idle-ms", "500"]);
    assert!(!out.status.success(), "a plaintext client read the topic: {}", text(&out));
    (engine.log_text(), metrics)
}
