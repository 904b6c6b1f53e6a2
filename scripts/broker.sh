#!/usr/bin/env bash
# The local Kafka-protocol broker for the tests and the demo: nisshi 0.7.0
# (the renamed tansu), a Kafka-compatible broker in Rust. There is no Docker
# engine on these machines and Apache Kafka cannot be downloaded here.
#
#   scripts/broker.sh install                  build the pinned version once per machine (~26 min)
#   scripts/broker.sh start [--memory]         start on 127.0.0.1:9092 and wait until it answers
#   scripts/broker.sh stop                     stop it (by its PID)
#   scripts/broker.sh status                   running or not
#   scripts/broker.sh create-topic NAME N      create a topic with N partitions (exists: fine)
#   scripts/broker.sh user NAME PASSWORD       create a SCRAM-SHA-512 user (on a broker without TLS)
#   scripts/broker.sh path                     the broker binary
#   scripts/broker.sh reset                    stop and delete its data
#
# Environment: ACCRUAL_BROKER_ADDR (default 127.0.0.1:9092), ACCRUAL_BROKER_DIR
# (data, log and PID file; default ~/.cache/accrual/broker/run);
# ACCRUAL_BROKER_TLS_CERT and ACCRUAL_BROKER_TLS_KEY (PEM files: the listener
# takes TLS only); ACCRUAL_BROKER_AUTH=1 (clients must log in with SASL);
# ACCRUAL_BROKER_LOG (the broker's log filter, default warn; not RUST_LOG,
# which is the engine's: at info the broker logs every request, gigabytes
# in a benchmark, and slows down until producers time out).
# Storage is SQLite (durable across broker restarts); --memory keeps it in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

NISSHI_VERSION=0.7.0
ROOT="$ACCRUAL_CACHE/broker/nisshi-$NISSHI_VERSION"
BIN="$ROOT/bin/nisshi"
ADDR="${ACCRUAL_BROKER_ADDR:-127.0.0.1:9092}"
DATA="${ACCRUAL_BROKER_DIR:-$ACCRUAL_CACHE/broker/run}"
PIDFILE="$DATA/nisshi.pid"
LOG="$DATA/broker.log"

installed() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "nisshi $NISSHI_VERSION"
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
  if [ -n "${ACCRUAL_BROKER_TLS_CERT:-}" ]; then
    # The broker's own client speaks no TLS: a listening port will do.
    (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null
  else
    "$BIN" topic list --broker "tcp://$ADDR" >/dev/null 2>&1
  fi
}

cmd_install() {
  if installed; then
    echo "nisshi $NISSHI_VERSION is installed: $BIN"
    return
  fi
  echo "building nisshi $NISSHI_VERSION (once per machine, about 26 minutes on 2 cores)"
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
    --features dynostore,libsql --root "$ROOT" --target-dir "$ACCRUAL_CACHE/broker/build"
  installed || { echo "nisshi did not install" >&2; exit 1; }
}

cmd_start() {
  local storage="sqlite://broker.db"
  [ "${1:-}" = "--memory" ] && storage="memory://nisshi/"
  installed || cmd_install
  if running; then
    echo "broker already running (pid $(cat "$PIDFILE")) on $ADDR"
    return
  fi
  mkdir -p "$DATA"
  local security=()
  if [ -n "${ACCRUAL_BROKER_TLS_CERT:-}" ]; then
    security+=(--cert "$ACCRUAL_BROKER_TLS_CERT" --key "${ACCRUAL_BROKER_TLS_KEY:?with ACCRUAL_BROKER_TLS_CERT}")
  fi
  [ "${ACCRUAL_BROKER_AUTH:-}" = "1" ] && security+=(--authentication)
  # The SQLite path is relative to the broker's working directory.
  (
    cd "$DATA"
    RUST_LOG="${ACCRUAL_BROKER_LOG:-warn}" nohup "$BIN" broker \
      --listener-url "tcp://$ADDR" --advertised-listener-url "tcp://$ADDR" \
      --storage-engine "$storage" --group-initial-rebalance-delay 0s ${security[@]+"${security[@]}"} \
      >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
  )
  for _ in $(seq 1 100); do
    if answers; then
      echo "broker running (pid $(cat "$PIDFILE")) on $ADDR, storage $storage, log $LOG"
      return
    fi
    running || break
    sleep 0.2
  done
  echo "broker did not start; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2 || true
  exit 1
}

cmd_stop() {
  if ! running; then
    rm -f "$PIDFILE"
    echo "broker not running"
    return
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "broker stopped"
}

cmd_create_topic() {
  local name="${1:?topic name}" partitions="${2:?partition count}" out
  if out="$("$BIN" topic create --broker "tcp://$ADDR" --partitions "$partitions" "$name" 2>&1)"; then
    echo "created topic $name with $partitions partitions"
  elif echo "$out" | grep -q "already exists"; then
    echo "topic $name exists"
  else
    echo "could not create topic $name: $out" >&2
    exit 1
  fi
}

cmd_user() {
  local name="${1:?user name}" password="${2:?password}"
  "$BIN" user create --broker "tcp://$ADDR" --mechanism scram512 "$name" "$password" >/dev/null
  echo "user $name created (SCRAM-SHA-512)"
}

case "${1:-}" in
  install) cmd_install ;;
  user) shift; cmd_user "$@" ;;
  path) echo "$BIN" ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) if running && answers; then echo "running on $ADDR"; else echo "not running"; exit 1; fi ;;
  create-topic) shift; cmd_create_topic "$@" ;;
  reset) cmd_stop; rm -rf "$DATA"; echo "broker data removed" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
