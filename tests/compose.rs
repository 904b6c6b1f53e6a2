//! The compose stack (`docker/compose.yml` with `docker/compose.local.yml`,
//! which swaps Apache Kafka for the local broker and Prometheus for
//! Debian's, in images made here) run with podman-compose: topics created,
//! three instances and the load generator running, accruals flowing, every
//! instance ready, scraped by Prometheus and answering any account's
//! balance, and no error in any instance's log.

mod common;

use accrual::kafka_tools::{self, Connection};
use common::http::{get, wait_ready};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/accrual:compose";
const BROKER: &str = "127.0.0.1:19192";
const PROMETHEUS: &str = "127.0.0.1:19490";
const INSTANCES: [&str; 3] = ["127.0.0.1:19471", "127.0.0.1:19472", "127.0.0.1:19473"];

fn image(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(common::repo_path("scripts/image.sh"))
        .args(args)
        .env("ACCRUAL_IMAGE", IMAGE)
        .output()
        .expect("run scripts/image.sh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Stack(String);

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        let mut all = vec!["compose", "-p", &self.0];
        all.extend_from_slice(args);
        image(&all)
    }

    fn logs(&self, service: &str) -> String {
        text(&image(&["podman", "logs", &format!("{}_{service}_1", self.0)]))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.compose(&["down", "-v", "-t", "5"]);
    }
}

fn targets_up() -> usize {
    let Ok((200, body)) = get(PROMETHEUS, "/api/v1/targets", &[]) else { return 0 };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
    targets.iter().filter(|t| t["labels"]["job"] == "accrual" && t["health"] == "up").count()
}

#[test]
fn the_compose_stack_runs_three_instances_scraped_by_prometheus() {
    let built = image(&["build", env!("CARGO_BIN_EXE_accrual"), IMAGE]);
    assert!(built.status.success(), "{}", text(&built));
    let tools = image(&["tools"]);
    assert!(tools.status.success(), "{}", text(&tools));

    let stack = Stack(format!("accrual-compose-{}", std::process::id()));
    let started = Instant::now();
    let up = stack.compose(&["up", "-d", "--no-deps"]);
    assert!(up.status.success(), "podman-compose up:\n{}", text(&up));

    let kafka = Connection::plain(BROKER);
    let (mut accruals, mut scraped) = (0, 0);
    while started.elapsed() < Duration::from_secs(180) {
        accruals =
            kafka_tools::read_topic(&kafka, "accruals", true, Duration::from_secs(2)).map_or(0, |m| m.len());
        scraped = targets_up();
        if accruals > 1_000 && scraped == 3 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let logs =
        || ["topics", "accrual-1", "accrual-2", "accrual-3", "loadgen"].map(|s| stack.logs(s)).join("\n");
    assert!(accruals > 1_000, "{accruals} accruals after {:?}:\n{}", started.elapsed(), logs());
    assert_eq!(scraped, 3, "Prometheus scrapes every instance:\n{}", logs());
    eprintln!("accruals flowing and 3 targets up {:.0} s after `up`", started.elapsed().as_secs_f64());

    for address in INSTANCES {
        assert!(wait_ready(address, Duration::from_secs(60)), "{address} not ready:\n{}", logs());
        // Any instance answers any account: its own, or forwarded (503
        // "retry" until it has learnt the owners from the changelog).
        for account in ["acc-0000001", "acc-0000002", "acc-0000003", "acc-0000004"] {
            let asked = Instant::now();
            loop {
                let (status, body) = get(address, &format!("/v1/accounts/{account}/balance"), &[]).unwrap();
                if status == 200 {
                    break;
                }
                assert!(asked.elapsed() < Duration::from_secs(30), "{address} {account}: {status} {body}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    for service in ["accrual-1", "accrual-2", "accrual-3"] {
        let log = stack.logs(service);
        assert!(log.contains("\"level\":\"INFO\""), "{service} logs JSON:\n{log}");
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
        assert!(errors.is_empty(), "{service} logged errors:\n{}", errors.join("\n"));
    }
}
