import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gnnaccel import Graph
from conftest import dense_aggregate, random_edge_index


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


# ---------------------------------------------------------------------------------- derived structures (issue 13)
def _dense_gcn_reference(edge_index, num_nodes, weight, add_self_loops=True, improved=False):
    """PyG's own gcn_norm, as a dense float64 matrix A[i, j] (row i aggregates from j). Unit weights are passed
    explicitly: PyG's edge_index path ignores ``improved`` when edge_weight is None (its add_remaining_self_loops
    drops the fill value without weights), unlike its adj_t path and its documented A + 2I."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    w = torch.ones(edge_index.shape[1], dtype=torch.float64) if weight is None else weight.double()
    ei, ew = gcn_norm(edge_index, w, num_nodes, improved=improved, add_self_loops=add_self_loops,
                      dtype=torch.float64)
    dense = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    dense.index_put_((ei[1], ei[0]), ew, accumulate=True)
    return dense


def _dense_of(g: Graph) -> torch.Tensor:
    dense = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.float64)
    w = g.edge_weight.double() if g.edge_weight is not None else torch.ones(g.num_edges, dtype=torch.float64)
    dense.index_put_((g.row_of_edge(), g.col.long()), w, accumulate=True)
    return dense


@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_normalized_matches_pyg_gcn_norm(add_self_loops, improved, weighted, generator):
    n = 40
    edge_index = random_edge_index(n, 200, generator, hub=True)  # self loops and duplicates included
    edge_index = torch.cat([edge_index, torch.tensor([[3, 3, 7], [3, 3, 7]])], 1)  # a node with two equal loops
    weight = None
    if weighted:  # some negative weights, with every node's weighted in-degree kept positive
        weight = torch.rand(edge_index.shape[1], generator=generator, dtype=torch.float64) + 0.5
        weight[edge_index[0] == 3] = 1.25
        to_hub = (edge_index[1] == 0) & (torch.arange(edge_index.shape[1]) % 3 == 0)
        weight[to_hub] *= -0.2  # the hub (node 0) receives ~100 edges: its total stays positive
    g = Graph.from_edge_index(edge_index, n + 3, weight)  # isolated tail nodes
    got = g.gcn_normalized(add_self_loops, torch.float64, improved)
    expected = _dense_gcn_reference(edge_index, n + 3, weight, add_self_loops, improved)
    assert torch.allclose(_dense_of(got), expected, atol=1e-12)
    got32 = g.gcn_normalized(add_self_loops, torch.float32, improved)
    assert got32.edge_weight.dtype == torch.float32 and torch.allclose(_dense_of(got32), expected, atol=1e-6)


def test_gcn_negative_degree_is_a_clear_error():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2, torch.tensor([-3.0, 1.0]))
    with pytest.raises(ValueError, match="negative weighted in-degree.*node 1"):
        g.gcn_normalized()
    from gnnaccel.nn import GCNConv

    with pytest.raises(ValueError, match="negative weighted in-degree"):
        GCNConv(2, 2)(torch.randn(2, 2), g)


def _pyg_gcn(conv, x, edge_index, weight):
    from torch_geometric.nn import GCNConv as PyGGCNConv

    ref = PyGGCNConv(conv.in_channels, conv.out_channels).double()
    ref.lin.weight.data.copy_(conv.lin.weight.double())
    ref.bias.data.copy_(conv.bias.double())
    return ref(x.double(), edge_index, weight.double())


def test_gcn_sees_edge_weight_changes(generator):
    """In-place writes and reassignment drop the memoised normalisation; .data writes need invalidate()."""
    from gnnaccel.nn import GCNConv

    n = 30
    edge_index = random_edge_index(n, 150, generator)
    weight = torch.rand(150, generator=generator) + 0.1
    g = Graph.from_edge_index(edge_index, n, weight.clone())
    src_order = g.edge_index  # the graph's own edge order, to rebuild references
    conv = GCNConv(8, 4).eval()
    x = torch.randn(n, 8, generator=generator)
    with torch.no_grad():
        first = conv(x, g)
        assert torch.allclose(first.double(), _pyg_gcn(conv, x, src_order, g.edge_weight), atol=1e-5)
        g.edge_weight.mul_(3)
        g.edge_weight[:10] = 0.05
        second = conv(x, g)
        assert not torch.allclose(first, second, atol=1e-3)
        assert torch.allclose(second.double(), _pyg_gcn(conv, x, src_order, g.edge_weight), atol=1e-5)
        g.edge_weight = torch.rand(150, generator=generator) + 0.1
        third = conv(x, g)
        assert torch.allclose(third.double(), _pyg_gcn(conv, x, src_order, g.edge_weight), atol=1e-5)
        g.edge_weight.data.mul_(2)  # bypasses the version counter: documented, invalidate() after it
        g.invalidate()
        assert torch.allclose(conv(x, g).double(), _pyg_gcn(conv, x, src_order, g.edge_weight), atol=1e-5)
    assert g.cache  # memoised while nothing changes
    key = next(iter(g.cache))
    assert g.gcn_normalized() is g.cache[key]


def test_learnable_edge_weights_train_on_a_reused_graph(generator):
    """Two optimiser steps on a Graph whose edge_weight is a Parameter: each step's gradient matches PyG's."""
    from torch_geometric.nn import GCNConv as PyGGCNConv
    from gnnaccel.nn import GCNConv

    n = 25
    edge_index = random_edge_index(n, 120, generator)
    g = Graph.from_edge_index(edge_index, n, torch.rand(120, generator=generator) + 0.5)
    g.edge_weight = torch.nn.Parameter(g.edge_weight)
    ei = g.edge_index
    conv = GCNConv(6, 3).double()
    ref = PyGGCNConv(6, 3).double()
    ref.lin.weight.data.copy_(conv.lin.weight)
    ref.bias.data.copy_(conv.bias)
    ref_w = torch.nn.Parameter(g.edge_weight.detach().double().clone())
    g.edge_weight.data = g.edge_weight.data.double()
    opt = torch.optim.SGD([g.edge_weight], lr=0.5)
    opt_ref = torch.optim.SGD([ref_w], lr=0.5)
    x = torch.randn(n, 6, dtype=torch.float64, generator=generator)
    for _ in range(3):
        opt.zero_grad()
        opt_ref.zero_grad()
        conv(x, g).pow(2).sum().backward()
        ref(x, ei, ref_w).pow(2).sum().backward()
        assert torch.allclose(g.edge_weight.grad, ref_w.grad, atol=1e-10)
        opt.step()
        opt_ref.step()
        assert torch.allclose(g.edge_weight, ref_w)


# ---------------------------------------------------------------------------------- constructors (issue 13)
def test_from_scipy_keeps_float64_and_rejects_complex(generator):
    m = sp.random(20, 20, density=0.2, format="csr", dtype=np.float64, random_state=0)
    m.data += 1e-9  # values float32 cannot hold
    g = Graph.from_scipy(m)
    assert g.edge_weight.dtype == torch.float64
    assert np.array_equal(g.to_scipy().toarray(), m.toarray())
    g32 = Graph.from_scipy(m.astype(np.float32))
    assert g32.edge_weight.dtype == torch.float32
    ints = Graph.from_scipy(sp.csr_matrix(np.array([[0, 2], [3, 0]])))
    assert ints.edge_weight.dtype == torch.get_default_dtype() and ints.edge_weight.tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="real"):
        Graph.from_scipy(m.astype(np.complex128))
    with pytest.raises(ValueError, match="real"):
        Graph.from_sparse(torch.tensor([[0, 1j], [1, 0]]).to_sparse_csr())


def test_from_sparse_csr_keeps_row_order_and_dtype(generator):
    edge_index = random_edge_index(15, 60, generator)
    w = torch.rand(60, generator=generator, dtype=torch.float64)
    dense = torch.zeros(15, 15, dtype=torch.float64).index_put_((edge_index[1], edge_index[0]), w, accumulate=True)
    g = Graph.from_sparse(dense.to_sparse_csr(), index_dtype=torch.int32)
    assert g.index_dtype == torch.int32 and g.edge_weight.dtype == torch.float64
    assert torch.equal(_dense_of(g), dense)


def test_from_pyg_data(generator):
    from torch_geometric.data import Data, HeteroData

    edge_index = random_edge_index(12, 40, generator)
    x = torch.randn(15, 3, dtype=torch.float64, generator=generator)
    w = torch.rand(40, generator=generator, dtype=torch.float64)
    plain = Graph.from_pyg(Data(x=x, edge_index=edge_index))
    assert plain.num_nodes == 15 and plain.edge_weight is None  # num_nodes from x: isolated tail kept
    for data in (Data(x=x, edge_index=edge_index, edge_weight=w), Data(x=x, edge_index=edge_index, edge_attr=w),
                 Data(x=x, edge_index=edge_index, edge_attr=w[:, None])):
        g = Graph.from_pyg(data)
        assert torch.allclose(g.aggregate(x, "sum"), dense_aggregate(edge_index, 15, x, "sum", w))
    feats = Graph.from_pyg(Data(x=x, edge_index=edge_index, edge_attr=torch.randn(40, 4)))
    assert feats.edge_weight is None  # edge features are not edge weights
    adj = Graph.from_pyg(Data(x=x, adj_t=_dense_of(Graph.from_edge_index(edge_index, 15, w)).to_sparse_csr()))
    assert torch.allclose(adj.aggregate(x, "sum"), dense_aggregate(edge_index, 15, x, "sum", w))
    with pytest.raises(TypeError, match="homogeneous"):
        Graph.from_pyg(HeteroData())
    with pytest.raises(ValueError, match="neither edge_index nor adj_t"):
        Graph.from_pyg(Data(x=x))


def test_with_edges_checks_the_weights(generator):
    g = Graph.from_edge_index(random_edge_index(10, 30, generator), 10, torch.rand(30, generator=generator))
    new = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="one weight per new edge: 3 edges"):
        g.with_edges(new, torch.rand(2))
    with pytest.raises(ValueError, match="exactly when the graph is weighted"):
        g.with_edges(new)
    nw = torch.rand(3, generator=generator)
    h = g.with_edges(new, nw)
    x = torch.randn(10, 2, dtype=torch.float64, generator=generator)
    expected = dense_aggregate(torch.cat([g.edge_index, new], 1), 10, x, "sum", torch.cat([g.edge_weight, nw]))
    assert torch.allclose(h.aggregate(x, "sum"), expected) and g.num_edges == 30


def test_engine_add_edges_with_wrong_number_of_weights(generator):
    from gnnaccel.batched import BatchedEngine
    from gnnaccel.models import GraphSAGE

    g = Graph.from_edge_index(random_edge_index(10, 30, generator), 10, torch.rand(30, generator=generator))
    engine = BatchedEngine(GraphSAGE(4, 8, 2, 2).eval(), g, torch.randn(10, 4))
    with pytest.raises(ValueError, match="one weight per new edge"):
        engine.add_edges(torch.tensor([[0, 1], [2, 3]]), torch.rand(5))


def test_prune_on_an_empty_graph_is_a_clear_error():
    import gnnaccel
    from gnnaccel.models import GraphSAGE

    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="at least one node"):
        gnnaccel.prune(GraphSAGE(4, 8, 2, 2), g, torch.empty(0, 4), keep=0.5, progress=False)


# ------------------------------------------------------------------ transpose (one builder: ops.transpose)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_nodes, num_edges", [(0, 0), (1, 0), (7, 0), (30, 200), (50, 3000)])
def test_transpose_matches_scipy(index_dtype, num_nodes, num_edges, generator):
    from conftest import random_edge_index

    ei = random_edge_index(num_nodes, num_edges, generator, power_law=True, hub=num_nodes > 0)
    g = Graph.from_edge_index(ei, num_nodes, index_dtype=index_dtype)
    t = g.transpose()
    assert t.rowptr.dtype == index_dtype and t.col.dtype == index_dtype
    # reversed CSR = CSR of A^T; same multiset of (row, col) pairs, stable order within a row
    a = g.to_scipy().T.tocsr()
    assert torch.equal(t.rowptr.long(), torch.from_numpy(a.indptr.astype("int64")))
    for j in range(num_nodes):
        lo, hi = int(t.rowptr[j]), int(t.rowptr[j + 1])
        mine = t.col[lo:hi].long()
        want = g.row_of_edge()[g.col.long() == j]  # destinations of edges leaving j, in CSR order
        assert torch.equal(mine, want)
        assert torch.equal(g.col.long()[t.order[lo:hi]], torch.full((hi - lo,), j))
    assert torch.equal(t.row, g.row_of_edge())


def test_transpose_is_memoised_and_dropped_when_the_graph_changes(generator):
    from conftest import random_edge_index

    g = Graph.from_edge_index(random_edge_index(20, 80, generator), 20)
    t1 = g.transpose()
    assert g.transpose() is t1
    g.col[0] = (g.col[0] + 1) % 20  # an in-place write: the memo must not survive it
    t2 = g.transpose()
    assert t2 is not t1
    assert torch.equal(g.col.long()[t2.order], g.col.long().sort(stable=True).values)
    assert torch.equal(t2.rowptr.long().diff(), torch.bincount(g.col.long(), minlength=20))
