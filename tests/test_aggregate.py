import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

import gnnaccel
from gnnaccel import Graph
from gnnaccel.ops import aggregate
from conftest import dense_aggregate, random_edge_index

REDUCES = ["sum", "mean", "max", "min"]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("weighted", [False, True])
# The CPU kernel's row loop: 256-byte tiles, then 64-byte tiles where they cover the rest, then a generic pass.
# float32 / float64: 16 = small tiles, 17 and 24 = generic / (generic, 3 small), 64 = tile(s), 80 = tile + small,
# 100 = tile + generic.
@pytest.mark.parametrize("channels", [16, 17, 24, 64, 80, 100])
def test_matches_dense_reference(reduce, dtype, index_dtype, weighted, channels, generator):
    n = 60
    edge_index = random_edge_index(n, 400, generator, power_law=True, hub=True)
    weight = torch.rand(edge_index.shape[1], generator=generator, dtype=dtype) + 0.1 if weighted else None
    g = Graph.from_edge_index(edge_index, n, edge_weight=weight, index_dtype=index_dtype)
    x = torch.randn(n, channels, generator=generator, dtype=dtype)
    expected = dense_aggregate(edge_index, n, x, reduce, weight)
    got = g.aggregate(x, reduce).double()
    if dtype == torch.float32 and reduce in ("sum", "mean"):
        # The kernel adds a row's messages one after another in float32, as torch.sparse.mm does. On the hub
        # node (~200 in-edges) that error is bounded by the sum's conditioning, not by |result|: Higham's
        # bound for recursive summation, |fl(s) - s| <= (deg - 1) * u * sum |terms| (u = 2^-24, plus one
        # rounding per weighted product), on top of the usual tolerance.
        abs_terms = dense_aggregate(edge_index, n, x.abs(), reduce, None if weight is None else weight.abs())
        degree = torch.bincount(edge_index[1], minlength=n).double().unsqueeze(1)
        unit_roundoff = torch.finfo(torch.float32).eps / 2
        bound = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * expected.abs() + degree * unit_roundoff * abs_terms
        excess = (got - expected).abs() - bound
        assert excess.max() <= 0, f"error exceeds the summation bound by {excess.max():.3g}"
    else:
        torch.testing.assert_close(got, expected, **TOL[dtype])


@pytest.mark.parametrize("reduce", REDUCES)
def test_matches_pyg_scatter(reduce, generator):
    pyg_utils = pytest.importorskip("torch_geometric.utils")
    n = 300
    edge_index = random_edge_index(n, 3000, generator, power_law=True)
    x = torch.randn(n, 32, generator=generator)
    g = Graph.from_edge_index(edge_index, n)
    expected = pyg_utils.scatter(x[edge_index[0]], edge_index[1], dim=0, dim_size=n, reduce=reduce)
    torch.testing.assert_close(g.aggregate(x, reduce), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_rows_subset_equals_full_rows(reduce, index_dtype, generator):
    n = 80
    g = Graph.from_edge_index(random_edge_index(n, 500, generator), n, index_dtype=index_dtype)
    x = torch.randn(n, 9, generator=generator, dtype=torch.float64)
    rows = torch.randint(n, (25,), generator=generator)  # repeats allowed
    full = g.aggregate(x, reduce)
    torch.testing.assert_close(g.aggregate(x, reduce, rows=rows), full[rows])
    assert g.aggregate(x, reduce, rows=rows[:0]).shape == (0, 9)


@st.composite
def graphs(draw):
    n = draw(st.integers(0, 25))
    m = draw(st.integers(0, 80)) if n else 0
    src = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=m, max_size=m))
    dst = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=m, max_size=m))
    hub_edges = draw(st.integers(0, 40)) if n else 0  # one huge-degree node
    src += draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=hub_edges, max_size=hub_edges))
    dst += [0] * hub_edges
    self_loops = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=5)) if n else []
    src += self_loops
    dst += self_loops
    dup = draw(st.integers(0, len(src)))  # duplicate a prefix of the edges
    src, dst = src + src[:dup], dst + dst[:dup]
    return n, torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.sampled_from(REDUCES), st.integers(1, 12), st.booleans())
