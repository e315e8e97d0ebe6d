"""Real-time batched inference: a few target nodes at a time, with the k-hop support in C++ and a feature cache.

:class:`BatchedEngine` answers ``predict(targets)`` for an L-layer gnnaccel model (GraphSAGE, GCN,
SAINTGraphSAGE, pruned or not) by computing, per layer, only the rows the next layer reads:

* Support, outwards from the targets (``expand_hop``, C++): layer ``l`` runs on rows ``R_l`` (``R_{L-1}`` = the
  targets); its block's frontier is ``R_{l-1}`` (``R_{l-1}[:|R_l|] == R_l``). A row whose layer-``l`` output is
  cached, or that no later layer reads, is skipped (``skip=``): its neighbourhood is never expanded.
* Compute, inwards: layer ``l`` on the rows still needed, through the model's ``layer_block`` (the block
  protocol, :mod:`gnnaccel.nn.protocol`): the engine cuts a block out of the layer's own ``message_graph`` and
  the layer does its math. Layer 0 reads straight from the raw feature table through global source ids (no
  gather of the support into a buffer); when its neighbour aggregation reads a subset of the raw channels
  (``neighbour_channels()``, batched pruning scheme) the engine keeps a compact ``[N, k]`` copy of them. Per-edge
  values (GCN's normalisation) are the message graph's, i.e. over the *full* graph, sliced with the block's
  global edge ids, so exact mode equals full inference.
* Everything (masks, bookkeeping, compact copies, cache) lives on the device of the features; nothing is
  moved to the host but what data-dependent sizes need.

Fanouts per layer: ``None``/``-1`` = every neighbour (exact), ``k`` = ``k`` neighbours drawn uniformly with
replacement; the draws are a pure function of ``(seed, layer, node, draw)`` (see ``expand_hop``), so an
engine answers deterministically for its ``seed``.

Updates (``add_edges``, ``update_features``) take the engine's lock exclusively and invalidate exactly the
cached entries whose receptive field they touch; ``predict`` calls share it. Every answer is therefore the
model's output on one consistent state of the graph and features (the one before or after each update).
"""
from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .graph import Graph
from .models import as_model
from .ids import as_node_ids
from .nn.adjacency import as_graph
from .nn.protocol import Block, check_layer
from .ops.expand_hop import ALL_NEIGHBOURS, expand_hop, hop_random_seed

__all__ = ["BatchedEngine"]


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


def _resolve_cache(cache, num_nodes: int, widths: List[int], x: Tensor):
    """``cache=`` argument -> a FeatureCache or None, with a clear error for anything else."""
    from .cache import FeatureCache

    if cache is None or cache is False:
        return None
    if isinstance(cache, FeatureCache):
        return cache
    if cache is True or (isinstance(cache, int) and not isinstance(cache, bool)):
        if cache is not True and cache < 1:
            raise ValueError(f"cache capacity must be a positive int, got {cache}")
        if not widths:
            return None
        return FeatureCache(num_nodes, widths, capacity=None if cache is True else cache, device=x.device,
                            dtype=x.dtype)
    raise TypeError(f"cache must be None/False, True (unbounded), a positive int (LRU capacity in nodes) or a "
                    f"gnnaccel.cache.FeatureCache, got {cache!r}")


