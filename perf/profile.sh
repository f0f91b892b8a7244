#!/usr/bin/env bash
# Profiles `paxoskv serve` under load: starts a fresh server, drives it with paxoskv-bench,
# records the server with `perf record` and renders a flamegraph with inferno.
# Output: perf/results/profile-<date>/{flamegraph.svg,stacks.folded,top.txt,bench.txt,perf.data}.
#
# Environment (defaults): WORKLOAD=write CLIENTS=64 PIPELINE=1 KEYS=100000 PROFILE_SECONDS=10
#   FREQ=499 (samples/s per CPU) CALL_GRAPH=dwarf,16384 (release builds have no frame pointers;
#   CALL_GRAPH=fp is `perf record -g`) SERVE_ARGS="" BENCH_ARGS="" SKIP_BUILD=0
set -euo pipefail
source "$(dirname "$0")/common.sh"

WORKLOAD="${WORKLOAD:-write}"
CLIENTS="${CLIENTS:-64}"
PIPELINE="${PIPELINE:-1}"
KEYS="${KEYS:-100000}"
PROFILE_SECONDS="${PROFILE_SECONDS:-10}"
FREQ="${FREQ:-499}"
CALL_GRAPH="${CALL_GRAPH:-dwarf,16384}"
OUT="${OUT:-$PK_ROOT/perf/results/profile-$(date +%Y-%m-%d_%H%M%S)}"

pk_need_profiler

mkdir -p "$OUT"
pk_serve_prepopulated

pk_log "load: $WORKLOAD, $CLIENTS clients x pipeline $PIPELINE; recording $PROFILE_SECONDS s at $FREQ Hz ($CALL_GRAPH)"
# shellcheck disable=SC2086
"$PK_BIN/paxoskv-bench" "$WORKLOAD" --addr "$PK_ADDR" -c "$CLIENTS" -p "$PIPELINE" --keys "$KEYS" \
  --warmup 2s --duration "$((PROFILE_SECONDS + 2))s" -q ${BENCH_ARGS:-} >"$OUT/bench.txt" &
bench=$!
sleep 2
if [[ "$CALL_GRAPH" == fp ]]; then cg=(-g); else cg=(--call-graph "$CALL_GRAPH"); fi
perf record -F "$FREQ" "${cg[@]}" -p "$PK_PID" -o "$OUT/perf.data" -- sleep "$PROFILE_SECONDS" 2>"$OUT/perf-record.log"
wait "$bench" || pk_log "the load generator reported an error (see $OUT/bench.txt)"
pk_stop_server

pk_log "rendering the flamegraph"
perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/stacks.folded"
inferno-flamegraph --title "paxoskv serve: $WORKLOAD, $CLIENTS clients" <"$OUT/stacks.folded" >"$OUT/flamegraph.svg"
perf report -i "$OUT/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$OUT/top.txt" || true
# Time per thread (comm) from the folded stacks: where the server's CPU goes.
awk '{n=$NF; sub(/;.*/,""); t[$1]+=n; s+=n} END {for (k in t) printf "%6.1f%%  %s\n", 100*t[k]/s, k}' \
  "$OUT/stacks.folded" | sort -rn >"$OUT/threads.txt" || true
cat "$OUT/bench.txt" >&2
echo "--- CPU by thread ---" >&2; cat "$OUT/threads.txt" >&2
echo "--- top symbols ---" >&2; head -25 "$OUT/top.txt" >&2 || true
pk_log "flamegraph: $OUT/flamegraph.svg"
