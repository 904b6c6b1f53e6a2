//! The Kubernetes manifests (`deploy/kubernetes`): valid against
//! Kubernetes' own schemas, strictly (`scripts/kubernetes.sh validate`:
//! kubernetes-validate from PyPI; the PrometheusRule, a CRD, checked with
//! promtool and against `docker/prometheus/alerts.yml`), and the engine
//! config in the ConfigMap loads as the engine loads it.

mod common;

use accrual::config::EngineConfig;
use std::process::Command;

/// The `engine.toml` block of the ConfigMap, as the pod sees the file.
fn configmap_engine_toml(manifest: &str) -> String {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "engine.toml: |").skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        match line.strip_prefix("    ") {
            Some(text) => out.push_str(text),
            None if line.trim().is_empty() => {}
            None => break,
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_manifests_are_valid_and_their_engine_config_loads() {
    let run = Command::new("bash")
        .arg(common::repo_path("scripts/kubernetes.sh"))
        .arg("validate")
        .output()
        .expect("run scripts/kubernetes.sh");
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{out}");
    for kind in ["configmap", "service", "statefulset", "poddisruptionbudget"] {
        assert!(out.contains(&format!("passed for resource {kind}/accrual")), "{kind} not validated:\n{out}");
    }
    assert!(out.contains("deploy/kubernetes: valid"), "{out}");

    let manifest = std::fs::read_to_string(common::repo_path("deploy/kubernetes/accrual.yaml")).unwrap();
    let toml = configmap_engine_toml(&manifest);
    assert!(toml.contains("[kafka.topics]"), "{toml}");
    // The secrets the pod mounts, here as files of our own.
    let dir = tempfile::tempdir().unwrap();
    let (password, token) = (dir.path().join("password"), dir.path().join("token"));
    std::fs::write(&password, "pw\n").unwrap();
    std::fs::write(&token, "tok\n").unwrap();
    let env = [
        ("ACCRUAL_ENGINE__INSTANCE_ID", "accrual-0"),
        ("ACCRUAL_KAFKA__PROPERTIES__SASL_PASSWORD_FILE", password.to_str().unwrap()),
        ("ACCRUAL_HTTP__TOKEN_FILE", token.to_str().unwrap()),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = EngineConfig::parse(&toml, "configmap engine.toml", env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.engine.instance_id, "accrual-0");
    assert_eq!(config.engine.standby_replicas, 2, "warm copies on the other two pods");
    assert!(config.kafka.topics.changelog.is_some(), "state follows its partition between pods");
    assert_eq!(config.http.token, "tok");
    assert_eq!(config.kafka.properties.get("sasl.password").map(String::as_str), Some("pw"));
}
