#!/usr/bin/env bash
# The whole test suite (README command 2; `.ci/run` calls exactly this):
# installs what is missing, then formatting, clippy, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== build"
cargo build --locked --all-targets
echo "== tests (benches run once each, as smoke tests)"
cargo nextest run --locked --all-targets --no-fail-fast
