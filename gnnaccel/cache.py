"""Hidden-feature cache for real-time batched inference, and the receptive fields that invalidate it.

A :class:`FeatureCache` stores, per cached layer, the hidden feature (a layer's output) of visited nodes with a
validity mask. Batched inference of a 2-layer model needs the layer-1 outputs of the targets' hop-1 neighbours
S1; every node of S1 found in the cache is neither recomputed nor expanded, so its neighbourhood (the dominant
cost: |S1|·fanout raw feature rows) is never gathered. The cache runs no model: it is filled by the engine as it
answers, or in one pass by :func:`gnnaccel.inference.warm_cache`.

Layer numbering: cache layer ``i`` holds the output of model layer ``i`` (0-based), i.e. the input of layer
``i + 1``; a model with L layers caches at most layers ``0 .. L-2``.

Device. The values live on the cache's ``device``; the bookkeeping (validity, invalidation epochs, LRU slots,
statistics counters) on its ``index_device`` (default: the same). With everything on one device and
``capacity=None`` (a dense table) ``lookup`` and ``insert`` are pure tensor operations with no host
synchronisation (``validate=False`` also skips the node-id range check, which reads the ids on the host); a
bounded (LRU) cache synchronises there for its slot bookkeeping. With ``index_device="cpu"`` and CUDA values (what
a ``BatchedEngine`` with host-side support uses) every decision is taken on the host from host node ids, and the
device only receives row indices (one small non-blocking copy from pinned memory per lookup / insert): nothing is
ever read back from the device, dense or LRU. Counts are returned as 0-dim tensors on the ``index_device``.

Ownership. A cache holds the outputs of one model on one feature table: it records both (the model's parameters
and buffers, the features' identity, shape and version counter) when it is warmed or first bound to an engine,
and :meth:`FeatureCache.check_owner` refuses another model or other (or since modified) features with a clear
error. :meth:`FeatureCache.invalidate_all` empties the cache and forgets its owner.

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
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._memory import available_memory_bytes
from .ids import as_node_ids

__all__ = ["FeatureCache", "downstream_balls", "stale_after_feature_update", "stale_after_new_edges",
           "reverse_csr"]


def _last_occurrence_mask(nodes: Tensor) -> Tensor:
    """Bool mask over ``nodes``: True at the last occurrence of each distinct value (no host synchronisation)."""
    n = nodes.numel()
    mask = torch.ones(n, dtype=torch.bool, device=nodes.device)
    if n <= 1:
        return mask
    ordered, perm = torch.sort(nodes, stable=True)
    last = torch.ones(n, dtype=torch.bool, device=nodes.device)
    torch.ne(ordered[1:], ordered[:-1], out=last[:-1])
    mask[perm] = last  # within a run of equal values the stable sort keeps batch order: its end is the last use
    return mask


def _tensor_signature(t: Tensor) -> Tuple:
    """Identity of a tensor's contents: storage address, shape, dtype, device and in-place version counter."""
    try:
        version = t._version
    except RuntimeError:  # inference tensors keep no version counter
        version = None
    return (t.data_ptr(), tuple(t.shape), t.dtype, t.device, version)


