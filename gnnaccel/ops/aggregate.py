"""``gnnaccel::aggregate``: sparse neighbourhood reduction over a CSR graph (fake kernel, autograd, API)."""
from __future__ import annotations

import weakref
from typing import Dict, Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension
from ..backend import kernel_backend
from .transpose import CSRTranspose, csr_transpose
from . import torch_backend
from ._args import (check_bounds_eager, check_csr, check_edge_weight, check_features, check_index, needs_grad,
                    rows_for_graph)

REDUCTIONS = ("sum", "mean", "max", "min")


def _canonical_reduce(reduce: str) -> str:
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return reduce


def aggregate(rowptr: Tensor, col: Tensor, x: Tensor, reduce: str = "mean", edge_weight: Optional[Tensor] = None,
              rows: Optional[Tensor] = None) -> Tensor:
    """``out[r] = reduce_{e in row(r)} edge_weight[e] * x[col[e]]`` with ``row(r) = rows[r]`` (or ``r``).

    Args:
        rowptr, col: CSR adjacency (int32/int64) whose row ``i`` lists the nodes that ``i`` aggregates from.
        x: [N, C] floating-point features (``col`` indexes its rows).
        reduce: "sum", "mean", "max" or "min". An empty row gives 0 for every reduction (PyG's convention).
        edge_weight: optional [E] weight of every edge.
        rows: optional 1-D int32/int64 CSR rows to compute (batched and layer-wise inference).
    Returns:
        [len(rows) or num_rows, C]. Runs the kernels of :func:`gnnaccel.backend.kernel_backend`; differentiable
        (while autograd records, the "triton" backend runs the compiled op, which has a backward formula).
    """
    reduce = _canonical_reduce(reduce)
    check_csr(rowptr, col)
    check_features("x", x)
    check_index("rows", rows)
    check_edge_weight(edge_weight, col, x)
    backend = kernel_backend(x.device)
    grad = needs_grad(x, edge_weight)
    if backend == "torch":
        return torch_backend.aggregate(rowptr, col, x, reduce, edge_weight, rows)
    if backend == "triton" and not grad:
        check_bounds_eager("rows", rows, rowptr.shape[0] - 1, "rows of the CSR")
        check_bounds_eager("col", col, x.shape[0], "rows of x")
        return torch.ops.gnnaccel.triton_aggregate(rowptr, col, x, edge_weight, rows, None, None, reduce)
    require_extension()
    # max/min record the winning edge only when a gradient will be asked for.
    out, _ = torch.ops.gnnaccel.aggregate(rowptr, col, x.contiguous(), edge_weight, rows_for_graph(rows, rowptr),
                                          reduce, grad)
    return out


# The transpose of a graph, memoised while its rowptr and col live and are not modified in place: training
# runs the backward on the same graph every step, and the stable sort by source is about a quarter of a
# training step of a 2-layer GraphSAGE on a 4M-edge graph. Keyed by id(col) with weak references (a tensor's
# == is elementwise, so a WeakKeyDictionary cannot hold tensors), so an entry dies with its graph; the version
# counters catch in-place edits. It holds ~24 bytes per edge while the graph lives (the price of not sorting
# every step). Not used while tracing (fake or functional tensors).
_TRANSPOSES: Dict[int, tuple] = {}


def _transpose(rowptr: Tensor, col: Tensor, num_src: int) -> CSRTranspose:
    """The transpose of the graph (rowptr, col) (built by :func:`gnnaccel.ops.transpose.csr_transpose`)."""
    if type(col) is not Tensor or type(rowptr) is not Tensor or torch.compiler.is_compiling():
        return csr_transpose(rowptr, col, num_src)
    try:
        stamp = (rowptr._version, col._version, num_src)
    except RuntimeError:  # inference tensors keep no version counter: do not memoise
        return csr_transpose(rowptr, col, num_src)
    hit = _TRANSPOSES.get(id(col))
    if hit is not None and hit[0]() is col and hit[1]() is rowptr and hit[2] == stamp:
        return hit[3]
    result = csr_transpose(rowptr, col, num_src)
    if hit is None or hit[0]() is not col:
        weakref.finalize(col, _TRANSPOSES.pop, id(col), None)
    _TRANSPOSES[id(col)] = (weakref.ref(col), weakref.ref(rowptr), stamp, result)
    return result


