"""Rank updates of symmetric matrices on the blocks on and above the diagonal only.

``C += alpha * A' B`` with a symmetric product (``A = B``, or ``A' B`` symmetric in exact arithmetic as
``G_RU pinv(G_UU) G_UR``) costs one GEMM of ``r x n x r``; multiplying only the 10 of 16 blocks (4 x 4 grid) on
and above the diagonal costs 5/8 of it, at the sizes where it matters (the calibration moments and the Schur
complement of the batched scheme's first layer, r ~ 4000-14000). The lower blocks are then copied from the
upper ones, so the result is exactly symmetric.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import Tensor

BLOCKS = 4
# Below this size one GEMM call costs less than the ten block calls save.
MIN_BLOCKED_SIZE = 1024


def _spans(r: int, blocks: int) -> List[slice]:
    blocks = blocks if r >= MIN_BLOCKED_SIZE else 1
    edges = [round(i * r / blocks) for i in range(blocks + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def upper_blocks(r: int, blocks: int = BLOCKS) -> List[Tuple[slice, slice]]:
    """The (rows, columns) slices of the blocks on and above the diagonal of an r x r matrix."""
    spans = _spans(r, blocks)
    return [(si, sj) for i, si in enumerate(spans) for sj in spans[i:]]


def add_upper_product_(C: Tensor, A: Tensor, B: Tensor, alpha: float = 1.0, blocks: int = BLOCKS) -> None:
    """``C[i, j] += alpha * (A' B)[i, j]`` for the blocks on and above the diagonal; the blocks below are left
    as they are (call :func:`mirror_upper_` once the accumulation is done)."""
    for si, sj in upper_blocks(C.shape[0], blocks):
        C[si, sj].addmm_(A[:, si].T, B[:, sj], alpha=alpha)


def mirror_upper_(C: Tensor, blocks: int = BLOCKS) -> Tensor:
    """Copy the blocks above the diagonal below it and average the diagonal blocks with their transposes:
    ``C`` becomes exactly symmetric. Returns ``C``."""
    spans = _spans(C.shape[0], blocks)
    for i, si in enumerate(spans):
        C[si, si] = 0.5 * (C[si, si] + C[si, si].T)
        for sj in spans[i + 1:]:
            C[sj, si] = C[si, sj].T
    return C
