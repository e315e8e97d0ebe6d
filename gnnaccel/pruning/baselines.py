"""Baseline channel selections: random and by weight magnitude."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from ._checks import check_k as _check_k


def select_random(num_channels: int, k: int, seed: int = 0) -> Tensor:
    """``k`` distinct channels drawn uniformly with a seeded generator, sorted."""
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 0:
        raise ValueError(f"num_channels must be a non-negative int, got {num_channels!r}")
    k = _check_k(k, num_channels)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(num_channels, generator=gen)[:k]).values


def select_magnitude(weights: Union[Tensor, Sequence[Tensor]], k: int) -> Tensor:
    """The ``k`` channels with the largest row norm of the stacked branch weights [W_0 | W_1 | ...] (each
    [c, d_b]); ties go to the lower index. Sorted."""
    ws = [weights] if isinstance(weights, Tensor) else list(weights)
    if not ws or any(not isinstance(w, Tensor) or w.dim() != 2 for w in ws):
        raise ValueError("weights must be a 2-D tensor or a non-empty list of 2-D tensors [c, out]")
    c = ws[0].shape[0]
    if any(w.shape[0] != c for w in ws):
        raise ValueError(f"branch weights must share the input dimension, got {[w.shape[0] for w in ws]}")
    k = _check_k(k, c)
    stacked = torch.cat([w.detach().double() for w in ws], dim=1)
    if not bool(torch.isfinite(stacked).all()):
        raise ValueError("weights contain NaN or Inf")
    norms = stacked.norm(dim=1)
    order = torch.sort(norms, descending=True, stable=True).indices
    return torch.sort(order[:k]).values
