#!/usr/bin/env bash
# Restore rate from the state changelog (docs/benchmarks.md, "Restoring
# from the changelog"): for each account count, streams one purchase per
# account through the engine with a changelog, deletes the state
# directory, starts the engine again and reports what the restores of its
# 8 partitions applied and how long they took, then how long `accrual
# changelog check` takes over the restored state. A broker of its own on
# 127.0.0.1:19094 (in memory).
#
#   scripts/restore-bench.sh              100,000 and 1,000,000 accounts
#   scripts/restore-bench.sh 10000000     any counts
#   scripts/restore-bench.sh --comeback 1000000
#       instead of deleting the state: a second instance joins (restoring
#       half the partitions in full), a tail of 1% of the events is
#       processed, the second instance stops and its partitions return to
#       the first, which reads only the changelog's tail since they left
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
cargo build --locked --release --bin accrual
bin="$CARGO_TARGET_DIR/release/accrual"
scripts/broker.sh install
export ACCRUAL_BROKER_ADDR="127.0.0.1:19094"
export ACCRUAL_BROKER_DIR="$ACCRUAL_CACHE/broker/restore-bench"
scripts/broker.sh stop >/dev/null 2>&1 || true
rm -rf "$ACCRUAL_BROKER_DIR"
scripts/broker.sh start --memory
trap 'scripts/broker.sh stop >/dev/null || true' EXIT
work="$ACCRUAL_CACHE/restore-bench"
comeback=false
if [ "${1:-}" = "--comeback" ]; then comeback=true; shift; fi
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100000 1000000)

# The restores an instance's log reports, one line each.
restores() { grep -E "caught up|partition restored from the changelog" "$1" | sed 's/.*INFO //'; }

# Waits until the log `$1` holds `$2` partitions taken up: restored, or
# (`$3` set) kept as they were.
wait_taken() {
  local pattern='partition restored from the changelog'
  [ -n "${3:-}" ] && pattern="$pattern|its local state continues the group's"
  until [ "$(grep -cE "$pattern" "$1")" -ge "$2" ]; do sleep 1; done
}

# A second instance takes half the partitions and gives them back.
comeback() {
  local run=$1 accounts=$2
  local tail_start
  tail_start="$(date -u -d '-9 days' +%Y-%m-%dT00:00:00Z)"
  "$bin" gen --events $((accounts / 100)) --accounts "$accounts" --skew 0 --seed 4 --start "$tail_start" \
    --days 1 --refunds 0 --reversals 0 --out "$run/tail.ndjson"
  export ACCRUAL_KAFKA__CONSUMER_PROPERTIES__SESSION_TIMEOUT_MS=6000
  RUST_LOG=info "$bin" run --config config/engine.toml >"$run/first.log" 2>&1 &
  local first=$!
  wait_taken "$run/first.log" 8 kept
  ACCRUAL_ENGINE__INSTANCE_ID=node-2 ACCRUAL_ENGINE__STATE_DIR="$run/state-2" RUST_LOG=info \
    "$bin" run --config config/engine.toml >"$run/second.log" 2>&1 &
  local second=$!
  wait_taken "$run/second.log" 4
  sleep 3
  "$bin" produce --brokers "$ACCRUAL_BROKER_ADDR" --topic "$ACCRUAL_KAFKA__TOPICS__INPUT" \
    --input "$run/tail.ndjson" >/dev/null
  sleep 10
  kill -TERM "$second" && wait "$second" || true
  wait_taken "$run/first.log" 4
  kill -TERM "$first" && wait "$first" || true
  echo "$accounts accounts; the second instance restoring its half in full:"
  restores "$run/second.log"
  echo "the same partitions back on the first instance:"
  restores "$run/first.log" | tail -8
}

for accounts in "${counts[@]}"; do
  run="$work/$accounts"
  rm -rf "$run" && mkdir -p "$run"
  export ACCRUAL_KAFKA__BROKERS="$ACCRUAL_BROKER_ADDR"
  export ACCRUAL_KAFKA__GROUP_ID="restore-$accounts"
  export ACCRUAL_KAFKA__TOPICS__INPUT="restore-$accounts-in"
  export ACCRUAL_KAFKA__TOPICS__ACCRUALS="restore-$accounts-out"
  export ACCRUAL_KAFKA__TOPICS__DEAD_LETTER="restore-$accounts-dlq"
  export ACCRUAL_KAFKA__TOPICS__CHANGELOG="restore-$accounts-changelog"
  export ACCRUAL_ENGINE__STATE_DIR="$run/state"
  export ACCRUAL_ENGINE__CLOCK_INTERVAL_MS=0
  export ACCRUAL_HTTP__ENABLED=false
  "$bin" topics --config config/engine.toml --partitions 8 >/dev/null
  # Events of the last two months, one account each (uniform, no skew).
  start="$(date -u -d '-60 days' +%Y-%m-%dT00:00:00Z)"
  "$bin" gen --events "$accounts" --accounts "$accounts" --skew 0 --seed 3 --start "$start" --days 50 \
    --refunds 0 --reversals 0 --out "$run/events.ndjson"
  "$bin" produce --brokers "$ACCRUAL_BROKER_ADDR" --topic "$ACCRUAL_KAFKA__TOPICS__INPUT" \
    --input "$run/events.ndjson" >/dev/null
  RUST_LOG=warn "$bin" run --config config/engine.toml --stop-when-idle 5 --report "$run/build.json" \
    >"$run/build.log" 2>&1
  state_mb="$(du -sm "$run/state" | cut -f1)"
  if $comeback; then
    comeback "$run" "$accounts"
    continue
  fi
  rm -rf "$run/state"
  RUST_LOG=info "$bin" run --config config/engine.toml --stop-when-idle 5 --report "$run/restore.json" \
    >"$run/restore.log" 2>&1
  python3 - "$run/restore.log" "$run/restore.json" "$accounts" "$state_mb" <<'PY'
import json, re, sys
log, report, accounts, state_mb = sys.argv[1:]
changes = bytes_ = 0
slowest = 0.0
for line in open(log):
    if "partition restored from the changelog" in line:
        changes += int(re.search(r"changes\W+(\d+)", line).group(1))
        bytes_ += int(re.search(r"bytes\W+(\d+)", line).group(1))
        slowest = max(slowest, float(re.search(r"seconds\W+([\d.]+)", line).group(1)))
r = json.load(open(report))
# The 8 partitions restore in parallel: the slowest one is the wall time.
print(f"{int(accounts):>10,} accounts (state directory {state_mb} MiB): restored {r['restored_partitions']} "
      f"partitions, {changes:,} records, {bytes_ / 2**20:.0f} MiB, in {slowest:.1f} s "
      f"({changes / max(slowest, 1e-9):,.0f} records/s, {bytes_ / 2**20 / max(slowest, 1e-9):.1f} MiB/s)")
PY
  # The restored state checked against the changelog: every partition
  # restored again into a scratch directory, one after the other, and
  # compared key by key.
  check_start=$(date +%s.%N)
  "$bin" changelog check --config config/engine.toml --scratch-dir "$run" >"$run/check.txt"
  check_end=$(date +%s.%N)
  echo "  accrual changelog check in $(python3 -c "print(f'{$check_end - $check_start:.1f}')") s: $(tail -1 "$run/check.txt")"
done
