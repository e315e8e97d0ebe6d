"""``gnnaccel::sage_projected``: finish a layer that projected before aggregating (inference only)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension
from ..backend import kernel_backend
from . import torch_backend
from ._args import check_bounds_eager, check_csr, check_edge_weight, check_features, check_index, rows_for_graph


def sage_projected(rowptr: Tensor, col: Tensor, xw: Tensor, root: Optional[Tensor] = None,
                   bias: Optional[Tensor] = None, edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None,
                   reduce: str = "mean") -> Tensor:
    """``out[r] = reduce_{e in row(r)} w_e xw[col[e]] + root[r] + bias`` in one pass (root, bias optional).

    ``xw`` [N, D] is the neighbour-branch projection of every node (``x @ W_l``); ``root`` [R, D] the root
    term of each output row (``x[rows] @ W_r``, R = len(rows) or N). ``reduce`` is "sum" or "mean"; an empty
    row gets root + bias only. Returns [R, D]. An inference operator without a backward formula: it refuses
    inputs that require grad while autograd is recording (the layers call it only under no_grad /
    inference_mode).
    """
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in ("sum", "mean"):
        raise ValueError(f"sage_projected supports reduce 'sum' and 'mean', got {reduce!r}")
    check_csr(rowptr, col)
    check_features("xw", xw)
    check_index("rows", rows)
    check_edge_weight(edge_weight, col, xw)
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    for name, t, shape in (("root", root, (num_out, xw.shape[1])), ("bias", bias, (xw.shape[1],))):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.dtype != xw.dtype:
            raise TypeError(f"{name} must be a tensor of xw's dtype {xw.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xw, root, bias, edge_weight)):
        raise RuntimeError("sage_projected has no backward; call it under torch.no_grad() or use aggregate")
    backend = kernel_backend(xw.device)
    if backend == "torch":
        return torch_backend.sage_projected(rowptr, col, xw, root, bias, edge_weight, rows, reduce)
    if backend == "triton":
        check_bounds_eager("rows", rows, rowptr.shape[0] - 1, "rows of the CSR")
        check_bounds_eager("col", col, xw.shape[0], "rows of xw")
        return torch.ops.gnnaccel.triton_aggregate(rowptr, col, xw, edge_weight, rows, root, bias, reduce)
    require_extension()
    return torch.ops.gnnaccel.sage_projected(rowptr, col, xw, root, edge_weight, bias, rows_for_graph(rows, rowptr),
                                             reduce)


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::sage_projected")
    def _sage_projected_fake(rowptr, col, xw, root, edge_weight, bias, rows, reduce):
        torch._check(xw.dim() == 2, lambda: "xw must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        return xw.new_empty((num_out, xw.shape[1]))
