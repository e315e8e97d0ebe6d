"""A CSR adjacency that grows in place: new nodes and new edges in amortised O(1) per node and per edge.

:class:`GrowingCSR` keeps every row's edges contiguous, but rows need not be in node order: row ``v`` occupies
``[start[v], start[v] + cap[v])`` of one edge buffer and uses its first ``len[v]`` entries. Appending to a row
with room writes in place; a full row moves to the end of the buffer with twice its capacity (so a row that
grows by ``d`` edges moves O(log d) times, copying O(d) edges in all). The moved-out space is garbage; when the
buffer is full it is rebuilt packed (each row with 25% slack) into a buffer with room for a quarter as much
again, so a rebuild, O(E), happens only after Omega(E) appended edges: O(1) amortised per edge. Node-indexed arrays
double their capacity. Nothing is ever rebuilt from scratch per batch.

Expansion calls the ``expand_hop`` kernels with ``rowptr`` = the row starts and ``row_end`` = the row ends (rows
need not be packed). Node ids, the order of a row's edges (insertion order) and therefore the sampled draws (a
pure function of (seed, node, draw) over the row) are those of the packed graph: a GrowingCSR answers exactly
as :func:`~gnnaccel.ops.expand_hop` on the :class:`~gnnaccel.Graph` holding the same rows, however it grew.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ._memory import empty_for_gather
from .graph import Graph
from .ops.expand_hop import HopBlock, expand_hop

__all__ = ["GrowingCSR"]


def _exclusive_cumsum(t: Tensor) -> Tensor:
    out = torch.zeros_like(t)
    if t.numel() > 1:
        torch.cumsum(t[:-1], 0, out=out[1:])
    return out


def _ranges(starts: Tensor, lengths: Tensor, total: Optional[int] = None) -> Tensor:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` (int64)."""
    if total is None:
        total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=starts.device)
    shift = torch.repeat_interleave(starts - _exclusive_cumsum(lengths), lengths, output_size=total)
    return shift + torch.arange(total, device=starts.device)


