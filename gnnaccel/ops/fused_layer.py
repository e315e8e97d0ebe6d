"""``fused_layer``: the one entry point of a GNN layer's gather -> aggregate -> project step, per backend."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import require_extension
from ..backend import kernel_backend
from . import torch_backend
from ._args import (check_bounds_eager, check_csr, check_edge_weight, check_features, check_index, check_same_dtype,
                    check_tensor, needs_grad, rows_for_graph)
from .aggregate import aggregate
from .pruned_linear import pruned_linear

FUSED_REDUCTIONS = ("sum", "mean", "max")


def fused_layer(rowptr: Tensor, col: Tensor, x: Tensor, w_neigh: Tensor, w_self: Optional[Tensor] = None,
                bias: Optional[Tensor] = None, edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None,
                self_rows: Optional[Tensor] = None, neigh_keep: Optional[Tensor] = None,
                self_keep: Optional[Tensor] = None, reduce: str = "mean") -> Tensor:
    """``out[i] = AGG_{e in row r_i} (w_e x[col[e], neigh_keep]) @ w_neigh + x[s_i, self_keep] @ w_self + bias``.

    r_i = rows[i] (or i); s_i = self_rows[i] (or r_i). An empty row aggregates to 0 (PyG's convention).

    Args:
        rowptr, col: CSR adjacency (int32/int64); ``col`` indexes rows of ``x``, which may have more rows than
            the CSR (e.g. a block whose sources are ids into the full feature table).
        x: [N, C] floating-point features.
        w_neigh: [K_n, D] neighbour weight in [in, out] orientation (K_n = len(neigh_keep) or C).
        w_self: optional [K_s, D] self (root) weight (K_s = len(self_keep) or C).
        bias: optional [D].
        edge_weight: optional [E] weight of every edge (GCN's normalised adjacency), in x's dtype.
        rows: optional 1-D int32/int64 CSR rows to compute.
        self_rows: optional 1-D int32/int64 rows of ``x`` read by the self branch, one per output row.
        neigh_keep, self_keep: optional 1-D int32/int64 kept input channels of each branch (pruned models).
        reduce: "sum", "mean" or "max".
    Returns:
        [len(rows) or num_rows, D].

    Kernels (:func:`gnnaccel.backend.kernel_backend`): "cpp" runs the fused ``sage_fused`` kernel where it
    applies (sum/mean, no channel subsets, self rows = CSR rows) and ``aggregate`` + ``pruned_linear``
    otherwise; "triton" one fused Triton kernel; "torch" index ops and matmul. While autograd records (any
    input requires grad) the entry composes differentiable ops (``aggregate`` + ``pruned_linear``).
    """
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in FUSED_REDUCTIONS:
        raise ValueError(f"fused_layer supports reduce {FUSED_REDUCTIONS}, got {reduce!r}")
    check_csr(rowptr, col)
    check_features("x", x)
    for name, idx in (("rows", rows), ("self_rows", self_rows), ("neigh_keep", neigh_keep), ("self_keep", self_keep)):
        check_index(name, idx)
    check_edge_weight(edge_weight, col, x)
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    check_tensor("w_neigh", w_neigh)
    d = w_neigh.shape[1] if w_neigh.dim() == 2 else -1
    for name, w, keep in (("w_neigh", w_neigh, neigh_keep), ("w_self", w_self, self_keep)):
        if w is None:
            continue
        check_same_dtype(name, w, x)
        k = keep.shape[0] if keep is not None else x.shape[1]
        if w.dim() != 2 or w.shape[0] != k or w.shape[1] != d:
            raise ValueError(f"{name} must be [{k}, {d}] ([in, out]: "
                             f"{'len(' + name[2:] + '_keep)' if keep is not None else 'x channels'} rows), "
                             f"got {list(w.shape)}")
    if w_self is None and (self_rows is not None or self_keep is not None):
        raise ValueError("self_rows / self_keep given without w_self")
    if bias is not None:
        check_same_dtype("bias", bias, x)
        if bias.dim() != 1 or bias.shape[0] != d:
            raise ValueError(f"bias must have shape [{d}], got {list(bias.shape)}")
    if self_rows is not None and self_rows.shape[0] != num_out:
        raise ValueError(f"self_rows must have one entry per output row ({num_out}), got {self_rows.shape[0]}")
    if w_self is not None and rows is None and self_rows is None and x.shape[0] < num_out:
        raise ValueError(f"the self branch reads x[i] for every CSR row i: x needs at least {num_out} rows, "
                         f"got {x.shape[0]} (pass self_rows)")

    backend = kernel_backend(x.device)
    if backend == "torch":
        return torch_backend.fused_layer(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows, self_rows,
                                         neigh_keep, self_keep, reduce)
    grad = needs_grad(x, w_neigh, w_self, bias, edge_weight)
    if backend == "triton" and not grad:
        check_bounds_eager("rows", rows, rowptr.shape[0] - 1, "rows of the CSR")
        check_bounds_eager("col", col, x.shape[0], "rows of x")
        check_bounds_eager("self_rows", self_rows, x.shape[0], "rows of x")
        check_bounds_eager("neigh_keep", neigh_keep, x.shape[1], "columns of x")
        check_bounds_eager("self_keep", self_keep, x.shape[1], "columns of x")
        return torch.ops.gnnaccel.triton_fused_layer(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows,
                                                     self_rows, neigh_keep, self_keep, reduce)
    require_extension()
    if (not grad and reduce in ("sum", "mean") and neigh_keep is None and self_keep is None and self_rows is None
            and x.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)):
        weight = w_neigh if w_self is None else torch.cat([w_neigh, w_self], 0)
        return torch.ops.gnnaccel.sage_fused(rowptr, col, x.contiguous(), edge_weight, weight, bias,
                                             rows_for_graph(rows, rowptr), reduce, w_self is not None)
    return _composed(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows, self_rows, neigh_keep, self_keep,
                     reduce)


def _composed(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows, self_rows, neigh_keep, self_keep, reduce):
    """``aggregate`` on the kept channels + ``pruned_linear`` per branch (differentiable compiled ops)."""
    if neigh_keep is None:
        agg = aggregate(rowptr, col, x, reduce, edge_weight, rows)
    elif rows is None:  # every row: slice the channels first (E * k instead of E * C)
        agg = aggregate(rowptr, col, x.index_select(1, neigh_keep.long()), reduce, edge_weight, rows)
    else:  # a row subset: reduce the rows' edges, then slice (no copy of the whole table's kept channels)
        agg = aggregate(rowptr, col, x, reduce, edge_weight, rows).index_select(1, neigh_keep.long())
    out = pruned_linear(agg, w_neigh, bias)
    if w_self is not None:
        srows = self_rows if self_rows is not None else rows
        xs = x if srows is not None else x[:out.shape[0]]
        out = out + pruned_linear(xs, w_self, None, srows, self_keep)
    return out
