#!/usr/bin/env bash
# Where the server's CPU goes, per operation: starts a fresh `paxoskv serve`, runs one
# paxoskv-bench workload, and reads every server thread's CPU time (/proc/PID/task/*/stat)
# before and after the measured window. Prints µs of CPU per operation by thread kind (replica
# executors, which also host the front; the front executor if it has its own; apply threads;
# RocksDB's background threads), and the total.
#
# Environment (defaults): WORKLOAD=write CLIENTS=64 KEYS=100000 DURATION=8s SERVE_ARGS=""
#   SKIP_BUILD=0 PK_BIN=<target>/release
set -euo pipefail
source "$(dirname "$0")/common.sh"

pk_load_settings

pk_serve_prepopulated

# Prints "kind ticks" for every thread of the server.
snapshot() {
  local t
  for t in /proc/"$PK_PID"/task/*; do
    printf '%s %s\n' "$(cut -d- -f1-2 <"$t/comm" | sed 's/-[0-9]*$//')" \
      "$(awk '{print $14 + $15}' "$t/stat")"
  done
}

out="$(mktemp -d)"
pk_start_load "$out"
bench=$PK_LOAD_PID
sleep 1
snapshot >"$out/before"
start=$(date +%s.%N)
sleep 5
snapshot >"$out/after"
end=$(date +%s.%N)
wait "$bench"
python3 - "$out" "$start" "$end" "$(getconf CLK_TCK)" <<'PY'
import collections, json, sys
out, start, end, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def load(p):
    d = collections.Counter()
    for line in open(p):
        kind, ticks = line.rsplit(" ", 1)
        d[kind.strip()] += int(ticks)
    return d
a, b = load(f"{out}/before"), load(f"{out}/after")
run = json.load(open(f"{out}/run.json"))
ops = run["throughput_ops_per_s"] * (end - start)
print(f"{run['throughput_ops_per_s']:.0f} ops/s; server CPU per operation over {end - start:.1f} s:")
print("| threads | µs of CPU per operation | cores busy |")
print("|---|---:|---:|")
total = 0.0
for kind in sorted(set(a) | set(b)):
    sec = (b[kind] - a[kind]) / hz
    if sec <= 0:
        continue
    total += sec
    print(f"| {kind} | {sec / ops * 1e6:.1f} | {sec / (end - start):.2f} |")
print(f"| total | {total / ops * 1e6:.1f} | {total / (end - start):.2f} |")
PY
rm -rf "$out"
