"""A growing graph: GrowingCSR against graphs rebuilt from scratch, BatchedEngine.add_nodes (exact mode equals
full inference on the grown graph rebuilt from scratch, with and without cache, pruned models, int32), cache
invalidation exactly where the new edges reach, bad input changing nothing, concurrent predicts during growth,
and the amortisation (reallocation / move counts, not timings)."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from conftest import random_edge_index
from gnnaccel import BatchedEngine, Graph
from gnnaccel.cache import FeatureCache
from gnnaccel.growth import GrowingCSR
from gnnaccel.inference import full_inference
from gnnaccel.ops.expand_hop import expand_hop
from test_batched import MODELS, _cache_for, _graph, _model, _pruned_sage

TOL = dict(atol=1e-5, rtol=1e-5)


class _State:
    """The graph and features as plain edge lists, rebuilt from scratch for the reference."""

    def __init__(self, graph: Graph, x: torch.Tensor):
        self.edge_index = graph.edge_index
        self.weight = graph.edge_weight
        self.x = x.clone()
        self.index_dtype = graph.index_dtype

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def graph(self) -> Graph:
        return Graph.from_edge_index(self.edge_index, self.num_nodes, self.weight, index_dtype=self.index_dtype)

    def add(self, features, edges, weight=None):
        if features is not None:
            self.x = torch.cat([self.x, features])
        if edges is not None:
            self.edge_index = torch.cat([self.edge_index, edges], 1)
            if weight is not None:
                self.weight = torch.cat([self.weight, weight])


def _random_growth(engine, state: _State, generator, step: int):
    """One random update of a kind chosen by ``step``: add_nodes with the edge cases of the contract
    (isolated new nodes, self loops and duplicates, edges only among new nodes, both directions to old ones),
    add_edges, or update_features. Applies it to the engine and to the reference state."""
    n0, c = engine.num_nodes, engine.x.shape[1]
    kind = step % 6
    if kind == 4:
        edges = torch.randint(n0, (2, 4), generator=generator)
        engine.add_edges(edges)
        state.add(None, edges)
        return
    if kind == 5:
        nodes = torch.randint(n0, (3,), generator=generator)
        values = torch.randn(3, c, generator=generator)
        engine.update_features(nodes, values)
        state.x[nodes] = values
        return
    k = int(torch.randint(1, 4, (), generator=generator))
    features = torch.randn(k, c, generator=generator)
    new = torch.arange(n0, n0 + k)
    if kind == 0:  # isolated new nodes
        edges = None
    elif kind == 1:  # both directions to existing nodes, plus a self loop and a duplicate edge
        old = torch.randint(n0, (k * 3,), generator=generator)
        src = new.repeat(3)
        edges = torch.cat([torch.stack([src, old]), torch.stack([old, src]),
                           torch.tensor([[n0, n0], [n0, n0]]), torch.stack([old[:1], src[:1]])], 1)
    elif kind == 2:  # edges only among the new nodes
        edges = torch.stack([new[torch.randint(k, (5,), generator=generator)],
                             new[torch.randint(k, (5,), generator=generator)]])
    else:  # into an isolated old node (the last ones of _graph) and from old to new
        edges = torch.tensor([[n0 - 1 - (step % 10), 0], [n0, n0 + k - 1]])
        edges = torch.cat([edges, edges.flip(0)], 1)
    ids = engine.add_nodes(features, edges, first_id=n0)
    assert ids.tolist() == list(range(n0, n0 + k)) and ids.dtype == torch.int64
    state.add(features, edges)


def _check_exact(engine, model, state: _State, generator, all_nodes: bool = False):
    graph = state.graph()
    reference = full_inference(model, graph, state.x, progress=False)
    packed = engine.graph
    assert packed.num_nodes == engine.num_nodes == state.num_nodes
    assert engine.num_edges == graph.num_edges == packed.num_edges
    assert torch.equal(packed.rowptr, graph.rowptr) and torch.equal(packed.col, graph.col)
    targets = (torch.arange(state.num_nodes) if all_nodes
               else torch.randint(state.num_nodes, (25,), generator=generator))
    torch.testing.assert_close(engine.predict(targets), reference[targets], **TOL)


@pytest.mark.parametrize("cache_kind", ["none", "full", "bounded"])
@pytest.mark.parametrize("name", list(MODELS))
def test_exact_after_growth_equals_full_inference(name, cache_kind, generator):
    n, c = 120, 6
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model(name, c)
    engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, cache_kind))
    state = _State(graph, x)
    x_before = x.clone()
    for step in range(12):
        for _ in range(2):  # fill the cache under the current state
            engine.predict(torch.randint(engine.num_nodes, (15,), generator=generator))
        _random_growth(engine, state, generator, step)
        _check_exact(engine, model, state, generator)
    _check_exact(engine, model, state, generator, all_nodes=True)
    assert engine.version == 12
    assert torch.equal(x, x_before), "growth must not write into the caller's tensor"
    stats = engine.stats()
    assert (stats["num_nodes"], stats["num_edges"], stats["version"]) == (state.num_nodes, graph.num_edges + (
        state.edge_index.shape[1] - graph.num_edges), 12)
    if cache_kind != "none":
        assert stats["invalidated"] == engine.cache.stats()["invalidated"] > 0
        assert 0 <= stats["hit_rate"] <= 1


def test_sampled_answers_do_not_depend_on_how_the_graph_grew(generator):
    """A grown engine and a fresh engine on the grown graph hold the same rows in the same order: the same
    draws, the same sampled answers."""
    n, c = 100, 5
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model("sage3", c)
    engine = BatchedEngine(model, graph, x, fanouts=[3, 2, None], seed=11, cache=_cache_for(model, n, "full"))
    state = _State(graph, x)
    for step in range(8):
        _random_growth(engine, state, generator, step)
    fresh = BatchedEngine(model, state.graph(), state.x, fanouts=[3, 2, None], seed=11)
    targets = torch.arange(state.num_nodes)
    torch.testing.assert_close(engine.predict(targets), fresh.predict(targets), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cache_kind", ["none", "full", "bounded"])
def test_pruned_models_after_growth(cache_kind, generator):
    """Both pruning schemes: a hand-pruned model with per-branch keeps (batched scheme, the compact neighbour
    table grows too) and gnnaccel.prune's model."""
    import gnnaccel

    n, c = 150, 16
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    keep_neigh = torch.randperm(c, generator=generator)[:4].sort().values
    models = [_pruned_sage(c, keep_neigh, torch.tensor([0, 2, 3, 7, 9]), generator)]
    for scheme in ("batched", "full"):
        models.append(gnnaccel.prune(_model("sage2", c), graph, x, keep=0.25, scheme=scheme, progress=False))
    for model in models:
        engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, cache_kind))
        state = _State(graph, x)
        for step in range(6):
            engine.predict(torch.randint(engine.num_nodes, (10,), generator=generator))
            _random_growth(engine, state, generator, step)
            with torch.no_grad():
                reference = model(state.x, state.graph())
            targets = torch.randint(state.num_nodes, (20,), generator=generator)
            torch.testing.assert_close(engine.predict(targets), reference[targets], **TOL)
        if engine._x_neigh is not None:
            torch.testing.assert_close(engine._x_neigh, state.x[:, model.convs[0].neighbour_channels()])


