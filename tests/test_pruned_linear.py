"""pruned_linear, sage_fused and sage_projected against dense float64 torch math; opcheck, compile, bad inputs."""
import pytest
import torch

from gnnaccel import Graph
from gnnaccel.ops import pruned_linear, sage_fused, sage_projected
from conftest import dense_aggregate, random_edge_index

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def assert_rel_close(out, ref, dtype):
    """Norm-wise relative error (float32 sums over a hub's thousands of edges round per element)."""
    err = (out.double() - ref).norm() / ref.norm().clamp_min(1e-300)
    assert err <= REL_TOL[dtype], f"relative error {err:.3e} > {REL_TOL[dtype]}"


def _reference(x, w, b, rows, keep):
    z = x.double()
    if rows is not None:
        z = z[rows.long()]
    if keep is not None:
        z = z[:, keep.long()]
    out = z @ w.double()
    return out + b.double() if b is not None else out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("use_rows, use_keep, use_bias",
                         [(True, True, True), (True, False, True), (False, True, False), (False, False, True),
                          (True, True, False)])
def test_matches_dense(dtype, index_dtype, use_rows, use_keep, use_bias, generator):
    # Sizes that span several row blocks of the CPU kernel.
    n, c, d = 2500, 96, 33
    x = torch.randn(n, c, generator=generator, dtype=dtype)
    rows = torch.randint(n, (1700,), generator=generator).to(index_dtype) if use_rows else None  # duplicates
    keep = torch.randperm(c, generator=generator)[:41].to(index_dtype) if use_keep else None
    k = keep.numel() if use_keep else c
    w = torch.randn(k, d, generator=generator, dtype=dtype)
    b = torch.randn(d, generator=generator, dtype=dtype) if use_bias else None
    out = pruned_linear(x, w, b, rows, keep)
    assert out.dtype == dtype and out.shape == (rows.numel() if use_rows else n, d)
    torch.testing.assert_close(out.double(), _reference(x, w, b, rows, keep), **TOL[dtype])


def test_duplicate_keep_and_noncontiguous_inputs(generator):
    x = torch.randn(20, 40, generator=generator, dtype=torch.float64).t()  # column-major
    keep = torch.tensor([3, 3, 0, 19])
    w = torch.randn(7, 4, generator=generator, dtype=torch.float64).t()  # [4, 7] non-contiguous
    rows = torch.tensor([39, 0, 0, 5])
    torch.testing.assert_close(pruned_linear(x, w, None, rows, keep), _reference(x, w, None, rows, keep))


def test_empty_rows_and_keep(generator):
    x = torch.randn(10, 6, generator=generator)
    w = torch.randn(3, 5, generator=generator)
    b = torch.randn(5, generator=generator)
    assert pruned_linear(x, w, b, torch.empty(0, dtype=torch.long), torch.tensor([0, 2, 4])).shape == (0, 5)
    out = pruned_linear(x, torch.empty(0, 5), b, torch.tensor([1, 2]), torch.empty(0, dtype=torch.long))
    torch.testing.assert_close(out, b.expand(2, 5))
    out = pruned_linear(x, torch.empty(0, 5), None, None, torch.empty(0, dtype=torch.long))
    torch.testing.assert_close(out, torch.zeros(10, 5))
    assert pruned_linear(torch.empty(0, 6), torch.randn(6, 5), b).shape == (0, 5)


def test_gradcheck(generator):
    x = torch.randn(12, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 5, 5, 11, 2])
    keep = torch.tensor([6, 1, 1, 3])
    torch.autograd.gradcheck(lambda x, w, b: pruned_linear(x, w, b, rows, keep), (x, w, b))
    w7 = torch.randn(7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w: pruned_linear(x, w), (x, w7))
    torch.autograd.gradcheck(lambda x, w: pruned_linear(x, w, None, rows), (x, w7))


