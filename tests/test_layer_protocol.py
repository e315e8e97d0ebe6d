"""The layer block protocol (gnnaccel.nn.protocol): a layer type the library has never seen, implementing only
the protocol, is served by full_inference and BatchedEngine (exact mode, with a cache, after updates) without
any change to them, and agrees with a dense float64 reference written independently."""
import copy

import pytest
import torch
from torch import nn

from gnnaccel import BatchedEngine, Graph
from gnnaccel.inference import full_inference
from gnnaccel.nn import SAGEConv
from gnnaccel.nn.protocol import Block
from gnnaccel.ops import aggregate
from conftest import random_edge_index


class ToyDegreeConv(nn.Module):
    """``out_i = tanh(sum_{j -> i} w_ji x_j[keep] @ A + x_i @ B + b)`` with ``w_ji = c_ji / (1 + indeg(j))``
    (``c`` = the graph's edge weight or 1): per-edge values derived from the whole graph's degrees, a
    neighbour branch that reads a channel subset, a self branch and its own activation. Implements only the
    block protocol (no gnnaccel base class, no pruning protocol)."""

    reads_neighbours = True
    reads_self = True
    degree_normalised = True

    def __init__(self, in_channels, out_channels, keep, generator):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.register_buffer("keep", torch.as_tensor(keep, dtype=torch.long))
        k = self.keep.numel()
        self.A = nn.Parameter(torch.randn(k, out_channels, generator=generator, dtype=torch.float64) / k ** 0.5)
        self.B = nn.Parameter(torch.randn(in_channels, out_channels, generator=generator, dtype=torch.float64)
                              / in_channels ** 0.5)
        self.b = nn.Parameter(torch.randn(out_channels, generator=generator, dtype=torch.float64) * 0.1)

    def message_graph(self, graph, dtype):
        def build():
            indeg = graph.in_degree().to(dtype)
            c = graph.edge_weight.to(dtype) if graph.edge_weight is not None else torch.ones(graph.num_edges, dtype=dtype)
            w = c / (1 + indeg[graph.col.long()])
            return Graph(graph.rowptr, graph.col, graph.num_nodes, w, validate=False)

        return graph.cached(("toy_degree", dtype), build)

    def neighbour_channels(self):
        return self.keep

    def block_plan(self, x, block, num_out=None, x_neigh=None):
        return None

    def forward_block(self, x, block: Block, rows=None, *, x_neigh=None, plan=None):
        src = x_neigh if x_neigh is not None else x.index_select(1, self.keep)
        agg = aggregate(block.rowptr, block.col, src.contiguous(), "sum", block.edge_weight, rows)
        own = torch.arange(block.num_rows) if rows is None else rows
        if block.self_rows is not None:
            own = block.self_rows.index_select(0, own)
        return torch.tanh(agg @ self.A + x.index_select(0, own) @ self.B + self.b)


class ToyModel(nn.Module):
    """A model that is only ``convs`` + ``layer_block``: toy -> SAGE (max) -> toy, LayerNorm + ELU between."""

    def __init__(self, c, generator):
        super().__init__()
        torch.manual_seed(int(torch.randint(1 << 30, (), generator=generator)))
        self.convs = nn.ModuleList([
            ToyDegreeConv(c, 8, torch.randperm(c, generator=generator)[:3], generator),
            SAGEConv(8, 6, aggr="max").double(),
            ToyDegreeConv(6, 3, torch.tensor([5, 0, 2]), generator)])
        self.norms = nn.ModuleList([nn.LayerNorm(8).double(), nn.LayerNorm(6).double()])
        with torch.no_grad():
            for norm in self.norms:
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.2, 0.2)

    def layer_block(self, i, x, block, rows=None, *, x_neigh=None, plan=None):
        h = self.convs[i].forward_block(x, block, rows, x_neigh=x_neigh, plan=plan)
        return torch.nn.functional.elu(self.norms[i](h)) if i < len(self.convs) - 1 else h


def _dense_reference(model, edge_index, edge_weight, n, x):
    """Float64, dense adjacency, no gnnaccel code."""
    src, dst = edge_index
    c = torch.ones(src.numel(), dtype=torch.float64) if edge_weight is None else edge_weight.double()
    adj = torch.zeros(n, n, dtype=torch.float64).index_put_((dst, src), c, accumulate=True)
    count = torch.zeros(n, n, dtype=torch.float64).index_put_((dst, src), torch.ones_like(c), accumulate=True)
    indeg = count.sum(1)

    def toy(conv, h):
        w = adj / (1 + indeg)[None, :]
        return torch.tanh(w @ h[:, conv.keep] @ conv.A + h @ conv.B + conv.b)

    def sage_max(conv, h):
        agg = torch.zeros(n, h.shape[1], dtype=torch.float64)
        for i in range(n):
            sel = dst == i  # a weighted graph scales the messages (gnnaccel's and PyG's sparse convention)
            if sel.any():
                agg[i] = (c[sel, None] * h[src[sel]]).max(0).values
        return agg @ conv.lin_l.weight.t() + conv.lin_l.bias + h @ conv.lin_r.weight.t()

    with torch.no_grad():
        h = x.double()
        for i, conv in enumerate(model.convs):
            h = toy(conv, h) if isinstance(conv, ToyDegreeConv) else sage_max(conv, h)
            if i < len(model.convs) - 1:
                h = torch.nn.functional.elu(model.norms[i](h))
    return h


