#!/usr/bin/env bash
# The whole test suite (README command 2; `.ci/run` calls exactly this):
# installs what is missing (Debian packages, the local broker), starts the
# broker, then formatting, clippy, and every test. Set ACCRUAL_TEST_BROKERS
# to run the same suite against another broker (e.g. Apache Kafka).
# ACCRUAL_SOAK=1 runs the long crash soak (20 kills instead of 5);
# ACCRUAL_FUZZ_SECONDS sets each fuzz target's run (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/install-deps.sh
# podman and the base image, for the container image test.
scripts/image.sh deps

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets --features accrual/failpoints -- -D warnings
echo "== rustdoc: every intra-doc link resolves (private items documented, as the team reads them)"
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc --locked --workspace --no-deps --document-private-items
echo "== the core crate and its tests build without RocksDB and librdkafka"
if cargo tree --locked -p accrual-core -e normal,build,dev | grep -E 'rocksdb|rdkafka'; then
  echo "accrual-core depends on RocksDB or librdkafka" >&2
  exit 1
fi
echo "== build (the product binary: no failure points in it)"
cargo build --locked --bin accrual
if grep -q ACCRUAL_FAILPOINT "$CARGO_TARGET_DIR/debug/accrual"; then
  echo "the product binary contains failure points" >&2
  exit 1
fi
# A minute each for the decoder and the rules parser (ACCRUAL_FUZZ_SECONDS).
scripts/fuzz.sh "${ACCRUAL_FUZZ_SECONDS:-60}"
echo "== local broker"
scripts/broker.sh install
if [ -z "${ACCRUAL_TEST_BROKERS:-}" ]; then
  # A broker of our own, on its own port (a demo broker may hold 9092) and
  # a fresh data directory, stopped when we finish.
  export ACCRUAL_BROKER_ADDR="127.0.0.1:19092"
  export ACCRUAL_BROKER_DIR="$ACCRUAL_CACHE/broker/test-run"
  scripts/broker.sh stop >/dev/null 2>&1 || true
  rm -rf "$ACCRUAL_BROKER_DIR"
  scripts/broker.sh start
  trap 'scripts/broker.sh stop >/dev/null || true' EXIT
  export ACCRUAL_TEST_BROKERS="$ACCRUAL_BROKER_ADDR"
fi
echo "== tests against the broker at $ACCRUAL_TEST_BROKERS (benches run once each, as smoke tests)"
# With the crash tests' failure points (feature failpoints).
cargo nextest run --locked --workspace --all-targets --features accrual/failpoints --no-fail-fast
