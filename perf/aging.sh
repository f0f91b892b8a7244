#!/usr/bin/env bash
# Does the cost of a write stay flat as the store ages? Two experiments, each on a fresh
# `paxoskv serve` in a temporary directory:
#
#  A. overwrites of a small key set for a long time: ROUNDS runs of ROUND each (default 10 x 60 s
#     of `write -c 64 --keys 1000`), one throughput per round; the last round against the first.
#  B. a store that first took 1M prepopulated keys and 1M overwrites, against a fresh store:
#     `write -c 64 --keys 1000000` for MEASURE on each; the aged store against the fresh one.
#     The overwrites run for OVERWRITE_TIME (default 60 s; the report says how many were done).
#
# PK_KEEP_LOGS=DIR keeps each server's stderr there.
# Environment (defaults): ROUNDS=10 ROUND=60s BIG_KEYS=1000000 OVERWRITE_TIME=60s MEASURE=20s
#   CLIENTS=64 PARTS="A B" SKIP_BUILD=0 OUT=perf/results/aging-<date>
set -euo pipefail
source "$(dirname "$0")/common.sh"

ROUNDS="${ROUNDS:-10}"
ROUND="${ROUND:-60s}"
BIG_KEYS="${BIG_KEYS:-1000000}"
OVERWRITE_TIME="${OVERWRITE_TIME:-60s}"
MEASURE="${MEASURE:-20s}"
CLIENTS="${CLIENTS:-64}"
PARTS="${PARTS:-A B}"
OUT="${OUT:-$PK_ROOT/perf/results/aging-$(date +%Y-%m-%d_%H%M%S)}"

pk_build
mkdir -p "$OUT"
trap pk_stop_server EXIT

# bench LABEL ARGS...: one paxoskv-bench run against the current server; prints its ops/s.
bench() {
  local label="$1"; shift
  "$PK_BIN/paxoskv-bench" "$@" --addr "$PK_ADDR" --metrics "$PK_METRICS" -q \
    --json "$OUT/$label.json" >"$OUT/$label.txt"
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["throughput_ops_per_s"]))' \
    "$OUT/$label.json"
}

report="$OUT/aging.md"
: >"$report"

if [[ " $PARTS " == *" A "* ]]; then
  pk_start_server
  echo "## A. $ROUNDS x $ROUND of overwrites on 1000 keys, $CLIENTS clients" | tee -a "$report"
  echo "" >>"$report"
  echo "| round | writes/s |" >>"$report"
  echo "|---:|---:|" >>"$report"
  first=""; last=""
  for r in $(seq 1 "$ROUNDS"); do
    w="$(bench "A-round$r" write -c "$CLIENTS" --keys 1000 --warmup 0s --duration "$ROUND")"
    pk_log "round $r: $w writes/s"
    echo "| $r | $w |" >>"$report"
    [[ -z "$first" ]] && first="$w"
    last="$w"
  done
  python3 -c "import sys; f,l=float(sys.argv[1]),float(sys.argv[2]); print(f'\nlast/first = {l/f:.3f}\n')" \
    "$first" "$last" | tee -a "$report"
  pk_stop_server
fi

if [[ " $PARTS " == *" B "* ]]; then
  echo "## B. $CLIENTS-client writes over $BIG_KEYS keys: aged store vs fresh store" | tee -a "$report"
  pk_start_server
  pk_log "fresh: prepopulating $BIG_KEYS keys"
  pk_prepopulate "$BIG_KEYS" >"$OUT/B-fresh-prepopulate.txt"
  fresh="$(bench B-fresh write -c "$CLIENTS" --keys "$BIG_KEYS" --warmup 2s --duration "$MEASURE")"
  pk_log "fresh store: $fresh writes/s"
  pk_stop_server

  pk_start_server
  pk_log "aged: prepopulating $BIG_KEYS keys, then overwrites for $OVERWRITE_TIME"
  pk_prepopulate "$BIG_KEYS" >"$OUT/B-aged-prepopulate.txt"
  over="$(bench B-overwrite write -c "$CLIENTS" --keys "$BIG_KEYS" --warmup 0s --duration "$OVERWRITE_TIME")"
  done_writes="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok_count"])' "$OUT/B-overwrite.json")"
  pk_log "overwrites: $done_writes at $over writes/s"
  aged="$(bench B-aged write -c "$CLIENTS" --keys "$BIG_KEYS" --warmup 2s --duration "$MEASURE")"
  pk_log "aged store: $aged writes/s"
  pk_stop_server
  {
    echo ""
    echo "| store | writes/s |"
    echo "|---|---:|"
    echo "| fresh ($BIG_KEYS keys prepopulated) | $fresh |"
    echo "| aged (+ $done_writes overwrites) | $aged |"
    python3 -c "import sys; print(f'\naged/fresh = {float(sys.argv[2])/float(sys.argv[1]):.3f}')" "$fresh" "$aged"
  } | tee -a "$report"
fi
pk_log "report: $report"
