#!/usr/bin/env bash
# Installs what building and testing accrual needs and a fresh machine
# lacks: Debian's clang/libclang (RocksDB's bindgen), cmake, pkg-config and
# OpenSSL headers, and Prometheus (the metrics tests run a real one).
# Idempotent: does nothing when everything is present.
set -euo pipefail

packages=(clang libclang-dev cmake pkg-config libssl-dev openssl prometheus curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed (install Rust with rustup)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
