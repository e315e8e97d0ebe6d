"""FeatureCache: round trips, LRU vs an OrderedDict model, epochs, statistics, warm start, receptive-field
invalidation vs brute-force BFS and vs the actual dependence of layer outputs, and concurrent hammering."""
from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import random_edge_index
from gnnaccel import Graph
from gnnaccel.cache import FeatureCache, downstream_balls, stale_after_feature_update, stale_after_new_edges


# ---------------------------------------------------------------- basic behaviour
@pytest.mark.parametrize("capacity", [None, 50, 7])
def test_round_trip(capacity, generator):
    cache = FeatureCache(50, [4, 3], capacity=capacity)
    nodes = torch.randperm(50, generator=generator)[:7]
    values = torch.randn(7, 4, generator=generator)
    assert cache.insert(0, nodes, values) == 7
    hit, got = cache.lookup(0, torch.cat([nodes, torch.tensor([nodes[0].item()])]))
    assert hit.all()
    torch.testing.assert_close(got, torch.cat([values, values[:1]]), rtol=0, atol=0)
    hit, got = cache.lookup(1, nodes)  # layers are independent
    assert not hit.any() and (got == 0).all() and got.shape == (7, 3)
    others = torch.tensor([i for i in range(50) if i not in nodes.tolist()][:5])
    hit, got = cache.lookup(0, torch.stack([nodes[2], others[0]]))
    assert hit.tolist() == [True, False]
    assert torch.equal(got[1], torch.zeros(4)) and torch.equal(got[0], values[2])
    assert cache.size(0) == 7 and cache.size(1) == 0 and len(cache) == 7
    assert cache.cached_nodes(0).tolist() == sorted(nodes.tolist())
    # Re-insert overwrites; a node given twice keeps its last value.
    cache.insert(0, torch.stack([nodes[0], nodes[0]]), torch.stack([torch.full((4,), 1.0), torch.full((4,), 2.0)]))
    assert torch.equal(cache.lookup(0, nodes[:1])[1][0], torch.full((4,), 2.0))
    assert cache.invalidate(nodes[:3], layer=0) == 3
    assert cache.lookup(0, nodes)[0].tolist() == [False] * 3 + [True] * 4
    assert cache.invalidate_all() == 4 and len(cache) == 0


@pytest.mark.parametrize("capacity", [None, 30, 6])
def test_distinct_insert_matches_the_general_path(capacity, generator):
    """insert(distinct=True) (the engine's distinct rows) leaves the same entries, LRU order and counters as the
    general path, stale entries included."""
    caches = [FeatureCache(40, [3], capacity=capacity) for _ in range(2)]
    for step in range(6):
        nodes = torch.randperm(40, generator=generator)[: int(torch.randint(1, 12, (), generator=generator))]
        values = torch.randn(nodes.numel(), 3, generator=generator)
        stale = nodes[:1] if step % 2 else nodes[:0]
        tokens = [c.epoch for c in caches]
        for c in caches:
            c.invalidate(stale)
        got = [c.insert(0, nodes, values, since=t, distinct=d) for c, t, d in zip(caches, tokens, (False, True))]
        assert int(got[0]) == int(got[1]) == min(nodes.numel() - stale.numel(), capacity or 40)
        probe = torch.arange(40)
        (h0, v0), (h1, v1) = (c.lookup(0, probe) for c in caches)
        assert torch.equal(h0, h1) and torch.equal(v0, v1)
    s0, s1 = (c.stats() for c in caches)
    assert s0 == s1 and s0["inserts"] > 0


def test_stale_insert_is_dropped():
    cache = FeatureCache(10, [2], capacity=4)
    token = cache.epoch
    cache.invalidate(torch.tensor([3]))
    assert cache.insert(0, torch.tensor([3, 4]), torch.ones(2, 2), since=token) == 1
    assert cache.lookup(0, torch.tensor([3, 4]))[0].tolist() == [False, True]
    token = cache.epoch
    cache.invalidate_all()
    assert cache.insert(0, torch.tensor([5]), torch.ones(1, 2), since=token) == 0
    assert cache.insert(0, torch.tensor([5]), torch.ones(1, 2), since=cache.epoch) == 1
    assert cache.stats()["stale_inserts_dropped"] == 2


