"""Triton kernel: fused gather -> aggregate -> project at reduced channel widths (CUDA; CPU via the interpreter).

    out[r] = reduce_{e in row(r)} w_e * x[col[e], neigh_keep] @ W_neigh  (+ x[row(r), self_keep] @ W_self)  (+ b)

One program owns a tile of BLOCK_M output rows x BLOCK_N output channels. For each BLOCK_K slice of the kept
neighbour channels it gathers the rows' neighbours straight from ``x`` (no gathered copy in memory), reduces
them in registers (sum or mean, optional edge weights: GCN's normalised adjacency is a weighted sum) and feeds
the tile to ``tl.dot``. The pruned model's channel subsets (``neigh_keep``/``self_keep``) are applied inside the
loads, so a pruned model never materialises its sliced feature table. Accumulation is in float32 (bf16/fp16
inputs are cast before ``tl.dot``: the interpreter gets bf16 dots wrong).

Exposed as the operator ``gnnaccel::fused_aggregate_project`` through ``torch.library.triton_op`` so that
torch.compile sees into it. On CPU tensors it only runs under ``TRITON_INTERPRET=1`` (set before import), which
is how the tests check its logic without a GPU.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _fused_aggregate_project_kernel(
        rowptr, col, x, stride_x, edge_weight, rows, neigh_keep, w_neigh, self_keep, w_self, bias, out,
        num_out, k_neigh, k_self, d_out,
        HAS_WEIGHT: tl.constexpr, HAS_ROWS: tl.constexpr, HAS_NEIGH_KEEP: tl.constexpr, HAS_SELF: tl.constexpr,
        HAS_SELF_KEEP: tl.constexpr, HAS_BIAS: tl.constexpr, MEAN: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < num_out
    if HAS_ROWS:
        node = tl.load(rows + offs_m, mask=m_mask, other=0).to(tl.int64)
    else:
        node = offs_m.to(tl.int64)
    start = tl.load(rowptr + node, mask=m_mask, other=0).to(tl.int64)
    end = tl.load(rowptr + node + 1, mask=m_mask, other=0).to(tl.int64)
    deg = end - start
    max_deg = tl.max(deg, axis=0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < d_out
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)

    for k0 in range(0, k_neigh, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < k_neigh
        if HAS_NEIGH_KEEP:
            channel = tl.load(neigh_keep + offs_k, mask=k_mask, other=0).to(tl.int64)
        else:
            channel = offs_k.to(tl.int64)
        agg = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for e in range(0, max_deg):
            valid = (e < deg) & m_mask
            src = tl.load(col + start + e, mask=valid, other=0).to(tl.int64)
            vals = tl.load(x + src[:, None] * stride_x + channel[None, :], mask=valid[:, None] & k_mask[None, :],
                           other=0.0).to(tl.float32)
            if HAS_WEIGHT:
                vals = vals * tl.load(edge_weight + start + e, mask=valid, other=0.0).to(tl.float32)[:, None]
            agg += vals
        if MEAN:
            agg = agg / tl.maximum(deg, 1).to(tl.float32)[:, None]
        w = tl.load(w_neigh + offs_k[:, None] * d_out + offs_n[None, :], mask=k_mask[:, None] & n_mask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.dot(agg, w)

    if HAS_SELF:
        for k0 in range(0, k_self, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_self
            if HAS_SELF_KEEP:
                channel = tl.load(self_keep + offs_k, mask=k_mask, other=0).to(tl.int64)
            else:
                channel = offs_k.to(tl.int64)
            xs = tl.load(x + node[:, None] * stride_x + channel[None, :], mask=m_mask[:, None] & k_mask[None, :],
                         other=0.0).to(tl.float32)
            w = tl.load(w_self + offs_k[:, None] * d_out + offs_n[None, :], mask=k_mask[:, None] & n_mask[None, :],
                        other=0.0).to(tl.float32)
            acc += tl.dot(xs, w)

    if HAS_BIAS:
        acc += tl.load(bias + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(out + offs_m[:, None] * d_out + offs_n[None, :], acc.to(out.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


def _check(rowptr, col, x, w_neigh, edge_weight, rows, neigh_keep, w_self, self_keep, bias, reduce):
    if reduce not in ("sum", "mean"):
        raise ValueError(f"fused_aggregate_project supports reduce 'sum' and 'mean', got {reduce!r}")
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError("x must be 2-D with unit stride along channels")
    k_neigh = neigh_keep.numel() if neigh_keep is not None else x.shape[1]
    if w_neigh.dim() != 2 or w_neigh.shape[0] != k_neigh or not w_neigh.is_contiguous():
        raise ValueError(f"w_neigh must be a contiguous [{k_neigh}, out] matrix, got {list(w_neigh.shape)}")
    if w_self is not None:
        k_self = self_keep.numel() if self_keep is not None else x.shape[1]
        if w_self.shape != (k_self, w_neigh.shape[1]) or not w_self.is_contiguous():
            raise ValueError(f"w_self must be a contiguous [{k_self}, {w_neigh.shape[1]}] matrix")
    if bias is not None and bias.shape != (w_neigh.shape[1],):
        raise ValueError(f"bias must have shape [{w_neigh.shape[1]}]")
    if edge_weight is not None and edge_weight.shape != col.shape:
        raise ValueError("edge_weight must have one entry per edge")
    if not (x.is_cuda or INTERPRET):
        raise RuntimeError("fused_aggregate_project runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")


@torch.library.triton_op("gnnaccel::fused_aggregate_project", mutates_args={})
def fused_aggregate_project(rowptr: Tensor, col: Tensor, x: Tensor, w_neigh: Tensor,
                            edge_weight: Optional[Tensor] = None, rows: Optional[Tensor] = None,
                            neigh_keep: Optional[Tensor] = None, w_self: Optional[Tensor] = None,
                            self_keep: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                            reduce: str = "mean") -> Tensor:
    """``reduce_e w_e x[col[e], neigh_keep] @ w_neigh + x[row, self_keep] @ w_self + bias`` per output row.

    Weights are in [in, out] orientation. ``rows`` selects output rows (default: all rows of the CSR).
    """
    _check(rowptr, col, x, w_neigh, edge_weight, rows, neigh_keep, w_self, self_keep, bias, reduce)
    num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
    d_out = w_neigh.shape[1]
    out = torch.empty((num_out, d_out), device=x.device, dtype=x.dtype)
    if num_out == 0 or d_out == 0:
        return out
    k_neigh = w_neigh.shape[0]
    k_self = w_self.shape[0] if w_self is not None else 0
    block_m = 16
    block_n = min(128, max(16, triton.next_power_of_2(d_out)))
    block_k = 32
    dummy = w_neigh  # never read: the HAS_* flags guard every optional pointer
    grid = (triton.cdiv(num_out, block_m), triton.cdiv(d_out, block_n))
    torch.library.wrap_triton(_fused_aggregate_project_kernel)[grid](
        rowptr, col, x, x.stride(0), edge_weight if edge_weight is not None else dummy,
        rows if rows is not None else rowptr, neigh_keep if neigh_keep is not None else rowptr, w_neigh,
        self_keep if self_keep is not None else rowptr, w_self if w_self is not None else dummy,
        bias if bias is not None else dummy, out, num_out, k_neigh, k_self, d_out,
        HAS_WEIGHT=edge_weight is not None, HAS_ROWS=rows is not None, HAS_NEIGH_KEEP=neigh_keep is not None,
        HAS_SELF=w_self is not None, HAS_SELF_KEEP=self_keep is not None, HAS_BIAS=bias is not None,
        MEAN=reduce == "mean", BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_N=block_n)
    return out
