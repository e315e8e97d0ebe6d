"""``gnnaccel::sage_fused``: aggregate a block of rows and project it at once (inference only)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension
from ..backend import kernel_backend
from ._args import check_csr, check_edge_weight, check_features, check_index, check_same_dtype, check_tensor, \
    needs_grad, rows_for_graph
from .fused_layer import fused_layer


def sage_fused(rowptr: Tensor, col: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
               edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None, reduce: str = "mean",
               root: bool = True) -> Tensor:
    """``out[r] = [reduce_{e in row(r)} w_e x[col[e]] || x[row(r)]] @ weight + bias`` (root part if ``root``).

    Args:
        rowptr, col: CSR adjacency (int32/int64); x: [N, C] features; edge_weight: optional [E].
        weight: [C * (1 + root), D] (neighbour rows first, then root rows); bias: optional [D].
        rows: optional 1-D int32/int64 CSR rows to compute; reduce: "sum" or "mean".
    Returns:
        [len(rows) or num_rows, D]. An inference operator without a backward formula: it refuses inputs that
        require grad while autograd is recording (use :func:`gnnaccel.ops.fused_layer`, which is differentiable).
    """
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in ("sum", "mean"):
        raise ValueError(f"sage_fused supports reduce 'sum' and 'mean', got {reduce!r}")
    check_csr(rowptr, col)
    check_features("x", x)
    check_tensor("weight", weight)
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match x dtype {x.dtype}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] * (2 if root else 1):
        raise ValueError(f"weight must be [{x.shape[1] * (2 if root else 1)}, out] for x with {x.shape[1]} "
                         f"channels (root={root}), got {list(weight.shape)}")
    check_same_dtype("bias", bias, x)
    check_edge_weight(edge_weight, col, x)
    check_index("rows", rows)
    if needs_grad(x, weight, bias, edge_weight):
        raise RuntimeError("sage_fused has no backward; call it under torch.no_grad() or use ops.fused_layer")
    backend = kernel_backend(x.device)
    if backend != "cpp":
        c = x.shape[1]
        return fused_layer(rowptr, col, x, weight[:c], weight[c:] if root else None, bias, edge_weight, rows,
                           reduce=reduce)
    require_extension()
    return torch.ops.gnnaccel.sage_fused(rowptr, col, x.contiguous(), edge_weight, weight, bias,
                                         rows_for_graph(rows, rowptr), reduce, root)


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::sage_fused")
    def _sage_fused_fake(rowptr, col, x, edge_weight, weight, bias, rows, reduce, root):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(weight.dim() == 2, lambda: "weight must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        return x.new_empty((num_out, weight.shape[1]))
