"""BatchedEngine with layer 0's table plan (``project_first``) and the fresh-target / partial-cache paths: exact
mode equals a dense float64 reference for fresh targets with a partially warmed cache (hand-pruned batched
scheme, gnnaccel.prune's batched and full schemes, unpruned GraphSAGE and GCN), with and without the plan; the
plan follows feature updates and new nodes; sampled answers agree between the two paths; edge cases (targets
cached themselves, every target cached, every supporting node cached, duplicated / isolated / hub targets, an
empty batch)."""
from __future__ import annotations

import pytest
import torch

from conftest import random_edge_index
from gnnaccel import BatchedEngine, Graph
from gnnaccel.cache import FeatureCache
from gnnaccel.inference import warm_cache
from gnnaccel.models import GCN, GraphSAGE

TOL = dict(atol=1e-5, rtol=1e-5)


def _graph(n: int, generator, symmetric: bool = False) -> Graph:
    """Power-law degrees with a hub of thousands of edges; the last 5 nodes isolated."""
    ei = random_edge_index(n - 5, 8 * n, generator, power_law=True, hub=True)
    hub = torch.stack([torch.randint(n - 5, (3000,), generator=generator), torch.zeros(3000, dtype=torch.long)])
    ei = torch.cat([ei, hub], 1)
    if symmetric:
        ei = ei[:, ei[0] != ei[1]]
        ei = torch.cat([ei, ei.flip(0)], 1)
    return Graph.from_edge_index(ei, n)


def _dense_mean(graph: Graph) -> torch.Tensor:
    """Float64 [n, n] mean-aggregation matrix of the CSR (row i averages x[col] over its edges)."""
    n = graph.num_nodes
    rows = torch.repeat_interleave(torch.arange(n), graph.rowptr.diff().long())
    a = torch.zeros(n, n, dtype=torch.float64)
    a.index_put_((rows, graph.col.long()), torch.ones(rows.numel(), dtype=torch.float64), accumulate=True)
    deg = a.sum(1, keepdim=True)
    return torch.where(deg > 0, a / deg.clamp_min(1), a)


