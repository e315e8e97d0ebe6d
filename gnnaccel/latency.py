"""Latency statistics of the batched engine: per-batch p50/p99 of a stream of random target batches, for one
engine (:func:`latency_stream`) or several answering the same batches interleaved (:func:`compare_latency`).
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch


def latency_stream(engine, num_batches: int, batch_size: int, seed: int = 0,
                   warmup: int = 0) -> dict:
    """Answer a stream of random target batches (uniform node ids, seeded) and report per-batch latency.

    ``warmup`` batches run first and are not timed (with a cache, they fill it: the timed batches are then the
    steady state of a stream). Returns ``dict(p50, p99, mean, min, max)`` in milliseconds plus ``batches``,
    ``batch_size``, ``warmup`` and, when the engine has a cache, its ``hit_rate`` over the timed batches.
    """
    if num_batches < 1 or batch_size < 1:
        raise ValueError("num_batches and batch_size must be positive")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        engine.predict(torch.randint(engine.num_nodes, (batch_size,), generator=gen))
    if engine.cache is not None:
        before = engine.cache.stats()
    times = []
    for _ in range(num_batches):
        targets = torch.randint(engine.num_nodes, (batch_size,), generator=gen)
        start = time.perf_counter()
        engine.predict(targets)
        times.append((time.perf_counter() - start) * 1e3)
    t = torch.tensor(times, dtype=torch.float64)
    result = dict(p50=float(torch.quantile(t, 0.5)), p99=float(torch.quantile(t, 0.99)), mean=float(t.mean()),
                  min=float(t.min()), max=float(t.max()), batches=num_batches, batch_size=batch_size, warmup=warmup)
    if engine.cache is not None:
        after = engine.cache.stats()
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        result["hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
    return result


def compare_latency(engines: Dict[str, "BatchedEngine"], num_batches: int, batch_size: int, seed: int = 0,
                    warmup_targets: Optional[int] = None, progress: bool = False) -> Dict[str, dict]:
    """Per-batch latency of several engines on the same stream: each round, one random batch answered by every
    engine in a shuffled order (so that the load of a shared machine hits them alike).

    ``warmup_targets``: before timing, every engine with a cache answers an untimed stream of that many random
    targets (batches of ``batch_size``), default ``num_nodes // 4`` (streaming cache protocol). Returns per engine
    ``dict(p50, p99, mean)`` in ms and, for cached engines, ``hit_rate`` over the timed rounds and
    ``support_reduction`` (raw-feature supporting nodes without / with the cache over the timed rounds).
    """
    from tqdm.auto import tqdm

    if not engines:
        raise ValueError("give at least one engine")
    names = list(engines)
    num_nodes = engines[names[0]].num_nodes
    gen = torch.Generator().manual_seed(seed)
    warm = num_nodes // 4 if warmup_targets is None else warmup_targets
    cached = [name for name in names if engines[name].cache is not None]
    for name in cached:
        for _ in tqdm(range(max(1, warm // batch_size)), desc=f"warm-up {name}", disable=not progress, leave=False):
            engines[name].predict(torch.randint(num_nodes, (batch_size,), generator=gen))
        engines[name].cache.reset_stats()
        engines[name].track_support = True
    times = {name: [] for name in names}
    try:
        for _ in tqdm(range(num_batches), desc="batches", disable=not progress, leave=False):
            targets = torch.randint(num_nodes, (batch_size,), generator=gen)
            for k in torch.randperm(len(names), generator=gen).tolist():
                start = time.perf_counter()
                engines[names[k]].predict(targets)
                times[names[k]].append((time.perf_counter() - start) * 1e3)
    finally:
        for name in cached:
            engines[name].track_support = False
    result = {}
    for name in names:
        t = torch.tensor(times[name], dtype=torch.float64)
        r = dict(p50=float(torch.quantile(t, 0.5)), p99=float(torch.quantile(t, 0.99)), mean=float(t.mean()))
        if engines[name].cache is not None:
            s = engines[name].cache.stats()
            r.update(hit_rate=s["hit_rate"], support_reduction=s["support_reduction"])
        result[name] = r
    return result
