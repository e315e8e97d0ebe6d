"""``gnnaccel::expand_hop``: one hop of the k-hop support of a batch (frontier + re-indexed local CSR block).

Batched inference of an L-layer model on a few target nodes needs, per layer, only the rows of the nodes that the
next layer reads. :func:`expand_hop` computes one hop: from the seed nodes, their (all or sampled) neighbours,
de-duplicated into a compact *frontier* list, and a local CSR block whose row ``r`` aggregates seed ``r`` from
positions in the frontier. With ``h = features of frontier`` (a compact buffer),
``aggregate(block.rowptr, block.col, h, "mean")`` gives the neighbour aggregation of every seed.
:func:`k_hop_support` chains it over the layers of a model.

Devices: the CPU kernel (C++), the CUDA kernel (``csrc/ops/cuda/expand_hop_kernel.cu``) and a composition of
tensor operations (:func:`expand_hop_torch`: ``use_backend("torch")``, or a device without a compiled kernel) all
return the same block for the same inputs and random seed. On a GPU the op reads two numbers back to the host (the
number of local edges and the frontier size, which size its outputs).

Output sizes depend on the data, so the op is eager-only: its fake kernel allocates dynamic sizes
(``torch.library.get_ctx().new_dynamic_size()``) so that code containing it still traces, but the support is meant
to be computed outside compiled regions.
"""
from __future__ import annotations

import functools
import warnings
from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .._memory import available_memory_bytes
from .._library import EXTENSION_LOADED, has_kernel, require_extension

ALL_NEIGHBOURS = -1
_MASK64 = (1 << 64) - 1
_INT64_MAX = (1 << 63) - 1


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
    if fanout > _INT64_MAX:
        raise ValueError(f"fanout={fanout} does not fit in a signed 64-bit integer (the op's argument)")
    return fanout


def _check_random_seed(random_seed) -> int:
    if isinstance(random_seed, bool) or not isinstance(random_seed, int):
        raise TypeError(f"random_seed must be an int, got {random_seed!r}")
    # The op takes a signed 64-bit int; fold any Python int into that range.
    random_seed &= _MASK64
    return random_seed - (1 << 64) if random_seed >= 1 << 63 else random_seed


def expand_hop(rowptr: Tensor, col: Tensor, seeds: Tensor, fanout: Optional[int] = ALL_NEIGHBOURS,
               random_seed: int = 0, skip: Optional[Tensor] = None, row_end: Optional[Tensor] = None) -> HopBlock:
    """One hop of the support of ``seeds`` in the CSR graph ``(rowptr, col)`` (row ``i`` aggregates from ``col``).

    fanout: ``-1``/``None`` = every neighbour (exact); ``k >= 0`` = ``k`` neighbours drawn uniformly with
        replacement (a row without neighbours gets none). The draws are a pure function of
        ``(random_seed, node, draw index)``: reproducible, independent of threads and of the rest of the batch.
    skip: optional bool mask over ``seeds``; a skipped seed keeps its row (and its place in the frontier) but the row
        is empty and its neighbours are not gathered (use it for seeds whose output is cached).
    row_end: optional end of every row, for a graph whose rows are not packed (a growing graph with slack,
        :class:`gnnaccel.growth.GrowingCSR`): row ``v`` is ``col[rowptr[v]:row_end[v]]``; the number of nodes is
        ``row_end.numel()`` and ``rowptr`` (the row starts) may be longer.

    ``seeds`` may be empty (an empty block) and may hold duplicates (kept as given); ``seeds`` and ``skip`` are
    moved to ``rowptr``'s device. Returns a :class:`HopBlock` whose tensors have the index dtype and device of
    ``rowptr``. Eager-only: output sizes depend on the data. A fanout whose block cannot be indexed or cannot fit
    in the device's memory raises a RuntimeError naming it (sizes are computed with overflow checks).
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
    if col.device != rowptr.device:
        raise ValueError(f"col is on {col.device} but rowptr is on {rowptr.device}")
    num_nodes = rowptr.numel() - 1
    if row_end is not None:
        _check_index_tensor("row_end", row_end)
        if row_end.dtype != rowptr.dtype or row_end.device != rowptr.device:
            raise TypeError(f"row_end must have rowptr's dtype and device ({rowptr.dtype} on {rowptr.device}), got "
                            f"{row_end.dtype} on {row_end.device}")
        if row_end.numel() > rowptr.numel():
            raise ValueError(f"row_end has {row_end.numel()} rows but rowptr (the row starts) only "
                             f"{rowptr.numel()} entries")
        num_nodes = row_end.numel()
        row_end = row_end.contiguous()
    if seeds.numel() and seeds.device.type == "cpu":  # elsewhere the kernel checks (no extra host read)
        lo, hi = int(seeds.min()), int(seeds.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"seeds must be node ids in [0, {num_nodes}), got values in [{lo}, {hi}]")
    if skip is not None:
        if not isinstance(skip, Tensor) or skip.dtype != torch.bool:
            raise TypeError(f"skip must be a bool tensor, got {getattr(skip, 'dtype', type(skip).__name__)}")
        if skip.shape != seeds.shape:
            raise ValueError(f"skip must have one entry per seed ({seeds.numel()}), got shape {list(skip.shape)}")
        skip = skip.to(rowptr.device).contiguous()
    seeds = seeds.to(rowptr.device, rowptr.dtype).contiguous()
    rowptr, col = rowptr.contiguous(), col.contiguous()
    if _composition_wanted(rowptr.device):
        return expand_hop_torch(rowptr, col, seeds, fanout, random_seed, skip, row_end)
    if row_end is None:
        return HopBlock(*torch.ops.gnnaccel.expand_hop(rowptr, col, seeds, fanout, random_seed, skip))
    if not _kernel_takes_row_end():  # an extension built before row_end existed: same block, slower
        _warn_stale_extension()
        return expand_hop_torch(rowptr, col, seeds, fanout, random_seed, skip, row_end)
    return HopBlock(*torch.ops.gnnaccel.expand_hop(rowptr, col, seeds, fanout, random_seed, skip, row_end))


def _kernel_takes_row_end() -> bool:
    return any(a.name == "row_end" for a in torch.ops.gnnaccel.expand_hop.default._schema.arguments)


@functools.lru_cache(maxsize=None)
def _warn_stale_extension() -> None:
    warnings.warn("the compiled gnnaccel extension predates expand_hop's row_end argument (growing graphs): using "
                  "the slower tensor composition; rebuild it with python setup.py build_ext --inplace",
                  RuntimeWarning, stacklevel=3)


def _composition_wanted(device: torch.device) -> bool:
    """Whether the tensor composition runs instead of the compiled op: under ``use_backend("torch")``, or on a
    device the extension has no kernel for (a build without CUDA kernels, another device type)."""
    try:
        from ..backend import current_backend
    except ImportError:  # pragma: no cover - the backend switch is part of the package
        current_backend = None
    if current_backend is not None and current_backend() == "torch":
        return True
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
    return key is None or not has_kernel("expand_hop", key)


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


# ---------------------------------------------------------------------------------------- device composition
# The same block as the kernels, from tensor operations only: the "torch" backend, the fallback for a device
# without a compiled kernel, and the written-out algorithm of the CUDA kernel (csrc/ops/cuda/expand_hop_kernel.cu
# performs exactly these steps), so that its logic is tested against the CPU kernel where no GPU is at hand.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_LOW32 = 0xFFFFFFFF


def _signed64(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def _srl(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 tensors holding uint64 bit patterns."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64_tensor(z: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic = uint64 arithmetic on the bit patterns)."""
    z = (z ^ _srl(z, 30)) * _signed64(_MIX1)
    z = (z ^ _srl(z, 27)) * _signed64(_MIX2)
    return z ^ _srl(z, 31)


