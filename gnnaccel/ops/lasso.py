"""``gnnaccel::lasso_cd``: coordinate descent for the Gram-form LASSO with penalty factors.

    min_b  1/2 b'Gb - q'b + lam * sum_i p_i |b_i|

See csrc/ops/lasso_cd.cpp for the contract and the duality-gap derivation. This module holds the Python entry
point, the fake kernel, a float64 duality gap usable on any ``beta``, and a pure-torch reference solver
(plain cyclic coordinate descent, full sweeps) used by the tests.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension

# Same cut-off as kLassoPinvRtol in csrc/ops/lasso_cd_common.h.
PINV_RTOL = 1e-10


def _as_scalar_tensor(value, like: Tensor, name: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must hold one value, got shape {list(value.shape)}")
        return value.reshape(()).to(device=like.device, dtype=like.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a one-element tensor, got {type(value).__name__}")
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _check_floating(**tensors: Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")


def unpenalized_coordinates(G: Tensor, penalty: Optional[Tensor]) -> Tensor:
    """Indices (increasing) of the alive coordinates (G_ii > 0) whose penalty factor is 0."""
    if penalty is None:
        return torch.zeros(0, dtype=torch.long, device=G.device)
    return torch.nonzero((G.diagonal() > 0) & (penalty == 0)).flatten()


def unpenalized_pinv(G: Tensor, penalty: Optional[Tensor]) -> Tensor:
    """``pinv(G[U, U])`` in float64 for the unpenalised coordinates U; pass it to :func:`lasso_cd` to reuse it
    across a lambda path (the op computes it on every call otherwise)."""
    idx = unpenalized_coordinates(G, penalty)
    sub = G.double()[idx][:, idx]
    return torch.linalg.pinv(sub, rtol=PINV_RTOL, hermitian=True)


def lasso_cd(G: Tensor, q: Tensor, lam: Union[float, Tensor], beta0: Optional[Tensor] = None,
             penalty: Optional[Tensor] = None, y_sq: Union[None, float, Tensor] = None, tol: float = 1e-6,
             max_sweeps: int = 1000, unpenalized_pinv: Optional[Tensor] = None,
             check_psd: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Solve ``min_b 1/2 b'Gb - q'b + lam * sum_i penalty_i |b_i|`` by coordinate descent.

    ``G`` [c, c] symmetric PSD, ``q`` [c]; ``lam`` >= 0 (number or one-element tensor); ``beta0`` warm start
    (zeros if None); ``penalty`` per-coordinate factors >= 0 (all 1 if None; 0 = unpenalised, as glmnet);
    ``y_sq`` = ||Y||^2 of the target, which only scales the stopping rule ``gap <= tol * y_sq`` and tightens
    the gap; when None it is ``1'G1``, right when the target is the unpruned output (``q = G 1``).
    Coordinates with ``G_ii <= 0`` (dead channels) stay 0. Returns ``(beta, gap, sweeps)`` as tensors
    (``beta`` in G's dtype, ``gap`` absolute, ``sweeps`` int64); the solve runs in float64.

    A G outside the contract raises ValueError (csrc/ops/lasso_cd_common.h): not symmetric, a negative
    diagonal entry or 2 x 2 minor, an eigenvalue below ``-rtol * max G_ii`` (rtol 1e-8 for float64, 1e-4 for
    float32: a Cholesky factorisation, O(c^3)), a pass with negative curvature, or a negative duality gap (also
    given by a ``y_sq`` below ``q' pinv(G) q``). ``check_psd=False`` skips only the O(c^3) factorisation, for
    callers whose G is PSD by construction.
    """
    require_extension()
    _check_floating(G=G, q=q)
    if G.dim() != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square matrix, got shape {list(G.shape)}")
    c = G.shape[0]
    if q.shape != (c,):
        raise ValueError(f"q must have shape [{c}] to match G, got {list(q.shape)}")
    if isinstance(lam, (int, float)) and not isinstance(lam, bool) and not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if int(max_sweeps) < 0:
        raise ValueError(f"max_sweeps must be >= 0, got {max_sweeps}")
    lam_t = _as_scalar_tensor(lam, G, "lam")
    if beta0 is None:
        beta0 = torch.zeros_like(q)
    elif beta0.shape != (c,):
        raise ValueError(f"beta0 must have shape [{c}] to match G, got {list(beta0.shape)}")
    if penalty is not None and penalty.shape != (c,):
        raise ValueError(f"penalty must have shape [{c}] to match G, got {list(penalty.shape)}")
    y_sq_t = G.sum() if y_sq is None else _as_scalar_tensor(y_sq, G, "y_sq")
    return torch.ops.gnnaccel.lasso_cd(G.contiguous(), q.contiguous(), lam_t, beta0.contiguous(), penalty, y_sq_t,
                                       unpenalized_pinv, float(tol), int(max_sweeps), bool(check_psd))