def test_stats():
    cache = FeatureCache(20, [2, 2], capacity=3)
    cache.insert(0, torch.tensor([1, 2, 3, 4]), torch.zeros(4, 2))  # 4 into 3 slots: one eviction
    cache.lookup(0, torch.tensor([1, 2, 3, 4, 5]))
    cache.lookup(1, torch.tensor([2]))
    cache.record_support(computed=10, without_cache=40)
    cache.record_support(computed=30, without_cache=40)
    s = cache.stats()
    assert (s["hits"], s["misses"], s["inserts"], s["evictions"]) == (3, 3, 3, 0)
    assert s["per_layer"][0]["hits"] == 3 and s["per_layer"][1]["misses"] == 1 and s["per_layer"][0]["size"] == 3
    assert s["hit_rate"] == 0.5
    assert (s["batches"], s["support_computed"], s["support_without_cache"], s["support_reduction"]) == (2, 40, 80, 2.0)
    cache.insert(0, torch.tensor([7]), torch.zeros(1, 2))
    assert cache.stats()["evictions"] == 1
    cache.reset_stats()
    s = cache.stats()
    assert s["hits"] == s["misses"] == s["batches"] == 0 and s["per_layer"][0]["size"] == 3


def test_support_figures_without_a_switch(generator):
    """stats() counts batches and supporting nodes whenever an engine answers; the figure without the cache
    (an extra expansion per batch) only while track_support is on, and says None otherwise (not a fake 1.0)."""
    from gnnaccel import BatchedEngine
    from gnnaccel.models import GraphSAGE

    cache = FeatureCache(10, [2])
    cache.record_support(computed=5)
    s = cache.stats()
    assert (s["batches"], s["support_computed"], s["support_without_cache"], s["support_reduction"]) == \
        (1, 5, None, None)
    n = 60
    g = Graph.from_edge_index(random_edge_index(n, 300, generator), n)
    x = torch.randn(n, 4, generator=generator)
    model = GraphSAGE(4, 6, 3, num_layers=2).eval()
    engine = BatchedEngine(model, g, x, fanouts=[3, None], cache=True)
    for _ in range(4):
        engine.predict(torch.randint(n, (5,), generator=generator))
    s = engine.cache.stats()
    assert s["batches"] == 4 and s["support_computed"] > 0 and s["support_without_cache"] is None
    engine.cache.reset_stats()
    tracked = FeatureCache(n, [6], track_support=True)
    engine = BatchedEngine(model, g, x, fanouts=[3, None], cache=tracked)
    targets = [torch.randint(n, (5,), generator=generator) for _ in range(4)]
    for t in targets:
        engine.predict(t)
    s = tracked.stats()
    # Without the cache each batch needs the whole 2-hop support of its (distinct) targets: a target given twice
    # is one supporting node.
    from gnnaccel.ops import k_hop_support

    without = sum(k_hop_support(g.rowptr, g.col, torch.unique(t), [3, None], 0)[0].frontier.numel()
                  for t in targets)
    assert s["batches"] == 4 and s["support_without_cache"] == without
    assert s["support_reduction"] == pytest.approx(without / s["support_computed"])


