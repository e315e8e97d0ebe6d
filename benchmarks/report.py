"""Turn pytest-benchmark JSON files into ratio tables (markdown) for benchmarks/RESULTS.md.

    make bench                                          # writes benchmarks/out/bench.json, prints the tables
    python benchmarks/report.py benchmarks/out/bench.json

Files that are not pytest-benchmark output (e.g. the interleaved-ratio JSON some suites write beside it) are
skipped with a note on stderr.

Ratios are best-of-rounds (min) times of the baseline over gnnaccel's in the same run (min is the least
sensitive to other load on a shared machine); absolute times on shared machines
are noise, ratios are what the tables report.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(paths):
    """Rows ``dict(group, name, best, **extra_info)`` of every benchmark in the pytest-benchmark files
    ``paths`` (``best``: the minimum over rounds, in seconds)."""
    rows = []
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            print(f"report.py: skipped {path}: not a pytest-benchmark JSON file", file=sys.stderr)
            continue
        for bench in data["benchmarks"]:
            rows.append(dict(group=bench.get("group") or bench.get("fullname", "").split("::")[0],
                             name=bench["name"], best=bench["stats"]["min"], **bench.get("extra_info", {})))
    return rows


def aggregate_table(rows):
    groups = defaultdict(dict)
    copy_bw = {}
    for r in rows:
        if r.get("impl") == "memcopy":
            copy_bw[r["graph"]] = r["bytes"] / r["best"] / 1e9
        elif "reduce" in r:
            groups[(r["graph"], r["reduce"])][r["impl"]] = r
    out = ["| graph | reduce | gnnaccel int32 ms | int64 ms | sparse.mm ms | PyG ms | vs sparse.mm | vs PyG | GB/s | % of copy |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (graph, reduce), impls in sorted(groups.items()):
        ours = impls.get("gnnaccel-int32")
        if ours is None:
            continue
        t = ours["best"]
        sp = impls.get("torch.sparse.mm", {}).get("best", float("nan"))
        pyg = impls.get("pyg", {}).get("best", float("nan"))
        i64 = impls.get("gnnaccel-int64", {}).get("best", float("nan"))
        bw = ours["bytes"] / t / 1e9
        out.append(f"| {graph} | {reduce} | {t*1e3:.1f} | {i64*1e3:.1f} | {sp*1e3:.1f} | {pyg*1e3:.1f} | "
                   f"{sp/t:.2f}x | {pyg/t:.2f}x | {bw:.1f} | {100*bw/copy_bw.get(graph, float('nan')):.0f}% |")
    for graph, bw in sorted(copy_bw.items()):
        out.append(f"\nMemory copy ({graph} run): {bw:.1f} GB/s (read + write)")
    return "\n".join(out)


def generic_table(rows):
    """Per group: every implementation's best time and its ratio to the slowest one (for suites without a recipe)."""
    groups = defaultdict(list)
    for r in rows:
        if "reduce" not in r and r.get("impl") != "memcopy":
            groups[r["group"]].append(r)
    out = []
    for group, items in sorted(groups.items()):
        slowest = max(i["best"] for i in items)
        out.append(f"\n**{group}**\n\n| benchmark | best ms | speedup vs slowest |\n|---|---:|---:|")
        for i in sorted(items, key=lambda i: i["best"]):
            out.append(f"| {i['name']} | {i['best']*1e3:.2f} | {slowest/i['best']:.2f}x |")
    return "\n".join(out)


def main(paths):
    if not paths:
        sys.exit("usage: python benchmarks/report.py BENCH.json [...]  (make bench writes benchmarks/out/bench.json)")
    rows = load(paths)
    if not rows:
        sys.exit("report.py: no pytest-benchmark results in " + " ".join(paths))
    if any("reduce" in r for r in rows):
        print(aggregate_table(rows))
    print(generic_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
