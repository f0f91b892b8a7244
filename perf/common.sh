#!/usr/bin/env bash
# Shared helpers of the perf scripts: build the release binaries, find free ports, start and stop
# a fresh `paxoskv serve` in temporary directories. Sourced, never run.

PK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/paxoskv-target}"
PK_BIN="${PK_BIN:-$CARGO_TARGET_DIR/release}"

source "$PK_ROOT/scripts/prereqs.sh"
pk_need_command python3 python3

pk_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Installs what profiling needs if missing: `perf` (linux-perf) and inferno's flamegraph tools
# (`cargo install inferno`, into ~/.cargo/bin, which joins PATH).
pk_need_profiler() {
  pk_need_command perf linux-perf
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! inferno-flamegraph --help >/dev/null 2>&1; then
    pk_log "installing inferno (cargo install inferno)"
    cargo install --locked inferno >&2
  fi
}

# Builds paxoskv and paxoskv-bench (release profile) unless SKIP_BUILD=1.
pk_build() {
  if [[ "${SKIP_BUILD:-0}" == 1 ]]; then return 0; fi
  pk_log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  pk_need_patched_glommio "$PK_ROOT"
  (cd "$PK_ROOT" && cargo build --release --bin paxoskv --bin paxoskv-bench >&2)
}

# Prints N (default 1) consecutive free TCP ports on 127.0.0.1, space-separated.
pk_free_ports() {
  python3 - "${1:-1}" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(1000):
    base = random.randint(20000, 60000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    if len(socks) == n:
        print(" ".join(str(p) for p in range(base, base + n))); sys.exit(0)
sys.exit("no free ports")
PY
}

# pk_serve_prepopulated: builds the binaries (unless SKIP_BUILD=1), starts a fresh server that
# is stopped when the script exits, and writes $KEYS keys into it.
pk_serve_prepopulated() {
  pk_build
  trap pk_stop_server EXIT
  pk_start_server
  pk_prepopulate "$KEYS" >/dev/null
}

# pk_prepopulate KEYS [BENCH ARGS...]: writes KEYS keys into the running server (paxoskv-bench's
# --prepopulate, 16 connections x pipeline 16) and prints the bench's report.
pk_prepopulate() {
  local keys="$1"; shift
  "$PK_BIN/paxoskv-bench" ping --addr "$PK_ADDR" --prepopulate --keys "$keys" -c 16 -p 16 \
    --warmup 0s --duration 1s -q "$@"
}

# pk_load_settings: the measured load's settings, from the environment or their defaults
# (WORKLOAD=write CLIENTS=64 KEYS=100000 DURATION=8s).
pk_load_settings() {
  WORKLOAD="${WORKLOAD:-write}"
  CLIENTS="${CLIENTS:-64}"
  KEYS="${KEYS:-100000}"
  DURATION="${DURATION:-8s}"
}

# pk_start_load DIR: runs $WORKLOAD with $CLIENTS clients over $KEYS keys for $DURATION against
# the running server, in the background (its report in DIR/run.json and DIR/run.txt); sets
# PK_LOAD_PID.
pk_start_load() {
  "$PK_BIN/paxoskv-bench" "$WORKLOAD" --addr "$PK_ADDR" -c "$CLIENTS" --keys "$KEYS" \
    --warmup 0s --duration "$DURATION" -q --json "$1/run.json" >"$1/run.txt" &
  PK_LOAD_PID=$!
}

# Starts `paxoskv serve $SERVE_ARGS` in a fresh directory; sets PK_ADDR, PK_PID, PK_SERVER_DIR
# and PK_METRICS (host:port of its metrics endpoint, for `paxoskv-bench --metrics`).
# SERVE_ARGS=--single runs one local store without replication.
pk_start_server() {
  PK_SERVER_DIR="$(mktemp -d /tmp/paxoskv-perf.XXXXXX)"
  local base metrics
  base="$(pk_free_ports 3 | cut -d' ' -f1)"
  metrics="$(pk_free_ports 1)"
  PK_METRICS="127.0.0.1:$metrics"
  # shellcheck disable=SC2086
  "$PK_BIN/paxoskv" serve --thrift-port 0 --base-port "$base" --metrics-port "$metrics" \
    --data-dir "$PK_SERVER_DIR/data" --wal-dir "$PK_SERVER_DIR/wal" ${SERVE_ARGS:-} \
    >"$PK_SERVER_DIR/stdout" 2>"$PK_SERVER_DIR/stderr" &
  PK_PID=$!
  local i
  for i in $(seq 1 600); do
    if PK_ADDR="$(grep -o 'listening on [0-9.:]*' "$PK_SERVER_DIR/stdout" 2>/dev/null | awk '{print $3}')" \
      && [[ -n "$PK_ADDR" ]]; then
      pk_log "paxoskv serve ${SERVE_ARGS:-} (pid $PK_PID) listening on $PK_ADDR"
      return 0
    fi
    if ! kill -0 "$PK_PID" 2>/dev/null; then
      pk_log "paxoskv serve exited during start-up:"; tail -20 "$PK_SERVER_DIR/stderr" >&2
      return 1
    fi
    sleep 0.1
  done
  pk_log "paxoskv serve did not report its port within 60 s"; tail -20 "$PK_SERVER_DIR/stderr" >&2
  return 1
}

pk_stop_server() {
  if [[ -n "${PK_PID:-}" ]] && kill -0 "$PK_PID" 2>/dev/null; then
    kill -TERM "$PK_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PK_PID" 2>/dev/null || true
    wait "$PK_PID" 2>/dev/null || true
  fi
  PK_PID=""
  if [[ -n "${PK_KEEP_LOGS:-}" && -n "${PK_SERVER_DIR:-}" && -f "$PK_SERVER_DIR/stderr" ]]; then
    mkdir -p "$PK_KEEP_LOGS"
    cp "$PK_SERVER_DIR/stderr" "$PK_KEEP_LOGS/server-$(date +%H%M%S).stderr"
  fi
  if [[ -n "${PK_SERVER_DIR:-}" && -d "$PK_SERVER_DIR" ]]; then rm -rf "$PK_SERVER_DIR"; fi
  PK_SERVER_DIR=""
}

# Describes the server mode for reports.
pk_server_mode() {
  if [[ " ${SERVE_ARGS:-} " == *" --single "* ]]; then echo "single local store (no replication)"
  else echo "3-replica Paxos in one process (paxoskv serve)"; fi
}
