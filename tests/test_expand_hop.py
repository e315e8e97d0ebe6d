"""gnnaccel.ops.expand_hop / k_hop_support against a pure-Python reference, plus exactness, sampling and errors."""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from conftest import dense_aggregate, random_edge_index
from gnnaccel import Graph
from gnnaccel.ops import aggregate, expand_hop, hop_random_seed, k_hop_support

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _reference_draws(random_seed: int, node: int, degree: int, fanout: int):
    """The documented sampler: draw t of node v = Lemire(mix64(key_v + (t+1)·golden), degree)."""
    seed_key = _mix64((random_seed + GOLDEN) & M64)
    node_key = _mix64(seed_key ^ ((node * GOLDEN + GOLDEN) & M64))
    return [(_mix64((node_key + (t + 1) * GOLDEN) & M64) * degree) >> 64 for t in range(fanout)]


def reference_hop(rowptr, col, seeds, fanout=-1, random_seed=0, skip=None):
    """Pure-Python one hop: per seed its edges (all / sampled), then first-seen de-duplication after the seeds."""
    rowptr, col, seeds = rowptr.tolist(), col.tolist(), seeds.tolist()
    skip = skip.tolist() if skip is not None else [False] * len(seeds)
    frontier = list(seeds)
    position = {}
    for r, v in enumerate(seeds):
        position.setdefault(v, r)
    local_rowptr, local_col, edge_ids = [0], [], []
    for r, v in enumerate(seeds):
        begin, end = rowptr[v], rowptr[v + 1]
        if skip[r] or end == begin:
            ids = []
        elif fanout < 0:
            ids = list(range(begin, end))
        else:
            ids = [begin + d for d in _reference_draws(random_seed % (1 << 64), v, end - begin, fanout)]
        for e in ids:
            u = col[e]
            if u not in position:
                position[u] = len(frontier)
                frontier.append(u)
            local_col.append(position[u])
            edge_ids.append(e)
        local_rowptr.append(len(local_col))
    return frontier, local_rowptr, local_col, edge_ids


def _random_graph(generator, n=60, e=300, **kw):
    return Graph.from_edge_index(random_edge_index(n, e, generator, **kw), n)


def _check_against_reference(g, seeds, fanout, random_seed=0, skip=None):
    block = expand_hop(g.rowptr, g.col, seeds, fanout, random_seed, skip)
    frontier, local_rowptr, local_col, edge_ids = reference_hop(g.rowptr, g.col, seeds, fanout, random_seed, skip)
    assert block.frontier.tolist() == frontier
    assert block.rowptr.tolist() == local_rowptr
    assert block.col.tolist() == local_col
    assert block.edge_ids.tolist() == edge_ids
    for t in block:
        assert t.dtype == g.rowptr.dtype
    # Invariants the engine relies on.
    assert torch.equal(block.frontier[: seeds.numel()], seeds.to(g.rowptr.dtype))
    assert torch.equal(block.frontier[block.col.long()], g.col[block.edge_ids.long()])
    new = block.frontier[seeds.numel():]
    assert new.unique().numel() == new.numel()
    assert not torch.isin(new, seeds).any()
    return block


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("fanout", [-1, 0, 1, 4, 40])
@pytest.mark.parametrize("kind", ["uniform", "power_law", "hub"])
def test_matches_reference(index_dtype, fanout, kind, generator):
    g = _random_graph(generator, power_law=kind == "power_law", hub=kind == "hub").to(index_dtype=index_dtype)
    for batch in (1, 7, 60):
        seeds = torch.randint(g.num_nodes, (batch,), generator=generator).to(index_dtype)  # duplicates likely
        skip = torch.rand(batch, generator=generator) < 0.3
        random_seed = int(torch.randint(-2**62, 2**62, (), generator=generator))
        _check_against_reference(g, seeds, fanout, random_seed)
        _check_against_reference(g, seeds, fanout, random_seed, skip)


def test_hash_and_dense_dedup_paths_agree(generator):
    # A small batch on a big graph takes the hash table; a big one the dense array: both must match the reference.
    g = _random_graph(generator, n=5000, e=20000)
    _check_against_reference(g, torch.randint(5000, (3,), generator=generator), -1)
    _check_against_reference(g, torch.randint(5000, (3000,), generator=generator), -1)
    _check_against_reference(g, torch.randint(5000, (3,), generator=generator), 8, 5)