def test_opcheck(generator):
    x = torch.randn(30, 9, generator=generator, requires_grad=True)
    w = torch.randn(4, 5, generator=generator, requires_grad=True)
    b = torch.randn(5, generator=generator, requires_grad=True)
    samples = [
        (x, w, b, torch.randint(30, (11,), generator=generator), torch.tensor([8, 0, 3, 3])),
        (x.detach().double(), torch.randn(9, 5, dtype=torch.float64), None, None, None),
        (x, torch.randn(9, 5), b, torch.randint(30, (7,), generator=generator).int(), None),
        (x, w, None, None, torch.tensor([1, 2, 3, 4], dtype=torch.int32)),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.gnnaccel.pruned_linear.default, args)


def test_torch_compile_fullgraph(generator):
    x = torch.randn(50, 16, generator=generator)
    w = torch.randn(6, 8, generator=generator)
    b = torch.randn(8, generator=generator)
    rows, keep = torch.randint(50, (20,), generator=generator), torch.randperm(16, generator=generator)[:6]

    def f(x, w, b, rows, keep):
        return torch.relu(pruned_linear(x, w, b, rows, keep))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, w, b, rows, keep), f(x, w, b, rows, keep))


BAD_CALLS = [
    ("rows out of range", lambda: pruned_linear(torch.ones(4, 3), torch.ones(3, 2), rows=torch.tensor([4])),
     IndexError, r"rows holds index 4, outside \[0, 4\)"),
    ("negative keep", lambda: pruned_linear(torch.ones(4, 3), torch.ones(1, 2), keep=torch.tensor([-1])),
     IndexError, "keep holds index -1"),
    ("float keep", lambda: pruned_linear(torch.ones(4, 3), torch.ones(1, 2), keep=torch.tensor([1.0])),
     TypeError, "keep must hold int32 or int64"),
    ("W rows vs keep", lambda: pruned_linear(torch.ones(4, 3), torch.ones(3, 2), keep=torch.tensor([0, 1])),
     ValueError, "weight has 3 rows but keep selects 2"),
    ("W rows vs x", lambda: pruned_linear(torch.ones(4, 3), torch.ones(2, 2)), ValueError, "x has 3"),
    ("dtype mismatch", lambda: pruned_linear(torch.ones(4, 3), torch.ones(3, 2).double()), TypeError, "weight dtype"),
    ("integer x", lambda: pruned_linear(torch.ones(4, 3, dtype=torch.long), torch.ones(3, 2)), TypeError,
     "floating-point"),
    ("bias shape", lambda: pruned_linear(torch.ones(4, 3), torch.ones(3, 2), torch.ones(3)), ValueError, "bias"),
    ("2-D rows", lambda: pruned_linear(torch.ones(4, 3), torch.ones(3, 2), rows=torch.zeros(1, 1, dtype=torch.long)),
     ValueError, "rows must be 1-D"),
    # The kernel itself checks too (what a compiled graph reaches).
    ("kernel rows range", lambda: torch.ops.gnnaccel.pruned_linear(torch.ones(4, 3), torch.ones(3, 2), None,
                                                                     torch.tensor([9]), None),
     RuntimeError, r"rows\[0\] = 9 is outside \[0, 4\)"),
    ("kernel keep range", lambda: torch.ops.gnnaccel.pruned_linear(torch.ones(4, 3), torch.ones(1, 2), None,
                                                                     None, torch.tensor([3])),
     RuntimeError, r"keep\[0\] = 3 is outside \[0, 3\)"),
    ("kernel W shape", lambda: torch.ops.gnnaccel.pruned_linear(torch.ones(4, 3), torch.ones(2, 2), None, None,
                                                                  torch.tensor([0])),
     RuntimeError, "weight has 2 rows"),
]