def test_hypothesis_graphs(graph_and_n, reduce, channels, weighted):
    n, edge_index = graph_and_n
    gen = torch.Generator().manual_seed(n * 1000 + channels)
    weight = torch.rand(edge_index.shape[1], generator=gen, dtype=torch.float64) if weighted else None
    g = Graph.from_edge_index(edge_index, n, edge_weight=weight)
    x = torch.randn(n, channels, generator=gen, dtype=torch.float64)
    out = g.aggregate(x, reduce)
    torch.testing.assert_close(out, dense_aggregate(edge_index, n, x, reduce, weight), rtol=1e-12, atol=1e-12)
    isolated = g.in_degree() == 0
    assert bool((out[isolated] == 0).all())


def test_empty_rows_give_zero_for_every_reduction():
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]]), num_nodes=4)
    x = -torch.rand(4, 3) - 1.0  # all negative: a max that leaked its -inf init would show
    for reduce in REDUCES:
        out = g.aggregate(x, reduce)
        assert bool((out[1:] == 0).all()), reduce


def _gradcheck_graph(generator, duplicates: bool):
    n = 12
    if duplicates:
        edge_index = random_edge_index(n, 50, generator)
    else:  # ties in max/min make the function non-differentiable: use distinct edges there
        perm = torch.randperm(n * n, generator=generator)[:40]
        edge_index = torch.stack([perm % n, perm // n])
    return n, edge_index


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("use_rows", [False, True])
def test_gradcheck_float64(reduce, use_rows, generator):
    n, edge_index = _gradcheck_graph(generator, duplicates=reduce in ("sum", "mean"))
    g = Graph.from_edge_index(edge_index, n)
    x = torch.randn(n, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    w = (torch.rand(g.num_edges, dtype=torch.float64, generator=generator) + 0.5).requires_grad_()
    rows = torch.tensor([3, 0, 7, 3, 11]) if use_rows else None
    fn = lambda x_, w_: aggregate(g.rowptr, g.col, x_, reduce, w_, rows)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))


@pytest.mark.parametrize("reduce", REDUCES)
def test_gradient_matches_pyg(reduce, generator):
    pyg_utils = pytest.importorskip("torch_geometric.utils")
    n, edge_index = _gradcheck_graph(generator, duplicates=reduce in ("sum", "mean"))
    x1 = torch.randn(n, 6, generator=generator, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    upstream = torch.randn(n, 6, generator=generator)
    Graph.from_edge_index(edge_index, n).aggregate(x1, reduce).backward(upstream)
    pyg_utils.scatter(x2[edge_index[0]], edge_index[1], 0, dim_size=n, reduce=reduce).backward(upstream)
    torch.testing.assert_close(x1.grad, x2.grad)


def _mean_matrix(rowptr, col, n):
    """Dense float64 A with out = A x for mean aggregation (duplicate edges counted twice)."""
    A = torch.zeros(n, n, dtype=torch.float64)
    for r in range(n):
        lo, hi = int(rowptr[r]), int(rowptr[r + 1])
        for e in range(lo, hi):
            A[r, int(col[e])] += 1.0 / (hi - lo)
    return A


def test_backward_reuses_the_transpose_and_notices_edits(generator):
    """Training calls the backward on the same graph every step: the transposed CSR is built once per graph
    (memoised on its tensors), rebuilt after an in-place edit of col, and dropped with the graph."""
    import gc

    from gnnaccel.ops.aggregate import _TRANSPOSES

    n = 30
    g = Graph.from_edge_index(random_edge_index(n, 120, generator, power_law=True, hub=True), n)
    x = torch.randn(n, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(n, 3, dtype=torch.float64, generator=generator)

    def grad_x():
        x.grad = None
        g.aggregate(x, "mean").backward(upstream)
        return x.grad.clone()

    first = grad_x()
    cached = _TRANSPOSES[id(g.col)][3]
    second = grad_x()
    assert _TRANSPOSES[id(g.col)][3] is cached  # reused, not rebuilt
    torch.testing.assert_close(first, _mean_matrix(g.rowptr, g.col, n).T @ upstream, rtol=1e-12, atol=1e-12)
    assert torch.equal(first, second)
    with torch.no_grad():  # rewire every edge in place: a stale transpose would give the old gradient
        g.col.copy_(g.col[torch.randperm(g.num_edges, generator=generator)])
    edited = grad_x()
    assert _TRANSPOSES[id(g.col)][3] is not cached
    torch.testing.assert_close(edited, _mean_matrix(g.rowptr, g.col, n).T @ upstream, rtol=1e-12, atol=1e-12)
    key = id(g.col)
    del g
    gc.collect()
    assert key not in _TRANSPOSES


def _opcheck_samples(generator):
    n = 15
    g = Graph.from_edge_index(random_edge_index(n, 60, generator), n)
    x = torch.randn(n, 5, generator=generator, requires_grad=True)
    w = torch.rand(g.num_edges, generator=generator, requires_grad=True)
    rows = torch.tensor([2, 2, 14, 0])
    for reduce in REDUCES:
        yield (g.rowptr, g.col, x, None, None, reduce, True)
        yield (g.rowptr, g.col, x, w, rows, reduce, True)
        yield (g.rowptr.int(), g.col.int(), x.detach().double(), None, rows.int(), reduce, False)


def test_opcheck(generator):
    for args in _opcheck_samples(generator):
        torch.library.opcheck(torch.ops.gnnaccel.aggregate.default, args)


def test_torch_compile_fullgraph(generator):
    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 200, generator), n)
    lin = torch.nn.Linear(8, 4)

    def layer(x, rowptr, col):
        return torch.relu(lin(aggregate(rowptr, col, x, "mean")) + aggregate(rowptr, col, x, "max")[:, :4])

    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(n, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, g.rowptr, g.col), layer(x, g.rowptr, g.col))


