"""Real-time batched inference: a few target nodes at a time, with the k-hop support in C++ and a feature cache.

:class:`BatchedEngine` answers ``predict(targets)`` for an L-layer gnnaccel model (GraphSAGE, GCN,
SAINTGraphSAGE, pruned or not) by computing, per layer, only the rows the next layer reads:

* Support, outwards from the targets (``expand_hop``, C++): layer ``l`` runs on rows ``R_l`` (``R_{L-1}`` = the
  targets); its block's frontier is ``R_{l-1}`` (``R_{l-1}[:|R_l|] == R_l``). A row whose layer-``l`` output is
  cached, or that no later layer reads, is skipped (``skip=``): its neighbourhood is never expanded.
* Compute, inwards: layer ``l`` on the rows still needed, from the layer's own weights (``linear_parts()``).
  Layer 0 aggregates straight from the raw feature table through global source ids (no gather of the support
  into a buffer); a branch that reads a subset of the raw channels (batched pruning scheme) aggregates from a
  compact ``[N, k]`` copy of those channels made once at construction; a self branch reads the rows of its
  targets only (``pruned_linear`` with row gather).
* GCN: edge weights are the normalisation over the *full* graph, sliced with the block's global edge ids, so
  exact mode equals full inference.

Fanouts per layer: ``None``/``-1`` = every neighbour (exact), ``k`` = ``k`` neighbours drawn uniformly with
replacement; the draws are a pure function of ``(seed, layer, node, draw)`` (see ``expand_hop``), so an
engine answers deterministically for its ``seed``.

Updates (``add_edges``, ``update_features``) take the engine's lock exclusively and invalidate exactly the
cached entries whose receptive field they touch; ``predict`` calls share it. Every answer is therefore the
model's output on one consistent state of the graph and features (the one before or after each update).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import Graph
from .ids import as_node_ids
from .nn.adjacency import as_graph
from .nn.conv import GCNConv, SAGEConv, SAINTConv
from .ops.aggregate import aggregate
from .ops.expand_hop import ALL_NEIGHBOURS, expand_hop, hop_random_seed
from .ops.pruned_linear import pruned_linear

__all__ = ["BatchedEngine"]

_REDUCE = {"mean": "mean", "sum": "sum", "max": "max", "gcn": "sum"}
_LINEAR_PROPAGATIONS = ("mean", "sum", "gcn")


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (updates are not starved)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class _BranchPlan:
    name: str
    weight: Tensor  # [in_b, out_b], contiguous
    cols: Optional[slice]  # output columns (None = all, sum form)
    propagation: str
    input_index: Optional[Tensor]  # channels of the layer input read by this branch (None = all)


@dataclass
class _LayerPlan:
    conv: torch.nn.Module
    branches: List[_BranchPlan]
    bias: Optional[Tensor]
    form: str
    out_channels: int
    propagates: bool  # has a neighbour branch (needs a hop)
    has_self: bool  # has an identity branch (reads its own row of the input)
    gcn: bool


def _cols_as_slice(cols: Tensor, out_channels: int, form: str) -> Optional[slice]:
    if form == "sum":
        return None
    cols = cols.long()
    if cols.numel() == 0:
        return slice(0, 0)
    start, stop = int(cols[0]), int(cols[-1]) + 1
    if not torch.equal(cols, torch.arange(start, stop, device=cols.device)):
        raise ValueError("concat-form branches must write contiguous output columns")
    return slice(start, stop)


def _plan_layer(conv) -> _LayerPlan:
    if not hasattr(conv, "linear_parts"):
        raise TypeError(f"BatchedEngine needs protocol layers (gnnaccel.nn); got {type(conv).__name__}")
    parts = conv.linear_parts()
    index = parts.extra.get("input_index", {})
    branches = []
    for b in parts.branches:
        idx = index.get(b.name)
        branches.append(_BranchPlan(b.name, b.weight.detach().contiguous(),
                                    _cols_as_slice(b.cols, parts.out_channels, parts.form), b.propagation,
                                    None if idx is None else idx.detach().long().contiguous()))
    bias = parts.bias.detach().contiguous() if parts.bias is not None else None
    return _LayerPlan(conv, branches, bias, parts.form, parts.out_channels,
                      any(b.propagation != "identity" for b in branches),
                      any(b.propagation == "identity" for b in branches),
                      any(b.propagation == "gcn" for b in branches))


def _as_edge_index(edge_index, num_nodes: int) -> Tensor:
    """A [2, E] tensor / numpy array / pair of id sequences -> validated int64 [2, E]."""
    if isinstance(edge_index, np.ndarray):
        edge_index = torch.from_numpy(np.ascontiguousarray(edge_index))
    if isinstance(edge_index, (list, tuple)) and len(edge_index) == 2:
        src = as_node_ids(edge_index[0], num_nodes, "edge_index[0]")
        dst = as_node_ids(edge_index[1], num_nodes, "edge_index[1]")
        if src.numel() != dst.numel():
            raise ValueError(f"edge_index rows differ in length ({src.numel()} sources, {dst.numel()} targets)")
        return torch.stack([src, dst])
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError("edge_index must be a [2, E] tensor of (source, target) node ids, got "
                         f"{list(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__}")
    return as_node_ids(edge_index.reshape(-1), num_nodes, "edge_index").view(2, -1)


def _as_new_edge_weight(edge_weight, num_edges: int) -> Optional[Tensor]:
    if edge_weight is None:
        return None
    if not isinstance(edge_weight, Tensor):
        edge_weight = torch.as_tensor(np.asarray(edge_weight))
    if not edge_weight.is_floating_point():
        raise TypeError(f"edge_weight must hold floating-point weights, got {edge_weight.dtype}")
    if edge_weight.dim() != 1 or edge_weight.numel() != num_edges:
        raise ValueError(f"edge_weight must have one weight per new edge ({num_edges}), got shape "
                         f"{list(edge_weight.shape)}")
    return edge_weight


class BatchedEngine:
    """Answers ``predict(targets)`` for a trained gnnaccel model, computing only the targets' support.

    Args:
        model: a gnnaccel model with ``convs`` of protocol layers (``GraphSAGE``, ``GCN``, ``SAINTGraphSAGE``,
            pruned ones included) and ``norms``/``act`` (eval-mode semantics: BatchNorm uses running stats).
            The engine reads the weights at construction: build a new engine after changing them.
        graph: a :class:`~gnnaccel.Graph` (or an edge_index / sparse adjacency).
        x: raw node features [N, C]. The engine reads it in place; ``update_features`` copies it on first write
            (the caller's tensor is never modified).
        fanouts: one entry per propagating layer (or per conv): ``None``/``-1`` = all neighbours, ``k`` = ``k``
            sampled with replacement. ``None`` = exact everywhere.
        cache: optional :class:`~gnnaccel.cache.FeatureCache` whose layer ``l`` holds model layer ``l``'s
            output (at most ``L - 1`` layers are used); ``True`` builds an unbounded one sized for the model,
            an int one with that capacity (LRU).
        seed: random seed of the neighbour sampling.
    """

    def __init__(self, model, graph, x: Tensor, fanouts: Optional[Sequence[Optional[int]]] = None,
                 cache=None, seed: int = 0):
        if not hasattr(model, "convs"):
            raise TypeError("BatchedEngine expects a gnnaccel model with .convs (convert PyG models with "
                            "gnnaccel.from_pyg)")
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise TypeError("x must be a 2-D floating-point tensor [num_nodes, channels]")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.model = model.eval()
        graph = as_graph(graph, x.shape[0])
        self.num_nodes = graph.num_nodes
        self.seed = seed
        self.dtype = x.dtype
        self._layers = [_plan_layer(conv) for conv in model.convs]
        self.num_layers = len(self._layers)
        self.fanouts = self._resolve_fanouts(fanouts)
        first = self._layers[0]
        if any(b.weight.dtype != x.dtype for b in first.branches):
            raise TypeError(f"x has dtype {x.dtype} but the model's weights are {first.branches[0].weight.dtype}")
        if cache is True or (isinstance(cache, int) and not isinstance(cache, bool)):
            from .cache import FeatureCache

            widths = [layer.out_channels for layer in self._layers[:-1]]
            cache = FeatureCache(graph.num_nodes, widths, capacity=None if cache is True else cache,
                                 device=x.device, dtype=x.dtype) if widths else None
        elif cache is False:
            cache = None
        self.cache = cache
        self.num_cached = 0
        if cache is not None:
            self.num_cached = min(cache.num_layers, self.num_layers - 1)
            if cache.num_nodes != self.num_nodes:
                raise ValueError(f"the cache has {cache.num_nodes} nodes, the graph {self.num_nodes}")
            if cache.dtype != x.dtype:
                raise TypeError(f"the cache stores {cache.dtype}, x is {x.dtype}")
            for l in range(self.num_cached):
                if cache.dims[l] != self._layers[l].out_channels:
                    raise ValueError(f"cache layer {l} is {cache.dims[l]} wide, model layer {l} outputs "
                                     f"{self._layers[l].out_channels}")
            cache.check_owner(model, x)  # refuses a cache filled by another model or from other features
        self.version = 0  # number of updates applied (read without the lock: a monotone counter)
        self._lock = _ReadWriteLock()
        self._owns_x = False
        self._set_graph(graph)
        self._set_features(x)

    # ------------------------------------------------------------------ state
    def _resolve_fanouts(self, fanouts) -> List[int]:
        propagating = [l for l, p in enumerate(self._layers) if p.propagates]
        if fanouts is None:
            return [ALL_NEIGHBOURS] * self.num_layers
        if not isinstance(fanouts, (list, tuple)):
            raise TypeError(f"fanouts must be a list (one entry per layer) or None, got {fanouts!r}")
        if len(fanouts) == self.num_layers:
            given = list(fanouts)
        elif len(fanouts) == len(propagating):
            given = [ALL_NEIGHBOURS] * self.num_layers
            for l, f in zip(propagating, fanouts):
                given[l] = f
        else:
            raise ValueError(f"fanouts needs one entry per layer ({self.num_layers}) or per propagating layer "
                             f"({len(propagating)}), got {len(fanouts)}")
        out = []
        for f in given:
            if f is None:
                f = ALL_NEIGHBOURS
            if isinstance(f, bool) or not isinstance(f, int) or f < -1:
                raise ValueError(f"each fanout must be None, -1 (all neighbours) or an int >= 0, got {f!r}")
            out.append(f)
        return out

    def _set_graph(self, graph: Graph) -> None:
        """Per layer: the graph it aggregates on (GCN: normalised over the full graph) and its edge weights."""
        self.graph = graph
        self._layer_graphs = []
        for plan in self._layers:
            g = plan.conv.normalized_graph(graph, self.dtype) if plan.gcn else graph
            w = g.edge_weight
            if w is not None and w.dtype != self.dtype:
                w = w.to(self.dtype)
            self._layer_graphs.append((g, w))

    def _set_features(self, x: Tensor) -> None:
        """The raw table and, per first-layer neighbour branch reading a channel subset, its compact copy."""
        self.x = x.contiguous()
        self._tables: Dict[str, Tensor] = {}
        for b in self._layers[0].branches:
            if b.propagation != "identity":
                self._tables[b.name] = self.x if b.input_index is None else \
                    self.x.index_select(1, b.input_index).contiguous()

    # ------------------------------------------------------------------ prediction
    def predict(self, targets: Tensor, seed: Optional[int] = None) -> Tensor:
        """Model outputs ``[len(targets), out]`` for ``targets`` (1-D int32/int64 node ids, duplicates allowed)."""
        targets = as_node_ids(targets, self.num_nodes, "targets", device=self.x.device, allow_empty=False)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        seed = self.seed if seed is None else seed
        with self._lock.read(), torch.inference_mode():
            return self._predict(targets, seed)

    def _predict(self, targets: Tensor, seed: int) -> Tensor:
        L = self.num_layers
        cache = self.cache
        token = cache.epoch if cache is not None else None
        rows_of = [None] * L  # R_l: node ids of layer l's rows
        blocks = [None] * L
        compute = [None] * L  # positions in R_l to compute (None = all)
        cached_values = [None] * L
        needed = None  # bool mask over R_l of rows a later layer reads (None = all)
        rows = targets
        for l in reversed(range(L)):
            plan = self._layers[l]
            rows_of[l] = rows
            mask = needed
            if l < self.num_cached:
                hit, cached_values[l] = cache.lookup(l, rows)
                mask = ~hit if mask is None else mask & ~hit
            if mask is not None:
                compute[l] = torch.nonzero(mask).flatten()
            if plan.propagates:
                g, _ = self._layer_graphs[l]
                block = expand_hop(g.rowptr, g.col, rows, self.fanouts[l], hop_random_seed(seed, l),
                                   None if mask is None else ~mask)
                blocks[l] = block
                if l > 0:
                    frontier = block.frontier
                    needed = torch.zeros(frontier.numel(), dtype=torch.bool)
                    needed[block.col] = True
                    if plan.has_self:
                        if mask is None:
                            needed[: rows.numel()] = True
                        else:
                            needed[: rows.numel()] |= mask
                    rows = frontier
            else:
                needed = mask
        if cache is not None and blocks[0] is not None:
            self._record_support(targets, blocks[0], compute[0], rows_of[0].numel(), seed)

        h = None
        for l in range(L):
            pos = compute[l]
            out = self._layer(l, h, rows_of[l], blocks[l], pos)
            if cached_values[l] is not None:
                buf = cached_values[l]
                if pos.numel():
                    buf.index_copy_(0, pos, out)
                    cache.insert(l, rows_of[l].index_select(0, pos), out, since=token)
                out = buf
            elif pos is not None:
                buf = out.new_zeros(rows_of[l].numel(), out.shape[1])
                buf.index_copy_(0, pos, out)
                out = buf
            h = out
        return h

    def _record_support(self, targets, block0, pos0, num_rows0: int, seed: int) -> None:
        """Raw-feature supporting nodes of this batch: with the cache and (``cache.track_support``) without it."""
        computed = block0.frontier.numel() - (num_rows0 - (num_rows0 if pos0 is None else pos0.numel()))
        if not self.cache.track_support:
            self.cache.record_support(computed)
            return
        rows = targets
        for l in reversed(range(self.num_layers)):
            if self._layers[l].propagates:
                g, _ = self._layer_graphs[l]
                rows = expand_hop(g.rowptr, g.col, rows, self.fanouts[l], hop_random_seed(seed, l)).frontier
        self.cache.record_support(computed=computed, without_cache=rows.numel())

    def _layer(self, l: int, h: Optional[Tensor], rows: Tensor, block, pos: Optional[Tensor]) -> Tensor:
        """Output of layer ``l`` for ``rows[pos]`` (all rows if ``pos`` is None); ``h`` = layer input for the
        block's frontier (``None`` for layer 0, which reads the raw tables)."""
        plan = self._layers[l]
        g, edge_weight = self._layer_graphs[l]
        n_out = rows.numel() if pos is None else pos.numel()
        first = l == 0
        if plan.propagates:
            block_col = g.col.index_select(0, block.edge_ids) if first else block.col
            block_weight = edge_weight.index_select(0, block.edge_ids) if edge_weight is not None else None
        out = None
        for b in plan.branches:
            if b.propagation == "identity":
                if first:
                    z = pruned_linear(self.x, b.weight, None, rows if pos is None else rows.index_select(0, pos),
                                      b.input_index)
                else:
                    src = h if pos is not None else h[: rows.numel()]
                    z = pruned_linear(src, b.weight, None, pos, b.input_index)
            else:
                reduce = _REDUCE[b.propagation]
                if first:
                    agg = aggregate(block.rowptr, block_col, self._tables[b.name], reduce, block_weight, pos)
                    z = agg @ b.weight
                else:
                    src = h if b.input_index is None else h.index_select(1, b.input_index)
                    if b.propagation in _LINEAR_PROPAGATIONS and b.weight.shape[1] < b.weight.shape[0]:
                        z = aggregate(block.rowptr, block.col, src @ b.weight, reduce, block_weight, pos)
                    else:
                        z = aggregate(block.rowptr, block.col, src.contiguous(), reduce, block_weight, pos) \
                            @ b.weight
            if b.cols is None:
                out = z if out is None else out.add_(z)
            else:
                if out is None:
                    out = z.new_empty(n_out, plan.out_channels)
                out[:, b.cols] = z
        if plan.bias is not None:
            out = out + plan.bias
        out = self._epilogue(l, out)
        return out

    def _epilogue(self, l: int, out: Tensor) -> Tensor:
        """What follows the linear part: the conv's own normalisation/activation, then the model's norm and
        activation between layers (as ``model.layer``)."""
        conv = self._layers[l].conv
        if isinstance(conv, SAGEConv) and conv.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        elif isinstance(conv, SAINTConv) and conv.act is not None:
            out = conv.act(out)
        if l < self.num_layers - 1:
            norms = getattr(self.model, "norms", None)
            if norms is not None:
                out = norms[l](out)
            act = getattr(self.model, "act", None)
            if act is not None:
                out = act(out)
        return out

    # ------------------------------------------------------------------ updates
    def add_edges(self, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> None:
        """Insert edges ``edge_index`` [2, E] (PyG flow: row 0 = source j, row 1 = target i) and invalidate
        every cached entry whose receptive field they reach."""
        edge_index = _as_edge_index(edge_index, self.num_nodes)
        edge_weight = _as_new_edge_weight(edge_weight, edge_index.shape[1])
        if edge_index.shape[1] == 0:
            return
        with self._lock.write():
            graph = self.graph.with_edges(edge_index, edge_weight)  # checks the weights against the new edges
            self._set_graph(graph)
            if self.cache is not None:
                self.cache.invalidate_after_update(graph, new_edge_index=edge_index,
                                                   degree_normalised=any(p.gcn for p in self._layers))
            self.version += 1

    def update_features(self, nodes: Tensor, values: Tensor) -> None:
        """Set the raw features of ``nodes`` to ``values`` [len(nodes), C] and invalidate every cached entry
        that depends on them."""
        nodes = as_node_ids(nodes, self.num_nodes, "nodes", device=self.x.device)
        if not isinstance(values, Tensor) or values.dim() != 2 or values.shape != (nodes.numel(), self.x.shape[1]):
            raise ValueError(f"values must be a tensor of shape [{nodes.numel()}, {self.x.shape[1]}]")
        if nodes.numel() == 0:
            return
        nodes = nodes.long()
        values = values.to(self.x)
        with self._lock.write():
            if not self._owns_x:  # copy on first write: never modify the caller's tensor
                self._set_features(self.x.clone())
                self._owns_x = True
            self.x.index_copy_(0, nodes, values)
            for b in self._layers[0].branches:
                if b.propagation != "identity" and b.input_index is not None:
                    self._tables[b.name].index_copy_(0, nodes, values.index_select(1, b.input_index))
            if self.cache is not None:
                self.cache.invalidate_after_update(self.graph, changed_nodes=nodes)
                self.cache.bind(self.model, self.x)  # the cache now holds outputs on the engine's own copy
            self.version += 1