def _setup_context(ctx, inputs, output):
    rowptr, col, x, edge_weight, rows, reduce, compute_arg = inputs
    _, arg = output
    ctx.reduce = _canonical_reduce(reduce)
    ctx.has_arg = compute_arg
    ctx.num_src = x.shape[0]
    ctx.save_for_backward(rowptr, col, x, edge_weight, rows, arg)


def _backward(ctx, grad_out, _grad_arg):
    """The gradients in x's dtype; sums over edges accumulate in float32 for bfloat16 / float16 (the gradient
    of x through the aggregate kernel, the others widened with torch_backend._widen and rounded once)."""
    rowptr, col, x, edge_weight, rows, arg = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
    grad_x = grad_w = None
    num_rows, num_edges, channels = rowptr.shape[0] - 1, col.shape[0], grad_out.shape[1]
    grad_out = grad_out.contiguous()
    dtype = grad_out.dtype
    widen = torch_backend._widen
    if num_edges == 0:
        return (None, None, torch.zeros_like(x) if need_x else None,
                torch.zeros_like(edge_weight) if need_w else None, None, None, None)
    src = col.long()
    if ctx.reduce in ("sum", "mean"):
        if rows is not None:
            # out = P @ agg(x) with P selecting rows: pull the gradient back onto the full row set first.
            grad_out = grad_out.new_zeros(num_rows, channels).index_add_(0, rows.long(), grad_out)
        tr = _transpose(rowptr, col, ctx.num_src)
        row = tr.row
        acc_dtype = widen(grad_out[:0]).dtype
        scale = torch.ones(num_edges, dtype=acc_dtype, device=grad_out.device)
        if ctx.reduce == "mean":
            deg = (rowptr[1:] - rowptr[:-1]).to(acc_dtype)
            scale = scale / deg[row]
        if need_x:
            # d out[i] / d x[j] flows along the reversed edges: a sum-aggregation over the transposed graph.
            weight = scale * widen(edge_weight) if edge_weight is not None else scale
            weight = weight[tr.order].to(dtype).contiguous()
            grad_x, _ = torch.ops.gnnaccel.aggregate(tr.rowptr, tr.col, grad_out, weight, None, "sum", False)
        if need_w:
            grad_w = ((widen(grad_out[row]) * widen(x[src])).sum(-1) * scale).to(dtype)
    else:
        if not ctx.has_arg:
            raise RuntimeError("gnnaccel::aggregate: max/min backward needs compute_arg=True in the forward call")
        # arg holds the winning edge per (output row, channel), -1 for empty rows: those contribute nothing.
        won = (arg >= 0).to(grad_out.dtype)
        edge = arg.clamp_min(0)
        g = grad_out * won
        channel = torch.arange(channels, device=arg.device).expand_as(arg)
        src_e = src[edge]
        g = widen(g)
        if need_x:
            contrib = g * widen(edge_weight[edge]) if edge_weight is not None else g
            grad_x = torch.zeros(ctx.num_src * channels, dtype=g.dtype, device=grad_out.device)
            grad_x = grad_x.index_add_(0, (src_e * channels + channel).flatten(), contrib.flatten())
            grad_x = grad_x.view(ctx.num_src, channels).to(dtype)
        if need_w:
            grad_w = torch.zeros(edge_weight.shape, dtype=g.dtype, device=edge_weight.device).index_add_(
                0, edge.flatten(), (g * widen(x[src_e, channel])).flatten()).to(dtype)
    return None, None, grad_x, grad_w, None, None, None


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::aggregate")
    def _aggregate_fake(rowptr, col, x, edge_weight, rows, reduce, compute_arg=False):
        torch._check(rowptr.dim() == 1, lambda: "rowptr must be 1-D")
        torch._check(col.dim() == 1, lambda: "col must be 1-D")
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        out = x.new_empty((num_out, x.shape[1]))
        with_arg = compute_arg and _canonical_reduce(reduce) in ("max", "min")
        arg_shape = (num_out, x.shape[1]) if with_arg else (0,)
        return out, x.new_empty(arg_shape, dtype=torch.long)

    torch.library.register_autograd("gnnaccel::aggregate", _backward, setup_context=_setup_context)