TOL = dict(rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_toy_layer_served_by_full_inference_and_engine(weighted, generator):
    n, c = 150, 7
    ei = torch.cat([random_edge_index(n - 6, 5 * n, generator, power_law=True, hub=True),
                    torch.tensor([[4, 4], [4, 4]])], 1)  # hub, duplicate self loops, 6 isolated nodes
    w = torch.rand(ei.shape[1], generator=generator, dtype=torch.float64) + 0.5 if weighted else None
    graph = Graph.from_edge_index(ei, n, w)
    x = torch.randn(n, c, generator=generator, dtype=torch.float64)
    model = ToyModel(c, generator)
    ref = _dense_reference(model, ei, w, n, x)

    torch.testing.assert_close(full_inference(model, graph, x, progress=False), ref, **TOL)
    torch.testing.assert_close(full_inference(model, graph, x, chunk_size=17, progress=False), ref, **TOL)

    engine = BatchedEngine(model, graph, x, cache=True)
    for _ in range(4):  # repeated batches: later ones are served partly from the cache
        targets = torch.randint(n, (int(torch.randint(1, 40, (), generator=generator)),), generator=generator)
        torch.testing.assert_close(engine.predict(targets), ref[targets], **TOL)
    assert engine.cache.stats()["hits"] > 0

    # updates: features, then edges (the toy's per-edge values depend on in-degrees: invalidated one hop on)
    nodes = torch.randint(n, (5,), generator=generator)
    values = torch.randn(5, c, generator=generator, dtype=torch.float64)
    engine.update_features(nodes, values)
    x2 = x.clone()
    x2[nodes] = values
    new = torch.stack([torch.randint(n, (9,), generator=generator), torch.randint(n, (9,), generator=generator)])
    new_w = torch.rand(9, generator=generator, dtype=torch.float64) + 0.5 if weighted else None
    engine.add_edges(new, new_w)
    ei2 = torch.cat([ei, new], 1)
    w2 = None if w is None else torch.cat([w, new_w])
    ref2 = _dense_reference(model, ei2, w2, n, x2)
    torch.testing.assert_close(engine.predict(torch.arange(n)), ref2, **TOL)
    torch.testing.assert_close(full_inference(model, Graph.from_edge_index(ei2, n, w2), x2, progress=False), ref2,
                               **TOL)


def test_toy_layer_under_a_gnnaccel_model(generator):
    """The toy layer as layer 0 of a gnnaccel GraphSAGE (its norms/activation come through layer_block)."""
    from gnnaccel.models import GraphSAGE

    n, c = 90, 6
    ei = random_edge_index(n, 4 * n, generator)
    graph = Graph.from_edge_index(ei, n)
    x = torch.randn(n, c, generator=generator, dtype=torch.float64)
    model = GraphSAGE(c, 8, 4, num_layers=2, norm="batchnorm").double()
    model.convs[0] = ToyDegreeConv(c, 8, torch.tensor([1, 4]), generator)
    with torch.no_grad():
        model.norms[0].running_mean.uniform_(-0.3, 0.3)
        model.norms[0].running_var.uniform_(0.5, 2.0)
    model.eval()
    with torch.no_grad():
        h = model.convs[0].forward_block(x, Block(n, graph.rowptr, graph.col,
                                                   model.convs[0].message_graph(graph, x.dtype).edge_weight))
        expected = model.convs[1](torch.relu(model.norms[0](h)), graph)
        torch.testing.assert_close(model(x, graph), expected, **TOL)
    torch.testing.assert_close(full_inference(model, graph, x, chunk_size=11, progress=False), expected, **TOL)
    engine = BatchedEngine(model, graph, x, cache=True)
    targets = torch.randint(n, (30,), generator=generator)
    torch.testing.assert_close(engine.predict(targets), expected[targets], **TOL)
    torch.testing.assert_close(engine.predict(targets), expected[targets], **TOL)


def test_engine_rejects_non_protocol_layers(generator):
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([nn.Linear(3, 3)])

        def layer_block(self, *args, **kwargs):
            raise AssertionError("never called")

    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    with pytest.raises(TypeError, match="block protocol.*lacks"):
        BatchedEngine(Plain(), g, torch.randn(2, 3))
    with pytest.raises(TypeError, match="block protocol.*lacks"):
        full_inference(Plain(), g, torch.randn(2, 3), progress=False)


def test_engine_leaves_the_callers_model_mode_alone(generator):
    """BatchedEngine runs an eval-mode copy: a model in training mode stays in training mode, and answers use
    BatchNorm's running statistics (issue 13 item 15)."""
    from gnnaccel.models import GraphSAGE

    n = 60
    graph = Graph.from_edge_index(random_edge_index(n, 200, generator), n)
    x = torch.randn(n, 5, generator=generator)
    model = GraphSAGE(5, 8, 3, num_layers=2, norm="batchnorm")
    with torch.no_grad():
        model.norms[0].running_mean.uniform_(-0.5, 0.5)
    model.train()
    engine = BatchedEngine(model, graph, x)
    got = engine.predict([0, 5, 7])
    assert model.training and all(m.training for m in model.modules())
    ref = full_inference(copy.deepcopy(model), graph, x, progress=False)
    torch.testing.assert_close(got, ref[[0, 5, 7]], rtol=1e-5, atol=1e-6)
    assert model.training


@pytest.mark.parametrize("bad, err, match", [(2.5, TypeError, "cache must be"), ("lru", TypeError, "cache must be"),
                                             (0, ValueError, "positive"), (-3, ValueError, "positive"),
                                             ([1], TypeError, "cache must be")])
def test_bad_cache_argument(bad, err, match, generator):
    from gnnaccel.models import GraphSAGE

    g = Graph.from_edge_index(random_edge_index(20, 60, generator), 20)
    with pytest.raises(err, match=match):
        BatchedEngine(GraphSAGE(4, 6, 2, 2), g, torch.randn(20, 4), cache=bad)
