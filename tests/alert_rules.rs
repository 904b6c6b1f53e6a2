//! The shipped alerts (`docker/prometheus/alerts.yml`) against their unit
//! tests (`alerts_test.yml`) with `promtool test rules` (Debian's
//! prometheus package, installed by scripts/install-deps.sh): every alert
//! has a case where it fires and one where it must not, and its runbook
//! link names a section of docs/operations.md.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.trim().trim_start_matches("- ").strip_prefix(key).map(str::trim)
}

#[test]
fn every_alert_is_unit_tested_with_promtool_and_links_its_runbook() {
    let dir = common::repo_path("docker/prometheus");
    let run = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool is not installed: run scripts/install-deps.sh (Debian package prometheus)");
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let alerts: BTreeSet<&str> = rules.lines().filter_map(|l| value(l, "alert:")).collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let operations = std::fs::read_to_string(common::repo_path("docs/operations.md")).unwrap();
    let sections: BTreeSet<String> =
        operations.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase()).collect();
    let runbooks: Vec<&str> = rules.lines().filter_map(|l| value(l, "runbook_url:")).collect();
    assert_eq!(runbooks.len(), alerts.len(), "one runbook_url per alert");
    for (alert, url) in alerts.iter().zip(&runbooks) {
        let anchor = url.strip_prefix("docs/operations.md#").unwrap_or_else(|| panic!("{alert}: {url}"));
        assert!(
            sections.contains(anchor),
            "{alert}: no section \"### ...\" of docs/operations.md for #{anchor}"
        );
    }

    // Which alerts the unit tests expect to fire, and not to.
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current = None;
    for line in tests.lines() {
        if let Some(name) = value(line, "alertname:") {
            current = Some(name);
        } else if let (Some(expected), Some(name)) = (value(line, "exp_alerts:"), current.take()) {
            if expected == "[]" {
                silent.insert(name)
            } else {
                firing.insert(name)
            };
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "no case where {alert} fires");
        assert!(silent.contains(alert), "no case where {alert} stays silent");
    }
}