def _grown(t: Tensor, size: int, fill) -> Tensor:
    """``t`` copied into a larger 1-D tensor of ``size`` entries, the rest ``fill``."""
    out = torch.full((size,), fill, dtype=t.dtype, device=t.device)
    out[: t.numel()] = t
    return out


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; from the host to a GPU through pinned memory, without blocking the host (the copy is
    ordered on the current stream before any later use there)."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
    """One cached layer: values, validity and (when bounded) slots with LRU recency. Not locked itself.

    Unbounded: ``values`` and ``valid`` have one row per node (of a node capacity that doubles as the graph
    grows, see :meth:`grow`) plus a scratch row ``scratch`` that writes which must not land (a stale or repeated
    node of a batch) are redirected to, so that inserting needs no data-dependent sizes (no host
    synchronisation), and a row of zeros (``scratch + 1``, never written) that misses read. Bounded: ``capacity``
    slots and a zero row. Values live on ``device``, everything else on ``index_device``; the value side is only
    ever indexed with indices computed on the index side (:meth:`_on_values`). Counts are returned as 0-dim
    tensors on the index device.
    """

    def __init__(self, num_nodes: int, dim: int, capacity: Optional[int], device, dtype, index_device=None):
        self.num_nodes, self.dim = num_nodes, dim
        self.bounded = capacity is not None and capacity < num_nodes
        self.capacity = capacity if self.bounded else num_nodes
        self.device = torch.device(device)
        self.index_device = self.device if index_device is None else torch.device(index_device)
        idx = dict(dtype=torch.long, device=self.index_device)
        # Epoch at which each node was last invalidated (insert(since=...) drops entries invalidated after since).
        self.invalidated_at = torch.zeros(num_nodes, **idx)
        self.all_invalidated_at = 0
        self.reallocations = 0
        if not self.bounded:
            self.scratch = num_nodes
            self.values = torch.zeros(num_nodes + 2, dim, dtype=dtype, device=device)
            self.valid = torch.zeros(num_nodes + 2, dtype=torch.bool, device=self.index_device)
            return
        self.values = torch.zeros(self.capacity + 1, dim, dtype=dtype, device=device)
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

    # -------------------------------------------------------------- growth
    def grow(self, num_nodes: int) -> None:
        """Room for nodes ``[0, num_nodes)`` (new ones invalid); node-indexed tables double their capacity."""
        if num_nodes <= self.num_nodes:
            return
        node_cap = self.invalidated_at.numel()
        if num_nodes > node_cap:
            new_cap = max(2 * node_cap, num_nodes)
            self.invalidated_at = _grown(self.invalidated_at, new_cap, 0)
            if self.bounded:
                self.slot_of_node = _grown(self.slot_of_node, new_cap, -1)
            else:  # the scratch and zero rows move to the end of the new table
                values = self.values.new_zeros(new_cap + 2, self.dim)
                values[: self.num_nodes] = self.values[: self.num_nodes]
                valid = torch.zeros(new_cap + 2, dtype=torch.bool, device=self.valid.device)
                valid[: self.num_nodes] = self.valid[: self.num_nodes]
                self.values, self.valid, self.scratch = values, valid, new_cap
            self.reallocations += 1
        self.num_nodes = num_nodes
        if not self.bounded:
            self.capacity = num_nodes

    def _on_values(self, index: Tensor) -> Tensor:
        """An index computed on the index device, on the values' device (no host synchronisation)."""
        return to_device(index, self.device)

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
            hit = self.valid.index_select(0, nodes)
            rows = torch.where(hit, nodes, self.scratch + 1)  # misses read the zero row
            return hit, self.values.index_select(0, self._on_values(rows))
        slots = self.slot_of_node.index_select(0, nodes)
        hit = slots >= 0
        values = self.values.index_select(0, self._on_values(torch.where(hit, slots, self.capacity)))
        hit_slots = slots[hit]
        if hit_slots.numel():
            self._touch(hit_slots[_last_occurrences(hit_slots)])
        return hit, values

    def insert(self, nodes: Tensor, values: Tensor, since: Optional[int], distinct: bool = False) -> Dict[str, object]:
        if not self.bounded:
            return self._insert_dense(nodes, values, since, distinct)
        # A node inserted twice keeps its last value.
        select = torch.arange(nodes.numel(), device=nodes.device) if distinct else _last_occurrences(nodes)
        nodes = nodes[select]
        dropped = 0
        if since is not None:
            fresh = self.invalidated_at[nodes] <= since
            if self.all_invalidated_at > since:
                fresh.zero_()
            dropped = int((~fresh).sum())
            if dropped:
                nodes, select = nodes[fresh], select[fresh]
        if nodes.numel() > self.capacity:  # the earlier ones would be evicted by the later ones of this batch
            nodes, select = nodes[-self.capacity:], select[-self.capacity:]
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
        slots_and_rows = self._on_values(torch.stack([slots, select]))  # one copy when the devices differ
        self.values.index_copy_(0, slots_and_rows[0], values.index_select(0, slots_and_rows[1]).to(self.values.dtype))
        self._touch(slots)
        return {"inserted": nodes.numel(), "evicted": evicted, "dropped": dropped}

    def _insert_dense(self, nodes: Tensor, values: Tensor, since: Optional[int],
                      distinct: bool = False) -> Dict[str, object]:
        """Dense-table insert without host synchronisation: the last occurrence of each node is written, unless
        it was invalidated after ``since``; every other row goes to the scratch row."""
        if distinct:
            write = torch.ones(nodes.numel(), dtype=torch.bool, device=nodes.device)
        else:
            write = _last_occurrence_mask(nodes)
        dropped = 0
        if since is not None:
            if self.all_invalidated_at > since:
                fresh = torch.zeros_like(write)
            else:
                fresh = self.invalidated_at.index_select(0, nodes) <= since
            dropped = (write & ~fresh).sum()
            write &= fresh
        target = torch.where(write, nodes, torch.full_like(nodes, self.scratch))
        self.values.index_copy_(0, self._on_values(target), values.to(self.values.dtype))
        self.valid.index_fill_(0, target, True)
        return {"inserted": write.sum(), "evicted": 0, "dropped": dropped}

    def invalidate(self, nodes: Tensor, epoch: int):
        self.invalidated_at[nodes] = epoch
        if not self.bounded:
            removed = (self.valid.index_select(0, nodes) & _last_occurrence_mask(nodes)).sum()
            self.valid.index_fill_(0, nodes, False)
            return removed
        slots = self.slot_of_node[nodes]
        slots = torch.unique(slots[slots >= 0])
        self.slot_of_node[nodes] = -1
        self._release(slots)
        return slots.numel()

    def invalidate_all(self, epoch: int):
        self.all_invalidated_at = epoch
        if not self.bounded:
            removed = self.valid[: self.num_nodes].sum()
            self.valid.zero_()
            return removed
        removed = self.capacity - self.num_free
        self.slot_of_node.fill_(-1)
        self.node_of_slot.fill_(-1)
        self.slot_stamp.fill_(-1)
        self.free_slots = torch.arange(self.capacity - 1, -1, -1, dtype=torch.long, device=self.index_device)
        self.num_free = self.capacity
        self.head = self.tail = 0
        return removed

    def size(self) -> int:
        return int(self.valid[: self.num_nodes].sum()) if not self.bounded else self.capacity - self.num_free

    def cached_nodes(self) -> Tensor:
        if not self.bounded:
            return torch.nonzero(self.valid[: self.num_nodes]).flatten()
        return torch.sort(self.node_of_slot[self.node_of_slot >= 0]).values