def test_edge_cases():
    # Self loops, duplicate edges, isolated nodes, duplicate seeds.
    ei = torch.tensor([[0, 0, 1, 1, 2, 3], [0, 1, 2, 2, 2, 0]])
    g = Graph.from_edge_index(ei, 6)  # nodes 4, 5 isolated
    seeds = torch.tensor([2, 4, 2, 0])
    block = _check_against_reference(g, seeds, -1)
    # row 0 (node 2): edges from 1, 1, 2 -> positions of 1 (new, 4) and 2 (seed, 0); row 1 (node 4) empty.
    assert block.frontier.tolist() == [2, 4, 2, 0, 1, 3]
    assert block.rowptr.tolist() == [0, 3, 3, 6, 8]
    assert block.col.tolist() == [4, 4, 0, 4, 4, 0, 3, 5]
    for fanout in (0, 3):
        _check_against_reference(g, seeds, fanout, 11)
    # Isolated seeds only: no edges, frontier = seeds.
    block = _check_against_reference(g, torch.tensor([5, 4]), 7, 1)
    assert block.col.numel() == 0 and block.rowptr.tolist() == [0, 0, 0]
    # Graph without edges, and with no nodes at all (only an empty batch is valid there).
    _check_against_reference(Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 3), torch.tensor([1]), -1)
    empty = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 0)
    block = expand_hop(empty.rowptr, empty.col, torch.empty(0, dtype=torch.long))
    assert [t.numel() for t in block] == [0, 1, 0, 0]
    # All seeds skipped.
    block = expand_hop(g.rowptr, g.col, seeds, -1, 0, torch.ones(4, dtype=torch.bool))
    assert block.frontier.tolist() == seeds.tolist() and block.col.numel() == 0


# ---------------------------------------------------------------- exactness of the support for aggregation
@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_full_fanout_block_aggregates_exactly(reduce, generator):
    g = _random_graph(generator, n=80, e=500, power_law=True)
    x = torch.randn(g.num_nodes, 6, generator=generator, dtype=torch.float64)
    seeds = torch.randint(g.num_nodes, (25,), generator=generator)
    block = expand_hop(g.rowptr, g.col, seeds)
    local = aggregate(block.rowptr, block.col, x[block.frontier], reduce)
    expected = dense_aggregate(g.edge_index, g.num_nodes, x, reduce)[seeds]
    torch.testing.assert_close(local, expected)


def test_two_hop_support_composes_exactly(generator):
    """mean(mean(x)) at the targets from the compact buffers equals the full-graph result."""
    g = _random_graph(generator, n=120, e=700, hub=True)
    x = torch.randn(g.num_nodes, 5, generator=generator, dtype=torch.float64)
    targets = torch.randint(g.num_nodes, (9,), generator=generator)
    outer, inner = k_hop_support(g.rowptr, g.col, targets, [None, -1])
    assert torch.equal(inner.frontier[: targets.numel()], targets)
    assert torch.equal(outer.frontier[: inner.frontier.numel()], inner.frontier)  # seeds of layer 0 = S1
    h1 = torch.tanh(aggregate(outer.rowptr, outer.col, x[outer.frontier], "mean") + x[inner.frontier])
    out = aggregate(inner.rowptr, inner.col, h1, "mean") + h1[: targets.numel()]
    full_h1 = torch.tanh(dense_aggregate(g.edge_index, g.num_nodes, x, "mean") + x)
    full = dense_aggregate(g.edge_index, g.num_nodes, full_h1, "mean") + full_h1
    torch.testing.assert_close(out, full[targets])


def test_skip_then_expand_rest_matches_full_support(generator):
    """The cache pattern: expanding only the uncached seeds of S1 reaches exactly their neighbourhoods."""
    g = _random_graph(generator, n=100, e=600)
    s1 = expand_hop(g.rowptr, g.col, torch.tensor([3, 50, 7])).frontier
    cached = torch.rand(s1.numel(), generator=generator) < 0.5
    block = expand_hop(g.rowptr, g.col, s1, -1, 0, cached)
    full = expand_hop(g.rowptr, g.col, s1)
    for r in range(s1.numel()):
        got = block.frontier[block.col[block.rowptr[r]:block.rowptr[r + 1]]]
        want = full.frontier[full.col[full.rowptr[r]:full.rowptr[r + 1]]]
        assert got.tolist() == ([] if cached[r] else want.tolist())


