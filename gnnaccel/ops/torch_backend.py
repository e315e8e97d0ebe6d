"""The ``"torch"`` backend of the op entry points: the ops as compositions of PyTorch index ops.

index_select / index_add / scatter_reduce / matmul only, so they run on any device and dtype and are
differentiable. The entry points (``gnnaccel.ops.*``) validate the arguments before calling these.
bfloat16 / float16 inputs are computed in float32 (gathered values, weights and bias widened after indexing)
and the result is rounded to the input dtype once, as the C++ kernels do.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_SCATTER = {"max": "amax", "min": "amin"}
_REDUCED = (torch.bfloat16, torch.float16)


def _widen(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t`` in its accumulation dtype: float32 for bfloat16 / float16, unchanged otherwise."""
    return t.float() if t is not None and t.dtype in _REDUCED else t


def aggregate(rowptr: Tensor, col: Tensor, x: Tensor, reduce: str, edge_weight: Optional[Tensor],
              rows: Optional[Tensor]) -> Tensor:
    """``out[i] = reduce_{e in row(r_i)} w_e x[col[e]]``, r_i = rows[i] or i; empty rows give 0.

    In eager mode a row subset visits only its rows' edges (sizes read from the data); under torch.compile
    (static sizes) every row is reduced, then the subset selected.
    """
    return _aggregate(rowptr, col, x, reduce, edge_weight, rows).to(x.dtype)


def _aggregate(rowptr: Tensor, col: Tensor, x: Tensor, reduce: str, edge_weight: Optional[Tensor],
               rows: Optional[Tensor]) -> Tensor:
    """:func:`aggregate` in the accumulation dtype (float32 for bfloat16 / float16 x)."""
    rp = rowptr.long()
    deg = rp[1:] - rp[:-1]
    if rows is not None and not torch.compiler.is_compiling():
        r = rows.long()
        cnt = deg.index_select(0, r)
        num_out = r.shape[0]
        out_row = torch.repeat_interleave(torch.arange(num_out, device=r.device), cnt)
        first = torch.cumsum(cnt, 0) - cnt
        edge = (torch.arange(out_row.shape[0], device=r.device) - first.index_select(0, out_row)
                + rp.index_select(0, r).index_select(0, out_row))
        select = None
    else:
        cnt, num_out = deg, rp.shape[0] - 1
        edge = torch.arange(col.shape[0], device=col.device)
        out_row = torch.searchsorted(rp[1:], edge, right=True)
        select = rows
    vals = _widen(x.index_select(0, col.index_select(0, edge).long()))
    if edge_weight is not None:
        vals = vals * _widen(edge_weight.index_select(0, edge))[:, None]
    out = vals.new_zeros((num_out, x.shape[1]))
    if reduce in ("sum", "mean"):
        out = out.index_add(0, out_row, vals)
        if reduce == "mean":
            out = out / cnt.clamp_min(1).to(out.dtype)[:, None]
    else:
        index = out_row[:, None].expand(-1, x.shape[1])
        out = out.scatter_reduce(0, index, vals, _SCATTER[reduce], include_self=False)
    return out if select is None else out.index_select(0, select.long())


def pruned_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Optional[Tensor],
                  keep: Optional[Tensor]) -> Tensor:
    """``x[rows][:, keep] @ weight + bias``."""
    return _pruned_linear(x, weight, bias, rows, keep).to(x.dtype)


def _pruned_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Optional[Tensor],
                   keep: Optional[Tensor]) -> Tensor:
    """:func:`pruned_linear` in the accumulation dtype."""
    z = x if rows is None else x.index_select(0, rows.long())
    z = _widen(z if keep is None else z.index_select(1, keep.long()))
    out = z @ _widen(weight)
    return out if bias is None else out + _widen(bias)


def fused_layer(rowptr: Tensor, col: Tensor, x: Tensor, w_neigh: Tensor, w_self: Optional[Tensor],
                bias: Optional[Tensor], edge_weight: Optional[Tensor], rows: Optional[Tensor],
                self_rows: Optional[Tensor], neigh_keep: Optional[Tensor], self_keep: Optional[Tensor],
                reduce: str) -> Tensor:
    """``AGG(w_e x[col[e], neigh_keep]) @ w_neigh + x[s_i, self_keep] @ w_self + bias`` (see ops.fused_layer)."""
    if neigh_keep is None:
        agg = _aggregate(rowptr, col, x, reduce, edge_weight, rows)
    elif rows is None:  # every row: slice the channels first (E * k instead of E * C)
        agg = _aggregate(rowptr, col, x.index_select(1, neigh_keep.long()), reduce, edge_weight, rows)
    else:  # a row subset: no copy of the whole table's kept channels, reduce the rows' edges then slice
        agg = _aggregate(rowptr, col, x, reduce, edge_weight, rows).index_select(1, neigh_keep.long())
    out = agg @ _widen(w_neigh)
    if w_self is not None:
        srows = self_rows if self_rows is not None else rows
        xs = x if srows is not None else x[:out.shape[0]]
        out = out + _pruned_linear(xs, w_self, None, srows, self_keep)
    return (out if bias is None else out + _widen(bias)).to(x.dtype)


def sage_projected(rowptr: Tensor, col: Tensor, xw: Tensor, root: Optional[Tensor], bias: Optional[Tensor],
                   edge_weight: Optional[Tensor], rows: Optional[Tensor], reduce: str) -> Tensor:
    """``AGG(w_e xw[col[e]]) + root + bias``."""
    out = _aggregate(rowptr, col, xw, reduce, edge_weight, rows)
    if root is not None:
        out = out + _widen(root)
    return (out if bias is None else out + _widen(bias)).to(xw.dtype)
