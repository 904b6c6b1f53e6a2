#!/usr/bin/env bash
# Bounded fuzz runs from the committed seeds (fuzz/seeds): the event
# decoder (any bytes; the flat reader and simd-json must agree) and the
# rules parser (any text; rules that compile evaluate a few events).
#
#   scripts/fuzz.sh [SECONDS per target, default 60]
#   ACCRUAL_FUZZ_TOOLCHAIN=stable scripts/fuzz.sh ...   without nightly
#
# Installs cargo-fuzz once per machine, outside the clone. A crash fails
# the run; libFuzzer leaves the input in fuzz/artifacts/<target>/: make it
# a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
seconds="${1:-60}"

tools="$ACCRUAL_CACHE/tools"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools" --quiet
fi

# cargo fuzz needs nightly flags: the machine's nightly toolchain (with
# AddressSanitizer, for the decoder's unsafe reads) when it has one, else
# the stable compiler allowed them, without a sanitizer.
# ACCRUAL_FUZZ_TOOLCHAIN=stable takes the second way where nightly exists.
if [ "${ACCRUAL_FUZZ_TOOLCHAIN:-}" != stable ] && rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
  sanitizer=address
else
  export RUSTC_BOOTSTRAP=1
  toolchain=()
  sanitizer=none
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in decode rules; do
  echo "== fuzz $target for ${seconds} s (sanitizer: $sanitizer)"
  mkdir -p "$work/$target"
  # New inputs go to the scratch directory; the seeds stay as committed.
  if ! cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" --target-dir "$ACCRUAL_CACHE/fuzz-target" \
    "$target" "$work/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$work/$target.log" 2>&1; then
    cat "$work/$target.log"
    echo "fuzz $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" "$work/$target.log" || tail -n 5 "$work/$target.log"
done
