#!/usr/bin/env bash
# The end-to-end benchmark (docs/benchmarks.md): builds the release binary,
# starts a broker of its own on 127.0.0.1:19093 with a fresh in-memory store
# (the demo's broker on 9092 is left alone), and runs `accrual bench` with
# the given arguments, e.g.
#
#   scripts/bench.sh                                 2M events, latency at 20k and 50k/s
#   scripts/bench.sh --events 500000 --latency-seconds 0
#   scripts/bench.sh --scaling                       + partitions 1..16, state 10k..10M accounts
#
# Results: a table on stdout and bench-results.json. ACCRUAL_BENCH_STORAGE=sqlite
# runs the broker on its durable store instead (slower). Engine settings
# come from config/engine.toml; ACCRUAL_* variables override them, e.g.
# ACCRUAL_ENGINE__COMMIT_INTERVAL_MS=250 scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
echo "== build (release)"
cargo build --locked --release --bin accrual
scripts/broker.sh install
export ACCRUAL_BROKER_ADDR="127.0.0.1:19093"
export ACCRUAL_BROKER_DIR="$ACCRUAL_CACHE/broker/bench-run"
scripts/broker.sh stop >/dev/null 2>&1 || true
rm -rf "$ACCRUAL_BROKER_DIR"
if [ "${ACCRUAL_BENCH_STORAGE:-memory}" = "sqlite" ]; then
  scripts/broker.sh start
else
  scripts/broker.sh start --memory
fi
trap 'scripts/broker.sh stop >/dev/null || true' EXIT
"$CARGO_TARGET_DIR/release/accrual" bench --brokers "$ACCRUAL_BROKER_ADDR" \
  --work-dir "$ACCRUAL_CACHE/bench-work" "$@"