# ---------------------------------------------------------------- sampling
def test_sampling_is_deterministic_and_batch_independent(generator):
    g = _random_graph(generator, n=200, e=3000)
    seeds = torch.randint(g.num_nodes, (50,), generator=generator)
    a = expand_hop(g.rowptr, g.col, seeds, 16, 1234)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = expand_hop(g.rowptr, g.col, seeds, 16, 1234)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # Node v draws the same edges whatever else is in the batch.
    alone = expand_hop(g.rowptr, g.col, seeds[7:8], 16, 1234)
    assert torch.equal(alone.edge_ids, a.edge_ids[a.rowptr[7]:a.rowptr[8]])
    # Another seed draws differently.
    c = expand_hop(g.rowptr, g.col, seeds, 16, 1235)
    assert not torch.equal(a.edge_ids, c.edge_ids)
    # Per-layer seeds differ.
    assert len({hop_random_seed(7, layer) for layer in range(4)}) == 4


def _chi_square(counts):
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_is_uniform_on_a_star():
    """Counts of each neighbour of a hub, over many seeds and over many draws, pass a chi-square bound."""
    degree = 12
    ei = torch.stack([torch.arange(1, degree + 1), torch.zeros(degree, dtype=torch.long)])
    g = Graph.from_edge_index(ei, degree + 1)
    hub = torch.tensor([0])
    # Across random seeds (one draw each) and within one seed (many draws).
    across = torch.stack([expand_hop(g.rowptr, g.col, hub, 1, s).edge_ids for s in range(6000)]).flatten()
    within = expand_hop(g.rowptr, g.col, hub, 60000, 99).edge_ids
    df = degree - 1
    bound = df + 6 * math.sqrt(2 * df)  # ~6 sigma of the chi-square(df) law: p < 1e-5
    for draws in (across, within):
        counts = torch.bincount(draws, minlength=degree).double()
        assert counts.numel() == degree
        assert _chi_square(counts) < bound, counts
    # And a sampled mean is unbiased: the average of many sampled aggregations approaches the exact mean.
    x = torch.randn(degree + 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    means = [aggregate(b.rowptr, b.col, x[b.frontier], "mean")
             for b in (expand_hop(g.rowptr, g.col, hub, 8, s) for s in range(3000))]
    exact = x[1:].mean(0, keepdim=True)
    torch.testing.assert_close(torch.stack(means).mean(0), exact, atol=0.03, rtol=0)


# ---------------------------------------------------------------- bad inputs
def _g():
    return Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)


@pytest.mark.parametrize("call, error, match", [
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([3])), ValueError, r"seeds must be node ids in \[0, 3\)"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([-1])), ValueError, "seeds must be node ids"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([1.0])), TypeError, "seeds must be an int32 or int64"),
    (lambda g: expand_hop(g.rowptr, g.col, [0]), TypeError, "seeds must be a torch.Tensor"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([[0]])), ValueError, "seeds must be 1-D"),
    (lambda g: expand_hop(g.rowptr, g.col.int(), torch.tensor([0])), TypeError, "share a dtype"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([0]), -2), ValueError, "fanout"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([0]), 2.5), TypeError, "fanout"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([0]), 2, 1.5), TypeError, "random_seed"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([0]), skip=torch.tensor([1])), TypeError, "skip"),
    (lambda g: expand_hop(g.rowptr, g.col, torch.tensor([0]), skip=torch.tensor([True, False])), ValueError, "skip"),
    (lambda g: k_hop_support(g.rowptr, g.col, torch.tensor([], dtype=torch.long), [-1]), ValueError, "empty"),
    (lambda g: k_hop_support(g.rowptr, g.col, torch.tensor([0]), []), ValueError, "fanouts"),
    # The C++ checks behind the Python ones (direct op calls).
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr, g.col, torch.tensor([5]), -1, 0, None), RuntimeError,
     r"seeds holds a node outside \[0, 3\)"),
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr, torch.tensor([0, 9, 1]), torch.tensor([1]), -1, 0, None),
     RuntimeError, "col holds an index outside"),
    (lambda g: torch.ops.gnnaccel.expand_hop(torch.tensor([0, 2, 1, 3]), g.col, torch.tensor([1]), -1, 0, None),
     RuntimeError, "rowptr is not non-decreasing"),
    (lambda g: torch.ops.gnnaccel.expand_hop(torch.tensor([0, 1, 2, 4]), g.col, torch.tensor([1]), -1, 0, None),
     RuntimeError, "end at col.numel"),
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr, g.col, torch.tensor([1]), -3, 0, None), RuntimeError,
     "fanout"),
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr, g.col, torch.tensor([1], dtype=torch.int32), -1, 0, None),
     RuntimeError, "seeds dtype"),
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr.float(), g.col, torch.tensor([1]), -1, 0, None),
     RuntimeError, "rowptr must be int32 or int64"),
    (lambda g: torch.ops.gnnaccel.expand_hop(g.rowptr, g.col, torch.tensor([1]), -1, 0, torch.tensor([1])),
     RuntimeError, "skip must be a bool mask"),
])
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(_g())


