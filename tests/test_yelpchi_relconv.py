"""RelationalSAGEConv (one neighbour branch per relation, relations carried as per-edge bitmasks): against a
dense float64 reference, through the block protocol in the engines (growth included), and the pruning
protocol."""
from __future__ import annotations

import pytest
import torch

import gnnaccel
from gnnaccel.batched import BatchedEngine
from gnnaccel.graph import Graph
from gnnaccel.inference import full_inference
from gnnaccel.models import RelationalGraphSAGE
from gnnaccel.nn.relational import RelationalSAGEConv, relation_graph, split_relations

from conftest import random_edge_index

R = 3


def _relations(n, e, gen, hub=False):
    rels = [random_edge_index(n, e, gen, hub=hub and r == 1) for r in range(R)]
    if n:
        rels[0] = torch.cat([rels[0], torch.tensor([[0, 0], [0, 0]])], 1)  # a self loop, duplicated
    return rels


def _dense_reference(conv, x, rels, n):
    x = x.double()
    out = x @ conv.lin_self.weight.double().t() + conv.lin_self.bias.double()
    for r, ei in enumerate(rels):
        a = torch.zeros(n, n, dtype=torch.float64)
        if ei.numel():
            a[ei[1], ei[0]] = 1.0  # duplicates merged: a relation is a set of pairs
        deg = a.sum(1, keepdim=True)
        out = out + torch.where(deg > 0, (a @ x) / deg.clamp_min(1), torch.zeros(())) @ conv.lins[r].weight.double().t()
    return out


@pytest.mark.parametrize("n,e,hub", [(0, 0, False), (1, 0, False), (7, 3, False), (40, 120, False), (300, 3000, True)])
def test_matches_dense_reference(n, e, hub, generator):
    rels = _relations(n, e, generator, hub) if n else [torch.zeros(2, 0, dtype=torch.long)] * R
    g = relation_graph(rels, n)
    conv = RelationalSAGEConv(5, 4, R).double()
    x = torch.randn(n, 5, dtype=torch.float64, generator=generator)
    ref = _dense_reference(conv, x, rels, n)
    torch.testing.assert_close(conv(x, g), ref)
    if n:
        rows = torch.randint(n, (min(n, 9),), generator=generator)
        torch.testing.assert_close(conv(x, g, rows=rows), ref[rows])


def test_relation_graph_bitmask(generator):
    rels = _relations(30, 60, generator)
    g = relation_graph(rels, 30)
    ei, w = g.edge_index, g.edge_weight.long()
    for r, rel in enumerate(rels):
        want = set(map(tuple, rel.t().tolist()))
        got = {tuple(p) for p, m in zip(ei.t().tolist(), w.tolist()) if m >> r & 1}
        assert got == want
    assert len(set(map(tuple, ei.t().tolist()))) == ei.shape[1]  # one edge per pair
    split = split_relations(g.rowptr, g.col, g.edge_weight, R)
    assert sum(c.numel() for _, c in split) == int(sum(((w >> r) & 1).sum() for r in range(R)))


def test_gradients_match_reference(generator):
    rels = _relations(25, 60, generator)
    g = relation_graph(rels, 25, torch.float64)
    conv = RelationalSAGEConv(4, 3, R).double()
    x = torch.randn(25, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    conv(x, g).square().sum().backward()
    ours = x.grad.clone()
    x.grad = None
    _dense_reference(conv, x, rels, 25).square().sum().backward()
    torch.testing.assert_close(ours, x.grad)


def test_needs_relation_values():
    conv = RelationalSAGEConv(3, 2, R)
    x = torch.randn(4, 3)
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 4)
    with pytest.raises(ValueError, match="relation bitmask"):
        conv(x, g)
    with pytest.raises(ValueError, match="bitmask"):
        conv(x, Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 4, torch.tensor([1.0, 9.0])))
    with pytest.raises(ValueError, match="num_relations"):
        RelationalSAGEConv(3, 2, 0)


def _model(gen, in_ch=6, hidden=16):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
    return RelationalGraphSAGE(in_ch, hidden, 2, num_layers=2, num_relations=R).eval()


def test_engine_predict_and_growth_equal_full_inference(generator):
    n, grow = 80, 20
    rels_all = _relations(n + grow, 300, generator)
    x_all = torch.randn(n + grow, 6, generator=generator)
    model = _model(generator)
    g_all = relation_graph(rels_all, n + grow)
    src, dst = g_all.edge_index[0], g_all.edge_index[1]
    old = (src < n) & (dst < n)
    g0 = Graph.from_edge_index(torch.stack([src[old], dst[old]]), n, g_all.edge_weight[old])
    for cache in (None, True):
        eng = BatchedEngine(model, g0, x_all[:n], cache=cache)
        torch.testing.assert_close(eng.predict(torch.arange(n)), full_inference(model, g0, x_all[:n], progress=False))
        new = ~old
        ids = eng.add_nodes(x_all[n:], torch.stack([src[new], dst[new]]), g_all.edge_weight[new], first_id=n)
        assert ids.tolist() == list(range(n, n + grow))
        want = full_inference(model, g_all, x_all, progress=False)
        torch.testing.assert_close(eng.predict(torch.arange(n + grow)), want, rtol=1e-5, atol=1e-5)


def test_pruning_protocol(generator):
    rels = _relations(60, 240, generator)
    g = relation_graph(rels, 60, torch.float64)
    conv = RelationalSAGEConv(6, 5, R).double()
    h = torch.randn(60, 6, dtype=torch.float64, generator=generator)
    parts = conv.linear_parts()
    z = conv.branch_inputs(g, h)
    assert [b.name for b in parts.branches] == ["self", "rel0", "rel1", "rel2"]
    recon = sum(z[b.name] @ b.weight for b in parts.branches) + parts.bias
    torch.testing.assert_close(recon, conv(h, g))
    # different keeps per branch (the batched scheme's first layer): the layer slices its input per branch
    keeps = {"self": torch.arange(6), "rel0": torch.tensor([0, 2]), "rel1": torch.tensor([5, 1, 3]),
             "rel2": torch.tensor([4])}
    weights = {k: torch.randn(v.numel(), 5, dtype=torch.float64, generator=generator) for k, v in keeps.items()}
    bias = torch.randn(5, dtype=torch.float64, generator=generator)
    conv.load_pruned(keeps, weights, bias)
    zz = {k: v for k, v in RelationalSAGEConv(6, 5, R).double().branch_inputs(g, h).items()}
    want = bias + sum(zz[k][:, keeps[k]] @ weights[k] for k in keeps)
    torch.testing.assert_close(conv(h, g), want)
    # output pruning keeps the asked columns
    before = conv(h, g)
    conv.prune_outputs(torch.tensor([4, 0]))
    torch.testing.assert_close(conv(h, g), before[:, [4, 0]])


def test_prune_batched_and_engine(generator):
    n = 120
    rels = _relations(n, 600, generator)
    g = relation_graph(rels, n)
    x = torch.randn(n, 12, generator=generator)
    model = _model(generator, 12, 16)
    pruned = gnnaccel.prune(model, g, x, keep=0.25, scheme="batched", progress=False)
    first = pruned.convs[0]
    assert first._input_index("self") is not None or first.in_channels == 12
    assert pruned.convs[1].in_channels == 8  # hidden 16 -> min_kept 8
    full = pruned(x, g)
    eng = BatchedEngine(pruned, g, x, cache=True)
    torch.testing.assert_close(eng.predict(torch.arange(n)), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eng.predict(torch.arange(n)), full, rtol=1e-5, atol=1e-5)  # from the cache