@pytest.mark.parametrize("name", ["sage2", "gcn2"])
def test_hub_new_node_with_thousands_of_edges(name, generator):
    n, c = 300, 6
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model(name, c)
    engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, "full"))
    state = _State(graph, x)
    engine.predict(torch.arange(n))  # everything cached
    old = torch.randint(n, (3000,), generator=generator)  # with many duplicates
    edges = torch.cat([torch.stack([torch.full_like(old, n), old]), torch.stack([old, torch.full_like(old, n)])], 1)
    features = torch.randn(1, c, generator=generator)
    engine.add_nodes(features, edges)
    state.add(features, edges)
    _check_exact(engine, model, state, generator, all_nodes=True)


@pytest.mark.parametrize("name", ["sage2", "gcn3"])
def test_int32_graph_grows(name, generator):
    n, c = 100, 6
    graph = _graph(n, generator).to(index_dtype=torch.int32)
    x = torch.randn(n, c, generator=generator)
    model = _model(name, c)
    engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, "bounded"))
    state = _State(graph, x)
    for step in range(6):
        engine.predict(torch.randint(engine.num_nodes, (10,), generator=generator).int())
        _random_growth(engine, state, generator, step)
    assert engine.graph.index_dtype == torch.int32
    _check_exact(engine, model, state, generator, all_nodes=True)