@pytest.mark.parametrize("name, call, exc, match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_clear_error(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------- sage_fused
def _sage_reference(edge_index, n, x, w, b, reduce, root, edge_weight=None, rows=None):
    z = dense_aggregate(edge_index, n, x, reduce, edge_weight)
    if root:
        z = torch.cat([z, x.double()], 1)
    out = z @ w.double()
    if b is not None:
        out = out + b.double()
    return out if rows is None else out[rows.long()]


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("root, weighted, use_rows, index_dtype",
                         [(True, False, False, torch.int64), (False, True, False, torch.int32),
                          (True, True, True, torch.int64), (True, False, True, torch.int32)])
def test_sage_fused_matches_dense(reduce, dtype, root, weighted, use_rows, index_dtype, generator):
    n, c, d = 700, 24, 40  # several row blocks; node n-1.. isolated by construction below
    edge_index = random_edge_index(n - 5, 4000, generator, power_law=True, hub=True)
    ew = torch.rand(edge_index.shape[1], generator=generator, dtype=dtype) if weighted else None
    g = Graph.from_edge_index(edge_index, n, ew, index_dtype=index_dtype)
    x = torch.randn(n, c, generator=generator, dtype=dtype)
    w = torch.randn(c * (2 if root else 1), d, generator=generator, dtype=dtype)
    b = torch.randn(d, generator=generator, dtype=dtype)
    rows = torch.cat([torch.randint(n, (300,), generator=generator), torch.tensor([n - 1])]) if use_rows else None
    out = sage_fused(g.rowptr, g.col, x, w, b, g.edge_weight, rows, reduce, root)
    ref = _sage_reference(edge_index, n, x, w, b, reduce, root, ew, rows)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_rel_close(out, ref, dtype)


def test_sage_fused_opcheck_and_compile(generator):
    n = 50
    g = Graph.from_edge_index(random_edge_index(n, 300, generator), n)
    x = torch.randn(n, 8, generator=generator)
    w, b = torch.randn(16, 5, generator=generator), torch.randn(5, generator=generator)
    for args in [(g.rowptr, g.col, x, None, w, b, None, "mean", True),
                 (g.rowptr.int(), g.col.int(), x.double(), torch.rand(g.num_edges, dtype=torch.float64),
                  w[:8].double(), None, torch.tensor([3, 3, 0], dtype=torch.int32), "sum", False)]:
        torch.library.opcheck(torch.ops.gnnaccel.sage_fused.default, args)

    def f(x, w, b):
        return torch.relu(sage_fused(g.rowptr, g.col, x, w, b))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, w, b), f(x, w, b))


def test_sage_fused_bad_inputs():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    x, w = torch.ones(3, 2), torch.ones(4, 3)
    with pytest.raises(ValueError, match="reduce 'sum' and 'mean'"):
        sage_fused(g.rowptr, g.col, x, w, reduce="max")
    with pytest.raises(ValueError, match=r"weight must be \[4, out\]"):
        sage_fused(g.rowptr, g.col, x, torch.ones(3, 3))
    with pytest.raises(RuntimeError, match="no backward"):
        sage_fused(g.rowptr, g.col, x, w.requires_grad_())
    with pytest.raises(RuntimeError, match="col holds an index outside"):
        sage_fused(g.rowptr, torch.tensor([0, 1, 7]), x, torch.ones(4, 3))
    with pytest.raises(RuntimeError, match="rows holds an index outside"):
        sage_fused(g.rowptr, g.col, x, torch.ones(4, 3), rows=torch.tensor([3]))


# ------------------------------------------------------------------------------------------- sage_projected
def _projected_reference(edge_index, n, xw, root, b, reduce, edge_weight=None, rows=None):
    out = dense_aggregate(edge_index, n, xw, reduce, edge_weight)
    out = out if rows is None else out[rows.long()]
    if root is not None:
        out = out + root.double()
    if b is not None:
        out = out + b.double()
    return out


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("root, weighted, use_rows, index_dtype, bias",
                         [(True, False, False, torch.int64, True), (False, True, False, torch.int32, True),
                          (True, True, True, torch.int64, False), (True, False, True, torch.int32, True),
                          (False, False, False, torch.int64, False)])
