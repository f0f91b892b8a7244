#!/usr/bin/env bash
# How long a replica takes to rebuild from its peers after losing its disk.
#
# Starts three `paxoskv node` processes, fills the store with KEYS keys of VALUE bytes
# (paxoskv-bench write --prepopulate), kills node 2, deletes its data and WAL, restarts it on
# the empty disk and times until it has installed a snapshot from a peer and votes again
# (metrics paxoskv_replica_snapshots_installed_total and paxoskv_replica_amnesiac).
#
#   KEYS=250000 VALUE=4000 perf/rebuild.sh        # ~1 GB of values
#   SKIP_BUILD=1 PK_BIN=<dir> perf/rebuild.sh     # use prebuilt binaries
set -euo pipefail
source "$(dirname "$0")/common.sh"

KEYS="${KEYS:-250000}"
VALUE="${VALUE:-4000}"
pk_build

DIR="$(mktemp -d /tmp/paxoskv-rebuild.XXXXXX)"
read -r P0 P1 P2 < <(pk_free_ports 3)
read -r M0 M1 M2 < <(pk_free_ports 3)
PEERS="127.0.0.1:$P0,127.0.0.1:$P1,127.0.0.1:$P2"
METRICS=("$M0" "$M1" "$M2")
PIDS=()

start_node() {
  local id=$1
  "$PK_BIN/paxoskv" node --id "$id" --peers "$PEERS" --thrift-port 0 \
    --metrics-port "${METRICS[$id]}" --data-dir "$DIR/n$id/data" --wal-dir "$DIR/n$id/wal" \
    >"$DIR/n$id.stdout" 2>"$DIR/n$id.stderr" &
  PIDS[id]=$!
}

node_addr() {
  local id=$1 i
  for i in $(seq 1 600); do
    if grep -qo 'listening on [0-9.:]*' "$DIR/n$id.stdout" 2>/dev/null; then
      grep -o 'listening on [0-9.:]*' "$DIR/n$id.stdout" | tail -1 | awk '{print $3}'
      return 0
    fi
    sleep 0.1
  done
  pk_log "node $id did not start"; cat "$DIR/n$id.stderr" >&2; return 1
}

metric() {
  curl -s "http://127.0.0.1:${METRICS[$1]}/metrics" | awk -v m="$2" '$1 ~ "^"m {s += $2} END {print s + 0}'
}

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -z "${PK_KEEP_LOGS:-}" ]]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT
pk_need_command curl curl

for id in 0 1 2; do start_node "$id"; done
ADDR0="$(node_addr 0)"; node_addr 1 >/dev/null; node_addr 2 >/dev/null
pk_log "filling $KEYS keys x $VALUE bytes through $ADDR0"
"$PK_BIN/paxoskv-bench" write --addr "$ADDR0" -c 32 --keys "$KEYS" --value-size "$VALUE" \
  --prepopulate --warmup 0s --duration 1s >/dev/null
sleep 3 # let the memtables flush
STORE_MB=$(du -sm "$DIR/n1/data" | awk '{print $1}')
pk_log "store of a healthy replica: ${STORE_MB} MB on disk"

kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
rm -rf "$DIR/n2"
# Some traffic while it is gone, so the peers' logs move on.
"$PK_BIN/paxoskv-bench" write --addr "$ADDR0" -c 8 --keys 1000 --warmup 0s --duration 2s >/dev/null
T0=$(date +%s.%N)
start_node 2
node_addr 2 >/dev/null
while [[ "$(metric 2 paxoskv_replica_snapshots_installed_total)" -lt 1 ]]; do sleep 0.2; done
T1=$(date +%s.%N)
# It votes again once a write proposed after its return commits.
"$PK_BIN/paxoskv-bench" write --addr "$ADDR0" -c 1 --keys 10 --warmup 0s --duration 1s >/dev/null
while [[ "$(metric 2 paxoskv_replica_amnesiac)" != 0 ]]; do sleep 0.2; done
T2=$(date +%s.%N)
REBUILT_MB=$(du -sm "$DIR/n2/data" | awk '{print $1}')
python3 - "$STORE_MB" "$REBUILT_MB" "$T0" "$T1" "$T2" <<'PY'
import sys
store, rebuilt, t0, t1, t2 = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:])
print(f"store {store} MB; snapshot installed after {t1 - t0:.1f} s "
      f"({store / max(t1 - t0, 1e-9):.0f} MB/s); voting again after {t2 - t0:.1f} s; "
      f"rebuilt store {rebuilt} MB")
PY
