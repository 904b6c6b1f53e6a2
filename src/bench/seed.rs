//! State of a given size for the scaling runs: `accounts` accounts, each
//! as one purchase under the rules leaves it (a balance, a retained
//! purchase, cap counters, a timer), written straight into a state
//! directory on the partitions the engine's partitioner gives them. The
//! engine then starts on that state as on any other. The state is
//! compacted once written, as it would be on a node that had held it for a
//! while: the run measures reading and updating it, not compacting what
//! the seeding wrote.

use crate::accrue::{Core, Effects};
use crate::events::Decoder;
use crate::partitioner::Partitioner;
use crate::rules::Rules;
use crate::state::AccountState;
use crate::store::{Store, StoreError, StoreOptions};
use std::path::Path;
use std::sync::Arc;

/// Account ids as `accrual gen` writes them, so generated events find them.
pub fn account_id(n: u64) -> String {
    format!("acc-{n:07}")
}

/// Writes accounts 1..=`accounts`; returns how many were written.
pub fn seed(
    dir: &Path,
    options: &StoreOptions,
    rules: Arc<Rules>,
    accounts: u64,
    partitions: u32,
    partitioner: Partitioner,
) -> Result<u64, StoreError> {
    let store = Store::open(dir, options)?;
    let mut core = Core::new(rules.clone());
    let mut decoder = Decoder::new();
    let mut effects = Effects::default();
    let mut batch = store.batch();
    batch.set_rules_version(&rules.version);
    let mut written = 0u64;
    for n in 1..=accounts {
        let id = account_id(n);
        let line = format!(
            r#"{{"event_id":"seed-{n}","type":"purchase","account_id":"{id}","amount":"{}.00","currency":"{}","mcc":"5411","merchant_id":"M-5411-001","occurred_at":"2026-10-15T12:00:00+03:00"}}"#,
            500 + n % 5000,
            rules.currency
        );
        let Ok(event) = decoder.decode(line.as_bytes()) else { continue };
        let mut state = AccountState::default();
        effects.clear();
        core.apply(&mut state, &event, &mut effects);
        let partition = partitioner.partition(id.as_bytes(), partitions);
        let due = core.next_due(&state);
        state.next_due = due;
        batch.set_timer(partition, &id, None, due);
        batch.put_account(partition, &id, &mut state);
        written += 1;
        if written % 50_000 == 0 {
            store.commit(std::mem::replace(&mut batch, store.batch()))?;
        }
    }
    store.commit(batch)?;
    store.compact_all();
    Ok(written)
}

/// Bytes under a directory (files only).
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
