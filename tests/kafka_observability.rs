//! The HTTP surface of a running engine: `/metrics` counts what was
//! processed; the balance lookup (auth, unknown accounts, partitions owned
//! elsewhere); readiness while a partition recovers; no republish without
//! a changelog.

mod common;

use accrual::datagen::GenOptions;
use accrual::simulate::{self, SimulateOptions};
use common::d;
use common::http::{get, get_retrying, metric, post};
use common::kafka::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 150,
        seed,
        refund_percent: 3.0,
        duplicate_percent: 2.0,
        malformed_percent: 1.0,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

fn wait_ready(address: &str) {
    assert!(common::http::wait_ready(address, Duration::from_secs(60)), "{address} never became ready");
}

#[test]
fn metrics_count_what_was_processed_and_the_balance_lookup_answers() {
    let setup = Setup::new("metrics", 3);
    let dir = tempfile::tempdir().unwrap();
    let lines = events(3_000, 12);
    setup.produce(dir.path(), &lines);
    let address = "127.0.0.1:19464";
    let config = setup.config_http(dir.path(), "node-1", "max_batch = 500", address, "s3cret");
    let mut engine = EngineProcess::spawn(&config, &[("ACCRUAL_LOG__FORMAT", "json")], None);
    wait_ready(address);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "lag {:?}", setup.lag());
    // Without a changelog there is nothing to publish a state to again.
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, body) = post(address, "/v1/partitions/0/changelog/republish", &auth).unwrap();
    assert!(status == 409 && body.contains("no changelog"), "{status} {body}");

    // What simulate says this input is.
    let input = dir.path().join("input.ndjson");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let reference_out = dir.path().join("reference.ndjson");
    let state = dir.path().join("reference-state");
    let summary = simulate::run(&SimulateOptions {
        rules: common::repo_path("config/rules.example.toml"),
        input,
        out: Some(reference_out.clone()),
        dlq: None,
        state_dir: Some(state.clone()),
        batch_size: 1000,
        show_progress: false,
        now: Some(common::test_now()),
    })
    .unwrap();
    let mut amounts: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for line in std::fs::read_to_string(&reference_out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (v["program"].as_str().unwrap().to_string(), v["kind"].as_str().unwrap().to_string());
        *amounts.entry(key).or_default() += Decimal::from_str(v["amount"].as_str().unwrap()).unwrap();
    }

    // Statistics arrive every 5 s: wait until the lag gauges are reported.
    let started = Instant::now();
    let text = loop {
        let (status, text) = get(address, "/metrics", &[]).unwrap();
        assert_eq!(status, 200);
        let lags = (0..3)
            .filter(|p| {
                metric(&text, "accrual_consumer_lag_messages", &[&format!("partition=\"{p}\"")]).is_some()
            })
            .count();
        if lags == 3 || started.elapsed() > Duration::from_secs(30) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let count = |name: &str| metric(&text, name, &[]).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
    assert_eq!(count("accrual_events_consumed_total") as usize, lines.len());
    assert_eq!(count("accrual_records_emitted_total") as u64, summary.stats.records);
    assert_eq!(count("accrual_dead_letters_total") as u64, summary.stats.dead_letters);
    assert_eq!(count("accrual_duplicates_total") as u64, summary.stats.duplicates);
    assert_eq!(count("accrual_assigned_partitions"), 3.0);
    assert_eq!(count("accrual_ready"), 1.0);
    assert_eq!(count("accrual_consumer_lag_messages"), 0.0);
    assert!(count("accrual_kafka_transactions_total") >= 6.0, "3,000 events in batches of 500");
    assert!(count("accrual_rocksdb_commit_duration_seconds_count") >= 6.0);
    assert!(count("accrual_end_to_end_latency_seconds_count") >= 1.0);
    let version = format!("version=\"{}\"", summary.rules_version);
    let rules_info = ["name=\"Everyday card\"", version.as_str(), "effective_from=\"-\""];
    assert_eq!(metric(&text, "accrual_rules_info", &rules_info), Some(1.0), "{text}");
    for result in ["applied", "unchanged", "refused", "invalid"] {
        let with = format!("result=\"{result}\"");
        assert_eq!(metric(&text, "accrual_rules_reloads_total", &[&with]), Some(0.0), "{text}");
    }
    // Money and points under names of their own (the example's programs
    // are named after their kinds).
    assert!(!text.contains("accrual_amount_total"), "the old metric mixing money and points");
    for ((program, kind), total) in &amounts {
        let labels = [format!("program=\"{program}\""), format!("kind=\"{kind}\"")];
        let name = match program.as_str() {
            "cashback" => "accrual_cashback_amount_total",
            _ => "accrual_points_amount_total",
        };
        let exported = metric(&text, name, &[&labels[0], &labels[1]]).unwrap();
        assert_eq!(
            Decimal::from_str(&exported.to_string()).unwrap().round_dp(2),
            total.round_dp(2),
            "{program} {kind}"
        );
    }

    // The balance lookup: customer data behind the token.
    let store = open_store(&state);
    let (account, reference) = store.accounts(0).unwrap().into_iter().next().unwrap();
    let path = format!("/v1/accounts/{account}/balance");
    assert_eq!(get(address, &path, &[]).unwrap().0, 401);
    assert_eq!(get(address, &path, &[("Authorization", "Bearer wrong")]).unwrap().0, 401);
    let (status, body) = get(address, &path, &[("Authorization", "Bearer s3cret")]).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for program in v["programs"].as_array().unwrap() {
        let name = program["program"].as_str().unwrap();
        let expected = reference.balance(name).unwrap();
        assert_eq!(
            program["available"].as_str().unwrap(),
            accrual::money::with_scale(expected.available, expected.decimals).to_string()
        );
        assert_eq!(
            program["lifetime_earned"].as_str().unwrap(),
            accrual::money::with_scale(expected.lifetime_earned, expected.decimals).to_string()
        );
    }
    // Cap usage per period, as the account's counters hold it.
    let caps = v["caps"].as_array().unwrap();
    assert_eq!(caps.len(), reference.counters.len(), "{body}");
    for (shown, counter) in caps.iter().zip(&reference.counters) {
        assert_eq!(shown["cap"].as_str(), Some(&*counter.cap));
        let (used, left) = (d(shown["used"].as_str().unwrap()), d(shown["left"].as_str().unwrap()));
        assert_eq!(used, counter.used, "{shown}");
        assert_eq!(left, (d(shown["limit"].as_str().unwrap()) - used).max(Decimal::ZERO), "{shown}");
    }
    let (status, body) =
        get(address, "/v1/accounts/nobody-at-all/balance", &[("Authorization", "Bearer s3cret")]).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown account"));
    // Health and metrics need no token.
    assert_eq!(get(address, "/healthz", &[]).unwrap(), (200, "ok\n".to_string()));
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
    assert_logs_are_lifecycle_only(&engine.log_text(), &lines);
}

