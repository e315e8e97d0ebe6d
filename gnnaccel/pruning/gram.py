"""Gram form of the channel-selection LASSO, built from second moments of the stacked branch inputs.

Notation (DESIGN.md section 3). A layer has branches b = 0..B-1 with inputs Z_b [n, c] and weights W_b
[c, d_b] writing output columns cols_b of Y [n, d]. Stacking Z = [Z_0, ..., Z_{B-1}] [n, B*c], everything the
pruner needs is the second moment S = Z'Z / n [B*c, B*c] (block (b, b') = Z_b'Z_b' / n) and the weights.

Two coordinate layouts for the LASSO mask beta:

* ``"channel"`` (scheme full): coordinate i removes input channel i from every branch, i.e. the rank-1
  block C_i = sum_b z_{b,i} w~_{b,i}' where w~_{b,i} is row i of W_b placed in the columns cols_b.
  G_ij = sum_{b,b'} S[b i, b' j] <w~_{b,i}, w~_{b',j}>                         [c, c]
* ``"branch"`` (scheme batched, first layer): one coordinate per (branch, channel) at index b*c + i, with
  C_{b,i} = z_{b,i} w~_{b,i}'; G[(b,i), (b',j)] = S[b i, b' j] <w~_{b,i}, w~_{b',j}>        [B*c, B*c]
  Give the branches that are kept whole (the self branch) penalty 0 with :func:`branch_penalty`.

With the unpruned output as target, q = G 1 and ||Y||^2 / n = 1'G1 in both layouts. The shared-column
structure decides which (b, b') products survive: sum form (PyG SAGE, GCN) all pairs, concat form
(GraphSAINT) only b = b'.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import all_finite
from ._symmetric import add_upper_product_, mirror_upper_, upper_blocks

FORMS = ("sum", "concat")
LAYOUTS = ("channel", "branch")


class SecondMoment:
    """Streaming accumulator of S = sum_batches Z_batch' Z_batch in float64, with the row count n.

    ``update(Z)`` takes the stacked branch inputs of a batch [rows, B*c] (or the branch inputs as separate
    tensors ``update(Z_self, Z_neigh)``, stacked in that order). Memory O((B*c)^2), never O(n*c).
    ``moment`` is S / n, the matrix :func:`gram_from_moments` and :func:`refit` expect; ``mean`` the column
    means of Z (what the refit's bias absorbs, see :func:`~gnnaccel.pruning.refit.about_mean`).
    """

    def __init__(self, num_columns: int, device: Union[str, torch.device, None] = None):
        if not isinstance(num_columns, int) or num_columns <= 0:
            raise ValueError(f"num_columns must be a positive int, got {num_columns!r}")
        self.num_columns = num_columns
        # Z'Z accumulated on the blocks on and above the diagonal only (5/8 of a GEMM per batch); `sum` mirrors.
        self._upper = torch.zeros(num_columns, num_columns, dtype=torch.float64, device=device)
        self._column_sum = torch.zeros(num_columns, dtype=torch.float64, device=device)
        self.count = 0

    def update(self, *branch_inputs: Tensor) -> "SecondMoment":
        if not branch_inputs:
            raise ValueError("update() needs at least one tensor")
        for t in branch_inputs:
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ValueError(f"branch inputs must be 2-D tensors [rows, channels], got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        rows = {t.shape[0] for t in branch_inputs}
        if len(rows) != 1:
            raise ValueError(f"branch inputs of one batch must have the same number of rows, got {sorted(rows)}")
        z = branch_inputs[0] if len(branch_inputs) == 1 else torch.cat(branch_inputs, dim=1)
        if z.shape[1] != self.num_columns:
            raise ValueError(f"batch has {z.shape[1]} stacked columns but the accumulator was built for "
                             f"{self.num_columns}")
        z = z.to(device=self._upper.device, dtype=torch.float64)
        if not all_finite(z):
            raise ValueError("batch contains NaN or Inf activations")
        add_upper_product_(self._upper, z, z)
        self._column_sum += z.sum(dim=0)
        self.count += z.shape[0]
        return self

    @property
    def sum(self) -> Tensor:
        """Z'Z over the rows accumulated so far (exactly symmetric)."""
        return mirror_upper_(self._upper.clone())

    @property
    def moment(self) -> Tensor:
        if self.count == 0:
            raise ValueError("no rows accumulated yet")
        return mirror_upper_(self._upper / self.count)

    @property
    def mean(self) -> Tensor:
        """Column means of the stacked inputs [B*c]."""
        if self.count == 0:
            raise ValueError("no rows accumulated yet")
        return self._column_sum / self.count


def _check_moment(S: Tensor) -> Tensor:
    if not isinstance(S, Tensor) or S.dim() != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square matrix, got shape {list(getattr(S, 'shape', []))}")
    if not all_finite(S):
        raise ValueError("S contains NaN or Inf")
    return S.double()


def _stacked_shape(S: Tensor, placed) -> tuple:
    """(branches, channels) of the stacked branch inputs, checked against the second moment S."""
    B, c = len(placed), placed[0].shape[0]
    if S.shape[0] != B * c:
        raise ValueError(f"S is {S.shape[0]} x {S.shape[0]} but {B} branches of {c} channels stack to {B * c}")
    return B, c


def _placed_weights(branch_weights: Sequence[Tensor], form: str,
                    branch_cols: Optional[Sequence[Tensor]]) -> Tuple[List[Tensor], List[Tensor], int]:
    """Per branch: the weight placed into the full output width (zeros outside its columns), its columns, d."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    weights = [w.double() for w in branch_weights]
    if not weights:
        raise ValueError("branch_weights is empty")
    c = weights[0].shape[0]
    for b, w in enumerate(weights):
        if w.dim() != 2 or w.shape[0] != c:
            raise ValueError(f"branch weight {b} must be [{c}, out], got shape {list(w.shape)}")
    if branch_cols is None:
        if form == "sum":
            d = weights[0].shape[1]
            if any(w.shape[1] != d for w in weights):
                raise ValueError(f"sum form needs equal output widths, got {[w.shape[1] for w in weights]}")
            cols = [torch.arange(d) for _ in weights]
        else:
            starts = [0]
            for w in weights:
                starts.append(starts[-1] + w.shape[1])
            d = starts[-1]
            cols = [torch.arange(starts[b], starts[b + 1]) for b in range(len(weights))]
    else:
        cols = [torch.as_tensor(cl, dtype=torch.long) for cl in branch_cols]
        if len(cols) != len(weights):
            raise ValueError(f"{len(cols)} branch_cols for {len(weights)} branches")
        for b, (w, cl) in enumerate(zip(weights, cols)):
            if cl.numel() != w.shape[1]:
                raise ValueError(f"branch {b}: {cl.numel()} columns for a weight with {w.shape[1]} outputs")
        d = int(max(int(cl.max()) + 1 if cl.numel() else 0 for cl in cols))
    placed = []
    for w, cl in zip(weights, cols):
        full = torch.zeros(c, d, dtype=torch.float64, device=w.device)
        full[:, cl.to(w.device)] = w
        placed.append(full)
    return placed, cols, d


def gram_from_moments(S: Tensor, branch_weights: Sequence[Tensor], form: str = "sum", layout: str = "channel",
                      branch_cols: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """(G, q, y_sq) of the channel-selection LASSO with the unpruned output as target (q = G 1, y_sq = 1'G1).

    ``S`` [B*c, B*c]: second moment of the stacked branch inputs (:attr:`SecondMoment.moment`), branches in
    the order of ``branch_weights`` (each [c, d_b], [in, out] orientation as in ``LinearParts``). ``form``:
    "sum" (all branches write all columns) or "concat" (consecutive column blocks); ``branch_cols`` overrides
    both with explicit output columns per branch. To target only some output columns (the kept outputs
    when pruning backwards), slice the weights' columns first. Everything in float64.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    S = _check_moment(S)
    placed, _, _ = _placed_weights(branch_weights, form, branch_cols)
    B, c = _stacked_shape(S, placed)
    W = torch.cat(placed, dim=0).to(S.device)  # [B*c, d]
    # block (b, b') = S_bb' o (W~_b W~_b''), computed on the blocks on and above the diagonal and mirrored:
    # exactly symmetric (the solver reads rows as columns), at ~5/8 of the products and no transposed sum
    G_branch = torch.empty_like(S)
    for si, sj in upper_blocks(S.shape[0]):
        torch.mul(S[si, sj], W[si] @ W[sj].T, out=G_branch[si, sj])
    mirror_upper_(G_branch)
    if layout == "channel":  # summing the branch blocks reorders the additions: symmetrise again (c x c)
        G = G_branch.reshape(B, c, B, c).sum(dim=(0, 2))
        G = 0.5 * (G + G.T)
    else:
        G = G_branch
    q = G.sum(dim=1)
    return G, q, q.sum()


def cross_linear_term(T: Tensor, branch_weights: Sequence[Tensor], target_weights: Sequence[Tensor],
                      form: str = "sum", layout: str = "channel",
                      branch_cols: Optional[Sequence[Tensor]] = None) -> Tensor:
    """q for a target computed from other inputs: Y = sum_b' Z0_b' W0_b', T = Z'Z0 / n [B*c, B*c0].

    q[(b, i)] = sum_b' sum_k T[b i, b' k] <w~_{b,i}, w~0_{b',k}> (summed over b in the channel layout).
    Pair it with ``y_sq = gram_from_moments(S0, target_weights, form)[2]`` (S0 = Z0'Z0 / n).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(T, Tensor) or T.dim() != 2:
        raise ValueError("T must be a 2-D cross moment")
    placed, _, d = _placed_weights(branch_weights, form, branch_cols)
    placed0, _, d0 = _placed_weights(target_weights, form, branch_cols)
    if d != d0:
        raise ValueError(f"weights write {d} output columns but the target has {d0}")
    B, c = len(placed), placed[0].shape[0]
    W, W0 = torch.cat(placed, 0).to(T.device), torch.cat(placed0, 0).to(T.device)
    if T.shape != (W.shape[0], W0.shape[0]):
        raise ValueError(f"T must be [{W.shape[0]}, {W0.shape[0]}], got {list(T.shape)}")
    q = (T.double() * (W @ W0.T)).sum(dim=1)
    return q.reshape(B, c).sum(0) if layout == "channel" else q


def branch_penalty(num_channels: int, num_branches: int, unpenalized: Sequence[int] = (0,),
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """Penalty factors for the "branch" layout: 0 for every channel of the branches in ``unpenalized``
    (kept whole, e.g. the self branch = 0 in the batched scheme), 1 elsewhere."""
    for b in unpenalized:
        if not 0 <= b < num_branches:
            raise ValueError(f"unpenalized branch {b} out of range for {num_branches} branches")
    p = torch.ones(num_branches, num_channels, dtype=dtype)
    for b in unpenalized:
        p[b] = 0
    return p.flatten()


def split_branch_coordinates(coords: Tensor, num_channels: int, num_branches: int) -> List[Tensor]:
    """Map "branch"-layout coordinate indices b*c + i to the sorted kept channels i of each branch b."""
    coords = torch.as_tensor(coords, dtype=torch.long)
    if coords.numel() and (int(coords.min()) < 0 or int(coords.max()) >= num_channels * num_branches):
        raise ValueError(f"coordinates must lie in [0, {num_channels * num_branches})")
    return [torch.sort(coords[coords // num_channels == b] % num_channels).values for b in range(num_branches)]
