"""``gnnaccel::sage_projected``: finish a layer that projected before aggregating (inference only)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension


def sage_projected(rowptr: Tensor, col: Tensor, xw: Tensor, bias: Optional[Tensor] = None,
                   edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None, reduce: str = "mean",
                   root: bool = True) -> Tensor:
    """``out[r] = reduce_{e in row(r)} w_e xw[col[e], :D] + xw[row(r), D:] + bias`` (root part if ``root``).

    ``xw`` is the projection of every node from one GEMM: ``x @ [W_l | W_r]`` ([N, 2D]) with ``root``, or
    ``x @ W`` ([N, D]) without. ``reduce`` is "sum" or "mean"; an empty row gets the root term and bias
    only. Returns [len(rows) or N, D]. An inference operator without a backward formula: it refuses inputs
    that require grad while autograd is recording (the layers call it only under no_grad / inference_mode).
    """
    require_extension()
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in ("sum", "mean"):
        raise ValueError(f"sage_projected supports reduce 'sum' and 'mean', got {reduce!r}")
    if not isinstance(xw, Tensor) or not xw.is_floating_point():
        raise TypeError(f"xw must be a floating-point tensor, got {getattr(xw, 'dtype', type(xw).__name__)}")
    if xw.dim() != 2:
        raise ValueError(f"xw must be 2-D [nodes, channels], got shape {list(xw.shape)}")
    if not xw.is_contiguous():
        raise ValueError("xw must be contiguous (the kernel reads rows of [x W_l | x W_r] in place)")
    if root and xw.shape[1] % 2:
        raise ValueError(f"with root, xw must be [N, 2D] ([x W_l | x W_r]); got an odd width {xw.shape[1]}")
    width = xw.shape[1] // 2 if root else xw.shape[1]
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.dtype != xw.dtype:
            raise TypeError(f"bias must be a tensor of xw's dtype {xw.dtype}")
        if bias.shape != (width,):
            raise ValueError(f"bias must have shape [{width}] (the output width), got {list(bias.shape)}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xw, bias, edge_weight)):
        raise RuntimeError("sage_projected has no backward; call it under torch.no_grad() or use aggregate")
    if rows is not None and rows.dtype != rowptr.dtype:
        rows = rows.to(rowptr.dtype)
    return torch.ops.gnnaccel.sage_projected(rowptr, col, xw, edge_weight, bias, rows, reduce, root)


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::sage_projected")
    def _sage_projected_fake(rowptr, col, xw, edge_weight, bias, rows, reduce, root):
        torch._check(xw.dim() == 2, lambda: "xw must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        return xw.new_empty((num_out, xw.shape[1] // 2 if root else xw.shape[1]))
