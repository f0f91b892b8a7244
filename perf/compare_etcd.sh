#!/usr/bin/env bash
# Runs the same workload shape against a 3-member etcd (Debian etcd-server, loopback) and against
# a fresh `paxoskv serve`, one after the other in this run, and prints paxoskv/etcd ratios.
#
# Driver: paxoskv-bench for both. For etcd it speaks the v3 HTTP/JSON gateway (/v3/kv/put,
# /v3/kv/range, linearizable reads) over keep-alive connections with one request in flight per
# connection, sent to the leader; for paxoskv it speaks Thrift. Same connection counts, key
# count, key/value sizes, warm-up and duration. See perf/README.md for why this driver.
#
# Environment (defaults): CLIENTS="1 16 64" WORKLOADS="write read" DURATION=10s WARMUP=2s
#   KEYS=10000 SERVE_ARGS="" SKIP_BUILD=0 OUT=perf/results/etcd-<date>
set -euo pipefail
source "$(dirname "$0")/common.sh"

CLIENTS="${CLIENTS:-1 16 64}"
WORKLOADS="${WORKLOADS:-write read}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
KEYS="${KEYS:-10000}"
OUT="${OUT:-$PK_ROOT/perf/results/etcd-$(date +%Y-%m-%d_%H%M%S)}"

pk_need_command etcd etcd-server
pk_need_command etcdctl etcd-client version

ETCD_DIR=""
ETCD_PIDS=()
stop_etcd() {
  for p in "${ETCD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${ETCD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ETCD_PIDS=()
  if [[ -n "$ETCD_DIR" && -d "$ETCD_DIR" ]]; then rm -rf "$ETCD_DIR"; fi
  ETCD_DIR=""
}
cleanup() { stop_etcd; pk_stop_server; }
trap cleanup EXIT

# Starts 3 members; sets ETCD_ENDPOINTS and ETCD_LEADER (host:port of the leader's client URL).
start_etcd() {
  ETCD_DIR="$(mktemp -d /tmp/etcd-perf.XXXXXX)"
  local ports cluster i
  read -r -a ports <<<"$(pk_free_ports 6)"
  cluster="m0=http://127.0.0.1:${ports[3]},m1=http://127.0.0.1:${ports[4]},m2=http://127.0.0.1:${ports[5]}"
  ETCD_ENDPOINTS="http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[2]}"
  for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$ETCD_DIR/m$i" \
      --listen-client-urls "http://127.0.0.1:${ports[$i]}" --advertise-client-urls "http://127.0.0.1:${ports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "perf-$$" \
      --logger zap --log-level warn >"$ETCD_DIR/m$i.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  for _ in $(seq 1 100); do
    if etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  ETCD_LEADER="$(etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    h = e["Status"]["header"]
    if e["Status"]["leader"] == h["member_id"]:
        print(e["Endpoint"].replace("http://", "")); break')"
  if [[ -z "$ETCD_LEADER" ]]; then pk_log "etcd has no leader"; return 1; fi
  pk_log "etcd $(etcd --version | head -1 | awk '{print $3}') 3 members up; leader $ETCD_LEADER"
}

bench() { # system workload clients addr protocol-args...
  local sys=$1 w=$2 c=$3 addr=$4
  shift 4
  pk_log "$sys: $w, $c clients"
  "$PK_BIN/paxoskv-bench" "$w" --addr "$addr" -c "$c" -p 1 --keys "$KEYS" --warmup "$WARMUP" \
    --duration "$DURATION" -q --label "$sys-$w-c$c" --json "$OUT/$sys-$w-c$c.json" "$@" \
    | tee "$OUT/$sys-$w-c$c.txt" >&2 || pk_log "$sys $w c$c failed"
}

pk_build
mkdir -p "$OUT"

start_etcd
"$PK_BIN/paxoskv-bench" write --protocol etcd-http --addr "$ETCD_LEADER" --prepopulate --keys "$KEYS" \
  -c 16 --warmup 0s --duration 1s -q >/dev/null
for w in $WORKLOADS; do
  for c in $CLIENTS; do bench etcd "$w" "$c" "$ETCD_LEADER" --protocol etcd-http; done
done
stop_etcd

pk_start_server
pk_prepopulate "$KEYS" >/dev/null
for w in $WORKLOADS; do
  for c in $CLIENTS; do bench paxoskv "$w" "$c" "$PK_ADDR"; done
done
pk_stop_server

python3 - "$OUT" "$(pk_server_mode)" <<'PY' | tee "$OUT/comparison.md"
import json, os, sys
out, mode = sys.argv[1], sys.argv[2]
runs = {}
for n in os.listdir(out):
    if n.endswith(".json"):
        r = json.load(open(os.path.join(out, n)))
        runs[(n.split("-")[0], r["workload"], r["connections"])] = r
print("paxoskv (%s) vs etcd 3-member (v3 HTTP/JSON gateway, leader), same run" % mode)
print()
print("| workload | clients | etcd ops/s | etcd p50 | etcd p99 | paxoskv ops/s | paxoskv p50 | paxoskv p99 | throughput ratio | p50 ratio (etcd/paxoskv) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (s, w, c), e in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][2])):
    if s != "etcd" or ("paxoskv", w, c) not in runs:
        continue
    p = runs[("paxoskv", w, c)]
    ratio = p["throughput_ops_per_s"] / e["throughput_ops_per_s"] if e["throughput_ops_per_s"] else float("inf")
    p50r = e["latency"]["p50_us"] / p["latency"]["p50_us"] if p["latency"]["p50_us"] else float("inf")
    errs = lambda r: "" if not r["errors"] else " (errors %d)" % r["error_count"]
    print("| %s | %d | %.0f%s | %.0f µs | %.0f µs | %.0f%s | %.0f µs | %.0f µs | %.1fx | %.1fx |" % (
        w, c, e["throughput_ops_per_s"], errs(e), e["latency"]["p50_us"], e["latency"]["p99_us"],
        p["throughput_ops_per_s"], errs(p), p["latency"]["p50_us"], p["latency"]["p99_us"], ratio, p50r))
PY
pk_log "comparison: $OUT/comparison.md"
