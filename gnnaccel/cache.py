"""Hidden-feature cache for real-time batched inference, and the receptive fields that invalidate it.

A :class:`FeatureCache` stores, per cached layer, the hidden feature (a layer's output) of visited nodes with a
validity mask. Batched inference of a 2-layer model needs the layer-1 outputs of the targets' hop-1 neighbours
S1; every node of S1 found in the cache is neither recomputed nor expanded, so its neighbourhood (the dominant
cost: |S1|·fanout raw feature rows) is never gathered.

Layer numbering: cache layer ``i`` holds the output of model layer ``i`` (0-based), i.e. the input of layer
``i + 1``; a model with L layers caches at most layers ``0 .. L-2``.

Consistency. Every method takes one lock, so a lookup never sees a half-written entry, and after
:meth:`FeatureCache.invalidate` returns no lookup returns the old entry. A value computed from features read
*before* an invalidation must not be inserted after it: read ``token = cache.epoch`` before reading the
features, and pass ``insert(..., since=token)``; entries of nodes invalidated after ``token`` are dropped.

Capacity. ``capacity=None`` (or >= num_nodes) keeps a dense [num_nodes, dim] table per layer. A smaller capacity
keeps ``capacity`` slots per layer and evicts the least recently used entry (a lookup hit or an insert counts as a
use). Recency is kept with a stamp per slot and a lazily pruned queue of (slot, stamp) uses, so lookup, insert
and eviction cost O(batch) amortised, never O(capacity).
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["FeatureCache", "downstream_balls", "stale_after_feature_update", "stale_after_new_edges",
           "reverse_csr"]


def _last_occurrences(nodes: Tensor) -> Tensor:
    """Positions of the last occurrence of each distinct value of ``nodes``, ascending (batch order of last use)."""
    if nodes.numel() <= 1:
        return torch.arange(nodes.numel(), device=nodes.device)
    uniq, inverse = torch.unique(nodes, return_inverse=True)
    positions = torch.arange(nodes.numel(), device=nodes.device)
    last = torch.full((uniq.numel(),), -1, dtype=torch.long, device=nodes.device)
    last.scatter_reduce_(0, inverse, positions, reduce="amax")
    return torch.sort(last).values


class _LayerStore:
    """One cached layer: values, validity and (when bounded) slots with LRU recency. Not locked itself."""

    def __init__(self, num_nodes: int, dim: int, capacity: Optional[int], device, dtype):
        self.num_nodes, self.dim = num_nodes, dim
        self.bounded = capacity is not None and capacity < num_nodes
        self.capacity = capacity if self.bounded else num_nodes
        idx = dict(dtype=torch.long, device=device)
        self.values = torch.zeros(self.capacity, dim, dtype=dtype, device=device)
        # Epoch at which each node was last invalidated (insert(since=...) drops entries invalidated after since).
        self.invalidated_at = torch.zeros(num_nodes, **idx)
        self.all_invalidated_at = 0
        if not self.bounded:
            self.valid = torch.zeros(num_nodes, dtype=torch.bool, device=device)
            return
        self.slot_of_node = torch.full((num_nodes,), -1, **idx)
        self.node_of_slot = torch.full((self.capacity,), -1, **idx)
        self.slot_stamp = torch.full((self.capacity,), -1, **idx)  # stamp of the slot's last use; -1 = free
        self.free_slots = torch.arange(self.capacity - 1, -1, -1, **idx)  # a stack: free_slots[:num_free]
        self.num_free = self.capacity
        self.next_stamp = 0
        # Queue of uses (slot, stamp), oldest first; an entry is live iff slot_stamp[slot] == stamp.
        queue_len = 2 * self.capacity + 64
        self.queue_slot = torch.empty(queue_len, **idx)
        self.queue_stamp = torch.empty(queue_len, **idx)
        self.head = self.tail = 0

    # -------------------------------------------------------------- bounded-mode helpers
    def _touch(self, slots: Tensor) -> None:
        """Mark distinct ``slots`` as used now, in the given order (the last is the most recent)."""
        k = slots.numel()
        if k == 0:
            return
        stamps = torch.arange(self.next_stamp, self.next_stamp + k, dtype=torch.long, device=slots.device)
        self.next_stamp += k
        self.slot_stamp[slots] = stamps
        if self.tail + k > self.queue_slot.numel():
            self._compact_queue(k)
        self.queue_slot[self.tail:self.tail + k] = slots
        self.queue_stamp[self.tail:self.tail + k] = stamps
        self.tail += k

    def _compact_queue(self, extra: int) -> None:
        qs, qt = self.queue_slot[self.head:self.tail], self.queue_stamp[self.head:self.tail]
        live = self.slot_stamp[qs] == qt
        qs, qt = qs[live], qt[live]
        n = qs.numel()  # <= capacity: one live entry per occupied slot
        if n + extra > self.queue_slot.numel():
            size = max(2 * self.queue_slot.numel(), n + extra + 64)
            self.queue_slot = torch.empty(size, dtype=torch.long, device=qs.device)
            self.queue_stamp = torch.empty(size, dtype=torch.long, device=qs.device)
        self.queue_slot[:n] = qs
        self.queue_stamp[:n] = qt
        self.head, self.tail = 0, n

    def _pop_least_recent(self, count: int) -> Tensor:
        """Evict the ``count`` least recently used occupied slots; returns them (now free, not on the stack)."""
        taken: List[Tensor] = []
        while count > 0:
            if self.head >= self.tail:
                raise RuntimeError("FeatureCache internal error: LRU queue exhausted")
            end = min(self.tail, self.head + max(2 * count, 256))
            qs, qt = self.queue_slot[self.head:end], self.queue_stamp[self.head:end]
            live = torch.nonzero(self.slot_stamp[qs] == qt).flatten()
            if live.numel() >= count:
                taken.append(qs[live[:count]])
                self.head += int(live[count - 1]) + 1
                count = 0
            else:
                taken.append(qs[live])
                count -= live.numel()
                self.head = end
        victims = torch.cat(taken)
        self.slot_of_node[self.node_of_slot[victims]] = -1
        self.node_of_slot[victims] = -1
        self.slot_stamp[victims] = -1
        return victims

    def _release(self, slots: Tensor) -> None:
        k = slots.numel()
        if k == 0:
            return
        self.node_of_slot[slots] = -1
        self.slot_stamp[slots] = -1
        self.free_slots[self.num_free:self.num_free + k] = slots
        self.num_free += k

    def _take_free(self, k: int) -> Tensor:
        self.num_free -= k
        return self.free_slots[self.num_free:self.num_free + k].clone()

    # -------------------------------------------------------------- operations
    def lookup(self, nodes: Tensor):
        if not self.bounded:
            hit = self.valid[nodes]
            values = self.values.index_select(0, nodes)
            values.masked_fill_(~hit.unsqueeze(1), 0)
            return hit, values
        slots = self.slot_of_node[nodes]
        hit = slots >= 0
        values = torch.zeros(nodes.numel(), self.dim, dtype=self.values.dtype, device=self.values.device)
        hit_slots = slots[hit]
        values[hit] = self.values.index_select(0, hit_slots)
        if hit_slots.numel():
            self._touch(hit_slots[_last_occurrences(hit_slots)])
        return hit, values

    def insert(self, nodes: Tensor, values: Tensor, since: Optional[int]) -> Dict[str, int]:
        order = _last_occurrences(nodes)  # a node inserted twice keeps its last value
        nodes, values = nodes[order], values[order]
        dropped = 0
        if since is not None:
            fresh = self.invalidated_at[nodes] <= since
            if self.all_invalidated_at > since:
                fresh.zero_()
            dropped = int((~fresh).sum())
            if dropped:
                nodes, values = nodes[fresh], values[fresh]
        if not self.bounded:
            self.values[nodes] = values
            self.valid[nodes] = True
            return {"inserted": nodes.numel(), "evicted": 0, "dropped": dropped}
        if nodes.numel() > self.capacity:  # the earlier ones would be evicted by the later ones of this batch
            nodes, values = nodes[-self.capacity:], values[-self.capacity:]
        slots = self.slot_of_node[nodes]
        present = slots >= 0
        new_nodes = nodes[~present]
        evicted = 0
        if new_nodes.numel():
            # Present nodes are used now: touch them first so that eviction picks older entries only.
            self._touch(slots[present])
            from_free = min(self.num_free, new_nodes.numel())
            parts = [self._take_free(from_free)]
            evicted = new_nodes.numel() - from_free
            if evicted:
                parts.append(self._pop_least_recent(evicted))
            new_slots = torch.cat(parts)
            self.slot_of_node[new_nodes] = new_slots
            self.node_of_slot[new_slots] = new_nodes
            slots = slots.clone()
            slots[~present] = new_slots
        self.values[slots] = values.to(self.values.dtype)
        self._touch(slots)
        return {"inserted": nodes.numel(), "evicted": evicted, "dropped": dropped}

    def invalidate(self, nodes: Tensor, epoch: int) -> int:
        self.invalidated_at[nodes] = epoch
        if not self.bounded:
            removed = int(self.valid[torch.unique(nodes)].sum()) if nodes.numel() else 0
            self.valid[nodes] = False
            return removed
        slots = self.slot_of_node[nodes]
        slots = torch.unique(slots[slots >= 0])
        self.slot_of_node[nodes] = -1
        self._release(slots)
        return slots.numel()

    def invalidate_all(self, epoch: int) -> int:
        self.all_invalidated_at = epoch
        if not self.bounded:
            removed = int(self.valid.sum())
            self.valid.zero_()
            return removed
        removed = self.capacity - self.num_free
        self.slot_of_node.fill_(-1)
        self.node_of_slot.fill_(-1)
        self.slot_stamp.fill_(-1)
        self.free_slots = torch.arange(self.capacity - 1, -1, -1, dtype=torch.long, device=self.values.device)
        self.num_free = self.capacity
        self.head = self.tail = 0
        return removed

    def size(self) -> int:
        return int(self.valid.sum()) if not self.bounded else self.capacity - self.num_free

    def cached_nodes(self) -> Tensor:
        if not self.bounded:
            return torch.nonzero(self.valid).flatten()
        return torch.sort(self.node_of_slot[self.node_of_slot >= 0]).values


class FeatureCache:
    """Per-layer store of hidden node features with validity masks, optional LRU capacity and statistics.

    Args:
        num_nodes: number of nodes of the graph (node ids index the cache).
        dims: width of each cached layer's hidden feature (one entry per cached layer).
        capacity: entries per layer (LRU eviction beyond it); ``None`` = every node (a dense table).
        device, dtype: where and how the values are stored.
    """

    def __init__(self, num_nodes: int, dims: Sequence[int], capacity: Optional[int] = None, device="cpu",
                 dtype: torch.dtype = torch.float32):
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
            raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
        if isinstance(dims, int) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims) \
                or len(dims) == 0:
            raise ValueError(f"dims must be a non-empty list of positive ints (one per cached layer), got {dims!r}")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be None or a positive int, got {capacity!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        self.num_nodes = num_nodes
        self.dims = list(dims)
        self.capacity = capacity
        self.device = torch.device(device)
        self.dtype = dtype
        self._layers = [_LayerStore(num_nodes, d, capacity, self.device, dtype) for d in self.dims]
        self._lock = threading.RLock()
        self._epoch = 0
        self.reset_stats()

    # -------------------------------------------------------------- validation
    @property
    def num_layers(self) -> int:
        return len(self.dims)

    @property
    def epoch(self) -> int:
        """A token for :meth:`insert`'s ``since``: read it before reading the inputs of a computation."""
        with self._lock:
            return self._epoch

    def _check_layer(self, layer) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")
        return layer

    def _check_nodes(self, nodes) -> Tensor:
        if not isinstance(nodes, Tensor):
            raise TypeError(f"nodes must be a torch.Tensor of node ids, got {type(nodes).__name__}")
        if nodes.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"nodes must be an int32 or int64 tensor, got {nodes.dtype}")
        if nodes.dim() != 1:
            raise ValueError(f"nodes must be 1-D, got shape {list(nodes.shape)}")
        if nodes.numel():
            lo, hi = int(nodes.min()), int(nodes.max())
            if lo < 0 or hi >= self.num_nodes:
                raise ValueError(f"nodes must be in [0, {self.num_nodes}), got values in [{lo}, {hi}]")
        return nodes.to(self.device, torch.long)

    # -------------------------------------------------------------- operations
    def lookup(self, layer: int, nodes: Tensor):
        """``(hit_mask [B] bool, values [B, dims[layer]])`` for ``nodes``; rows of misses are zero.

        The values are a copy taken under the lock. A hit counts as a use for LRU.
        """
        layer = self._check_layer(layer)
        nodes = self._check_nodes(nodes)
        with self._lock:
            hit, values = self._layers[layer].lookup(nodes)
            hits = int(hit.sum())
            self._stats[layer]["hits"] += hits
            self._stats[layer]["misses"] += nodes.numel() - hits
        return hit, values

    def insert(self, layer: int, nodes: Tensor, values: Tensor, since: Optional[int] = None) -> int:
        """Store ``values[k]`` as the layer-``layer`` feature of ``nodes[k]``; returns the number stored.

        A node given twice keeps its last value. ``since``: an :attr:`epoch` token read before the values'
        inputs were read; nodes invalidated after it are skipped (their value may be stale).
        """
        layer = self._check_layer(layer)
        nodes = self._check_nodes(nodes)
        if not isinstance(values, Tensor) or not values.is_floating_point():
            raise TypeError("values must be a floating-point torch.Tensor")
        if values.dim() != 2 or values.shape[0] != nodes.numel() or values.shape[1] != self.dims[layer]:
            raise ValueError(f"values must have shape [{nodes.numel()}, {self.dims[layer]}], got {list(values.shape)}")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise TypeError(f"since must be an int epoch token (cache.epoch), got {since!r}")
        values = values.detach().to(self.device, self.dtype)
        with self._lock:
            result = self._layers[layer].insert(nodes, values, since)
            stats = self._stats[layer]
            stats["inserts"] += result["inserted"]
            stats["evictions"] += result["evicted"]
            stats["stale_inserts_dropped"] += result["dropped"]
        return result["inserted"]

    def invalidate(self, nodes: Tensor, layer: Optional[int] = None) -> int:
        """Drop the entries of ``nodes`` (in ``layer``, or every layer); returns how many entries were removed."""
        layers = range(self.num_layers) if layer is None else [self._check_layer(layer)]
        nodes = self._check_nodes(nodes)
        with self._lock:
            self._epoch += 1
            removed = 0
            for l in layers:
                n = self._layers[l].invalidate(nodes, self._epoch)
                self._stats[l]["invalidated"] += n
                removed += n
        return removed

    def invalidate_per_layer(self, nodes_per_layer: Sequence[Optional[Tensor]]) -> int:
        """Drop, atomically, the entries of ``nodes_per_layer[l]`` in layer ``l`` (None = nothing)."""
        if len(nodes_per_layer) != self.num_layers:
            raise ValueError(f"give one node set per cached layer ({self.num_layers}), got {len(nodes_per_layer)}")
        checked = [None if n is None else self._check_nodes(n) for n in nodes_per_layer]
        with self._lock:
            self._epoch += 1
            removed = 0
            for l, nodes in enumerate(checked):
                if nodes is not None:
                    n = self._layers[l].invalidate(nodes, self._epoch)
                    self._stats[l]["invalidated"] += n
                    removed += n
        return removed

    def invalidate_all(self) -> int:
        with self._lock:
            self._epoch += 1
            removed = 0
            for l, store in enumerate(self._layers):
                n = store.invalidate_all(self._epoch)
                self._stats[l]["invalidated"] += n
                removed += n
        return removed

    def invalidate_after_update(self, graph, changed_nodes: Optional[Tensor] = None,
                                new_edge_index: Optional[Tensor] = None, degree_normalised: bool = True) -> int:
        """Invalidate every entry whose receptive field a feature update or an edge insertion touches.

        ``graph`` must be the graph *after* the update. See :func:`stale_after_feature_update` and
        :func:`stale_after_new_edges` (``degree_normalised``: GCN-style weights depend on degrees).
        """
        per_layer: List[Optional[Tensor]] = [None] * self.num_layers
        parts = []
        if changed_nodes is not None:
            parts.append(stale_after_feature_update(graph, changed_nodes, self.num_layers))
        if new_edge_index is not None:
            parts.append(stale_after_new_edges(graph, new_edge_index, self.num_layers, degree_normalised))
        for stale in parts:
            for l, nodes in enumerate(stale):
                per_layer[l] = nodes if per_layer[l] is None else torch.cat([per_layer[l], nodes.long()])
        return self.invalidate_per_layer(per_layer)

    # -------------------------------------------------------------- inspection
    def __len__(self) -> int:
        with self._lock:
            return sum(store.size() for store in self._layers)

    def size(self, layer: int) -> int:
        layer = self._check_layer(layer)
        with self._lock:
            return self._layers[layer].size()

    def cached_nodes(self, layer: int) -> Tensor:
        """Sorted node ids with a valid entry in ``layer``."""
        layer = self._check_layer(layer)
        with self._lock:
            return self._layers[layer].cached_nodes()

    # -------------------------------------------------------------- statistics
    def reset_stats(self) -> None:
        with self._lock:
            self._stats = [dict(hits=0, misses=0, inserts=0, evictions=0, invalidated=0, stale_inserts_dropped=0)
                           for _ in self.dims]
            self._support = dict(batches=0, computed=0, without_cache=0)

    def record_support(self, computed: int, without_cache: int) -> None:
        """Count one batch's supporting nodes: computed with the cache vs needed by the same batch without it."""
        with self._lock:
            self._support["batches"] += 1
            self._support["computed"] += int(computed)
            self._support["without_cache"] += int(without_cache)

    def stats(self) -> dict:
        """Totals and per-layer counters; ``support_reduction`` = supporting nodes without / with the cache."""
        with self._lock:
            per_layer = [dict(s, size=store.size()) for s, store in zip(self._stats, self._layers)]
            support = dict(self._support)
        hits = sum(s["hits"] for s in per_layer)
        misses = sum(s["misses"] for s in per_layer)
        out = {key: sum(s[key] for s in per_layer) for key in per_layer[0] if key != "size"}
        out.update(
            hit_rate=hits / (hits + misses) if hits + misses else 0.0,
            batches=support["batches"],
            support_computed=support["computed"],
            support_without_cache=support["without_cache"],
            support_reduction=(support["without_cache"] / support["computed"]) if support["computed"] else
            (float("inf") if support["without_cache"] else 1.0),
            per_layer=per_layer,
        )
        return out

    # -------------------------------------------------------------- warm start
    def warm(self, model, graph, x: Tensor, nodes: Optional[Tensor] = None,
             inference_fn: Optional[Callable] = None) -> Tensor:
        """Fill the cache from one full-inference pass; returns the model output for every node.

        ``inference_fn(model, graph, x, return_hidden=True) -> (out, hidden_list)`` defaults to
        ``gnnaccel.inference.full_inference``; ``hidden_list[l]`` is the output of layer ``l``. ``nodes``: which
        nodes to store (default: all; with a capacity, the ``capacity`` nodes of highest out-degree, i.e. those
        that the most other nodes aggregate from, inserted so that they are the last to be evicted).
        """
        if inference_fn is None:
            try:
                from .inference import full_inference as inference_fn
            except ImportError as exc:
                raise ImportError("FeatureCache.warm needs gnnaccel.inference.full_inference (or pass "
                                  "inference_fn=...)") from exc
        if getattr(graph, "num_nodes", None) != self.num_nodes:
            raise ValueError(f"graph has {getattr(graph, 'num_nodes', None)} nodes, the cache {self.num_nodes}")
        if nodes is None:
            if self.capacity is not None and self.capacity < self.num_nodes:
                degree = graph.out_degree()
                top = torch.topk(degree, self.capacity, sorted=True).indices
                nodes = top.flip(0)  # highest degree inserted last = most recently used
            else:
                nodes = torch.arange(self.num_nodes)
        nodes = self._check_nodes(nodes)
        token = self.epoch
        with torch.inference_mode():
            out, hidden = inference_fn(model, graph, x, return_hidden=True)
        if len(hidden) < self.num_layers:
            raise ValueError(f"inference returned {len(hidden)} hidden layers, the cache has {self.num_layers}")
        for l in range(self.num_layers):
            h = hidden[l]
            if h.shape != (self.num_nodes, self.dims[l]):
                raise ValueError(f"hidden layer {l} has shape {list(h.shape)}, the cache expects "
                                 f"[{self.num_nodes}, {self.dims[l]}]")
            self.insert(l, nodes, h.index_select(0, nodes.to(h.device)), since=token)
        return out

    def __repr__(self) -> str:
        return (f"FeatureCache(num_nodes={self.num_nodes}, dims={self.dims}, capacity={self.capacity}, "
                f"device={self.device}, dtype={self.dtype}, size={len(self)})")