def test_last_occurrence_mask_matches_python(generator):
    from gnnaccel.cache import _last_occurrence_mask

    for size in (0, 1, 2, 17, 300):
        nodes = torch.randint(0, max(1, size // 3), (size,), generator=generator)
        values = nodes.tolist()
        want = [v not in values[k + 1:] for k, v in enumerate(values)]
        assert _last_occurrence_mask(nodes).tolist() == want


_ABSURD_SIZES_SCRIPT = """
from gnnaccel.cache import FeatureCache
for kwargs, word in [(dict(num_nodes=10**12, dims=[8]), "num_nodes=1000000000000"),
                     (dict(num_nodes=10**12, dims=[8], capacity=10), "num_nodes=1000000000000"),
                     (dict(num_nodes=10, dims=[2**40]), "dims=[1099511627776]"),
                     (dict(num_nodes=10**11, dims=[4], capacity=10**12), "num_nodes=100000000000"),
                     (dict(num_nodes=2**40, dims=[4], capacity=2**39), "num_nodes=")]:
    try:
        FeatureCache(**kwargs)
    except ValueError as e:
        assert word in str(e), str(e)
    else:
        raise AssertionError(f"no error for {kwargs}")
print("ok", len(FeatureCache(1000, [4, 4], capacity=10)))
"""


def test_absurd_sizes_name_the_argument():
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", _ABSURD_SIZES_SCRIPT], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok 0"


@pytest.mark.gpu
@pytest.mark.parametrize("capacity", [None, 20])
def test_cuda_cache_state_stays_on_the_device(capacity, generator):
    """On CUDA every table lives on the device, results match a CPU cache, and the dense cache's lookup and
    insert (validate=False) never synchronise with the host."""
    n, dim = 100, 8
    gpu = FeatureCache(n, [dim], capacity=capacity, device="cuda")
    cpu = FeatureCache(n, [dim], capacity=capacity)
    for t in [v for v in vars(gpu._layers[0]).values() if isinstance(v, torch.Tensor)]:
        assert t.device.type == "cuda"
    assert gpu._counts.device.type == "cuda"
    for step in range(30):
        nodes = torch.randint(n, (int(torch.randint(1, 30, (), generator=generator)),), generator=generator)
        values = torch.randn(nodes.numel(), dim, generator=generator)
        token = cpu.epoch
        if step % 7 == 3:
            cpu.invalidate(nodes[:2])
            gpu.invalidate(nodes[:2].cuda())
        assert int(cpu.insert(0, nodes, values, since=token)) == int(gpu.insert(0, nodes.cuda(), values.cuda(),
                                                                                 since=token))
        hit_c, val_c = cpu.lookup(0, nodes)
        hit_g, val_g = gpu.lookup(0, nodes.cuda())
        assert torch.equal(hit_c, hit_g.cpu()) and torch.equal(val_c, val_g.cpu())
    s_c, s_g = cpu.stats(), gpu.stats()
    assert {k: v for k, v in s_c.items()} == {k: v for k, v in s_g.items()}
    if capacity is None:
        nodes = torch.randint(n, (64,), device="cuda")
        values = torch.randn(64, dim, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            token = gpu.epoch
            hit, got = gpu.lookup(0, nodes, validate=False)
            gpu.insert(0, nodes, values, since=token, validate=False)
            gpu.record_support(hit.sum(), None)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("call, error, match", [
    (lambda c: c.lookup(0, torch.tensor([10])), ValueError, r"nodes must be node ids in \[0, 10\)"),
    (lambda c: c.lookup(0, torch.tensor([-1])), ValueError, "nodes must be node ids in"),
    (lambda c: c.lookup(0, torch.tensor([1.0])), TypeError, "nodes must hold integer node ids"),
    (lambda c: c.lookup(0, torch.tensor([True])), TypeError, "nodes must hold integer node ids"),
    (lambda c: c.lookup(0, "1"), TypeError, "nodes must be node ids"),
    (lambda c: c.lookup(0, torch.tensor([1.0]), validate=False), TypeError, "validate=False"),
    (lambda c: c.insert(0, [11], torch.zeros(1, 2)), ValueError, r"\[0, 10\)"),
    (lambda c: c.lookup(2, torch.tensor([1])), ValueError, "layer"),
    (lambda c: c.insert(0, torch.tensor([1]), torch.zeros(1, 3)), ValueError, r"shape \[1, 2\]"),
    (lambda c: c.insert(0, torch.tensor([1, 2]), torch.zeros(1, 2)), ValueError, "shape"),
    (lambda c: c.insert(0, torch.tensor([1]), torch.zeros(1, 2, dtype=torch.long)), TypeError, "floating"),
    (lambda c: c.insert(0, torch.tensor([1]), torch.zeros(1, 2), since=1.5), TypeError, "since"),
    (lambda c: c.invalidate(torch.tensor([[1]])), ValueError, "1-D"),
    (lambda c: FeatureCache(10, []), ValueError, "dims"),
    (lambda c: FeatureCache(10, [0]), ValueError, "dims"),
    (lambda c: FeatureCache(10, [2], capacity=0), ValueError, "capacity"),
    (lambda c: FeatureCache(-1, [2]), ValueError, "num_nodes"),
    (lambda c: c.invalidate_per_layer([None]), ValueError, "one node set per cached layer"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(FeatureCache(10, [2, 3], capacity=4))


def test_node_lists_and_numpy_are_accepted():
    import numpy as np

    cache = FeatureCache(10, [2])
    cache.insert(0, [3, 4], torch.ones(2, 2))
    assert cache.lookup(0, np.array([4, 5]))[0].tolist() == [True, False]
    assert cache.invalidate((3,)) == 1 and cache.cached_nodes(0).tolist() == [4]


# ---------------------------------------------------------------- LRU vs a reference model
class ReferenceLRU:
    """Sequential semantics: each node of a batch is one use, in batch order."""

    def __init__(self, capacity):
        self.capacity, self.entries = capacity, OrderedDict()

    def lookup(self, nodes):
        hits = []
        for n in nodes:
            hits.append(n in self.entries)
            if n in self.entries:
                self.entries.move_to_end(n)
        return hits, [self.entries.get(n) for n in nodes]

    def insert(self, nodes, values):
        for n, v in zip(nodes, values):
            if n in self.entries:
                self.entries.move_to_end(n)
            elif self.capacity is not None and len(self.entries) >= self.capacity:
                self.entries.popitem(last=False)
            self.entries[n] = v

    def invalidate(self, nodes):
        for n in nodes:
            self.entries.pop(n, None)


NUM_NODES = 12
node_lists = st.lists(st.integers(0, NUM_NODES - 1), min_size=0, max_size=9)
operations = st.lists(st.one_of(
    st.tuples(st.just("lookup"), node_lists), st.tuples(st.just("insert"), node_lists),
    st.tuples(st.just("invalidate"), node_lists), st.tuples(st.just("invalidate_all"), st.just([]))),
    min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.one_of(st.none(), st.integers(1, NUM_NODES + 2)), ops=operations)
def test_lru_matches_ordered_dict_model(capacity, ops):
    cache = FeatureCache(NUM_NODES, [2], capacity=capacity)
    ref = ReferenceLRU(capacity)
    for step, (op, nodes) in enumerate(ops):
        t = torch.tensor(nodes, dtype=torch.long)
        if op == "lookup":
            hit, values = cache.lookup(0, t)
            ref_hits, ref_values = ref.lookup(nodes)
            assert hit.tolist() == ref_hits
            for k, v in enumerate(ref_values):
                assert values[k].tolist() == (list(v) if v is not None else [0.0, 0.0])
        elif op == "insert":
            values = [(float(n), float(step * 100 + k)) for k, n in enumerate(nodes)]  # encode node and write
            cache.insert(0, t, torch.tensor(values, dtype=torch.float32).reshape(-1, 2))
            ref.insert(nodes, values)
        elif op == "invalidate":
            cache.invalidate(t)
            ref.invalidate(nodes)
        else:
            cache.invalidate_all()
            ref.entries.clear()
        assert cache.cached_nodes(0).tolist() == sorted(ref.entries)


def test_lru_long_random_run_keeps_queue_bounded(generator):
    """Many hits between evictions: the lazily pruned recency queue stays O(capacity) and exact."""
    capacity = 16
    cache = FeatureCache(200, [1], capacity=capacity)
    ref = ReferenceLRU(capacity)
    for step in range(600):
        nodes = torch.randint(0, 40 if step % 3 else 200, (int(torch.randint(1, 12, (), generator=generator)),),
                              generator=generator)
        if step % 2:
            cache.lookup(0, nodes)
            ref.lookup(nodes.tolist())
        else:
            cache.insert(0, nodes, nodes.float().unsqueeze(1))
            ref.insert(nodes.tolist(), [(float(n),) for n in nodes.tolist()])
        assert cache.cached_nodes(0).tolist() == sorted(ref.entries)
    assert cache._layers[0].queue_slot.numel() <= 4 * capacity + 64


# ---------------------------------------------------------------- warm start
def _sage_reference_hidden(model, g, x):
    """Layer-0 output of a 2-layer gnnaccel GraphSAGE (mean, root weight, ReLU between layers) in dense float64:
    an independent reimplementation from the edge list and the layer's parameters."""
    conv = model.convs[0]
    n = g.num_nodes
    adj = torch.zeros(n, n, dtype=torch.float64)
    ei = g.edge_index
    adj.index_put_((ei[1], ei[0]), torch.ones(ei.shape[1], dtype=torch.float64), accumulate=True)
    mean = adj / adj.sum(1, keepdim=True).clamp_min(1)
    lin_l, bias, lin_r = (t.detach().double() for t in (conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight))
    return torch.relu((mean @ x.double()) @ lin_l.t() + x.double() @ lin_r.t() + bias)


@pytest.mark.parametrize("capacity", [None, 10])
def test_warm_cache(capacity, generator):
    from gnnaccel.inference import full_inference, warm_cache
    from gnnaccel.models import GraphSAGE

    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 200, generator, power_law=True), n)
    x = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    model = GraphSAGE(5, 6, 3, num_layers=2).double().eval()
    cache = FeatureCache(n, [6], capacity=capacity, dtype=torch.float64)
    out = warm_cache(cache, model, g, x)
    torch.testing.assert_close(out, full_inference(model, g, x, progress=False))
    cached = cache.cached_nodes(0)
    if capacity is None:
        assert cached.tolist() == list(range(n))
    else:
        degree = g.out_degree()
        assert cached.numel() == capacity
        assert degree[cached].min() >= degree.sort(descending=True).values[capacity - 1]  # the hubs are kept
    hit, values = cache.lookup(0, cached)
    assert hit.all()
    torch.testing.assert_close(values, _sage_reference_hidden(model, g, x)[cached])
    cache.check_owner(model, x)  # bound to what it was warmed with
    partial = FeatureCache(n, [6], dtype=torch.float64)
    warm_cache(partial, model, g, x, nodes=torch.tensor([3, 9]))
    assert partial.cached_nodes(0).tolist() == [3, 9]
    with pytest.raises(ValueError, match="nodes"):
        warm_cache(FeatureCache(n + 1, [6]), model, g, x)
    with pytest.raises(ValueError, match="hidden layer 0 has shape"):
        warm_cache(FeatureCache(n, [7], dtype=torch.float64), model, g, x)
    with pytest.raises(TypeError, match="FeatureCache"):
        warm_cache(object(), model, g, x)


def test_cache_runs_no_model():
    """cache.py imports nothing that runs a model (issue 12 item 8): no engine, no model, no layer modules."""
    import ast
    from pathlib import Path

    import gnnaccel.cache as cache_module

    tree = ast.parse(Path(cache_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update((0, alias.name) for alias in node.names)
    forbidden = ("inference", "batched", "models", "nn", "pruning", "serialize")
    for level, module in imported:
        name = module.split(".")[0] if level else module.removeprefix("gnnaccel.").split(".")[0]
        assert name not in forbidden, f"gnnaccel.cache imports {module!r}"
    assert not hasattr(FeatureCache, "warm")


# ---------------------------------------------------------------- ownership (issue 13 item 6)
def test_cache_refuses_another_model_or_other_features(generator):
    from gnnaccel import BatchedEngine
    from gnnaccel.inference import warm_cache
    from gnnaccel.models import GraphSAGE

    n = 50
    g = Graph.from_edge_index(random_edge_index(n, 250, generator), n)
    x = torch.randn(n, 4, generator=generator)
    model = GraphSAGE(4, 6, 3, num_layers=2).eval()
    cache = FeatureCache(n, [6])
    warm_cache(cache, model, g, x)
    targets = torch.tensor([0, 7, 7, 49])
    expected = BatchedEngine(model, g, x).predict(targets)
    torch.testing.assert_close(BatchedEngine(model, g, x, cache=cache).predict(targets), expected)
    other = GraphSAGE(4, 6, 3, num_layers=2).eval()  # same shapes, other weights: served wrongly before
    with pytest.raises(ValueError, match="another model"):
        BatchedEngine(other, g, x, cache=cache)
    with pytest.raises(ValueError, match="other node features"):
        BatchedEngine(model, g, x.clone(), cache=cache)
    with torch.no_grad():
        model.convs[0].lin_l.weight.add_(1.0)
    with pytest.raises(ValueError, match="parameters or buffers changed"):
        BatchedEngine(model, g, x, cache=cache)
    model2 = GraphSAGE(4, 6, 3, num_layers=2).eval()
    x2 = torch.randn(n, 4, generator=generator)
    cache2 = FeatureCache(n, [6])
    warm_cache(cache2, model2, g, x2)
    x2[3] += 1.0  # in place, after warming
    with pytest.raises(ValueError, match="were modified"):
        BatchedEngine(model2, g, x2, cache=cache2)
    # invalidate_all forgets the owner; re-warming with the new owner works too.
    cache2.invalidate_all()
    engine = BatchedEngine(model2, g, x2, cache=cache2)
    torch.testing.assert_close(engine.predict(targets), BatchedEngine(model2, g, x2).predict(targets))
    warm_cache(cache, other, g, x)
    torch.testing.assert_close(BatchedEngine(other, g, x, cache=cache).predict(targets),
                               BatchedEngine(other, g, x).predict(targets))


def test_engine_updates_keep_the_cache_bound(generator):
    """After engine.update_features the cache is bound to the engine's own copy of the features: a new engine
    on the caller's (now stale) x is refused, the updating engine keeps answering exactly."""
    from gnnaccel import BatchedEngine
    from gnnaccel.models import GraphSAGE

    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 160, generator), n)
    x = torch.randn(n, 3, generator=generator)
    model = GraphSAGE(3, 5, 2, num_layers=2).eval()
    cache = FeatureCache(n, [5])
    engine = BatchedEngine(model, g, x, cache=cache)
    targets = torch.arange(n)
    engine.predict(targets)
    engine.update_features(torch.tensor([4]), torch.ones(1, 3))
    x_new = x.clone()
    x_new[4] = 1.0
    torch.testing.assert_close(engine.predict(targets), BatchedEngine(model, g, x_new).predict(targets))
    with pytest.raises(ValueError, match="other node features"):
        BatchedEngine(model, g, x, cache=cache)


# ---------------------------------------------------------------- receptive fields
def _bfs_balls(edge_index, num_nodes, sources, hops):
    out_neighbours = [[] for _ in range(num_nodes)]
    for j, i in edge_index.t().tolist():
        out_neighbours[j].append(i)
    seen = set(sources)
    balls, layer = [set(seen)], set(seen)
    for _ in range(hops):
        layer = {i for j in layer for i in out_neighbours[j]} - seen
        seen |= layer
        balls.append(set(seen))
    return balls


@pytest.mark.parametrize("kind", ["uniform", "power_law", "hub"])
def test_downstream_balls_match_bfs(kind, generator):
    n = 150
    ei = random_edge_index(n, 300, generator, power_law=kind == "power_law", hub=kind == "hub")
    g = Graph.from_edge_index(ei, n)
    sources = torch.randint(n, (4,), generator=generator)
    balls = downstream_balls(g, sources, 4)
    for got, want in zip(balls, _bfs_balls(ei, n, sources.tolist(), 4)):
        assert sorted(got.tolist()) == sorted(want)
        assert got.unique().numel() == got.numel()
    empty = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 5)
    assert [b.tolist() for b in downstream_balls(empty, torch.tensor([2, 2]), 2)] == [[2]] * 3


def test_reverse_csr_follows_graph_changes(generator):
    """The memoised reverse CSR is rebuilt after an in-place write to the graph (Graph.cached), so the
    receptive fields never come from a stale transpose."""
    from gnnaccel.cache import reverse_csr

    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 120, generator), n)
    first = reverse_csr(g)
    assert reverse_csr(g) is first  # memoised
    g.col[:10] = (g.col[:10] + 1) % n  # rewire ten edges in place
    ei = g.edge_index
    sources = torch.tensor([int(g.col[0]), 7])
    for got, want in zip(downstream_balls(g, sources, 3), _bfs_balls(ei, n, sources.tolist(), 3)):
        assert sorted(got.tolist()) == sorted(want)


def _mean_layers(g, x, num_layers):
    hidden, h = [], x
    for _ in range(num_layers):
        h = torch.tanh(g.aggregate(h, "mean") + 0.5 * h)
        hidden.append(h)
    return hidden


def _gcn_layers(edge_index, n, x, num_layers):
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1], dtype=torch.float64),
                   accumulate=True)
    adj += torch.eye(n, dtype=torch.float64)
    d = adj.sum(1).rsqrt()
    norm = d[:, None] * adj * d[None, :]
    hidden, h = [], x
    for _ in range(num_layers):
        h = torch.tanh(norm @ h)
        hidden.append(h)
    return hidden