def _mix64_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _mulhi(bits: Tensor, n: Tensor) -> Tensor:
    """High 64 bits of the unsigned product bits * n (n >= 0): Lemire's bounded draw in [0, n)."""
    a_lo, a_hi = bits & _LOW32, _srl(bits, 32)
    n_lo, n_hi = n & _LOW32, n >> 32
    lo_lo, hi_lo, lo_hi = a_lo * n_lo, a_hi * n_lo, a_lo * n_hi
    cross = _srl(lo_lo, 32) + (hi_lo & _LOW32) + (lo_hi & _LOW32)
    return a_hi * n_hi + _srl(hi_lo, 32) + _srl(lo_hi, 32) + _srl(cross, 32)


def _check_block_size(total: int, num_seeds: int, fanout: int, index_dtype: torch.dtype, device) -> None:
    """The checks of csrc/ops/expand_hop_common.h, on exact Python integers."""
    index_max = torch.iinfo(index_dtype).max
    if total + num_seeds > index_max:
        hint = "; use int64 indices" if index_dtype == torch.int32 else ""
        raise RuntimeError(f"expand_hop: fanout={fanout} over {num_seeds} seeds gives a block of {total} edges, "
                           f"more than the index dtype holds ({index_max}){hint} or a smaller fanout")
    item = torch.empty((), dtype=index_dtype).element_size()
    needed = (total + num_seeds) * (item + 12 * 8)  # outputs and the int64 temporaries of the composition
    memory = available_memory_bytes(device) if needed > 1 << 28 else None
    if memory is not None and needed > memory:
        raise RuntimeError(f"expand_hop: fanout={fanout} over {num_seeds} seeds gives a block of {total} edges, "
                           f"which needs more memory than the {torch.device(device).type} device has available "
                           f"({memory} bytes); use a smaller fanout")


