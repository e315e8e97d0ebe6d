"""Triton kernel: CSR neighbourhood reduction with an optional root + bias epilogue.

    out[i] = REDUCE_{e in CSR row r_i} w_e x[col[e]]  (+ root[i])  (+ bias)       r_i = rows[i] or i

REDUCE in sum / mean / max / min; an empty row reduces to 0 (PyG's convention). Without root and bias it is
the Triton path of :func:`gnnaccel.ops.aggregate`; with them it is the finish of a project-first layer
(:func:`gnnaccel.ops.sage_projected`: aggregate the projected rows, add the root term and the bias, write
the output once).

One program owns BLOCK_M output rows x BLOCK_C channels and walks the rows' edges in lock step, gathering
from ``x`` (any row stride, unit channel stride: a column block of a wider matrix works). Accumulation in
float32 (float64 for float64 inputs). Indices are range-checked in the kernel: a row that would read out of
bounds is not read and comes out as NaN.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._csr import row_tile
from ._launch import REDUCE_CODES, check_device, register_triton_op, skip_launch


@triton.jit
def _aggregate_kernel(
        rowptr, col, x, stride_x, edge_weight, rows, root, stride_root, bias, out,
        num_out, num_rows, num_src, num_edges, channels,
        HAS_WEIGHT: tl.constexpr, HAS_ROWS: tl.constexpr, HAS_ROOT: tl.constexpr, HAS_BIAS: tl.constexpr,
        REDUCE: tl.constexpr, F64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    acc_ty: tl.constexpr = tl.float64 if F64 else tl.float32
    offs_m, m_mask, offs_c, c_mask, start, deg, bad = row_tile(rowptr, rows, num_out, num_rows, num_edges,
                                                                channels, HAS_ROWS, BLOCK_M, BLOCK_C)
    max_deg = tl.max(deg, axis=0)
    if REDUCE == 2:
        agg = tl.full([BLOCK_M, BLOCK_C], float("-inf"), dtype=acc_ty)
    elif REDUCE == 3:
        agg = tl.full([BLOCK_M, BLOCK_C], float("inf"), dtype=acc_ty)
    else:
        agg = tl.zeros([BLOCK_M, BLOCK_C], dtype=acc_ty)
    for e in range(0, max_deg):
        valid = e < deg
        src = tl.load(col + start + e, mask=valid, other=0).to(tl.int64)
        src_ok = valid & (src >= 0) & (src < num_src)
        bad = bad | (valid & ~src_ok)
        vals = tl.load(x + src[:, None] * stride_x + offs_c[None, :], mask=src_ok[:, None] & c_mask[None, :],
                       other=0.0).to(acc_ty)
        if HAS_WEIGHT:
            vals = vals * tl.load(edge_weight + start + e, mask=valid, other=0.0).to(acc_ty)[:, None]
        if REDUCE == 2:
            agg = tl.where(src_ok[:, None], tl.maximum(agg, vals), agg)
        elif REDUCE == 3:
            agg = tl.where(src_ok[:, None], tl.minimum(agg, vals), agg)
        else:
            agg += vals
    if REDUCE == 1:
        agg = agg / tl.maximum(deg, 1).to(acc_ty)[:, None]
    if REDUCE >= 2:
        agg = tl.where((deg > 0)[:, None], agg, 0.0)
    if HAS_ROOT:
        agg += tl.load(root + offs_m[:, None] * stride_root + offs_c[None, :], mask=m_mask[:, None] & c_mask[None, :],
                       other=0.0).to(acc_ty)
    if HAS_BIAS:
        agg += tl.load(bias + offs_c, mask=c_mask, other=0.0).to(acc_ty)[None, :]
    agg = tl.where(bad[:, None], float("nan"), agg)
    tl.store(out + offs_m[:, None] * channels + offs_c[None, :], agg.to(out.dtype.element_ty),
             mask=m_mask[:, None] & c_mask[None, :])


def _unit_channel_stride(t: Tensor) -> Tensor:
    return t if t.shape[1] <= 1 or t.stride(1) == 1 else t.contiguous()


@register_triton_op("gnnaccel::triton_aggregate")
def triton_aggregate(rowptr: Tensor, col: Tensor, x: Tensor, edge_weight: Optional[Tensor], rows: Optional[Tensor],
                     root: Optional[Tensor], bias: Optional[Tensor], reduce: str) -> Tensor:
    """The Triton path of :func:`gnnaccel.ops.aggregate` (root, bias None) and of
    :func:`gnnaccel.ops.sage_projected` (arguments validated there).

    Returns:
        [len(rows) or rowptr.numel() - 1, x.shape[1]] in x's dtype.
    """
    check_device(x, "triton_aggregate")
    if reduce not in REDUCE_CODES:
        raise ValueError(f"triton_aggregate supports reduce {tuple(REDUCE_CODES)}, got {reduce!r}")
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    channels = x.shape[1]
    out = torch.empty((num_out, channels), device=x.device, dtype=x.dtype)
    if num_out == 0 or channels == 0 or skip_launch(x):
        return out
    x = _unit_channel_stride(x)
    root = _unit_channel_stride(root) if root is not None else None
    block_m, block_c = 16, min(64, max(16, triton.next_power_of_2(channels)))
    grid = (triton.cdiv(num_out, block_m), triton.cdiv(channels, block_c))
    opt = lambda t: t if t is not None else x  # noqa: E731  (never read: the HAS_* flags guard them)
    torch.library.wrap_triton(_aggregate_kernel)[grid](
        rowptr, col, x, x.stride(0), opt(edge_weight), opt(rows), opt(root),
        root.stride(0) if root is not None else 0, opt(bias), out,
        num_out, rowptr.shape[0] - 1, x.shape[0], col.shape[0], channels,
        HAS_WEIGHT=edge_weight is not None, HAS_ROWS=rows is not None, HAS_ROOT=root is not None,
        HAS_BIAS=bias is not None, REDUCE=REDUCE_CODES[reduce], F64=x.dtype == torch.float64,
        BLOCK_M=block_m, BLOCK_C=block_c)
    return out
