"""The graph container: a CSR adjacency built once and reused by every layer and engine."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor

_INDEX_DTYPES = (torch.int32, torch.int64)


def _index_dtype(dtype) -> torch.dtype:
    if dtype not in _INDEX_DTYPES:
        raise ValueError(f"index dtype must be torch.int32 or torch.int64, got {dtype}")
    return dtype


class Graph:
    """A directed graph in CSR form, rows = destination nodes.

    Row ``i`` lists the source nodes ``j`` that node ``i`` aggregates from. This is PyG's default flow
    (``source_to_target``): an edge ``edge_index[:, e] = (j, i)`` sends a message from ``j`` to ``i``.
    Self loops and duplicate edges are kept as given; within a row, edges keep their input order.

    Attributes: ``rowptr`` [N+1], ``col`` [E], ``edge_weight`` [E] or None, ``num_nodes`` N.
    Derived structures (normalised weights, transposes) are memoised in ``cache`` and dropped when the
    graph changes.
    """

    def __init__(self, rowptr: Tensor, col: Tensor, num_nodes: int, edge_weight: Optional[Tensor] = None,
                 validate: bool = True):
        self.rowptr = rowptr
        self.col = col
        self.num_nodes = int(num_nodes)
        self.edge_weight = edge_weight
        self.cache: Dict[Any, Any] = {}
        if validate:
            self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: Optional[int] = None,
                        edge_weight: Optional[Tensor] = None, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a PyG ``edge_index`` [2, E] (row 0 = source j, row 1 = target i)."""
        index_dtype = _index_dtype(index_dtype)
        if not isinstance(edge_index, Tensor):
            edge_index = torch.as_tensor(np.asarray(edge_index))
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, num_edges], got {list(edge_index.shape)}")
        if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool or edge_index.is_complex():
            raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
        src, dst = edge_index[0].long(), edge_index[1].long()
        num_edges = src.numel()
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
        counts = torch.bincount(dst, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        col = src[order].to(index_dtype).contiguous()
        weight = edge_weight[order].contiguous() if edge_weight is not None else None
        return cls(rowptr.to(index_dtype), col, num_nodes, weight, validate=False)

    @classmethod
    def from_sparse(cls, adj: Tensor, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a square torch sparse COO/CSR tensor ``adj[i, j]`` (row i aggregates from column j).

        Non-unit values become edge weights; a pattern of all-ones values gives an unweighted graph.
        """
        if not isinstance(adj, Tensor) or adj.layout not in (torch.sparse_csr, torch.sparse_coo):
            raise ValueError("from_sparse expects a torch sparse CSR or COO tensor")
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be square 2-D, got shape {list(adj.shape)}")
        if adj.layout == torch.sparse_coo:
            adj = adj.coalesce()
            rows, cols = adj.indices()
            values = adj.values()
        else:
            crow = adj.crow_indices().long()
            cols = adj.col_indices().long()
            rows = torch.repeat_interleave(torch.arange(adj.shape[0], device=crow.device), crow[1:] - crow[:-1])
            values = adj.values()
        weight = None if values.numel() == 0 or bool((values == 1).all()) else values
        return cls.from_edge_index(torch.stack([cols, rows]), adj.shape[0], weight, index_dtype)

    @classmethod
    def from_scipy(cls, matrix, index_dtype: torch.dtype = torch.int64) -> "Graph":
        """Build from a square ``scipy.sparse`` matrix ``A[i, j]`` (row i aggregates from column j)."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise ValueError(f"from_scipy expects a scipy.sparse matrix, got {type(matrix).__name__}")
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {matrix.shape}")
        coo = matrix.tocoo()
        edge_index = torch.from_numpy(np.stack([coo.col, coo.row]).astype(np.int64))
        values = torch.from_numpy(np.asarray(coo.data))
        weight = None if values.numel() == 0 or bool((values == 1).all()) else values.float()
        return cls.from_edge_index(edge_index, matrix.shape[0], weight, index_dtype)

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
        if not bool(torch.isfinite(edge_weight).all()):
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
        dst = torch.repeat_interleave(torch.arange(self.num_nodes, device=self.device), self.in_degree())
        return torch.stack([self.col.long(), dst])

    def row_of_edge(self) -> Tensor:
        return torch.repeat_interleave(torch.arange(self.num_nodes, device=self.device), self.in_degree())

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