def _changed_rows(before, after):
    return set(torch.nonzero((before - after).abs().amax(1) > 0).flatten().tolist())


def test_feature_update_invalidates_exactly_the_dependent_nodes(generator):
    n = 120
    ei = random_edge_index(n, 250, generator)
    g = Graph.from_edge_index(ei, n)
    x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    changed = torch.randint(n, (3,), generator=generator)
    stale = stale_after_feature_update(g, changed, 3)
    x2 = x.clone()
    x2[changed] += torch.randn(changed.numel(), 3, generator=generator, dtype=torch.float64)
    for l, (h, h2) in enumerate(zip(_mean_layers(g, x, 3), _mean_layers(g, x2, 3))):
        assert sorted(stale[l].tolist()) == sorted(_bfs_balls(ei, n, changed.tolist(), l + 1)[-1])
        assert _changed_rows(h, h2) <= set(stale[l].tolist())  # nothing that changed is left valid


@pytest.mark.parametrize("gcn", [False, True])
def test_new_edges_invalidate_every_changed_output(gcn, generator):
    n = 100
    ei = random_edge_index(n, 180, generator)
    new = random_edge_index(n, 3, generator)
    after = torch.cat([ei, new], 1)
    g_after = Graph.from_edge_index(after, n)
    x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    if gcn:
        before_h, after_h = _gcn_layers(ei, n, x, 3), _gcn_layers(after, n, x, 3)
    else:
        before_h = _mean_layers(Graph.from_edge_index(ei, n), x, 3)
        after_h = _mean_layers(g_after, x, 3)
    stale = stale_after_new_edges(g_after, new, 3, degree_normalised=gcn)
    for l in range(3):
        assert _changed_rows(before_h[l], after_h[l]) <= set(stale[l].tolist())
        want = _bfs_balls(after, n, new[1].tolist(), l + int(gcn))[-1]
        assert sorted(stale[l].tolist()) == sorted(want)


