"""Triton kernel: fused gather -> aggregate -> project at the pruned widths, with self branch and bias.

    out[i] = AGG_{e in CSR row r_i} (w_e x[col[e], neigh_keep]) @ w_neigh + x[s_i, self_keep] @ w_self + bias

(r_i = rows[i] or i, s_i = self_rows[i] or r_i; AGG in sum / mean / max, an empty row aggregates to 0.)

One program owns a tile of BLOCK_M output rows x BLOCK_N output channels. For each BLOCK_K slice of the kept
neighbour channels it walks the rows' edges in lock step, gathers the neighbours' kept channels straight from
the full feature table ``x`` (the channel subset is applied inside the loads: no sliced copy), reduces them in
registers and feeds the tile to ``tl.dot``; the self branch gathers its rows the same way. Accumulation is in
float32 (float64 for float64 inputs; dots in IEEE precision, never TF32), so the result matches the C++
kernels to float32 rounding.

The same kernel without its neighbour branch is the pruned GEMM gather ``x[rows][:, keep] @ W + b``
(``triton_pruned_linear``).

Index safety: indices are range-checked inside the kernel; a row whose CSR row, edge source, self row or a
kept channel is out of range is never read out of bounds and comes out as NaN. (The op entry points also
raise a clear IndexError for CPU tensors; on CUDA that check would cost a host synchronisation.)
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._csr import csr_row_range, kept_channels
from ._launch import REDUCE_CODES, check_device, register_triton_op, skip_launch

@triton.jit
def _fused_layer_kernel(
        rowptr, col, x, stride_x, edge_weight, rows, self_rows, neigh_keep, w_neigh, self_keep, w_self, bias, out,
        num_out, num_rows, num_src, num_edges, num_channels, k_neigh, k_self, d_out,
        HAS_NEIGH: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_ROWS: tl.constexpr, HAS_SELF_ROWS: tl.constexpr,
        HAS_NEIGH_KEEP: tl.constexpr, HAS_SELF: tl.constexpr, HAS_SELF_KEEP: tl.constexpr, HAS_BIAS: tl.constexpr,
        REDUCE: tl.constexpr, F64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
        BLOCK_N: tl.constexpr):
    acc_ty: tl.constexpr = tl.float64 if F64 else tl.float32
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < num_out
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < d_out
    bad = offs_m < 0  # per output row: some index it reads is out of range
    if HAS_ROWS:
        node = tl.load(rows + offs_m, mask=m_mask, other=0).to(tl.int64)
    else:
        node = offs_m
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_ty)

    if HAS_NEIGH:
        start, deg, bad = csr_row_range(rowptr, node, m_mask, num_rows, num_edges, bad)
        max_deg = tl.max(deg, axis=0)
        for k0 in range(0, k_neigh, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_neigh
            channel, ch_ok, bad = kept_channels(neigh_keep, offs_k, k_mask, num_channels, bad, HAS_NEIGH_KEEP)
            if REDUCE == 2:
                agg = tl.full([BLOCK_M, BLOCK_K], float("-inf"), dtype=acc_ty)
            else:
                agg = tl.zeros([BLOCK_M, BLOCK_K], dtype=acc_ty)
            for e in range(0, max_deg):
                valid = e < deg
                src = tl.load(col + start + e, mask=valid, other=0).to(tl.int64)
                src_ok = valid & (src >= 0) & (src < num_src)
                bad = bad | (valid & ~src_ok)
                vals = tl.load(x + src[:, None] * stride_x + channel[None, :],
                               mask=src_ok[:, None] & ch_ok[None, :], other=0.0).to(acc_ty)
                if HAS_WEIGHT:
                    vals = vals * tl.load(edge_weight + start + e, mask=valid, other=0.0).to(acc_ty)[:, None]
                if REDUCE == 2:
                    agg = tl.where(src_ok[:, None], tl.maximum(agg, vals), agg)
                else:
                    agg += vals
            if REDUCE == 1:
                agg = agg / tl.maximum(deg, 1).to(acc_ty)[:, None]
            if REDUCE == 2:
                agg = tl.where((deg > 0)[:, None] & k_mask[None, :], agg, 0.0)
            w = tl.load(w_neigh + offs_k[:, None] * d_out + offs_n[None, :], mask=k_mask[:, None] & n_mask[None, :],
                        other=0.0).to(acc_ty)
            if F64:
                acc += tl.dot(agg, w)
            else:
                acc += tl.dot(agg, w, input_precision="ieee")

    if HAS_SELF:
        if HAS_SELF_ROWS:
            srow = tl.load(self_rows + offs_m, mask=m_mask, other=0).to(tl.int64)
        else:
            srow = node
        srow_ok = m_mask & (srow >= 0) & (srow < num_src)
        bad = bad | (m_mask & ~srow_ok)
        for k0 in range(0, k_self, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_self
            channel, ch_ok, bad = kept_channels(self_keep, offs_k, k_mask, num_channels, bad, HAS_SELF_KEEP)
            xs = tl.load(x + srow[:, None] * stride_x + channel[None, :], mask=srow_ok[:, None] & ch_ok[None, :],
                         other=0.0).to(acc_ty)
            w = tl.load(w_self + offs_k[:, None] * d_out + offs_n[None, :], mask=k_mask[:, None] & n_mask[None, :],
                        other=0.0).to(acc_ty)
            if F64:
                acc += tl.dot(xs, w)
            else:
                acc += tl.dot(xs, w, input_precision="ieee")

    if HAS_BIAS:
        acc += tl.load(bias + offs_n, mask=n_mask, other=0.0).to(acc_ty)[None, :]
    acc = tl.where(bad[:, None], float("nan"), acc)
    tl.store(out + offs_m[:, None] * d_out + offs_n[None, :], acc.to(out.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


def _launch(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows, self_rows, neigh_keep, self_keep, reduce,
            num_out, has_neigh):
    w_main = w_neigh if has_neigh else w_self
    d_out = w_main.shape[1]
    out = torch.empty((num_out, d_out), device=x.device, dtype=x.dtype)
    if num_out == 0 or d_out == 0 or skip_launch(x):
        return out
    if x.shape[1] > 1 and x.stride(1) != 1:
        x = x.contiguous()
    w_neigh = w_neigh.contiguous() if w_neigh is not None else None
    w_self = w_self.contiguous() if w_self is not None else None
    bias = bias.contiguous() if bias is not None else None
    dummy = x
    block_m, block_n, block_k = 16, min(128, max(16, triton.next_power_of_2(d_out))), 32
    grid = (triton.cdiv(num_out, block_m), triton.cdiv(d_out, block_n))
    opt = lambda t: t if t is not None else dummy  # noqa: E731  (never read: the HAS_* flags guard them)
    torch.library.wrap_triton(_fused_layer_kernel)[grid](
        opt(rowptr), opt(col), x, x.stride(0), opt(edge_weight), opt(rows), opt(self_rows), opt(neigh_keep),
        opt(w_neigh), opt(self_keep), opt(w_self), opt(bias), out,
        num_out, rowptr.shape[0] - 1 if rowptr is not None else 0, x.shape[0],
        col.shape[0] if col is not None else 0, x.shape[1],
        w_neigh.shape[0] if w_neigh is not None else 0, w_self.shape[0] if w_self is not None else 0, d_out,
        HAS_NEIGH=has_neigh, HAS_WEIGHT=edge_weight is not None, HAS_ROWS=rows is not None,
        HAS_SELF_ROWS=self_rows is not None, HAS_NEIGH_KEEP=neigh_keep is not None, HAS_SELF=w_self is not None,
        HAS_SELF_KEEP=self_keep is not None, HAS_BIAS=bias is not None, REDUCE=REDUCE_CODES[reduce],
        F64=x.dtype == torch.float64, BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_N=block_n)
    return out


@register_triton_op("gnnaccel::triton_fused_layer")
def triton_fused_layer(rowptr: Tensor, col: Tensor, x: Tensor, w_neigh: Tensor, w_self: Optional[Tensor],
                       bias: Optional[Tensor], edge_weight: Optional[Tensor], rows: Optional[Tensor],
                       self_rows: Optional[Tensor], neigh_keep: Optional[Tensor], self_keep: Optional[Tensor],
                       reduce: str) -> Tensor:
    """The Triton path of :func:`gnnaccel.ops.fused_layer` (arguments validated there); reduce sum/mean/max.

    Returns:
        [len(rows) or rowptr.numel() - 1, w_neigh.shape[1]] in x's dtype.
    """
    check_device(x, "triton_fused_layer")
    if reduce not in ("sum", "mean", "max"):
        raise ValueError(f"triton_fused_layer supports reduce 'sum', 'mean' and 'max', got {reduce!r}")
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    return _launch(rowptr, col, x, w_neigh, w_self, bias, edge_weight, rows, self_rows, neigh_keep, self_keep,
                   reduce, num_out, True)


@register_triton_op("gnnaccel::triton_pruned_linear")
def triton_pruned_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Optional[Tensor],
                         keep: Optional[Tensor]) -> Tensor:
    """The Triton path of :func:`gnnaccel.ops.pruned_linear`: ``x[rows][:, keep] @ weight + bias``.

    Returns:
        [len(rows) or N, weight.shape[1]] in x's dtype.
    """
    check_device(x, "triton_pruned_linear")
    num_out = rows.shape[0] if rows is not None else x.shape[0]
    return _launch(None, None, x, None, weight, bias, None, None, rows, None, keep, "sum", num_out, False)
