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
  (``neighbour_channels()``, batched pruning scheme) the engine keeps a compact ``[N, k]`` copy of them. When
  layer 0 offers a table plan (``table_plan``: e.g. GraphSAGE's projections ``[x W_l | x W_r]`` of every raw
  row, when narrower than the raw rows it would gather) the engine keeps that table instead (``project_first``),
  so a batch gathers ``out``-wide rows per edge and per row and runs no GEMM in layer 0. Per-edge
  values (GCN's normalisation) are the message graph's, i.e. over the *full* graph, sliced with the block's
  global edge ids, so exact mode equals full inference.
* Where the index side runs (``support=``): the support expansion, masks and cache bookkeeping work on index
  tensors whose sizes depend on the data; the layers work on features. ``support="device"`` keeps both on the
  features' device (on a GPU every data-dependent size is then a host synchronisation: ``expand_hop`` reads two
  numbers per hop, ``nonzero`` one per cached layer). ``support="host"`` (the default on a GPU) keeps the index
  side on the host -- the graph (a host copy grown alongside), the cache's bookkeeping (``index_device="cpu"``;
  its values stay on the device), the CPU ``expand_hop`` kernel -- and sends each batch's index tensors to the
  device in one non-blocking copy from pinned memory per dtype (plus the per-edge values), after which the layers
  run on the device. ``predict`` then reads nothing back from the device: its one host synchronisation is copying
  targets given as a device tensor to the host. Both give identical exact-mode answers; on CPU they are the same.

Fanouts per layer: ``None``/``-1`` = every neighbour (exact), ``k`` = ``k`` neighbours drawn uniformly with
replacement; the draws are a pure function of ``(seed, layer, node, draw)`` (see ``expand_hop``), so an
engine answers deterministically for its ``seed``.

Updates (``add_nodes``, ``add_edges``, ``update_features``) take the engine's lock exclusively and invalidate
exactly the cached entries whose receptive field they touch (edge insertions: unless the engine was built
with ``on_new_edges="keep"``); ``predict`` calls share it. Every answer is
therefore the model's output on one consistent state of the graph and features (the one before or after each
update).