# ---------------------------------------------------------------- op registration
def test_opcheck(generator):
    g = _random_graph(generator, n=30, e=120)
    seeds = torch.tensor([4, 0, 4, 29])
    samples = [
        (g.rowptr, g.col, seeds, -1, 0, None),
        (g.rowptr, g.col, seeds, 5, 17, torch.tensor([False, True, False, False])),
        (g.rowptr.int(), g.col.int(), seeds.int(), 3, -4, None),
        (g.rowptr, g.col, torch.empty(0, dtype=torch.long), -1, 0, None),
    ]
    for args in samples:
        # All four default utils, test_aot_dispatch_dynamic included: the fake kernel's unbacked output sizes
        # (new_dynamic_size) let AOT dispatch trace the op with symbolic inputs.
        result = torch.library.opcheck(torch.ops.gnnaccel.expand_hop.default, args)
        assert set(result) >= {"test_schema", "test_faketensor", "test_aot_dispatch_dynamic"}


def test_traces_with_dynamic_output_sizes(generator):
    """The op is eager-only in spirit, but a compiled region that contains it still traces and runs correctly."""
    torch._dynamo.reset()
    g = _random_graph(generator, n=40, e=200)
    x = torch.randn(g.num_nodes, 4, generator=generator)
    seeds = torch.tensor([1, 5, 9])

    def fn(rowptr, col, seeds, x):
        frontier, local_rowptr, local_col, _ = torch.ops.gnnaccel.expand_hop(rowptr, col, seeds, -1, 0, None)
        return aggregate(local_rowptr, local_col, x[frontier], "mean")

    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(fn, fullgraph=True)
        torch.testing.assert_close(compiled(g.rowptr, g.col, seeds, x), fn(g.rowptr, g.col, seeds, x))