def test_invalidate_after_update(generator):
    n = 60
    ei = random_edge_index(n, 150, generator)
    g = Graph.from_edge_index(ei, n)
    cache = FeatureCache(n, [2, 2])
    for l in range(2):
        cache.insert(l, torch.arange(n), torch.zeros(n, 2))
    changed, new = torch.tensor([5]), torch.tensor([[1], [9]])
    cache.invalidate_after_update(g, changed_nodes=changed, new_edge_index=new)
    feature_stale = stale_after_feature_update(g, changed, 2)
    edge_stale = stale_after_new_edges(g, new, 2)
    for l in range(2):
        expected = set(range(n)) - set(feature_stale[l].tolist()) - set(edge_stale[l].tolist())
        assert set(cache.cached_nodes(l).tolist()) == expected


# ---------------------------------------------------------------- concurrency
@pytest.mark.parametrize("capacity", [None, 24])
def test_threads_never_see_torn_or_stale_values(capacity):
    """Writers insert values that encode (node, version) in every column; an updater bumps versions and
    invalidates; readers check each hit is whole (all columns agree) and not older than the last version
    published before the lookup began."""
    n, dim = 64, 256
    cache = FeatureCache(n, [dim], capacity=capacity, dtype=torch.float64)  # exact integer encoding
    current = [0] * n    # the true version of each node's feature
    published = [0] * n  # versions whose invalidation has completed
    stop = threading.Event()
    errors = []

    def value_rows(nodes, versions):
        base = nodes.double() * 1e6 + versions.double()
        return base.unsqueeze(1).expand(-1, dim).contiguous()

    def writer(seed):
        g = torch.Generator().manual_seed(seed)
        while not stop.is_set():
            nodes = torch.randint(n, (16,), generator=g)
            token = cache.epoch  # read before the "features"
            versions = torch.tensor([current[i] for i in nodes.tolist()])
            cache.insert(0, nodes, value_rows(nodes, versions), since=token)

    def updater(seed):
        g = torch.Generator().manual_seed(seed)
        while not stop.is_set():
            node = int(torch.randint(n, (), generator=g))
            current[node] += 1
            cache.invalidate(torch.tensor([node]))
            published[node] = current[node]

    def reader(seed):
        g = torch.Generator().manual_seed(seed)
        try:
            for _ in range(400):
                nodes = torch.randint(n, (16,), generator=g)
                floor = [published[i] for i in nodes.tolist()]
                hit, values = cache.lookup(0, nodes)
                for k in torch.nonzero(hit).flatten().tolist():
                    row = values[k]
                    assert (row == row[0]).all(), "torn entry"
                    node, version = divmod(int(row[0].item()), 1_000_000)
                    assert node == int(nodes[k]), "entry of another node"
                    assert version >= floor[k], f"stale entry: version {version} < published {floor[k]}"
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    threads.append(threading.Thread(target=updater, args=(7,)))
    readers = [threading.Thread(target=reader, args=(10 + s,)) for s in range(3)]
    for t in threads + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    s = cache.stats()
    assert s["hits"] > 0 and s["inserts"] > 0 and s["invalidated"] > 0


