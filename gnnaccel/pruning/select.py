"""Channel selection under an exact budget: LASSO path (the method), greedy forward selection, and the
random / magnitude baselines.

All Gram-based selectors work on (G, q) from :func:`gnnaccel.pruning.gram_from_moments`; ``penalty`` marks
unpenalised coordinates (0), which are always kept and are NOT counted in ``k`` -- the returned indices are
the ``k`` selected penalised coordinates only (sorted). Dead coordinates (G_ii <= 0) can never enter a
LASSO solution; they are only returned when fewer than ``k`` alive coordinates exist.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import all_finite, is_symmetric
from ..ops.lasso import lasso_cd, unpenalized_coordinates, unpenalized_pinv


def _check_gram(G: Tensor, q: Tensor, penalty: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    if not isinstance(G, Tensor) or G.dim() != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square matrix, got shape {list(getattr(G, 'shape', []))}")
    c = G.shape[0]
    if not isinstance(q, Tensor) or q.shape != (c,):
        raise ValueError(f"q must have shape [{c}] to match G, got {list(getattr(q, 'shape', []))}")
    if not all_finite(G):
        raise ValueError("G contains NaN or Inf (non-finite activations or weights?)")
    if not all_finite(q):
        raise ValueError("q contains NaN or Inf")
    G, q = G.double(), q.double()
    if c and not is_symmetric(G):
        raise ValueError("G must be symmetric")
    if penalty is None:
        p = torch.ones(c, dtype=torch.float64, device=G.device)
    else:
        if not isinstance(penalty, Tensor) or penalty.shape != (c,):
            raise ValueError(f"penalty must have shape [{c}], got {list(getattr(penalty, 'shape', []))}")
        p = penalty.double().to(G.device)
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError("penalty factors must be finite and >= 0")
    return G, q, p


def _check_k(k: int, available: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 0 <= k <= available:
        raise ValueError(f"k must be in [0, {available}] (the number of penalised coordinates), got {k}")
    return k


def lambda_max(G: Tensor, q: Tensor, penalty: Optional[Tensor] = None) -> float:
    """Smallest lambda at which every penalised coordinate is 0 (after optimising the unpenalised ones):
    max_i |g_i| / p_i over alive penalised i, with g = q - G[:, U] pinv(G_UU) q_U."""
    G, q, p = _check_gram(G, q, penalty)
    g = _gradient_at_unpenalized_optimum(G, q, p)[1]
    pen = (p > 0) & (G.diagonal() > 0)
    return float((g[pen].abs() / p[pen]).max()) if bool(pen.any()) else 0.0


def _gradient_at_unpenalized_optimum(G, q, p):
    beta = torch.zeros_like(q)
    unpen = unpenalized_coordinates(G, p)
    if unpen.numel() == 0:
        return beta, q.clone(), None
    pinv = unpenalized_pinv(G, p)
    beta[unpen] = pinv @ q[unpen]
    return beta, q - G @ beta, pinv


def select_channels(G: Tensor, q: Tensor, k: int, penalty: Optional[Tensor] = None,
                    y_sq: Union[None, float, Tensor] = None, tol: float = 1e-5, path_ratio: float = 0.6,
                    max_bisections: int = 30, max_sweeps: int = 10_000, lambda_min_ratio: float = 1e-7,
                    return_info: bool = False):
    """The ``k`` coordinates the LASSO path selects, as sorted indices (exact budget).

    Walks lambda geometrically (factor ``path_ratio``) down from :func:`lambda_max`, warm-starting each solve
    of :func:`gnnaccel.ops.lasso_cd` from the previous one, until at least ``k`` penalised coordinates are
    non-zero; then bisects (in log lambda) between the last lambda with fewer and the first with at least
    ``k`` non-zeros, stopping at exactly ``k`` or after ``max_bisections``; keeps the ``k`` largest |beta|
    of that solution. Unpenalised coordinates (penalty 0) are optimised with the rest but never counted or
    returned. If even ``lambda_max * lambda_min_ratio`` leaves fewer than ``k`` non-zeros (rank of G below
    k), the rest are filled by |gradient| / penalty (the coordinates next to enter), then by index.
    ``y_sq`` (||Y||^2, default 1'G1 for q = G 1) and ``tol`` set the solver's stopping rule
    (gap <= tol * y_sq). With ``return_info`` returns ``(indices, info)``; info holds lam, beta, nnz,
    solves, sweeps and the lambda trace.
    """
    G, q, p = _check_gram(G, q, penalty)
    c = G.shape[0]
    penalised = p > 0
    k = _check_k(k, int(penalised.sum()))
    if not 0 < path_ratio < 1:
        raise ValueError(f"path_ratio must be in (0, 1), got {path_ratio}")
    y_sq_t = G.sum() if y_sq is None else torch.as_tensor(float(y_sq), dtype=torch.float64)
    if not bool(torch.isfinite(y_sq_t)) or float(y_sq_t) < 0:
        raise ValueError(f"y_sq must be finite and >= 0, got {float(y_sq_t)}")
    beta, g0, pinv = _gradient_at_unpenalized_optimum(G, q, p)
    alive_pen = penalised & (G.diagonal() > 0)
    info: Dict[str, object] = {"solves": 0, "sweeps": 0, "trace": []}

    def nnz(b):
        return int(((b != 0) & alive_pen).sum())

    def solve(lam, start):
        b, gap, sweeps = lasso_cd(G, q, lam, start, p, y_sq_t, tol, max_sweeps, unpenalized_pinv=pinv)
        info["solves"] += 1
        info["sweeps"] += int(sweeps)
        n = nnz(b)
        info["trace"].append((lam, n))
        return b, n

    lam_hi = float((g0[alive_pen].abs() / p[alive_pen]).max()) if bool(alive_pen.any()) else 0.0
    beta_lo, lam_lo, n_lo = None, None, None
    if k > 0 and lam_hi > 0:
        beta_hi = beta
        lam = lam_top = lam_hi
        while True:  # geometric descent until >= k non-zeros
            lam *= path_ratio
            b, n = solve(lam, beta_hi)
            if n >= k:
                beta_lo, lam_lo, n_lo = b, lam, n
                break
            beta_hi, lam_hi = b, lam
            if lam < lambda_min_ratio * lam_top:
                break
        if beta_lo is not None:
            for _ in range(max_bisections):  # land on exactly k, or as close above as the path allows
                if n_lo == k or lam_hi / lam_lo < 1 + 1e-6:
                    break
                mid = math.sqrt(lam_hi * lam_lo)
                b, n = solve(mid, beta_hi)
                if n >= k:
                    beta_lo, lam_lo, n_lo = b, mid, n
                else:
                    beta_hi, lam_hi = b, mid
        else:
            beta_lo, lam_lo, n_lo = beta_hi, lam_hi, nnz(beta_hi)
    else:
        beta_lo, lam_lo, n_lo = beta, lam_hi, 0

    # Rank: |beta| of the penalised alive coordinates, then (for fill) |g| / p, then lower index first.
    g = q - G @ beta_lo
    score_beta = torch.where(alive_pen, beta_lo.abs(), torch.zeros_like(beta_lo))
    score_grad = torch.where(alive_pen, g.abs() / p.clamp_min(1e-300), torch.zeros_like(g))
    order = _lexsort_desc([score_beta, score_grad, alive_pen.double()], c)
    order = order[penalised[order]]
    chosen = torch.sort(order[:k]).values
    if return_info:
        info.update(lam=lam_lo, beta=beta_lo, nnz=n_lo)
        return chosen, info
    return chosen


def _lexsort_desc(keys, c):
    """Indices sorting by keys[0] desc, ties by keys[1] desc, ..., then by index ascending (stable sorts)."""
    order = torch.arange(c)
    for key in reversed(keys):
        order = order[torch.sort(key[order], descending=True, stable=True).indices]
    return order


def select_greedy(G: Tensor, q: Tensor, k: int, penalty: Optional[Tensor] = None) -> Tensor:
    """Forward selection on the same Gram: repeatedly add the coordinate that most reduces the refit
    objective min_{beta_K} 1/2 b'Gb - q'b (the residual ||Y - sum_{i in K} beta_i C_i||^2 / 2n).

    Adding j to K reduces it by g_j^2 / s_j, with g = q - G[:, K] beta_K the current gradient and s_j the
    Schur complement G_jj - G_jK G_KK^-1 G_Kj. Both are kept up to date by a Cholesky (Gram-Schmidt) row
    update V <- [V; v], v = (G_j: - V[:, j]'V) / sqrt(s_j): O(c |K|) per step. Unpenalised coordinates are
    added first and not counted in ``k``; returns the sorted ``k`` penalised picks.
    """
    G, q, p = _check_gram(G, q, penalty)
    c = G.shape[0]
    penalised = p > 0
    k = _check_k(k, int(penalised.sum()))
    diag = G.diagonal().clone()
    eps = 1e-12 * float(diag.max()) if c else 0.0
    schur = diag.clone()
    g = q.clone()
    selected = torch.zeros(c, dtype=torch.bool)
    rows = []
    V = torch.zeros(0, c, dtype=torch.float64)

    def add(j):
        nonlocal V, g
        if float(schur[j]) > eps:
            v = (G[j] - V[:, j] @ V) / math.sqrt(float(schur[j]))
            g = g - v * (float(g[j]) / math.sqrt(float(schur[j])))
            schur.sub_(v * v)
            schur.clamp_(min=0)
            V = torch.cat([V, v.unsqueeze(0)])
        selected[j] = True

    for j in torch.nonzero(~penalised).flatten().tolist():
        add(j)
    picks = []
    for _ in range(k):
        score = torch.where(schur > eps, g * g / schur.clamp_min(eps), torch.zeros_like(g))
        score[selected | ~penalised] = -1.0
        j = int(torch.argmax(score))  # argmax returns the first maximum: ties go to the lower index
        picks.append(j)
        add(j)
    return torch.sort(torch.tensor(picks, dtype=torch.long)).values


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