def test_concurrent_calls_agree(generator):
    """The op keeps no state between calls (no shared marker array): threads calling it at once get the same
    blocks as sequential calls."""
    import threading

    g = _random_graph(generator, n=3000, e=40000)
    batches = [torch.randint(g.num_nodes, (b,), generator=generator) for b in (1, 5, 40, 400, 2500) * 4]
    expected = [expand_hop(g.rowptr, g.col, s, 7, k) for k, s in enumerate(batches)]
    results = [None] * len(batches)

    def work(k):
        for _ in range(5):
            results[k] = expand_hop(g.rowptr, g.col, batches[k], 7, k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert all(torch.equal(a, b) for a, b in zip(got, want))


# ---------------------------------------------------------------- absurd sizes (issue 13 item 1)
def _run_isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter (from the repository root) so that a crash fails the test instead of
    killing pytest; returns its stdout after checking it exited cleanly."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


_HUGE_FANOUT_SCRIPT = """
import torch
from gnnaccel import Graph
from gnnaccel.ops import expand_hop, k_hop_support

g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 3, 1], [1, 2, 0, 0, 0]]), 4)
seeds = torch.tensor([0, 1, 2, 0])

def expect(fn, exc, *words):
    try:
        fn()
    except exc as e:
        message = str(e)
        assert all(w in message for w in words), message
        print("raised:", type(e).__name__, message.splitlines()[0])
    else:
        raise AssertionError("no error")

for dtype in (torch.int64, torch.int32):
    rp, col = g.rowptr.to(dtype), g.col.to(dtype)
    s = seeds.to(dtype)
    # The running total of sampled slots overflows int64 (2**62 * 4): checked before anything is allocated.
    expect(lambda: expand_hop(rp, col, s, 2**62), RuntimeError, "fanout=4611686018427387904")
    expect(lambda: torch.ops.gnnaccel.expand_hop(rp, col, s, 2**62, 0, None), RuntimeError, "fanout=")
    expect(lambda: torch.ops.gnnaccel.expand_hop(rp, col, s, 2**63 - 1, 0, None), RuntimeError, "fanout=")
    # No overflow, but far beyond the machine's memory (2**40 * 4 slots) or the index dtype.
    expect(lambda: expand_hop(rp, col, s, 2**40), RuntimeError, "fanout=1099511627776")
    expect(lambda: k_hop_support(rp, col, s, [2**62, 2**62]), RuntimeError, "fanout=")
    # Beyond int64: the Python entry says so (not the schema's conversion error).
    expect(lambda: expand_hop(rp, col, s, 2**64), ValueError, "fanout")
# int32 graphs: a fanout past 2**31 cannot be indexed.
expect(lambda: expand_hop(g.rowptr.int(), g.col.int(), seeds.int(), 2**31), RuntimeError, "fanout=", "int64")
# The same seeds with a sane fanout still work after the errors.
print("ok", expand_hop(g.rowptr, g.col, seeds, 3, 1).edge_ids.numel())
"""


def test_huge_fanout_raises_instead_of_crashing():
    out = _run_isolated(_HUGE_FANOUT_SCRIPT)
    assert out.strip().splitlines()[-1] == "ok 12"  # 4 seeds with neighbours x 3 draws


_HUGE_FANOUT_ENGINE_SCRIPT = """
import torch
from gnnaccel import BatchedEngine, Graph
from gnnaccel.models import GraphSAGE

torch.manual_seed(0)
g = Graph.from_edge_index(torch.randint(30, (2, 120)), 30)
x = torch.randn(30, 5)
model = GraphSAGE(5, 8, 3, num_layers=2).eval()
engine = BatchedEngine(model, g, x, fanouts=[2**62, 2**62])
try:
    engine.predict(torch.tensor([0, 1, 2]))
except (RuntimeError, ValueError) as e:
    assert "fanout" in str(e), str(e)
    print("raised", type(e).__name__)
else:
    raise AssertionError("no error")
print("ok", tuple(BatchedEngine(model, g, x, fanouts=[4, 4]).predict(torch.tensor([0, 1, 2])).shape))
"""


def test_engine_with_huge_fanouts_raises_instead_of_crashing():
    out = _run_isolated(_HUGE_FANOUT_ENGINE_SCRIPT)
    assert out.strip().splitlines()[-1] == "ok (3, 3)"


# ---------------------------------------------------------------- the device algorithm (composition = CUDA kernel's steps)
def _cpu_kernel_block(g_rowptr, g_col, seeds, fanout, random_seed, skip):
    return torch.ops.gnnaccel.expand_hop(g_rowptr, g_col, seeds, fanout, random_seed, skip)


def _assert_same_block(got, want):
    for name, a, b in zip(("frontier", "rowptr", "col", "edge_ids"), got, want):
        assert a.dtype == b.dtype, name
        assert torch.equal(a.cpu(), b.cpu()), name


def _generated_cases(generator, count):
    """Random graphs (self loops, duplicate edges, isolated nodes, a hub), index dtypes, fanouts, seeds, skips."""
    for case in range(count):
        n = int(torch.randint(1, 120, (), generator=generator))
        e = int(torch.randint(0, 6 * n, (), generator=generator))
        kind = case % 3
        g = Graph.from_edge_index(random_edge_index(n, e, generator, power_law=kind == 1, hub=kind == 2), n)
        dtype = (torch.int64, torch.int32)[case % 2]
        batch = int(torch.randint(0, 50, (), generator=generator))
        seeds = torch.randint(n, (batch,), generator=generator).to(dtype)
        skip = (torch.rand(batch, generator=generator) < 0.3) if case % 4 == 0 else None
        fanout = (-1, 0, 1, 3, 25, 200)[case % 6]
        random_seed = int(torch.randint(-2**62, 2**62, (), generator=generator))
        yield g.rowptr.to(dtype), g.col.to(dtype), seeds, fanout, random_seed, skip


def test_composition_matches_cpu_kernel(generator):
    from gnnaccel.ops.expand_hop import expand_hop_torch

    for rowptr, col, seeds, fanout, random_seed, skip in _generated_cases(generator, 120):
        _assert_same_block(expand_hop_torch(rowptr, col, seeds, fanout, random_seed, skip),
                           _cpu_kernel_block(rowptr, col, seeds, fanout, random_seed, skip))


def test_composition_edge_cases(generator):
    from gnnaccel.ops.expand_hop import expand_hop_torch

    # A hub of degree 5000 sampled and expanded, isolated seeds, no edges at all, no nodes at all.
    hub = torch.stack([torch.randint(1, 6000, (5000,), generator=generator), torch.zeros(5000, dtype=torch.long)])
    g = Graph.from_edge_index(hub, 6000)
    for fanout in (-1, 7, 5000):
        for seeds in (torch.tensor([0, 0, 3]), torch.tensor([3]), torch.tensor([], dtype=torch.long)):
            _assert_same_block(expand_hop_torch(g.rowptr, g.col, seeds, fanout, 99, None),
                               _cpu_kernel_block(g.rowptr, g.col, seeds, fanout, 99, None))
    empty = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 0)
    none = torch.empty(0, dtype=torch.long)
    _assert_same_block(expand_hop_torch(empty.rowptr, empty.col, none, -1, 0, None),
                       _cpu_kernel_block(empty.rowptr, empty.col, none, -1, 0, None))
    # The 64-bit hash at its extremes: random seeds near +-2**63 and node ids that overflow v * golden.
    g = _random_graph(generator, n=3000, e=20000)
    seeds = torch.tensor([2999, 1, 2048, 2999])
    for random_seed in (-2**63, 2**63 - 1, 0, -1):
        _assert_same_block(expand_hop_torch(g.rowptr, g.col, seeds, 16, random_seed, None),
                           _cpu_kernel_block(g.rowptr, g.col, seeds, 16, random_seed, None))


