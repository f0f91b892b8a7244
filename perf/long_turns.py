#!/usr/bin/env python3
"""Long turns of one glommio executor thread, from `perf script` output (see long_turns.sh).

glommio submits and reaps io_uring work only between runs of ready tasks, so the time between
two `io_uring_enter` calls of an executor thread (from one's return to the next one's entry)
is time in which none of its I/O completions is looked at: its peers' messages, its WAL
writes and its clients wait. This lists those gaps over a threshold, the CPU samples inside
each, and what the samples were doing.

usage: long_turns.py SCRIPT_OUTPUT FREQ_HZ [THRESHOLD_MS]
"""
import bisect
import collections
import re
import sys

HEADER = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+(\S+):(.*)$")
SWITCH = re.compile(r"prev_state=(\S+) ==> next_comm=(\S+)")
SCHED_FRAMES = ("__schedule", "schedule", "__cond_resched", "preempt_schedule")


def parse(path):
    """Yields (time, event, trace, frames) per event of `perf script -F tid,time,event,trace,ip,sym`."""
    cur = None
    with open(path) as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if cur:
                    yield cur
                cur = (float(m.group(2)), m.group(3), m.group(4), [])
                continue
            if not line.strip():
                continue
            parts = line.split(None, 1)
            if cur and len(parts) == 2:
                cur[3].append(parts[1].strip().split(" (")[0][:100])
        if cur:
            yield cur


def main():
    path, freq = sys.argv[1], float(sys.argv[2])
    threshold = float(sys.argv[3]) / 1e3 if len(sys.argv) > 3 else 0.001
    turns = []  # (start, end)
    samples = []
    switches = []  # (time, what)
    last_exit = None
    first = last = None
    for t, event, trace, frames in parse(path):
        first = t if first is None else first
        last = t
        if event.startswith("syscalls:sys_exit_io_uring_enter"):
            last_exit = t
        elif event.startswith("syscalls:sys_enter_io_uring_enter"):
            if last_exit is not None and t - last_exit >= threshold:
                turns.append((last_exit, t))
            last_exit = None
        elif event.startswith("cpu-clock"):
            samples.append((t, frames))
        elif event.startswith("sched:sched_switch"):
            m = SWITCH.search(trace)
            where = " < ".join([f for f in frames if f not in SCHED_FRAMES][:3])
            what = f"{m.group(1)}, {m.group(2)} ran" if m else trace.strip()[:60]
            switches.append((t, f"(switched out: {what}) {where}"))
    if first is None:
        sys.exit("no events")
    wall = last - first
    print(f"recorded {wall:.2f} s; {len(samples)} samples at {freq:.0f} Hz")
    if not turns:
        print(f"no gap of {threshold * 1e3:g} ms or more between io_uring_enter calls")
        return
    total = sum(e - s for s, e in turns)
    print(
        f"{len(turns)} gaps of {threshold * 1e3:g} ms or more between io_uring_enter calls, "
        f"{total * 1e3:.1f} ms in all ({100 * total / wall:.2f}% of the time), the longest "
        f"{max(e - s for s, e in turns) * 1e3:.2f} ms"
    )
    for lim in (2, 5, 10):
        n = sum(1 for s, e in turns if e - s >= lim / 1e3)
        print(f"  {lim:>2} ms or more: {n}")
    # `perf script` prints one thread's events in time order.
    sample_times = [t for t, _ in samples]
    switch_times = [t for t, _ in switches]

    def within(times, events, s, e):
        return [x for _, x in events[bisect.bisect_left(times, s) : bisect.bisect_right(times, e)]]

    by_stack = collections.defaultdict(lambda: [0, 0.0, 0.0])
    starved = 0
    for s, e in turns:
        inside_switches = within(switch_times, switches, s, e)
        inside = within(sample_times, samples, s, e)
        if inside_switches:
            key = inside_switches[0]
        elif len(inside) < 0.5 * (e - s) * freq:
            starved += 1
            key = "(few samples and no switch: the vCPU did not run, or interrupts were off)"
        else:
            common = collections.Counter(" < ".join(fr[:4]) for fr in inside)
            key = common.most_common(1)[0][0] if common else "(no samples)"
        entry = by_stack[key]
        entry[0] += 1
        entry[1] += e - s
        entry[2] = max(entry[2], e - s)
    print(f"  with under half the samples expected and no context switch: {starved}")
    print("\nby the most common stack inside the gap (count, total ms, longest ms):")
    for key, (n, tot, mx) in sorted(by_stack.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{n:5d} {tot * 1e3:8.1f} {mx * 1e3:7.2f}  {key}")


if __name__ == "__main__":
    main()
