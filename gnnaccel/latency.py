"""Latency statistics: per-batch p50/p99 of a stream of random target batches for one engine
(:func:`latency_stream`) or several answering the same batches interleaved (:func:`compare_latency`), and
interleaved repeated timings of plain callables (:func:`interleaved_times`) with their spread.

Every comparison here warms each side up first and then alternates the sides within each round in a shuffled
order, so that the load of a shared machine hits them alike; speedups are per-round ratios (baseline time /
other time in the same round), reported as the median with the interquartile range as the spread.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _time_call(fn: Callable[[], object]) -> float:
    """Seconds of one call, CUDA work included. (``torch.utils.benchmark.Timer.timeit`` would add untimed
    warm-up calls to every measurement, which changes a cached engine's stream, and pins one thread.)"""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def interleaved_times(fns: Dict[str, Callable[[], object]], rounds: int = 15, warmup: int = 2, seed: int = 0,
                      progress: bool = False) -> Dict[str, torch.Tensor]:
    """Time several callables side by side.

    Args:
        fns: name -> callable without arguments.
        rounds: timed rounds; each round calls every callable once, in a shuffled order.
        warmup: untimed calls of each callable first (allocations, caches, thread pools).
        seed: seed of the shuffles.
        progress: show a tqdm bar over the rounds.

    Returns:
        name -> float64 tensor of the ``rounds`` per-call times in seconds (CUDA work synchronised).
    """
    from tqdm.auto import tqdm

    if not fns:
        raise ValueError("give at least one callable")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds}, {warmup}")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    gen = torch.Generator().manual_seed(seed)
    times = {name: [] for name in names}
    for _ in tqdm(range(rounds), desc="timing", disable=not progress, leave=False):
        for k in torch.randperm(len(names), generator=gen).tolist():
            times[names[k]].append(_time_call(fns[names[k]]))
    return {name: torch.tensor(t, dtype=torch.float64) for name, t in times.items()}


def spread(values: torch.Tensor) -> dict:
    """``dict(median, p25, p75)`` of a 1-D tensor of samples (float)."""
    v = values.to(torch.float64)
    q = torch.quantile(v, torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64))
    return dict(median=float(q[0]), p25=float(q[1]), p75=float(q[2]))


def speedup(base: torch.Tensor, other: torch.Tensor) -> dict:
    """Per-round ratios ``base / other`` of two interleaved timings: ``dict(median, p25, p75)``."""
    if base.shape != other.shape:
        raise ValueError("base and other must come from the same rounds")
    return spread(base / other)


def format_speedup(s: dict) -> str:
    """``'1.62x [1.55-1.70]'``: median per-round speedup and its interquartile range."""
    return f"{s['median']:.2f}x [{s['p25']:.2f}-{s['p75']:.2f}]"


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
        times.append(_time_call(lambda: engine.predict(targets)) * 1e3)
    t = torch.tensor(times, dtype=torch.float64)
    result = dict(p50=float(torch.quantile(t, 0.5)), p99=float(torch.quantile(t, 0.99)), mean=float(t.mean()),
                  min=float(t.min()), max=float(t.max()), batches=num_batches, batch_size=batch_size, warmup=warmup)
    if engine.cache is not None:
        after = engine.cache.stats()
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        result["hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
    return result


def compare_latency(engines: Dict[str, "BatchedEngine"], num_batches: int, batch_size: int, seed: int = 0,
                    warmup_targets: Optional[int] = None, warmup_batches: int = 2, baseline: Optional[str] = None,
                    progress: bool = False) -> Dict[str, dict]:
    """Per-batch latency of several engines on the same stream: each round, one random batch answered by every
    engine in a shuffled order (so that the load of a shared machine hits them alike).

    Args:
        engines: name -> BatchedEngine (same graph size).
        num_batches, batch_size: timed rounds and targets per batch.
        seed: seed of the target batches and of the shuffles.
        warmup_targets: before timing, every engine with a cache answers an untimed stream of that many random
            targets (batches of ``batch_size``), default ``num_nodes // 4`` (streaming cache protocol).
        warmup_batches: untimed batches every engine answers first (cold allocations, thread pools).
        baseline: name of the engine the per-round speedups are taken against (default: the first).
        progress: tqdm bars.

    Returns:
        Per engine ``dict(p50, p25, p75, p99, mean)`` in ms, ``speedup`` (``dict(median, p25, p75)`` of the
        per-round baseline / engine ratios) and, for cached engines, ``hit_rate`` over the timed rounds and
        ``support_reduction`` (raw-feature supporting nodes without / with the cache over the timed rounds).
    """
    from tqdm.auto import tqdm

    if not engines:
        raise ValueError("give at least one engine")
    names = list(engines)
    baseline = names[0] if baseline is None else baseline
    if baseline not in engines:
        raise ValueError(f"baseline {baseline!r} is not one of {names}")
    num_nodes = engines[names[0]].num_nodes
    gen = torch.Generator().manual_seed(seed)
    warm = num_nodes // 4 if warmup_targets is None else warmup_targets
    for name in names:
        for _ in range(warmup_batches):
            engines[name].predict(torch.randint(num_nodes, (batch_size,), generator=gen))
    cached = [name for name in names if engines[name].cache is not None]
    for name in cached:
        for _ in tqdm(range(max(1, warm // batch_size)), desc=f"warm-up {name}", disable=not progress, leave=False):
            engines[name].predict(torch.randint(num_nodes, (batch_size,), generator=gen))
        engines[name].cache.reset_stats()
        engines[name].cache.track_support = True
    times = {name: [] for name in names}
    try:
        for _ in tqdm(range(num_batches), desc="batches", disable=not progress, leave=False):
            targets = torch.randint(num_nodes, (batch_size,), generator=gen)
            for k in torch.randperm(len(names), generator=gen).tolist():
                times[names[k]].append(_time_call(lambda: engines[names[k]].predict(targets)) * 1e3)
    finally:
        for name in cached:
            engines[name].cache.track_support = False
    result = {}
    base = torch.tensor(times[baseline], dtype=torch.float64)
    for name in names:
        t = torch.tensor(times[name], dtype=torch.float64)
        s = spread(t)
        r = dict(p50=s["median"], p25=s["p25"], p75=s["p75"], p99=float(torch.quantile(t, 0.99)),
                 mean=float(t.mean()), speedup=speedup(base, t))
        if engines[name].cache is not None:
            stats = engines[name].cache.stats()
            r.update(hit_rate=stats["hit_rate"], support_reduction=stats["support_reduction"])
        result[name] = r
    return result
