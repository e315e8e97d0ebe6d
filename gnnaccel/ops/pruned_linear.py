"""``gnnaccel::pruned_linear``: ``x[rows][:, keep] @ weight + bias`` without forming the gathered matrix."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension

_INDEX_DTYPES = (torch.int32, torch.int64)


def _check_index(name: str, idx: Optional[Tensor], bound: int, what: str) -> None:
    if idx is None:
        return
    if not isinstance(idx, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int32/int64 indices, got {type(idx).__name__}")
    if idx.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must hold int32 or int64 indices, got {idx.dtype}")
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(idx.shape)}")
    # Range check in eager mode only (it reads values); the kernels check again with TORCH_CHECK.
    if idx.numel() and not torch.compiler.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= bound:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name} holds index {bad}, outside [0, {bound}) ({what})")


def pruned_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, rows: Optional[Tensor] = None,
                  keep: Optional[Tensor] = None) -> Tensor:
    """``out = x[rows][:, keep] @ weight + bias``.

    ``x`` [N, C]; ``weight`` [K, D] in input-major orientation (K = ``len(keep)``, or C without ``keep``);
    ``bias`` [D]; ``rows`` / ``keep`` int32/int64 indices (duplicates allowed), each optional. Differentiable
    in ``x``, ``weight`` and ``bias``.
    """
    require_extension()
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"x and weight must be 2-D, got shapes {list(x.shape)} and {list(weight.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match x dtype {x.dtype}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.dtype != x.dtype:
            raise TypeError(f"bias must be a tensor of x's dtype {x.dtype}")
        if bias.dim() != 1 or bias.shape[0] != weight.shape[1]:
            raise ValueError(f"bias must have shape [{weight.shape[1]}], got {list(bias.shape)}")
    _check_index("rows", rows, x.shape[0], "rows of x")
    _check_index("keep", keep, x.shape[1], "columns of x")
    expected = keep.shape[0] if keep is not None else x.shape[1]
    if weight.shape[0] != expected:
        source = "keep selects" if keep is not None else "x has"
        raise ValueError(f"weight has {weight.shape[0]} rows but {source} {expected} input channels "
                         f"(weight must be [in, out])")
    return torch.ops.gnnaccel.pruned_linear(x, weight, bias, rows, keep)


def _setup_context(ctx, inputs, output):
    x, weight, bias, rows, keep = inputs
    ctx.has_bias = bias is not None
    ctx.x_shape = x.shape
    ctx.save_for_backward(x, weight, rows, keep)


def _backward(ctx, grad_out):
    x, weight, rows, keep = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x = grad_w = grad_b = None
    rows_l = rows.long() if rows is not None else None
    keep_l = keep.long() if keep is not None else None
    if need_w:
        z = x if rows_l is None else x.index_select(0, rows_l)
        z = z if keep_l is None else z.index_select(1, keep_l)
        grad_w = z.t() @ grad_out
    if need_b and ctx.has_bias:
        grad_b = grad_out.sum(0)
    if need_x:
        grad_z = grad_out @ weight.t()
        if rows_l is None and keep_l is None:
            grad_x = grad_z
        else:
            grad_rows = grad_z.new_zeros((grad_z.shape[0], x.shape[1]))
            if keep_l is None:
                grad_rows = grad_z
            else:
                grad_rows = grad_rows.index_add(1, keep_l, grad_z)
            grad_x = grad_rows if rows_l is None else x.new_zeros(x.shape).index_add(0, rows_l, grad_rows)
    return grad_x, grad_w, grad_b, None, None


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::pruned_linear")
    def _pruned_linear_fake(x, weight, bias, rows, keep):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(weight.dim() == 2, lambda: "weight must be 2-D")
        num_out = rows.shape[0] if rows is not None else x.shape[0]
        return x.new_empty((num_out, weight.shape[1]))

    torch.library.register_autograd("gnnaccel::pruned_linear", _backward, setup_context=_setup_context)
