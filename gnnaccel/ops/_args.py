"""Argument checks shared by the op entry points (static: dtype, dims and shapes only, so they trace).

Index tensors (``rows``, ``self_rows``, ``keep``) must be int32/int64 and 1-D: a float or bool tensor is a
TypeError, never truncated or used as a mask. Value ranges are checked by the kernels (TORCH_CHECK in C++);
node ids from users go through :func:`gnnaccel.ids.as_node_ids` where they enter the library.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

INDEX_DTYPES = (torch.int32, torch.int64)
_INT32_MAX = 2 ** 31 - 1


def check_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_features(name: str, x) -> None:
    if isinstance(x, Tensor) and x.is_floating_point() and x.dim() == 2:  # fast path (per-call overhead)
        return
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [nodes, channels], got shape {list(x.shape)}")


def check_index(name: str, idx) -> None:
    """``idx`` (if not None) must be a 1-D int32/int64 tensor."""
    if idx is None or (isinstance(idx, Tensor) and idx.dtype in INDEX_DTYPES and idx.dim() == 1):
        return
    if not isinstance(idx, Tensor):
        raise TypeError(f"{name} must be a 1-D int32/int64 torch.Tensor, got {type(idx).__name__} "
                        "(convert node ids with gnnaccel.ids.as_node_ids)")
    if idx.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must hold int32 or int64 indices, got {idx.dtype}"
                        + (" (a boolean mask is not a list of rows: use mask.nonzero())" if idx.dtype == torch.bool
                           else ""))
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(idx.shape)}")


def check_csr(rowptr, col) -> None:
    if (isinstance(rowptr, Tensor) and isinstance(col, Tensor) and rowptr.dtype in INDEX_DTYPES
            and col.dtype == rowptr.dtype and rowptr.dim() == 1 and col.dim() == 1 and rowptr.shape[0] >= 1):
        return  # fast path (per-call overhead); the checks below name the problem
    for name, t in (("rowptr", rowptr), ("col", col)):
        check_tensor(name, t)
        if t.dtype not in INDEX_DTYPES:
            raise TypeError(f"{name} must be int32 or int64, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {list(t.shape)}")
    if col.dtype != rowptr.dtype:
        raise TypeError(f"col and rowptr must share a dtype, got {col.dtype} and {rowptr.dtype}")
    if rowptr.shape[0] < 1:
        raise ValueError("rowptr must have at least one entry (num_rows + 1)")


def check_edge_weight(edge_weight, col: Tensor, x: Tensor) -> None:
    """``edge_weight`` (if not None) must be [E] in x's dtype."""
    if edge_weight is None:
        return
    check_tensor("edge_weight", edge_weight)
    if edge_weight.dtype != x.dtype:
        raise TypeError(f"edge_weight dtype {edge_weight.dtype} must match x dtype {x.dtype}")
    if edge_weight.dim() != 1 or edge_weight.shape[0] != col.shape[0]:
        raise ValueError(f"edge_weight has {edge_weight.numel()} entries but the graph has {col.shape[0]} edges "
                         f"(it must be 1-D, one weight per edge), got shape {list(edge_weight.shape)}")


def check_same_dtype(name: str, t, x: Tensor) -> None:
    if t is not None and (not isinstance(t, Tensor) or t.dtype != x.dtype):
        raise TypeError(f"{name} must be a tensor of x's dtype {x.dtype}, got {getattr(t, 'dtype', type(t).__name__)}")


def rows_for_graph(rows: Optional[Tensor], rowptr: Tensor) -> Optional[Tensor]:
    """``rows`` in the index dtype of the graph, for the C++ kernels (which TORCH_CHECK the range).

    Widening is exact. Narrowing int64 rows onto an int32 graph clamps first, so that a row id outside the
    int32 range stays out of range (and is reported by the kernel) instead of wrapping onto a valid row.
    """
    if rows is None or rows.dtype == rowptr.dtype:
        return rows
    if rowptr.dtype == torch.int64:
        return rows.long()
    return rows.clamp(-1, _INT32_MAX).to(torch.int32)


def check_bounds_eager(name: str, idx: Optional[Tensor], bound: int, what: str) -> None:
    """Range check where it costs no device synchronisation (CPU tensors, eager mode): the Triton and torch
    paths have no TORCH_CHECK of their own."""
    if idx is None or idx.numel() == 0 or idx.device.type != "cpu" or torch.compiler.is_compiling():
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= bound:
        raise IndexError(f"{name} holds index {lo if lo < 0 else hi}, outside [0, {bound}) ({what})")


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
