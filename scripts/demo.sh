#!/usr/bin/env bash
# README command 1: the engine's main job end to end on this machine.
#
# Installs what is missing (Debian packages, the local Kafka-protocol broker),
# builds accrual, starts the broker, creates the topics, streams 100,000
# generated card transactions into `transactions`, runs `accrual run` until it
# has caught up, reads the accruals back read_committed, checks them against
# `accrual simulate` and with an independent Python reader, shows the
# engine's metrics and a balance lookup, and prints a summary. The engine and
# the broker keep running for you to explore (curl 127.0.0.1:9464/metrics);
# `scripts/demo.sh stop` stops them, and ACCRUAL_DEMO_STOP=1 stops them at
# the end instead.
#
# First run on a fresh machine: about 45 minutes (RocksDB ~15, the broker ~26);
# afterwards about a minute. ACCRUAL_DEMO_EVENTS changes the event count.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

work="${ACCRUAL_DEMO_DIR:-$ACCRUAL_CACHE/demo}"
events="${ACCRUAL_DEMO_EVENTS:-100000}"
http="127.0.0.1:9464"
export ACCRUAL_BROKER_ADDR="${ACCRUAL_BROKER_ADDR:-127.0.0.1:9092}"
export ACCRUAL_BROKER_DIR="$work/broker"

stop_all() {
  if [ -f "$work/engine.pid" ] && kill -0 "$(cat "$work/engine.pid")" 2>/dev/null; then
    kill -TERM "$(cat "$work/engine.pid")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$work/engine.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$work/engine.pid"
  scripts/broker.sh stop >/dev/null 2>&1 || true
}

if [ "${1:-}" = "stop" ]; then
  stop_all
  echo "demo engine and broker stopped"
  exit 0
fi

scripts/install-deps.sh
echo "== build"
cargo build --locked --bin accrual
bin="$CARGO_TARGET_DIR/debug/accrual"
scripts/broker.sh install

stop_all
rm -rf "$work"
mkdir -p "$work"
echo "== local broker"
scripts/broker.sh start
# On any failure, leave nothing running.
trap 'stop_all' EXIT

# The shipped config, pointed at this broker and a fresh state directory.
config=config/engine.toml
export ACCRUAL_KAFKA__BROKERS="$ACCRUAL_BROKER_ADDR"
export ACCRUAL_ENGINE__STATE_DIR="$work/state"

echo "== topics"
"$bin" topics --config "$config" --partitions 8
# Two months before today: the engine refuses events dated ahead of their
# messages (docs/events.md, "Event time").
echo "== $events transactions of 5,000 accounts over October-November 2026"
"$bin" gen --events "$events" --accounts 5000 --seed 7 --start 2026-10-01T00:00:00+03:00 --days 61 \
  --refunds 3 --reversals 1 --duplicates 0.5 --malformed 0.2 --out "$work/transactions.ndjson"
produced="$("$bin" produce --brokers "$ACCRUAL_BROKER_ADDR" --topic transactions --input "$work/transactions.ndjson")"
echo "$produced"
count="$(echo "$produced" | awk '{print $2}')"

echo "== accrual run (in the background; metrics and balances on http://$http)"
started=$SECONDS
RUST_LOG="${RUST_LOG:-info,rdkafka=warn}" "$bin" run --config "$config" >"$work/engine.out" 2>"$work/engine.log" &
echo $! >"$work/engine.pid"
consumed=0
for _ in $(seq 1 600); do
  # The listener comes up after start-up; until then curl fails and counts as 0.
  consumed="$({ curl -s "$http/metrics" || true; } | awk '/^accrual_events_consumed_total/ {s += $2} END {print s + 0}')"
  [ "$consumed" -ge "$count" ] && break
  kill -0 "$(cat "$work/engine.pid")" 2>/dev/null || { echo "the engine stopped:" >&2; tail -n 20 "$work/engine.log" >&2; exit 1; }
  sleep 0.5
done
[ "$consumed" -ge "$count" ] || { echo "the engine did not catch up ($consumed of $count)" >&2; exit 1; }
elapsed=$((SECONDS - started))
grep -E "partition assigned|recovery|ERROR" "$work/engine.log" | head -n 12 || true
echo "caught up: $consumed messages in about $elapsed s, including start-up"

echo "== accruals read back (read_committed)"
# The reference the records are checked against below.
"$bin" simulate --rules config/rules.example.toml --input "$work/transactions.ndjson" \
  --out "$work/simulate.ndjson" --quiet >"$work/simulate.txt"
expected="$(wc -l <"$work/simulate.ndjson")"
# An event counts as consumed once RocksDB holds its state; its Kafka
# transaction commits a moment later (longer on a busy machine), and a
# read_committed reader stops before an open one. So read again, for up
# to a minute, until as many records as simulate computes are visible.
for _ in $(seq 1 60); do
  "$bin" consume --brokers "$ACCRUAL_BROKER_ADDR" --topic accruals --out "$work/accruals.ndjson" \
    --summary >"$work/consume.txt"
  [ "$(wc -l <"$work/accruals.ndjson")" -ge "$expected" ] && break
  sleep 1
done
cat "$work/consume.txt"
echo "== dead letters"
"$bin" consume --brokers "$ACCRUAL_BROKER_ADDR" --topic transactions.dlq --idle-ms 2000 --summary

echo "== the same answer as accrual simulate"
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

echo "== metrics (curl $http/metrics)"
metrics="$(curl -s "$http/metrics")"
for pattern in '^accrual_events_consumed_total\{partition="[01]"' '^accrual_records_emitted_total\{program="cashback",rule="groceries' \
  '^accrual_cashback_amount_total' '^accrual_dead_letters_total\{reason="(malformed_json|invalid_amount)"' \
  '^accrual_kafka_transactions_total' '^accrual_consumer_lag_messages\{partition="0"' '^accrual_ready' '^accrual_build_info'; do
  grep -E "$pattern" <<<"$metrics" || true
done
echo "== a balance lookup (curl $http/v1/accounts/acc-0000001/balance)"
curl -s "$http/v1/accounts/acc-0000001/balance"
echo
echo "== summary"
echo "events $consumed, accrual records $(wc -l <"$work/accruals.ndjson"), dead letters $(curl -s "$http/metrics" | awk '/^accrual_dead_letters_total/ {s += $2} END {print s + 0}')"
echo "files: $work (transactions.ndjson, accruals.ndjson, engine.log)"
if [ "${ACCRUAL_DEMO_STOP:-0}" = "1" ]; then
  exit 0 # the EXIT trap stops everything
fi
trap - EXIT
echo
echo "The engine and the broker keep running:"
echo "  curl $http/metrics"
echo "  curl $http/v1/accounts/acc-0000001/balance"
echo "  curl $http/readyz"
echo "Stop them with: scripts/demo.sh stop"
