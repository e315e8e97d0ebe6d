"""``gnnaccel::expand_hop``: one hop of the k-hop support of a batch (frontier + re-indexed local CSR block).

Batched inference of an L-layer model on a few target nodes needs, per layer, only the rows of the nodes that the
next layer reads. :func:`expand_hop` computes one hop: from the seed nodes, their (all or sampled) neighbours,
de-duplicated into a compact *frontier* list, and a local CSR block whose row ``r`` aggregates seed ``r`` from
positions in the frontier. With ``h = features of frontier`` (a compact buffer),
``aggregate(block.rowptr, block.col, h, "mean")`` gives the neighbour aggregation of every seed.
:func:`k_hop_support` chains it over the layers of a model.

Output sizes depend on the data, so the op is eager-only: its fake kernel allocates dynamic sizes
(``torch.library.get_ctx().new_dynamic_size()``) so that code containing it still traces, but the support is meant
to be computed outside compiled regions.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .._library import EXTENSION_LOADED, require_extension

ALL_NEIGHBOURS = -1
_MASK64 = (1 << 64) - 1


class HopBlock(NamedTuple):
    """One hop of the support.

    frontier: [F] node ids; ``frontier[:S] == seeds`` (as given), then the newly reached nodes, distinct, in
        first-seen order.
    rowptr: [S + 1] local CSR row pointer, row ``r`` = seed ``r`` (empty when the seed was skipped).
    col: [E_local] positions into ``frontier`` (``frontier[col]`` are the source nodes).
    edge_ids: [E_local] global edge ids (index into the graph's ``col`` / ``edge_weight``).
    """

    frontier: Tensor
    rowptr: Tensor
    col: Tensor
    edge_ids: Tensor

    @property
    def num_seeds(self) -> int:
        return self.rowptr.numel() - 1


def _check_index_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be an int32 or int64 tensor, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(t.shape)}")


def _check_fanout(fanout) -> int:
    if fanout is None:
        return ALL_NEIGHBOURS
    if isinstance(fanout, bool) or not isinstance(fanout, int):
        raise TypeError(f"fanout must be an int (-1 or None = all neighbours), got {fanout!r}")
    if fanout < -1:
        raise ValueError(f"fanout must be -1 / None (all neighbours) or >= 0, got {fanout}")
    return fanout


def _check_random_seed(random_seed) -> int:
    if isinstance(random_seed, bool) or not isinstance(random_seed, int):
        raise TypeError(f"random_seed must be an int, got {random_seed!r}")
    # The op takes a signed 64-bit int; fold any Python int into that range.
    random_seed &= _MASK64
    return random_seed - (1 << 64) if random_seed >= 1 << 63 else random_seed


def expand_hop(rowptr: Tensor, col: Tensor, seeds: Tensor, fanout: Optional[int] = ALL_NEIGHBOURS,
               random_seed: int = 0, skip: Optional[Tensor] = None) -> HopBlock:
    """One hop of the support of ``seeds`` in the CSR graph ``(rowptr, col)`` (row ``i`` aggregates from ``col``).

    fanout: ``-1``/``None`` = every neighbour (exact); ``k >= 0`` = ``k`` neighbours drawn uniformly with
        replacement (a row without neighbours gets none). The draws are a pure function of
        ``(random_seed, node, draw index)``: reproducible, independent of threads and of the rest of the batch.
    skip: optional bool mask over ``seeds``; a skipped seed keeps its row (and its place in the frontier) but the row
        is empty and its neighbours are not gathered (use it for seeds whose output is cached).

    ``seeds`` may be empty (an empty block) and may hold duplicates (kept as given). Returns a :class:`HopBlock`
    whose tensors have the index dtype of ``rowptr``. Eager-only: output sizes depend on the data.
    """
    require_extension()
    _check_index_tensor("rowptr", rowptr)
    _check_index_tensor("col", col)
    _check_index_tensor("seeds", seeds)
    if col.dtype != rowptr.dtype:
        raise TypeError(f"col and rowptr must share a dtype, got {col.dtype} and {rowptr.dtype}")
    if rowptr.numel() < 1:
        raise ValueError("rowptr must have num_nodes + 1 >= 1 entries")
    fanout = _check_fanout(fanout)
    random_seed = _check_random_seed(random_seed)
    num_nodes = rowptr.numel() - 1
    if seeds.numel():
        lo, hi = int(seeds.min()), int(seeds.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"seeds must be node ids in [0, {num_nodes}), got values in [{lo}, {hi}]")
    if skip is not None:
        if not isinstance(skip, Tensor) or skip.dtype != torch.bool:
            raise TypeError(f"skip must be a bool tensor, got {getattr(skip, 'dtype', type(skip).__name__)}")
        if skip.shape != seeds.shape:
            raise ValueError(f"skip must have one entry per seed ({seeds.numel()}), got shape {list(skip.shape)}")
        skip = skip.contiguous()
    seeds = seeds.to(rowptr.dtype).contiguous()
    return HopBlock(*torch.ops.gnnaccel.expand_hop(rowptr.contiguous(), col.contiguous(), seeds, fanout,
                                                   random_seed, skip))


def hop_random_seed(random_seed: int, layer: int) -> int:
    """The random seed of one layer's hop, derived from the batch seed (SplitMix64 of the pair)."""
    z = (random_seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _check_random_seed(z ^ (z >> 31))


def k_hop_support(rowptr: Tensor, col: Tensor, targets: Tensor,
                  fanouts: Sequence[Union[int, None]], random_seed: int = 0) -> List[HopBlock]:
    """The support of ``targets`` for a model with ``len(fanouts)`` layers, without a cache.

    ``fanouts[l]`` is the fanout of layer ``l`` (layer 0 reads the raw features; the last layer runs on the
    targets), as in ``BatchedEngine``. Hops are expanded from the targets outwards (the last layer's hop first,
    layer 0's hop last); the result is returned **in layer order**: ``blocks[l]`` is the block that layer ``l``
    aggregates on, its seeds are ``blocks[l + 1].frontier`` (the targets for the last layer) and its sources are
    ``blocks[l].frontier``. Layer ``l`` uses the random seed ``hop_random_seed(random_seed, l)``.
    """
    _check_index_tensor("targets", targets)
    if targets.numel() == 0:
        raise ValueError("targets is empty: give at least one target node")
    if not isinstance(fanouts, (list, tuple)) or len(fanouts) == 0:
        raise ValueError(f"fanouts must be a non-empty list with one entry per layer, got {fanouts!r}")
    blocks: List[HopBlock] = []
    seeds = targets
    for layer in reversed(range(len(fanouts))):
        block = expand_hop(rowptr, col, seeds, fanouts[layer], hop_random_seed(random_seed, layer))
        blocks.append(block)
        seeds = block.frontier
    return blocks[::-1]


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::expand_hop")
    def _expand_hop_fake(rowptr, col, seeds, fanout, random_seed, skip):
        torch._check(rowptr.dim() == 1, lambda: "rowptr must be 1-D")
        torch._check(col.dim() == 1, lambda: "col must be 1-D")
        torch._check(seeds.dim() == 1, lambda: "seeds must be 1-D")
        ctx = torch.library.get_ctx()
        num_frontier = ctx.new_dynamic_size()
        num_local_edges = ctx.new_dynamic_size()
        return (rowptr.new_empty(num_frontier), rowptr.new_empty(seeds.shape[0] + 1),
                rowptr.new_empty(num_local_edges), rowptr.new_empty(num_local_edges))