def test_composition_checks_like_the_kernel():
    from gnnaccel.ops.expand_hop import expand_hop_torch

    g = _g()
    with pytest.raises(RuntimeError, match=r"seeds holds a node outside \[0, 3\)"):
        expand_hop_torch(g.rowptr, g.col, torch.tensor([5]), -1, 0, None)
    with pytest.raises(RuntimeError, match="col holds an index outside"):
        expand_hop_torch(g.rowptr, torch.tensor([0, 9, 1]), torch.tensor([1]), -1, 0, None)
    with pytest.raises(RuntimeError, match="fanout=4611686018427387904"):
        expand_hop_torch(g.rowptr, g.col, torch.tensor([0, 1, 2, 0]), 2**62, 0, None)
    with pytest.raises(RuntimeError, match="use int64 indices"):
        expand_hop_torch(g.rowptr.int(), g.col.int(), torch.tensor([0], dtype=torch.int32), 2**31, 0, None)


def test_torch_backend_runs_the_composition(generator, monkeypatch):
    import importlib

    backend = pytest.importorskip("gnnaccel.backend")
    module = importlib.import_module("gnnaccel.ops.expand_hop")  # the module (gnnaccel.ops.expand_hop is the function)

    calls = []
    real = module.expand_hop_torch
    monkeypatch.setattr(module, "expand_hop_torch", lambda *a: calls.append(1) or real(*a))
    g = _random_graph(generator)
    seeds = torch.randint(g.num_nodes, (9,), generator=generator)
    with backend.use_backend("torch"):
        got = expand_hop(g.rowptr, g.col, seeds, 4, 3)
    assert calls == [1]
    _assert_same_block(got, expand_hop(g.rowptr, g.col, seeds, 4, 3))
    assert calls == [1]  # auto on CPU: the C++ kernel


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu_kernel(generator):
    """The CUDA kernel (and the composition on CUDA tensors) return the CPU kernel's block, bit for bit."""
    from gnnaccel._library import has_kernel
    from gnnaccel.ops.expand_hop import expand_hop_torch

    assert has_kernel("expand_hop", "CUDA"), "the extension was built without the CUDA kernel of expand_hop"
    for rowptr, col, seeds, fanout, random_seed, skip in _generated_cases(generator, 200):
        want = _cpu_kernel_block(rowptr, col, seeds, fanout, random_seed, skip)
        cuda = [t.cuda() if t is not None else None for t in (rowptr, col, seeds, skip)]
        got = torch.ops.gnnaccel.expand_hop(cuda[0], cuda[1], cuda[2], fanout, random_seed, cuda[3])
        assert all(t.device.type == "cuda" for t in got)
        _assert_same_block(got, want)
        _assert_same_block(expand_hop_torch(cuda[0], cuda[1], cuda[2], fanout, random_seed, cuda[3]), want)
    hub = torch.stack([torch.randint(1, 6000, (5000,), generator=generator), torch.zeros(5000, dtype=torch.long)])
    g = Graph.from_edge_index(hub, 6000)
    for fanout in (-1, 7, 5000):
        seeds = torch.tensor([0, 0, 3])
        _assert_same_block(expand_hop(g.rowptr.cuda(), g.col.cuda(), seeds.cuda(), fanout, 5),
                           expand_hop(g.rowptr, g.col, seeds, fanout, 5))


