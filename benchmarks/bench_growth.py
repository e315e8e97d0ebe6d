"""A growing graph at YelpChi scale (issue 14 item 1), and the growing layout's cost for predict.

1. Per stream batch (50 new nodes, 40 edges each in both directions = 4,000 edges) on a 45,954-node /
   7.2M-edge graph: ``BatchedEngine.add_nodes`` (GrowingCSR, cache invalidation) vs rebuilding the CSR from
   scratch (``Graph.from_edge_index`` of all edges: what ``add_edges`` cost before).
2. ``predict`` (batch 64) on the growing layout vs the packed Graph (the same engine reading a plain CSR),
   interleaved rounds in one process; p10 and p50 per round kind.

    OMP_NUM_THREADS=2 python benchmarks/bench_growth.py
"""
from __future__ import annotations

import time

import torch

from gnnaccel import BatchedEngine, Graph
from gnnaccel.batched import _GraphSupport
from gnnaccel.models import GraphSAGE


def power_law_graph(n: int, c: int, avg_degree: int = 15):
    """The engine benchmarks' graph: ``avg_degree * n`` edges, random sources, Pareto(1.5) in-degrees (capped at
    2000), and ``[n, c]`` normal features, drawn from torch's global generator (seed it first).

    Returns:
        (graph, x).
    """
    deg = torch.distributions.Pareto(1.0, 1.5).sample((n,)).clamp(max=2000)
    num_edges = avg_degree * n
    dst = torch.multinomial(deg / deg.sum(), num_edges, replacement=True)
    graph = Graph.from_edge_index(torch.stack([torch.randint(n, (num_edges,)), dst]), n)
    return graph, torch.randn(n, c)


def growth(batches: int = 12) -> None:
    torch.manual_seed(0)
    n, num_edges, c = 45954, 7_200_000, 32
    src = torch.randint(n, (num_edges,))
    dst = (src + torch.randint(-300, 300, (num_edges,))).clamp(0, n - 1)  # locality: dense neighbourhoods
    graph = Graph.from_edge_index(torch.stack([src, dst]), n)
    x = torch.randn(n, c)
    model = GraphSAGE(c, 64, 2, 2).eval()
    engine = BatchedEngine(model, graph, x, cache=True)
    engine.predict(torch.randint(n, (2000,)))
    grow, rebuild = [], []
    g = graph
    for _ in range(batches):
        k, n0 = 50, engine.num_nodes
        new = torch.arange(n0, n0 + k).repeat_interleave(40)
        old = torch.randint(n0, (new.numel(),))
        edges = torch.cat([torch.stack([new, old]), torch.stack([old, new])], 1)
        t0 = time.perf_counter()
        engine.add_nodes(torch.randn(k, c), edges)
        grow.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        g = Graph.from_edge_index(torch.cat([g.edge_index, edges], 1), n0 + k)
        rebuild.append(time.perf_counter() - t0)
        engine.predict(torch.arange(n0, n0 + k))
    grow_sorted, rebuild_sorted = sorted(grow), sorted(rebuild)
    mid = batches // 2
    print(f"growth, {batches} batches of 50 nodes / 4,000 edges on 45,954 nodes / 7.2M edges:")
    print(f"  add_nodes median {grow_sorted[mid] * 1e3:.1f} ms (max {grow_sorted[-1] * 1e3:.1f} ms); CSR rebuild "
          f"median {rebuild_sorted[mid] * 1e3:.1f} ms; ratio of medians {rebuild_sorted[mid] / grow_sorted[mid]:.1f}x")
    print(f"  counters {engine.stats()['growth']}; cache invalidated {engine.stats()['invalidated']}")


def layout(rounds: int = 150) -> None:
    torch.manual_seed(0)
    n, c = 30000, 128
    graph, x = power_law_graph(n, c)
    num_edges = 15 * n
    model = GraphSAGE(c, 64, 16, 2).eval()
    print(f"predict, batch 64, GraphSAGE 2 layers, {n} nodes / {num_edges} edges (packed / growing, ms):")
    for fanouts in (None, [10, 10]):
        for cache in (False, True):
            engines = {}
            for kind in ("packed", "growing"):
                e = BatchedEngine(model, graph, x, fanouts=fanouts, cache=cache)
                if kind == "packed":
                    e._support = [None if s is None else _GraphSupport(graph, x.dtype) for s in e._support]
                warm = torch.Generator().manual_seed(7)
                for _ in range(30 if cache else 3):
                    e.predict(torch.randint(n, (64,), generator=warm))
                engines[kind] = e
            times = {k: [] for k in engines}
            gen = torch.Generator().manual_seed(3)
            for r in range(rounds):
                targets = torch.randint(n, (64,), generator=gen)
                for k in (("packed", "growing") if r % 2 else ("growing", "packed")):
                    t0 = time.perf_counter()
                    engines[k].predict(targets)
                    times[k].append(time.perf_counter() - t0)
            p, g = sorted(times["packed"]), sorted(times["growing"])
            q10, q50 = rounds // 10, rounds // 2
            print(f"  fanouts={fanouts} cache={cache}: p10 {p[q10] * 1e3:.2f} / {g[q10] * 1e3:.2f} "
                  f"(ratio {p[q10] / g[q10]:.3f}), p50 {p[q50] * 1e3:.2f} / {g[q50] * 1e3:.2f} "
                  f"(ratio {p[q50] / g[q50]:.3f})")


if __name__ == "__main__":
    growth()
    layout()
