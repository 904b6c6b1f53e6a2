//! The runtime image (`docker/Dockerfile`, target `prebuilt`) built here
//! with podman around the binary under test (`scripts/image.sh build`),
//! run against the local broker on the host network: events in, accruals
//! out exactly once with simulate's balances, the image's health check
//! healthy, a clean stop on SIGTERM, state in its volume. Needs podman and
//! the base image: `scripts/image.sh deps` (scripts/test.sh runs it).

mod common;

use accrual::datagen::GenOptions;
use common::http::wait_ready;
use common::kafka::*;
use std::process::{Command, Output};
use std::time::Duration;

const TAG: &str = "localhost/accrual:test";

fn image(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(common::repo_path("scripts/image.sh"))
        .args(args)
        .output()
        .expect("run scripts/image.sh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn podman(args: &[&str]) -> Output {
    let mut all = vec!["podman"];
    all.extend_from_slice(args);
    image(&all)
}

/// Removes the container and its volume however the test ends.
struct Cleanup {
    container: String,
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-t", "5", &self.container]);
        podman(&["volume", "rm", "-f", &self.volume]);
    }
}

#[test]
fn the_image_runs_the_engine_against_the_broker_healthy_and_exactly_once() {
    let built = image(&["build", env!("CARGO_BIN_EXE_accrual"), TAG]);
    assert!(built.status.success(), "building the image (scripts/image.sh deps first?):\n{}", text(&built));
    let size = podman(&["image", "inspect", TAG, "--format", "{{.Size}}"]);
    let bytes: u64 = String::from_utf8_lossy(&size.stdout).trim().parse().expect("an image size");
    eprintln!("image {TAG}: {:.0} MB", bytes as f64 / 1e6);

    let setup = Setup::new("image", 3);
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        events: 2_000,
        accounts: 150,
        seed: 29,
        days: 30,
        start: common::past_start(),
        duplicate_percent: 2.0,
        malformed_percent: 1.0,
        ..GenOptions::default()
    };
    let lines = common::generated_lines(&opts);
    let (reference, reference_accounts) = reference(dir.path(), &lines);

    let name = unique("accrual-image");
    let cleanup = Cleanup { container: name.clone(), volume: format!("{name}-state") };
    let listen = "127.0.0.1:19480";
    let env = [
        format!("ACCRUAL_KAFKA__BROKERS={}", setup.brokers),
        format!("ACCRUAL_KAFKA__GROUP_ID={}", setup.group),
        format!("ACCRUAL_KAFKA__TOPICS__INPUT={}", setup.input),
        format!("ACCRUAL_KAFKA__TOPICS__ACCRUALS={}", setup.accruals),
        format!("ACCRUAL_KAFKA__TOPICS__DEAD_LETTER={}", setup.dlq),
        "ACCRUAL_ENGINE__INSTANCE_ID=image-1".to_string(),
        format!("ACCRUAL_HTTP__LISTEN={listen}"),
    ];
    let mut args = vec!["run", "-d", "--name", &name];
    for e in &env {
        args.extend(["-e", e]);
    }
    let volume = format!("{}:/var/lib/accrual", cleanup.volume);
    args.extend(["-v", &volume, TAG]);
    let started = image(&args);
    assert!(started.status.success(), "podman run:\n{}", text(&started));
    let logs = || text(&podman(&["logs", &name]));

    setup.produce(dir.path(), &lines);
    assert!(setup.wait_all_committed(Duration::from_secs(120)), "not all input committed:\n{}", logs());
    assert!(wait_ready(listen, Duration::from_secs(30)), "never ready:\n{}", logs());
    // The image's own HEALTHCHECK, run inside the container.
    let health = podman(&["healthcheck", "run", &name]);
    assert!(health.status.success(), "health check: {}\n{}", text(&health), logs());
    let user = podman(&["exec", &name, "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001", "the engine runs as its own user");

    let stopped = podman(&["stop", "-t", "30", &name]);
    assert!(stopped.status.success(), "podman stop: {}", text(&stopped));
    let code = podman(&["inspect", &name, "--format", "{{.State.ExitCode}}"]);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "a clean stop on SIGTERM:\n{}", logs());
    assert!(logs().contains("\"level\":\"INFO\""), "logs are JSON in the image:\n{}", logs());

    // The state lives in the volume.
    let mount = podman(&["volume", "inspect", &cleanup.volume, "--format", "{{.Mountpoint}}"]);
    let state = std::path::PathBuf::from(String::from_utf8_lossy(&mount.stdout).trim()).join("state");
    assert_exactly_once(&setup.read(&setup.accruals), &reference, &journal(&state));
    assert!(engine_accounts(&state, setup.partitions) == reference_accounts, "balances differ from simulate");
    assert!(!setup.read(&setup.dlq).is_empty(), "malformed events reach the dead-letter topic");
}
