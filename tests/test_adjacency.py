"""as_graph: every accepted adjacency form gives the same graph, and its memo never returns a stale graph."""
import gc

import pytest
import torch

from gnnaccel import Graph
from gnnaccel.nn import SAGEConv, as_graph
from gnnaccel.nn import adjacency
from conftest import dense_aggregate, random_edge_index


def _sum(g, x):
    return g.aggregate(x, "sum")


def test_memo_sees_every_kind_of_write(generator):
    n = 30
    edge_index = random_edge_index(n, 120, generator)
    x = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    g = as_graph(edge_index, n)
    assert as_graph(edge_index, n) is g  # memoised while unchanged
    writes = [
        lambda ei: ei.__setitem__((0, 0), (int(ei[0, 0]) + 1) % n),  # in-place torch op (version counter)
        lambda ei: ei.numpy().__setitem__((1, 5), (int(ei[1, 5]) + 3) % n),  # bypasses the version counter
        lambda ei: ei.data[0, 7:9].fill_(2),  # bypasses it too
    ]
    for write in writes:
        before = as_graph(edge_index, n)
        write(edge_index)
        after = as_graph(edge_index, n)
        assert after is not before
        assert torch.allclose(_sum(after, x), dense_aggregate(edge_index, n, x, "sum"))
    assert as_graph(edge_index, n + 2).num_nodes == n + 2  # keyed by num_nodes too


def test_memo_entry_dies_with_its_tensor(generator):
    edge_index = random_edge_index(20, 50, generator)
    as_graph(edge_index, 20)
    key = id(edge_index)
    assert key in adjacency._memo
    del edge_index
    gc.collect()
    assert key not in adjacency._memo


def test_sparse_coo_memo_sees_value_writes(generator):
    edge_index = random_edge_index(10, 40, generator)
    w = torch.rand(40, generator=generator, dtype=torch.float64)
    adj = torch.sparse_coo_tensor(edge_index.flip(0), w, (10, 10)).coalesce()
    x = torch.randn(10, 2, dtype=torch.float64, generator=generator)
    first = as_graph(adj, 10)
    assert torch.allclose(_sum(first, x), adj.to_dense() @ x)
    adj.values().numpy()[:] *= 2
    second = as_graph(adj, 10)
    assert second is not first and torch.allclose(_sum(second, x), adj.to_dense() @ x)


@pytest.mark.parametrize("sort", [None, "row", "col"])
def test_pyg_edge_index(sort, generator):
    from torch_geometric import EdgeIndex

    n = 25
    plain = random_edge_index(n, 90, generator)
    ei = EdgeIndex(plain, sparse_size=(n, n))
    if sort is not None:
        ei, _ = ei.sort_by(sort)
    x = torch.randn(n, 4, dtype=torch.float64, generator=generator)
    g = as_graph(ei, n)
    assert torch.allclose(_sum(g, x), dense_aggregate(plain, n, x, "sum"))
    conv = SAGEConv(4, 3).double()
    assert torch.allclose(conv(x, ei), conv(x, plain))
    with pytest.raises(ValueError, match="EdgeIndex has 25 sources but x has 30 rows"):
        as_graph(EdgeIndex(plain, sparse_size=(n, n)), 30)


def test_torch_sparse_sparse_tensor(generator):
    torch_sparse = pytest.importorskip("torch_sparse", reason="torch_sparse is not installed")
    n = 20
    edge_index = random_edge_index(n, 70, generator)
    w = torch.rand(70, generator=generator, dtype=torch.float64)
    adj_t = torch_sparse.SparseTensor(row=edge_index[1], col=edge_index[0], value=w, sparse_sizes=(n, n))
    x = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    assert torch.allclose(_sum(as_graph(adj_t, n), x), dense_aggregate(edge_index, n, x, "sum", w))


def test_unknown_adjacency_is_a_clear_error():
    with pytest.raises(TypeError, match="adjacency must be"):
        as_graph([[0, 1], [1, 0]], 2)
    with pytest.raises(ValueError, match="x has 3 rows"):
        as_graph(Graph.from_edge_index(torch.tensor([[0], [1]]), 2), 3)