def test_torch_compile_fullgraph_backward(generator):
    """The backward (transposed aggregation) traces too: compiled gradients equal eager ones."""
    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 200, generator), n)
    x = torch.randn(n, 8, generator=generator, requires_grad=True)
    w = (torch.rand(g.num_edges, generator=generator) + 0.5).requires_grad_()

    def loss(x, w, rowptr, col):
        return (aggregate(rowptr, col, x, "mean", w) ** 2).sum()

    eager = torch.autograd.grad(loss(x, w, g.rowptr, g.col), (x, w))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(x, w, g.rowptr, g.col), (x, w))
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- bad inputs: clear errors, never a crash
def _g():
    return Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)


BAD_OP_CALLS = [
    ("col out of range", lambda: aggregate(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 9]), torch.ones(3, 2)),
     RuntimeError, "col holds an index outside"),
    ("negative col", lambda: aggregate(torch.tensor([0, 1, 2, 3]), torch.tensor([0, -1, 2]), torch.ones(3, 2)),
     RuntimeError, "col holds an index outside"),
    ("decreasing rowptr", lambda: aggregate(torch.tensor([0, 2, 1, 3]), torch.tensor([0, 1, 2]), torch.ones(3, 2)),
     RuntimeError, "rowptr"),
    ("rowptr end", lambda: aggregate(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2]), torch.ones(3, 2)),
     RuntimeError, "rowptr must start at 0"),
    ("rows out of range", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=torch.tensor([5])),
     RuntimeError, "rows holds an index outside"),
    ("negative rows", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=torch.tensor([-1])),
     RuntimeError, "rows holds an index outside"),
    ("index dtype mismatch", lambda: aggregate(_g().rowptr.int(), _g().col, torch.ones(3, 2)),
     TypeError, "share a dtype"),
    ("float rowptr", lambda: aggregate(_g().rowptr.float(), _g().col.float(), torch.ones(3, 2)),
     TypeError, "int32 or int64"),
    ("integer x", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2, dtype=torch.long)),
     TypeError, "floating-point"),
    ("1-D x", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3)), ValueError, "x must be 2-D"),
    ("weight length", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), edge_weight=torch.ones(2)),
     ValueError, "edge_weight has 2 entries"),
    ("weight dtype", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), edge_weight=torch.ones(3).double()),
     TypeError, "edge_weight dtype"),
    ("unknown reduce", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), reduce="median"),
     ValueError, "reduce must be one of"),
    ("2-D rowptr", lambda: aggregate(_g().rowptr[None], _g().col, torch.ones(3, 2)), ValueError, "rowptr must be 1-D"),
    # rows are validated, never cast: float rows are not truncated, a bool mask is not read as indices, and an
    # int64 row beyond the int32 range does not wrap onto a valid row of an int32 graph.
    ("float rows", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=torch.tensor([1.7])),
     TypeError, "rows must hold int32 or int64"),
    ("bool rows", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=torch.tensor([True, False, True])),
     TypeError, "boolean mask"),
    ("list rows", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=[0, 1]), TypeError, "rows must be"),
    ("2-D rows", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2), rows=torch.zeros(1, 1, dtype=torch.long)),
     ValueError, "rows must be 1-D"),
    ("int64 row 2**32 on an int32 graph", lambda: aggregate(_g().rowptr.int(), _g().col.int(), torch.ones(3, 2),
                                                            rows=torch.tensor([2 ** 32 + 1])),
     RuntimeError, "rows holds an index outside"),
    ("int64 row -2**32 on an int32 graph", lambda: aggregate(_g().rowptr.int(), _g().col.int(), torch.ones(3, 2),
                                                             rows=torch.tensor([-2 ** 32 + 1])),
     RuntimeError, "rows holds an index outside"),
    ("float8 on CPU", lambda: aggregate(_g().rowptr, _g().col, torch.ones(3, 2).to(torch.float8_e4m3fn)),
     RuntimeError, "float32, float64, bfloat16 and float16"),
    ("graph x rows", lambda: _g().aggregate(torch.ones(4, 2)), ValueError, "x must have shape"),
    ("not a tensor", lambda: aggregate([0, 1], _g().col, torch.ones(3, 2)), TypeError, "rowptr must be a torch.Tensor"),
]


