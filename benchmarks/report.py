"""Turn pytest-benchmark JSON files into ratio tables (markdown) for benchmarks/RESULTS.md.

    python benchmarks/report.py benchmarks/out/*.json

Ratios are best-of-rounds (min) times of the baseline over gnnaccel's in the same run (min is the least
sensitive to other load on a shared machine); absolute times on shared machines
are noise, ratios are what the tables report.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(paths):
    rows = []
    for path in paths:
        with open(path) as fh:
            for bench in json.load(fh)["benchmarks"]:
                rows.append(dict(group=bench["group"], name=bench["name"], median=bench["stats"]["min"],
                                 **bench.get("extra_info", {})))
    return rows


def aggregate_table(rows):
    groups = defaultdict(dict)
    copy_bw = {}
    for r in rows:
        if r.get("impl") == "memcopy":
            copy_bw[r["graph"]] = r["bytes"] / r["median"] / 1e9
        elif "reduce" in r:
            groups[(r["graph"], r["reduce"])][r["impl"]] = r
    out = ["| graph | reduce | gnnaccel int32 ms | int64 ms | sparse.mm ms | PyG ms | vs sparse.mm | vs PyG | GB/s | % of copy |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (graph, reduce), impls in sorted(groups.items()):
        ours = impls.get("gnnaccel-int32")
        if ours is None:
            continue
        t = ours["median"]
        sp = impls.get("torch.sparse.mm", {}).get("median", float("nan"))
        pyg = impls.get("pyg", {}).get("median", float("nan"))
        i64 = impls.get("gnnaccel-int64", {}).get("median", float("nan"))
        bw = ours["bytes"] / t / 1e9
        out.append(f"| {graph} | {reduce} | {t*1e3:.1f} | {i64*1e3:.1f} | {sp*1e3:.1f} | {pyg*1e3:.1f} | "
                   f"{sp/t:.2f}x | {pyg/t:.2f}x | {bw:.1f} | {100*bw/copy_bw.get(graph, float('nan')):.0f}% |")
    for graph, bw in sorted(copy_bw.items()):
        out.append(f"\nMemory copy ({graph} run): {bw:.1f} GB/s (read + write)")
    return "\n".join(out)


def generic_table(rows):
    """Per group: every implementation's median and its ratio to the slowest one (for suites without a recipe)."""
    groups = defaultdict(list)
    for r in rows:
        if "reduce" not in r and r.get("impl") != "memcopy":
            groups[r["group"]].append(r)
    out = []
    for group, items in sorted(groups.items()):
        slowest = max(i["median"] for i in items)
        out.append(f"\n**{group}**\n\n| benchmark | median ms | speedup vs slowest |\n|---|---:|---:|")
        for i in sorted(items, key=lambda i: i["median"]):
            out.append(f"| {i['name']} | {i['median']*1e3:.2f} | {slowest/i['median']:.2f}x |")
    return "\n".join(out)


def main(paths):
    rows = load(paths)
    if any("reduce" in r for r in rows):
        print(aggregate_table(rows))
    print(generic_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