def _deduplicate(seeds: Tensor, nodes: Tensor):
    """Frontier (seeds as given, then new nodes in first-seen order) and each node's position in it, by a stable
    sort instead of a sequential scan: the first occurrence of a node is the head of its run in the sorted order.

    Returns ``(frontier, local_col)`` in int64, ``local_col[e]`` = position of ``nodes[e]`` in the frontier."""
    num_seeds = seeds.numel()
    keys = torch.cat([seeds.long(), nodes.long()])
    m = keys.numel()
    if m == 0:
        return keys, keys
    ordered, perm = torch.sort(keys, stable=True)
    head = torch.ones(m, dtype=torch.bool, device=keys.device)
    torch.ne(ordered[1:], ordered[:-1], out=head[1:])
    run = torch.cumsum(head, 0) - 1
    first_in_run = torch.full((m,), m, dtype=torch.long, device=keys.device)
    first_in_run.scatter_reduce_(0, run, perm, reduce="amin")
    first = torch.empty(m, dtype=torch.long, device=keys.device)
    first[perm] = first_in_run[run]  # first[p]: position of the first occurrence of keys[p]
    positions = torch.arange(m, device=keys.device)
    new_head = (first == positions) & (positions >= num_seeds)
    rank = torch.cumsum(new_head, 0)
    new_index = num_seeds + rank - 1  # frontier position of a new node, at its first occurrence
    size = num_seeds + int(rank[-1])  # the one data-dependent size
    index = torch.where(first < num_seeds, first, new_index.index_select(0, first))
    buffer = torch.empty(size + 1, dtype=torch.long, device=keys.device)
    buffer.index_copy_(0, torch.where(new_head, new_index, torch.full_like(new_index, size)), keys)
    buffer[:num_seeds] = keys[:num_seeds]
    return buffer[:size].clone(), index[num_seeds:]


def expand_hop_torch(rowptr: Tensor, col: Tensor, seeds: Tensor, fanout: int, random_seed: int,
                     skip: Optional[Tensor], row_end: Optional[Tensor] = None) -> HopBlock:
    """:func:`expand_hop` from PyTorch tensor operations, on any device (same block as the kernels).

    Args and Returns as :func:`expand_hop` (arguments already checked; ``seeds`` of ``rowptr``'s dtype).
    Synchronises with the host twice (the number of local edges, the frontier size).
    """
    device, index_dtype = rowptr.device, rowptr.dtype
    num_nodes = rowptr.numel() - 1 if row_end is None else row_end.numel()
    num_edges, num_seeds = col.numel(), seeds.numel()
    rp = rowptr.long()
    v = seeds.long()
    if num_seeds and (int(v.min()) < 0 or int(v.max()) >= num_nodes):
        raise RuntimeError(f"expand_hop: seeds holds a node outside [0, {num_nodes})")
    begin = rp.index_select(0, v)
    degree = (rp.index_select(0, v + 1) if row_end is None else row_end.long().index_select(0, v)) - begin
    if num_seeds and (int(begin.min()) < 0 or int(degree.min()) < 0 or int((begin + degree).max()) > num_edges):
        raise RuntimeError("expand_hop: rowptr is not non-decreasing within [0, col.numel()]")
    active = degree > 0
    if skip is not None:
        active &= ~skip
    if fanout < 0:
        counts = torch.where(active, degree, torch.zeros_like(degree))
        total = int(counts.sum())
    else:
        total = int(active.sum()) * fanout  # exact (a Python int): the check below sees the true size
    _check_block_size(total, num_seeds, fanout, index_dtype, device)
    if fanout >= 0:
        counts = active.long() * fanout
    local_rowptr = torch.zeros(num_seeds + 1, dtype=torch.long, device=device)
    torch.cumsum(counts, 0, out=local_rowptr[1:])
    row = torch.repeat_interleave(torch.arange(num_seeds, device=device), counts, output_size=total)
    draw = torch.arange(total, device=device) - local_rowptr.index_select(0, row)
    if fanout < 0:
        edge_ids = begin.index_select(0, row) + draw
    else:
        seed_key = _signed64(_mix64_int(random_seed + _GOLDEN))
        node_key = _mix64_tensor(seed_key ^ (v * _signed64(_GOLDEN) + _signed64(_GOLDEN)))
        bits = _mix64_tensor(node_key.index_select(0, row) + (draw + 1) * _signed64(_GOLDEN))
        edge_ids = begin.index_select(0, row) + _mulhi(bits, degree.index_select(0, row))
    nodes = col.index_select(0, edge_ids).long()
    if total and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
        raise RuntimeError(f"expand_hop: col holds an index outside [0, num_nodes) = [0, {num_nodes})")
    frontier, local_col = _deduplicate(v, nodes)
    return HopBlock(frontier.to(index_dtype), local_rowptr.to(index_dtype), local_col.to(index_dtype),
                    edge_ids.to(index_dtype))


if EXTENSION_LOADED:
    @torch.library.register_fake("gnnaccel::expand_hop")
    def _expand_hop_fake(rowptr, col, seeds, fanout, random_seed, skip, row_end=None):
        torch._check(rowptr.dim() == 1, lambda: "rowptr must be 1-D")
        torch._check(col.dim() == 1, lambda: "col must be 1-D")
        torch._check(seeds.dim() == 1, lambda: "seeds must be 1-D")
        ctx = torch.library.get_ctx()
        num_frontier = ctx.new_dynamic_size()
        num_local_edges = ctx.new_dynamic_size()
        return (rowptr.new_empty(num_frontier), rowptr.new_empty(seeds.shape[0] + 1),
                rowptr.new_empty(num_local_edges), rowptr.new_empty(num_local_edges))