def test_weighted_graph_grows(generator):
    n, c = 80, 5
    graph = _graph(n, generator, weighted=True)
    x = torch.randn(n, c, generator=generator)
    for name in ("sage2", "gcn2"):
        model = _model(name, c)
        engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, "full"))
        state = _State(graph, x)
        for step in range(4):
            engine.predict(torch.randint(engine.num_nodes, (10,), generator=generator))
            k, n0 = 2, engine.num_nodes
            features = torch.randn(k, c, generator=generator)
            edges = torch.stack([torch.randint(n0 + k, (6,), generator=generator),
                                 torch.randint(n0 + k, (6,), generator=generator)])
            weight = torch.rand(6, generator=generator) + 0.5
            engine.add_nodes(features, edges, weight)
            state.add(features, edges, weight)
            _check_exact(engine, model, state, generator, all_nodes=True)
        with pytest.raises(ValueError, match="weighted"):
            engine.add_nodes(torch.randn(1, c), torch.tensor([[0], [1]]))


def _two_components(n_half: int, generator):
    a = random_edge_index(n_half, 4 * n_half, generator)
    b = random_edge_index(n_half, 4 * n_half, generator) + n_half
    return Graph.from_edge_index(torch.cat([a, b], 1), 2 * n_half)


@pytest.mark.parametrize("name", ["sage2", "gcn2"])
def test_growth_invalidates_exactly_the_reached_entries(name, generator):
    """Entries in the other component stay valid (and are hits afterwards); entries the new edges reach are
    dropped: for GraphSAGE the new edges' targets, for GCN also their out-neighbours (the degree changes)."""
    h, c = 40, 5
    graph = _two_components(h, generator)
    x = torch.randn(2 * h, c, generator=generator)
    model = _model(name, c)
    cache = FeatureCache(2 * h, [model.convs[0].out_channels])
    engine = BatchedEngine(model, graph, x, cache=cache)
    engine.predict(torch.arange(2 * h))
    before = set(cache.cached_nodes(0).tolist())
    assert before == set(range(2 * h))
    # A new node joined to three nodes of component B, both directions.
    old = torch.tensor([h + 1, h + 5, h + 5])
    n0 = 2 * h
    edges = torch.cat([torch.stack([torch.full_like(old, n0), old]), torch.stack([old, torch.full_like(old, n0)])], 1)
    engine.add_nodes(torch.randn(1, c, generator=generator), edges)
    targets = set(edges[1].tolist()) - {n0}
    reached = set(targets)
    if name == "gcn2":  # out-neighbours of a target read its degree: i -> k edges, i.e. rows k containing i
        g = engine.graph
        for k in range(g.num_nodes):
            if set(g.col[g.rowptr[k]:g.rowptr[k + 1]].tolist()) & targets:
                reached.add(k)
    after = set(cache.cached_nodes(0).tolist())
    assert after == before - reached
    assert cache.stats()["invalidated"] == len(reached & before)
    # Component A answers from the cache: every layer-0 row it needs is a hit.
    hits = cache.stats()["hits"]
    a_nodes = torch.arange(h)
    state = _State(graph, x)
    state.add(engine.x[n0:], edges)
    torch.testing.assert_close(engine.predict(a_nodes),
                               full_inference(model, state.graph(), state.x, progress=False)[a_nodes], **TOL)
    assert cache.stats()["hits"] - hits == h
    assert not cache.lookup(0, torch.tensor([n0]))[0].item()