@pytest.mark.gpu
def test_cuda_kernel_bad_inputs_and_huge_fanout():
    g = _g()
    rowptr, col = g.rowptr.cuda(), g.col.cuda()
    with pytest.raises(RuntimeError, match=r"seeds holds a node outside \[0, 3\)"):
        torch.ops.gnnaccel.expand_hop(rowptr, col, torch.tensor([5], device="cuda"), -1, 0, None)
    with pytest.raises(RuntimeError, match="col holds an index outside"):
        torch.ops.gnnaccel.expand_hop(rowptr, torch.tensor([0, 9, 1], device="cuda"), torch.tensor([1], device="cuda"),
                                      -1, 0, None)
    with pytest.raises(RuntimeError, match="end at col.numel"):
        torch.ops.gnnaccel.expand_hop(torch.tensor([0, 1, 2, 4], device="cuda"), col,
                                      torch.tensor([1], device="cuda"), -1, 0, None)
    for fanout in (2**62, 2**40, 2**63 - 1):
        with pytest.raises(RuntimeError, match="fanout="):
            expand_hop(rowptr, col, torch.tensor([0, 1, 2, 0], device="cuda"), fanout)
    block = expand_hop(rowptr, col, torch.tensor([0, 1], device="cuda"), 3, 1)  # still usable afterwards
    _assert_same_block(block, expand_hop(g.rowptr, g.col, torch.tensor([0, 1]), 3, 1))


# ---------------------------------------------------------------- unpacked rows (row_end)
def _unpacked(g: Graph, generator, junk: int = -7):
    """The rows of ``g`` scattered in random order over a larger buffer, with gaps holding junk ids (never read):
    (row starts, row ends, buffer, position in the buffer of every packed edge)."""
    n, e = g.num_nodes, g.num_edges
    length = (g.rowptr[1:] - g.rowptr[:-1]).long()
    gaps = torch.randint(0, 4, (n,), generator=generator)
    order = torch.randperm(n, generator=generator)
    room = (length + gaps)[order]
    placed = torch.zeros(n, dtype=torch.long)
    placed[order] = torch.cumsum(room, 0) - room + 5  # 5 leading junk entries
    buffer = torch.full((int(room.sum()) + 9,), junk, dtype=torch.long)
    row = g.row_of_edge()
    within = torch.arange(e) - g.rowptr.long()[row]
    position = placed[row] + within
    buffer[position] = g.col.long()
    dtype = g.rowptr.dtype
    return placed.to(dtype), (placed + length).to(dtype), buffer.to(dtype), position


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_row_end_reads_unpacked_rows_like_the_packed_graph(index_dtype, generator):
    """rowptr = row starts, row_end = row ends, rows anywhere in a buffer with junk between them: the CPU kernel
    and the composition give the packed graph's block (same frontier, local CSR and sampled draws), with edge ids
    pointing at the same edges in the buffer."""
    from gnnaccel.ops.expand_hop import expand_hop_torch

    for kind in ("uniform", "hub"):
        g = _random_graph(generator, power_law=kind == "hub", hub=kind == "hub").to(index_dtype=index_dtype)
        start, end, buffer, position = _unpacked(g, generator)
        # Row starts may extend past the last node (capacity of a growing graph).
        start = torch.cat([start, torch.full((3,), 10**6, dtype=index_dtype)])
        for fanout in (-1, 0, 3, 40):
            for batch in (1, 9, 80):
                seeds = torch.randint(g.num_nodes, (batch,), generator=generator).to(index_dtype)
                skip = torch.rand(batch, generator=generator) < 0.3
                rs = int(torch.randint(-2**62, 2**62, (), generator=generator))
                want = expand_hop(g.rowptr, g.col, seeds, fanout, rs, skip)
                for got in (expand_hop(start, buffer, seeds, fanout, rs, skip, end),
                            expand_hop_torch(start, buffer, seeds, fanout, rs, skip, end)):
                    for name in ("frontier", "rowptr", "col"):
                        assert torch.equal(getattr(got, name), getattr(want, name)), name
                    assert got.edge_ids.dtype == index_dtype
                    assert torch.equal(got.edge_ids.long(), position[want.edge_ids.long()])


