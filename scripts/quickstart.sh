#!/usr/bin/env bash
# README command 1: installs what is missing, builds, generates realistic
# transactions and backtests the example program over them with
# `accrual simulate`, printing the payout summary. Uses the same build as
# scripts/test.sh, so RocksDB compiles once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh

cargo build --locked --bin accrual
bin="$CARGO_TARGET_DIR/debug/accrual"
work="${ACCRUAL_DEMO_DIR:-$ACCRUAL_CACHE/quickstart}"
mkdir -p "$work"

echo "== the example program"
"$bin" check-config config/rules.example.toml
echo "== 100,000 generated transactions over November and December 2026"
"$bin" gen --events 100000 --accounts 5000 --seed 7 --days 61 \
  --refunds 3 --reversals 1 --duplicates 0.5 --malformed 0.2 --out "$work/ev.ndjson"
echo "== accrual simulate"
# Received as by the start of 2027, after the last of them, on any day
# (docs/events.md, "Event time").
"$bin" simulate --rules config/rules.example.toml --input "$work/ev.ndjson" \
  --now 2027-01-01T00:00:00Z --out "$work/acc.ndjson" --dlq "$work/dlq.ndjson"
echo
echo "== the first accrual records ($work/acc.ndjson)"
head -n 3 "$work/acc.ndjson"
echo "== the first rejected lines ($work/dlq.ndjson)"
head -n 2 "$work/dlq.ndjson"
