"""The graph container: a CSR adjacency built once and reused by every layer and engine."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

_INDEX_DTYPES = (torch.int32, torch.int64)


def tracing() -> bool:
    """Whether the code runs under ``torch.compile`` / ``torch.export`` tracing: data-dependent checks
    (``int(tensor)``) and memoisation are skipped there, the C++ ops still check bounds at run time."""
    return torch.compiler.is_compiling()


def _version(t: Optional[Tensor]):
    """The tensor's version counter (bumped by every in-place torch op), None for None / inference tensors."""
    if t is None or t.is_inference():
        return None
    return t._version


def _index_dtype(dtype) -> torch.dtype:
    if dtype not in _INDEX_DTYPES:
        raise ValueError(f"index dtype must be torch.int32 or torch.int64, got {dtype}")
    return dtype


def _weight_from_values(values: Tensor) -> Optional[Tensor]:
    """Edge weights from a sparse matrix's stored values: None when every value is 1 (a pattern);
    floating-point values keep their dtype, integer / bool ones become the default float dtype."""
    if values.is_complex():
        raise ValueError(f"adjacency values must be real, got {values.dtype}")
    if values.numel() == 0 or bool((values == 1).all()):
        return None
    return values if values.is_floating_point() else values.to(torch.get_default_dtype())


def _adj_rows(adj) -> int:
    sizes = adj.sizes() if callable(getattr(adj, "sizes", None)) else adj.shape
    return int(sizes[0])


