"""``gnnaccel::pruned_linear``: ``x[rows][:, keep] @ weight + bias`` without forming the gathered matrix."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension
from ..backend import kernel_backend
from . import torch_backend
from ._args import check_bounds_eager, check_features, check_index, check_same_dtype, check_tensor, needs_grad


def pruned_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, rows: Optional[Tensor] = None,
                  keep: Optional[Tensor] = None) -> Tensor:
    """``out = x[rows][:, keep] @ weight + bias``.

    Args:
        x: [N, C] floating point.
        weight: [K, D] in input-major orientation (K = ``len(keep)``, or C without ``keep``).
        bias: optional [D].
        rows, keep: optional 1-D int32/int64 indices into the rows / columns of x (duplicates allowed).
    Returns:
        [len(rows) or N, D]. Differentiable in ``x``, ``weight`` and ``bias`` (while autograd records, the
        "triton" backend runs the compiled op, which has a backward formula).
    """
    check_features("x", x)
    check_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"x and weight must be 2-D, got shapes {list(x.shape)} and {list(weight.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match x dtype {x.dtype}")
    if bias is not None:
        check_same_dtype("bias", bias, x)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[1]:
            raise ValueError(f"bias must have shape [{weight.shape[1]}], got {list(bias.shape)}")
    check_index("rows", rows)
    check_index("keep", keep)
    expected = keep.shape[0] if keep is not None else x.shape[1]
    if weight.shape[0] != expected:
        source = "keep selects" if keep is not None else "x has"
        raise ValueError(f"weight has {weight.shape[0]} rows but {source} {expected} input channels "
                         f"(weight must be [in, out])")
    check_bounds_eager("rows", rows, x.shape[0], "rows of x")
    check_bounds_eager("keep", keep, x.shape[1], "columns of x")
    backend = kernel_backend(x.device)
    if backend == "torch":
        return torch_backend.pruned_linear(x, weight, bias, rows, keep)
    if backend == "triton" and not needs_grad(x, weight, bias):
        return torch.ops.gnnaccel.triton_pruned_linear(x, weight, bias, rows, keep)
    require_extension()
    return torch.ops.gnnaccel.pruned_linear(x, weight, bias, rows, keep)


def _setup_context(ctx, inputs, output):
    x, weight, bias, rows, keep = inputs
    ctx.has_bias = bias is not None
    ctx.x_shape = x.shape
    ctx.save_for_backward(x, weight, rows, keep)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; float16 operands multiplied in float32 (float16 GEMM on CPU is ~30x slower), result rounded."""
    if a.dtype == torch.float16 and a.device.type == "cpu":
        return (a.float() @ b.float()).to(a.dtype)
    return a @ b


def _backward(ctx, grad_out):
    """The gradients in x's dtype (GEMMs as in the forward; index sums accumulate in float32 for bfloat16 /
    float16 and are rounded once)."""
    x, weight, rows, keep = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x = grad_w = grad_b = None
    rows_l = rows.long() if rows is not None else None
    keep_l = keep.long() if keep is not None else None
    widen = torch_backend._widen
    if need_w:
        z = x if rows_l is None else x.index_select(0, rows_l)
        z = z if keep_l is None else z.index_select(1, keep_l)
        grad_w = _mm(z.t(), grad_out)
    if need_b and ctx.has_bias:
        grad_b = grad_out.sum(0)
    if need_x:
        grad_z = _mm(grad_out, weight.t())
        if rows_l is None and keep_l is None:
            grad_x = grad_z
        else:
            grad_rows = widen(grad_z)
            if keep_l is not None:
                grad_rows = grad_rows.new_zeros((grad_z.shape[0], x.shape[1])).index_add(1, keep_l, grad_rows)
            if rows_l is not None:
                grad_rows = grad_rows.new_zeros(x.shape).index_add(0, rows_l, grad_rows)
            grad_x = grad_rows.to(x.dtype)
    return grad_x, grad_w, grad_b, None, None


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::pruned_linear")
    def _pruned_linear_fake(x, weight, bias, rows, keep):
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        torch._check(weight.dim() == 2, lambda: "weight must be 2-D")
        num_out = rows.shape[0] if rows is not None else x.shape[0]
        return x.new_empty((num_out, weight.shape[1]))

    torch.library.register_autograd("gnnaccel::pruned_linear", _backward, setup_context=_setup_context)
