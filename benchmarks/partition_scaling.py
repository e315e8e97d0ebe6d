"""Edge cut and halo sizes of METIS vs random partitions as the number of parts grows (no files written): the
halo-to-owned ratio that sets the exchange volume per rank, for the papers100M plan in RESULTS.md.

    PYTHONPATH=$PWD python benchmarks/partition_scaling.py [--nodes 1000000 --degree 20 --parts 2 4 16 64]

Graph: gnnaccel.datasets.synthetic (as benchmarks/bench_distributed.py). The halo of part p = the distinct
nodes outside p with an edge into p (what p receives per layer); computed from the assignment exactly as
gnnaccel.distributed.partition lays the parts out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def halo_sizes(graph, a: torch.Tensor, num_parts: int):
    """(edge cut, halo size per part, owned per part) of the assignment ``a``."""
    dst = graph.row_of_edge().long()
    src = graph.col.long()
    cross = a[src] != a[dst]
    n = graph.num_nodes
    key = torch.unique(a[dst[cross]] * n + src[cross])
    halo = torch.bincount(torch.div(key, n, rounding_mode="floor"), minlength=num_parts)
    return int(cross.sum()), halo.tolist(), torch.bincount(a, minlength=num_parts).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--degree", type=float, default=20.0)
    ap.add_argument("--parts", type=int, nargs="+", default=[2, 4, 16, 64])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from gnnaccel.datasets.synthetic import synthetic
    from gnnaccel.distributed.partition import metis_assignment, random_assignment

    g = synthetic(args.nodes, avg_degree=args.degree, num_features=1, num_classes=64, seed=0).graph
    rows = []
    print(f"{g}; command: {' '.join(sys.argv)}")
    print("| method | parts | edge cut | halo / owned (mean) | halo / owned (max part) | partition s |")
    print("|---|---|---|---|---|---|")
    for method in ("metis", "random"):
        for P in args.parts:
            t = time.perf_counter()
            a = metis_assignment(g, P) if method == "metis" else random_assignment(g.num_nodes, P)
            dt = time.perf_counter() - t
            cut, halo, owned = halo_sizes(g, a, P)
            ratios = [h / max(o, 1) for h, o in zip(halo, owned)]
            row = {"method": method, "parts": P, "edge_cut_fraction": cut / g.num_edges,
                   "halo_over_owned_mean": sum(halo) / g.num_nodes, "halo_over_owned_max": max(ratios),
                   "halo": halo, "owned": owned, "seconds": dt}
            rows.append(row)
            print(f"| {method} | {P} | {cut / g.num_edges:.3f} | {row['halo_over_owned_mean']:.3f} | "
                  f"{row['halo_over_owned_max']:.3f} | {dt:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "nodes": g.num_nodes, "edges": g.num_edges, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
