# Sourced by the project's scripts: where builds and caches live.
# Kept outside the clone so a fresh clone on the same machine reuses the
# compiled dependencies (RocksDB's C++ alone is ~13 minutes on 2 cores).
export ACCRUAL_CACHE="${ACCRUAL_CACHE:-$HOME/.cache/accrual}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ACCRUAL_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$ACCRUAL_CACHE"

# Installs valgrind (for the instruction-count scripts) if it is missing.
need_valgrind() {
  command -v valgrind >/dev/null && return
  echo "installing valgrind"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends valgrind >/dev/null
}
