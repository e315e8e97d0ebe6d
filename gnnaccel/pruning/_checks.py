"""Cheap value checks. On CPU they go through numpy: torch's elementwise isfinite/allclose on a large matrix
wake the intra-op thread pool and cost milliseconds on a busy machine, more than a warm-started solve."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def all_finite(t: Tensor) -> bool:
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def is_symmetric(A: Tensor, rtol: float = 1e-8, sample_rows: int = 64) -> bool:
    """Rows equal columns (to rtol * max|A|) on a fixed sample of ``sample_rows`` rows: a sanity check against
    passing a non-Gram matrix, at O(sample_rows * c) instead of a transposed copy of A."""
    c = A.shape[0]
    if c == 0:
        return True
    rows = np.random.default_rng(12345).permutation(c)[:sample_rows]
    if A.device.type == "cpu" and A.dtype in (torch.float32, torch.float64):
        a = A.detach().numpy()
        a_rows, a_cols = a[rows].astype(np.float64), a[:, rows].T.astype(np.float64)
        return bool(np.abs(a_rows - a_cols).max() <= rtol * np.abs(a_rows).max())
    idx = torch.from_numpy(rows).to(A.device)
    a_rows, a_cols = A[idx].double(), A[:, idx].T.double()
    return bool((a_rows - a_cols).abs().max() <= rtol * a_rows.abs().max())


def check_k(k: int, available: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 0 <= k <= available:
        raise ValueError(f"k must be in [0, {available}] (the number of penalised coordinates), got {k}")
    return k