Growth. The engine keeps the graph as a :class:`~gnnaccel.growth.GrowingCSR` (and, with a cache, its reverse
for the receptive fields): new nodes and edges are appended in amortised O(1) per node and per edge, the
feature table and the cache's node-indexed tables double their capacity, so a stream of small batches never
pays O(E) per batch. Layers that aggregate over the graph itself (GraphSAGE, SAINT, GCN without normalisation)
read the growing structure directly. A degree-normalised layer (GCN's ``D^-1/2 (A+I) D^-1/2``) has per-edge
values that a new edge changes across whole rows, so its message graph is recomputed from the grown graph on
every growth (O(E) per update, for those layers only). ``engine.graph`` packs the grown graph into a
:class:`~gnnaccel.Graph` when read (O(E), memoised per version).
"""
from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._memory import empty_for_gather
from .cache import to_device
from .graph import Graph
from .growth import GrowingCSR
from .models import HALF_DTYPES, as_features, as_model, check_inference_dtype
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


class _GraphSupport:
    """Expansion over a fixed message graph (a degree-normalised layer's; rebuilt by the engine on growth), on
    the device of the index side."""

    def __init__(self, graph: Graph, dtype: torch.dtype):
        self.graph = graph
        w = graph.edge_weight
        self.weight = None if w is None else w.to(dtype)

    def expand(self, seeds: Tensor, fanout: int, random_seed: int, skip: Optional[Tensor] = None):
        return expand_hop(self.graph.rowptr, self.graph.col, seeds, fanout, random_seed, skip)

    def weights(self, edge_ids: Tensor) -> Optional[Tensor]:
        return None if self.weight is None else self.weight.index_select(0, edge_ids)


class _GrowingSupport:
    """Expansion over the engine's growing graph itself (layers whose message graph is the graph)."""

    def __init__(self, csr: GrowingCSR, dtype: torch.dtype):
        self.csr, self.dtype = csr, dtype
        self.expand = csr.expand

    def weights(self, edge_ids: Tensor) -> Optional[Tensor]:
        w = self.csr.weights(edge_ids)
        return None if w is None else w.to(self.dtype)


def _resolve_cache(cache, num_nodes: int, widths: List[int], x: Tensor, index_device: torch.device):
    """``cache=`` argument -> a FeatureCache or None, with a clear error for anything else."""
    from .cache import FeatureCache

    if cache is None or cache is False:
        return None
    if isinstance(cache, FeatureCache):
        if cache.index_device != index_device:
            raise ValueError(f"the cache keeps its bookkeeping on {cache.index_device} but the engine's support runs "
                             f"on {index_device}: build it with FeatureCache(..., index_device='{index_device}') "
                             "or choose the engine's support= accordingly")
        return cache
    if cache is True or (isinstance(cache, int) and not isinstance(cache, bool)):
        if cache is not True and cache < 1:
            raise ValueError(f"cache capacity must be a positive int, got {cache}")
        if not widths:
            return None
        return FeatureCache(num_nodes, widths, capacity=None if cache is True else cache, device=x.device,
                            dtype=x.dtype, index_device=index_device)
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
        support: where the index side runs (see the module docstring): ``"host"`` (default when ``x`` is on a
            GPU: at most one host synchronisation per ``predict``) or ``"device"`` (default otherwise; on a GPU
            it keeps a graph copy on the host out of memory, at the price of synchronisations per hop).
        on_new_edges: what an edge insertion (``add_nodes`` / ``add_edges``) does to the cache.
            ``"invalidate"`` (default): every entry whose receptive field the new edges reach is dropped, so
            answers equal full inference on the grown graph. ``"keep"``: entries of existing nodes stay (new
            nodes start without entries, and ``update_features`` still invalidates exactly): an existing node's
            cached hidden features then miss the neighbours that arrived after they were computed, and answers
            approximate full inference. For streams where every new node links to the very nodes whose entries
            it would read (each review to the earlier reviews of its user and product), exact invalidation
            leaves the cache nothing to hit; "keep" reuses the hidden features of nodes already visited.
        dtype: None (run in ``x``'s dtype, which must be the model's) or the dtype to run in
            (:data:`~gnnaccel.models.INFERENCE_DTYPES`): with ``torch.bfloat16`` / ``torch.float16`` the engine
            keeps its feature table (a converted copy of ``x``), every hidden activation and the cache values at
            half width, runs its model copy converted through the modules (``Module.to``), converts the
            features given to ``add_nodes`` / ``update_features``, and returns float32 outputs. A given
            ``cache`` must store that dtype; one warmed by :func:`~gnnaccel.inference.warm_cache` on the
            caller's ``(model, x)`` is accepted.
        project_first: keep layer 0's table plan (``table_plan`` of the block protocol, memory ``N x`` its
            width, computed once and updated with the features) when the layer offers one (default True);
            False: layer 0 reads the raw rows of every batch.

    Attributes: ``num_nodes`` and :attr:`num_edges` (the current graph), ``version`` (number of updates
    applied), ``graph`` (the current graph, packed when read), ``x`` (the current features, in the engine's
    dtype), ``dtype`` (the dtype the engine stores and computes in), ``out_dtype`` (that of its answers), ``cache``.
    """

    def __init__(self, model, graph, x: Tensor, fanouts: Optional[Sequence[Optional[int]]] = None,
                 cache=None, seed: int = 0, support: Optional[str] = None, on_new_edges: str = "invalidate",
                 dtype: Optional[torch.dtype] = None, project_first: bool = True):
        check_inference_dtype(dtype)
        model = as_model(model)  # a PyG GraphSAGE / GCN: converted once with from_pyg
        if not hasattr(model, "convs") or not hasattr(model, "layer_block"):
            raise TypeError("BatchedEngine expects a gnnaccel model with .convs and .layer_block, or a PyG "
                            "GraphSAGE / GCN")
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise TypeError("x must be a 2-D floating-point tensor [num_nodes, channels]")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if support is None:
            support = "host" if x.device.type == "cuda" else "device"
        if support not in ("host", "device"):
            raise ValueError(f"support must be 'host', 'device' or None (chosen per device), got {support!r}")
        self.support = support
        if on_new_edges not in ("invalidate", "keep"):
            raise ValueError(f"on_new_edges must be 'invalidate' or 'keep', got {on_new_edges!r}")
        self.on_new_edges = on_new_edges
        if not isinstance(project_first, bool):
            raise TypeError(f"project_first must be a bool, got {project_first!r}")
        self.project_first = project_first
        self._support_device = torch.device("cpu") if support == "host" else x.device
        for conv in model.convs:
            check_layer(conv, "BatchedEngine")
        params = list(model.parameters())
        if dtype is None and params and params[0].dtype != x.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's weights are {params[0].dtype} (or pass dtype=)")
        if params and params[0].device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {params[0].device}")
        self.model = model
        self._model = copy.deepcopy(model).eval()
        self._converts = dtype is not None  # features given later are converted to the engine's dtype
        caller_x = x
        if dtype is not None:
            self._model.to(dtype)  # the engine's own copy, converted by its modules (index buffers stay integer)
            x = as_features(x, dtype, "x")
        self.out_dtype = torch.float32 if x.dtype in HALF_DTYPES else x.dtype  # predict's output dtype
        self._convs = list(self._model.convs)
        graph = as_graph(graph, x.shape[0])
        self.num_nodes = graph.num_nodes
        self.seed = seed
        self.dtype = x.dtype
        self.num_layers = len(self._convs)
        self.fanouts = self._resolve_fanouts(fanouts)
        widths = [conv.out_channels for conv in self._convs[:-1]]
        cache = _resolve_cache(cache, graph.num_nodes, widths, x, self._support_device)
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
            cache.check_owner(model, caller_x)  # refuses a cache filled by another model or from other features
        self.version = 0  # number of updates applied (read without the lock: a monotone counter)
        self._lock = _ReadWriteLock()
        self._owns_x = False
        self._degree_normalised = any(c.reads_neighbours and c.degree_normalised for c in self._convs)
        host_graph = graph.to(self._support_device)
        self._csr = GrowingCSR.from_graph(host_graph)
        # The reversed graph, grown alongside: the receptive fields that updates invalidate in the cache.
        # With on_new_edges="keep" only feature updates invalidate: built on the first one (_reverse_csr).
        self._reverse = None
        if cache is not None and on_new_edges == "invalidate":
            self._reverse = self._reverse_csr(host_graph)
        # (version, Graph on the index side, the same on x's device or None): memoised per version.
        self._packed = (0, host_graph, None)
        self._set_graph(host_graph, first=True)
        self._set_features(x)
        self._owns_x = x is not caller_x  # a converted copy is the engine's own

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

    def _set_graph(self, graph: Graph, first: bool = False) -> None:
        """Per propagating layer, what its hops expand over: the growing graph itself when the layer's message
        graph is the graph, else the layer's own message graph (asked from the layer; at construction, and
        again after every growth: degree-normalised layers)."""
        if first:
            self._support = []
            for conv in self._convs:
                if not conv.reads_neighbours:
                    self._support.append(None)
                    continue
                g = conv.message_graph(graph, self.dtype)
                self._support.append(_GrowingSupport(self._csr, self.dtype) if g is graph
                                     else _GraphSupport(g, self.dtype))
            return
        for l, support in enumerate(self._support):
            if isinstance(support, _GraphSupport):
                self._support[l] = _GraphSupport(self._convs[l].message_graph(graph, self.dtype), self.dtype)

    @property
    def graph(self) -> Graph:
        """The current graph as a packed :class:`~gnnaccel.Graph` on the features' device (O(E) the first time
        after an update)."""
        with self._lock.read():
            version, host, graph = self._packed
            if version != self.version or graph is None:
                host = self._current_graph()
                graph = host.to(self.x.device)
                self._packed = (self.version, host, graph)
            return graph

    def _current_graph(self) -> Graph:
        """The current graph, packed, on the index side's device."""
        version, graph, _ = self._packed
        if version != self.version:
            graph = self._csr.to_graph()
            self._packed = (self.version, graph, None)
        return graph

    @property
    def num_edges(self) -> int:
        """Number of edges of the current graph."""
        return self._csr.num_edges

    def _set_features(self, x: Tensor) -> None:
        """The raw table and what layer 0 reads of it: its table plan (``project_first``), else, when its
        neighbour aggregation reads a subset of the channels, the compact copy of those.

        ``self._x_rows`` / ``self._x_neigh_rows`` / ``self._plan_rows`` are the full buffers (capacity for
        growth), ``self.x``, ``self._x_neigh`` and ``self._plan`` their first ``num_nodes`` rows."""
        self._x_rows = x.contiguous()
        first = self._convs[0]
        idx = first.neighbour_channels() if first.reads_neighbours else None
        self._neigh_index = None if idx is None else idx.to(x.device, torch.long)
        self._x_neigh_rows = (None if idx is None
                              else self._x_rows.index_select(1, self._neigh_index).contiguous())
        self._plan_rows = None
        if self.project_first and first.reads_neighbours:
            self._plan_rows = self._table_plan(self._x_rows, self._x_neigh_rows)
            if self._plan_rows is not None:
                self._x_neigh_rows = None  # layer 0 reads the plan only
        self._view_features()

    def _table_plan(self, x: Tensor, x_neigh: Optional[Tensor]) -> Optional[Tensor]:
        """Layer 0's table plan of the rows ``x`` (None when it offers none)."""
        table_plan = getattr(self._convs[0], "table_plan", None)
        with torch.no_grad():
            plan = None if table_plan is None else table_plan(x, x_neigh)
        return None if plan is None else plan.contiguous()

    def _plan_of(self, values: Tensor) -> Tensor:
        """Layer 0's table plan of new raw rows ``values`` (the engine keeps one)."""
        neigh = None if self._neigh_index is None else values.index_select(1, self._neigh_index)
        return self._table_plan(values, neigh)

    def _view_features(self) -> None:
        n = self.num_nodes

        def head(t):
            return t if t is None or t.shape[0] == n else t[:n]
        self.x, self._x_neigh, self._plan = head(self._x_rows), head(self._x_neigh_rows), head(self._plan_rows)

    def _own_features(self, rows: int) -> None:
        """Copy the features into the engine's own buffers (never write the caller's tensor) with room for
        ``rows`` nodes (doubling: amortised O(C) per added node)."""
        capacity = self._x_rows.shape[0]
        if self._owns_x and rows <= capacity:
            return
        size = max(rows, 2 * capacity) if rows > capacity else capacity
        n = self.num_nodes
        table = self._x_rows.new_empty(size, self._x_rows.shape[1])
        table[:n] = self._x_rows[:n]
        self._x_rows = table
        if self._x_neigh_rows is not None:
            compact = self._x_neigh_rows.new_empty(size, self._x_neigh_rows.shape[1])
            compact[:n] = self._x_neigh_rows[:n]
            self._x_neigh_rows = compact
        if self._plan_rows is not None and self._plan_rows.shape[0] < size:
            plan = empty_for_gather((size, self._plan_rows.shape[1]), self._plan_rows)
            plan[:n] = self._plan_rows[:n]
            self._plan_rows = plan
        self._owns_x = True
        self._view_features()

    # ------------------------------------------------------------------ prediction
    def predict(self, targets, seed: Optional[int] = None) -> Tensor:
        """Model outputs ``[len(targets), out]`` for ``targets``.

        Args:
            targets: node ids (int tensor on any device, list or numpy array; duplicates allowed; not empty).
            seed: sampling seed for this call (default: the engine's).
        Returns:
            Tensor on the features' device, in :attr:`out_dtype` (float32 for an engine at half width, else
            its dtype). With ``support="host"`` nothing is read back from the device: the
            call synchronises at most once (copying targets given as a device tensor to the host).
        """
        if isinstance(targets, Tensor) and targets.device != self._support_device:
            targets = targets.to(self._support_device)  # support="host": the one synchronisation of the call
        targets = as_node_ids(targets, self.num_nodes, "targets", device=self._support_device, allow_empty=False)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        seed = self.seed if seed is None else seed
        with self._lock.read(), torch.inference_mode():
            out = self._predict(targets, seed)
        return out if out.dtype == self.out_dtype else out.to(self.out_dtype)

    def _predict(self, targets: Tensor, seed: int) -> Tensor:
        # Distinct targets: then every layer's rows are distinct (a hop's frontier is its seeds, then new nodes).
        inverse = None
        if targets.numel() > 1:
            distinct, inverse = torch.unique(targets, return_inverse=True)
            if distinct.numel() == targets.numel():
                inverse = None  # no duplicate: answer in the given order, no final gather
            else:
                targets = distinct
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
                hit, values = cache.lookup(l, rows, validate=False)  # ids the engine produced
                # No hit (read where the bookkeeping is on the host): compute as without a cache, insert all.
                if cache.index_device.type != "cpu" or bool(hit.any()):
                    cached_values[l] = values
                    mask = ~hit if mask is None else mask & ~hit
            if mask is not None:
                compute[l] = torch.nonzero(mask).flatten()
            if conv.reads_neighbours:
                hop = self._support[l].expand(rows, self.fanouts[l], hop_random_seed(seed, l),
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

        # Everything the layers read, built on the index side, then moved to the features' device at once.
        blocks = [self._block(l, rows_of[l], hops[l]) for l in range(L)]
        fields = [[b.rowptr, b.col, b.edge_weight, b.self_rows, compute[l]] for l, b in enumerate(blocks)]
        moved = self._to_compute_device([t for f in fields for t in f] + [inverse])
        inverse = moved.pop()
        h = None
        for l in range(L):
            rowptr, col, weight, self_rows, pos = moved[5 * l: 5 * l + 5]
            block = Block(blocks[l].num_rows, rowptr, col, weight, self_rows)
            src, x_neigh, plan = (self.x, self._x_neigh, self._plan) if l == 0 else (h, None, None)
            num_rows = rows_of[l].numel()
            if cached_values[l] is not None and compute[l].numel() == 0:  # every row cached: nothing to compute
                h = cached_values[l]
                continue
            out = self._model.layer_block(l, src, block, pos, x_neigh=x_neigh, plan=plan)
            if l < self.num_cached:  # the computed rows (distinct, as every layer's rows are) enter the cache
                computed = rows_of[l] if compute[l] is None else rows_of[l].index_select(0, compute[l])
                if computed.numel():
                    cache.insert(l, computed, out, since=token, validate=False, distinct=True)
            if cached_values[l] is not None:
                buf = cached_values[l]
                buf.index_copy_(0, pos, out)
                out = buf
            elif pos is not None:
                buf = out.new_zeros(num_rows, out.shape[1])
                buf.index_copy_(0, pos, out)
                out = buf
            h = out
        return h if inverse is None else h.index_select(0, inverse)

    def _to_compute_device(self, tensors: List[Optional[Tensor]]) -> List[Optional[Tensor]]:
        """The tensors on the features' device: as they are when the index side runs there; else one copy per
        dtype (from pinned memory, non-blocking, on a GPU), split into views."""
        device = self.x.device
        if self._support_device == device:
            return tensors
        out = list(tensors)
        groups = {}
        for i, t in enumerate(tensors):
            if t is not None:
                groups.setdefault(t.dtype, []).append(i)
        for dtype, idx in groups.items():
            sizes = [tensors[i].numel() for i in idx]
            packed = torch.empty(sum(sizes), dtype=dtype, pin_memory=device.type == "cuda")
            torch.cat([tensors[i].reshape(-1) for i in idx], out=packed)
            on_device = packed.to(device, non_blocking=True)
            for i, piece in zip(idx, on_device.split(sizes)):
                out[i] = piece.view(tensors[i].shape)
        return out

    def _record_support(self, targets, hop0, pos0, num_rows0: int, seed: int) -> None:
        """Raw-feature supporting nodes of this batch: with the cache and (``cache.track_support``) without it."""
        computed = hop0.frontier.numel() - (num_rows0 - (num_rows0 if pos0 is None else pos0.numel()))
        if not self.cache.track_support:
            self.cache.record_support(computed)
            return
        rows = targets
        for l in reversed(range(self.num_layers)):
            if self._convs[l].reads_neighbours:
                rows = self._support[l].expand(rows, self.fanouts[l], hop_random_seed(seed, l)).frontier
        self.cache.record_support(computed=computed, without_cache=rows.numel())

    def _block(self, l: int, rows: Tensor, hop) -> Block:
        """Layer ``l``'s block over ``rows`` (index side): its sources are the hop's frontier, or for layer 0
        the raw table through global ids (``col`` = source node ids, ``self_rows`` = ``rows``)."""
        first = l == 0
        if not self._convs[l].reads_neighbours:
            return Block(rows.numel(), self_rows=rows if first else None)
        support = self._support[l]
        # Layer 0's sources are global ids: frontier[col] (a read of the small frontier, not of the graph).
        col = hop.frontier.index_select(0, hop.col) if first else hop.col
        return Block(rows.numel(), hop.rowptr, col, support.weights(hop.edge_ids), rows if first else None)

    @staticmethod
    def _reverse_csr(graph: Graph) -> GrowingCSR:
        """The reversed graph as a GrowingCSR (grown alongside the graph from then on)."""
        t = graph.transpose()
        return GrowingCSR(t.rowptr, t.col, graph.num_nodes)

    # ------------------------------------------------------------------ updates
    def add_nodes(self, features, edge_index=None, edge_weight=None, *, first_id: Optional[int] = None) -> Tensor:
        """Append ``k`` nodes with features ``features`` [k, C] and the edges ``edge_index`` [2, E].

        The new nodes get ids ``n0 .. n0 + k - 1`` with ``n0`` = :attr:`num_nodes` when the update takes the
        engine's lock. Amortised O(k C + E) (see the module docstring); cached entries whose receptive field the
        new edges reach are invalidated, the new nodes start without entries.

        Args:
            features: [k, C] tensor (or numpy array) of the engine's dtype (any floating dtype, converted, for an
                engine built with ``dtype=``) and width, finite; ``k`` may be 0.
            edge_index: optional [2, E] (PyG flow: row 0 = source, row 1 = target) over existing ids and the new
                ones (``n0 + position``); pass both directions of a symmetric relation (nothing is symmetrised).
                Self loops and duplicate edges are kept.
            edge_weight: [E] finite weights, given exactly when the graph is weighted.
            first_id: when given, must equal ``n0`` (a compare-and-swap for callers that computed the new ids
                from :attr:`num_nodes`).
        Returns:
            the new ids, int64 on the features' device.
        Raises:
            TypeError / ValueError naming the problem (width, dtype, NaN/inf, an id out of range, ``first_id``);
            the engine is then unchanged.
        """
        features = self._check_new_features(features)
        if first_id is not None and (isinstance(first_id, bool) or not isinstance(first_id, int)):
            raise TypeError(f"first_id must be an int or None, got {first_id!r}")
        k = features.shape[0]
        with self._lock.write():
            n0 = self.num_nodes
            if first_id is not None and first_id != n0:
                raise ValueError(f"the graph grew concurrently: first_id={first_id} but the new nodes would get ids "
                                 f"from {n0}")
            edges, weight = self._check_new_edges(edge_index, edge_weight, n0 + k)
            self._grow(features, edges, weight)
        return torch.arange(n0, n0 + k, device=features.device)

    def add_edges(self, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> None:
        """Insert edges ``edge_index`` [2, E] (PyG flow: row 0 = source j, row 1 = target i) and invalidate
        every cached entry whose receptive field they reach. Amortised O(E) (see the module docstring)."""
        edge_index = _as_edge_index(edge_index, self.num_nodes)
        edge_weight = _as_new_edge_weight(edge_weight, edge_index.shape[1])
        if edge_index.shape[1] == 0:
            return
        with self._lock.write():
            edges, weight = self._check_new_edges(edge_index, edge_weight, self.num_nodes)
            self._grow(None, edges, weight)

    def _check_new_features(self, features) -> Tensor:
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a [k, {self.x.shape[1]}] tensor, got {type(features).__name__}")
        if features.dim() != 2 or features.shape[1] != self.x.shape[1]:
            raise ValueError(f"features must have shape [k, {self.x.shape[1]}] (the engine's feature width), got "
                             f"{list(features.shape)}")
        if self._converts:
            features = as_features(features, self.dtype, "features")
        elif features.dtype != self.dtype:
            raise TypeError(f"features must have the engine's dtype {self.dtype}, got {features.dtype}")
        if features.numel() and not bool(torch.isfinite(features).all()):
            raise ValueError("features hold NaN or infinite values")
        return features

    def _check_new_edges(self, edge_index, edge_weight, num_nodes: int):
        """Validated (int64 [2, E] on the engine's device, weights or None) against ``num_nodes`` ids."""
        if edge_index is None:
            if edge_weight is not None:
                raise ValueError("edge_weight given without edge_index")
            return None, None
        edges = _as_edge_index(edge_index, num_nodes).to(self._support_device)
        weight = _as_new_edge_weight(edge_weight, edges.shape[1])
        if edges.shape[1] == 0:
            return None, None
        if self._csr.weighted != (weight is not None):
            raise ValueError("give edge_weight for the new edges exactly when the graph is weighted (the graph is "
                             f"{'' if self._csr.weighted else 'un'}weighted)")
        if weight is not None and not bool(torch.isfinite(weight).all()):
            raise ValueError("edge_weight holds NaN or infinite values")
        return edges, weight

    def _grow(self, features: Optional[Tensor], edges: Optional[Tensor], weight: Optional[Tensor]) -> None:
        """Apply a checked growth under the write lock: new rows, new edges, message graphs, cache."""
        n0 = self.num_nodes
        k = 0 if features is None else features.shape[0]
        if k == 0 and edges is None:
            return
        n = n0 + k
        if k:
            self._own_features(n)
            features = features.to(self.x.device)
            self._x_rows[n0:n] = features
            if self._x_neigh_rows is not None:
                self._x_neigh_rows[n0:n] = features.index_select(1, self._neigh_index)
            if self._plan_rows is not None:
                self._plan_rows[n0:n] = self._plan_of(features)
            self._csr.add_nodes(k)
            if self._reverse is not None:
                self._reverse.add_nodes(k)
            self.num_nodes = n
            self._view_features()
        if edges is not None:
            self._csr.add_edges(edges[0], edges[1], weight)
            if self._reverse is not None:
                self._reverse.add_edges(edges[1], edges[0])
        self.version += 1
        if any(isinstance(s, _GraphSupport) for s in self._support):
            self._set_graph(self._current_graph())  # degree-normalised layers: O(E) per growth
        if self.cache is not None:
            self.cache.grow(n)
            if edges is not None and self.on_new_edges == "invalidate":
                self.cache.invalidate_after_update(None, new_edge_index=edges,
                                                   degree_normalised=self._degree_normalised, reverse=self._reverse)
            if k:
                self.cache.bind(self.model, self.x)  # the cache now holds outputs on the engine's own table

    def update_features(self, nodes: Tensor, values: Tensor) -> None:
        """Set the raw features of ``nodes`` to ``values`` [len(nodes), C] and invalidate every cached entry
        that depends on them."""
        nodes = as_node_ids(nodes, self.num_nodes, "nodes", device=self._support_device)
        if not isinstance(values, Tensor) or values.dim() != 2 or values.shape != (nodes.numel(), self.x.shape[1]):
            raise ValueError(f"values must be a tensor of shape [{nodes.numel()}, {self.x.shape[1]}]")
        if nodes.numel() == 0:
            return
        rows = to_device(nodes, self.x.device)
        values = (as_features(values, self.dtype, "values") if self._converts else values).to(self.x)
        with self._lock.write():
            self._own_features(self.num_nodes)  # copy on first write: never modify the caller's tensor
            self.x.index_copy_(0, rows, values)
            if self._x_neigh is not None:
                self._x_neigh.index_copy_(0, rows, values.index_select(1, self._neigh_index))
            if self._plan is not None:
                self._plan.index_copy_(0, rows, self._plan_of(values))
            if self.cache is not None:
                if self._reverse is None:
                    self._reverse = self._reverse_csr(self._current_graph())
                self.cache.invalidate_after_update(None, changed_nodes=nodes, reverse=self._reverse)
                self.cache.bind(self.model, self.x)  # the cache now holds outputs on the engine's own copy
            self.version += 1

    # ------------------------------------------------------------------ inspection
    def stats(self) -> dict:
        """A snapshot: ``num_nodes``, ``num_edges``, ``version``, ``growth`` (reallocation and row-move counts of
        the growing graph), and with a cache ``hit_rate``, ``invalidated`` (cumulative) and ``cache`` (the
        cache's full :meth:`~gnnaccel.cache.FeatureCache.stats`); without a cache those three are None."""
        with self._lock.read():
            out = {"num_nodes": self.num_nodes, "num_edges": self.num_edges, "version": self.version,
                   "growth": dict(self._csr.counters)}
        cache = self.cache.stats() if self.cache is not None else None
        out.update(cache=cache, hit_rate=None if cache is None else cache["hit_rate"],
                   invalidated=None if cache is None else cache["invalidated"])
        return out