def test_row_end_checks():
    g = _g()
    start, end = g.rowptr[:-1].contiguous(), g.rowptr[1:].contiguous()
    with pytest.raises(TypeError, match="row_end"):
        expand_hop(start, g.col, torch.tensor([0]), -1, 0, None, end.int())
    with pytest.raises(ValueError, match="row_end has 4 rows"):
        expand_hop(start, g.col, torch.tensor([0]), -1, 0, None, torch.tensor([1, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"seeds must be node ids in \[0, 3\)"):
        expand_hop(start, g.col, torch.tensor([3]), -1, 0, None, end)
    with pytest.raises(RuntimeError, match="rowptr is not non-decreasing"):  # a row past the buffer
        expand_hop(start, g.col, torch.tensor([2]), -1, 0, None, torch.tensor([1, 2, 9]))
    with pytest.raises(RuntimeError, match="rowptr is not non-decreasing"):  # a row ending before it starts
        expand_hop(start, g.col, torch.tensor([1]), -1, 0, None, torch.tensor([1, 0, 3]))
    with pytest.raises(RuntimeError, match="col holds an index outside"):
        expand_hop(start, torch.tensor([0, 7, 1]), torch.tensor([1]), -1, 0, None, end)
    with pytest.raises(RuntimeError, match="row_end"):  # the C++ check, past the Python wrapper
        torch.ops.gnnaccel.expand_hop(start, g.col, torch.tensor([0]), -1, 0, None, end.int())
    result = torch.library.opcheck(torch.ops.gnnaccel.expand_hop.default,
                                   (start, g.col, torch.tensor([0, 2]), -1, 0, None, end))
    assert set(result) >= {"test_schema", "test_faketensor"}


@pytest.mark.gpu
def test_cuda_kernel_row_end_matches_cpu_kernel(generator):
    from gnnaccel.ops.expand_hop import expand_hop_torch

    for index_dtype in (torch.int64, torch.int32):
        g = _random_graph(generator, hub=True).to(index_dtype=index_dtype)
        start, end, buffer, _ = _unpacked(g, generator)
        for fanout in (-1, 0, 5):
            seeds = torch.randint(g.num_nodes, (50,), generator=generator).to(index_dtype)
            skip = torch.rand(50, generator=generator) < 0.3
            want = expand_hop(start, buffer, seeds, fanout, 3, skip, end)
            cuda = [t.cuda() for t in (start, buffer, seeds, skip, end)]
            _assert_same_block(torch.ops.gnnaccel.expand_hop(*cuda[:3], fanout, 3, cuda[3], cuda[4]), want)
            _assert_same_block(expand_hop_torch(*cuda[:3], fanout, 3, cuda[3], cuda[4]), want)


def test_stale_extension_without_row_end_falls_back_to_the_composition(generator, monkeypatch):
    """An extension built before row_end existed: growing graphs still expand (same block), with one warning."""
    module = importlib.import_module("gnnaccel.ops.expand_hop")  # the module, not the function

    g = _random_graph(generator)
    start, end, buffer, position = _unpacked(g, generator)
    seeds = torch.randint(g.num_nodes, (10,), generator=generator)
    want = expand_hop(start, buffer, seeds, 3, 7, None, end)
    monkeypatch.setattr(module, "_kernel_takes_row_end", lambda: False)
    module._warn_stale_extension.cache_clear()
    with pytest.warns(RuntimeWarning, match="rebuild"):
        got = expand_hop(start, buffer, seeds, 3, 7, None, end)
    _assert_same_block(got, want)
