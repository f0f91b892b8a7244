#!/usr/bin/env bash
# What holds a replica's executor: starts a fresh `paxoskv serve`, runs one paxoskv-bench
# workload, and records one executor thread (the busiest by default: the primary's) with
# `perf record` (20 kHz CPU samples, its io_uring_enter calls and its context switches). The
# time between two io_uring_enter calls is time in which the executor looks at none of its I/O
# completions; perf/long_turns.py lists those gaps over THRESHOLD_MS and what filled them (a
# stack, a context switch, or no samples at all: the vCPU did not run or interrupts were off).
# Output: perf/results/long-turns-<date>/{report.txt,bench.txt,perf.data}.
#
# Environment (defaults): WORKLOAD=write CLIENTS=64 KEYS=100000 DURATION=8s RECORD_SECONDS=4
#   FREQ=20000 THRESHOLD_MS=1 THREAD=1 (1 = the busiest replica executor thread, 2 = the next)
#   SERVE_ARGS="" SKIP_BUILD=0 PK_BIN=<target>/release
set -euo pipefail
source "$(dirname "$0")/common.sh"

pk_load_settings
RECORD_SECONDS="${RECORD_SECONDS:-4}"
FREQ="${FREQ:-20000}"
THRESHOLD_MS="${THRESHOLD_MS:-1}"
THREAD="${THREAD:-1}"
OUT="${OUT:-$PK_ROOT/perf/results/long-turns-$(date +%Y-%m-%d_%H%M%S)}"
pk_need_command perf linux-perf

mkdir -p "$OUT"
pk_serve_prepopulated
pk_start_load "$OUT"
sleep 2
tid="$(for t in /proc/"$PK_PID"/task/*; do
  printf '%s %s %s\n' "$(awk '{print $14 + $15}' "$t/stat")" "$(basename "$t")" "$(cat "$t/comm")"
done | grep paxoskv-replica | sort -rn | sed -n "${THREAD}p" | cut -d' ' -f2)"
[[ -n "$tid" ]] || { pk_log "no replica executor thread number $THREAD"; exit 1; }
pk_log "recording thread $tid for $RECORD_SECONDS s at $FREQ Hz"
perf record -q -k CLOCK_MONOTONIC -t "$tid" -o "$OUT/perf.data" \
  -e "cpu-clock/freq=$FREQ,call-graph=fp/" \
  -e syscalls:sys_enter_io_uring_enter/call-graph=no/ \
  -e syscalls:sys_exit_io_uring_enter/call-graph=no/ \
  -e sched:sched_switch/call-graph=fp/ \
  -- sleep "$RECORD_SECONDS" 2>"$OUT/perf-record.log"
wait "$PK_LOAD_PID" || pk_log "the load generator reported an error (see $OUT/run.txt)"
pk_stop_server
perf script -i "$OUT/perf.data" -F tid,time,event,trace,ip,sym 2>/dev/null >"$OUT/script.txt"
python3 "$(dirname "$0")/long_turns.py" "$OUT/script.txt" "$FREQ" "$THRESHOLD_MS" >"$OUT/report.txt"
rm -f "$OUT/script.txt"
cat "$OUT/run.txt" >&2
cat "$OUT/report.txt"
pk_log "report: $OUT/report.txt"
