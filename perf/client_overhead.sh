#!/usr/bin/env bash
# The client library's own cost, A/B against paxoskv-bench's native engine on one server in one
# run: throughput, p50/p99, and the client process's CPU per call (user+sys µs / calls), per
# workload, engines alternating ROUNDS times.
#
#   perf/client_overhead.sh                 # ROUNDS=2 DURATION=8s C=32 P=1
#   WORKLOADS="ping read write" C=64 P=4 perf/client_overhead.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-8s}"
C="${C:-32}"
P="${P:-1}"
WORKLOADS="${WORKLOADS:-ping read write}"
pk_build
pk_start_server
trap pk_stop_server EXIT
out="$(mktemp -d /tmp/paxoskv-client-overhead.XXXXXX)"
pk_log "server at $PK_ADDR; results in $out"
"$PK_BIN/paxoskv-bench" write --addr "$PK_ADDR" -c 16 --keys 10000 --prepopulate \
  --warmup 0s --duration 1s -q >/dev/null
for w in $WORKLOADS; do
  for r in $(seq 1 "$ROUNDS"); do
    for engine in native library; do
      f="$out/$w-$engine-$r"
      /usr/bin/time -f "%U %S" -o "$f.cpu" "$PK_BIN/paxoskv-bench" "$w" --addr "$PK_ADDR" \
        --engine "$engine" --framed -c "$C" -p "$P" --keys 10000 --warmup 2s --duration "$DURATION" \
        -q --json "$f.json" >/dev/null
    done
  done
done
python3 - "$out" "$WORKLOADS" "$ROUNDS" <<'PY'
import json, sys
out, workloads, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def load(w, e, r):
    j = json.load(open(f"{out}/{w}-{e}-{r}.json"))
    u, s = map(float, open(f"{out}/{w}-{e}-{r}.cpu").read().split()[-2:])
    ops = j["ok_count"] + j["conflict_count"]
    lat = j["latency"]
    # The process ran warm-up and measurement: charge its CPU to the calls of both (the
    # warm-up's at the measured rate).
    calls = ops * (j["warmup_s"] + j["measured_s"]) / max(j["measured_s"], 1e-9)
    return j["throughput_ops_per_s"], lat["p50_us"], lat["p99_us"], (u + s) * 1e6 / max(calls, 1), j["error_count"]
print(f"{'workload':8} {'engine':8} {'ops/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'client CPU µs/call':>19} {'errors':>6}")
for w in workloads:
    rows = {}
    for e in ("native", "library"):
        rs = [load(w, e, r) for r in range(1, rounds + 1)]
        avg = [sum(x) / len(x) for x in zip(*rs)]
        rows[e] = avg
        print(f"{w:8} {e:8} {avg[0]:9.0f} {avg[1]:8.0f} {avg[2]:8.0f} {avg[3]:19.1f} {avg[4]:6.0f}")
    n, l = rows["native"], rows["library"]
    print(f"{w:8} {'lib/nat':8} {l[0]/n[0]:9.2f} {l[1]/n[1]:8.2f} {l[2]/n[2]:8.2f} {l[3]/n[3]:19.2f}")
PY