/// JSON logs at info: lifecycle lines with partition and offset, nothing
/// per event, no customer data.
fn assert_logs_are_lifecycle_only(log: &str, input: &[String]) {
    let entries: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(entries.len() < 40, "{} log lines for {} events:\n{log}", entries.len(), input.len());
    let assigned: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["fields"]["message"] == "partition assigned").collect();
    assert_eq!(assigned.len(), 3, "{log}");
    for entry in assigned {
        assert_eq!(entry["level"], "INFO");
        assert!(entry["fields"]["partition"].is_u64() && entry["fields"]["start_offset"].is_u64(), "{entry}");
    }
    assert!(entries.iter().any(|e| e["fields"]["message"] == "engine stopped"), "{log}");
    for line in input {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for field in ["account_id", "card_id", "amount", "event_id"] {
            if let Some(value) = event[field].as_str() {
                assert!(!log.contains(&format!("\"{value}\"")), "{field} {value} in the log:\n{log}");
            }
        }
    }
}

#[test]
fn an_account_of_a_partition_owned_elsewhere_is_answered_by_its_owner() {
    // With a changelog: this broker's group description names no owners,
    // so the changelog's last writers stand for them.
    let setup = Setup::new("misdirected", 4).with_changelog();
    let dir = tempfile::tempdir().unwrap();
    let (a_addr, b_addr) = ("127.0.0.1:19465", "127.0.0.1:19466");
    let rules = "config/rules.example.toml";
    // node-a knows where node-b answers; node-b knows no peers.
    let a_http = format!(
        "[http]\nlisten = \"{a_addr}\"\ntoken = \"s3cret\"\n[http.peers]\nnode-b = \"http://{b_addr}\"\n"
    );
    let b_http = format!("[http]\nlisten = \"{b_addr}\"\ntoken = \"s3cret\"\n");
    let mut a = EngineProcess::spawn(&setup.config_full(dir.path(), "node-a", "", rules, &a_http), &[], None);
    wait_ready(a_addr);
    let mut b = EngineProcess::spawn(&setup.config_full(dir.path(), "node-b", "", rules, &b_http), &[], None);
    let started = Instant::now();
    while !b.log_text().contains("partition assigned") && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_ready(a_addr);
    wait_ready(b_addr);
    setup.produce(dir.path(), &events(800, 3));
    assert!(setup.wait_all_committed(Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(3)); // the group's owners, as the instances read them
    let auth = [("Authorization", "Bearer s3cret")];
    let mut served_by = BTreeMap::new();
    for n in 1..=12 {
        let path = format!("/v1/accounts/acc-{n:07}/balance");
        // Until the instances have read the owners (every 2 s, longer on
        // a busy machine), a lookup answers 503 and says to retry.
        let (sa, head_a, body_a) = get_retrying(a_addr, &path, &auth, Duration::from_secs(20)).unwrap();
        let (sb, head_b, body_b) = get_retrying(b_addr, &path, &auth, Duration::from_secs(20)).unwrap();
        // node-a answers every account: its own, or node-b's through node-b.
        assert_eq!(sa, 200, "{path}: {head_a}\n{body_a}");
        let forwarded = head_a.to_ascii_lowercase().contains("x-accrual-served-by: node-b");
        served_by.insert(n, if forwarded { "node-b" } else { "node-a" });
        if forwarded {
            assert_eq!((sb, &body_b), (200, &body_a), "{path}: node-b's own answer, passed on as it is");
        } else {
            // node-b has no address for node-a: it names the owner.
            assert_eq!(sb, 421, "{path}: {head_b}\n{body_b}");
            assert!(body_b.contains("owned by instance node-a"), "{body_b}");
        }
        // Credentials are checked before anything is forwarded.
        assert_eq!(get(a_addr, &path, &[]).unwrap().0, 401);
    }
    assert!(
        served_by.values().any(|s| *s == "node-a") && served_by.values().any(|s| *s == "node-b"),
        "{served_by:?}"
    );
    // A forwarded lookup is never forwarded again.
    let elsewhere = served_by.iter().find(|(_, s)| **s == "node-a").map(|(n, _)| *n).unwrap();
    let path = format!("/v1/accounts/acc-{elsewhere:07}/balance");
    let loop_guard = [auth[0], ("x-accrual-forwarded-by", "node-x")];
    let (status, body) = get(b_addr, &path, &loop_guard).unwrap();
    assert_eq!(status, 421, "{body}");
    b.terminate();
    a.terminate();
    let _ = (b.wait(Duration::from_secs(60)), a.wait(Duration::from_secs(60)));
}

#[test]
fn readiness_is_503_while_a_partition_recovers() {
    let setup = Setup::new("readiness", 2);
    let dir = tempfile::tempdir().unwrap();
    setup.produce(dir.path(), &events(1_000, 5));
    let address = "127.0.0.1:19467";
    let config = setup.config_http(dir.path(), "node-1", "max_batch = 200", address, "");
    let mut crashed = EngineProcess::spawn(&config, &[("ACCRUAL_FAILPOINT", "after-state-commit:2")], None);
    assert!(!crashed.wait(Duration::from_secs(120)).success());
    // Restart with recovery slowed down so it can be watched.
    let mut engine = EngineProcess::spawn(&config, &[("ACCRUAL_FAILPOINT", "slow-recovery:4000")], None);
    let started = Instant::now();
    let mut saw_recovering = false;
    while started.elapsed() < Duration::from_secs(60) {
        match get(address, "/readyz", &[]) {
            Ok((503, body)) if body.contains("is recovering") => {
                saw_recovering = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(saw_recovering, "never saw the recovery:\n{}", engine.log_text());
    let (_, metrics_text) = get(address, "/metrics", &[]).unwrap();
    assert_eq!(metric(&metrics_text, "accrual_ready", &[]), Some(0.0));
    wait_ready(address);
    assert!(setup.wait_all_committed(Duration::from_secs(60)));
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
}

/// The listener is up before Kafka is reached: with no broker at all,
/// `/healthz` answers and `/readyz` says why it is not ready.
#[test]
fn health_answers_while_the_broker_is_down() {
    let setup = Setup::new("nobroker", 1);
    let dir = tempfile::tempdir().unwrap();
    let address = "127.0.0.1:19468";
    let config = setup.config_http(dir.path(), "node-1", "", address, "");
    // Nothing listens on the discard port.
    let text = std::fs::read_to_string(&config).unwrap().replace(&setup.brokers, "127.0.0.1:9");
    std::fs::write(&config, text).unwrap();
    let mut engine = EngineProcess::spawn(&config, &[], None);
    let started = Instant::now();
    let mut health = None;
    while started.elapsed() < Duration::from_secs(8) && health.is_none() {
        health = get(address, "/healthz", &[]).ok().filter(|(status, _)| *status == 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(health.is_some(), "no /healthz while the broker is down:\n{}", engine.log_text());
    let (status, body) = get(address, "/readyz", &[]).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no partitions assigned yet"), "{body}");
    assert!(engine.child.try_wait().unwrap().is_none(), "still trying to reach Kafka");
    engine.kill();
}

/// Many clients hammering the balance endpoint at once: each lookup is
/// answered (200, 404) or turned away at once (503), and `/healthz` and
/// `/metrics` keep answering quickly throughout.
#[test]
fn a_flood_of_balance_lookups_leaves_health_and_metrics_answering() {
    let setup = Setup::new("flood", 2);
    let dir = tempfile::tempdir().unwrap();
    setup.produce(dir.path(), &events(2_000, 9));
    let address = "127.0.0.1:19469";
    let config = setup.config_http(dir.path(), "node-1", "", address, "");
    let mut engine = EngineProcess::spawn(&config, &[], None);
    wait_ready(address);
    assert!(setup.wait_all_committed(Duration::from_secs(120)));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..64)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut statuses = BTreeMap::new();
                for i in 0..40 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let path = format!("/v1/accounts/acc-{:07}/balance", 1 + (t * 40 + i) % 150);
                    let status = get(address, &path, &[]).map_or(0, |(s, _)| s);
                    *statuses.entry(status).or_insert(0u32) += 1;
                }
                statuses
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        for path in ["/healthz", "/metrics"] {
            let asked = Instant::now();
            let (status, _) = get(address, path, &[]).unwrap();
            assert_eq!(status, 200, "{path} during the flood");
            slowest = slowest.max(asked.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for thread in flood {
        for (status, n) in thread.join().unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    // Found, unknown (the flood asks for accounts that never bought), or
    // turned away while the lookups in flight are at their limit.
    assert!(statuses.keys().all(|s| [200, 404, 503].contains(s)), "{statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(slowest < Duration::from_secs(2), "/healthz or /metrics took {slowest:?} during the flood");
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
}
