#!/usr/bin/env bash
# Restore rate from the state changelog (docs/benchmarks.md, "Restoring
# from the changelog"): for each account count, streams one purchase per
# account through the engine with a changelog, deletes the state
# directory, starts the engine again and reports what the restores of its
# 8 partitions applied and how long they took. A broker of its own on
# 127.0.0.1:19094 (in memory).
#
#   scripts/restore-bench.sh              100,000 and 1,000,000 accounts
#   scripts/restore-bench.sh 10000000     any counts
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
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100000 1000000)

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
done
