import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnaccel import Graph
from conftest import random_edge_index


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_from_edge_index_rows_are_targets(index_dtype, generator):
    edge_index = random_edge_index(50, 300, generator)
    g = Graph.from_edge_index(edge_index, 50, index_dtype=index_dtype)
    assert g.rowptr.dtype == index_dtype and g.col.dtype == index_dtype
    assert g.num_nodes == 50 and g.num_edges == 300
    # Each row lists exactly the sources of edges pointing at it, in input order.
    src, dst = edge_index
    for i in range(50):
        expected = src[dst == i]
        got = g.col[g.rowptr[i]:g.rowptr[i + 1]].long()
        assert torch.equal(got, expected)
    assert torch.equal(g.in_degree(), torch.bincount(dst, minlength=50))
    assert torch.equal(g.out_degree(), torch.bincount(src, minlength=50))


def test_edge_index_round_trip_and_weights(generator):
    edge_index = random_edge_index(20, 80, generator)
    weight = torch.rand(80, generator=generator)
    g = Graph.from_edge_index(edge_index, 20, edge_weight=weight)
    back = g.edge_index
    pairs = {(int(a), int(b), round(float(w), 6)) for (a, b), w in zip(back.t().tolist(), g.edge_weight)}
    expected = {(int(a), int(b), round(float(w), 6)) for (a, b), w in zip(edge_index.t().tolist(), weight)}
    assert pairs == expected


def test_num_nodes_inferred_and_isolated_tail():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]))
    assert g.num_nodes == 3
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), num_nodes=10)
    assert g.num_nodes == 10 and g.in_degree()[3:].sum() == 0


def test_empty_graph():
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=0)
    assert g.num_nodes == 0 and g.num_edges == 0 and g.rowptr.tolist() == [0]
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=5)
    assert g.rowptr.tolist() == [0] * 6


def test_from_scipy_and_sparse_agree(generator):
    edge_index = random_edge_index(30, 120, generator)
    base = Graph.from_edge_index(edge_index, 30)
    dense = torch.zeros(30, 30)
    dense.index_put_((edge_index[1], edge_index[0]), torch.ones(120), accumulate=True)
    for g in (Graph.from_scipy(sp.csr_matrix(dense.numpy())), Graph.from_sparse(dense.to_sparse_csr()),
              Graph.from_sparse(dense.to_sparse())):
        x = torch.randn(30, 4, dtype=torch.float64)
        # Duplicates become weights in the sparse inputs; the weighted sum must match the multigraph sum.
        assert torch.allclose(g.aggregate(x, "sum"), base.aggregate(x, "sum"))
    assert base.to_scipy().nnz == base.num_edges


def test_to_int32_and_back(generator):
    g = Graph.from_edge_index(random_edge_index(40, 100, generator), 40)
    g32 = g.to(index_dtype=torch.int32)
    assert g32.rowptr.dtype == torch.int32 and torch.equal(g32.col.long(), g.col)
    assert g.to("cpu") is g


@pytest.mark.parametrize("make, match", [
    (lambda: Graph.from_edge_index(torch.zeros(3, 4, dtype=torch.long)), "shape"),
    (lambda: Graph.from_edge_index(torch.zeros(2, 4)), "integers"),
    (lambda: Graph.from_edge_index(torch.tensor([[0, -1], [1, 0]])), "negative"),
    (lambda: Graph.from_edge_index(torch.tensor([[0, 5], [1, 0]]), num_nodes=3), "num_nodes"),
    (lambda: Graph.from_edge_index(torch.tensor([[0], [1]]), num_nodes=-2), "non-negative"),
    (lambda: Graph.from_edge_index(torch.tensor([[0], [1]]), edge_weight=torch.ones(3)), "edge_weight"),
    (lambda: Graph.from_edge_index(torch.tensor([[0], [1]]), edge_weight=torch.tensor([float("nan")])), "NaN"),
    (lambda: Graph.from_edge_index(torch.tensor([[0], [1]]), index_dtype=torch.float32), "index dtype"),
    (lambda: Graph.from_scipy(sp.csr_matrix(np.ones((2, 3)))), "square"),
    (lambda: Graph.from_sparse(torch.ones(3, 3)), "sparse"),
    (lambda: Graph(torch.tensor([0, 3, 2]), torch.tensor([0, 1]), 2), "non-decreasing"),
    (lambda: Graph(torch.tensor([0, 1, 3]), torch.tensor([0, 1]), 2), "end"),
    (lambda: Graph(torch.tensor([0, 1, 2]), torch.tensor([0, 7]), 2), "col"),
    (lambda: Graph(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 1]), 2), "share a dtype"),
    (lambda: Graph(torch.tensor([0, 1]), torch.tensor([0]), 3), "num_nodes \\+ 1"),
])
def test_bad_graph_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
