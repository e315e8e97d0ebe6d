"""Triton kernel: the fused attention aggregation of a graph-attention layer (the GPU path of
:func:`gnnaccel.ops.gat_aggregate`; contract: csrc/ops/gat_aggregate.cpp).

    out[i, k] = sum_{e in CSR row r_i} softmax_e(leaky_relu(alpha_src[col[e], h_k] + alpha_dst[i, h_k])) xw[col[e], k]

One program owns BLOCK_M output rows x BLOCK_C channels and walks the rows' edges in lock step; every channel
carries the running maximum and sum of its head's logits (online softmax: the accumulator is rescaled when the
maximum rises), so nothing per edge is stored. ``h_k`` = ``head_index[k]`` or ``k // per_head``. Accumulation
in float32 (float64 for float64 inputs). Indices are range-checked in the kernel: a row that would read out of
bounds comes out as NaN.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._csr import row_tile
from ._launch import check_device, register_triton_op, skip_launch


@triton.jit
def _gat_kernel(
        rowptr, col, xw, stride_x, a_src, stride_as, a_dst, stride_ad, rows, head_index, out,
        num_out, num_rows, num_src, num_edges, channels, heads, per_head, slope,
        HAS_ROWS: tl.constexpr, HAS_HEAD_INDEX: tl.constexpr, F64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    acc_ty: tl.constexpr = tl.float64 if F64 else tl.float32
    offs_m, m_mask, offs_c, c_mask, start, deg, bad = row_tile(rowptr, rows, num_out, num_rows, num_edges,
                                                                channels, HAS_ROWS, BLOCK_M, BLOCK_C)
    if HAS_HEAD_INDEX:
        head = tl.load(head_index + offs_c, mask=c_mask, other=0).to(tl.int64)
        head_ok = (head >= 0) & (head < heads)
        bad = bad | (tl.max((c_mask & ~head_ok).to(tl.int32), axis=0) > 0)
        head = tl.where(head_ok, head, 0)
    else:
        head = (offs_c // per_head).to(tl.int64)
    mc = m_mask[:, None] & c_mask[None, :]
    ad = tl.load(a_dst + offs_m[:, None] * stride_ad + head[None, :], mask=mc, other=0.0).to(acc_ty)
    run_max = tl.full([BLOCK_M, BLOCK_C], float("-inf"), dtype=acc_ty)
    run_sum = tl.zeros([BLOCK_M, BLOCK_C], dtype=acc_ty)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=acc_ty)
    max_deg = tl.max(deg, axis=0)
    for e in range(0, max_deg):
        valid = e < deg
        src = tl.load(col + start + e, mask=valid, other=0).to(tl.int64)
        src_ok = valid & (src >= 0) & (src < num_src)
        bad = bad | (valid & ~src_ok)
        ok = src_ok[:, None] & c_mask[None, :]
        z = tl.load(a_src + src[:, None] * stride_as + head[None, :], mask=ok, other=0.0).to(acc_ty) + ad
        z = tl.where(z > 0, z, z * slope)
        new_max = tl.where(ok, tl.maximum(run_max, z), run_max)
        scale = tl.where(new_max == float("-inf"), 1.0, tl.exp(run_max - new_max))
        p = tl.where(ok, tl.exp(z - new_max), 0.0)
        vals = tl.load(xw + src[:, None] * stride_x + offs_c[None, :], mask=ok, other=0.0).to(acc_ty)
        acc = acc * scale + p * vals
        run_sum = run_sum * scale + p
        run_max = new_max
    res = tl.where(run_sum > 0, acc / tl.where(run_sum > 0, run_sum, 1.0), 0.0)
    res = tl.where(run_sum != run_sum, float("nan"), res)  # NaN logits propagate, as in the CPU kernel
    res = tl.where(bad[:, None], float("nan"), res)
    tl.store(out + offs_m[:, None] * channels + offs_c[None, :], res.to(out.dtype.element_ty), mask=mc)


def _unit_channel_stride(t: Tensor) -> Tensor:
    return t if t.shape[1] <= 1 or t.stride(1) == 1 else t.contiguous()


@register_triton_op("gnnaccel::triton_gat_aggregate")
def triton_gat_aggregate(rowptr: Tensor, col: Tensor, xw: Tensor, alpha_src: Tensor, alpha_dst: Tensor,
                         rows: Optional[Tensor], head_index: Optional[Tensor], negative_slope: float) -> Tensor:
    """The Triton path of :func:`gnnaccel.ops.gat_aggregate` (arguments validated there; inference only).

    Returns:
        [len(rows) or rowptr.numel() - 1, xw.shape[1]] in xw's dtype.
    """
    check_device(xw, "triton_gat_aggregate")
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    channels, heads = xw.shape[1], alpha_src.shape[1]
    out = torch.empty((num_out, channels), device=xw.device, dtype=xw.dtype)
    if num_out == 0 or channels == 0 or skip_launch(xw):
        return out
    xw, alpha_src, alpha_dst = (_unit_channel_stride(t) for t in (xw, alpha_src, alpha_dst))
    block_m, block_c = 16, min(64, max(16, triton.next_power_of_2(channels)))
    grid = (triton.cdiv(num_out, block_m), triton.cdiv(channels, block_c))
    torch.library.wrap_triton(_gat_kernel)[grid](
        rowptr, col, xw, xw.stride(0), alpha_src, alpha_src.stride(0), alpha_dst, alpha_dst.stride(0),
        rows if rows is not None else rowptr, head_index if head_index is not None else rowptr, out,
        num_out, rowptr.shape[0] - 1, xw.shape[0], col.shape[0], channels, heads,
        max(1, channels // max(heads, 1)), float(negative_slope),
        HAS_ROWS=rows is not None, HAS_HEAD_INDEX=head_index is not None, F64=xw.dtype == torch.float64,
        BLOCK_M=block_m, BLOCK_C=block_c)
    return out
