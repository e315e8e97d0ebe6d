"""Turn whatever adjacency a layer is given (PyG edge_index, Graph, torch sparse CSR) into a Graph."""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Union

import torch
from torch import Tensor

from ..graph import Graph

Adjacency = Union[Tensor, Graph]

# edge_index / sparse tensors seen recently -> their Graph. Keyed by tensor identity and checked against the
# tensor's version counter, so a model called layer after layer on the same edge_index converts it once.
_MAX_MEMO = 8
_memo: "OrderedDict[tuple, tuple]" = OrderedDict()


def as_graph(adj: Adjacency, num_nodes: int) -> Graph:
    """The :class:`Graph` for ``adj``: a Graph (returned as is), an ``edge_index`` [2, E] (PyG flow: row 0 =
    source, row 1 = target) or a square torch sparse CSR/COO tensor ``adj_t[i, j]`` (row i aggregates from j,
    PyG's ``adj_t``). ``num_nodes`` (the number of rows of x) sizes an edge_index graph."""
    if isinstance(adj, Graph):
        if adj.num_nodes != num_nodes:
            raise ValueError(f"the graph has {adj.num_nodes} nodes but x has {num_nodes} rows")
        return adj
    if not isinstance(adj, Tensor):
        raise TypeError("adjacency must be a PyG edge_index tensor [2, E], a gnnaccel.Graph or a torch sparse "
                        f"CSR tensor, got {type(adj).__name__}")
    key = (id(adj), adj._version, int(num_nodes))
    hit = _memo.get(key)
    if hit is not None and hit[0]() is adj:
        _memo.move_to_end(key)
        return hit[1]
    if adj.layout in (torch.sparse_csr, torch.sparse_coo):
        if adj.shape[0] != num_nodes:
            raise ValueError(f"the sparse adjacency has {adj.shape[0]} rows but x has {num_nodes}")
        graph = Graph.from_sparse(adj)
    elif adj.layout == torch.strided:
        graph = Graph.from_edge_index(adj, num_nodes=num_nodes)
    else:
        raise TypeError(f"unsupported sparse layout {adj.layout}; use edge_index, a Graph, or sparse CSR")
    _memo[key] = (weakref.ref(adj), graph)
    while len(_memo) > _MAX_MEMO:
        _memo.popitem(last=False)
    return graph