@pytest.mark.parametrize("d", [5, 16, 64, 80, 100])  # the row loop's tile paths (see test_aggregate.py)
def test_sage_projected_matches_dense(reduce, dtype, root, weighted, use_rows, index_dtype, bias, d, generator):
    n = 300  # the last 5 nodes have no edges (root term and bias only)
    edge_index = random_edge_index(n - 5, 2000, generator, power_law=True, hub=True)
    ew = torch.rand(edge_index.shape[1], generator=generator, dtype=dtype) if weighted else None
    g = Graph.from_edge_index(edge_index, n, ew, index_dtype=index_dtype)
    xw = torch.randn(n, d, generator=generator, dtype=dtype)
    rows = torch.cat([torch.randint(n, (120,), generator=generator), torch.tensor([n - 1, 0])]) if use_rows else None
    num_out = n if rows is None else rows.numel()
    r = torch.randn(num_out, d, generator=generator, dtype=dtype) if root else None
    b = torch.randn(d, generator=generator, dtype=dtype) if bias else None
    out = sage_projected(g.rowptr, g.col, xw, r, b, g.edge_weight, rows, reduce)
    ref = _projected_reference(edge_index, n, xw, r, b, reduce, ew, rows)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_rel_close(out, ref, dtype)


def test_sage_projected_equals_project_then_aggregate(generator):
    """The layer identity it implements: aggregate(x) W_l + x W_r + b == sage_projected(x W_l, x W_r, b)."""
    n = 200
    g = Graph.from_edge_index(random_edge_index(n, 1500, generator, power_law=True), n)
    x = torch.randn(n, 48, generator=generator, dtype=torch.float64)
    wl, wr = torch.randn(48, 16, generator=generator, dtype=torch.float64), torch.randn(48, 16, generator=generator,
                                                                                       dtype=torch.float64)
    b = torch.randn(16, generator=generator, dtype=torch.float64)
    ref = g.aggregate(x, "mean") @ wl + x @ wr + b
    torch.testing.assert_close(sage_projected(g.rowptr, g.col, x @ wl, x @ wr, b), ref)


@pytest.mark.parametrize("use_rows", [False, True])
@pytest.mark.parametrize("d", [16, 70])  # small tiles / tile + generic pass, each at row stride 2D
def test_sage_projected_reads_column_blocks_of_a_wider_matrix(use_rows, d, generator):
    """xw and root may be the two halves of one [N, 2D] GEMM output (row stride 2D): same result as copies."""
    n = 150
    edge_index = random_edge_index(n, 1200, generator, power_law=True, hub=True)
    g = Graph.from_edge_index(edge_index, n)
    both = torch.randn(n, 2 * d, generator=generator, dtype=torch.float64)
    b = torch.randn(d, generator=generator, dtype=torch.float64)
    rows = torch.randint(n, (40,), generator=generator) if use_rows else None
    root = both[:, d:] if rows is None else both[:, d:].index_select(0, rows)
    out = sage_projected(g.rowptr, g.col, both[:, :d], root, b, rows=rows)
    ref = _projected_reference(edge_index, n, both[:, :d], root, b, "mean", rows=rows)
    assert_rel_close(out, ref, torch.float64)
    torch.library.opcheck(torch.ops.gnnaccel.sage_projected.default,
                          (g.rowptr, g.col, both[:, :d], root, None, b, rows, "mean"))


@pytest.mark.parametrize("n", [0, 4])
def test_sage_projected_empty_graph(n):
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), n)
    xw, root = torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(sage_projected(g.rowptr, g.col, xw, root, b), root + b)  # no edges: root + bias
    assert sage_projected(g.rowptr, g.col, xw, None, b, rows=torch.empty(0, dtype=torch.long)).shape == (0, 3)