def test_bad_input_raises_and_changes_nothing(generator):
    n, c = 60, 4
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model("sage2", c)
    engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, "full"))
    targets = torch.arange(n)
    expected = engine.predict(targets)
    good = torch.randn(2, c)
    cases = [
        (dict(features=torch.randn(2, c + 1)), ValueError, "shape"),
        (dict(features=torch.randn(2, c, dtype=torch.float64)), TypeError, "dtype"),
        (dict(features=torch.tensor([[0.0, float("nan"), 0.0, 0.0]])), ValueError, "NaN"),
        (dict(features=torch.tensor([[0.0, float("inf"), 0.0, 0.0]])), ValueError, "infinite"),
        (dict(features=[[0.0] * c]), TypeError, "features"),
        (dict(features=good, edge_index=torch.tensor([[0], [n + 2]])), ValueError, r"\[0, 62\)"),
        (dict(features=good, edge_index=torch.tensor([[-1], [0]])), ValueError, "edge_index"),
        (dict(features=good, edge_index=torch.tensor([[0.0], [1.0]])), TypeError, "edge_index"),
        (dict(features=good, edge_index=torch.tensor([0, 1])), ValueError, "edge_index"),
        (dict(features=good, edge_index=torch.tensor([[0], [1]]), edge_weight=torch.ones(1)), ValueError, "weighted"),
        (dict(features=good, first_id=n + 1), ValueError, "grew concurrently"),
        (dict(features=good, first_id=1.5), TypeError, "first_id"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            engine.add_nodes(**kwargs)
        assert (engine.num_nodes, engine.num_edges, engine.version) == (n, graph.num_edges, 0), kwargs
    torch.testing.assert_close(engine.predict(targets), expected, rtol=0, atol=0)
    assert engine.cache.num_nodes == n and engine.x.shape == (n, c)
    # A new node that does not exist yet (position k of k new nodes) is out of range; one that does is fine.
    with pytest.raises(ValueError, match="edge_index"):
        engine.add_nodes(good, torch.tensor([[n + 2], [0]]))
    assert engine.add_nodes(good, torch.tensor([[n + 1], [0]]), first_id=n).tolist() == [n, n + 1]
    assert engine.add_nodes(np.zeros((0, c), dtype=np.float32)).numel() == 0  # nothing to add: no new version
    assert engine.version == 1


def test_concurrent_predicts_during_growth(generator):
    """Readers predict while a writer grows the graph: every answer equals full inference on one state between
    the versions read before and after the call, and nothing raises."""
    n, c = 100, 5
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model("sage2", c)
    updates, states = [], []
    state = _State(graph, x)
    states.append(full_inference(model, state.graph(), state.x, progress=False))
    for k in range(8):
        n0 = state.num_nodes
        features = torch.randn(3, c, generator=generator) * 3
        old = torch.randint(n0, (6,), generator=generator)
        new = torch.arange(n0, n0 + 3).repeat(2)
        edges = torch.cat([torch.stack([new, old]), torch.stack([old, new])], 1)
        updates.append((features, edges))
        state.add(features, edges)
        states.append(full_inference(model, state.graph(), state.x, progress=False))
    for a, b in zip(states, states[1:]):  # the check has teeth: consecutive states differ for old nodes
        assert ((a - b[: a.shape[0]]).abs().amax(1) > 1e-3).sum() >= 3

    engine = BatchedEngine(model, graph, x, cache=_cache_for(model, n, "full"))
    answers, errors = [], []
    stop = threading.Event()

    def reader(seed):
        gen = torch.Generator().manual_seed(seed)
        try:
            while not stop.is_set():
                before = engine.version
                size = engine.num_nodes  # new nodes already present may be asked for
                targets = torch.randint(size, (int(torch.randint(1, 20, (), generator=gen)),), generator=gen)
                out = engine.predict(targets)
                answers.append((before, engine.version, targets, out))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    try:
        for features, edges in updates:
            deadline = len(answers) + 5
            while len(answers) < deadline and not errors:
                stop.wait(0.001)
            engine.add_nodes(features, edges)
        deadline = len(answers) + 5
        while len(answers) < deadline and not errors:
            stop.wait(0.001)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert engine.version == len(updates)
    assert any(v0 == len(updates) for v0, _, _, _ in answers)
    for v0, v1, targets, out in answers:
        ok = any(torch.allclose(out, states[v][targets], **TOL) for v in range(v0, v1 + 1))
        assert ok, f"answer between versions {v0} and {v1} matches none of their states"


def test_growth_is_amortised(generator):
    """1,000 add_nodes calls of one node and a few edges each (both directions): node tables reallocate
    O(log n) times, the edge buffer a bounded number of times, rows move O(log degree) times each (edges moved
    bounded by a constant times the final edge count, not by calls x edges)."""
    n, c = 2000, 4
    graph = Graph.from_edge_index(random_edge_index(n, 8 * n, generator, power_law=True, hub=True), n)
    x = torch.randn(n, c, generator=generator)
    model = _model("sage2", c)
    engine = BatchedEngine(model, graph, x, cache=True)
    calls = 1000
    for i in range(calls):
        old = torch.randint(n + i, (3,), generator=generator)
        new = torch.full_like(old, n + i)
        engine.add_nodes(torch.randn(1, c, generator=generator), torch.cat([torch.stack([new, old]),
                                                                           torch.stack([old, new])], 1))
    final_nodes, final_edges = n + calls, engine.num_edges
    assert final_edges == graph.num_edges + 6 * calls
    bound_nodes = math.ceil(math.log2(final_nodes / n)) + 1
    for csr in (engine._csr, engine._reverse):
        counters = csr.counters
        assert counters["node_reallocations"] <= bound_nodes, counters
        assert counters["edge_reallocations"] <= 3, counters
        assert counters["edges_moved"] <= 4 * final_edges, counters
        assert csr.col.numel() <= 3 * final_edges + 4096
    assert engine.cache.num_reallocations() <= bound_nodes
    assert engine._x_rows.shape[0] < 2 * final_nodes
    # Still exact after all that.
    state = _State(graph, x)
    state.x, state.edge_index = engine.x.clone(), engine.graph.edge_index
    targets = torch.randint(final_nodes, (50,), generator=generator)
    torch.testing.assert_close(engine.predict(targets), full_inference(model, state.graph(), state.x,
                                                                       progress=False)[targets], **TOL)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_growing_csr_matches_a_rebuilt_graph(index_dtype, generator):
    """GrowingCSR after random growth = Graph.from_edge_index of all the edges (row order = insertion order);
    its exact expansion = expand_hop on the rebuilt graph (frontier, block, source ids, weights)."""
    n = 40
    ei = random_edge_index(n, 200, generator, power_law=True, hub=True)
    weight = torch.rand(ei.shape[1], generator=generator, dtype=torch.float64)
    csr = GrowingCSR.from_graph(Graph.from_edge_index(ei, n, weight, index_dtype=index_dtype))
    for step in range(150):
        csr.add_nodes(int(torch.randint(0, 3, (), generator=generator)))
        m = int(torch.randint(0, 25, (), generator=generator))
        new = torch.randint(csr.num_nodes, (2, m), generator=generator)
        w = torch.rand(m, generator=generator, dtype=torch.float64)
        csr.add_edges(new[0], new[1], w)
        ei, weight = torch.cat([ei, new], 1), torch.cat([weight, w])
        if step % 10 == 0 or step == 149:
            ref = Graph.from_edge_index(ei, csr.num_nodes, weight, index_dtype=index_dtype)
            got = csr.to_graph()
            assert got.index_dtype == index_dtype
            assert torch.equal(ref.rowptr, got.rowptr) and torch.equal(ref.col, got.col)
            assert torch.equal(ref.edge_weight, got.edge_weight)
            seeds = torch.randint(csr.num_nodes, (9,), generator=generator)
            skip = torch.rand(9, generator=generator) < 0.3
            a = expand_hop(ref.rowptr, ref.col, seeds, -1, 0, skip)
            b = csr.expand(seeds, -1, 0, skip)
            for field in ("frontier", "rowptr", "col"):
                assert torch.equal(getattr(a, field), getattr(b, field)), field
            assert torch.equal(ref.col[a.edge_ids.long()], csr.sources(b.edge_ids))
            assert torch.equal(ref.edge_weight[a.edge_ids.long()], csr.weights(b.edge_ids))
    assert csr.counters["edge_reallocations"] >= 1 and csr.counters["rows_moved"] > 0  # the paths ran


def test_feature_cache_grow():
    cache = FeatureCache(10, [3, 2])
    nodes = torch.tensor([1, 4, 9])
    values = torch.randn(3, 3)
    cache.insert(0, nodes, values)
    cache.grow(15)
    assert cache.num_nodes == 15
    hit, got = cache.lookup(0, torch.tensor([1, 4, 9, 10, 14]))
    assert hit.tolist() == [True, True, True, False, False]
    torch.testing.assert_close(got[:3], values)
    cache.insert(1, torch.tensor([14]), torch.ones(1, 2))
    assert cache.cached_nodes(1).tolist() == [14]
    assert cache.num_reallocations() == 2  # one per layer: capacity doubled to 20
    cache.grow(20)  # within the doubled capacity
    assert cache.num_reallocations() == 2
    assert cache.cached_nodes(0).tolist() == [1, 4, 9] and not cache.lookup(1, torch.tensor([19]))[0].item()
    with pytest.raises(ValueError, match="grow"):
        cache.grow(5)
    # A dense cache whose capacity the graph outgrows becomes an LRU cache of that capacity, entries kept.
    lru = FeatureCache(6, [2], capacity=8)
    lru.insert(0, torch.tensor([0, 5]), torch.randn(2, 2))
    lru.grow(20)
    assert lru.cached_nodes(0).tolist() == [0, 5]
    lru.insert(0, torch.arange(6, 20), torch.randn(14, 2))
    assert lru.size(0) == 8
    assert lru.cached_nodes(0).tolist() == list(range(12, 20))


@pytest.mark.parametrize("name", ["sage2", "gcn2", "saint2"])
def test_keep_policy_reuses_stale_entries_of_existing_nodes(name, generator):
    """on_new_edges="keep": after new nodes link to old ones, the old nodes' cached layer-0 outputs are the ones
    computed on the graph before (not invalidated); the new nodes' own rows and the last layer are computed on
    the grown graph. Reference: the model's layers over the grown graph with layer 0's old-node rows taken
    from the old graph."""
    from gnnaccel.inference import warm_cache

    n, c = 150, 6
    g, x = _graph(n, generator), torch.randn(n, c, generator=generator)
    model = _model(name, c)
    cache = FeatureCache(n, [model.convs[0].out_channels])
    warm_cache(cache, model, g, x)
    engine = BatchedEngine(model, g, x, cache=cache, on_new_edges="keep")
    state = _State(g, x)
    k = 4
    feats = torch.randn(k, c, generator=generator)
    new = torch.arange(n, n + k)
    old = torch.randint(n - 10, (3 * k,), generator=generator)
    src = new.repeat(3)
    edges = torch.cat([torch.stack([src, old]), torch.stack([old, src])], 1)
    ids = engine.add_nodes(feats, edges)
    state.add(feats, edges)
    assert torch.equal(ids, new)
    hits_before = engine.cache.stats()["hits"]
    got = engine.predict(torch.cat([new, old[:5]]))
    with torch.no_grad():
        h_old = model.layer(0, x, g)
        h_new = model.layer(0, state.x, state.graph())
        h_mix = torch.cat([h_old, h_new[n:]])  # every old node was cached by warm_cache
        h = h_mix
        for i in range(1, len(model.convs)):
            h = model.layer(i, h, state.graph())
        expected = h[torch.cat([new, old[:5]])]
    torch.testing.assert_close(got, expected, **TOL)
    assert engine.cache.stats()["hits"] > hits_before
    # The default policy on the same growth gives full inference on the grown graph, which differs here.
    exact = BatchedEngine(model, g, x, cache=True)
    exact.add_nodes(feats, edges)
    ref = full_inference(model, state.graph(), state.x, progress=False)[torch.cat([new, old[:5]])]
    torch.testing.assert_close(exact.predict(torch.cat([new, old[:5]])), ref, **TOL)
    assert not torch.allclose(got, ref, atol=1e-4)
    # Feature updates still invalidate under "keep" (the reverse graph is built on the first one): the changed
    # nodes and their out-neighbours lose their entries, a node out of their reach keeps its own.
    changed = old[:2]
    reached = torch.cat([changed, state.graph().transpose().col[torch.cat([
        torch.arange(int(state.graph().transpose().rowptr[v]), int(state.graph().transpose().rowptr[v + 1]))
        for v in changed.tolist()])].long()]).unique()
    engine.update_features(changed, torch.randn(2, c, generator=generator))
    hit, _ = engine.cache.lookup(0, reached)
    assert not hit.any()
    isolated = torch.arange(n - 10, n)  # _graph leaves the last 10 nodes isolated: out of every reach
    assert engine.cache.lookup(0, isolated)[0].all()


def test_keep_policy_is_validated(generator):
    g, x = _graph(40, generator), torch.randn(40, 3, generator=generator)
    with pytest.raises(ValueError, match="on_new_edges"):
        BatchedEngine(_model("sage2", 3), g, x, on_new_edges="never")
