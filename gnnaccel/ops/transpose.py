"""The transpose of a CSR graph: the one builder (``aggregate``'s backward, ``Graph.transpose`` and the cache's
receptive-field code use it).

Pure tensor code whose sizes come from shapes only, so it traces under ``torch.compile``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["CSRTranspose", "csr_transpose"]


class CSRTranspose(NamedTuple):
    """The reversed edges of a CSR graph ``(rowptr, col)`` (row ``i`` aggregates from ``col``).

    row: int64 [E], the row (destination) of every edge, in CSR order.
    order: int64 [E], the edges sorted by source (``col``), stable: reversed edge ``k`` is edge ``order[k]``.
    rowptr: [num_src + 1] (``rowptr``'s dtype), CSR of the reversed graph: row ``j`` lists the edges leaving ``j``.
    col: [E] (``rowptr``'s dtype), their destinations, ``row[order]``.
    """

    row: Tensor
    order: Tensor
    rowptr: Tensor
    col: Tensor


def csr_transpose(rowptr: Tensor, col: Tensor, num_src: Optional[int] = None) -> CSRTranspose:
    """Transpose the CSR graph ``(rowptr, col)``.

    Args:
        rowptr: [num_rows + 1] int32/int64 row pointer.
        col: [E] source of every edge (same dtype as ``rowptr``).
        num_src: number of source nodes (rows of the transpose); default ``num_rows`` (a square graph).
    Returns:
        :class:`CSRTranspose` (within a reversed row, edges keep their CSR order).
    """
    if num_src is None:
        num_src = rowptr.shape[0] - 1
    src = col.long()
    edges = torch.arange(src.shape[0], device=rowptr.device, dtype=rowptr.dtype)
    row = torch.searchsorted(rowptr[1:], edges, right=True).long()
    order = torch.argsort(src, stable=True)
    counts = torch.zeros(num_src, dtype=torch.long, device=src.device).index_add_(0, src, torch.ones_like(src))
    t_rowptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).to(rowptr.dtype)
    return CSRTranspose(row, order, t_rowptr, row[order].to(rowptr.dtype))