# ---------------------------------------------------------------- the engine's flow, on plain tensors
def test_batched_flow_with_cache_equals_full_inference(generator):
    """The BatchedEngine recipe for a 2-layer mean model: targets -> S1 (all neighbours) -> lookup S1 in the
    cache -> expand only the uncached part of S1 (skip mask) -> layer 0 on those rows only -> layer 1 on the
    targets. Must equal full inference, batch after batch, with a bounded cache and after a feature update."""
    from gnnaccel.ops import aggregate, expand_hop

    n = 300
    ei = random_edge_index(n, 2000, generator, power_law=True)
    g = Graph.from_edge_index(ei, n)
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    w0, r0 = torch.randn(6, 5, generator=generator, dtype=torch.float64), torch.randn(6, 5, generator=generator,
                                                                                      dtype=torch.float64)
    w1, r1 = torch.randn(5, 3, generator=generator, dtype=torch.float64), torch.randn(5, 3, generator=generator,
                                                                                      dtype=torch.float64)

    def full(x):
        h = torch.relu(g.aggregate(x, "mean") @ w0 + x @ r0)
        return g.aggregate(h, "mean") @ w1 + h @ r1

    cache = FeatureCache(n, [5], capacity=120, dtype=torch.float64)

    def predict(targets, x):
        hop1 = expand_hop(g.rowptr, g.col, targets)  # S1 = hop1.frontier, targets first
        s1 = hop1.frontier
        token = cache.epoch
        hit, h1 = cache.lookup(0, s1)
        hop0 = expand_hop(g.rowptr, g.col, s1, -1, 0, skip=hit)  # cached nodes are not expanded
        rows = torch.nonzero(~hit).flatten()
        # Layer 0 reads raw features straight from x through the global source ids (no gather of S2).
        neigh = aggregate(hop0.rowptr, g.col[hop0.edge_ids], x, "mean", rows=rows)
        h1_new = torch.relu(neigh @ w0 + x[s1[rows]] @ r0)
        h1[rows] = h1_new
        cache.insert(0, s1[rows], h1_new, since=token)
        without = expand_hop(g.rowptr, g.col, s1).frontier.numel()
        cache.record_support(computed=hop0.frontier.numel() - int(hit.sum()), without_cache=without)
        return aggregate(hop1.rowptr, hop1.col, h1, "mean") @ w1 + h1[: targets.numel()] @ r1

    for step in range(12):
        targets = torch.randint(n, (int(torch.randint(1, 20, (), generator=generator)),), generator=generator)
        if step == 6:  # a feature update: write the features, then invalidate their receptive field
            changed = torch.randint(n, (4,), generator=generator)
            x = x.clone()
            x[changed] += 1.0
            cache.invalidate_after_update(g, changed_nodes=changed)
        torch.testing.assert_close(predict(targets, x), full(x)[targets])
    s = cache.stats()
    assert s["hits"] > 0 and s["support_reduction"] > 1.0
