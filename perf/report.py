#!/usr/bin/env python3
"""Turns a directory of paxoskv-bench JSON results into report.md, report.json and latency.svg.

The plot is a latency percentile spectrum per workload (x: percentile on the usual
1/(1-q) scale, y: latency on a log scale, one line per client count), rendered as plain SVG so
the report needs nothing beyond the Python standard library.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys

WORKLOAD_ORDER = ["write", "read", "mixed", "txn", "range", "ping"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def load(out_dir):
    runs = []
    for name in sorted(os.listdir(out_dir)):
        if not name.endswith(".json") or name == "report.json":
            continue
        with open(os.path.join(out_dir, name)) as f:
            try:
                r = json.load(f)
            except json.JSONDecodeError:
                continue
        if r.get("tool") == "paxoskv-bench":
            r["_file"] = name
            runs.append(r)

    def key(r):
        w = r["workload"]
        return (WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else 99, r["connections"], r["pipeline"])

    runs.sort(key=key)
    return runs


def fmt_us(us):
    if us >= 10000:
        return "%.1f ms" % (us / 1000)
    if us >= 1000:
        return "%.2f ms" % (us / 1000)
    return "%.0f µs" % us


def markdown(runs, meta):
    lines = [
        "# %s" % meta["title"],
        "",
        "- date: %s" % meta["date"],
        "- commit: %s" % meta["commit"],
        "- server: %s" % meta["server_mode"],
        "- machine: %s, %s cores" % (meta["machine"], meta["cores"]),
        "- keys %s, %s B keys, %s B values, key distribution %s"
        % (
            runs[0]["keys"] if runs else "?",
            runs[0]["key_size_bytes"] if runs else "?",
            runs[0]["value_size_bytes"] if runs else "?",
            runs[0]["key_dist"] if runs else "?",
        ),
        "",
        "| workload | clients | pipeline | ops/s | p50 | p90 | p99 | p99.9 | max | conflicts | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lat = r["latency"]
        errors = ", ".join("%s %d" % kv for kv in sorted(r["errors"].items())) or "0"
        lines.append(
            "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %d | %s |"
            % (
                r["workload"] + (" %.0f:%.0f" % (r["read_ratio"] * 100, 100 - r["read_ratio"] * 100) if r.get("read_ratio") is not None else ""),
                r["connections"],
                r["pipeline"],
                r["throughput_ops_per_s"],
                fmt_us(lat["p50_us"]),
                fmt_us(lat["p90_us"]),
                fmt_us(lat["p99_us"]),
                fmt_us(lat["p999_us"]),
                fmt_us(lat["max_us"]),
                r["conflict_count"],
                errors,
            )
        )
    lines += ["", "Latency percentile spectra: `latency.svg`. Raw results: one JSON, text and HDR log per run.", ""]
    return "\n".join(lines)


def svg(runs, title):
    by_workload = {}
    for r in runs:
        if r.get("spectrum"):
            by_workload.setdefault(r["workload"], []).append(r)
    panels = [w for w in WORKLOAD_ORDER if w in by_workload] + [w for w in by_workload if w not in WORKLOAD_ORDER]
    if not panels:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="60"><text x="10" y="30">no data</text></svg>'
    pw, ph, ml, mb, mt, mr = 460, 300, 70, 50, 40, 20
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    width, height = cols * (pw + ml + mr), rows * (ph + mt + mb) + 40
    # x: log10(1/(1-q)), q capped at 0.99999; y: log10(latency_us)
    x_max = 5.0
    all_lat = [p["latency_us"] for r in runs for p in r.get("spectrum", []) if p["latency_us"] > 0]
    y_lo = math.floor(math.log10(max(min(all_lat), 1.0))) if all_lat else 0
    y_hi = math.ceil(math.log10(max(all_lat))) if all_lat else 3
    if y_hi <= y_lo:
        y_hi = y_lo + 1
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="%d" y="22" font-size="15" text-anchor="middle">%s</text>' % (width // 2, title),
    ]
    for i, w in enumerate(panels):
        ox = (i % cols) * (pw + ml + mr) + ml
        oy = (i // cols) * (ph + mt + mb) + mt + 30

        def px(q):
            q = min(q, 0.99999)
            return ox + pw * math.log10(1.0 / (1.0 - q)) / x_max

        def py(us):
            v = math.log10(max(us, 10 ** y_lo))
            return oy + ph - ph * (v - y_lo) / (y_hi - y_lo)

        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (ox, oy, pw, ph))
        out.append('<text x="%d" y="%d" font-size="13" text-anchor="middle">%s</text>' % (ox + pw // 2, oy - 8, w))
        for e in range(y_lo, y_hi + 1):
            y = py(10 ** e)
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (ox, y, ox + pw, y))
            out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (ox - 5, y + 4, fmt_us(10 ** e)))
        for k, label in enumerate(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]):
            x = ox + pw * k / x_max
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, oy, x, oy + ph))
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, oy + ph + 15, label))
        out.append('<text x="%d" y="%d" text-anchor="middle">percentile</text>' % (ox + pw // 2, oy + ph + 32))
        for j, r in enumerate(by_workload[w]):
            color = COLORS[j % len(COLORS)]
            pts = " ".join("%.1f,%.1f" % (px(p["quantile"]), py(p["latency_us"])) for p in r["spectrum"] if p["quantile"] < 1.0)
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, pts))
            label = "%d clients%s: %.0f ops/s" % (r["connections"], "" if r["pipeline"] == 1 else " x%d" % r["pipeline"], r["throughput_ops_per_s"])
            out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (ox + 8, oy + 16 + 14 * j, color, label))
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--title", default="paxoskv benchmark")
    ap.add_argument("--server-mode", default="unknown")
    ap.add_argument("--commit", default="unknown")
    a = ap.parse_args()
    runs = load(a.out_dir)
    if not runs:
        sys.exit("no paxoskv-bench JSON results in %s" % a.out_dir)
    meta = {
        "title": a.title,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": a.commit,
        "server_mode": a.server_mode,
        "machine": "%s %s" % (platform.system(), platform.release()),
        "cores": os.cpu_count(),
    }
    with open(os.path.join(a.out_dir, "report.md"), "w") as f:
        f.write(markdown(runs, meta))
    with open(os.path.join(a.out_dir, "report.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=2)
    with open(os.path.join(a.out_dir, "latency.svg"), "w") as f:
        f.write(svg(runs, "%s — %s" % (a.title, a.server_mode)))
    print(markdown(runs, meta))


if __name__ == "__main__":
    main()