class BatchedEngine:
    """Answers ``predict(targets)`` for a trained gnnaccel model, computing only the targets' support.

    Args:
        model: a gnnaccel model: ``convs`` of block-protocol layers (:mod:`gnnaccel.nn.protocol`; ``GraphSAGE``,
            ``GCN``, ``SAINTGraphSAGE``, pruned ones included, or user layers) and ``layer_block``. The engine
            runs an eval-mode copy taken at construction (BatchNorm uses running stats; the caller's model
            and its training flag are left alone): build a new engine after changing the weights.
        graph: a :class:`~gnnaccel.Graph` (or an edge_index / sparse adjacency); moved to ``x``'s device.
        x: raw node features [N, C] on the model's device. The engine reads it in place; ``update_features``
            copies it on first write (the caller's tensor is never modified).
        fanouts: one entry per propagating layer (or per conv): ``None``/``-1`` = all neighbours, ``k`` = ``k``
            sampled with replacement. ``None`` = exact everywhere.
        cache: optional :class:`~gnnaccel.cache.FeatureCache` whose layer ``l`` holds model layer ``l``'s
            output (at most ``L - 1`` layers are used); ``True`` builds an unbounded one sized for the model,
            a positive int one with that capacity (LRU).
        seed: random seed of the neighbour sampling.
    """

    def __init__(self, model, graph, x: Tensor, fanouts: Optional[Sequence[Optional[int]]] = None,
                 cache=None, seed: int = 0):
        model = as_model(model)  # a PyG GraphSAGE / GCN: converted once with from_pyg
        if not hasattr(model, "convs") or not hasattr(model, "layer_block"):
            raise TypeError("BatchedEngine expects a gnnaccel model with .convs and .layer_block, or a PyG "
                            "GraphSAGE / GCN")
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise TypeError("x must be a 2-D floating-point tensor [num_nodes, channels]")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        for conv in model.convs:
            check_layer(conv, "BatchedEngine")
        params = list(model.parameters())
        if params and params[0].dtype != x.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's weights are {params[0].dtype}")
        if params and params[0].device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {params[0].device}")
        self.model = model
        self._model = copy.deepcopy(model).eval()
        self._convs = list(self._model.convs)
        graph = as_graph(graph, x.shape[0]).to(x.device)
        self.num_nodes = graph.num_nodes
        self.seed = seed
        self.dtype = x.dtype
        self.num_layers = len(self._convs)
        self.fanouts = self._resolve_fanouts(fanouts)
        widths = [conv.out_channels for conv in self._convs[:-1]]
        cache = _resolve_cache(cache, graph.num_nodes, widths, x)
        self.cache = cache
        self.num_cached = 0
        if cache is not None:
            self.num_cached = min(cache.num_layers, self.num_layers - 1)
            if cache.num_nodes != self.num_nodes:
                raise ValueError(f"the cache has {cache.num_nodes} nodes, the graph {self.num_nodes}")
            if cache.dtype != x.dtype:
                raise TypeError(f"the cache stores {cache.dtype}, x is {x.dtype}")
            for l in range(self.num_cached):
                if cache.dims[l] != widths[l]:
                    raise ValueError(f"cache layer {l} is {cache.dims[l]} wide, model layer {l} outputs {widths[l]}")
            cache.check_owner(model, x)  # refuses a cache filled by another model or from other features
        self.version = 0  # number of updates applied (read without the lock: a monotone counter)
        self._lock = _ReadWriteLock()
        self._owns_x = False
        self._set_graph(graph)
        self._set_features(x)

    # ------------------------------------------------------------------ state
    def _resolve_fanouts(self, fanouts) -> List[int]:
        propagating = [l for l, conv in enumerate(self._convs) if conv.reads_neighbours]
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
        """Per propagating layer: the message graph it aggregates over (asked from the layer) and its per-edge
        values in the features' dtype."""
        self.graph = graph
        self._message = []
        for conv in self._convs:
            if not conv.reads_neighbours:
                self._message.append(None)
                continue
            g = conv.message_graph(graph, self.dtype)
            w = g.edge_weight
            if w is not None and w.dtype != self.dtype:
                w = w.to(self.dtype)
            self._message.append((g, w))

    def _set_features(self, x: Tensor) -> None:
        """The raw table and, when layer 0 aggregates a subset of its channels, the compact copy of those."""
        self.x = x.contiguous()
        first = self._convs[0]
        idx = first.neighbour_channels() if first.reads_neighbours else None
        self._neigh_index = None if idx is None else idx.to(self.x.device, torch.long)
        self._x_neigh = None if idx is None else self.x.index_select(1, self._neigh_index).contiguous()

    # ------------------------------------------------------------------ prediction
    def predict(self, targets, seed: Optional[int] = None) -> Tensor:
        """Model outputs ``[len(targets), out]`` for ``targets``.

        Args:
            targets: node ids (int tensor on any device, list or numpy array; duplicates allowed; not empty).
            seed: sampling seed for this call (default: the engine's).
        Returns:
            Tensor on the features' device.
        """
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
        hops = [None] * L
        compute = [None] * L  # positions in R_l to compute (None = all)
        cached_values = [None] * L
        needed = None  # bool mask over R_l of rows a later layer reads (None = all)
        rows = targets
        for l in reversed(range(L)):
            conv = self._convs[l]
            rows_of[l] = rows
            mask = needed
            if l < self.num_cached:
                hit, cached_values[l] = cache.lookup(l, rows, validate=False)  # ids the engine produced
                mask = ~hit if mask is None else mask & ~hit
            if mask is not None:
                compute[l] = torch.nonzero(mask).flatten()
            if conv.reads_neighbours:
                g, _ = self._message[l]
                hop = expand_hop(g.rowptr, g.col, rows, self.fanouts[l], hop_random_seed(seed, l),
                                 None if mask is None else ~mask)
                hops[l] = hop
                if l > 0:
                    frontier = hop.frontier
                    needed = torch.zeros(frontier.numel(), dtype=torch.bool, device=frontier.device)
                    needed[hop.col] = True
                    if conv.reads_self:
                        if mask is None:
                            needed[: rows.numel()] = True
                        else:
                            needed[: rows.numel()] |= mask
                    rows = frontier
            else:
                needed = mask
        if cache is not None and hops[0] is not None:
            self._record_support(targets, hops[0], compute[0], rows_of[0].numel(), seed)

        h = None
        for l in range(L):
            pos = compute[l]
            out = self._layer(l, h, rows_of[l], hops[l], pos)
            if cached_values[l] is not None:
                buf = cached_values[l]
                if pos.numel():
                    buf.index_copy_(0, pos, out)
                    cache.insert(l, rows_of[l].index_select(0, pos), out, since=token, validate=False)
                out = buf
            elif pos is not None:
                buf = out.new_zeros(rows_of[l].numel(), out.shape[1])
                buf.index_copy_(0, pos, out)
                out = buf
            h = out
        return h

    def _record_support(self, targets, hop0, pos0, num_rows0: int, seed: int) -> None:
        """Raw-feature supporting nodes of this batch: with the cache and (``cache.track_support``) without it."""
        computed = hop0.frontier.numel() - (num_rows0 - (num_rows0 if pos0 is None else pos0.numel()))
        if not self.cache.track_support:
            self.cache.record_support(computed)
            return
        rows = targets
        for l in reversed(range(self.num_layers)):
            if self._convs[l].reads_neighbours:
                g, _ = self._message[l]
                rows = expand_hop(g.rowptr, g.col, rows, self.fanouts[l], hop_random_seed(seed, l)).frontier
        self.cache.record_support(computed=computed, without_cache=rows.numel())

    def _layer(self, l: int, h: Optional[Tensor], rows: Tensor, hop, pos: Optional[Tensor]) -> Tensor:
        """Output of layer ``l`` for ``rows[pos]`` (all rows if ``pos`` is None); ``h`` = layer input for the
        hop's frontier (``None`` for layer 0, which reads the raw table through global ids)."""
        conv = self._convs[l]
        first = l == 0
        if conv.reads_neighbours:
            g, edge_weight = self._message[l]
            weight = None if edge_weight is None else edge_weight.index_select(0, hop.edge_ids)
            col = g.col.index_select(0, hop.edge_ids) if first else hop.col
            block = Block(rows.numel(), hop.rowptr, col, weight, rows if first else None)
        else:
            block = Block(rows.numel(), self_rows=rows if first else None)
        src = self.x if first else h
        return self._model.layer_block(l, src, block, pos, x_neigh=self._x_neigh if first else None)

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
                                                   degree_normalised=any(c.reads_neighbours and c.degree_normalised for c in self._convs))
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
            if self._x_neigh is not None:
                self._x_neigh.index_copy_(0, nodes, values.index_select(1, self._neigh_index))
            if self.cache is not None:
                self.cache.invalidate_after_update(self.graph, changed_nodes=nodes)
                self.cache.bind(self.model, self.x)  # the cache now holds outputs on the engine's own copy
            self.version += 1
