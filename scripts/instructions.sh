#!/usr/bin/env bash
# Counts the CPU instructions per event that `accrual simulate` spends in
# each stage of the batch processor, under valgrind's callgrind: a measure
# that does not move with the machine's neighbours, so two builds compare
# in one run each even on a noisy VM (docs/benchmarks.md).
#
#   scripts/instructions.sh [--events N] [--accounts N] [--binary PATH]
#
# Input: `accrual gen --seed 7`; the example rules; real RocksDB in a
# temporary directory; records written to a file, as simulate does. A
# stage the compiler inlined into its caller shows as "inlined" (its cost
# is then in the line above it); the whole run's count is always there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

events=50000
accounts=10000
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --accounts) accounts="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
need_valgrind
if [ -z "$binary" ]; then
  cargo build --locked --release --bin accrual
  binary="$CARGO_TARGET_DIR/release/accrual"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$binary" gen --events "$events" --accounts "$accounts" --seed 7 > "$work/events.ndjson"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$binary" simulate --rules config/rules.example.toml --input "$work/events.ndjson" \
  --out "$work/records.ndjson" --quiet > "$work/valgrind.log" 2>&1 ||
  { cat "$work/valgrind.log" >&2; exit 1; }
callgrind_annotate --inclusive=yes "$work/callgrind.out" > "$work/inclusive.txt" 2>/dev/null


# Instructions of a function (its own and its callees'), per event. The
# function is listed once per source file its code came from (inlining);
# the largest entry is the one that sums all of it.
per_event() {
  awk -v fn=":$1" -v n="$events" '
    function ends(s) { return length(s) > length(fn) && substr(s, length(s) - length(fn) + 1) == fn }
    { line = $0; sub(/ \[[^]]*\]$/, "", line) }
    $1 ~ /^[0-9,]+$/ && ends(line) {
      c = $1; gsub(",", "", c); if (c + 0 > best) best = c + 0
    }
    END { if (best > 0) printf "%8.0f", best / n; else printf "%8s", "inlined" }' "$work/inclusive.txt"
}
total=$(grep "PROGRAM TOTALS" "$work/inclusive.txt" | awk '{gsub(",", "", $1); print $1}')

echo "instructions per event: $events events, $accounts accounts, $(basename "$binary")"
printf '%8.0f  whole run (reading, processing, RocksDB, writing records)\n' "$(awk -v c="$total" -v n="$events" 'BEGIN { print c / n }')"
echo "$(per_event "accrual::pipeline::Processor::process")  batch processor (all below, and the sink)"
echo "$(per_event "accrual::events::decode::Decoder::decode_by")    decoding"
echo "$(per_event "accrual::store::Store::seen")    dedupe lookups"
echo "$(per_event "accrual::store::accounts::<impl accrual::store::Store>::load_purchases")    reading retained purchases (refunds, reversals)"
echo "$(per_event "accrual::accrue::Core::apply")    rules and state (the core)"
echo "$(per_event "accrual::pipeline::Processor::stage")    staging states and dedupe keys in the WriteBatch"
echo "$(per_event "accrual::accrue::record::AccrualRecord::push_json")    records written as JSON"
echo "$(per_event "accrual::store::Store::write")  RocksDB commits"
