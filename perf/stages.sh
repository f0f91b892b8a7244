#!/usr/bin/env bash
# Where an operation's CPU goes on the whole machine, by stage of the write path: starts a fresh
# `paxoskv serve`, drives it with paxoskv-bench, records every CPU (`perf record -a`, DWARF call
# graphs) for PROFILE_SECONDS, and classifies each sample (perf/stages.py): apply, WAL, the
# front's requests and replies, replica links, the Paxos core, parking, glommio, RocksDB's
# background work, the kernel's disk workers, the load generator, idle. Prints µs of CPU per
# operation per stage and renders a flamegraph of the server's samples.
# Output: $OUT/{stages.md,stacks.folded,flamegraph.svg,bench.txt}
#
# Environment (defaults): WORKLOAD=write CLIENTS=64 KEYS=100000 PROFILE_SECONDS=5 FREQ=499
#   SERVE_ARGS="" SKIP_BUILD=0 PK_BIN=<target>/release OUT=perf/results/stages-<date>
#   KEEP_DATA=0 (1 keeps perf.data)
set -euo pipefail
source "$(dirname "$0")/common.sh"

pk_load_settings
PROFILE_SECONDS="${PROFILE_SECONDS:-5}"
FREQ="${FREQ:-499}"
OUT="${OUT:-$PK_ROOT/perf/results/stages-$(date +%Y-%m-%d_%H%M%S)}"

pk_need_profiler

mkdir -p "$OUT"
pk_serve_prepopulated

DURATION="$((PROFILE_SECONDS + 3))s"
pk_start_load "$OUT"
bench=$PK_LOAD_PID
sleep 1.5
pk_log "recording every CPU for $PROFILE_SECONDS s at $FREQ Hz ($WORKLOAD, $CLIENTS clients)"
perf record -q -a -F "$FREQ" --call-graph dwarf,8192 -o "$OUT/perf.data" \
  -- sleep "$PROFILE_SECONDS" 2>"$OUT/perf-record.log" >/dev/null
wait "$bench" || pk_log "the load generator reported an error (see $OUT/run.txt)"
server=$PK_PID
pk_stop_server
cp "$OUT/run.txt" "$OUT/bench.txt"

ops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["throughput_ops_per_s"] * float(sys.argv[2]))' \
  "$OUT/run.json" "$PROFILE_SECONDS")
pk_log "classifying the samples"
perf script -i "$OUT/perf.data" -F comm,pid,tid,ip,sym 2>/dev/null |
  python3 "$PK_ROOT/perf/stages.py" --server-pid "$server" --bench-pid "$bench" --ops "$ops" \
    --seconds "$PROFILE_SECONDS" --cpus "$(nproc)" --folded "$OUT/stacks.folded" >"$OUT/stages.md"
inferno-flamegraph --title "paxoskv serve: $WORKLOAD, $CLIENTS clients (server threads)" \
  <"$OUT/stacks.folded" >"$OUT/flamegraph.svg"
[[ "${KEEP_DATA:-0}" == 1 ]] || rm -f "$OUT/perf.data"
cat "$OUT/stages.md"
pk_log "flamegraph: $OUT/flamegraph.svg"
