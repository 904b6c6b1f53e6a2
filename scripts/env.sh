# Sourced by the project's scripts: where builds and caches live.
# Kept outside the clone so a fresh clone on the same machine reuses the
# compiled dependencies (RocksDB's C++ alone is ~13 minutes on 2 cores).
export ACCRUAL_CACHE="${ACCRUAL_CACHE:-$HOME/.cache/accrual}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ACCRUAL_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$ACCRUAL_CACHE"
