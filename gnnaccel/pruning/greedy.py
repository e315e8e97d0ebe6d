"""Greedy channel selection on the refit's own objective: forward selection, then best-improvement single
exchanges (swaps), scored from the second moment S and the weights (see :func:`select_greedy`).
"""
from __future__ import annotations

import math
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._checks import all_finite, check_k as _check_k
from ._symmetric import add_upper_product_, mirror_upper_
from .gram import _check_moment, _placed_weights, _stacked_shape
from ..threads import intra_op_threads
from .refit import _column_groups


def select_greedy(S: Tensor, weights: Sequence[Tensor], k: int, form: str = "sum",
                  branch_cols: Optional[Sequence[Tensor]] = None, metric: Optional[Tensor] = None,
                  keep_whole: Optional[int] = None, ridge: float = 1e-6, max_swaps: Optional[int] = None,
                  initial: Optional[Sequence[Tensor]] = None, return_explained: bool = False,
                  swap_tol: float = None, progress: bool = False):
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

    Then swaps: while exchanging one kept unit for one dropped unit lowers the objective by more than
    ``swap_tol`` (default :data:`SWAP_STOP_RTOL`) times the objective itself (the error the refit leaves),
    make the best such exchange, at most ``max_swaps`` times (default ``k``). ``swap_tol=0`` runs the
    exhaustive search (every improving exchange, down to rounding: :data:`SWAP_RTOL` of what the kept units
    explain). Forward selection alone can keep a channel that looked best early and is
    redundant once others are in (it then misses an output that k channels reproduce exactly); the swaps
    end in a set no single exchange improves by more than that share. Each round scores all k x (units - k)
    exchanges from the explicit inverse of the kept block (a removal is a rank-``nb`` update of the residual
    and of every unit's Schur block), kept up to date by rank-``nb`` updates. Problems of at most
    :data:`SINGLE_THREAD_PAIRS` unit x kept pairs run on one intra-op thread (their many small tensor
    operations are slower on several). ``progress``: a tqdm bar over the swap rounds (interactive only).

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
    sel = _GreedySelection(S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps, swap_tol,
                           progress)
    with sel.threads():
        picks = sel.forward() if initial is None else sel.units_of(initial)
        picks, explained = sel.refine(picks, return_explained)
    return (sel.keeps_of(picks), explained) if return_explained else sel.keeps_of(picks)


def select_greedy_or_refined(S: Tensor, weights: Sequence[Tensor], k: int, start: Sequence[Tensor],
                             form: str = "sum", branch_cols: Optional[Sequence[Tensor]] = None,
                             metric: Optional[Tensor] = None, keep_whole: Optional[int] = None,
                             ridge: float = 1e-6, max_swaps: Optional[int] = None, swap_tol: float = None,
                             progress: bool = False) -> Tuple[List[Tensor], bool]:
    """The better of :func:`select_greedy` and ``start`` (kept channels per branch, e.g. the LASSO's
    selection) refined by the same swaps: the one whose refit explains more (``start`` on ties), and
    whether it was ``start``'s. Same as two :func:`select_greedy` calls (``initial=start`` in the second),
    but the per-group moments and the kept-whole elimination are built once."""
    sel = _GreedySelection(S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps, swap_tol,
                           progress)
    with sel.threads():
        forward, explained = sel.refine(sel.forward(), True, "swaps (greedy start)")
        refined, explained_start = sel.refine(sel.units_of(start), True, "swaps (given start)")
    start_won = explained_start >= explained
    return sel.keeps_of(refined if start_won else forward), start_won


class _GreedySelection:
    """Arguments of :func:`select_greedy` checked, and the states of its column groups."""

    def __init__(self, S, weights, k, form, branch_cols, metric, keep_whole, ridge, max_swaps, swap_tol=None,
                 progress=False):
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
        self.swap_tol = SWAP_STOP_RTOL if swap_tol is None else swap_tol
        if isinstance(self.swap_tol, bool) or not isinstance(self.swap_tol, (int, float)) or not (
                0 <= self.swap_tol < 1):
            raise ValueError(f"swap_tol must be a number in [0, 1), got {swap_tol!r}")
        self.progress = bool(progress)
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

    def threads(self):
        """Context: one intra-op thread for a problem of at most SINGLE_THREAD_PAIRS unit x kept pairs."""
        return intra_op_threads(1 if self.num_units * max(self.k, 1) <= SINGLE_THREAD_PAIRS else None)

    def refine(self, picks: List[int], with_explained: bool, desc: str = "swaps") -> Tuple[List[int], Optional[float]]:
        """``picks`` after the swaps, and (``with_explained``) what they explain."""
        prepared = False
        if self.max_swaps and 0 < self.k < self.num_units and self.groups:
            for state in self.groups:
                state.prepare_swaps(picks)
            prepared = True
            from tqdm.auto import tqdm

            with tqdm(total=self.max_swaps, desc=desc, unit="round", leave=False,
                      disable=not (self.progress and sys.stderr.isatty())) as bar:
                picks = _swap_refine(self.groups, picks, self.num_units, self.max_swaps, self.swap_tol, bar)
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
# Default stop of the swaps: the best exchange lowers the objective (the squared error the refit leaves) by
# at most this share of it, i.e. the relative output error by at most ~0.05%. The exhaustive search
# (swap_tol=0) spends most of its rounds on such exchanges (benchmarks/RESULTS.md, "Fast default pruning").
SWAP_STOP_RTOL = 1e-3
# Selections of at most this many unit x kept pairs run on one intra-op thread: a swap round is a few dozen
# elementwise operations on [units, kept] tensors, which on a shared machine wait longer for the thread
# pool than they compute (benchmarks/RESULTS.md, "Fast default pruning").
SINGLE_THREAD_PAIRS = 1 << 22




def _objective(groups: List["_GreedyGroup"]) -> float:
    """The refit objective of the prepared kept set: output energy minus what the kept units (and a kept-whole
    branch) explain, summed over groups (>= 0 up to rounding and the ridge)."""
    return max(0.0, sum(g.energy - g.fixed for g in groups) - _explained(groups))


def _swap_refine(groups: List["_GreedyGroup"], picks: List[int], num_units: int, max_swaps: int,
                 swap_tol: float, bar=None) -> List[int]:
    """Best-improvement single exchanges (see :func:`select_greedy`) from states prepared for ``picks``,
    while the best one lowers the objective by more than ``swap_tol`` times the objective (and by more than
    ``SWAP_RTOL`` of what the kept units explain); returns the new picks."""
    picks = list(picks)
    for _ in range(max_swaps):
        explained = _explained(groups)
        tol = max(SWAP_RTOL * explained, swap_tol * _objective(groups))
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
        if bar is not None:
            bar.update(1)
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


def _trace_solve_entries(D: dict, Q: dict, nb: int) -> Tensor:
    """tr(D^-1 Q) of symmetric nb x nb blocks given entry-wise (``D[a, b]``, ``Q[a, b]`` for a <= b, each a
    tensor of the same shape); 0 where D is not positive definite."""
    if nb == 1:
        return (Q[0, 0] / D[0, 0]).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    if nb == 2:
        a, b, c = D[0, 0], D[0, 1], D[1, 1]
        det = a * c - b * b
        out = (c * Q[0, 0] - 2 * b * Q[0, 1] + a * Q[1, 1]) / det
        return out.masked_fill(~((a > 0) & (det > 0)), 0.0)
    full = [[D[min(i, j), max(i, j)] for j in range(nb)] for i in range(nb)]
    qfull = [[Q[min(i, j), max(i, j)] for j in range(nb)] for i in range(nb)]
    return _trace_solve(torch.stack([torch.stack(row, -1) for row in full], -2),
                        torch.stack([torch.stack(row, -1) for row in qfull], -2))


# Unit x pick pairs scored at once per chunk of units in a swap round (bounds the round's temporaries to a
# few dozen tensors of this many float64 entries).
SWAP_CHUNK_PAIRS = 1 << 20


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
        # ||Y_g M_g||^2 / n, the objective with nothing kept; `fixed`: what the kept-whole branch explains
        self.energy, self.fixed = float((target[coords] * T).sum()), 0.0
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
            self.fixed = float((XT * XT).sum())
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
        products R_j R_j', R_j y' and y y' so that nothing [units, picks, m] is formed; each entry of the
        nb x nb blocks is one [units, picks] tensor (nb is the number of branches of the group, 1 or 2 in
        practice: a batched matmul over units x picks tiny blocks is many times slower), over chunks of
        units of at most ``SWAP_CHUNK_PAIRS`` pairs. Picks absent from this group leave it unchanged (j's
        plain gain, no loss)."""
        dev = self.A.device
        c = self.coords  # [units, nb]
        nb = c.shape[1]
        Rc = self.R[c]  # [units, nb, m]
        RR = Rc @ Rc.transpose(1, 2)  # [units, nb, nb]
        present = [i for i, u in enumerate(picks) if u in self.row_of_unit]
        base = _trace_solve(self.D, RR)  # the gain of each unit with nothing removed
        part = base.unsqueeze(1).expand(-1, len(picks)).clone()
        if present:
            first = {x: pos for pos, x in enumerate(self.J)}
            slots = torch.tensor([[first[int(x)] for x in c[self.row_of_unit[picks[i]]].tolist()] for i in present],
                                 dtype=torch.long, device=dev)  # [r, nb]
            r = slots.shape[0]
            L = _cholesky_pd(self.W[slots.unsqueeze(2), slots.unsqueeze(1)])  # [r, nb, nb]
            y = torch.linalg.solve_triangular(L, self.beta[slots], upper=False)  # [r, nb, m]
            F = torch.linalg.solve_triangular(L, self.E[:, slots].permute(1, 2, 0), upper=False)  # [r, nb, p]
            yy = y @ y.transpose(1, 2)  # [r, nb, nb]
            loss = (y * y).sum((1, 2))
            y_flat = y.reshape(r * nb, -1).T  # [m, r * nb]
            cols = torch.tensor(present, dtype=torch.long, device=dev)
            units = c.shape[0]
            step = max(1, SWAP_CHUNK_PAIRS // max(1, r))
            for u0 in range(0, units, step):
                cu = c[u0:u0 + step]
                n_u = cu.shape[0]
                # f[a][b] = F_j[a, b] for unit j's coordinate a and the removed pick's coordinate b: [n_u, r]
                f = [[F[:, b, cu[:, a]].T for b in range(nb)] for a in range(nb)]
                Cr = (Rc[u0:u0 + step].reshape(n_u * nb, -1) @ y_flat).view(n_u, nb, r, nb)  # R_j y_i'
                X = [[sum(f[a][b] * Cr[:, a2, :, b] for b in range(nb)) for a2 in range(nb)] for a in range(nb)]
                fy = [[sum(f[a][b] * yy[:, b, b2] for b in range(nb)) for b2 in range(nb)] for a in range(nb)]
                Q, Dr = {}, {}
                for a in range(nb):
                    for a2 in range(a, nb):
                        Q[a, a2] = (RR[u0:u0 + step, a, a2].unsqueeze(1) + X[a][a2] + X[a2][a]
                                    + sum(fy[a][b2] * f[a2][b2] for b2 in range(nb)))
                        Dr[a, a2] = (self.D[u0:u0 + step, a, a2].unsqueeze(1)
                                     + sum(f[a][b] * f[a2][b] for b in range(nb)))
                part[u0:u0 + step, cols] = _trace_solve_entries(Dr, Q, nb) - loss.unsqueeze(0)
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
