#!/usr/bin/env bash
# Counts the CPU instructions per event of the core benchmark's loop
# (decode + rules + state apply, no RocksDB, no Kafka) under valgrind's
# callgrind: one run of 1 pass and one of 11 over the bench's 10,000
# events; the difference over the 100,000 events of 10 passes cancels
# generating the input and loading the rules. A count, not a time, so two
# builds compare on a noisy VM (docs/benchmarks.md, "Core benchmarks").
#
#   scripts/core-instructions.sh [apply] [--profile DIR]
#
# `apply` counts the apply-only loop (events decoded beforehand).
# --profile DIR keeps the 11-pass run's callgrind output and an inclusive
# listing there (callgrind_annotate), to see where the instructions go.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

mode=""
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    apply) mode="apply"; shift ;;
    --profile) keep="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

need_valgrind
cargo build --locked --release --example core_passes
binary="$CARGO_TARGET_DIR/release/examples/core_passes"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() {
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" "$binary" "$1" $mode \
    > "$work/log.$1" 2>&1 || { cat "$work/log.$1" >&2; exit 1; }
  grep -o 'Collected : [0-9]*' "$work/log.$1" | awk '{print $3}'
}
one=$(count 1)
eleven=$(count 11)
echo "core instructions per event (${mode:-decode + apply}): $(( (eleven - one) / 100000 ))"
grep -h records "$work/log.11" || true
if [ -n "$keep" ]; then
  mkdir -p "$keep"
  cp "$work/cg.11" "$keep/callgrind.out"
  callgrind_annotate --inclusive=yes "$keep/callgrind.out" > "$keep/inclusive.txt" 2>/dev/null
  callgrind_annotate "$keep/callgrind.out" > "$keep/self.txt" 2>/dev/null
  echo "profile of the 11-pass run: $keep/inclusive.txt, $keep/self.txt"
fi
