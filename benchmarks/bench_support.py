"""The 2-hop support of a batch (gnnaccel.ops.k_hop_support, C++ expand_hop) vs a pure-torch implementation
(torch.unique-based de-duplication), side by side in one run.

    python -m pytest benchmarks/bench_support.py --benchmark-only --benchmark-json=benchmarks/out/support.json \
        --benchmark-columns=min,median,mean,rounds
    python benchmarks/bench_support.py benchmarks/out/support.json      # markdown table of the ratios

Graph: synthetic, 200k nodes, average degree 25 (power-law). Fanouts [32, all]: the targets' hop takes every
neighbour (S1), the hop before samples 32 neighbours with replacement per node of S1 (S2). Batches of random
distinct targets, a different batch every round. Both implementations produce the same frontier order and
local CSR (checked before timing for the exact hop).
"""
from __future__ import annotations

import itertools
import json
import sys

import pytest
import torch

from conftest import synthetic_graph
from gnnaccel.ops import expand_hop, hop_random_seed, k_hop_support

GRAPH = (200_000, 25)
QUICK_GRAPH = (20_000, 25)
FANOUTS = [32, -1]  # layer 0 sampled, last layer (the targets' hop) all neighbours
BATCHES = {1: 300, 16: 200, 512: 20}  # batch size: rounds


def torch_hop(rowptr, col, seeds, fanout, generator):
    """One hop in plain torch ops: same contract as expand_hop (seeds first, first-seen order; unique seeds)."""
    starts, degree = rowptr[seeds], rowptr[seeds + 1] - rowptr[seeds]
    counts = degree if fanout < 0 else torch.where(degree > 0, fanout, 0)
    seed_of_edge = torch.repeat_interleave(torch.arange(seeds.numel()), counts)
    if fanout < 0:
        offsets = torch.arange(seed_of_edge.numel()) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    else:
        offsets = (torch.rand(seed_of_edge.numel(), generator=generator) * degree[seed_of_edge]).long()
    edge_ids = starts[seed_of_edge] + offsets
    nodes = torch.cat([seeds, col[edge_ids]])
    uniq, inverse = torch.unique(nodes, return_inverse=True)
    first = torch.full((uniq.numel(),), nodes.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(nodes.numel()), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    frontier = nodes[first[order]]
    local_rowptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return frontier, local_rowptr, rank[inverse[seeds.numel():]], edge_ids


def torch_support(rowptr, col, targets, fanouts, generator):
    blocks, seeds = [], targets
    for layer in reversed(range(len(fanouts))):
        block = torch_hop(rowptr, col, seeds, fanouts[layer], generator)
        blocks.append(block)
        seeds = block[0]
    return blocks[::-1]


@pytest.fixture(scope="module")
def graph(quick):
    n, deg = QUICK_GRAPH if quick else GRAPH
    return synthetic_graph(n, deg, 8).graph


def _batches(num_nodes, batch, count=64, seed=0):
    g = torch.Generator().manual_seed(seed + batch)
    return [torch.randperm(num_nodes, generator=g)[:batch] for _ in range(count)]


def _check_baseline_agrees(graph):
    targets = _batches(graph.num_nodes, 16)[0]
    ours = k_hop_support(graph.rowptr, graph.col, targets, [-1, -1])
    theirs = torch_support(graph.rowptr, graph.col, targets, [-1, -1], torch.Generator())
    for a, b in zip(ours, theirs):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("impl", ["gnnaccel", "torch-unique"])
def test_support(benchmark, graph, batch, impl):
    batches = itertools.cycle(_batches(graph.num_nodes, batch))
    seeds = itertools.count()
    gen = torch.Generator().manual_seed(0)
    rowptr, col = graph.rowptr, graph.col
    if impl == "gnnaccel":
        fn = lambda: k_hop_support(rowptr, col, next(batches), FANOUTS, next(seeds))  # noqa: E731
    else:
        _check_baseline_agrees(graph)  # same contract (exact hops) before timing it
        fn = lambda: torch_support(rowptr, col, next(batches), FANOUTS, gen)  # noqa: E731
    blocks = fn()
    benchmark.group = f"support b={batch}"
    benchmark.extra_info.update(impl=impl, batch=batch, num_nodes=graph.num_nodes,
                                s1=int(blocks[1][0].numel()), s2=int(blocks[0][0].numel()),
                                local_edges=int(blocks[0][2].numel() + blocks[1][2].numel()))
    benchmark.pedantic(fn, rounds=BATCHES[batch], warmup_rounds=2, iterations=1)


def report(paths):
    rows = []
    for path in paths:
        with open(path) as fh:
            rows += [dict(median=b["stats"]["median"], **b["extra_info"]) for b in json.load(fh)["benchmarks"]
                     if "impl" in b.get("extra_info", {})]
    by_batch = {}
    for r in rows:
        by_batch.setdefault(r["batch"], {})[r["impl"]] = r
    print("| batch | S1 | S2 | local edges | gnnaccel ms | torch.unique ms | speedup |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in sorted(by_batch):
        ours, base = by_batch[batch]["gnnaccel"], by_batch[batch]["torch-unique"]
        print(f"| {batch} | {ours['s1']} | {ours['s2']} | {ours['local_edges']} | {ours['median'] * 1e3:.3f} | "
              f"{base['median'] * 1e3:.3f} | {base['median'] / ours['median']:.1f}x |")


if __name__ == "__main__":
    report(sys.argv[1:])