class Graph:
    """A directed graph in CSR form, rows = destination nodes.

    Row ``i`` lists the source nodes ``j`` that node ``i`` aggregates from. This is PyG's default flow
    (``source_to_target``): an edge ``edge_index[:, e] = (j, i)`` sends a message from ``j`` to ``i``.
    Self loops and duplicate edges are kept as given; within a row, edges keep their input order.

    Attributes: ``rowptr`` [N+1], ``col`` [E], ``edge_weight`` [E] or None, ``num_nodes`` N.

    Derived structures (GCN-normalised weights, transposes) are memoised in ``cache`` (through
    :meth:`cached`) and dropped when the graph changes: reassigning ``rowptr`` / ``col`` / ``edge_weight`` /
    ``num_nodes``, or writing into them with any in-place torch operation (``g.edge_weight.mul_(3)``, an
    optimiser step on a learnable ``edge_weight``), which bumps the tensor's version counter. Writes that
    bypass the version counter (through ``.data`` or ``.numpy()``, or into inference-mode tensors) cannot
    be seen: call :meth:`invalidate` after them. Structures that depend on an ``edge_weight`` that requires
    grad are rebuilt on every call while autograd records, so each forward gets its own autograd graph.

    A Graph is a pytree of its three tensors (``torch.utils._pytree``), so it can be an input of
    ``torch.export``; ``num_nodes`` is then ``rowptr.shape[0] - 1``.
    """

    def __init__(self, rowptr: Tensor, col: Tensor, num_nodes: int, edge_weight: Optional[Tensor] = None,
                 validate: bool = True):
        self.rowptr = rowptr
        self.col = col
        self.num_nodes = num_nodes if isinstance(num_nodes, torch.SymInt) else int(num_nodes)
        self.edge_weight = edge_weight
        self._cache: Dict[Any, Any] = {}
        self._cache_state: Optional[tuple] = None
        if validate:
            self.validate()

    # ------------------------------------------------------------------ memoised derived structures
    def _state(self) -> tuple:
        return (self.rowptr, _version(self.rowptr), self.col, _version(self.col), self.edge_weight,
                _version(self.edge_weight), self.num_nodes)

    @property
    def cache(self) -> Dict[Any, Any]:
        """The memo of derived structures, emptied first if the graph changed since they were stored (see
        the class docstring). Under ``torch.compile`` / ``torch.export`` tracing: a fresh empty dict."""
        if tracing():
            return {}
        state, old = self._state(), self._cache_state
        if old is None or any(a is not b if isinstance(a, Tensor) or a is None else a != b
                              for a, b in zip(state, old)):
            self._cache.clear()
            self._cache_state = state
        return self._cache

    def invalidate(self) -> None:
        """Drop every memoised derived structure (after writes that bypass the version counters)."""
        self._cache.clear()
        self._cache_state = None

    def cached(self, key, build: Callable[[], Any], uses_weight: bool = True) -> Any:
        """``build()``, memoised under ``key`` for the current state of the graph.

        Args:
            key: hashable name of the structure (include every parameter ``build`` depends on).
            build: computes it from the graph.
            uses_weight: whether it depends on ``edge_weight``; then, while autograd records and the weight
                requires grad, it is rebuilt on every call (never memoised with an autograd history).
        Returns:
            The structure. It is built outside inference mode, so that a later forward that records
            autograd can use it.
        """
        w = self.edge_weight
        if tracing() or (uses_weight and w is not None and w.requires_grad and torch.is_grad_enabled()):
            return build()
        cache = self.cache
        hit = cache.get(key)
        if hit is None:
            with torch.inference_mode(False):
                hit = build()
            cache[key] = hit
        return hit

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: Optional[int] = None,
                        edge_weight: Optional[Tensor] = None, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a PyG ``edge_index`` [2, E] (row 0 = source j, row 1 = target i).

        Args:
            edge_index: integer tensor [2, E] (or anything numpy turns into one).
            num_nodes: N; defaults to ``max(edge_index) + 1`` (required under torch.compile / export, where
                the build is traced without data-dependent checks).
            edge_weight: optional floating-point [E], kept in its dtype.
            index_dtype: int64, or int32 to halve the index traffic.
        Returns:
            The Graph; within a row, edges keep their input order.
        """
        index_dtype = _index_dtype(index_dtype)
        if not isinstance(edge_index, Tensor):
            edge_index = torch.as_tensor(np.asarray(edge_index))
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}")
        if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool or edge_index.is_complex():
            raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
        src, dst = edge_index[0].long(), edge_index[1].long()
        num_edges = src.shape[0]
        traced = tracing()
        if traced:
            if num_nodes is None:
                raise ValueError("under torch.compile / torch.export, from_edge_index needs num_nodes")
        else:
            if num_edges and int(edge_index.min()) < 0:
                raise ValueError(f"edge_index holds a negative node index ({int(edge_index.min())})")
            max_index = int(edge_index.max()) if num_edges else -1
            if num_nodes is None:
                num_nodes = max_index + 1
            num_nodes = cls._check_num_nodes(num_nodes)
            if max_index >= num_nodes:
                raise ValueError(f"edge_index holds node index {max_index} but num_nodes is {num_nodes}")
            if num_nodes > torch.iinfo(index_dtype).max or num_edges > torch.iinfo(index_dtype).max:
                raise ValueError(f"{num_nodes} nodes / {num_edges} edges do not fit in {index_dtype}")
        if edge_weight is not None:
            edge_weight = cls._check_edge_weight(edge_weight, num_edges)
        order = torch.argsort(dst, stable=True)
        # Row lengths by a scatter into N slots (not bincount, whose size depends on the data): traceable.
        counts = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device).index_add_(
            0, dst, torch.ones_like(dst))
        rowptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        col = src[order].to(index_dtype).contiguous()
        weight = edge_weight[order].contiguous() if edge_weight is not None else None
        return cls(rowptr.to(index_dtype), col, num_nodes, weight, validate=False)

    @classmethod
    def from_sparse(cls, adj: Tensor, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a square torch sparse COO/CSR tensor ``adj[i, j]`` (row i aggregates from column j).

        Args:
            adj: the adjacency (PyG's ``adj_t``); a CSR tensor is taken as is (no sort), COO is coalesced.
            index_dtype: int64 or int32.
        Returns:
            The Graph: non-unit values become edge weights (in their dtype); all-ones values give an
            unweighted graph. Complex values are rejected.
        """
        if not isinstance(adj, Tensor) or adj.layout not in (torch.sparse_csr, torch.sparse_coo):
            raise ValueError("from_sparse expects a torch sparse CSR or COO tensor")
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be square 2-D, got shape {list(adj.shape)}")
        if adj.is_complex():
            raise ValueError(f"adjacency values must be real, got {adj.dtype} (a complex weight has no meaning "
                             "for aggregation)")
        n = adj.shape[0]
        if adj.layout == torch.sparse_coo:
            adj = adj.coalesce()
            rows, cols = adj.indices()
            return cls.from_edge_index(torch.stack([cols, rows]), n, _weight_from_values(adj.values()), index_dtype)
        index_dtype = _index_dtype(index_dtype)
        if max(n, adj.values().numel()) > torch.iinfo(index_dtype).max:
            raise ValueError(f"{n} nodes / {adj.values().numel()} edges do not fit in {index_dtype}")
        return cls(adj.crow_indices().to(index_dtype), adj.col_indices().to(index_dtype), n,
                   _weight_from_values(adj.values()))

    @classmethod
    def from_scipy(cls, matrix, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a square ``scipy.sparse`` matrix ``A[i, j]`` (row i aggregates from column j).

        Args:
            matrix: any scipy.sparse matrix/array with real values.
            index_dtype: int64 or int32.
        Returns:
            The Graph: floating-point values keep their dtype (float64 stays float64), integer values become
            torch's default float dtype, an all-ones matrix gives an unweighted graph. Complex matrices are
            rejected.
        """
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise ValueError(f"from_scipy expects a scipy.sparse matrix, got {type(matrix).__name__}")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {matrix.shape}")
        if np.iscomplexobj(matrix.data):
            raise ValueError(f"adjacency values must be real, got {matrix.dtype} (a complex weight has no meaning "
                             "for aggregation)")
        coo = matrix.tocoo()
        edge_index = torch.from_numpy(np.stack([coo.col, coo.row]).astype(np.int64))
        return cls.from_edge_index(edge_index, matrix.shape[0], _weight_from_values(torch.from_numpy(np.asarray(coo.data))),
                                   index_dtype)

    @classmethod
    def from_pyg(cls, data, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a PyG ``Data`` object (duck-typed: torch_geometric is not imported).

        Args:
            data: a homogeneous graph with ``edge_index`` (a tensor or PyG ``EdgeIndex``) or ``adj_t`` (torch
                sparse or ``torch_sparse.SparseTensor``), and ``num_nodes``. Edge weights come from
                ``edge_weight``, else from ``edge_attr`` when it is one floating-point value per edge ([E] or
                [E, 1]); wider ``edge_attr`` (edge features) is not an edge weight and is ignored.
            index_dtype: int64 or int32.
        Returns:
            The Graph (PyG flow: row i aggregates from the sources of the edges pointing at i).
        """
        if type(data).__name__ == "HeteroData" or hasattr(data, "node_types"):
            raise TypeError("Graph.from_pyg takes a homogeneous PyG Data object; convert HeteroData with "
                            "data.to_homogeneous() first")
        num_nodes = getattr(data, "num_nodes", None)
        adj_t = getattr(data, "adj_t", None)
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None and adj_t is None:
            raise ValueError(f"{type(data).__name__} has neither edge_index nor adj_t")
        if edge_index is None:
            from .nn.adjacency import as_graph

            graph = as_graph(adj_t, num_nodes if num_nodes is not None else _adj_rows(adj_t))
            return graph.to(index_dtype=index_dtype)
        weight = getattr(data, "edge_weight", None)
        if weight is None:
            attr = getattr(data, "edge_attr", None)
            if isinstance(attr, Tensor) and attr.is_floating_point() and (
                    attr.dim() == 1 or (attr.dim() == 2 and attr.shape[1] == 1)):
                weight = attr.reshape(-1)
        if isinstance(edge_index, Tensor) and hasattr(edge_index, "as_tensor"):  # PyG EdgeIndex
            edge_index = edge_index.as_tensor()
        return cls.from_edge_index(edge_index, num_nodes, weight, index_dtype)

    @staticmethod
    def _check_num_nodes(num_nodes) -> int:
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
            raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
        return int(num_nodes)

    @staticmethod
    def _check_edge_weight(edge_weight: Tensor, num_edges: int) -> Tensor:
        if not isinstance(edge_weight, Tensor) or not edge_weight.is_floating_point():
            raise ValueError("edge_weight must be a floating-point tensor")
        if edge_weight.dim() != 1 or edge_weight.numel() != num_edges:
            raise ValueError(f"edge_weight must have shape [{num_edges}], got {list(edge_weight.shape)}")
        if not tracing() and not bool(torch.isfinite(edge_weight).all()):
            raise ValueError("edge_weight holds NaN or infinite values")
        return edge_weight

    def validate(self) -> None:
        """Check the CSR invariants; raise ValueError naming the first one that fails."""
        rowptr, col = self.rowptr, self.col
        for name, t in (("rowptr", rowptr), ("col", col)):
            if not isinstance(t, Tensor) or t.dim() != 1:
                raise ValueError(f"{name} must be a 1-D tensor")
            if t.dtype not in _INDEX_DTYPES:
                raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")
        if rowptr.dtype != col.dtype:
            raise ValueError(f"rowptr ({rowptr.dtype}) and col ({col.dtype}) must share a dtype")
        if rowptr.device != col.device:
            raise ValueError("rowptr and col must be on the same device")
        self._check_num_nodes(self.num_nodes)
        if rowptr.numel() != self.num_nodes + 1:
            raise ValueError(f"rowptr must have num_nodes + 1 = {self.num_nodes + 1} entries, got {rowptr.numel()}")
        if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel():
            raise ValueError("rowptr must start at 0 and end at the number of edges")
        if rowptr.numel() > 1 and bool((rowptr[1:] < rowptr[:-1]).any()):
            raise ValueError("rowptr must be non-decreasing")
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= self.num_nodes):
            raise ValueError(f"col holds an index outside [0, {self.num_nodes})")
        if self.edge_weight is not None:
            self._check_edge_weight(self.edge_weight, col.numel())

    # ------------------------------------------------------------------ properties
    @property
    def num_edges(self) -> int:
        return self.col.numel()

    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    @property
    def index_dtype(self) -> torch.dtype:
        return self.rowptr.dtype

    def in_degree(self) -> Tensor:
        """Number of incoming edges per node (the row lengths), int64."""
        return (self.rowptr[1:] - self.rowptr[:-1]).long()

    def out_degree(self) -> Tensor:
        return torch.bincount(self.col.long(), minlength=self.num_nodes)

    @property
    def edge_index(self) -> Tensor:
        """The graph as a PyG ``edge_index`` [2, E] (int64), in CSR edge order."""
        return torch.stack([self.col.long(), self.row_of_edge()])

    def row_of_edge(self) -> Tensor:
        """The row (target node) of every edge, int64 [E], in CSR order."""
        return torch.repeat_interleave(torch.arange(self.num_nodes, device=self.device), self.in_degree(),
                                       output_size=self.col.shape[0])

    # ------------------------------------------------------------------ derived graphs
    def with_edges(self, edge_index: Tensor, edge_weight: Optional[Tensor] = None) -> "Graph":
        """A new graph with the edges ``edge_index`` [2, E_new] (PyG flow) appended to every row they target.

        Args:
            edge_index: integer [2, E_new], node ids in ``[0, num_nodes)``.
            edge_weight: floating-point [E_new], given exactly when the graph is weighted.
        Returns:
            The new Graph (same index dtype and device); this one is unchanged.
        """
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("edge_index must be a [2, E] tensor of (source, target) node ids")
        new = edge_index.shape[1]
        if (self.edge_weight is None) != (edge_weight is None):
            raise ValueError("give edge_weight for the new edges exactly when the graph is weighted "
                             f"(the graph is {'un' if self.edge_weight is None else ''}weighted)")
        if edge_weight is not None:
            if not isinstance(edge_weight, Tensor):
                edge_weight = torch.as_tensor(np.asarray(edge_weight))
            if edge_weight.dim() != 1 or edge_weight.shape[0] != new:
                raise ValueError(f"edge_weight must hold one weight per new edge: {new} edges, got a tensor of "
                                 f"shape {list(edge_weight.shape)}")
            if not edge_weight.is_floating_point():
                raise ValueError(f"edge_weight must be floating-point, got {edge_weight.dtype}")
            edge_weight = torch.cat([self.edge_weight, edge_weight.to(self.edge_weight)])
        ei = torch.cat([self.edge_index, edge_index.long().to(self.device)], 1)
        return Graph.from_edge_index(ei, self.num_nodes, edge_weight, index_dtype=self.index_dtype)

    def transpose(self):
        """The reversed graph (:class:`gnnaccel.ops.transpose.CSRTranspose`: row ``j`` lists the edges leaving
        ``j``), memoised and dropped with the other derived structures when the graph changes."""
        from .ops.transpose import csr_transpose

        return self.cached(("transpose",), lambda: csr_transpose(self.rowptr, self.col, self.num_nodes),
                           uses_weight=False)

    def gcn_normalized(self, add_self_loops: bool = True, dtype: torch.dtype = torch.float32,
                       improved: bool = False) -> "Graph":
        """The graph with PyG's ``gcn_norm`` weights ``d_j^-1/2 w_ji d_i^-1/2`` (degrees over targets), memoised.

        Args:
            add_self_loops: PyG's ``add_remaining_self_loops``: every node gets one self loop, weighted by its
                existing loop's weight if it has one, else by the fill value (1, or 2 when ``improved``).
            dtype: dtype of the normalised weights (the features' dtype); bfloat16 / float16 weights are the float32
                ones rounded once.
            improved: PyG's ``GCNConv(improved=True)``: fill value 2, i.e. A + 2I as PyG documents it and
                computes on ``adj_t`` or with edge weights (PyG's unweighted edge_index path ignores it).
        Returns:
            A Graph whose CSR has one extra edge per row (the loop, last in its row) when ``add_self_loops``;
            an existing loop stays in place with weight 0. Negative edge weights are accepted as in PyG, as
            long as no node's weighted in-degree is negative (PyG gives NaN there; this raises ValueError).
        """
        if dtype in (torch.bfloat16, torch.float16):  # degrees summed in float32 (in bfloat16 they stop at 256)
            def rounded():
                g = self.gcn_normalized(add_self_loops, torch.float32, improved)
                return Graph(g.rowptr, g.col, g.num_nodes, g.edge_weight.to(dtype), validate=False)

            return self.cached(("gcn_norm", bool(add_self_loops), bool(improved), dtype), rounded)
        return self.cached(("gcn_norm", bool(add_self_loops), bool(improved), dtype),
                           lambda: _gcn_norm(self, bool(add_self_loops), dtype, 2.0 if improved else 1.0))

    # ------------------------------------------------------------------ conversion
    def to(self, device=None, index_dtype: Optional[torch.dtype] = None) -> "Graph":
        """Copy to ``device`` and/or cast the indices to ``index_dtype`` (int32 halves index traffic)."""
        index_dtype = _index_dtype(index_dtype) if index_dtype is not None else self.index_dtype
        if index_dtype == torch.int32 and max(self.num_nodes, self.num_edges) > torch.iinfo(torch.int32).max:
            raise ValueError("graph too large for int32 indices")
        device = torch.device(device) if device is not None else self.device
        if device == self.device and index_dtype == self.index_dtype:
            return self
        weight = self.edge_weight.to(device) if self.edge_weight is not None else None
        return Graph(self.rowptr.to(device, index_dtype), self.col.to(device, index_dtype), self.num_nodes, weight,
                     validate=False)

    def to_scipy(self):
        import scipy.sparse as sp

        data = (self.edge_weight.detach().cpu().numpy() if self.edge_weight is not None
                else np.ones(self.num_edges, dtype=np.float32))
        return sp.csr_matrix((data, self.col.cpu().numpy(), self.rowptr.cpu().numpy()),
                             shape=(self.num_nodes, self.num_nodes))

    def to_torch_sparse(self, dtype=torch.float32) -> Tensor:
        import warnings

        values = (self.edge_weight if self.edge_weight is not None
                  else torch.ones(self.num_edges, dtype=dtype, device=self.device))
        with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notice, once per call otherwise
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.rowptr.long(), self.col.long(), values.to(dtype),
                                           (self.num_nodes, self.num_nodes))

    # ------------------------------------------------------------------ compute
    def aggregate(self, x: Tensor, reduce: str = "mean", edge_weight: Optional[Tensor] = None,
                  rows: Optional[Tensor] = None) -> Tensor:
        """Reduce the features ``x`` [N, C] of each node's in-neighbours; see :func:`gnnaccel.ops.aggregate`.

        ``edge_weight`` defaults to the graph's own weights (pass a tensor to override).
        """
        from .ops import aggregate

        if x.dim() != 2 or x.shape[0] != self.num_nodes:
            raise ValueError(f"x must have shape [{self.num_nodes}, C], got {list(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the graph is on {self.device}")
        weight = edge_weight if edge_weight is not None else self.edge_weight
        if weight is not None and weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        return aggregate(self.rowptr, self.col, x.contiguous(), reduce, weight, rows)

    def __repr__(self) -> str:
        weighted = ", weighted" if self.edge_weight is not None else ""
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, {self.index_dtype}{weighted})"


