//! `accrual inspect`: what the engine keeps in a state directory.

use super::say;
use accrual::engine::journal::Journal;
use accrual::store::Store;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum What {
    /// An account's balances: available, pending, lots to expire, tier.
    Balance {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        rules: PathBuf,
        #[arg(long)]
        account: String,
    },
    /// The transaction journal: each Kafka transaction's id and outcome.
    Transactions {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

pub fn run(what: What) -> Result<ExitCode> {
    match what {
        What::Balance { state_dir, rules, account } => balance(&state_dir, &rules, &account)?,
        What::Transactions { state_dir } => {
            let store = Store::open_read_only(&state_dir)?;
            let instance = Journal::instance(&store)?.unwrap_or_default();
            for entry in Journal::entries(&store)? {
                say!("{instance}:{}:{} {}", entry.epoch, entry.seq, entry.status.name());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn balance(state_dir: &Path, rules: &Path, account: &str) -> Result<()> {
    let timeline = accrual::rules::Timeline::load(rules)?;
    let store = Store::open_read_only(state_dir)?;
    let Some((partition, state)) = store.find_account(account)? else {
        bail!("no account {account} in {}", state_dir.display());
    };
    // The version in force at the account's time decides its caps' limits.
    let view = accrual::accrue::balance_view(timeline.at(state.watermark), &state, 3);
    say!("account {account} (partition {partition}), as of {}", state.watermark);
    say!("tier: {}", view.tier.as_deref().unwrap_or("none"));
    if let Some(p) = &view.tier_progress {
        let next =
            p.next.as_ref().map_or("top tier".to_string(), |(t, threshold)| format!("{t} from {threshold}"));
        say!("  {} in {} ({next})", p.value, p.period);
    }
    for p in &view.programs {
        say!(
            "{}: available {} {u}, pending {}, earned {}, redeemed {}, expired {}, owed {}",
            p.program,
            p.available,
            p.pending,
            p.lifetime_earned,
            p.redeemed,
            p.expired,
            p.owed,
            u = p.unit
        );
        for (when, amount) in &p.next_expiring {
            say!("  {amount} expire at {when}");
        }
    }
    for c in &view.caps {
        let description = c.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        say!(
            "cap {}{description}, {}: {} of {} used, {} left ({})",
            c.cap,
            c.period,
            c.used,
            c.limit,
            c.left,
            c.measure
        );
    }
    Ok(())
}