def lasso_select(G: Tensor, q: Tensor, k: int, penalty: Optional[Tensor] = None, y_sq: Union[None, float, Tensor] = None,
                 tol: float = 1e-5, path_ratio: float = 0.6, max_bisections: int = 30, max_sweeps: int = 10_000,
                 lambda_min_ratio: float = 1e-7, unpenalized_pinv: Optional[Tensor] = None, check_psd: bool = True
                 ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` coordinates the LASSO path selects, in one op call (see csrc/ops/lasso_select.cpp).

    Same problem, contract and arguments as :func:`lasso_cd` (``tol`` is every solve's stopping rule); lambda walks down
    from lambda_max by ``path_ratio`` until ``k`` penalised coordinates are non-zero, then bisects to land on
    exactly ``k`` (at most ``max_bisections`` solves). Returns ``(chosen, beta, lam, nnz, solves, sweeps)``:
    the ``k`` chosen penalised coordinates (increasing int64), beta and lambda of the solution they were read
    from, its number of non-zero penalised coordinates, and the solve and sweep counts.
    :func:`gnnaccel.pruning.select_channels` is the user-facing entry (checks, unpenalised elimination).
    """
    require_extension()
    _check_floating(G=G, q=q)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    y_sq_t = G.sum() if y_sq is None else _as_scalar_tensor(y_sq, G, "y_sq")
    return torch.ops.gnnaccel.lasso_select(G.contiguous(), q.contiguous(), k, penalty, y_sq_t, unpenalized_pinv,
                                           float(tol), float(path_ratio), int(max_bisections), int(max_sweeps),
                                           float(lambda_min_ratio), bool(check_psd))


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::lasso_cd")
    def _lasso_cd_fake(G, q, lam, beta0, penalty, y_sq, unpenalized_pinv, tol, max_sweeps, check_psd=True):
        torch._check(G.dim() == 2, lambda: "G must be 2-D")
        torch._check(G.shape[0] == G.shape[1], lambda: "G must be square")
        torch._check(q.dim() == 1 and q.shape[0] == G.shape[0], lambda: "q must be [c]")
        return G.new_empty((G.shape[0],)), G.new_empty(()), G.new_empty((), dtype=torch.long)

    @torch.library.register_fake("gnnaccel::lasso_select")
    def _lasso_select_fake(G, q, k, penalty, y_sq, unpenalized_pinv, tol, path_ratio, max_bisections, max_sweeps,
                           lambda_min_ratio, check_psd=True):
        torch._check(G.dim() == 2, lambda: "G must be 2-D")
        torch._check(G.shape[0] == G.shape[1], lambda: "G must be square")
        torch._check(q.dim() == 1 and q.shape[0] == G.shape[0], lambda: "q must be [c]")
        torch._check(0 <= k <= G.shape[0], lambda: "k must be in [0, c]")
        count = lambda: G.new_empty((), dtype=torch.long)  # noqa: E731
        return (G.new_empty((k,), dtype=torch.long), G.new_empty((G.shape[0],)), G.new_empty(()), count(), count(),
                count())


# ---------------------------------------------------------------------------------------------- reference
def _soft(z: Tensor, t: Tensor) -> Tensor:
    return torch.sign(z) * torch.clamp(z.abs() - t, min=0)


def lasso_objective(G: Tensor, q: Tensor, lam: float, beta: Tensor, penalty: Optional[Tensor] = None) -> Tensor:
    """``1/2 b'Gb - q'b + lam * sum p_i |b_i|`` in float64."""
    G, q, beta = G.double(), q.double(), beta.double()
    p = torch.ones_like(q) if penalty is None else penalty.double()
    return 0.5 * beta @ G @ beta - q @ beta + lam * (p * beta.abs()).sum()


def lasso_duality_gap(G: Tensor, q: Tensor, lam: float, beta: Tensor, penalty: Optional[Tensor] = None,
                      y_sq: Optional[float] = None) -> Tensor:
    """An upper bound on ``F(beta) - min F`` for any ``beta`` (float64, dense; for tests and diagnostics).

    With unpenalised coordinates U it adds the decrease still available in U, 1/2 g_U' pinv(G_UU) g_U, to the
    gap of the point where U is optimal (the op reaches that point before measuring, so both agree there).
    """
    G, q, beta = G.double(), q.double(), beta.double().clone()
    p = torch.ones_like(q) if penalty is None else penalty.double()
    y_sq = float(G.sum()) if y_sq is None else float(y_sq)
    alive = G.diagonal() > 0
    beta[~alive] = 0
    g = q - G @ beta
    unpen = unpenalized_coordinates(G, p)
    extra = torch.zeros((), dtype=torch.float64)
    if unpen.numel():
        d = unpenalized_pinv(G, p) @ g[unpen]
        extra = 0.5 * g[unpen] @ d
        beta[unpen] += d
        g = q - G @ beta
    qb, gb = q @ beta, g @ beta
    rr, yr = y_sq - qb - gb, y_sq - qb
    pen = alive & (p > 0) & (g != 0)
    smax = (lam * p[pen] / g[pen].abs()).min() if bool(pen.any()) else torch.tensor(float("inf"), dtype=torch.float64)
    s = torch.clamp(yr / rr, -smax, smax) if rr > 0 else torch.zeros((), dtype=torch.float64)
    primal = 0.5 * rr + lam * (p * beta.abs()).sum()
    return primal - (s * yr - 0.5 * s * s * rr) + extra


def lasso_cd_reference(G: Tensor, q: Tensor, lam: float, beta0: Optional[Tensor] = None,
                       penalty: Optional[Tensor] = None, y_sq: Optional[float] = None, tol: float = 1e-10,
                       max_sweeps: int = 100_000) -> Tuple[Tensor, float, int]:
    """Pure-torch float64 reference: cyclic coordinate descent with full sweeps, dense gap every sweep."""
    G, q = G.double(), q.double()
    c = q.numel()
    p = torch.ones_like(q) if penalty is None else penalty.double()
    y_sq = float(G.sum()) if y_sq is None else float(y_sq)
    beta = torch.zeros(c, dtype=torch.float64) if beta0 is None else beta0.double().clone()
    diag = G.diagonal()
    beta[diag <= 0] = 0
    sweeps = 0
    gap = float(lasso_duality_gap(G, q, lam, beta, p, y_sq))
    while gap > tol * y_sq and sweeps < max_sweeps:
        for i in range(c):
            if diag[i] <= 0:
                continue
            z = q[i] - G[i] @ beta + diag[i] * beta[i]
            beta[i] = _soft(z, lam * p[i]) / diag[i]
        sweeps += 1
        gap = float(lasso_duality_gap(G, q, lam, beta, p, y_sq))
    return beta, gap, sweeps
