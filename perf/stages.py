#!/usr/bin/env python3
"""Where an operation's CPU goes on the whole machine, by stage of the write path.

Reads `perf script -F comm,pid,tid,ip,sym` of a `perf record -a -g` (or `--call-graph dwarf`)
recording, classifies every sample by the stage it belongs to (the first rule below that one of
its frames matches), and prints a Markdown table: the stage's share of all samples and its µs
of CPU per operation (share x CPUS x SECONDS / OPS). Idle CPUs are a stage of their own, so the
shares add up to the machine.

    perf script -i perf.data -F comm,pid,tid,ip,sym | \
        stages.py --server-pid P --bench-pid B --ops N --seconds S --cpus C [--folded F]

--folded F also writes the server's samples as folded stacks (root first), for a flamegraph.
"""

import argparse
import collections
import re
import sys

# (stage, pattern over one frame's symbol). Checked in this order against every frame of a
# server sample; the first rule with a matching frame names the stage.
SERVER_RULES = [
    ("apply: RocksDB write batch and memtable", r"apply_many|KvStoreExecutor::apply|rocksdb::DBImpl::Write"),
    ("RocksDB flush and compaction", r"rocksdb::(FlushJob|CompactionJob|DBImpl::BackgroundCall)"),
    # The reactor submits the WAL's DMA writes with everything else in its ring: the block
    # layer's dispatch (the virtio doorbell) runs under the reactor's io_uring_enter.
    ("WAL: records, O_DSYNC writes, block dispatch", r"paxoskv::wal::|^io_write|^io_read|iomap_dio|blk_mq_|__blk_flush_plug|virtblk"),
    ("front: replies (encode, send; on loopback the send also runs the client's receive)", r"paxoskv::front::(send_batch|reply)"),
    ("front: requests (receive, decode, route)", r"paxoskv::front::"),
    ("replica links: frames, send and receive", r"paxoskv::transport::"),
    ("Paxos core", r"paxoskv::paxos::"),
    ("reads (snapshots, point and range reads)", r"paxoskv::storage::reader|paxoskv::storage::latest"),
    ("parking and waking (membarrier IPIs, futex, sleep)", r"membarrier|Reactor::sleep|futex|sysvec_call_function|sysvec_reschedule|io_cqring_wait"),
    ("io_uring: socket sends", r"^io_send|^io_sendmsg|^io_send_zc"),
    ("io_uring: socket receives", r"^io_recv|^io_recvmsg"),
    ("io_uring: polls, timeouts, cancels, completions", r"^io_poll_add|__io_arm_poll_handler|io_async_cancel|^io_timeout|io_try_cancel|tctx_task_work|io_handle_tw_list|__io_submit_flush_completions"),
    ("replica shell (steps, timers, hand-offs)", r"paxoskv::cluster::(?!\{impl#1\}::spawn_executor)"),
    ("executor runtime (glommio rings and tasks, clocks)", r"glommio::|clock_gettime"),
    ("interrupts", r"asm_common_interrupt|__do_softirq|handle_irq"),
    ("allocator and page faults", r"mi_|_mi_|asm_exc_page_fault|madvise"),
]

KERNEL_RULES = [
    ("kernel: disk (block layer, O_DSYNC completion workers)", r"blk_|dio|flush|virtblk|bio_|iomap|jbd2|ext4"),
    ("kernel: network softirq", r"net_rx_action|tcp_|ip_"),
]


def own_path(sym):
    """A symbol without its generic arguments: `call_once<paxoskv::x::Y>` is the standard
    library's code, not `paxoskv::x`'s."""
    out, depth = [], 0
    for ch in sym:
        if ch == "<":
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def parse(stream):
    """Yields (comm, pid, tid, frames leaf first) per sample."""
    head = re.compile(r"^(\S.*?)\s+(\d+)/(\d+)\s*$")
    comm = None
    frames = []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, pid, tid, frames
            comm, frames = None, []
            continue
        if line[0] not in " \t":
            m = head.match(line.rstrip())
            if comm is not None:
                yield comm, pid, tid, frames
            if m:
                comm, pid, tid = m.group(1).strip(), int(m.group(2)), int(m.group(3))
            else:
                comm, pid, tid = line.split()[0], -1, -1
            frames = []
            continue
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else "[unknown]"
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        # An inlined async fn shows as `poll<Box<paxoskv::m::f::{async_fn_env#0}>>`: the future
        # polled names the code; other generic arguments do not.
        frames.append(sym if sym.startswith("poll<") else own_path(sym))
    if comm is not None:
        yield comm, pid, tid, frames


def classify(comm, pid, frames, server, bench):
    if pid == 0 or comm == "swapper":
        return "idle"
    if pid == bench:
        return "load generator (its threads, user and kernel)"
    if pid in server:
        if comm.startswith("rocksdb"):
            return "RocksDB flush and compaction"
        for stage, _ in SERVER_RULES:
            rx = COMPILED[stage]
            if any(rx.search(f) for f in frames):
                return stage
        return "server: other"
    for stage, _ in KERNEL_RULES:
        rx = COMPILED[stage]
        if comm.startswith(("kworker", "kblockd", "ksoftirqd", "jbd2")) and any(
            rx.search(f) for f in frames
        ):
            return stage
    if comm.startswith(("kworker", "kblockd", "ksoftirqd", "jbd2", "rcu", "migration")):
        return "kernel: other threads"
    return "other processes"


COMPILED = {s: re.compile(p) for s, p in SERVER_RULES + KERNEL_RULES}
SERVER_STAGES = {s for s, _ in SERVER_RULES} | {"server: other"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--bench-pid", type=int, default=-2)
    ap.add_argument("--ops", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--cpus", type=int, required=True)
    ap.add_argument("--folded")
    ap.add_argument("--input", default="-")
    a = ap.parse_args()
    stream = sys.stdin if a.input == "-" else open(a.input, errors="replace")
    server = {a.server_pid}
    counts = collections.Counter()
    folded = collections.Counter()
    total = 0
    for comm, pid, _tid, frames in parse(stream):
        total += 1
        stage = classify(comm, pid, frames, server, a.bench_pid)
        counts[stage] += 1
        if a.folded and pid in server:
            stack = ";".join([comm] + [f.replace(";", ":") for f in reversed(frames)])
            folded[stack] += 1
    if total == 0:
        sys.exit("no samples")
    machine_us = a.cpus * a.seconds * 1e6
    print(f"{total} samples over {a.cpus} CPUs x {a.seconds:.1f} s, {a.ops:.0f} operations "
          f"({a.ops / a.seconds:.0f}/s): {machine_us / a.ops:.1f} µs of the machine per operation")
    print()
    print("| stage | share of the machine | µs of CPU per operation |")
    print("|---|---:|---:|")
    server_us = 0.0
    for stage, n in counts.most_common():
        us = n / total * machine_us / a.ops
        if stage in SERVER_STAGES:
            server_us += us
        print(f"| {stage} | {100 * n / total:.1f}% | {us:.2f} |")
    print(f"| **the server's threads** | | **{server_us:.2f}** |")
    if a.folded:
        with open(a.folded, "w") as f:
            for stack, n in folded.items():
                f.write(f"{stack} {n}\n")


if __name__ == "__main__":
    main()
