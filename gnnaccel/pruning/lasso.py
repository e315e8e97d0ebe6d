"""Channel selection by the LASSO path with an exact budget (DESIGN.md section 3).

Works on (G, q) from :func:`gnnaccel.pruning.gram_from_moments`, where a kept channel's contribution can only be
rescaled; ``penalty`` marks unpenalised coordinates (0), which are always kept and are NOT counted in ``k`` --
the returned indices are the ``k`` selected penalised coordinates only (sorted). Dead coordinates
(G_ii <= 0) can never enter a LASSO solution; they are only returned when fewer than ``k`` alive coordinates
exist.
"""
from __future__ import annotations

import math
import time
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ._checks import all_finite, check_k as _check_k, is_symmetric
from ._symmetric import add_upper_product_, mirror_upper_
from ..ops.lasso import lasso_select, unpenalized_coordinates, unpenalized_pinv


def _check_gram(G: Tensor, q: Tensor, penalty: Optional[Tensor], values: bool = True, ones: bool = True
                ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Shapes and penalties (always) and the values of G and q (finite, symmetric G; with ``values``) of a
    Gram problem, as float64. ``values=False`` leaves the O(c^2) checks to the op that consumes the problem
    (:func:`gnnaccel.ops.lasso_select` makes the same ones in one pass). A missing penalty comes back as all
    ones, or as None with ``ones=False``."""
    if not isinstance(G, Tensor) or G.dim() != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square matrix, got shape {list(getattr(G, 'shape', []))}")
    c = G.shape[0]
    if not isinstance(q, Tensor) or q.shape != (c,):
        raise ValueError(f"q must have shape [{c}] to match G, got {list(getattr(q, 'shape', []))}")
    if values and not all_finite(G):
        raise ValueError("G contains NaN or Inf (non-finite activations or weights?)")
    if values and not all_finite(q):
        raise ValueError("q contains NaN or Inf")
    G, q = G.double(), q.double()
    if values and c and not is_symmetric(G):
        raise ValueError("G must be symmetric")
    if penalty is None:
        p = torch.ones(c, dtype=torch.float64, device=G.device) if ones else None
    else:
        if not isinstance(penalty, Tensor) or penalty.shape != (c,):
            raise ValueError(f"penalty must have shape [{c}], got {list(getattr(penalty, 'shape', []))}")
        p = penalty.double().to(G.device)
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError("penalty factors must be finite and >= 0")
    return G, q, p


def lambda_max(G: Tensor, q: Tensor, penalty: Optional[Tensor] = None) -> float:
    """Smallest lambda at which every penalised coordinate is 0 (after optimising the unpenalised ones):
    max_i |g_i| / p_i over alive penalised i, with g = q - G[:, U] pinv(G_UU) q_U."""
    G, q, p = _check_gram(G, q, penalty)
    if not bool((p > 0).all()):  # the gradient at the unpenalised optimum is q' of the reduced problem
        red = UnpenalizedReduction(G, q, p, G.sum())
        G, q, p = red.G, red.q, red.penalty
    pen = (p > 0) & (G.diagonal() > 0)
    return float((q[pen].abs() / p[pen]).max()) if bool(pen.any()) else 0.0


# Penalised coordinates whose Schur-complement diagonal falls below this share of their own G_ii lie (up to
# rounding) in the span of the unpenalised block: their gradient at the unpenalised optimum is 0 for every
# beta, so the LASSO never selects them; the reduced problem treats them as dead.
SCHUR_DEAD_RTOL = 1e-9


class UnpenalizedReduction:
    """The LASSO on the penalised coordinates only, after minimising over the unpenalised block in closed form.

    With U = alive unpenalised coordinates (:func:`gnnaccel.ops.lasso.unpenalized_coordinates`) and R = the
    penalised ones (p_i > 0)::

        min_{b_U} 1/2 b'Gb - q'b  =  1/2 b_R'G'b_R - q''b_R - 1/2 q_U'G_UU^+ q_U,   b_U = G_UU^+ (q_U - G_UR b_R)
        G' = G_RR - G_RU G_UU^+ G_UR,   q' = q_R - G_RU G_UU^+ q_U,   ||Y'||^2 = y_sq - q_U'G_UU^+ q_U

    (Y' = the target with its projection on the unpenalised columns removed), so the LASSO on (G', q', p_R)
    has the same b_R solutions as the full problem with penalty 0 on U, and the same duality gap at the
    point where U is optimal. Dead unpenalised coordinates (G_ii = 0) are dropped (b_i = 0).

    G_UU^+ is applied through a Cholesky factor when G_UU is safely positive definite: every pivot (the part
    of column i not explained by columns < i) above ``SCHUR_DEAD_RTOL * G_ii``; otherwise (an unpenalised
    column in the span of the others, e.g. a duplicated feature) through the pseudo-inverse of
    :func:`gnnaccel.ops.lasso.unpenalized_pinv` (minimum-norm b_U), as the full solver does. The Cholesky
    route costs ~c_U^3 / 3 flops against an eigendecomposition for the pseudo-inverse (many times slower).
    Penalised coordinates whose Schur diagonal is below ``SCHUR_DEAD_RTOL * G_ii`` are set dead in G' (row,
    column and q' entry 0).
    Attributes: G, q, y_sq (reduced), penalty (p_R), kept (R, indices into the full problem), unpen (U),
    factor ("cholesky" or "pinv"), size (full c).
    """

    def __init__(self, G: Tensor, q: Tensor, penalty: Tensor, y_sq: Tensor):
        self.size = G.shape[0]
        self.unpen = U = unpenalized_coordinates(G, penalty)
        self.kept = R = torch.nonzero(penalty > 0).flatten()
        self.penalty = penalty[R]
        G_UU = G[U.unsqueeze(1), U]  # one gather each, no [u, c] intermediate
        rhs = torch.cat([G[U.unsqueeze(1), R], q[U].unsqueeze(1)], 1)  # [G_UR | q_U]
        self._G_UR, self._q_U = rhs[:, :-1], rhs[:, -1]
        L, info = torch.linalg.cholesky_ex(G_UU)
        Gr = G[R.unsqueeze(1), R]
        if int(info) == 0 and bool((L.diagonal().square() > SCHUR_DEAD_RTOL * G_UU.diagonal()).all()):
            self.factor, self._L, self._pinv = "cholesky", L, None
            W = torch.linalg.solve_triangular(L, rhs, upper=False)
            W_R, w_q = W[:, :-1], W[:, -1]
            add_upper_product_(Gr, W_R, W_R, alpha=-1.0)
            qr = q[R] - W_R.T @ w_q
            explained = w_q @ w_q
        else:
            self.factor, self._L, self._pinv = "pinv", None, unpenalized_pinv(G, penalty)
            MG = self._pinv @ self._G_UR  # [u, r]
            Mq = self._pinv @ self._q_U
            add_upper_product_(Gr, self._G_UR, MG, alpha=-1.0)
            qr = q[R] - self._G_UR.T @ Mq
            explained = self._q_U @ Mq
        mirror_upper_(Gr)  # exactly symmetric: the upper blocks of G_RR minus the product, mirrored
        gone = Gr.diagonal() <= SCHUR_DEAD_RTOL * G.diagonal()[R]
        if bool(gone.any()):
            Gr[gone] = 0
            Gr[:, gone] = 0
            qr[gone] = 0
        self.G, self.q = Gr, qr
        self.y_sq = (y_sq - explained).clamp_min(0)

    def full_beta(self, beta_reduced: Tensor) -> Tensor:
        """The full-problem beta: b_R = ``beta_reduced``, b_U = G_UU^+ (q_U - G_UR b_R), dead ones 0."""
        beta = torch.zeros(self.size, dtype=torch.float64, device=beta_reduced.device)
        b_r = beta_reduced.double()
        beta[self.kept] = b_r
        rhs = self._q_U - self._G_UR @ b_r
        if self._L is not None:
            beta[self.unpen] = torch.cholesky_solve(rhs.unsqueeze(1), self._L).flatten()
        else:
            beta[self.unpen] = self._pinv @ rhs
        return beta


def select_channels(G: Tensor, q: Tensor, k: int, penalty: Optional[Tensor] = None,
                    y_sq: Union[None, float, Tensor] = None, tol: float = 1e-5, path_ratio: float = 0.6,
                    max_bisections: int = 30, max_sweeps: int = 10_000, lambda_min_ratio: float = 1e-7,
                    return_info: bool = False, eliminate_unpenalized: bool = True, check_psd: bool = True):
    """The ``k`` coordinates the LASSO path selects, as sorted indices (exact budget).

    Walks lambda down from :func:`lambda_max` (steps of at most ``path_ratio``), warm-starting each solve
    from the previous one, until at least ``k`` penalised coordinates are non-zero; then narrows the bracket
    between the last lambda with fewer and the first with at least ``k`` non-zeros (regula falsi and
    bisection in log lambda), stopping at exactly ``k``, at a bracket 0.1% wide, or after ``max_bisections``;
    keeps the ``k`` largest |beta| of that solution. The whole path is one call of
    :func:`gnnaccel.ops.lasso_select` (on CPU each lambda is solved on a working set). Unpenalised
    coordinates (penalty 0) are optimised with the rest but never counted or returned. If even
    ``lambda_max * lambda_min_ratio`` leaves fewer than ``k`` non-zeros (rank of G below k), the rest are
    filled by |gradient| / penalty (the coordinates next to enter), then by index. ``y_sq`` (||Y||^2, default
    1'G1 for q = G 1) and ``tol`` set the solver's stopping rule (gap <= tol * y_sq). With ``return_info``
    returns ``(indices, info)``; info holds lam, beta, nnz, solves and sweeps.

    ``check_psd=False`` skips the op's O(c^3) PSD certificate of G (:func:`gnnaccel.ops.lasso_select`), for
    a G that is PSD by construction (prune's Grams of second moments); its cheaper checks still run.

    ``eliminate_unpenalized`` (default): with unpenalised coordinates, run the path on the exact reduced
    LASSO over the penalised coordinates only (:class:`UnpenalizedReduction`, a Schur complement) instead of
    carrying the unpenalised block through every solve; same lambdas, same stopping rule (tol relative to
    the full ||Y||^2), same selection up to the solver tolerance, and much faster when the unpenalised block
    is large (batched scheme, layer 0: half of 2 x #features coordinates). ``info["beta"]`` is the full beta
    either way.
    """
    G, q, p = _check_gram(G, q, penalty, values=False, ones=False)
    num_penalised = G.shape[0] if p is None else int((p > 0).sum())
    k = _check_k(k, num_penalised)
    if not 0 < path_ratio < 1:
        raise ValueError(f"path_ratio must be in (0, 1), got {path_ratio}")
    if y_sq is not None:
        y_sq = float(y_sq)
        if not (math.isfinite(y_sq) and y_sq >= 0):
            raise ValueError(f"y_sq must be finite and >= 0, got {y_sq}")
    # (a default y_sq of a non-finite G is left to the op, whose message names G)
    if eliminate_unpenalized and num_penalised < G.shape[0]:
        G, q, p = _check_gram(G, q, p)  # the reduction factorises G: its values first
        y_sq_t = G.sum() if y_sq is None else torch.tensor(y_sq, dtype=torch.float64)
        t0 = time.perf_counter()
        red = UnpenalizedReduction(G, q, p, y_sq_t)
        reduce_s = time.perf_counter() - t0
        # Same absolute stopping threshold tol * ||Y||^2 as the full problem (the gaps agree at the point
        # where the unpenalised block is optimal).
        tol_r = tol * float(y_sq_t) / float(red.y_sq) if float(red.y_sq) > 0 else tol
        chosen_r, info_r = select_channels(red.G, red.q, k, red.penalty, red.y_sq, tol_r, path_ratio,
                                           max_bisections, max_sweeps, lambda_min_ratio, return_info=True,
                                           check_psd=check_psd)
        chosen = torch.sort(red.kept[chosen_r]).values
        if return_info:
            info_r.update(beta=red.full_beta(info_r["beta"]), reduced_size=int(red.kept.numel()),
                          reduce_factor=red.factor, reduce_s=reduce_s)
            return chosen, info_r
        return chosen
    chosen, beta, lam, nnz, solves, sweeps = lasso_select(
        G, q, k, p, y_sq, tol=tol, path_ratio=path_ratio, max_bisections=max_bisections, max_sweeps=max_sweeps,
        lambda_min_ratio=lambda_min_ratio, check_psd=check_psd)
    if return_info:
        return chosen, {"lam": float(lam), "beta": beta, "nnz": int(nnz), "solves": int(solves),
                        "sweeps": int(sweeps)}
    return chosen
