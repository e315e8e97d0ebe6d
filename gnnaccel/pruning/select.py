"""Channel selection under an exact budget: LASSO path (the method), greedy forward selection, and the
random / magnitude baselines.

The LASSO works on (G, q) from :func:`gnnaccel.pruning.gram_from_moments`, where a kept channel's
contribution can only be rescaled; ``penalty`` marks unpenalised coordinates (0), which are always kept and
are NOT counted in ``k`` -- the returned indices are the ``k`` selected penalised coordinates only (sorted).
Dead coordinates (G_ii <= 0) can never enter a LASSO solution; they are only returned when fewer than ``k``
alive coordinates exist. The greedy selection (:func:`select_greedy`) works on the second moment S and the
weights directly and scores a candidate by the error of the least-squares refit that follows the selection.
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import all_finite, is_symmetric
from ._symmetric import add_upper_product_, mirror_upper_
from .gram import _check_moment, _placed_weights, _stacked_shape
from .refit import _column_groups
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
    route costs ~c_U^3 / 3 flops against an eigendecomposition for the pseudo-inverse (30-50x slower at
    c_U = 3703 on this machine). Penalised coordinates whose Schur diagonal is below
    ``SCHUR_DEAD_RTOL * G_ii`` are set dead in G' (row, column and q' entry 0).
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


def select_greedy(S: Tensor, weights: Sequence[Tensor], k: int, form: str = "sum",
                  branch_cols: Optional[Sequence[Tensor]] = None, metric: Optional[Tensor] = None,
                  keep_whole: Optional[int] = None, ridge: float = 1e-6, max_swaps: Optional[int] = None,
                  initial: Optional[Sequence[Tensor]] = None, return_explained: bool = False):
    """Forward selection on the refit objective: repeatedly keep the input channel whose addition most
    reduces the error the least-squares refit (:func:`gnnaccel.pruning.refit`) leaves, computed from ``S``.

    For kept coordinates J of a column group (branches writing shared output columns, refit jointly; a
    concat-form branch is its own group) the refit leaves ||(I - P_J) Y_g M_g||^2 / n =
    tr(T_g' S_gg^-1 T_g) - tr(T_J' S_JJ^-1 T_J) with T = S W_all[:, cols_g] M_g, P_J the projection onto
    the kept inputs and M_g the rows of ``metric`` [d, m] for the group's columns (the identity without
    one). The objective is the sum over groups (cross-group terms of a metric are left out: the refit
    cannot trade error between groups). Adding channel j (its coordinates a in every group) lowers it by
    tr(R_a' D_a^-1 R_a), R = the residual cross moment T - S_:J S_JJ^-1 T_J and D_a the Schur complement
    of S on a given J; both are kept up to date by Cholesky row updates V <- [V; L_a^-1 (S_a: - V_:a'V)]
    with L_a L_a' = D_a: O(|J| p) per step and group of p coordinates. Unlike the LASSO's Gram (each kept
    channel only rescaled), this is the error of the refit that follows the selection.

    Then swaps: while exchanging one kept unit for one dropped unit lowers the objective (by more than
    ``SWAP_RTOL`` of what the kept units explain), make the best such exchange, at most ``max_swaps``
    times (default ``k``). Forward selection alone can keep a channel that looked best early and is
    redundant once others are in (it then misses an output that k channels reproduce exactly); the swaps
    end in a set no single exchange improves. Each round scores all k x (units - k) exchanges from the
    explicit inverse of the kept block (a removal is a rank-``nb`` update of the residual and of every
    unit's Schur block), kept up to date by rank-``nb`` updates.

    ``initial`` (kept channels per branch, e.g. a LASSO selection): skip the forward selection and refine
    that set by swaps. ``return_explained``: also return what the kept set explains, tr(T_J' S_JJ^-1 T_J)
    summed over groups (the objective is the output energy minus this, so of two selections of one layer
    the one explaining more leaves the lower refit error).

    ``S`` [B*c, B*c]: moment of the stacked branch inputs (about the mean for a refit with an intercept);
    ``weights`` [c, d_b] per branch, ``form`` / ``branch_cols`` as in :func:`gram_from_moments`. ``ridge``
    (relative to each group's mean diagonal) keeps every Schur complement positive definite (dead
    channels then gain nothing and come last, by index). ``keep_whole``: index of a branch kept whole (the
    batched scheme's self branch): its coordinates are in J from the start (eliminated up front by a
    Schur complement), and every other branch selects ``k`` channels on its own (coordinates chosen
    jointly, ``k`` per branch on average as in :func:`select_channels`' branch layout: ``k * (B - 1)`` in
    all). Returns the kept channel indices per branch, sorted (scheme full: the same for every branch).
    """
    sel = _GreedySelection(S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps)
    picks = sel.forward() if initial is None else sel.units_of(initial)
    picks, explained = sel.refine(picks, return_explained)
    return (sel.keeps_of(picks), explained) if return_explained else sel.keeps_of(picks)


def select_greedy_or_refined(S: Tensor, weights: Sequence[Tensor], k: int, start: Sequence[Tensor],
                             form: str = "sum", branch_cols: Optional[Sequence[Tensor]] = None,
                             metric: Optional[Tensor] = None, keep_whole: Optional[int] = None,
                             ridge: float = 1e-6, max_swaps: Optional[int] = None) -> Tuple[List[Tensor], bool]:
    """The better of :func:`select_greedy` and ``start`` (kept channels per branch, e.g. the LASSO's
    selection) refined by the same swaps: the one whose refit explains more (``start`` on ties), and
    whether it was ``start``'s. Same as two :func:`select_greedy` calls (``initial=start`` in the second),
    but the per-group moments and the kept-whole elimination are built once."""
    sel = _GreedySelection(S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps)
    forward, explained = sel.refine(sel.forward(), True)
    refined, explained_start = sel.refine(sel.units_of(start), True)
    start_won = explained_start >= explained
    return sel.keeps_of(refined if start_won else forward), start_won


class _GreedySelection:
    """Arguments of :func:`select_greedy` checked, and the states of its column groups."""

    def __init__(self, S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps):
        S = _check_moment(S)
        placed, cols, d = _placed_weights(weights, form, branch_cols)
        B, c = _stacked_shape(S, placed)
        if keep_whole is not None and not (isinstance(keep_whole, int) and 0 <= keep_whole < B and B > 1):
            raise ValueError(f"keep_whole must be a branch index in [0, {B}) of a layer with several branches, "
                             f"got {keep_whole!r}")
        if not (isinstance(ridge, (int, float)) and ridge > 0 and math.isfinite(ridge)):
            raise ValueError(f"ridge must be a finite number > 0 (it keeps the Schur complements positive "
                             f"definite), got {ridge!r}")
        self.B, self.c, self.keep_whole = B, c, keep_whole
        self.penalised = [b for b in range(B) if b != keep_whole]
        self.num_units = c * len(self.penalised) if keep_whole is not None else c
        self.k = _check_k(k, self.num_units)
        self.max_swaps = self.k if max_swaps is None else max_swaps
        if isinstance(self.max_swaps, bool) or not isinstance(self.max_swaps, int) or self.max_swaps < 0:
            raise ValueError(f"max_swaps must be an int >= 0, got {max_swaps!r}")
        if metric is not None:
            if not isinstance(metric, Tensor) or metric.dim() != 2 or metric.shape[0] != d:
                raise ValueError(f"metric must be [{d}, m] (rows = the layer's output columns), got "
                                 f"{list(getattr(metric, 'shape', []))}")
            if not all_finite(metric):
                raise ValueError("metric contains NaN or Inf")
            metric = metric.double().to(S.device)
        if not all_finite(S):
            raise ValueError("S contains NaN or Inf (non-finite activations?)")
        W_all = torch.cat(placed, 0).to(S.device)
        self.groups = []
        for group in _column_groups(cols):
            gcols = torch.unique(torch.cat([cols[b] for b in group])).to(S.device)
            target = W_all[:, gcols] if metric is None else W_all[:, gcols] @ metric[gcols]
            state = _GreedyGroup(S, target, group, c, self.penalised, keep_whole, ridge)
            if state.units.numel():
                self.groups.append(state)

    def forward(self) -> List[int]:
        return _forward(self.groups, self.k, self.num_units)

    def units_of(self, keeps: Sequence[Tensor]) -> List[int]:
        return _units_of_keeps(keeps, self.keep_whole, self.penalised, self.B, self.c, self.k)

    def refine(self, picks: List[int], with_explained: bool) -> Tuple[List[int], Optional[float]]:
        """``picks`` after the swaps, and (``with_explained``) what they explain."""
        prepared = False
        if self.max_swaps and 0 < self.k < self.num_units and self.groups:
            for state in self.groups:
                state.prepare_swaps(picks)
            prepared = True
            picks = _swap_refine(self.groups, picks, self.num_units, self.max_swaps,
                                 SWAP_RTOL * _explained(self.groups))
        if with_explained and not prepared:
            for state in self.groups:
                state.prepare_swaps(picks)
        return picks, (_explained(self.groups) if with_explained else None)

    def keeps_of(self, picks: List[int]) -> List[Tensor]:
        """Kept channels per branch of unit ids (scheme full: the same for every branch)."""
        picks = torch.tensor(picks, dtype=torch.long)
        if self.keep_whole is None:
            return [torch.sort(picks).values] * self.B
        keeps = []
        for b in range(self.B):
            if b == self.keep_whole:
                keeps.append(torch.arange(self.c))
            else:
                p = self.penalised.index(b)
                keeps.append(torch.sort(picks[(picks >= p * self.c) & (picks < (p + 1) * self.c)] - p * self.c).values)
        return keeps


def _forward(groups: List["_GreedyGroup"], k: int, num_units: int) -> List[int]:
    """Forward selection of ``k`` units (see :func:`select_greedy`)."""
    chosen = torch.zeros(num_units, dtype=torch.bool)
    picks = []
    for _ in range(k):
        gain = torch.zeros(num_units, dtype=torch.float64, device=groups[0].A.device if groups else "cpu")
        for state in groups:
            gain.index_add_(0, state.units, state.gains())
        gain = gain.cpu()
        gain[chosen] = -math.inf
        u = int(torch.argmax(gain))  # the first maximum: ties (e.g. dead channels) go to the lower index
        chosen[u] = True
        picks.append(u)
        for state in groups:
            state.add(u)
    return picks


def _units_of_keeps(initial: Sequence[Tensor], keep_whole: Optional[int], penalised: List[int], B: int, c: int,
                    k: int) -> List[int]:
    """Unit ids of a starting selection given as kept channels per branch (as :func:`select_greedy` returns)."""
    if len(initial) != B:
        raise ValueError(f"initial must hold one kept-channel tensor per branch ({B}), got {len(initial)}")
    initial = [torch.as_tensor(kb, dtype=torch.long).flatten().cpu() for kb in initial]
    if any(kb.numel() and (int(kb.min()) < 0 or int(kb.max()) >= c) for kb in initial):
        raise ValueError(f"initial holds channel indices outside [0, {c})")
    if keep_whole is None:
        units = torch.as_tensor(initial[0], dtype=torch.long).flatten()
        if any(not torch.equal(torch.sort(torch.as_tensor(kb, dtype=torch.long).flatten()).values,
                               torch.sort(units).values) for kb in initial):
            raise ValueError("initial: every branch must keep the same channels (one unit = one channel)")
    else:
        units = torch.cat([penalised.index(b) * c + torch.as_tensor(initial[b], dtype=torch.long).flatten()
                           for b in penalised])
    if units.numel() != k or torch.unique(units).numel() != k:
        raise ValueError(f"initial must select {k} distinct units, got {units.numel()} "
                         f"({torch.unique(units).numel()} distinct)")
    return units.tolist()


def _explained(groups: List["_GreedyGroup"]) -> float:
    """What the kept units explain, summed over groups: tr(T_J' A_JJ^-1 T_J) from the prepared states."""
    total = 0.0
    for state in groups:
        if state.J:
            J = torch.tensor(state.J, dtype=torch.long, device=state.A.device)
            total += float((state.beta * state.T[J]).sum())
    return total


# A swap must lower the refit objective by more than this share of what the kept units explain (rounding
# must not make two equivalent sets trade places forever).
SWAP_RTOL = 1e-9


def _swap_refine(groups: List["_GreedyGroup"], picks: List[int], num_units: int, max_swaps: int,
                 tol: float) -> List[int]:
    """Best-improvement single exchanges (see :func:`select_greedy`) from states prepared for ``picks``;
    returns the new picks."""
    picks = list(picks)
    for _ in range(max_swaps):
        # net[j, i]: how much the objective falls when kept unit picks[i] leaves and unit j enters
        net = torch.zeros(num_units, len(picks), dtype=torch.float64, device=groups[0].A.device)
        for state in groups:
            state.add_swap_scores(net, picks)
        net = net.cpu()
        net[torch.tensor(picks)] = -math.inf
        flat = int(torch.argmax(net))  # first maximum: ties go to the lower unit, then the earlier pick
        j, i = divmod(flat, len(picks))
        if not float(net[j, i]) > tol:
            break
        for state in groups:
            state.swap(picks[i], j)
        picks[i] = j
    return picks


def _cholesky_pd(D: Tensor) -> Tensor:
    """Cholesky factors of (a batch of) small Schur blocks that are positive definite up to rounding (the
    ridge keeps them so); rounding that tips one over gets a diagonal shift of the size of that rounding."""
    L, info = torch.linalg.cholesky_ex(D)
    if bool((info != 0).any()):
        shift = 1e-12 * float(D.diagonal(dim1=-2, dim2=-1).abs().max()) + 1e-300
        L = torch.linalg.cholesky(D + shift * torch.eye(D.shape[-1], dtype=D.dtype, device=D.device))
    return L


def _trace_solve(D: Tensor, Q: Tensor) -> Tensor:
    """tr(D^-1 Q) over batches of small nb x nb blocks (D positive definite; 0 where it is not)."""
    if D.shape[-1] == 1:
        return (Q[..., 0, 0] / D[..., 0, 0]).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    if D.shape[-1] == 2:  # closed form (two-branch layers): batched 2 x 2 factorisations are slow in torch
        a, b, c = D[..., 0, 0], D[..., 0, 1], D[..., 1, 1]
        det = a * c - b * b
        out = (c * Q[..., 0, 0] - b * (Q[..., 0, 1] + Q[..., 1, 0]) + a * Q[..., 1, 1]) / det
        return out.masked_fill(~((a > 0) & (det > 0)), 0.0)
    L, info = torch.linalg.cholesky_ex(D)
    out = torch.cholesky_solve(Q, L).diagonal(dim1=-2, dim2=-1).sum(-1)
    return out.masked_fill(info != 0, 0.0)


class _GreedyGroup:
    """Forward-selection state of one column group (see :func:`select_greedy`): its coordinates' moment
    (ridge added; the kept-whole branch eliminated), the residual cross moment R, the Schur diagonal blocks
    D of every unit and the Cholesky rows V of the kept coordinates."""

    def __init__(self, S: Tensor, target: Tensor, group: List[int], c: int, penalised: List[int],
                 keep_whole: Optional[int], ridge: float):
        dev = S.device
        coords = torch.cat([b * c + torch.arange(c, device=dev) for b in group])
        A = S[coords.unsqueeze(1), coords]
        scale = float(A.diagonal().mean())
        A.diagonal().add_(ridge * scale if scale > 0 else ridge)
        T = S[coords] @ target
        if keep_whole in group:  # condition on the kept-whole branch: Schur complement of its block
            w = group.index(keep_whole)
            U = torch.arange(w * c, (w + 1) * c, device=dev)
            P = torch.cat([torch.arange(0, w * c), torch.arange((w + 1) * c, len(group) * c)]).to(dev)
            L = torch.linalg.cholesky(A[U.unsqueeze(1), U])
            X = torch.linalg.solve_triangular(L, torch.cat([A[U.unsqueeze(1), P], T[U]], 1), upper=False)
            XP, XT = X[:, :P.numel()], X[:, P.numel():]
            A_P = A[P.unsqueeze(1), P]
            add_upper_product_(A_P, XP, XP, alpha=-1.0)
            mirror_upper_(A_P)
            A, T = A_P, T[P] - XP.T @ XT
            group = [b for b in group if b != keep_whole]
        self.A, self.R, self.T = A, T, T
        if keep_whole is None:  # a unit is a channel: one coordinate in each branch of the group
            self.units = torch.arange(c, device=dev)
            self.coords = (torch.arange(c, device=dev).unsqueeze(1)
                           + c * torch.arange(len(group), device=dev).unsqueeze(0))
        else:  # a unit is one (penalised branch, channel) coordinate, numbered penalised.index(b) * c + j
            self.units = torch.tensor([penalised.index(b) * c + j for b in group for j in range(c)],
                                      dtype=torch.long, device=dev)
            self.coords = torch.arange(len(group) * c, device=dev).unsqueeze(1)
        self.row_of_unit = {int(u): i for i, u in enumerate(self.units.tolist())}
        self.D = A[self.coords.unsqueeze(2), self.coords.unsqueeze(1)].clone()  # [units, nb, nb]
        self.V = A.new_zeros(0, A.shape[0])
        self.taken = torch.zeros(self.units.numel(), dtype=torch.bool, device=dev)

    def gains(self) -> Tensor:
        """What adding each unit would explain, tr(D_u^-1 R_u R_u'); 0 for the kept ones."""
        r = self.R[self.coords]  # [units, nb, m]
        out = _trace_solve(self.D, r @ r.transpose(1, 2))
        out[self.taken] = 0
        return out

    def add(self, unit: int):
        i = self.row_of_unit.get(unit)
        if i is None:
            return
        a = self.coords[i]
        rows = self.A[a] - self.V[:, a].T @ self.V  # the Schur rows S_a: - S_aJ S_JJ^-1 S_J:
        L = _cholesky_pd(rows[:, a])
        new = torch.linalg.solve_triangular(L, rows, upper=False)
        self.R = self.R - new.T @ torch.linalg.solve_triangular(L, self.R[a], upper=False)
        part = new[:, self.coords]  # [nb, units, nb]
        self.D -= torch.einsum("iuj,iuk->ujk", part, part)
        self.V = torch.cat([self.V, new])
        self.taken[i] = True

    def prepare_swaps(self, chosen_units: List[int]):
        """Explicit-inverse form of the kept set J (the chosen units' coordinates here), kept up to date by
        rank-nb updates through the swaps: W = A_JJ^-1, beta = W T_J, E = A_:J W, R = T - E T_J and the
        Schur blocks D = A_jj - A_jJ W A_Jj of every unit j. ``J`` lists the kept coordinates in the order
        of W's rows (:meth:`_slot` gives a kept unit's rows)."""
        self.J = [int(x) for u in chosen_units if u in self.row_of_unit
                  for x in self.coords[self.row_of_unit[u]].tolist()]
        J = torch.tensor(self.J, dtype=torch.long, device=self.A.device)
        self.W = torch.cholesky_inverse(_cholesky_pd(self.A[J.unsqueeze(1), J])) if self.J else \
            self.A.new_zeros(0, 0)
        self.beta = self.W @ self.T[J]
        self.E = self.A[:, J] @ self.W
        self.R = self.T - self.E @ self.T[J]
        c = self.coords  # [units, nb]
        self.D = self.A[c.unsqueeze(2), c.unsqueeze(1)] - self.E[c] @ self.A[c.unsqueeze(2), J.view(1, 1, -1)] \
            .transpose(1, 2)

    def _slot(self, unit: int) -> Optional[Tensor]:
        i = self.row_of_unit.get(unit)
        if i is None:
            return None
        first = self.J.index(int(self.coords[i, 0]))
        return torch.arange(first, first + self.coords.shape[1], device=self.A.device)

    def add_swap_scores(self, net: Tensor, picks: List[int]):
        """net[j, i] += (gain of unit j once picks[i] has left) - (what picks[i] explained), this group's
        part, for every pair at once. Removing a (its rows of W; L L' = W_aa, y = L^-1 beta_a,
        F = E_:a L^-T) raises the objective by ||y||^2 and changes R_j to R_j + F_j y and D_j to
        D_j + F_j F_j'; the gain of j is then tr(D_j^-1 R_j R_j') with those. Written with the nb x nb
        products R_j R_j', R_j y' and y y' so that nothing [units, picks, m] is formed. Picks absent from
        this group leave it unchanged (j's plain gain, no loss)."""
        dev = self.A.device
        c = self.coords  # [units, nb]
        Rc = self.R[c]  # [units, nb, m]
        RR = Rc @ Rc.transpose(1, 2)  # [units, nb, nb]
        present = [i for i, u in enumerate(picks) if u in self.row_of_unit]
        base = _trace_solve(self.D, RR)  # the gain of each unit with nothing removed
        part = base.unsqueeze(1).expand(-1, len(picks)).clone()
        if present:
            first = {x: pos for pos, x in enumerate(self.J)}
            slots = torch.tensor([[first[int(x)] for x in c[self.row_of_unit[picks[i]]].tolist()] for i in present],
                                 dtype=torch.long, device=dev)  # [r, nb]
            L = _cholesky_pd(self.W[slots.unsqueeze(2), slots.unsqueeze(1)])  # [r, nb, nb]
            y = torch.linalg.solve_triangular(L, self.beta[slots], upper=False)  # [r, nb, m]
            F = torch.linalg.solve_triangular(L, self.E[:, slots].permute(1, 2, 0), upper=False)  # [r, nb, p]
            Fc = F[:, :, c].permute(2, 0, 3, 1)  # [units, r, nb_j, nb_i]
            Cr = torch.einsum("ujm,rkm->urjk", Rc, y)  # R_j y_i'
            Q = (RR.unsqueeze(1) + Fc @ Cr.transpose(2, 3) + Cr @ Fc.transpose(2, 3)
                 + Fc @ (y @ y.transpose(1, 2)).unsqueeze(0) @ Fc.transpose(2, 3))
            Dr = self.D.unsqueeze(1) + Fc @ Fc.transpose(2, 3)
            part[:, torch.tensor(present, dtype=torch.long, device=dev)] = (
                _trace_solve(Dr, Q) - (y * y).sum((1, 2)).unsqueeze(0))
        net.index_add_(0, self.units, part)

    def swap(self, out_unit: int, in_unit: int):
        """Replace ``out_unit`` by ``in_unit`` in J: a rank-nb removal, then a bordering addition."""
        a = self._slot(out_unit)
        if a is not None:
            keep = torch.ones(len(self.J), dtype=torch.bool, device=self.A.device)
            keep[a] = False
            Winv_aa = torch.linalg.inv(self.W[a.unsqueeze(1), a])
            W_ra = self.W[keep][:, a]
            self.R = self.R + self.E[:, a] @ (Winv_aa @ self.beta[a])
            Ec = self.E[self.coords][:, :, a]  # [units, nb, nb_out]
            self.D = self.D + Ec @ Winv_aa @ Ec.transpose(1, 2)
            self.beta = self.beta[keep] - W_ra @ (Winv_aa @ self.beta[a])
            self.E = self.E[:, keep] - self.E[:, a] @ (Winv_aa @ W_ra.T)
            self.W = self.W[keep][:, keep] - W_ra @ Winv_aa @ W_ra.T
            self.J = [x for x, k in zip(self.J, keep.tolist()) if k]
        i = self.row_of_unit.get(in_unit)
        if i is None:
            return
        b = self.coords[i]
        J = torch.tensor(self.J, dtype=torch.long, device=self.A.device)
        u = self.W @ self.A[J.unsqueeze(1), b]  # [|J|, nb]
        s_inv = torch.linalg.inv(self.D[i])
        v = self.A[:, b] - self.E @ self.A[J.unsqueeze(1), b]  # Schur columns [p, nb]
        r_b = self.R[b]
        self.beta = torch.cat([self.beta - u @ (s_inv @ r_b), s_inv @ r_b])
        self.R = self.R - v @ (s_inv @ r_b)
        self.E = torch.cat([self.E - v @ s_inv @ u.T, v @ s_inv], 1)
        self.W = torch.cat([torch.cat([self.W + u @ s_inv @ u.T, -u @ s_inv], 1),
                            torch.cat([-s_inv @ u.T, s_inv], 1)])
        vc = v[self.coords]  # [units, nb, nb]
        self.D = self.D - vc @ s_inv @ vc.transpose(1, 2)
        self.J = self.J + b.tolist()


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
