#!/usr/bin/env bash
# README command 1: the engine's main job end to end on this machine.
#
# Installs what is missing (Debian packages, the local Kafka-protocol broker),
# builds accrual, starts the broker, creates the topics, streams 100,000
# generated card transactions into `transactions`, runs `accrual run` until it
# has caught up, reads the accruals back read_committed, checks them against
# `accrual simulate` and with an independent Python reader, prints a summary,
# and stops everything it started.
#
# First run on a fresh machine: about 45 minutes (RocksDB ~15, the broker ~26);
# afterwards about a minute. ACCRUAL_DEMO_EVENTS changes the event count.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh

echo "== build"
cargo build --locked --bin accrual
bin="$CARGO_TARGET_DIR/debug/accrual"
scripts/broker.sh install

work="${ACCRUAL_DEMO_DIR:-$ACCRUAL_CACHE/demo}"
events="${ACCRUAL_DEMO_EVENTS:-100000}"
export ACCRUAL_BROKER_ADDR="${ACCRUAL_BROKER_ADDR:-127.0.0.1:9092}"
export ACCRUAL_BROKER_DIR="$work/broker"
scripts/broker.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
echo "== local broker"
scripts/broker.sh start
trap 'scripts/broker.sh stop >/dev/null || true' EXIT

# The shipped config, pointed at this broker and a fresh state directory.
config=config/engine.toml
export ACCRUAL_KAFKA__BROKERS="$ACCRUAL_BROKER_ADDR"
export ACCRUAL_ENGINE__STATE_DIR="$work/state"

echo "== topics"
"$bin" topics --config "$config" --partitions 8
echo "== $events transactions of 5,000 accounts over November-December 2026"
"$bin" gen --events "$events" --accounts 5000 --seed 7 --days 61 \
  --refunds 3 --reversals 1 --duplicates 0.5 --malformed 0.2 --out "$work/transactions.ndjson"
"$bin" produce --brokers "$ACCRUAL_BROKER_ADDR" --topic transactions --input "$work/transactions.ndjson"

echo "== accrual run (until 5 s without input)"
RUST_LOG="${RUST_LOG:-info,rdkafka=warn}" "$bin" run --config "$config" --stop-when-idle 5 \
  2>"$work/engine.log" | tee "$work/engine.out"
grep -E "partition assigned|recovery|ERROR" "$work/engine.log" | head -n 12 || true

echo "== accruals read back (read_committed)"
"$bin" consume --brokers "$ACCRUAL_BROKER_ADDR" --topic accruals --out "$work/accruals.ndjson" --summary
echo "== dead letters"
"$bin" consume --brokers "$ACCRUAL_BROKER_ADDR" --topic transactions.dlq --idle-ms 2000 --summary

echo "== the same answer as accrual simulate"
"$bin" simulate --rules config/rules.example.toml --input "$work/transactions.ndjson" \
  --out "$work/simulate.ndjson" --quiet >"$work/simulate.txt"
if cmp -s <(sort "$work/accruals.ndjson") <(sort "$work/simulate.ndjson"); then
  echo "the $(wc -l <"$work/accruals.ndjson") accrual records in Kafka are exactly those simulate computes"
else
  echo "MISMATCH between Kafka and simulate: see $work/accruals.ndjson and $work/simulate.ndjson" >&2
  exit 1
fi

echo "== an independent reader: the Python confluent-kafka client"
venv="$ACCRUAL_CACHE/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import confluent_kafka" 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "confluent-kafka>=2.12" || true
fi
"$bin" inspect transactions --state-dir "$work/state" >"$work/journal.txt"
if "$venv/bin/python" -c "import confluent_kafka" 2>/dev/null; then
  "$venv/bin/python" scripts/verify_accruals.py --brokers "$ACCRUAL_BROKER_ADDR" --topic accruals \
    --journal "$work/journal.txt" --reference "$work/simulate.ndjson"
else
  echo "(skipped: confluent-kafka could not be installed with pip)"
fi

echo
echo "== summary"
grep "^events" "$work/engine.out"
echo "files: $work (transactions.ndjson, accruals.ndjson, engine.log)"
