"""Real-time batched inference (BatchedEngine): per-batch latency p50/p99 of four configurations side by side
in one run, on a synthetic Reddit-like graph and on Amazon Computers.

    python -m pytest benchmarks/bench_batched.py --benchmark-only --benchmark-json=benchmarks/out/batched.json \
        --benchmark-columns=min,median,mean,rounds
    PYTHONPATH=.:benchmarks python benchmarks/bench_batched.py benchmarks/out/batched.json    # markdown table with speedups

Model: 2-layer GraphSAGE (mean), hidden 256, random weights (latency does not depend on their values).
Fanouts [32, all]: layer 0 samples 32 neighbours with replacement per node of S1, the last layer (the targets'
hop) reads all neighbours.

Configurations:
* ``unpruned``: the model as is, no cache.
* ``pruned``: keep 1/4, scheme "batched": layer 0's neighbour branch reads 1/4 of the raw channels (a compact
  [N, C/4] table sliced once at engine construction), its self branch all raw channels, layer 1's input (the
  hidden width) keeps 1/4. Built with ``gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched")`` when that
  exists, else a *timing-equivalent* model (``load_pruned`` keeping the first k channels per pruned branch: same
  widths, same cost; labelled ``pruned(first-k)``).
* ``+cache``: a FeatureCache of layer-0 outputs (unbounded). Streaming protocol: a fresh cache is filled by a
  warm-up stream of num_nodes / 4 random targets (batches of 512, untimed); then every batch size is measured
  on its own continuing stream of random batches (the cache keeps filling while measured). The hit rate over
  the timed batches and the supporting-node reduction (raw-feature rows gathered for layer 0, with vs without
  the cache, over a further 5 batches of 512) are recorded.

Targets: uniform random node ids (seeded), a new batch every round; within a round the four configurations
answer the same batch in a shuffled order (the machine is shared: load hits them alike, and the ratios come from
one run). Latency is wall time of ``predict``; p50/p99 per configuration over the rounds (pytest-benchmark times
the whole round).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

import pytest
import torch

from conftest import synthetic_graph
import gnnaccel
from gnnaccel import BatchedEngine
from gnnaccel.cache import FeatureCache
from gnnaccel.models import GraphSAGE

HIDDEN = 256
KEEP = 0.25
FANOUTS = [32, None]
BATCH_ROUNDS = {1: 200, 16: 100, 512: 20}
QUICK_ROUNDS = {1: 30, 16: 20, 512: 5}
WARMUP_FRACTION = 4  # the warm-up stream has num_nodes / 4 random targets
CONFIGS = ["unpruned", "pruned", "unpruned+cache", "pruned+cache"]


def _data(name: str, quick: bool):
    if name == "synthetic":
        return synthetic_graph(20_000 if quick else 200_000, 25, 512)
    from gnnaccel.datasets import load

    try:
        return _load_real(name)
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"{name} not available: {exc}")


@functools.lru_cache(maxsize=2)
def _load_real(name):
    from gnnaccel.datasets import load

    return load(name)


@functools.lru_cache(maxsize=4)
def _models(name: str, quick: bool):
    data = _data(name, quick)
    torch.manual_seed(0)
    model = GraphSAGE(data.x.shape[1], HIDDEN, data.num_classes, 2).eval()
    pruned, label = _pruned(model, data)
    return model, pruned, label


def _pruned(model, data):
    prune = getattr(gnnaccel, "prune", None)
    if prune is not None and not os.environ.get("GNNACCEL_BENCH_FIRST_K"):
        return prune(model, data.graph, data.x, keep=KEEP, scheme="batched"), "pruned(gnnaccel.prune)"
    import copy

    pruned = copy.deepcopy(model)
    conv0, conv1 = pruned.convs
    c, h = conv0.in_channels, conv0.out_channels
    k_in, k_hidden = max(1, round(c * KEEP)), max(1, round(h * KEEP))
    with torch.no_grad():
        conv0.load_pruned({"neigh": torch.arange(k_in), "self": torch.arange(c)},
                          {"neigh": conv0.lin_l.weight.t()[:k_in].clone(), "self": conv0.lin_r.weight.t().clone()},
                          conv0.lin_l.bias.clone())
        conv0.prune_outputs(torch.arange(k_hidden))
        keep = torch.arange(k_hidden)
        conv1.load_pruned({"neigh": keep, "self": keep},
                          {"neigh": conv1.lin_l.weight.t()[:k_hidden].clone(),
                           "self": conv1.lin_r.weight.t()[:k_hidden].clone()}, conv1.lin_l.bias.clone())
    return pruned.eval(), "pruned(first-k)"


@functools.lru_cache(maxsize=8)
def _engine(name: str, config: str, quick: bool):
    data = _data(name, quick)
    model, pruned, label = _models(name, quick)
    use = pruned if config.startswith("pruned") else model
    cache = None
    if config.endswith("+cache"):
        cache = FeatureCache(data.graph.num_nodes, [use.convs[0].out_channels])
    engine = BatchedEngine(use, data.graph, data.x, fanouts=FANOUTS, cache=cache, seed=0)
    info = dict(model=label if config.startswith("pruned") else "unpruned")
    if cache is not None:  # streaming warm-up (untimed)
        gen = torch.Generator().manual_seed(12345)
        warm = data.graph.num_nodes // WARMUP_FRACTION
        start = time.perf_counter()
        for _ in range(max(1, warm // 512)):
            engine.predict(torch.randint(data.graph.num_nodes, (512,), generator=gen))
        info.update(warmup_targets=warm, warmup_s=time.perf_counter() - start, cached_after_warmup=cache.size(0))
    return engine, info


@pytest.mark.parametrize("batch", list(BATCH_ROUNDS))
@pytest.mark.parametrize("dataset", ["synthetic", "Computers"])
def test_batched_latency(benchmark, dataset, batch, quick):
    """One round = the same random batch answered by the four configurations in a shuffled order, so that the
    load of a shared machine hits them alike; p50/p99 per configuration over the rounds."""
    engines = {config: _engine(dataset, config, quick) for config in CONFIGS}
    rounds = (QUICK_ROUNDS if quick else BATCH_ROUNDS)[batch]
    num_nodes = engines["unpruned"][0].num_nodes
    gen = torch.Generator().manual_seed(1000 + batch)
    order_gen = torch.Generator().manual_seed(7)
    times = {config: [] for config in CONFIGS}
    before = {c: e.cache.stats() for c, (e, _) in engines.items() if e.cache is not None}

    def setup():
        return (torch.randint(num_nodes, (batch,), generator=gen),), {}

    def run(targets):
        for k in torch.randperm(len(CONFIGS), generator=order_gen).tolist():
            engine = engines[CONFIGS[k]][0]
            start = time.perf_counter()
            engine.predict(targets)
            times[CONFIGS[k]].append(time.perf_counter() - start)

    benchmark.group = f"batched {dataset}"
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=2, iterations=1)
    engine0 = engines["unpruned"][0]
    extra = dict(dataset=dataset, batch=batch, num_nodes=num_nodes, num_features=engine0.x.shape[1],
                 rounds=rounds, fanouts=str(FANOUTS), configs={})
    for config, (engine, info) in engines.items():
        t = torch.tensor(times[config][2:], dtype=torch.float64) * 1e3  # drop the 2 warm-up rounds
        r = dict(info, p50_ms=float(torch.quantile(t, 0.5)), p99_ms=float(torch.quantile(t, 0.99)),
                 mean_ms=float(t.mean()))
        cache = engine.cache
        if cache is not None:
            after = cache.stats()
            hits = after["hits"] - before[config]["hits"]
            misses = after["misses"] - before[config]["misses"]
            r["hit_rate"] = hits / max(1, hits + misses)
            if batch == max(BATCH_ROUNDS):  # supporting-node reduction over 5 more batches of 512 (untimed)
                cache.reset_stats()
                engine.cache.track_support = True
                support_gen = torch.Generator().manual_seed(99)
                try:
                    for _ in range(5):
                        engine.predict(torch.randint(num_nodes, (512,), generator=support_gen))
                finally:
                    engine.cache.track_support = False
                s = cache.stats()
                r.update(support_computed=s["support_computed"], support_without_cache=s["support_without_cache"],
                         support_reduction=s["support_reduction"])
        extra["configs"][config] = r
    benchmark.extra_info.update(extra)


def report(paths):
    rows = []
    for path in paths:
        with open(path) as fh:
            for b in json.load(fh)["benchmarks"]:
                info = b.get("extra_info", {})
                for config, r in info.get("configs", {}).items():
                    rows.append(dict(r, config=config, **{k: v for k, v in info.items() if k != "configs"}))
    table = {(r["dataset"], r["batch"], r["config"]): r for r in rows}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        any_row = next(r for r in rows if r["dataset"] == dataset)
        print(f"\n**{dataset}** ({any_row['num_nodes']} nodes, {any_row['num_features']} features), fanouts "
              f"{any_row['fanouts']}; pruned model: "
              f"{next((r['model'] for r in rows if r['dataset'] == dataset and r['config'] == 'pruned'), '-')}\n")
        print("| batch | config | p50 ms | p99 ms | speedup p50 | speedup p99 | cache hit rate |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for batch in sorted({r["batch"] for r in rows if r["dataset"] == dataset}):
            base = table.get((dataset, batch, "unpruned"))
            for config in CONFIGS:
                r = table.get((dataset, batch, config))
                if r is None:
                    continue
                sp50 = f"{base['p50_ms'] / r['p50_ms']:.2f}x" if base else "-"
                sp99 = f"{base['p99_ms'] / r['p99_ms']:.2f}x" if base else "-"
                hit = f"{r['hit_rate']:.2f}" if "hit_rate" in r else "-"
                print(f"| {batch} | {config} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {sp50} | {sp99} | {hit} |")
        for r in rows:
            if r["dataset"] == dataset and "support_reduction" in r:
                print(f"\n{r['config']}: warm-up {r.get('warmup_targets')} targets; supporting nodes (layer-0 "
                      f"raw-feature rows) over 5 batches of 512: {r['support_computed']} with the cache vs "
                      f"{r['support_without_cache']} without = {r['support_reduction']:.2f}x fewer")


if __name__ == "__main__":
    report(sys.argv[1:])
