"""``gnnaccel::gat_aggregate``: the fused attention aggregation of a graph-attention layer (fake kernel, autograd,
torch composition, API)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._library import EXTENSION_LOADED, has_kernel, require_extension
from ..backend import kernel_backend
from ._args import check_bounds_eager, check_csr, check_index, needs_grad, rows_for_graph
from .torch_backend import _widen


def _check(xw, alpha_src, alpha_dst, rowptr, rows, head_index) -> None:
    for name, t in (("xw", xw), ("alpha_src", alpha_src), ("alpha_dst", alpha_dst)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {list(t.shape)}")
        if not t.is_floating_point() or t.dtype != xw.dtype:
            raise TypeError(f"{name} must be a floating-point tensor of xw's dtype {xw.dtype}, got {t.dtype}")
    heads = alpha_src.shape[1]
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    if alpha_src.shape[0] != xw.shape[0]:
        raise ValueError(f"alpha_src has {alpha_src.shape[0]} rows but xw has {xw.shape[0]} (one per source row)")
    if tuple(alpha_dst.shape) != (num_out, heads):
        raise ValueError(f"alpha_dst must have shape [{num_out}, {heads}] (output rows x heads), got "
                         f"{list(alpha_dst.shape)}")
    if head_index is not None:
        if not isinstance(head_index, Tensor) or head_index.dtype != torch.int64 or head_index.dim() != 1:
            raise TypeError("head_index must be a 1-D int64 tensor (the head of every channel of xw)")
        if head_index.shape[0] != xw.shape[1]:
            raise ValueError(f"head_index has {head_index.shape[0]} entries but xw has {xw.shape[1]} channels")
    elif (xw.shape[1] % heads != 0) if heads > 0 else xw.shape[1] != 0:
        raise ValueError(f"xw has {xw.shape[1]} channels, not a multiple of the {heads} heads of alpha_src "
                         "(pass head_index for another layout)")


def gat_aggregate(rowptr: Tensor, col: Tensor, xw: Tensor, alpha_src: Tensor, alpha_dst: Tensor,
                  rows: Optional[Tensor] = None, head_index: Optional[Tensor] = None, negative_slope: float = 0.2,
                  dropout: float = 0.0, training: bool = False) -> Tensor:
    """Graph-attention aggregation: per edge and head the logit ``leaky_relu(alpha_src[j] + alpha_dst[i])``, a
    softmax over each row's edges, and the attention-weighted sum of the projected source rows.

    ``out[i, k] = sum_{e in CSR row r_i} softmax_e(z[., head(k)])[e] * xw[col[e], k]``, ``r_i = rows[i]`` (or
    ``i``); an empty row gives 0.

    Args:
        rowptr, col: CSR (int32/int64); ``col`` indexes rows of ``xw``.
        xw: [S, D] projected source rows (a column block of a wider matrix is fine).
        alpha_src: [S, H] per-head source terms (``sum_c xw[j, h, c] att_src[h, c]``).
        alpha_dst: [num_out, H] per-head terms of the output rows.
        rows: optional CSR rows to compute (int32/int64).
        head_index: optional int64 [D]: the head of every channel; default: D / H channels per head, in order.
        negative_slope: the LeakyReLU slope of the logits.
        dropout, training: dropout of the attention coefficients (PyG's ``GATConv(dropout=)``), applied only when
            ``training``; then a differentiable PyTorch composition runs (as it does for the "torch" backend, for
            "triton" while autograd records, and for "cpp" on a device without a compiled kernel).
    Returns:
        [len(rows) or num_rows, D]. Differentiable in xw, alpha_src and alpha_dst.
    """
    check_csr(rowptr, col)
    check_index("rows", rows)
    _check(xw, alpha_src, alpha_dst, rowptr, rows, head_index)
    slope = float(negative_slope)
    backend = kernel_backend(xw.device)
    if (training and dropout > 0) or backend == "torch" or (backend == "triton" and needs_grad(xw, alpha_src, alpha_dst)) or (
            backend == "cpp" and xw.device.type != "cpu" and not has_kernel("gat_aggregate", "CUDA")):
        return gat_aggregate_torch(rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, slope,
                                   dropout if training else 0.0)
    if backend == "triton":
        check_bounds_eager("rows", rows, rowptr.shape[0] - 1, "rows of the CSR")
        check_bounds_eager("col", col, xw.shape[0], "rows of xw")
        return torch.ops.gnnaccel.triton_gat_aggregate(rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, slope)
    require_extension()
    out, _ = torch.ops.gnnaccel.gat_aggregate(rowptr, col, xw, alpha_src, alpha_dst, rows_for_graph(rows, rowptr),
                                              head_index, slope)
    return out


def row_edges(rowptr: Tensor, rows: Optional[Tensor], num_edges: int) -> Tuple[Tensor, Tensor]:
    """``(out_row, edge)``: every edge of the asked CSR rows and the output row it belongs to (all rows: the
    edges in order, sizes static; a row subset: sizes read from the data)."""
    rp = rowptr.long()
    if rows is None:
        deg = rp[1:] - rp[:-1]
        out_row = torch.repeat_interleave(torch.arange(deg.shape[0], device=rp.device), deg,
                                          output_size=num_edges)
        return out_row, torch.arange(num_edges, device=rp.device)
    r = rows.long()
    cnt = (rp[1:] - rp[:-1]).index_select(0, r)
    out_row = torch.repeat_interleave(torch.arange(r.shape[0], device=r.device), cnt)
    first = torch.cumsum(cnt, 0) - cnt
    edge = (torch.arange(out_row.shape[0], device=r.device) - first.index_select(0, out_row)
            + rp.index_select(0, r).index_select(0, out_row))
    return out_row, edge


def _per_channel(t: Tensor, channels: int, head_index: Optional[Tensor]) -> Tensor:
    """[*, H] -> [*, D]: each channel's head value."""
    if head_index is not None:
        return t.index_select(1, head_index)
    return t.repeat_interleave(channels // max(t.shape[1], 1), dim=1) if t.shape[1] else t.new_zeros(t.shape[0], channels)


def _per_head(t: Tensor, heads: int, head_index: Optional[Tensor]) -> Tensor:
    """[*, D] -> [*, H]: sums of each head's channels."""
    if head_index is not None:
        return t.new_zeros(t.shape[0], heads).index_add_(1, head_index, t)
    if heads == 0:
        return t.new_zeros(t.shape[0], 0)
    return t.view(t.shape[0], heads, t.shape[1] // heads).sum(-1)


def _logits(col, xw_rows, alpha_src, alpha_dst, out_row, edge, slope):
    j = col.index_select(0, edge).long()
    z = alpha_src.index_select(0, j) + alpha_dst.index_select(0, out_row)
    return j, z, F.leaky_relu(z, slope)


def gat_aggregate_torch(rowptr: Tensor, col: Tensor, xw: Tensor, alpha_src: Tensor, alpha_dst: Tensor,
                        rows: Optional[Tensor], head_index: Optional[Tensor], negative_slope: float,
                        dropout: float = 0.0) -> Tensor:
    """:func:`gat_aggregate` as a differentiable composition of PyTorch ops (per-edge tensors), with PyG's
    dropout of the attention coefficients (``dropout`` > 0). bfloat16 / float16 inputs are computed in float32
    and the result rounded once, as the kernels do."""
    dtype = xw.dtype
    xw, alpha_src, alpha_dst = _widen(xw), _widen(alpha_src), _widen(alpha_dst)
    out_row, edge = row_edges(rowptr, rows, col.shape[0])
    num_out, heads, channels = alpha_dst.shape[0], alpha_src.shape[1], xw.shape[1]
    j, _, z = _logits(col, xw, alpha_src, alpha_dst, out_row, edge, negative_slope)
    index = out_row[:, None].expand(-1, heads)
    zmax = z.new_full((num_out, heads), float("-inf")).scatter_reduce(0, index, z, "amax", include_self=True)
    p = torch.exp(z - zmax.index_select(0, out_row))
    p = p / p.new_zeros(num_out, heads).index_add(0, out_row, p).index_select(0, out_row)
    if dropout > 0:
        p = F.dropout(p, p=dropout, training=True)
    msg = xw.index_select(0, j) * _per_channel(p, channels, head_index)
    return xw.new_zeros(num_out, channels).index_add(0, out_row, msg).to(dtype)


def _setup_context(ctx, inputs, output):
    rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, slope = inputs
    out, lse = output
    ctx.slope = slope
    ctx.save_for_backward(rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, out, lse)


def _backward(ctx, grad_out, _grad_lse):
    """The gradients in the inputs' dtype, computed in float32 for bfloat16 / float16 (lse is float32 there)."""
    rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, out, lse = ctx.saved_tensors
    dtype = xw.dtype
    xw, alpha_src, alpha_dst, out, grad_out = (_widen(t) for t in (xw, alpha_src, alpha_dst, out, grad_out))
    heads, channels = alpha_src.shape[1], xw.shape[1]
    out_row, edge = row_edges(rowptr, rows, col.shape[0])
    j, zraw, z = _logits(col, xw, alpha_src, alpha_dst, out_row, edge, ctx.slope)
    p = torch.exp(z - lse.index_select(0, out_row))  # [E, H] attention coefficients
    g = grad_out.contiguous().index_select(0, out_row)  # [E, D]
    grad_xw = grad_src = grad_dst = None
    if ctx.needs_input_grad[2]:
        grad_xw = torch.zeros_like(xw, memory_format=torch.contiguous_format).index_add_(
            0, j, g * _per_channel(p, channels, head_index))
    if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
        dp = _per_head(g * xw.index_select(0, j), heads, head_index)  # d loss / d p
        go = _per_head(grad_out * out, heads, head_index).index_select(0, out_row)  # sum_e p_e dp_e
        ds = p * (dp - go)
        dz = torch.where(zraw > 0, ds, ds * ctx.slope)  # (a float32 tensor of slopes would round it)
        if ctx.needs_input_grad[3]:
            grad_src = torch.zeros_like(alpha_src, memory_format=torch.contiguous_format).index_add_(0, j, dz)
        if ctx.needs_input_grad[4]:
            grad_dst = torch.zeros_like(alpha_dst, memory_format=torch.contiguous_format).index_add_(0, out_row, dz)
    cast = lambda t: t.to(dtype) if t is not None else None  # noqa: E731
    return None, None, cast(grad_xw), cast(grad_src), cast(grad_dst), None, None, None


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::gat_aggregate")
    def _gat_aggregate_fake(rowptr, col, xw, alpha_src, alpha_dst, rows, head_index, negative_slope):
        torch._check(xw.dim() == 2, lambda: "xw must be 2-D")
        torch._check(alpha_src.dim() == 2, lambda: "alpha_src must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        lse_dtype = torch.float32 if xw.dtype in (torch.bfloat16, torch.float16) else xw.dtype
        return xw.new_empty((num_out, xw.shape[1])), xw.new_empty((num_out, alpha_src.shape[1]), dtype=lse_dtype)

    torch.library.register_autograd("gnnaccel::gat_aggregate", _backward, setup_context=_setup_context)