@pytest.mark.parametrize("name, call, exc, match", BAD_OP_CALLS, ids=[c[0] for c in BAD_OP_CALLS])
def test_bad_input_raises_clear_error(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_strided_x_is_accepted(generator):
    n = 30
    g = Graph.from_edge_index(random_edge_index(n, 120, generator), n)
    x = torch.randn(5, n, generator=generator, dtype=torch.float64).t()  # channel stride != 1
    torch.testing.assert_close(g.aggregate(x, "mean"), g.aggregate(x.contiguous(), "mean"), rtol=0, atol=0)


def test_int32_rows_on_int64_graph_and_back(generator):
    n = 40
    g64 = Graph.from_edge_index(random_edge_index(n, 200, generator), n)
    g32 = Graph.from_edge_index(random_edge_index(n, 200, generator), n, index_dtype=torch.int32)
    x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    rows = torch.tensor([5, 0, 39, 5])
    for g in (g64, g32):
        expected = aggregate(g.rowptr, g.col, x, "sum")[rows]
        for r in (rows, rows.int()):
            torch.testing.assert_close(aggregate(g.rowptr, g.col, x, "sum", rows=r), expected, rtol=0, atol=0)


def test_extension_reports_cpu_kernel():
    assert gnnaccel.EXTENSION_LOADED
    from gnnaccel._library import has_kernel
    assert has_kernel("aggregate", "CPU")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduce", REDUCES)
def test_cuda_matches_cpu(dtype, reduce, generator):
    n = 500
    edge_index = random_edge_index(n, 5000, generator, power_law=True)
    g = Graph.from_edge_index(edge_index, n)
    x = torch.randn(n, 33, generator=generator)
    expected = g.aggregate(x, reduce)
    got = g.to("cuda").aggregate(x.to("cuda", dtype), reduce).float().cpu()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, expected, **tol)
