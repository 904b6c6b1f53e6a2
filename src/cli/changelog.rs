//! `accrual changelog`: check a state directory against the state
//! changelog, and publish a partition's state to it again (see
//! `accrual_engine::changelog_check`).

use super::{load_config, say};
use accrual::engine::changelog_check::{self, PartitionCheck};
use accrual::store::compare::{self, DifferenceKind};
use accrual::store::{Store, StoreOptions};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum What {
    /// Restore each partition's changelog into a scratch directory and
    /// compare it, key by key, with a state directory where both are at
    /// the same input offset. Exits 1 if the changelog does not restore
    /// a partition's state as the group committed it.
    Check {
        #[command(flatten)]
        state: StateArgs,
        /// Where to restore (default: the system's temporary directory);
        /// needs room for the largest partition's state.
        #[arg(long)]
        scratch_dir: Option<PathBuf>,
    },
    /// Publish a partition's state, from a state directory at the group's
    /// committed offset, to the changelog as a snapshot that replaces what
    /// it held. Only while the group has no members: stop every instance
    /// first.
    Republish {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(clap::Args)]
pub struct StateArgs {
    /// The engine's config (its `[kafka]` section, group and changelog).
    #[arg(long)]
    config: PathBuf,
    /// The state directory (default: the config's `engine.state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Only these partitions (repeat the flag; default: every partition
    /// the state directory holds).
    #[arg(long = "partition")]
    partitions: Vec<u32>,
}

pub fn run(what: What) -> Result<ExitCode> {
    match what {
        What::Check { state, scratch_dir } => check(state, scratch_dir),
        What::Republish { state } => republish(state),
    }
}

fn check(args: StateArgs, scratch_dir: Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    let dir = args.state_dir.unwrap_or_else(|| config.engine.state_dir.clone());
    let local = Store::open_read_only(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let held = local.partitions()?;
    let partitions = match args.partitions.is_empty() {
        true => held.clone(),
        false => args.partitions,
    };
    for p in partitions.iter().filter(|p| !held.contains(p)) {
        say!("partition {p}: this state directory holds no state of it; not checked");
    }
    let scratch_root = scratch_dir.unwrap_or_else(std::env::temp_dir);
    let scratch_dir = tempfile::Builder::new()
        .prefix("accrual-changelog-check-")
        .tempdir_in(&scratch_root)
        .with_context(|| format!("making a scratch directory in {}", scratch_root.display()))?;
    let options = StoreOptions { sync: false, ..StoreOptions::default() };
    let scratch = Store::open(scratch_dir.path(), &options)?;
    let checks = changelog_check::check(&config, &local, &scratch, &partitions)?;
    for c in &checks {
        say!("{}", describe(c));
    }
    let compared = |c: &&PartitionCheck| c.comparison.is_some();
    let same = checks.iter().filter(compared).filter(|c| !c.is_failed()).count();
    let different = checks.iter().filter(compared).filter(|c| c.is_failed()).count();
    let missing = checks.iter().filter(|c| c.comparison.is_none() && c.is_failed()).count();
    say!(
        "{} partitions of {} checked against changelog {}: {same} the same, {different} different, \
         {missing} not restored by the changelog, {} not compared",
        checks.len(),
        dir.display(),
        config.kafka.topics.changelog.as_deref().unwrap_or_default(),
        checks.len() - same - different - missing,
    );
    Ok(if different + missing > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One line for a partition: its offsets, and what the comparison found.
fn describe(c: &PartitionCheck) -> String {
    let at = c.local.progress.next_offset;
    let changelog = c.changelog.map_or("no progress since its last reset".into(), |o| format!("offset {o}"));
    let group = c.group.map_or("no offset".into(), |o| format!("offset {o}"));
    let offsets =
        format!("this state at input offset {at}, the changelog at {changelog}, the group at {group}");
    let verdict = match &c.comparison {
        Some(x) if x.differing() == 0 => format!("the same ({} keys)", x.local_entries),
        Some(x) => {
            let examples: Vec<String> = x
                .examples
                .iter()
                .map(|d| {
                    let kind = match d.kind {
                        DifferenceKind::Changed => "differs",
                        DifferenceKind::OnlyLocal => "only here",
                        DifferenceKind::OnlyRestored => "only in the changelog",
                    };
                    format!("{} {kind}", compare::describe_key(d.family, &d.key))
                })
                .collect();
            format!(
                "DIFFERENT: {} of {} keys ({} with other values, {} only here, {} only in the changelog); \
                 e.g. {}",
                x.differing(),
                x.local_entries.max(x.restored_entries),
                x.changed,
                x.only_local,
                x.only_restored,
                examples.join(", ")
            )
        }
        None if c.is_failed() => {
            "FAILED: this is the group's state, and the changelog does not restore it".to_string()
        }
        None => match c.changelog {
            Some(o) if o > at => "not compared: the changelog went on past this state".to_string(),
            _ => "not compared: this state is not the group's".to_string(),
        },
    };
    format!("partition {}: {verdict}; {offsets}", c.partition)
}

fn republish(args: StateArgs) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    let dir = args.state_dir.unwrap_or_else(|| config.engine.state_dir.clone());
    anyhow::ensure!(!args.partitions.is_empty(), "name the partitions to republish with --partition");
    // Open for writing: fails while an engine runs on the directory.
    let store =
        Store::open(&dir, &StoreOptions::default()).with_context(|| format!("opening {}", dir.display()))?;
    for &partition in &args.partitions {
        let records = changelog_check::republish(&config, &store, partition)?;
        say!("partition {partition}: published {records} records of its state to the changelog");
    }
    Ok(ExitCode::SUCCESS)
}