class GrowingCSR:
    """A directed graph (row ``i`` lists the sources it aggregates from) that grows in amortised O(1).

    Args:
        rowptr, col: the initial CSR (int32 or int64; the index dtype is kept while it fits, int64 beyond).
        num_nodes: number of rows.
        edge_weight: optional [E] per-edge values (kept in their dtype, grown alongside).

    Attributes: ``num_nodes``, ``num_edges`` (ints), ``index_dtype``, ``device``, ``counters`` (dict of how often
    node arrays were reallocated, the edge buffer was reallocated, and rows were moved).
    """

    def __init__(self, rowptr: Tensor, col: Tensor, num_nodes: int, edge_weight: Optional[Tensor] = None):
        self.device = rowptr.device
        self.index_dtype = rowptr.dtype
        self.num_nodes = int(num_nodes)
        self.num_edges = int(col.numel())
        self.counters: Dict[str, int] = {"node_reallocations": 0, "edge_reallocations": 0, "rows_moved": 0,
                                         "edges_moved": 0}
        n, e = self.num_nodes, self.num_edges
        node_cap = max(n, 16)
        # Every row starts with 25% slack (as after a rebuild): a stream touching many rows once does not move
        # them all (a first wave of O(sum of their degrees) copies).
        length = (rowptr[1:] - rowptr[:-1]).long()
        cap = length + length // 4
        packed = int(cap.sum())
        buf_cap = packed + max(packed // 4, 1024)
        self._index_dtype_for(node_cap, buf_cap)
        index = dict(dtype=self.index_dtype, device=self.device)
        start = _exclusive_cumsum(cap)
        # Row v: col[start[v]:end[v]] (the kernels' rowptr / row_end), with room up to start[v] + cap[v].
        self._start = torch.zeros(node_cap, **index)
        self._end = torch.zeros(node_cap, **index)
        self._start[:n] = start
        self._end[:n] = start + length
        self._cap = torch.zeros(node_cap, dtype=torch.long, device=self.device)
        self._cap[:n] = cap
        target = _ranges(start, length, e)
        self._col = empty_for_gather((buf_cap,), col, self.index_dtype)  # sampled at random addresses: huge pages
        self._col[target] = col.to(self.index_dtype)
        self._weight = None
        if edge_weight is not None:
            self._weight = torch.empty(buf_cap, dtype=edge_weight.dtype, device=self.device)
            self._weight[target] = edge_weight
        self._tail = packed
        self._garbage = 0

    @classmethod
    def from_graph(cls, graph: Graph) -> "GrowingCSR":
        return cls(graph.rowptr, graph.col, graph.num_nodes, graph.edge_weight)

    # ------------------------------------------------------------------ internal layout
    def _index_dtype_for(self, *sizes: int) -> None:
        """Promote int32 indices to int64 when a node count or a buffer position would not fit."""
        if self.index_dtype == torch.int32 and max(sizes) > torch.iinfo(torch.int32).max:
            self.index_dtype = torch.int64
            for name in ("_col", "_start", "_end"):
                if hasattr(self, name):
                    setattr(self, name, getattr(self, name).long())

    def _lengths(self, rows: Optional[Tensor] = None) -> Tensor:
        if rows is None:
            n = self.num_nodes
            return (self._end[:n] - self._start[:n]).long()
        return (self._end.index_select(0, rows) - self._start.index_select(0, rows)).long()

    def _rebuild(self, extra: int) -> None:
        """Pack every row (with 25% slack) into a new buffer with room for ``extra`` more entries and a quarter
        of the packed size again: O(E), after Omega(E) appended edges since the previous rebuild."""
        n = self.num_nodes
        length = self._lengths()
        cap = length + length // 4
        packed = int(cap.sum())
        size = packed + max(packed // 4, 2 * extra, 1024)
        self._index_dtype_for(size)
        new_start = _exclusive_cumsum(cap)
        src = _ranges(self._start[:n].long(), length, self.num_edges)
        dst = _ranges(new_start, length, self.num_edges)
        col = empty_for_gather((size,), self._col, self.index_dtype)  # sampled at random addresses
        col[dst] = self._col[src].to(self.index_dtype)
        self._col = col
        if self._weight is not None:
            weight = torch.empty(size, dtype=self._weight.dtype, device=self.device)
            weight[dst] = self._weight[src]
            self._weight = weight
        self._start[:n] = new_start
        self._end[:n] = new_start + length
        self._cap[:n] = cap
        self._tail, self._garbage = packed, 0
        self.counters["edge_reallocations"] += 1

    # ------------------------------------------------------------------ growth
    def add_nodes(self, count: int) -> None:
        """Append ``count`` rows without edges (node arrays double their capacity when full)."""
        if count <= 0:
            return
        n = self.num_nodes + count
        node_cap = self._start.numel()
        if n > node_cap:
            new_cap = max(2 * node_cap, n)
            self._index_dtype_for(new_cap)
            for name in ("_start", "_end", "_cap"):
                old = getattr(self, name)
                grown = torch.zeros(new_cap, dtype=old.dtype, device=self.device)
                grown[: self.num_nodes] = old[: self.num_nodes]
                setattr(self, name, grown)
            self.counters["node_reallocations"] += 1
        new = slice(self.num_nodes, n)
        self._start[new] = 0
        self._end[new] = 0
        self._cap[new] = 0
        self.num_nodes = n

    def add_edges(self, src: Tensor, dst: Tensor, weight: Optional[Tensor] = None) -> None:
        """Append edges ``src[k] -> dst[k]`` at the end of row ``dst[k]`` (in the given order within a row).

        Ids must be valid (``[0, num_nodes)``, checked by the caller); ``weight`` given exactly when the graph
        is weighted.
        """
        if (weight is None) != (self._weight is None):
            raise ValueError("give edge weights exactly when the graph is weighted")
        m = src.numel()
        if m == 0:
            return
        dst, order = torch.sort(dst.to(self.device, torch.long), stable=True)
        src = src.to(self.device, torch.long).index_select(0, order)
        if weight is not None:
            weight = weight.to(self.device, self._weight.dtype).index_select(0, order)
        rows, counts = torch.unique_consecutive(dst, return_counts=True)
        old_len = self._lengths(rows)
        new_len = old_len + counts
        move = new_len > self._cap.index_select(0, rows)
        moving = rows[move]
        if moving.numel():
            new_cap = torch.maximum(torch.maximum(2 * self._cap.index_select(0, moving), new_len[move]),
                                    torch.full_like(moving, 4))
            need = int(new_cap.sum())
            if self._tail + need > self._col.numel():
                self._rebuild(need)  # packs the rows with slack: recompute which ones still have to move
                move = new_len > self._cap.index_select(0, rows)
                moving = rows[move]
                new_cap = torch.maximum(torch.maximum(2 * self._cap.index_select(0, moving), new_len[move]),
                                        torch.full_like(moving, 4))
                need = int(new_cap.sum())
            if moving.numel():
                new_start = self._tail + _exclusive_cumsum(new_cap)
                length = self._lengths(moving)
                total = int(length.sum())
                from_pos = _ranges(self._start.index_select(0, moving).long(), length, total)
                to_pos = _ranges(new_start, length, total)
                self._col[to_pos] = self._col[from_pos]
                if self._weight is not None:
                    self._weight[to_pos] = self._weight[from_pos]
                self._garbage += int(self._cap.index_select(0, moving).sum())
                self._tail += need
                self._start[moving] = new_start.to(self.index_dtype)
                self._cap[moving] = new_cap
                self.counters["rows_moved"] += moving.numel()
                self.counters["edges_moved"] += total
        first = torch.repeat_interleave(_exclusive_cumsum(counts), counts, output_size=m)
        start = self._start.index_select(0, rows).long()
        base = torch.repeat_interleave(start + old_len, counts, output_size=m)
        pos = base + torch.arange(m, device=self.device) - first
        self._col[pos] = src.to(self.index_dtype)
        if weight is not None:
            self._weight[pos] = weight
        self._end[rows] = (start + new_len).to(self.index_dtype)
        self.num_edges += m

    # ------------------------------------------------------------------ reading
    @property
    def row_start(self) -> Tensor:
        """``rowptr`` of :func:`~gnnaccel.ops.expand_hop` (the row starts; may extend past ``num_nodes``)."""
        return self._start

    @property
    def row_end(self) -> Tensor:
        """``row_end`` of :func:`~gnnaccel.ops.expand_hop`: ``[num_nodes]`` row ends."""
        return self._end[: self.num_nodes]

    @property
    def col(self) -> Tensor:
        """The edge buffer (source node ids, with slack and garbage between rows), indexed by ``edge_ids``."""
        return self._col

    def expand(self, seeds: Tensor, fanout: int, random_seed: int, skip: Optional[Tensor] = None) -> HopBlock:
        """:func:`~gnnaccel.ops.expand_hop` of ``seeds`` over this graph (``edge_ids`` index :attr:`col` and
        :meth:`weights`)."""
        return expand_hop(self._start, self._col, seeds, fanout, random_seed, skip, self._end[: self.num_nodes])

    def sources(self, edge_ids: Tensor) -> Tensor:
        """Source node ids of the edges ``edge_ids`` (from :meth:`expand`)."""
        return self._col.index_select(0, edge_ids)

    def weights(self, edge_ids: Tensor) -> Optional[Tensor]:
        return None if self._weight is None else self._weight.index_select(0, edge_ids)

    @property
    def weighted(self) -> bool:
        return self._weight is not None

    def to_graph(self, index_dtype: Optional[torch.dtype] = None) -> Graph:
        """The graph as a packed :class:`~gnnaccel.Graph` (O(E)): rows in node order, edges in row order."""
        n = self.num_nodes
        length = self._lengths()
        rowptr = torch.zeros(n + 1, dtype=torch.long, device=self.device)
        torch.cumsum(length, 0, out=rowptr[1:])
        pos = _ranges(self._start[:n].long(), length, self.num_edges)
        index_dtype = index_dtype or self.index_dtype
        col = self._col.index_select(0, pos).to(index_dtype)
        weight = None if self._weight is None else self._weight.index_select(0, pos)
        return Graph(rowptr.to(index_dtype), col, n, weight, validate=False)

    def __repr__(self) -> str:
        return (f"GrowingCSR(num_nodes={self.num_nodes}, num_edges={self.num_edges}, buffer={self._col.numel()}, "
                f"garbage={self._garbage}, {self.index_dtype})")
