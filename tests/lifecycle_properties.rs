//! Invariants of the lifecycle under any sequence of events (proptest):
//! balances never negative; available is always the sum of the lots and
//! pending the sum of the holds; replaying the same input is byte-identical.

mod common;

use accrual::state::AccountState;
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

/// Runs the ops with time steps, returning every record as JSON and the
/// final state; checks the invariants after each step.
fn run(ops: &[(Op, u32)]) -> (Vec<u8>, AccountState) {
    let mut h = Harness::new(lifecycle_rules());
    let mut t = Timestamp::parse_rfc3339("2026-10-01T09:00:00Z").unwrap().0;
    let mut purchases: Vec<(String, u64, bool)> = Vec::new();
    let mut out = Vec::new();
    for (i, (op, minutes)) in ops.iter().enumerate() {
        t += i64::from(*minutes) * 60_000;
        let at = Timestamp(t).to_string();
        let id = format!("ev{i}");
        let amount = |k: u64| format!("{}.{:02}", k / 100, k % 100);
        let records = match op {
            Op::Purchase { kopecks, mcc, authorized } => {
                purchases.push((id.clone(), *kopecks, *authorized));
                let status = if *authorized { r#","status":"authorized""# } else { "" };
                h.apply(&purchase(&id, "a", &amount(*kopecks), mcc, &at, status)).1
            }
            Op::Clear => match purchases.iter().rev().find(|p| p.2) {
                Some((auth, kopecks, _)) => {
                    let extra = format!(r#","status":"cleared","original_event_id":"{auth}""#);
                    h.apply(&purchase(&id, "a", &amount(*kopecks), "5999", &at, &extra)).1
                }
                None => continue,
            },
            Op::Refund { percent } => match purchases.last() {
                Some((original, kopecks, _)) => {
                    let part = (kopecks * percent / 100).max(1);
                    h.apply(&refund(&id, "a", original, &amount(part), &at)).1
                }
                None => continue,
            },
            Op::Reverse => match purchases.first() {
                Some((original, _, _)) => h.apply(&reversal(&id, "a", original, &at)).1,
                None => continue,
            },
            Op::Redeem { program, amount: n } => {
                let line = format!(r#"{{"event_id":"{id}","type":"redemption","account_id":"a","program":"{program}","amount":"{n}","occurred_at":"{at}"}}"#);
                h.apply(&line).1
            }
            Op::Enroll => h.apply(&format!(r#"{{"event_id":"{id}","type":"enrollment","account_id":"a","occurred_at":"{at}"}}"#)).1,
            Op::Choose { categories } => {
                let month = accrual::time::month_label(accrual::time::LocalTime::new(Timestamp(t), accrual::time::TzOffset(10_800)).month_key() + 1);
                let list: Vec<String> = categories.iter().map(|c| format!("\"{c}\"")).collect();
                let line = format!(r#"{{"event_id":"{id}","type":"category_choice","account_id":"a","month":"{month}","categories":[{}],"occurred_at":"{at}"}}"#, list.join(","));
                h.apply(&line).1
            }
            Op::StatementDay(day) => h.apply(&format!(r#"{{"event_id":"{id}","type":"statement_cycle","account_id":"a","statement_day":{day},"occurred_at":"{at}"}}"#)).1,
            Op::Clock => h.advance("a", &at),
        };
        for r in &records {
            r.write_json(&mut out);
        }
        let state = h.accounts.get("a").cloned().unwrap_or_default();
        check(&state);
    }
    (out, h.accounts.remove("a").unwrap_or_default())
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
}
