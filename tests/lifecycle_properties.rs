//! Invariants of the lifecycle under any sequence of events (proptest):
//! balances never negative; available is always the sum of the lots and
//! pending the sum of the holds; replaying the same input is byte-identical.

mod common;

use accrual::accrue::{AccrualRecord, NoEffect};
use accrual::events::Event;
use accrual::pipeline::{Input, Processor, Sink};
use accrual::state::AccountState;
use accrual::store::{Progress, Store, StoreOptions};
use accrual::time::Timestamp;
use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

#[derive(Debug, Clone)]
enum Op {
    Purchase {
        kopecks: u64,
        mcc: &'static str,
        authorized: bool,
    },
    Clear,
    Refund {
        percent: u64,
    },
    Reverse,
    Redeem {
        program: &'static str,
        amount: u64,
    },
    Enroll,
    Choose {
        categories: Vec<&'static str>,
    },
    StatementDay(u8),
    /// Time passes: a clock for the account.
    Clock,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (100u64..30_000_000, prop::sample::select(vec!["5411", "5541", "5812", "5999", "6011", "5651", "4511"]), any::<bool>())
            .prop_map(|(kopecks, mcc, authorized)| Op::Purchase { kopecks, mcc, authorized }),
        1 => Just(Op::Clear),
        2 => (1u64..=100).prop_map(|percent| Op::Refund { percent }),
        1 => Just(Op::Reverse),
        2 => (prop::sample::select(vec!["points", "cashback", "miles"]), 1u64..3000).prop_map(|(program, amount)| Op::Redeem { program, amount }),
        1 => Just(Op::Enroll),
        1 => prop::sample::subsequence(vec!["groceries", "fuel", "restaurants", "pharmacy", "clothing", "travel"], 0..6)
            .prop_map(|categories| Op::Choose { categories }),
        1 => (1u8..=28).prop_map(Op::StatementDay),
        2 => Just(Op::Clock),
    ]
}

/// What an op becomes: an event line, or time passing for the account.
enum Step {
    Line(String),
    Clock(String),
}