def test_sage_projected_opcheck_and_compile(generator):
    n = 50
    g = Graph.from_edge_index(random_edge_index(n, 300, generator), n)
    xw, root, b = (torch.randn(n, 5, generator=generator), torch.randn(n, 5, generator=generator),
                   torch.randn(5, generator=generator))
    rows = torch.tensor([3, 3, 0], dtype=torch.int32)
    for args in [(g.rowptr, g.col, xw, root, None, b, None, "mean"),
                 (g.rowptr.int(), g.col.int(), xw.double(), root[:3].double(), torch.rand(g.num_edges, dtype=torch.float64),
                  None, rows, "sum")]:
        torch.library.opcheck(torch.ops.gnnaccel.sage_projected.default, args)

    def f(xw, root, b):
        return torch.relu(sage_projected(g.rowptr, g.col, xw, root, b))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(xw, root, b), f(xw, root, b))


def test_sage_projected_bad_inputs():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    xw = torch.ones(3, 2)
    with pytest.raises(ValueError, match="reduce 'sum' and 'mean'"):
        sage_projected(g.rowptr, g.col, xw, reduce="max")
    with pytest.raises(ValueError, match=r"root must have shape \[3, 2\]"):
        sage_projected(g.rowptr, g.col, xw, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"root must have shape \[1, 2\]"):  # one root row per output row
        sage_projected(g.rowptr, g.col, xw, torch.ones(3, 2), rows=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"bias must have shape \[2\]"):
        sage_projected(g.rowptr, g.col, xw, None, torch.ones(4))
    with pytest.raises(TypeError, match="bias must be a tensor of xw's dtype"):
        sage_projected(g.rowptr, g.col, xw, None, torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        sage_projected(g.rowptr, g.col, torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="no backward"):
        sage_projected(g.rowptr, g.col, xw.clone().requires_grad_())
    with pytest.raises(RuntimeError, match="sage_projected: col holds an index outside"):
        sage_projected(g.rowptr, torch.tensor([0, 1, 7]), xw)
    with pytest.raises(RuntimeError, match="sage_projected: rows holds an index outside"):
        sage_projected(g.rowptr, g.col, xw, rows=torch.tensor([3]))
    with pytest.raises(RuntimeError, match="x must be row-major with contiguous channels"):
        sage_projected(g.rowptr, g.col, torch.ones(2, 3).t())
    with pytest.raises(RuntimeError, match="root must be row-major with contiguous channels"):
        sage_projected(g.rowptr, g.col, xw, torch.ones(2, 3).t())
    with pytest.raises(ValueError, match="edge_weight has 2 entries"):
        sage_projected(g.rowptr, g.col, xw, edge_weight=torch.ones(2))
    # rows are validated, never cast (float truncated, bool mask read as indices, int64 wrapped onto int32)
    with pytest.raises(TypeError, match="rows must hold int32 or int64"):
        sage_projected(g.rowptr, g.col, xw, rows=torch.tensor([1.0]))
    with pytest.raises(TypeError, match="boolean mask"):
        sage_projected(g.rowptr, g.col, xw, rows=torch.tensor([True, False, True]))
    g32 = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3, index_dtype=torch.int32)
    with pytest.raises(RuntimeError, match="rows holds an index outside"):
        sage_projected(g32.rowptr, g32.col, xw, rows=torch.tensor([2 ** 32 + 1]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_root", [True, False])
def test_sage_projected_cuda_matches_cpu(dtype, with_root, generator):
    n = 500
    edge_index = random_edge_index(n, 5000, generator, power_law=True, hub=True)
    g = Graph.from_edge_index(edge_index, n, torch.rand(edge_index.shape[1], generator=generator, dtype=dtype))
    xw = torch.randn(n, 32, generator=generator, dtype=dtype)
    rows = torch.randint(n, (100,), generator=generator)
    root = torch.randn(100, 32, generator=generator, dtype=dtype) if with_root else None
    b = torch.randn(32, generator=generator, dtype=dtype)
    gc = g.to("cuda")
    out = sage_projected(gc.rowptr, gc.col, xw.cuda(), None if root is None else root.cuda(), b.cuda(),
                         gc.edge_weight, rows.cuda(), "mean")
    ref = sage_projected(g.rowptr, g.col, xw, root, b, g.edge_weight, rows, "mean")
    torch.testing.assert_close(out.cpu(), ref, **TOL[dtype])
