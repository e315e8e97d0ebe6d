"""Turn whatever adjacency a layer is given (PyG edge_index / EdgeIndex, Graph, torch sparse, torch_sparse
SparseTensor) into a Graph.

Traceable by ``torch.compile(fullgraph=True)`` / ``torch.export``: a :class:`Graph` (a pytree of its CSR
tensors) and a plain ``edge_index`` (converted inside the traced code, with ``num_nodes = x.shape[0]`` and
without the eager data-dependent checks; pass a Graph to convert once instead of on every call). Not
traceable: torch sparse tensors (Dynamo cannot take sparse tensors as inputs), PyG ``EdgeIndex`` and
``SparseTensor`` — convert them with :func:`as_graph` / ``Graph.from_sparse`` before the compiled call.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Union

import torch
from torch import Tensor

from ..graph import Graph, tracing

Adjacency = Union[Tensor, Graph]

# edge_index / sparse COO tensors seen recently -> their Graph, so that layers called one after another on the
# same edge_index convert it once. An entry holds a copy of the tensor and is used only while the tensor still
# equals it: the version counter misses writes through ``.numpy()`` or ``.data``, an exact comparison does
# not (a copy + torch.equal costs ~1/35 of a conversion: RESULTS.md, "as_graph memo"). An entry is dropped
# when its tensor is freed.
_MAX_MEMO = 4
_memo: "OrderedDict[int, tuple]" = OrderedDict()


def _forget(key: int, ref) -> None:
    entry = _memo.get(key)
    if entry is not None and entry[0] is ref:
        del _memo[key]


def _memo_parts(adj: Tensor) -> tuple:
    """The plain tensors that determine ``adj``'s graph."""
    if adj.layout == torch.sparse_coo:
        return (adj._indices(), adj._values())
    return (adj.as_tensor(),) if hasattr(adj, "as_tensor") else (adj,)  # PyG EdgeIndex: its plain tensor


def _memoised(adj: Tensor, num_nodes: int, convert) -> Graph:
    key = id(adj)
    hit = _memo.get(key)
    parts = _memo_parts(adj)
    if hit is not None and hit[0]() is adj and hit[1] == num_nodes and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(parts, hit[2])):
        _memo.move_to_end(key)
        return hit[3]
    graph = convert()
    with torch.inference_mode(False):
        copies = tuple(p.detach().clone() for p in parts)
    _memo[key] = (weakref.ref(adj, lambda ref, key=key: _forget(key, ref)), num_nodes, copies, graph)
    _memo.move_to_end(key)
    while len(_memo) > _MAX_MEMO:
        _memo.popitem(last=False)
    return graph


def _torch_sparse_graph(adj) -> Graph:
    """A torch_sparse ``SparseTensor`` ``adj_t`` (row i aggregates from column j): its CSR, as is."""
    rowptr, col, value = adj.csr()
    n_rows, n_cols = adj.sizes()
    if n_rows != n_cols:
        raise ValueError(f"adjacency must be square, got a SparseTensor of size {[n_rows, n_cols]}")
    if value is not None:
        if value.dim() != 1:
            raise ValueError(f"SparseTensor values must be one weight per edge, got shape {list(value.shape)}")
        if value.is_complex():
            raise ValueError(f"adjacency values must be real, got {value.dtype}")
        if not value.is_floating_point():
            value = value.to(torch.get_default_dtype())
    return Graph(rowptr, col, n_rows, value)


def _edge_index_graph(adj: Tensor, num_nodes: int) -> Graph:
    """A PyG ``EdgeIndex`` (checked against its sparse size) or a plain edge_index."""
    if hasattr(adj, "sparse_size") and hasattr(adj, "as_tensor"):  # torch_geometric.EdgeIndex
        size = adj.sparse_size()
        for dim, name in ((0, "sources"), (1, "targets")):
            if size[dim] is not None and size[dim] != num_nodes:
                raise ValueError(f"the EdgeIndex has {size[dim]} {name} but x has {num_nodes} rows")
        if getattr(adj, "sort_order", None) is not None and str(adj.sort_order).endswith("col"):
            (colptr, row), _ = adj.get_csc()  # sorted by target: its CSC is our CSR
            return Graph(colptr.as_tensor() if hasattr(colptr, "as_tensor") else colptr,
                         row.as_tensor() if hasattr(row, "as_tensor") else row, num_nodes)
        adj = adj.as_tensor()
    return Graph.from_edge_index(adj, num_nodes=num_nodes)


def as_graph(adj: Adjacency, num_nodes: int) -> Graph:
    """The :class:`Graph` for ``adj``.

    Args:
        adj: a Graph (returned as is); an ``edge_index`` [2, E] tensor or PyG ``EdgeIndex`` (PyG flow: row 0 =
            source, row 1 = target); a square torch sparse CSR/COO tensor or torch_sparse ``SparseTensor``
            ``adj_t[i, j]`` (row i aggregates from j, PyG's ``adj_t``).
        num_nodes: the number of rows of x; sizes an edge_index graph and is checked against the others.
    Returns:
        The Graph; conversions of the same unchanged edge_index / COO tensor are memoised.
    """
    if isinstance(adj, Graph):
        if not tracing() and adj.num_nodes != num_nodes:
            raise ValueError(f"the graph has {adj.num_nodes} nodes but x has {num_nodes} rows")
        return adj
    if type(adj).__name__ == "SparseTensor" and type(adj).__module__.startswith("torch_sparse"):
        graph = _torch_sparse_graph(adj)
        if graph.num_nodes != num_nodes:
            raise ValueError(f"the SparseTensor has {graph.num_nodes} rows but x has {num_nodes}")
        return graph
    if not isinstance(adj, Tensor):
        raise TypeError("adjacency must be a PyG edge_index tensor [2, E] or EdgeIndex, a gnnaccel.Graph, a torch "
                        f"sparse CSR/COO tensor or a torch_sparse SparseTensor, got {type(adj).__name__}")
    if adj.layout in (torch.sparse_csr, torch.sparse_coo):
        if adj.dim() != 2 or adj.shape[0] != num_nodes:
            raise ValueError(f"the sparse adjacency has shape {list(adj.shape)} but x has {num_nodes} rows")
        if adj.layout == torch.sparse_csr:  # already CSR: no sort, nothing to memoise
            return Graph.from_sparse(adj)
        return _memoised(adj, num_nodes, lambda: Graph.from_sparse(adj))
    if adj.layout != torch.strided:
        raise TypeError(f"unsupported sparse layout {adj.layout}; use edge_index, a Graph, or sparse CSR")
    if tracing():  # no memo (and no data-dependent checks) inside a traced graph
        return Graph.from_edge_index(adj, num_nodes=num_nodes)
    return _memoised(adj, num_nodes, lambda: _edge_index_graph(adj, num_nodes))
