"""``gnnaccel::aggregate``: sparse neighbourhood reduction over a CSR graph (fake kernel, autograd, API)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension

REDUCTIONS = ("sum", "mean", "max", "min")


def _canonical_reduce(reduce: str) -> str:
    reduce = "sum" if reduce == "add" else reduce
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return reduce


def aggregate(rowptr: Tensor, col: Tensor, x: Tensor, reduce: str = "mean", edge_weight: Optional[Tensor] = None,
              rows: Optional[Tensor] = None) -> Tensor:
    """``out[r] = reduce_{e in row(r)} edge_weight[e] * x[col[e]]`` with ``row(r) = rows[r]`` (or ``r``).

    ``rowptr``/``col`` are a CSR adjacency whose row ``i`` lists the nodes that ``i`` aggregates from.
    An empty row gives 0 for every reduction (PyG's convention). ``rows`` restricts the computation to those
    rows (batched and layer-wise inference); the output then has ``len(rows)`` rows.
    """
    require_extension()
    reduce = _canonical_reduce(reduce)
    for name, t in (("rowptr", rowptr), ("col", col), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if rows is not None and rows.dtype != rowptr.dtype:
        rows = rows.to(rowptr.dtype)
    out, _ = torch.ops.gnnaccel.aggregate(rowptr, col, x, edge_weight, rows, reduce)
    return out


def _edges_of_rows(rowptr: Tensor, rows: Optional[Tensor], num_out: int):
    """Per edge of the selected rows: (output row, edge id, degree of its row). Data-dependent sizes: eager only."""
    deg_all = rowptr[1:] - rowptr[:-1]
    if rows is None:
        deg = deg_all.long()
        edge_ids = torch.arange(int(rowptr[-1]), device=rowptr.device)
        starts = None
    else:
        deg = deg_all[rows.long()].long()
        starts = rowptr[rows.long()].long()
    out_row = torch.repeat_interleave(torch.arange(num_out, device=rowptr.device), deg)
    if starts is not None:
        offsets = torch.cumsum(deg, 0) - deg
        edge_ids = starts[out_row] + torch.arange(out_row.numel(), device=rowptr.device) - offsets[out_row]
    return out_row, edge_ids, deg


def _setup_context(ctx, inputs, output):
    rowptr, col, x, edge_weight, rows, reduce = inputs
    _, arg = output
    ctx.reduce = _canonical_reduce(reduce)
    ctx.num_src = x.shape[0]
    ctx.save_for_backward(rowptr, col, x, edge_weight, rows, arg)


def _backward(ctx, grad_out, _grad_arg):
    rowptr, col, x, edge_weight, rows, arg = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
    grad_x = grad_w = None
    grad_out = grad_out.contiguous()
    channels = grad_out.shape[1]
    if ctx.reduce in ("sum", "mean"):
        out_row, edge_ids, deg = _edges_of_rows(rowptr, rows, grad_out.shape[0])
        scale = torch.ones(edge_ids.numel(), dtype=grad_out.dtype, device=grad_out.device)
        if ctx.reduce == "mean":
            scale = scale / deg[out_row].to(grad_out.dtype)
        src = col[edge_ids].long()
        if need_x:
            # d out[r] / d x[j] flows along the reversed edges: a sum-aggregation over the transposed graph.
            weight = scale * edge_weight[edge_ids] if edge_weight is not None else scale
            order = torch.argsort(src, stable=True)
            counts = torch.bincount(src, minlength=ctx.num_src)
            t_rowptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).to(rowptr.dtype)
            t_col = out_row[order].to(rowptr.dtype)
            grad_x, _ = torch.ops.gnnaccel.aggregate(t_rowptr, t_col, grad_out, weight[order].contiguous(), None, "sum")
        if need_w:
            per_edge = (grad_out[out_row] * x[src]).sum(-1) * scale
            grad_w = torch.zeros_like(edge_weight).index_add_(0, edge_ids, per_edge)
    else:
        won = arg >= 0
        edge = arg[won]
        src = col[edge].long()
        channel = torch.nonzero(won)[:, 1]
        g = grad_out[won]
        if need_x:
            contrib = g * edge_weight[edge] if edge_weight is not None else g
            grad_x = torch.zeros(ctx.num_src * channels, dtype=grad_out.dtype, device=grad_out.device)
            grad_x.index_add_(0, src * channels + channel, contrib)
            grad_x = grad_x.view(ctx.num_src, channels)
        if need_w:
            grad_w = torch.zeros_like(edge_weight).index_add_(0, edge, g * x[src, channel])
    return None, None, grad_x, grad_w, None, None


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::aggregate")
    def _aggregate_fake(rowptr, col, x, edge_weight, rows, reduce):
        torch._check(rowptr.dim() == 1, lambda: "rowptr must be 1-D")
        torch._check(col.dim() == 1, lambda: "col must be 1-D")
        torch._check(x.dim() == 2, lambda: "x must be 2-D")
        num_out = rows.shape[0] if rows is not None else rowptr.shape[0] - 1
        out = x.new_empty((num_out, x.shape[1]))
        arg_shape = (num_out, x.shape[1]) if _canonical_reduce(reduce) in ("max", "min") else (0,)
        return out, x.new_empty(arg_shape, dtype=torch.long)

    torch.library.register_autograd("gnnaccel::aggregate", _backward, setup_context=_setup_context)