# ---------------------------------------------------------------------------------------- receptive fields
def reverse_csr(graph):
    """CSR of the reversed graph: row ``j`` lists the nodes ``i`` that aggregate from ``j`` (memoised)."""
    cached = graph.cache.get("reverse_csr")
    if cached is not None:
        return cached
    src = graph.col.long()
    dst = graph.row_of_edge()
    order = torch.argsort(src, stable=True)
    counts = torch.bincount(src, minlength=graph.num_nodes)
    rowptr = torch.zeros(graph.num_nodes + 1, dtype=torch.long, device=src.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    result = (rowptr.to(graph.index_dtype), dst[order].to(graph.index_dtype).contiguous())
    graph.cache["reverse_csr"] = result
    return result


def downstream_balls(graph, nodes: Tensor, hops: int) -> List[Tensor]:
    """``balls[h]`` = nodes reachable from ``nodes`` by at most ``h`` edges in message direction (j -> i when
    row i aggregates from j), for ``h = 0 .. hops``. Exact (every neighbour), computed with ``expand_hop`` on
    the reversed graph; each node is expanded once."""
    from .ops import expand_hop

    rowptr, col = reverse_csr(graph)
    frontier = torch.unique(nodes.long()).to(rowptr.dtype)
    balls = [frontier]
    expanded = 0
    for _ in range(hops):
        skip = torch.arange(frontier.numel()) < expanded  # nodes already expanded at an earlier hop
        expanded = frontier.numel()
        frontier = expand_hop(rowptr, col, frontier, -1, 0, skip).frontier
        balls.append(frontier)
    return balls


def stale_after_feature_update(graph, nodes: Tensor, num_cached_layers: int) -> List[Tensor]:
    """Per cached layer ``l``, the nodes whose layer-``l`` output depends on the features of ``nodes``: the
    output of layer ``l`` reads ``l + 1`` hops, so it is the downstream ball of radius ``l + 1``."""
    balls = downstream_balls(graph, nodes, num_cached_layers)
    return [balls[l + 1] for l in range(num_cached_layers)]


def stale_after_new_edges(graph, edge_index: Tensor, num_cached_layers: int,
                          degree_normalised: bool = True) -> List[Tensor]:
    """Per cached layer ``l``, the nodes whose layer-``l`` output an insertion of edges ``(j, i)`` changes
    (``graph`` = the graph after the insertion).

    Row ``i`` gains a neighbour: layer 0 of ``i`` changes, layer ``l`` of the ball of radius ``l`` around ``i``.
    With degree-normalised weights (GCN's D^-1/2 (A+I) D^-1/2), the degree of ``i`` also scales the edges
    ``i -> k``, so layer 0 of ``i``'s out-neighbours changes too: one hop more (the safe default).
    """
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError("edge_index must be a [2, E] tensor of (source, target) pairs")
    targets = edge_index[1]
    extra = 1 if degree_normalised else 0
    balls = downstream_balls(graph, targets, num_cached_layers + extra)
    return [balls[l + extra] for l in range(num_cached_layers)]
