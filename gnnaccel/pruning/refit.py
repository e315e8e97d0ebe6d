"""Closed-form refit of the kept channels from the second moment S (no pass over the data).

    W' = argmin ||Y - sum_b Z_{b,K_b} W'_b||^2,   Y = sum_b Z_b W_b (the unpruned pre-activation output)
       = (S_JJ + ridge I)^-1 S_{J,all} W_all       J = stacked kept rows (b*c + K_b), W_all = [W~_0; W~_1; ...]

Branches writing shared output columns are solved jointly (sum form); branches with disjoint columns
(concat form) separately, which is the same solution at a smaller cost.

With an intercept (what ``gnnaccel.prune`` does by default, ``fit_bias=True``) the same formulas run on the
moments about the calibration mean, :func:`about_mean`, and the bias absorbs the mean of what the dropped
channels contributed, :func:`bias_shift`. Post-ReLU inputs have large means, so a dropped channel's mean
contribution is a constant offset of the output that the kept channels can only partly imitate.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import all_finite
from .gram import _check_moment, _placed_weights, _stacked_shape

KeepSpec = Union[Tensor, Sequence[Tensor]]


def _keep_lists(keep: KeepSpec, num_branches: int, c: int) -> List[Tensor]:
    if isinstance(keep, Tensor):
        keeps = [keep] * num_branches
    else:
        keeps = list(keep)
        if len(keeps) != num_branches:
            raise ValueError(f"{len(keeps)} keep lists for {num_branches} branches")
    out = []
    for b, kb in enumerate(keeps):
        kb = torch.as_tensor(kb, dtype=torch.long).flatten()
        if kb.numel() and (int(kb.min()) < 0 or int(kb.max()) >= c):
            raise ValueError(f"branch {b}: kept channel index out of range [0, {c})")
        if torch.unique(kb).numel() != kb.numel():
            raise ValueError(f"branch {b}: kept channel indices must be distinct")
        out.append(kb)
    return out


def _column_groups(cols: List[Tensor]) -> List[List[int]]:
    """Branches connected by shared output columns (union-find over pairwise overlaps)."""
    parent = list(range(len(cols)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    sets = [set(cl.tolist()) for cl in cols]
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            if sets[a] & sets[b]:
                parent[find(a)] = find(b)
    groups = {}
    for b in range(len(cols)):
        groups.setdefault(find(b), []).append(b)
    return list(groups.values())


def _solve_psd(A: Tensor, B: Tensor, ridge: float) -> Tensor:
    n = A.shape[0]
    if n == 0:
        return B.new_zeros(0, B.shape[1])
    scale = float(A.diagonal().mean())
    A = A + (ridge * scale if scale > 0 else 0.0) * torch.eye(n, dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    # Singular (dead kept channels, ridge 0): the minimum-norm least-squares solution.
    return torch.linalg.pinv(A, hermitian=True) @ B


def refit(S: Tensor, keep_per_branch: KeepSpec, weights: Sequence[Tensor], form: str = "sum",
          ridge: float = 1e-6, branch_cols: Optional[Sequence[Tensor]] = None,
          cross: Optional[Tensor] = None) -> List[Tensor]:
    """Least-squares weights of the kept input channels, per branch ``[len(K_b), d_b]`` (float64).

    ``S`` [B*c, B*c] second moment of the stacked branch inputs, ``keep_per_branch`` one index tensor for all
    branches (scheme full) or one per branch (batched scheme: all channels of the self branch), ``weights``
    the current branch weights [c, d_b]. ``ridge`` is relative to the mean diagonal of S_JJ (scale-free);
    0 gives plain least squares (minimum-norm if S_JJ is singular).

    ``cross`` (error-compensating refit): the target is computed from *other* inputs Z0 (the unpruned
    model's) with ``weights``, Y = sum_b Z0_b W_b, while the refit reads the inputs Z whose moment is ``S``
    (the pruned upstream model's, placed in the same stacked [B*c] frame); ``cross`` = Z'Z0 / n [B*c, B*c]
    and W' = (S_JJ + ridge I)^-1 cross_{J,all} W_all. None means Z0 = Z (cross = S).
    """
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    S = _check_moment(S)
    placed, cols, d = _placed_weights(weights, form, branch_cols)
    B, c = _stacked_shape(S, placed)
    keeps = _keep_lists(keep_per_branch, B, c)
    W_all = torch.cat(placed, 0).to(S.device)
    if cross is None:
        cross = S
    else:
        if not isinstance(cross, Tensor) or tuple(cross.shape) != tuple(S.shape):
            raise ValueError(f"cross must be [{S.shape[0]}, {S.shape[0]}] like S, got "
                             f"{list(getattr(cross, 'shape', []))}")
        if not all_finite(cross):
            raise ValueError("cross contains NaN or Inf")
        cross = cross.double().to(S.device)
    new = [None] * B
    for group in _column_groups(cols):
        gcols = torch.unique(torch.cat([cols[b] for b in group]))
        J = torch.cat([b * c + keeps[b] for b in group]).to(S.device)
        A = S[J][:, J]
        rhs = cross[J] @ W_all[:, gcols.to(S.device)]
        X = _solve_psd(A, rhs, ridge)
        position = {int(col): i for i, col in enumerate(gcols.tolist())}
        start = 0
        for b in group:
            rows = X[start:start + keeps[b].numel()]
            start += keeps[b].numel()
            new[b] = rows[:, torch.tensor([position[int(col)] for col in cols[b].tolist()], dtype=torch.long,
                                          device=rows.device)]
    return new


def about_mean(moment: Tensor, mean_a: Tensor, mean_b: Tensor, fold_mean_a: Optional[Tensor] = None,
               fold_mean_b: Optional[Tensor] = None) -> Tensor:
    """E[(a - mu_a)(b - mu_b)'] from the raw moment ``moment`` = E[a b'] and the means: the moment the refit
    with an intercept uses. For a fold of the calibration rows (``moment``, ``fold_mean_*`` over the fold)
    the deviations are still taken from the global means ``mean_*``, so that the folds' moments, weighted
    by their row counts, add up to the global one."""
    fa = mean_a if fold_mean_a is None else fold_mean_a
    fb = mean_b if fold_mean_b is None else fold_mean_b
    out = moment.double() - torch.outer(fa.double(), mean_b.double()) - torch.outer(mean_a.double(), fb.double())
    out = out + torch.outer(mean_a.double(), mean_b.double())
    if mean_a is mean_b and fa is fb and out.dim() == 2 and out.shape[0] == out.shape[1]:
        out = _zero_constant_coordinates(out, moment)
    return out


# A coordinate whose moment about the mean is at most this fraction of its raw second moment is constant up to
# the rounding of the subtraction (float64 cancellation errors are ~1e-16 of the raw moment per term).
CONSTANT_RTOL = 1e-12


def _zero_constant_coordinates(centred: Tensor, raw: Tensor) -> Tensor:
    """``centred`` with the rows and columns of constant coordinates set to exactly 0.

    A constant input channel (a dead ReLU unit, possibly shifted by a BatchNorm) has a centred second moment
    of 0, but the subtraction leaves rounding residue ~1e-10 off the diagonal; with a diagonal of exactly 0
    that residue reads as a negative 2 x 2 principal minor, which the LASSO's contract rejects. The intercept
    absorbs a constant channel entirely, so its exact centred row is 0."""
    d = centred.diagonal()
    constant = d <= CONSTANT_RTOL * raw.double().diagonal().abs()
    if bool(constant.any()):
        centred = centred.clone()
        centred[constant] = 0
        centred[:, constant] = 0
    return centred


def bias_shift(mean: Tensor, weights: Sequence[Tensor], new_weights: Sequence[Tensor], keep_per_branch: KeepSpec,
               form: str = "sum", branch_cols: Optional[Sequence[Tensor]] = None,
               new_mean: Optional[Tensor] = None) -> Tensor:
    """What the bias gains when the refit has an intercept [d]: sum_b mean_b W_b - sum_b mean'_{b,K_b} W'_b,
    i.e. the mean output of the unpruned branches minus that of the refit kept channels over the calibration
    rows (``mean``: column means of the stacked inputs [B*c]; ``new_mean``: those of the refit's inputs placed
    in the same frame, default ``mean``)."""
    placed, cols, d = _placed_weights(weights, form, branch_cols)
    B, c = len(placed), placed[0].shape[0]
    keeps = _keep_lists(keep_per_branch, B, c)
    mean = mean.double().cpu()
    new_mean = mean if new_mean is None else new_mean.double().cpu()
    if mean.shape != (B * c,) or new_mean.shape != (B * c,):
        raise ValueError(f"means must have shape [{B * c}], got {list(mean.shape)} and {list(new_mean.shape)}")
    shift = mean @ torch.cat(placed, 0).cpu()
    for b in range(B):
        shift[cols[b]] -= new_mean[b * c + keeps[b]] @ new_weights[b].double().cpu()
    return shift


def output_relative_error(S: Tensor, weights: Sequence[Tensor], new_weights: Sequence[Tensor],
                          keep_per_branch: KeepSpec, form: str = "sum",
                          branch_cols: Optional[Sequence[Tensor]] = None, new_moment: Optional[Tensor] = None,
                          cross: Optional[Tensor] = None, norm_moment: Optional[Tensor] = None) -> float:
    """||Y - Y'||_F / ||Y||_F on the calibration rows, from S alone: Y = sum_b Z_b W_b (all channels),
    Y' = sum_b Z_{b,K_b} W'_b (kept channels, new weights).

    With other inputs Z' for Y' (the error-compensating refit): ``new_moment`` = Z''Z' / n and ``cross`` =
    Z''Z / n (both [B*c, B*c], Z' placed in the stacked frame), S = Z'Z / n; then
    ||Y - Y'||^2 / n = tr(W'S W) - 2 tr(W''cross W) + tr(W''new_moment W').
    ``norm_moment``: the moment ||Y|| is taken from, when it is not ``S`` (a refit with an intercept passes
    moments about the mean, whose error is what remains after the bias shift, and the raw moment here)."""
    num, den = _error_terms(S, weights, new_weights, keep_per_branch, form, branch_cols, new_moment, cross)
    if norm_moment is not None:
        den = _output_energy(_check_moment(norm_moment), weights, form, branch_cols)
    if den <= 0:
        return 0.0 if num <= 0 else float("inf")
    return max(num, 0.0) ** 0.5 / den ** 0.5


def _quadratic(S: Tensor, W: Tensor) -> float:
    """tr(W' S W): ||Z W||^2 / n for S = Z'Z / n."""
    return float((W * (S @ W)).sum())


def _output_energy(S: Tensor, weights: Sequence[Tensor], form: str, branch_cols) -> float:
    """||Y||^2 / n of the unpruned output."""
    placed, _, _ = _placed_weights(weights, form, branch_cols)
    _stacked_shape(S, placed)
    return _quadratic(S, torch.cat(placed, 0).to(S.device))


def _error_terms(S, weights, new_weights, keep_per_branch, form, branch_cols, new_moment, cross):
    """(||Y - Y'||^2 / n, ||Y||^2 / n) for :func:`output_relative_error`."""
    if (new_moment is None) != (cross is None):
        raise ValueError("new_moment and cross go together (both or neither)")
    S = _check_moment(S)
    placed, cols, d = _placed_weights(weights, form, branch_cols)
    B, c = len(placed), placed[0].shape[0]
    keeps = _keep_lists(keep_per_branch, B, c)
    if len(new_weights) != B:
        raise ValueError(f"{len(new_weights)} new weights for {B} branches")
    W_all = torch.cat(placed, 0).to(S.device)
    W_new = torch.zeros_like(W_all)
    for b in range(B):
        nb = new_weights[b].double().to(S.device)
        if nb.shape != (keeps[b].numel(), cols[b].numel()):
            raise ValueError(f"branch {b}: new weight must be [{keeps[b].numel()}, {cols[b].numel()}], "
                             f"got {list(nb.shape)}")
        rows = (b * c + keeps[b]).to(S.device)
        W_new[rows.unsqueeze(1), cols[b].to(S.device).unsqueeze(0)] = nb
    den = _quadratic(S, W_all)
    if new_moment is None:
        num = _quadratic(S, W_all - W_new)
    else:
        Sn, T = _check_moment(new_moment).to(S.device), cross.double().to(S.device)
        if Sn.shape != S.shape or T.shape != S.shape:
            raise ValueError(f"new_moment and cross must be {list(S.shape)} like S, got {list(Sn.shape)} and "
                             f"{list(T.shape)}")
        num = den - 2 * float((W_new * (T @ W_all)).sum()) + _quadratic(Sn, W_new)
    return num, den


RIDGE_CANDIDATES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def choose_ridge(folds: Sequence[tuple], keep_per_branch: KeepSpec, weights: Sequence[Tensor], form: str = "sum",
                 branch_cols: Optional[Sequence[Tensor]] = None,
                 candidates: Sequence[float] = RIDGE_CANDIDATES) -> Tuple[float, Dict[float, float]]:
    """The refit's ridge by K-fold cross-validation on the calibration moments (no pass over the data).

    ``folds``: one tuple per fold of calibration rows, ``(n_f, S_f)`` for the local refit or
    ``(n_f, S_new_f, cross_f, S_f)`` for the error-compensating one (moments / n_f as in :func:`refit`).
    For each candidate (relative ridge, as in :func:`refit`) and fold f, the refit on the pooled moments
    of the other folds is scored by ||Y - Y'||^2 on f; returns the candidate with the lowest total (the
    smaller one on ties) and {ridge: relative CV error}.
    """
    folds = list(folds)
    if len(folds) < 2:
        raise ValueError(f"choose_ridge needs at least 2 folds, got {len(folds)}")
    if not candidates or any(not r >= 0 for r in candidates):
        raise ValueError(f"candidates must be a non-empty list of ridges >= 0, got {candidates!r}")
    counts = [int(f[0]) for f in folds]
    if any(n <= 0 for n in counts):
        raise ValueError(f"every fold needs at least one row, got counts {counts}")
    mats = [[m.double() for m in f[1:]] for f in folds]
    if len({len(m) for m in mats}) != 1 or len(mats[0]) not in (1, 3):
        raise ValueError("folds must all be (n, S) or all be (n, S_new, cross, S)")
    scores = {}
    for r in candidates:
        num = den = 0.0
        for f in range(len(folds)):
            rest = [g for g in range(len(folds)) if g != f]
            n_rest = sum(counts[g] for g in rest)
            pooled = [sum(counts[g] * mats[g][j] for g in rest) / n_rest for j in range(len(mats[0]))]
            if len(pooled) == 1:
                new = refit(pooled[0], keep_per_branch, weights, form, r, branch_cols)
                a, b = _error_terms(mats[f][0], weights, new, keep_per_branch, form, branch_cols, None, None)
            else:
                new = refit(pooled[0], keep_per_branch, weights, form, r, branch_cols, cross=pooled[1])
                a, b = _error_terms(mats[f][2], weights, new, keep_per_branch, form, branch_cols, mats[f][0],
                                    mats[f][1])
            num += counts[f] * a
            den += counts[f] * b
        scores[float(r)] = (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0
    best = min(scores, key=lambda r: (scores[r], r))
    return best, scores
