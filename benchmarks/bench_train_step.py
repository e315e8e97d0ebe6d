"""One training step (forward, backward, Adam) of a 2-layer GraphSAGE on a large graph, with the aggregate
backward's transposed CSR memoised per graph (the default) vs rebuilt on every step (the cache cleared before
each step, as before it existed). Rounds alternate between the two, so the ratio is from the same load.

    PYTHONPATH=$PWD python -m pytest -q benchmarks/bench_train_step.py --benchmark-only -s

Synthetic graph: 200k nodes, 4M edges, 128 features; GraphSAGE 128 -> 128 -> 16, random labels.
"""
from __future__ import annotations

import pytest
import torch

from conftest import InterleavedBest, synthetic_graph

CONFIGS = {"200k-4M-f128-h128": (200_000, 20, 128, 128, 16)}
QUICK_CONFIGS = {"20k-400k-f64-h64": (20_000, 20, 64, 64, 16)}


def pytest_generate_tests(metafunc):
    if "config" in metafunc.fixturenames:
        configs = QUICK_CONFIGS if metafunc.config.getoption("--quick") else CONFIGS
        metafunc.parametrize("config", list(configs))


def test_train_step_transpose_cache(benchmark, config):
    from gnnaccel.models import GraphSAGE
    from gnnaccel.ops.aggregate import _TRANSPOSES

    n, deg, f, h, out = {**CONFIGS, **QUICK_CONFIGS}[config]
    data = synthetic_graph(n, deg, f)
    torch.manual_seed(0)
    model = GraphSAGE(f, h, out, num_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels = torch.randint(0, out, (n,))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x, data.graph), labels)
        loss.backward()
        opt.step()

    def step_rebuilding():
        _TRANSPOSES.clear()
        step()

    rounds = InterleavedBest({"memoised": step, "rebuilt": step_rebuilding})
    benchmark.group = f"training step {config}"
    rounds.warm_up()
    benchmark.pedantic(rounds, rounds=5, iterations=1)
    best = rounds.best
    ratio = best["rebuilt"] / best["memoised"]
    benchmark.extra_info.update(graph=config, speedup=ratio, **{f"{k}_s": v for k, v in best.items()})
    print(f"\n[train step] {config}: memoised transpose {best['memoised']:.3f} s, rebuilt every step "
          f"{best['rebuilt']:.3f} s ({ratio:.2f}x)")
    assert ratio > 1.0
