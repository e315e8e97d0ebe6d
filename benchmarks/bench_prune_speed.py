"""Full-graph inference of a pruned 2-layer GraphSAGE vs the unpruned one, and the cost of gnnaccel.prune().

    PYTHONPATH=$PWD python -m pytest -q benchmarks/bench_prune_speed.py --benchmark-only \
        --benchmark-columns=min,median,rounds --benchmark-json=benchmarks/out/prune_speed.json -s

Synthetic graph: 200k nodes, 4M edges, 256 input features (``gnnaccel.datasets.synthetic`` puts them on
transparent huge pages, which both models' gathers profit from); GraphSAGE 256 -> 512 -> 16 with random weights
(timing does not need a trained model). Pruned at keep 1/4 (scheme full: hidden 512 -> 128; and scheme
batched: also layer 0's neighbour branch reads 64 of the 256 raw features), calibrated on 20k sampled nodes.
``test_zz_interleaved_ratios`` alternates unpruned and pruned inference round by round and checks the target
(>= 3x for scheme full, keep 1/4) on min times; the pytest-benchmark tables give per-model statistics.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import torch

import gnnaccel
from gnnaccel.inference import full_inference
from gnnaccel.models import GraphSAGE
from conftest import InterleavedBest, synthetic_graph

CONFIGS = {"200k-4M-f256-h512": (200_000, 20, 256, 512, 16)}
QUICK_CONFIGS = {"20k-400k-f64-h128": (20_000, 20, 64, 128, 16)}
KEEP = 0.25
TARGET = 3.0
PRUNE_SECONDS = {}


def pytest_generate_tests(metafunc):
    if "config" in metafunc.fixturenames:
        configs = QUICK_CONFIGS if metafunc.config.getoption("--quick") else CONFIGS
        metafunc.parametrize("config", list(configs), scope="module")


@functools.lru_cache(maxsize=1)
def _prepare(config):
    n, deg, f, h, out = {**CONFIGS, **QUICK_CONFIGS}[config]
    data = synthetic_graph(n, deg, f)
    torch.manual_seed(0)
    model = GraphSAGE(f, h, out, num_layers=2).eval()
    pruned = {}
    for scheme in ("full", "batched"):
        t0 = time.perf_counter()
        pruned[scheme] = gnnaccel.prune(model, data.graph, data.x, keep=KEEP, scheme=scheme,
                                        calib_nodes=min(20_000, n), progress=False)
        PRUNE_SECONDS[(config, scheme)] = time.perf_counter() - t0
    return data, model, pruned


def _run(benchmark, fn, config, impl):
    benchmark.group = f"full-inference {config}"
    benchmark.extra_info.update(graph=config, impl=impl)
    with torch.inference_mode():
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


def test_unpruned(benchmark, config):
    data, model, _ = _prepare(config)
    _run(benchmark, lambda: full_inference(model, data.graph, data.x, progress=False), config, "unpruned")


@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_pruned(benchmark, config, scheme):
    data, _, pruned = _prepare(config)
    _run(benchmark, lambda: full_inference(pruned[scheme], data.graph, data.x, progress=False), config,
         f"pruned keep {KEEP} {scheme}")


@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_prune_call(benchmark, config, scheme):
    """gnnaccel.prune() itself (calibration on 20k nodes, default selection method, refit), one timed call."""
    data, model, _ = _prepare(config)
    benchmark.group = f"prune() {config}"
    benchmark.extra_info.update(graph=config, impl=f"prune {scheme}")
    benchmark.pedantic(lambda: gnnaccel.prune(model, data.graph, data.x, keep=KEEP, scheme=scheme,
                                              calib_nodes=min(20_000, data.graph.num_nodes), progress=False),
                       rounds=1, iterations=1)


def test_zz_interleaved_ratios(benchmark, config):
    data, model, pruned = _prepare(config)
    one_round = InterleavedBest({
        "unpruned": lambda: full_inference(model, data.graph, data.x, progress=False),
        "full": lambda: full_inference(pruned["full"], data.graph, data.x, progress=False),
        "batched": lambda: full_inference(pruned["batched"], data.graph, data.x, progress=False)})
    best = one_round.best

    benchmark.group = f"interleaved rounds {config}"
    benchmark.extra_info.update(graph=config, impl="interleaved")
    with torch.inference_mode():
        one_round.warm_up()
        benchmark.pedantic(one_round, rounds=5, iterations=1)
    ratios = {k: best["unpruned"] / best[k] for k in ("full", "batched")}
    benchmark.extra_info.update(**{f"speedup_{k}": v for k, v in ratios.items()})
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    print(f"\n[interleaved] transparent huge pages: {thp.read_text().strip() if thp.exists() else 'n/a'}")
    print(f"[interleaved] {config}: unpruned {best['unpruned']:.3f} s, pruned keep {KEEP} full "
          f"{best['full']:.3f} s ({ratios['full']:.2f}x), batched {best['batched']:.3f} s "
          f"({ratios['batched']:.2f}x); prune() took "
          + ", ".join(f"{s} {PRUNE_SECONDS[(config, s)]:.1f} s" for s in ("full", "batched")))
    if config in CONFIGS:
        assert ratios["full"] >= TARGET, f"{config}: {ratios['full']:.2f}x is below the {TARGET}x target"
