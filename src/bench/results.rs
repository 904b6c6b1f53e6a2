//! What `accrual bench` measured: the results it writes as JSON and
//! prints as a table, and the machine it ran on.

use super::FailoverRun;
use super::RestoreRun;
use super::latency::LatencyResult;
use serde::Serialize;
use std::time::Duration;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub target: String,
    pub partitions: i32,
    pub events: u64,
    pub records: u64,
    pub transactions: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_million_events: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateSizeRun {
    pub accounts: u64,
    pub seed_seconds: f64,
    /// State directory after seeding, per account.
    pub disk_bytes_per_account: f64,
    pub run: Throughput,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub accrual_version: String,
    pub build: String,
    /// Cores other processes kept busy in the second before the first
    /// round (none where `/proc/stat` cannot be read): a broker compacting
    /// in the background or a build takes CPU the runs then lack.
    pub busy_cores_before: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub brokers: String,
    pub events: u64,
    pub accounts: u64,
    pub skew: f64,
    pub partitions: i32,
    pub rules: String,
    pub commit_interval_ms: u64,
    pub max_batch: usize,
    pub sync_wal: bool,
}

/// One throughput round: both targets over the same events.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub baseline: Throughput,
    pub accrual: Throughput,
    /// accrual events/s over baseline events/s.
    pub ratio: f64,
    /// With `--changelog`: accrual without it, over the same events.
    pub accrual_without_changelog: Option<Throughput>,
    /// With `--changelog`: accrual's events/s with it over without it.
    pub changelog_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub produce_events_per_second: f64,
    /// The median round's runs (the only round's, by default).
    pub baseline: Throughput,
    pub accrual: Throughput,
    /// The median round's accrual events/s over baseline events/s.
    pub ratio: f64,
    /// With `--changelog`: the median round's accrual run without it.
    pub accrual_without_changelog: Option<Throughput>,
    /// With `--changelog`: the median over the rounds of accrual's events/s
    /// with it over without it (the changelog's own cost).
    pub changelog_ratio: Option<f64>,
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    pub latency: Vec<LatencyResult>,
    pub scaling_partitions: Vec<(Throughput, Throughput)>,
    pub scaling_state: Vec<StateSizeRun>,
    /// With `--changelog`: the first round's state restored from it.
    pub restore: Option<RestoreRun>,
    /// With `--changelog --failover`.
    pub failover: Vec<FailoverRun>,
}

/// The round whose ratio is the median (the lower middle one of an even
/// number of rounds). `--rounds` is at least 1.
pub(super) fn median_round(rounds: &[Round]) -> &Round {
    lower_middle(rounds.iter().collect(), |r| r.ratio).expect("at least one round")
}

/// The median of the rounds' changelog ratios (the lower middle one of an
/// even number), if they have them.
pub(super) fn median_changelog_ratio(rounds: &[Round]) -> Option<f64> {
    lower_middle(rounds.iter().filter_map(|r| r.changelog_ratio).collect(), |x| *x)
}

/// The middle item by `key`, the lower middle one of an even number; none
/// of none.
fn lower_middle<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len().checked_sub(1)? / 2;
    Some(items.swap_remove(middle))
}

pub(super) fn machine(busy_cores_before: Option<f64>) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = read("/proc/meminfo");
    let memory_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: memory_kb * 1024,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        accrual_version: env!("CARGO_PKG_VERSION").to_string(),
        build: if cfg!(debug_assertions) { "debug" } else { "optimised" }.to_string(),
        busy_cores_before,
    }
}

/// How many cores were busy, on average, over the next `over`.
pub(super) fn busy_cores(over: Duration) -> Option<f64> {
    let read = || std::fs::read_to_string("/proc/stat").ok().and_then(|t| cpu_times(&t));
    let (busy0, total0) = read()?;
    std::thread::sleep(over);
    let (busy1, total1) = read()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / total as f64 * cores as f64)
}

/// Busy and total time of all CPUs from `/proc/stat`'s first line (`cpu
/// user nice system idle iowait irq softirq steal ...`, in clock ticks):
/// everything but idle and iowait counts as busy.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    // guest and guest_nice are already counted in user and nice.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ratio: f64) -> Round {
        let t = |target: &str, events_per_second: f64| Throughput {
            target: target.into(),
            partitions: 8,
            events: 100,
            records: 100,
            transactions: 1,
            seconds: 1.0,
            events_per_second,
            peak_rss_bytes: 0,
            cpu_seconds: 0.0,
            cpu_seconds_per_million_events: 0.0,
        };
        Round {
            baseline: t("baseline", 100.0),
            accrual: t("accrual", 100.0 * ratio),
            ratio,
            accrual_without_changelog: None,
            changelog_ratio: None,
        }
    }

    #[test]
    fn the_changelog_ratio_is_the_median_of_the_rounds_that_have_one() {
        let with = |ratio: f64, changelog: f64| Round { changelog_ratio: Some(changelog), ..round(ratio) };
        assert_eq!(median_changelog_ratio(&[round(0.5), round(0.6)]), None);
        assert_eq!(median_changelog_ratio(&[with(0.5, 0.9)]), Some(0.9));
        // Its own median, not the median round's: 0.8 here, where the
        // median round by the ratio (0.5) has 0.7.
        let three = [with(0.4, 0.8), with(0.5, 0.7), with(0.6, 0.9)];
        assert_eq!(median_round(&three).changelog_ratio, Some(0.7));
        assert_eq!(median_changelog_ratio(&three), Some(0.8));
        assert_eq!(median_changelog_ratio(&[with(0.5, 0.9), with(0.5, 0.7)]), Some(0.7));
    }

    #[test]
    fn busy_time_is_all_but_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(cpu_times(stat), Some((160, 1000)));
        assert_eq!(cpu_times("cpu0 1 2 3 4\n"), None, "the first line must be the total");
        assert_eq!(cpu_times("cpu  1 x 3 4\n"), None);
        assert_eq!(cpu_times(""), None);
    }

    #[test]
    fn the_median_round_is_the_middle_ratio_or_the_lower_middle_one() {
        assert_eq!(median_round(&[round(0.7)]).ratio, 0.7);
        assert_eq!(median_round(&[round(0.8), round(0.6), round(0.7)]).ratio, 0.7);
        assert_eq!(median_round(&[round(0.8), round(0.6)]).ratio, 0.6);
        let four = [round(0.9), round(0.5), round(0.7), round(0.6)];
        let median = median_round(&four);
        assert_eq!(median.ratio, 0.6);
        // Its runs come with it, so the table's numbers and ratio agree.
        assert_eq!(median.accrual.events_per_second, 60.0);
    }
}