def _gcn_norm(graph: Graph, add_self_loops: bool, dtype: torch.dtype, fill_value: float) -> Graph:
    """PyG's gcn_norm on the CSR, with shapes that depend on N and E only (traceable)."""
    n, device = graph.num_nodes, graph.device
    src, dst = graph.col.long(), graph.row_of_edge()
    num_edges = src.shape[0]
    weight = (graph.edge_weight.to(dtype) if graph.edge_weight is not None
              else torch.ones(num_edges, dtype=dtype, device=device))
    rowptr, col = graph.rowptr.long(), src
    if add_self_loops:
        is_loop = src == dst
        # A node's loop weight: its existing loop's (written to slot n when the edge is no loop), else the fill.
        loop_weight = torch.full((n + 1,), fill_value, dtype=dtype, device=device).scatter(
            0, torch.where(is_loop, src, n), weight)[:n]
        weight = torch.where(is_loop, torch.zeros_like(weight), weight)
        # Insert one loop at the end of every row: edge e of row r moves to e + r, row r's loop to rowptr[r+1] + r.
        nodes = torch.arange(n, device=device)
        edge_pos = torch.arange(num_edges, device=device) + dst
        loop_pos = rowptr[1:] + nodes
        col = torch.empty(num_edges + n, dtype=torch.long, device=device).index_put_((edge_pos,), src).index_put_(
            (loop_pos,), nodes)
        weight = torch.empty(num_edges + n, dtype=dtype, device=device).index_put_((edge_pos,), weight).index_put_(
            (loop_pos,), loop_weight)
        rowptr = rowptr + torch.arange(n + 1, device=device)
        dst = torch.repeat_interleave(nodes, rowptr[1:] - rowptr[:-1], output_size=num_edges + n)
    deg = torch.zeros(n, dtype=dtype, device=device).index_add(0, dst, weight)
    if not tracing() and bool((deg < 0).any()):
        node = int(torch.nonzero(deg < 0)[0])
        raise ValueError(f"GCN normalisation needs a non-negative weighted in-degree (the sum of the weights of a "
                         f"node's incoming edges{', self loop included' if add_self_loops else ''}), but node "
                         f"{node} has {float(deg[node]):.6g}: its d^-1/2 is undefined (PyG's gcn_norm would give "
                         "NaN). Negative edge weights are fine as long as every node's total stays >= 0.")
    inv_sqrt = deg.pow(-0.5)
    inv_sqrt = inv_sqrt.masked_fill(torch.isinf(inv_sqrt), 0.0)
    weight = inv_sqrt[col] * weight * inv_sqrt[dst]
    return Graph(rowptr.to(graph.index_dtype), col.to(graph.index_dtype), n, weight, validate=False)


def _flatten(graph: Graph):
    return [graph.rowptr, graph.col, graph.edge_weight], None


def _flatten_with_keys(graph: Graph):
    from torch.utils._pytree import GetAttrKey

    return [(GetAttrKey(k), getattr(graph, k)) for k in ("rowptr", "col", "edge_weight")], None


def _unflatten(children, context) -> Graph:
    rowptr, col, edge_weight = children
    return Graph(rowptr, col, rowptr.shape[0] - 1, edge_weight, validate=False)


torch.utils._pytree.register_pytree_node(Graph, _flatten, _unflatten, serialized_type_name="gnnaccel.Graph",
                                         flatten_with_keys_fn=_flatten_with_keys)