def _dense_sage_conv(conv, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One SAGEConv in float64 from its parameters (per-branch input channels included)."""
    hn = h if conv.input_index_neigh is None else h[:, conv.input_index_neigh]
    hs = h if conv.input_index_self is None else h[:, conv.input_index_self]
    out = (a @ hn) @ conv.lin_l.weight.double().t() + conv.lin_l.bias.double()
    return out + hs @ conv.lin_r.weight.double().t()


def _dense_sage(model, graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """Float64 reference of a gnnaccel GraphSAGE (mean, ReLU between layers), pruned ones included."""
    a = _dense_mean(graph)
    h = x.double()
    idx = getattr(model, "input_index", None)
    if idx is not None:
        h = h[:, idx]
    for i, conv in enumerate(model.convs):
        h = _dense_sage_conv(conv, a, h)
        if i < len(model.convs) - 1:
            h = h.clamp_min(0)
    return h


def _dense_gcn(model, graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """Float64 reference of a gnnaccel GCN on a graph without self loops: D^-1/2 (A + I) D^-1/2 h W + b."""
    n = graph.num_nodes
    rows = torch.repeat_interleave(torch.arange(n), graph.rowptr.diff().long())
    a = torch.eye(n, dtype=torch.float64)
    a.index_put_((rows, graph.col.long()), torch.ones(rows.numel(), dtype=torch.float64), accumulate=True)
    d = a.sum(1).rsqrt()
    a = d[:, None] * a * d[None, :]
    h = x.double()
    for i, conv in enumerate(model.convs):
        h = a @ (h @ conv.lin.weight.double().t()) + conv.bias.double()
        if i < len(model.convs) - 1:
            h = h.clamp_min(0)
    return h


def _sage(c: int, hidden: int, seed: int = 0):
    torch.manual_seed(seed)
    model = GraphSAGE(c, hidden, 5, 2).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    return model


def _hand_pruned(c: int, generator):
    """Batched scheme by hand: layer 0's neighbour branch reads 8 of c raw channels, its self branch all,
    hidden 24 -> 6 (the plan, 6 wide per branch, is narrower than the 8 neighbour channels)."""
    model = _sage(c, 24)
    conv0, conv1 = model.convs
    keep_neigh = torch.randperm(c, generator=generator)[:8].sort().values
    keep_hidden = torch.randperm(24, generator=generator)[:6].sort().values
    conv0.load_pruned({"neigh": keep_neigh, "self": torch.arange(c)},
                      {"neigh": torch.randn(8, 24, generator=generator),
                       "self": torch.randn(c, 24, generator=generator)}, torch.randn(24, generator=generator))
    conv0.prune_outputs(keep_hidden)
    conv1.load_pruned({"neigh": torch.arange(6), "self": torch.arange(6)},
                      {"neigh": conv1.lin_l.weight.t()[keep_hidden].detach().clone(),
                       "self": conv1.lin_r.weight.t()[keep_hidden].detach().clone()},
                      conv1.lin_l.bias.detach().clone())
    return model


def _warm_half(model, graph, x, generator):
    """A cache of layer-0 outputs warmed on a random half of the nodes; the other half are fresh targets."""
    n = graph.num_nodes
    perm = torch.randperm(n, generator=generator)
    cache = FeatureCache(n, [model.convs[0].out_channels])
    warm_cache(cache, model, graph, x, nodes=perm[: n // 2])
    return cache, perm[: n // 2], perm[n // 2:]


def _models(kind: str, c: int, graph, x, generator):
    if kind == "hand-batched":
        return _hand_pruned(c, generator)
    if kind == "unpruned":
        return _sage(c, 12)
    import gnnaccel

    return gnnaccel.prune(_sage(c, 12), graph, x, keep=0.25, scheme=kind.split("-")[1], progress=False)


@pytest.mark.parametrize("project_first", [True, False])
@pytest.mark.parametrize("kind", ["hand-batched", "prune-batched", "prune-full", "unpruned"])
def test_fresh_targets_with_half_warm_cache_equal_dense_reference(kind, project_first, generator):
    n, c = 300, 32
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _models(kind, c, graph, x, generator)
    reference = _dense_sage(model, graph, x).float()
    cache, warm, fresh = _warm_half(model, graph, x, generator)
    engine = BatchedEngine(model, graph, x, cache=cache, project_first=project_first)
    conv0 = model.convs[0]
    width = conv0.in_channels if conv0.input_index_neigh is None else conv0.input_index_neigh.numel()
    uses_plan = project_first and conv0.out_channels < width
    assert (engine._plan is not None) == uses_plan
    if uses_plan:
        assert engine._plan.shape == (n, 2 * conv0.out_channels) and engine._x_neigh is None
    isolated, hub = n - 1, 0
    batches = [fresh[:40], fresh[40:41], torch.tensor([isolated, hub, hub, int(fresh[50])]),
               warm[:7],  # every target cached itself
               torch.cat([warm[7:10], fresh[60:63], warm[7:9]])]  # cached and fresh, duplicated
    for targets in batches:
        before = cache.size(0)
        torch.testing.assert_close(engine.predict(targets), reference[targets], **TOL)
        assert cache.size(0) >= before
    with pytest.raises(ValueError, match="empty"):
        engine.predict(torch.tensor([], dtype=torch.long))


def test_every_supporting_node_cached_and_no_cache_hit(generator):
    """Total hit (layer 0 computes nothing) and zero hit (an empty cache) both equal the reference."""
    n, c = 200, 24
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _hand_pruned(c, generator)
    reference = _dense_sage(model, graph, x).float()
    full = FeatureCache(n, [model.convs[0].out_channels])
    warm_cache(full, model, graph, x)
    empty = FeatureCache(n, [model.convs[0].out_channels])
    targets = torch.randint(n, (50,), generator=generator)
    for cache in (full, empty):
        engine = BatchedEngine(model, graph, x, cache=cache)
        torch.testing.assert_close(engine.predict(targets), reference[targets], **TOL)
    assert full.stats()["misses"] == 0 and empty.stats()["hits"] == 0
    # The batch without a single hit filled the cache with exact layer-0 outputs of its supporting nodes.
    nodes = empty.cached_nodes(0)
    assert nodes.numel() >= torch.unique(targets).numel()
    hidden = _dense_sage_conv(model.convs[0], _dense_mean(graph), x.double()).clamp_min(0).float()
    torch.testing.assert_close(empty.lookup(0, nodes)[1], hidden[nodes], **TOL)


def test_gcn_table_plan_equals_dense_reference(generator):
    n, c = 200, 20
    graph = _graph(n, generator, symmetric=True)
    x = torch.randn(n, c, generator=generator)
    torch.manual_seed(1)
    model = GCN(c, 8, 4, 2).eval()
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.uniform_(-0.5, 0.5)
    reference = _dense_gcn(model, graph, x).float()
    for project_first in (True, False):
        engine = BatchedEngine(model, graph, x, cache=True, project_first=project_first)
        assert (engine._plan is not None) == project_first
        for targets in (torch.arange(n), torch.tensor([0, 0, n - 1, 7])):
            torch.testing.assert_close(engine.predict(targets), reference[targets], **TOL)


def test_table_plan_follows_updates_and_new_nodes(generator):
    n, c = 150, 24
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _hand_pruned(c, generator)
    engine = BatchedEngine(model, graph, x, cache=True)
    assert engine._plan is not None
    nodes = torch.tensor([0, 3, 140])
    values = torch.randn(3, c, generator=generator)
    engine.update_features(nodes, values)
    x2 = x.clone()
    x2[nodes] = values
    torch.testing.assert_close(engine.predict(torch.arange(n)), _dense_sage(model, graph, x2).float(), **TOL)
    new = torch.randn(4, c, generator=generator)
    edges = torch.tensor([[n, n + 1, 2, n + 3, 0], [1, n, n + 2, n + 3, n + 1]])
    ids = engine.add_nodes(new, edges)
    rows = torch.repeat_interleave(torch.arange(n), graph.rowptr.diff().long())
    old = torch.stack([graph.col.long(), rows])  # (source, target) of every edge
    grown = Graph.from_edge_index(torch.cat([old, edges], 1), n + 4)
    want = _dense_sage(model, grown, torch.cat([x2, new])).float()
    torch.testing.assert_close(engine.predict(torch.arange(n + 4)), want, **TOL)
    torch.testing.assert_close(engine.predict(ids), want[n:], **TOL)
    assert torch.equal(engine.x[:n], x2) and torch.equal(x, x.clone())  # the caller's table is untouched


@pytest.mark.parametrize("cached", [False, True])
def test_sampled_answers_equal_between_plan_and_raw_rows(cached, generator):
    """The same seeded draws through the table plan and through the raw rows: equal answers."""
    n, c = 300, 32
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _hand_pruned(c, generator)
    answers = []
    for project_first in (True, False):
        cache = _warm_half(model, graph, x, torch.Generator().manual_seed(3))[0] if cached else None
        engine = BatchedEngine(model, graph, x, fanouts=[4, 6], cache=cache, seed=11, project_first=project_first)
        gen = torch.Generator().manual_seed(9)
        answers.append([engine.predict(torch.randint(n, (s,), generator=gen)) for s in (1, 16, 64)])
    for a, b in zip(*answers):
        torch.testing.assert_close(a, b, **TOL)


def test_project_first_must_be_a_bool(generator):
    graph = _graph(50, generator)
    with pytest.raises(TypeError, match="project_first"):
        BatchedEngine(_sage(8, 4), graph, torch.randn(50, 8), project_first="yes")
