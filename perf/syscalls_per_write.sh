#!/usr/bin/env bash
# What each operation costs the kernel: starts a fresh `paxoskv serve`, runs one paxoskv-bench
# workload, and counts, per server thread and for the load generator, the system calls that
# carry a request (sendto, recvfrom, io_uring_enter, membarrier, futex, epoll_wait) with
# `perf stat` over 3 s of the run, and the context switches (voluntary: the thread waited;
# involuntary: it was preempted) from /proc/PID/task/*/status. Prints each per committed
# command (writes) or per operation (other workloads).
#
# Environment (defaults): WORKLOAD=write CLIENTS=64 KEYS=100000 DURATION=8s SERVE_ARGS=""
#   SKIP_BUILD=0 PK_BIN=<target>/release
set -euo pipefail
source "$(dirname "$0")/common.sh"

pk_load_settings
WINDOW=3

pk_need_command perf linux-perf
pk_build
trap pk_stop_server EXIT
pk_start_server
pk_prepopulate "$KEYS" >/dev/null

# Prints "pid/tid name voluntary involuntary" for every thread of the given processes. Server
# threads are told apart by tid: the executor started first hosts replica 0 (the first primary)
# and the front.
switches() {
  local p t counts
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      # A thread may end between the listing and the read (io_uring's and glommio's helpers).
      counts="$(awk '/^(non)?voluntary_ctxt_switches/ {printf "%s ", $2}' "$t/status" 2>/dev/null)" \
        || continue
      [[ -n "$counts" ]] && printf '%s %s %s\n' "$p/$(basename "$t")" \
        "$(tr ' ' _ <"$t/comm" 2>/dev/null || echo gone)" "$counts"
    done
  done
}

out="$(mktemp -d)"
pk_start_load "$out"
bench=$PK_LOAD_PID
sleep 1.5
events=syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_io_uring_enter
events+=,syscalls:sys_enter_membarrier,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait
switches "$PK_PID" "$bench" >"$out/before"
perf stat --per-thread -x, -e "$events" -p "$PK_PID,$bench" -o "$out/stat.csv" -- sleep "$WINDOW"
switches "$PK_PID" "$bench" >"$out/after"
wait "$bench"
python3 - "$out" "$WINDOW" "$WORKLOAD" "$bench" <<'PY'
import collections, json, sys
out, window, workload, bench = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
ops = json.load(open(f"{out}/run.json"))["throughput_ops_per_s"] * window
names, before, after = {}, {}, {}
for path, d in ((f"{out}/before", before), (f"{out}/after", after)):
    for line in open(path):
        pid_tid, name, vol, inv = line.split()
        pid, tid = pid_tid.split("/")
        names[tid] = "load generator" if pid == bench else f"{name} (tid {tid})"
        d[tid] = (int(vol), int(inv))
counts = collections.defaultdict(collections.Counter)
for line in open(f"{out}/stat.csv"):
    f = line.strip().split(",")
    if len(f) < 4 or not f[1].isdigit():
        continue
    tid = f[0].rsplit("-", 1)[-1]
    counts[names.get(tid, f[0])][f[3].split(":")[-1].replace("sys_enter_", "")] += int(f[1])
for tid, (vol, inv) in after.items():
    v0, i0 = before.get(tid, (0, 0))
    counts[names[tid]]["switches (waited)"] += vol - v0
    counts[names[tid]]["switches (preempted)"] += inv - i0
cols = ["sendto", "recvfrom", "io_uring_enter", "membarrier", "futex", "epoll_wait",
        "switches (waited)", "switches (preempted)"]
unit = "write" if workload == "write" else "operation"
print(f"{ops / window:.0f} ops/s; per {unit}, over {window:.0f} s:")
print("| thread | " + " | ".join(cols) + " |")
print("|---|" + "---:|" * len(cols))
for k in sorted(counts, key=lambda k: (k == "load generator", -sum(counts[k].values()))):
    c = counts[k]
    if sum(c.values()) < ops / 100:
        continue
    print(f"| {k} | " + " | ".join(f"{c[col] / ops:.2f}" for col in cols) + " |")
PY
rm -rf "$out"