_COUNTERS = ("hits", "misses", "inserts", "evictions", "invalidated", "stale_inserts_dropped")
_HITS, _MISSES, _INSERTS, _EVICTIONS, _INVALIDATED, _DROPPED = range(len(_COUNTERS))


class FeatureCache:
    """Per-layer store of hidden node features with validity masks, optional LRU capacity and statistics.

    Args:
        num_nodes: number of nodes of the graph (node ids index the cache).
        dims: width of each cached layer's hidden feature (one entry per cached layer).
        capacity: entries per layer (LRU eviction beyond it); ``None`` = every node (a dense table).
        device, dtype: where and how the values are stored.
        index_device: where the bookkeeping (validity, epochs, LRU slots, counters) lives; default ``device``.
            ``"cpu"`` with CUDA values: lookups and inserts take host node ids and never read the device (see
            the module docstring); node ids given to them are moved to this device.
        track_support: when True, an engine using the cache also counts, per batch, the raw-feature supporting
            nodes the same batch would need without the cache (one extra support expansion per batch), so that
            :meth:`stats` reports ``support_without_cache`` and ``support_reduction``; it can also be switched
            on later (``cache.track_support = True``).

    Raises:
        ValueError: a size that names the argument (``num_nodes``, ``dims``, ``capacity``) when the tables would
            not fit in the device's memory.
    """

    def __init__(self, num_nodes: int, dims: Sequence[int], capacity: Optional[int] = None, device="cpu",
                 dtype: torch.dtype = torch.float32, track_support: bool = False, index_device=None):
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
            raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
        if isinstance(dims, int) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims) \
                or len(dims) == 0:
            raise ValueError(f"dims must be a non-empty list of positive ints (one per cached layer), got {dims!r}")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be None or a positive int, got {capacity!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        if not isinstance(track_support, bool):
            raise TypeError(f"track_support must be a bool, got {track_support!r}")
        self.num_nodes = num_nodes
        self.dims = list(dims)
        self.capacity = capacity
        self.device = torch.device(device)
        self.index_device = self.device if index_device is None else torch.device(index_device)
        self.dtype = dtype
        self.track_support = track_support
        self._check_memory()
        self._layers = [_LayerStore(num_nodes, d, capacity, self.device, dtype, self.index_device) for d in self.dims]
        self._lock = threading.RLock()
        self._epoch = 0
        self._owner = None  # (model reference, model signature, features reference, features signature)
        self.reset_stats()

    def _check_memory(self) -> None:
        """Refuse sizes whose tables cannot fit in the device's memory, naming the argument at fault."""
        n, layers = self.num_nodes, len(self.dims)
        slots = n if self.capacity is None or self.capacity >= n else self.capacity
        # Per node: invalidation epoch (8 B) + validity (1 B) or slot index (8 B); per LRU slot about 48 B.
        per_node = (n + 1) * (16 if slots < n else 9) * layers
        per_slot = 0 if slots == n else slots * 48 * layers
        item = torch.empty((), dtype=self.dtype).element_size()
        values = sum((slots + 1) * d * item for d in self.dims)
        if per_node + per_slot + values < 1 << 28:
            return  # small: not worth reading the memory figures
        total = available_memory_bytes(self.device)
        if total is None:
            return
        if per_node > total:
            raise ValueError(f"num_nodes={n} needs {per_node / 2**30:.1f} GiB of per-node cache state over "
                             f"{layers} layer(s), more than the available {self.device.type} memory "
                             f"({total / 2**30:.1f} GiB)")
        if per_node + per_slot > total:
            raise ValueError(f"capacity={self.capacity} needs {(per_node + per_slot) / 2**30:.1f} GiB of LRU state, "
                             f"more than the available {self.device.type} memory ({total / 2**30:.1f} GiB)")
        if per_node + per_slot + values > total:
            what = f"dims={self.dims}" if slots == n else f"dims={self.dims} with capacity={self.capacity}"
            raise ValueError(f"{what} for num_nodes={n} needs {values / 2**30:.1f} GiB of cached values, more than "
                             f"the available {self.device.type} memory ({total / 2**30:.1f} GiB); give a smaller "
                             "capacity")

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

    def _check_nodes(self, nodes, validate: bool = True) -> Tensor:
        """Node ids as int64 on the cache's index device: through the library's validator, or
        (``validate=False``, ids the caller produced itself) with the dtype and shape checks only, which read
        nothing on the host."""
        if validate:
            return as_node_ids(nodes, self.num_nodes, "nodes", device=self.index_device)
        if not isinstance(nodes, Tensor) or nodes.dtype not in (torch.int32, torch.int64) or nodes.dim() != 1:
            raise TypeError("with validate=False, nodes must be a 1-D int32/int64 tensor of node ids")
        return nodes.to(self.index_device, torch.long)

    # -------------------------------------------------------------- ownership
    def _signature(self, model, x: Tensor) -> Tuple:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of node features, got {type(x).__name__}")
        tensors = list(model.named_parameters()) + list(model.named_buffers())
        return (weakref.ref(model), tuple((name, _tensor_signature(t)) for name, t in tensors),
                weakref.ref(x), _tensor_signature(x))

    def bind(self, model, x: Tensor) -> None:
        """Record that the entries are outputs of ``model`` on the features ``x`` (their current contents).

        Called by :func:`gnnaccel.inference.warm_cache` and by an engine that fills the cache or updates ``x``.
        """
        signature = self._signature(model, x)
        with self._lock:
            self._owner = signature

    def check_owner(self, model, x: Tensor) -> None:
        """Refuse to serve ``model`` on ``x`` when the entries were computed by another model or from other
        features, or from the same ones before an in-place change (parameters, buffers or feature values).

        An empty cache with no owner yet is bound to ``(model, x)``; :meth:`invalidate_all` forgets the owner.

        Raises:
            ValueError: naming what differs.
        """
        model_ref, model_sig, x_ref, x_sig = self._signature(model, x)
        with self._lock:
            if self._owner is None:
                self._owner = (model_ref, model_sig, x_ref, x_sig)
                return
            own_model, own_model_sig, own_x, own_x_sig = self._owner
        hint = "; use a fresh FeatureCache or call cache.invalidate_all() first"
        if own_model() is not model:
            raise ValueError("this FeatureCache holds outputs of another model" + hint)
        if own_model_sig != model_sig:
            raise ValueError("the model's parameters or buffers changed since this FeatureCache was filled" + hint)
        if own_x() is not x:
            raise ValueError("this FeatureCache was filled from other node features (another tensor x)" + hint)
        if own_x_sig != x_sig:
            raise ValueError("the node features x were modified (or resized) since this FeatureCache was filled"
                             + hint)

    # -------------------------------------------------------------- growth
    def grow(self, num_nodes: int) -> None:
        """Make room for nodes ``[0, num_nodes)`` of a grown graph; the new nodes start without entries.

        Node-indexed tables double their capacity when full (amortised O(1) per node); entries of existing
        nodes are kept. A dense cache whose ``capacity`` the graph outgrows becomes an LRU cache of that
        capacity (its entries kept). Shrinking is refused.

        Raises:
            ValueError: ``num_nodes`` not an int >= the current number of nodes.
        """
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < self.num_nodes:
            raise ValueError(f"grow(num_nodes) needs an int >= the current {self.num_nodes} nodes, got {num_nodes!r}")
        with self._lock:
            for l, store in enumerate(self._layers):
                if not store.bounded and self.capacity is not None and num_nodes > self.capacity:
                    self._layers[l] = self._to_bounded(store, num_nodes)
                else:
                    store.grow(num_nodes)
            self.num_nodes = num_nodes

    def _to_bounded(self, store: "_LayerStore", num_nodes: int) -> "_LayerStore":
        """A dense layer (at most ``capacity`` nodes, all of them possibly valid) as an LRU layer of ``num_nodes``
        nodes holding the same entries."""
        bounded = _LayerStore(num_nodes, store.dim, self.capacity, self.device, self.dtype, self.index_device)
        bounded.invalidated_at[: store.num_nodes] = store.invalidated_at[: store.num_nodes]
        bounded.all_invalidated_at = store.all_invalidated_at
        nodes = store.cached_nodes()
        bounded.insert(nodes, store.values.index_select(0, store._on_values(nodes)), None)
        return bounded

    def num_reallocations(self) -> int:
        """How many times node-indexed tables were reallocated by :meth:`grow` (summed over the layers)."""
        with self._lock:
            return sum(store.reallocations for store in self._layers)

    # -------------------------------------------------------------- operations
    def lookup(self, layer: int, nodes: Tensor, *, validate: bool = True) -> Tuple[Tensor, Tensor]:
        """``(hit_mask [B] bool, values [B, dims[layer]])`` for ``nodes``: the mask on the cache's index device,
        the values on its device; rows of misses are zero.

        The values are a copy taken under the lock. A hit counts as a use for LRU. ``validate=False`` skips the
        node-id range check (which reads the ids on the host) for ids the caller produced itself.
        """
        layer = self._check_layer(layer)
        nodes = self._check_nodes(nodes, validate)
        with self._lock:
            hit, values = self._layers[layer].lookup(nodes)
            hits = hit.sum()
            self._counts[layer, _HITS] += hits
            self._counts[layer, _MISSES] += nodes.numel() - hits
        return hit, values

    def insert(self, layer: int, nodes: Tensor, values: Tensor, since: Optional[int] = None, *,
               validate: bool = True, distinct: bool = False) -> Tensor:
        """Store ``values[k]`` as the layer-``layer`` feature of ``nodes[k]``.

        A node given twice keeps its last value. ``since``: an :attr:`epoch` token read before the values'
        inputs were read; nodes invalidated after it are skipped (their value may be stale). ``validate`` as in
        :meth:`lookup`. ``distinct=True``: the caller guarantees that ``nodes`` holds no id twice (the engine's
        rows), which skips finding each node's last occurrence (a sort).

        Returns:
            the number of entries stored, a 0-dim tensor on the cache's index device (reading it synchronises
            when that is a GPU).
        """
        layer = self._check_layer(layer)
        nodes = self._check_nodes(nodes, validate)
        if not isinstance(values, Tensor) or not values.is_floating_point():
            raise TypeError("values must be a floating-point torch.Tensor")
        if values.dim() != 2 or values.shape[0] != nodes.numel() or values.shape[1] != self.dims[layer]:
            raise ValueError(f"values must have shape [{nodes.numel()}, {self.dims[layer]}], got {list(values.shape)}")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise TypeError(f"since must be an int epoch token (cache.epoch), got {since!r}")
        values = values.detach().to(self.device, self.dtype)
        with self._lock:
            result = self._layers[layer].insert(nodes, values, since, distinct)
            counts = self._counts[layer]
            counts[_INSERTS] += result["inserted"]
            counts[_EVICTIONS] += result["evicted"]
            counts[_DROPPED] += result["dropped"]
        return torch.as_tensor(result["inserted"], device=self.index_device)

    def invalidate(self, nodes: Tensor, layer: Optional[int] = None) -> Tensor:
        """Drop the entries of ``nodes`` (in ``layer``, or every layer).

        Returns:
            how many entries were removed, a 0-dim tensor on the cache's index device.
        """
        layers = range(self.num_layers) if layer is None else [self._check_layer(layer)]
        nodes = self._check_nodes(nodes)
        with self._lock:
            self._epoch += 1
            removed = torch.zeros((), dtype=torch.long, device=self.index_device)
            for l in layers:
                n = self._layers[l].invalidate(nodes, self._epoch)
                self._counts[l, _INVALIDATED] += n
                removed += n
        return removed

    def invalidate_per_layer(self, nodes_per_layer: Sequence[Optional[Tensor]]) -> Tensor:
        """Drop, atomically, the entries of ``nodes_per_layer[l]`` in layer ``l`` (None = nothing).

        Returns:
            how many entries were removed, a 0-dim tensor on the cache's index device.
        """
        if len(nodes_per_layer) != self.num_layers:
            raise ValueError(f"give one node set per cached layer ({self.num_layers}), got {len(nodes_per_layer)}")
        checked = [None if n is None else self._check_nodes(n) for n in nodes_per_layer]
        with self._lock:
            self._epoch += 1
            removed = torch.zeros((), dtype=torch.long, device=self.index_device)
            for l, nodes in enumerate(checked):
                if nodes is not None:
                    n = self._layers[l].invalidate(nodes, self._epoch)
                    self._counts[l, _INVALIDATED] += n
                    removed += n
        return removed

    def invalidate_all(self) -> Tensor:
        """Drop every entry and forget the owner (see :meth:`check_owner`).

        Returns:
            how many entries were removed, a 0-dim tensor on the cache's index device.
        """
        with self._lock:
            self._epoch += 1
            self._owner = None
            removed = torch.zeros((), dtype=torch.long, device=self.index_device)
            for l, store in enumerate(self._layers):
                n = store.invalidate_all(self._epoch)
                self._counts[l, _INVALIDATED] += n
                removed += n
        return removed

    def invalidate_after_update(self, graph, changed_nodes: Optional[Tensor] = None,
                                new_edge_index: Optional[Tensor] = None, degree_normalised: bool = True, *,
                                reverse=None) -> Tensor:
        """Invalidate every entry whose receptive field a feature update or an edge insertion touches.

        ``graph`` must be the graph *after* the update. See :func:`stale_after_feature_update` and
        :func:`stale_after_new_edges` (``degree_normalised``: GCN-style weights depend on degrees).
        ``reverse``: the reversed graph after the update as a :class:`~gnnaccel.growth.GrowingCSR` (an engine
        keeps one through growth), used instead of ``graph``'s transpose (``graph`` may then be None).

        Returns:
            how many entries were removed, a 0-dim tensor on the cache's index device.
        """
        per_layer: List[Optional[Tensor]] = [None] * self.num_layers
        parts = []
        if changed_nodes is not None:
            parts.append(stale_after_feature_update(graph, changed_nodes, self.num_layers, reverse=reverse))
        if new_edge_index is not None:
            parts.append(stale_after_new_edges(graph, new_edge_index, self.num_layers, degree_normalised,
                                               reverse=reverse))
        for stale in parts:
            for l, nodes in enumerate(stale):
                nodes = nodes.long()
                per_layer[l] = nodes if per_layer[l] is None else torch.cat([per_layer[l], nodes])
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
            self._counts = torch.zeros(self.num_layers, len(_COUNTERS), dtype=torch.long, device=self.index_device)
            # batches, supporting nodes computed with the cache, batches with the figure without it, and that figure
            self._support = torch.zeros(4, dtype=torch.long, device=self.index_device)

    def record_support(self, computed, without_cache=None) -> None:
        """Count one batch's raw-feature supporting nodes computed with the cache and, when known (see
        ``track_support``), the number the same batch needs without it. Ints or 0-dim tensors (kept on the
        device: no host synchronisation)."""
        with self._lock:
            self._support[0] += 1
            self._support[1] += computed
            if without_cache is not None:
                self._support[2] += 1
                self._support[3] += without_cache

    def stats(self) -> dict:
        """Totals and per-layer counters, as Python numbers (one host synchronisation).

        Keys: ``hits``, ``misses``, ``inserts``, ``evictions``, ``invalidated``, ``stale_inserts_dropped``,
        ``hit_rate``, ``per_layer`` (the counters and ``size`` of each layer), and the support figures of the
        batches an engine answered: ``batches``, ``support_computed`` (raw-feature supporting nodes computed
        with the cache), ``support_without_cache`` (the same batches without the cache) and
        ``support_reduction`` (their ratio). The last two are measured only for batches answered while
        ``track_support`` is on (it costs one extra support expansion per batch); otherwise they are ``None``.
        """
        with self._lock:
            counts = self._counts.tolist()
            support = self._support.tolist()
            sizes = [store.size() for store in self._layers]
        per_layer = [dict(zip(_COUNTERS, c), size=size) for c, size in zip(counts, sizes)]
        out = {key: sum(c[k] for c in counts) for k, key in enumerate(_COUNTERS)}
        hits, misses = out["hits"], out["misses"]
        batches, computed, tracked, without = support
        if tracked and tracked == batches:
            reduction = without / computed if computed else (float("inf") if without else 1.0)
        else:  # not measured (or only for some batches: the ratio would compare different batch sets)
            without = reduction = None
        out.update(hit_rate=hits / (hits + misses) if hits + misses else 0.0, batches=batches,
                   support_computed=computed, support_without_cache=without, support_reduction=reduction,
                   per_layer=per_layer)
        return out

    def __repr__(self) -> str:
        index = f", index_device={self.index_device}" if self.index_device != self.device else ""
        return (f"FeatureCache(num_nodes={self.num_nodes}, dims={self.dims}, capacity={self.capacity}, "
                f"device={self.device}{index}, dtype={self.dtype}, size={len(self)})")


# ---------------------------------------------------------------------------------------- receptive fields
def reverse_csr(graph):
    """CSR of the reversed graph: row ``j`` lists the nodes ``i`` that aggregate from ``j`` (memoised on the
    graph with ``Graph.cached``, so it is rebuilt when the graph changes), on the graph's device."""

    def build():  # the rows of the Graph's transpose (gnnaccel.ops.transpose.csr_transpose, the one builder)
        t = graph.transpose()
        return t.rowptr, t.col

    return graph.cached("reverse_csr", build, uses_weight=False)


def downstream_balls(graph, nodes: Tensor, hops: int, *, reverse=None) -> List[Tensor]:
    """``balls[h]`` = nodes reachable from ``nodes`` by at most ``h`` edges in message direction (j -> i when
    row i aggregates from j), for ``h = 0 .. hops``. Exact (every neighbour), computed with ``expand_hop`` on
    the reversed graph (``reverse``, a :class:`~gnnaccel.growth.GrowingCSR`, when given; else ``graph``'s
    transpose); each node is expanded once."""
    if reverse is not None:
        device = reverse.device
        expand = reverse.expand
    else:
        from .ops import expand_hop

        rowptr, col = reverse_csr(graph)
        device = rowptr.device

        def expand(seeds, fanout, random_seed, skip):
            return expand_hop(rowptr, col, seeds, fanout, random_seed, skip)
    frontier = torch.unique(nodes.to(device, torch.long))
    balls = [frontier]
    expanded = 0
    for _ in range(hops):
        # nodes already expanded at an earlier hop
        skip = torch.arange(frontier.numel(), device=frontier.device) < expanded
        expanded = frontier.numel()
        frontier = expand(frontier, -1, 0, skip).frontier
        balls.append(frontier)
    return balls


def stale_after_feature_update(graph, nodes: Tensor, num_cached_layers: int, *, reverse=None) -> List[Tensor]:
    """Per cached layer ``l``, the nodes whose layer-``l`` output depends on the features of ``nodes``: the
    output of layer ``l`` reads ``l + 1`` hops, so it is the downstream ball of radius ``l + 1``. ``reverse``
    as in :func:`downstream_balls`."""
    balls = downstream_balls(graph, nodes, num_cached_layers, reverse=reverse)
    return [balls[l + 1] for l in range(num_cached_layers)]


def stale_after_new_edges(graph, edge_index: Tensor, num_cached_layers: int,
                          degree_normalised: bool = True, *, reverse=None) -> List[Tensor]:
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
    balls = downstream_balls(graph, targets, num_cached_layers - 1 + extra, reverse=reverse)  # radii used below
    return [balls[l + extra] for l in range(num_cached_layers)]
