//! A real Prometheus (Debian's package, installed by scripts/install-deps.sh)
//! with the shipped scrape config (`docker/prometheus/prometheus.yml`, which
//! loads `alerts.yml`) against a running engine: the alert rules pass
//! promtool and load healthy, and every PromQL expression of the Grafana
//! dashboard and of the alerts is evaluated through Prometheus' HTTP API:
//! none errors, and each dashboard query and each alert's `metric_query`
//! returns data.

mod common;

use accrual::datagen::GenOptions;
use common::http::get;
use common::kafka::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "127.0.0.1:19090";
/// The engine address in the shipped scrape config.
const ENGINE: &str = "127.0.0.1:9464";

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Evaluates `query` now; returns the result series, or the error.
fn query(q: &str) -> Result<Vec<serde_json::Value>, String> {
    let (status, body) =
        get(PROMETHEUS, &format!("/api/v1/query?query={}", encode(q)), &[]).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn events(n: u64, seed: u64) -> Vec<String> {
    let opts = GenOptions {
        events: n,
        accounts: 200,
        seed,
        malformed_percent: 1.0,
        duplicate_percent: 1.0,
        ..GenOptions::default()
    };
    common::generated_lines(&opts)
}

#[test]
fn every_dashboard_and_alert_query_returns_data_in_a_real_prometheus() {
    let repo = common::repo_path("");
    let config = repo.join("docker/prometheus/prometheus.yml");
    let alerts = repo.join("docker/prometheus/alerts.yml");
    let check = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&alerts)
        .output()
        .expect("promtool is not installed: run scripts/install-deps.sh (Debian package prometheus)");
    assert!(check.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&check.stdout));

    let setup = Setup::new("prometheus", 4);
    let dir = tempfile::tempdir().unwrap();
    let engine_config = setup.config_http(dir.path(), "node-1", "max_batch = 300", ENGINE, "");
    let mut engine = EngineProcess::spawn(&engine_config, &[], None);
    let tsdb = dir.path().join("tsdb");
    let prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed: run scripts/install-deps.sh"),
    );
    let started = Instant::now();
    while !matches!(get(PROMETHEUS, "/-/ready", &[]), Ok((200, _))) {
        assert!(started.elapsed() < Duration::from_secs(30), "Prometheus did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Traffic across several scrapes (every 10 s in the shipped config).
    let all = events(4_000, 77);
    for (i, chunk) in all.chunks(400).enumerate() {
        setup.produce(dir.path(), chunk);
        std::thread::sleep(Duration::from_secs(3));
        eprintln!("chunk {i} produced; lag {:?}", setup.lag());
    }
    let started = Instant::now();
    loop {
        let samples = query("min(count_over_time(accrual_events_consumed_total[5m]))").unwrap_or_default();
        let n = samples
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= 3.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "Prometheus did not scrape the engine 3 times");
        std::thread::sleep(Duration::from_secs(1));
    }

    let (_, targets) = get(PROMETHEUS, "/api/v1/targets", &[]).unwrap();
    assert!(targets.contains("\"health\":\"up\""), "the engine target is up: {targets}");
    let (_, rules) = get(PROMETHEUS, "/api/v1/rules", &[]).unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let shipped =
        std::fs::read_to_string(&alerts).unwrap().lines().filter(|l| l.contains("- alert:")).count();
    assert!(shipped >= 9, "{shipped}");
    assert_eq!(loaded.len(), shipped, "the shipped alert rules are loaded");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "every rule evaluates: {loaded:?}");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("docker/grafana/dashboards/accrual.json")).unwrap(),
    )
    .unwrap();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance"]);
    let mut failures = Vec::new();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Every selector is narrowed to the chosen job and instances,
            // and rates follow Grafana's interval, not a fixed window.
            let selectors = expr.matches("accrual_").count();
            assert_eq!(expr.matches(r#"{job=~"$job",instance=~"$instance"}"#).count(), selectors, "{expr}");
            assert!(!expr.contains("[5m]"), "{expr}");
            // What Grafana substitutes: all instances of the shipped job.
            let expr =
                &expr.replace("$__rate_interval", "1m").replace("$job", "accrual").replace("$instance", ".*");
            checked += 1;
            match query(expr) {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => failures.push(format!("panel {:?}: no data for {expr}", panel["title"])),
                Err(e) => failures.push(format!("panel {:?}: {expr}: {e}", panel["title"])),
            }
        }
    }
    let text = std::fs::read_to_string(&alerts).unwrap();
    let field = |line: &str, key: &str| line.trim().strip_prefix(key).map(|v| v.trim().to_string());
    for line in text.lines() {
        if let Some(expr) = field(line, "expr:") {
            checked += 1;
            if let Err(e) = query(&expr) {
                failures.push(format!("alert expr {expr}: {e}"));
            }
        }
        if let Some(expr) = field(line, "metric_query:") {
            checked += 1;
            match query(&expr) {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => failures.push(format!("alert metric_query: no data for {expr}")),
                Err(e) => failures.push(format!("alert metric_query {expr}: {e}")),
            }
        }
    }
    assert!(checked >= 30, "{checked} queries checked");
    assert!(failures.is_empty(), "{} of {checked} queries failed:\n{}", failures.len(), failures.join("\n"));
    drop(prometheus);
    engine.terminate();
    assert!(engine.wait(Duration::from_secs(60)).success(), "{}", engine.log_text());
}
