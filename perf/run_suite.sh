#!/usr/bin/env bash
# Runs the standard suite against a freshly started `paxoskv serve`: every workload in WORKLOADS
# at every client count in CLIENTS, then writes perf/results/<date>/report.md, report.json and
# latency.svg (percentile spectra), and stops the server.
#
# Environment (defaults): DURATION=10s WARMUP=2s CLIENTS="1 16 64 256"
#   WORKLOADS="write read mixed txn" KEYS=100000 PIPELINE=1 KEY_DIST=uniform
#   SERVE_ARGS="" (e.g. --single for one local store) BENCH_ARGS="" (extra paxoskv-bench flags)
#   SKIP_BUILD=0 OUT=perf/results/<date>
set -euo pipefail
source "$(dirname "$0")/common.sh"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CLIENTS="${CLIENTS:-1 16 64 256}"
WORKLOADS="${WORKLOADS:-write read mixed txn}"
KEYS="${KEYS:-100000}"
PIPELINE="${PIPELINE:-1}"
KEY_DIST="${KEY_DIST:-uniform}"
OUT="${OUT:-$PK_ROOT/perf/results/$(date +%Y-%m-%d_%H%M%S)}"

pk_build
mkdir -p "$OUT"
trap pk_stop_server EXIT
pk_start_server

pk_log "prepopulating $KEYS keys"
# shellcheck disable=SC2086
pk_prepopulate "$KEYS" ${BENCH_ARGS:-} >"$OUT/prepopulate.txt"

for w in $WORKLOADS; do
  for c in $CLIENTS; do
    pk_log "$w, $c clients, pipeline $PIPELINE, $DURATION"
    # shellcheck disable=SC2086
    "$PK_BIN/paxoskv-bench" "$w" --addr "$PK_ADDR" -c "$c" -p "$PIPELINE" --keys "$KEYS" \
      --key-dist "$KEY_DIST" --warmup "$WARMUP" --duration "$DURATION" -q \
      --label "$w-c$c" --json "$OUT/$w-c$c.json" --hdr-log "$OUT/$w-c$c.hlog" \
      --metrics "$PK_METRICS" ${BENCH_ARGS:-} \
      | tee "$OUT/$w-c$c.txt" >&2 || pk_log "run $w-c$c failed"
  done
done

pk_stop_server
python3 "$PK_ROOT/perf/report.py" "$OUT" \
  --title "paxoskv standard suite" \
  --server-mode "$(pk_server_mode)" \
  --commit "$(git -C "$PK_ROOT" rev-parse --short HEAD)$(git -C "$PK_ROOT" diff --quiet HEAD -- src || echo '+dirty')"
pk_log "report: $OUT/report.md"
