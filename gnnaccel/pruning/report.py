"""Summaries of pruning for demos and experiments: F1, logit error and speedup per keep ratio."""
from __future__ import annotations

import time
from typing import List, Sequence

import torch
from torch import Tensor


def logit_relative_error(reference: Tensor, logits: Tensor) -> float:
    """||logits - reference||_F / ||reference||_F."""
    ref = reference.double()
    den = float(ref.norm())
    return float((logits.double() - ref).norm()) / den if den > 0 else float((logits.double() - ref).norm())


def time_full_inference(model, graph, x: Tensor, repeats: int = 3, chunk_size=None) -> float:
    """Median wall time (s) of ``full_inference`` over ``repeats`` runs after one warm-up."""
    from ..inference import full_inference

    full_inference(model, graph, x, chunk_size=chunk_size, progress=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        full_inference(model, graph, x, chunk_size=chunk_size, progress=False)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def keep_ratio_sweep(model, data, ratios: Sequence[float] = (1 / 2, 1 / 4, 1 / 8), scheme: str = "full",
                     method: str = "auto", calib_nodes=None, mask=None, repeats: int = 3,
                     progress: bool = False, **prune_kwargs) -> List[dict]:
    """Prune ``model`` at each ratio and measure it against the unpruned model on ``data`` (a GraphData).

    Returns one dict per ratio: ``keep``, ``f1`` (F1-micro on ``mask``, default ``data.test_mask``),
    ``f1_unpruned``, ``logit_rel_error`` (on the same nodes), ``full_inference_speedup`` (median unpruned
    time / median pruned time of :func:`gnnaccel.inference.full_inference`, same process, ``repeats`` runs),
    ``prune_seconds`` and ``model`` (the pruned model)."""
    from ..inference import full_inference
    from ..train import f1_micro
    from .prune import prune

    mask = data.test_mask if mask is None else mask
    base = full_inference(model, data.graph, data.x, progress=False)
    f1_base = f1_micro(base[mask], data.y[mask])
    t_base = time_full_inference(model, data.graph, data.x, repeats)
    rows = []
    for keep in ratios:
        t0 = time.perf_counter()
        pruned = prune(model, data.graph, data.x, keep=keep, scheme=scheme, method=method,
                       calib_nodes=calib_nodes, progress=progress, **prune_kwargs)
        t_prune = time.perf_counter() - t0
        out = full_inference(pruned, data.graph, data.x, progress=False)
        t_pruned = time_full_inference(pruned, data.graph, data.x, repeats)
        rows.append({"keep": keep, "f1": f1_micro(out[mask], data.y[mask]), "f1_unpruned": f1_base,
                     "logit_rel_error": logit_relative_error(base[mask], out[mask]),
                     "full_inference_speedup": t_base / t_pruned, "prune_seconds": t_prune, "model": pruned})
    return rows
