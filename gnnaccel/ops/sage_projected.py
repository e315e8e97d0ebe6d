"""``gnnaccel::sage_projected``: finish a layer that projected before aggregating (inference only)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension


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
    require_extension()
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in ("sum", "mean"):
        raise ValueError(f"sage_projected supports reduce 'sum' and 'mean', got {reduce!r}")
    if not isinstance(xw, Tensor) or not xw.is_floating_point():
        raise TypeError(f"xw must be a floating-point tensor, got {getattr(xw, 'dtype', type(xw).__name__)}")
    if xw.dim() != 2:
        raise ValueError(f"xw must be 2-D [nodes, channels], got shape {list(xw.shape)}")
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
    if rows is not None and rows.dtype != rowptr.dtype:
        rows = rows.to(rowptr.dtype)
    return torch.ops.gnnaccel.sage_projected(rowptr, col, xw, root, edge_weight, bias, rows, reduce)


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::sage_projected")
    def _sage_projected_fake(rowptr, col, xw, root, edge_weight, bias, rows, reduce):
        torch._check(xw.dim() == 2, lambda: "xw must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        return xw.new_empty((num_out, xw.shape[1]))