/// The ops as events, with time steps (ops with nothing to act on are left out).
fn steps(ops: &[(Op, u32)]) -> Vec<Step> {
    let mut t = Timestamp::parse_rfc3339("2026-10-01T09:00:00Z").unwrap().0;
    let mut purchases: Vec<(String, u64, bool)> = Vec::new();
    let mut out = Vec::new();
    for (i, (op, minutes)) in ops.iter().enumerate() {
        t += i64::from(*minutes) * 60_000;
        let at = Timestamp(t).to_string();
        let id = format!("ev{i}");
        let amount = |k: u64| format!("{}.{:02}", k / 100, k % 100);
        let line = match op {
            Op::Purchase { kopecks, mcc, authorized } => {
                purchases.push((id.clone(), *kopecks, *authorized));
                let status = if *authorized { r#","status":"authorized""# } else { "" };
                purchase(&id, "a", &amount(*kopecks), mcc, &at, status)
            }
            Op::Clear => match purchases.iter().rev().find(|p| p.2) {
                Some((auth, kopecks, _)) => {
                    let extra = format!(r#","status":"cleared","original_event_id":"{auth}""#);
                    purchase(&id, "a", &amount(*kopecks), "5999", &at, &extra)
                }
                None => continue,
            },
            Op::Refund { percent } => match purchases.last() {
                Some((original, kopecks, _)) => {
                    let part = (kopecks * percent / 100).max(1);
                    refund(&id, "a", original, &amount(part), &at)
                }
                None => continue,
            },
            Op::Reverse => match purchases.first() {
                Some((original, _, _)) => reversal(&id, "a", original, &at),
                None => continue,
            },
            Op::Redeem { program, amount: n } => {
                format!(
                    r#"{{"event_id":"{id}","type":"redemption","account_id":"a","program":"{program}","amount":"{n}","occurred_at":"{at}"}}"#
                )
            }
            Op::Enroll => {
                format!(r#"{{"event_id":"{id}","type":"enrollment","account_id":"a","occurred_at":"{at}"}}"#)
            }
            Op::Choose { categories } => {
                let month = accrual::time::month_label(
                    accrual::time::LocalTime::new(Timestamp(t), &accrual::time::TzOffset::Fixed(10_800))
                        .month_key()
                        + 1,
                );
                let list: Vec<String> = categories.iter().map(|c| format!("\"{c}\"")).collect();
                format!(
                    r#"{{"event_id":"{id}","type":"category_choice","account_id":"a","month":"{month}","categories":[{}],"occurred_at":"{at}"}}"#,
                    list.join(",")
                )
            }
            Op::StatementDay(day) => format!(
                r#"{{"event_id":"{id}","type":"statement_cycle","account_id":"a","statement_day":{day},"occurred_at":"{at}"}}"#
            ),
            Op::Clock => {
                out.push(Step::Clock(at));
                continue;
            }
        };
        out.push(Step::Line(line));
    }
    out
}

/// Runs the ops in memory, returning every record as JSON and the final
/// state; checks the invariants after each step.
fn run(ops: &[(Op, u32)]) -> (Vec<u8>, AccountState) {
    let mut h = Harness::new(lifecycle_rules());
    let mut out = Vec::new();
    for step in steps(ops) {
        let records = match step {
            Step::Line(line) => h.apply(&line).1,
            Step::Clock(at) => h.advance("a", &at),
        };
        for r in &records {
            r.write_json(&mut out);
        }
        let state = h.accounts.get("a").cloned().unwrap_or_default();
        check(&state);
    }
    (out, h.accounts.remove("a").unwrap_or_default())
}

/// Records as JSON, in input order.
#[derive(Default)]
struct Json(Vec<u8>);

impl Sink for Json {
    fn accrued(&mut self, _: u64, _: &Event<'_>, records: &[AccrualRecord]) {
        for r in records {
            r.write_json(&mut self.0);
        }
    }
    fn no_effect(&mut self, _: u64, _: &Event<'_>, _: NoEffect) {}
    fn duplicate(&mut self, _: u64, _: &Event<'_>, _: Timestamp) {}
    fn dead_letter(&mut self, _: &Input<'_>, _: &'static str, _: &str) {}
}

/// The event lines (clocks left out: a partition's clock only moves
/// accounts with a timer due) through the pipeline and RocksDB, in batches
/// of the given sizes, with or without the account cache.
fn through_the_store(lines: &[String], batches: &[usize], cache: bool) -> (Vec<u8>, AccountState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions { sync: false, ..StoreOptions::default() }).unwrap();
    let mut processor =
        Processor::new(lifecycle_rules()).with_account_cache(if cache { 64 << 20 } else { 0 });
    let mut progress = Progress::default();
    let mut sink = Json::default();
    let mut rest = lines;
    for size in batches.iter().copied().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        let first = progress.next_offset;
        let inputs: Vec<Input<'_>> = (first..)
            .zip(now)
            .map(|(offset, l)| Input { offset, key: b"a", payload: l.as_bytes(), timestamp: None })
            .collect();
        let mut batch = store.batch();
        processor.process(&store, 0, &mut progress, &inputs, &mut batch, &mut sink).unwrap();
        store.commit(batch).unwrap();
        processor.committed();
    }
    (sink.0, store.account(0, "a").unwrap().unwrap_or_default())
}

fn lifecycle_rules() -> std::sync::Arc<accrual::rules::Rules> {
    std::sync::Arc::new(accrual::rules::load(&repo_path("config/rules.lifecycle.toml")).unwrap())
}

fn check(state: &AccountState) {
    for b in &state.balances {
        assert!(b.available >= Decimal::ZERO, "{} available {}", b.program, b.available);
        assert!(b.pending >= Decimal::ZERO, "{} pending {}", b.program, b.pending);
        assert!(b.owed >= Decimal::ZERO, "{} owed {}", b.program, b.owed);
        let lots: Decimal = b.lots.iter().map(|l| l.amount).sum();
        assert_eq!(lots, b.available, "{}: lots add up to the available balance", b.program);
        let holds: Decimal = b.holds.iter().map(|h| h.amount).sum();
        assert_eq!(holds, b.pending, "{}: holds add up to the pending balance", b.program);
        assert!(
            b.lots.iter().all(|l| l.amount > Decimal::ZERO)
                && b.holds.iter().all(|h| h.amount > Decimal::ZERO)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn balances_stay_consistent_and_replays_are_identical(
        ops in prop::collection::vec((op(), prop::sample::select(vec![1u32, 30, 600, 1_440, 10_080, 44_640, 200_000])), 1..60)
    ) {
        let (first, state) = run(&ops);
        let (second, again) = run(&ops);
        prop_assert!(first == second, "replay differs");
        prop_assert_eq!(state, again);
    }

    /// Purchases stored under their own keys, loaded only when an event
    /// needs them and written only when changed, give exactly what the core
    /// gives on one state in memory: same records, same state, whatever
    /// the batching and with or without the account cache.
    #[test]
    fn the_store_and_its_cache_change_nothing(
        ops in prop::collection::vec((op(), prop::sample::select(vec![1u32, 600, 10_080, 44_640, 200_000])), 1..60),
        batches in prop::collection::vec(1usize..8, 1..4),
        cache in any::<bool>(),
    ) {
        let ops: Vec<(Op, u32)> = ops.into_iter().filter(|(op, _)| !matches!(op, Op::Clock)).collect();
        let lines: Vec<String> = steps(&ops)
            .into_iter()
            .filter_map(|s| match s { Step::Line(l) => Some(l), Step::Clock(_) => None })
            .collect();
        let (expected, mut state) = run(&ops);
        // The pipeline also records the account's timer.
        state.next_due = accrual::accrue::Core::new(lifecycle_rules()).next_due(&state);
        let (records, stored) = through_the_store(&lines, &batches, cache);
        prop_assert!(records == expected, "records differ:\n{}\n---\n{}", String::from_utf8_lossy(&records), String::from_utf8_lossy(&expected));
        prop_assert_eq!(stored, state);
    }
}
