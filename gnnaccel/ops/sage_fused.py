"""``gnnaccel::sage_fused``: aggregate a block of rows and project it at once (inference only)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension


def sage_fused(rowptr: Tensor, col: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
               edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None, reduce: str = "mean",
               root: bool = True) -> Tensor:
    """``out[r] = [reduce_{e in row(r)} w_e x[col[e]] || x[row(r)]] @ weight + bias`` (root part if ``root``).

    ``weight`` is [C * (1 + root), D] (neighbour rows first, then root rows); ``reduce`` is "sum" or "mean".
    This is an inference operator without a backward formula: it refuses inputs that require grad while
    autograd is recording (the layers use it only under ``torch.no_grad`` / ``inference_mode``).
    """
    require_extension()
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in ("sum", "mean"):
        raise ValueError(f"sage_fused supports reduce 'sum' and 'mean', got {reduce!r}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match x dtype {x.dtype}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] * (2 if root else 1):
        raise ValueError(f"weight must be [{x.shape[1] * (2 if root else 1)}, out] for x with {x.shape[1]} "
                         f"channels (root={root}), got {list(weight.shape)}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, edge_weight)):
        raise RuntimeError("sage_fused has no backward; call it under torch.no_grad() or use aggregate + linear")
    if rows is not None and rows.dtype != rowptr.dtype:
        rows = rows.to(rowptr.dtype)
    return torch.ops.gnnaccel.sage_fused(rowptr, col, x, edge_weight, weight, bias, rows, reduce, root)


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::sage_fused")
    def _sage_fused_fake(rowptr, col, x, edge_weight, weight, bias, rows, reduce, root):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(weight.dim() == 2, lambda: "weight must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        return x.new_empty((num_out, weight.shape[1]))
