"""Command line: ``python -m gnnaccel demo`` (and ``gnnaccel demo`` once installed)."""
from __future__ import annotations

import argparse
import sys
import time

import torch


def _timeit(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def demo_aggregation(num_nodes: int, avg_degree: float, channels: int, progress: bool = True) -> None:
    from tqdm.auto import tqdm

    from .datasets import synthetic

    print(f"Synthetic power-law graph: {num_nodes:,} nodes, average degree {avg_degree}, {channels} channels")
    data = synthetic(num_nodes, avg_degree, channels, seed=0)
    graph = data.graph.to(index_dtype=torch.int32)
    adj = data.graph.to_torch_sparse()
    rows = []
    for reduce in tqdm(("sum", "mean", "max"), desc="aggregation", disable=not progress):
        ours = _timeit(lambda: graph.aggregate(data.x, reduce))
        ref = _timeit(lambda: torch.sparse.mm(adj, data.x, reduce))
        rows.append((reduce, ours, ref))
    print(f"{'reduce':>8} {'gnnaccel ms':>12} {'sparse.mm ms':>13} {'speedup':>8}")
    for reduce, ours, ref in rows:
        print(f"{reduce:>8} {ours * 1e3:12.1f} {ref * 1e3:13.1f} {ref / ours:7.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gnnaccel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on a synthetic graph")
    demo.add_argument("--nodes", type=int, default=200_000)
    demo.add_argument("--degree", type=float, default=20.0)
    demo.add_argument("--channels", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "demo":
        import warnings
        warnings.filterwarnings("ignore", message="Sparse")
        demo_aggregation(args.nodes, args.degree, args.channels, progress=sys.stderr.isatty())


if __name__ == "__main__":
    main()
