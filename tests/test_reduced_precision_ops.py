"""bfloat16 / float16 storage with float32 accumulation: aggregate, sage_fused, sage_projected, pruned_linear.

Every result is compared with a dense float64 reference computed from the SAME rounded inputs, under an error
bound derived from the arithmetic the op contract promises (u = unit roundoff, u_f = finfo(dtype).eps / 2,
u32 = 2^-24, gamma(n) = n u32 / (1 - n u32), Higham's bound for n float32 operations on one sum):

  * the float32 part: a sum of n products, accumulated in float32 in any order, is off by at most
    gamma(n + 1) * sum |terms| (n - 1 additions, one rounding per product, one for mean's division);
  * a bfloat16 GEMM operand that the op rounds to bfloat16 first (sage_fused's aggregated block) adds
    u_f * |operand| per term;
  * the output is rounded to the storage dtype once: u_f * |exact|, plus half the subnormal spacing
    (float16's subnormals start at 6e-5).

The first-order terms are multiplied by (1 + 4 u_f), which covers their products (at most three roundings
compose). A kernel that accumulated in the storage dtype breaks these bounds on any long row:
test_hub_needs_float32_accumulation shows it on a hub of 5000 edges.
"""
from __future__ import annotations

import pytest
import torch

import gnnaccel
from gnnaccel import Graph
from gnnaccel.ops import aggregate, fused_layer, pruned_linear, sage_fused, sage_projected
from conftest import random_edge_index

REDUCED = [torch.bfloat16, torch.float16]
U32 = 2.0 ** -24


def unit(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n) -> torch.Tensor | float:
    return n * U32 / (1 - n * U32)


def tiny(dtype: torch.dtype) -> float:
    """Half the spacing of the subnormals: the absolute rounding error near zero."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps / 2


def assert_within(got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, dtype: torch.dtype, what: str):
    assert got.dtype == dtype, f"{what}: returned {got.dtype}, expected {dtype}"
    assert got.shape == ref.shape
    bound = (1 + 4 * unit(dtype)) * bound + tiny(dtype)
    err = (got.double() - ref).abs()
    excess = err - bound
    assert torch.isfinite(got.double()).all()
    assert excess.max().item() <= 0 if excess.numel() else True, (
        f"{what}: error {err.max().item():.3g} exceeds the bound by {excess.max().item():.3g}")


def dense_adjacency(edge_index: torch.Tensor, n: int, edge_weight=None) -> torch.Tensor:
    """A[i, j] = sum of the weights of the edges j -> i, float64 (duplicates add up, self loops on the diagonal)."""
    w = torch.ones(edge_index.shape[1], dtype=torch.float64) if edge_weight is None else edge_weight.double()
    return torch.zeros(n, n, dtype=torch.float64).index_put_((edge_index[1], edge_index[0]), w, accumulate=True)


def sum_reference(edge_index, n, x, reduce, edge_weight=None, rows=None):
    """(exact result, sum of |terms| per entry, row degree) of a sum/mean aggregation, float64."""
    A = dense_adjacency(edge_index, n, edge_weight)
    A_abs = dense_adjacency(edge_index, n, None if edge_weight is None else edge_weight.abs())
    deg = torch.bincount(edge_index[1], minlength=n).double()[:, None]
    ref, absref = A @ x.double(), A_abs @ x.double().abs()
    if reduce == "mean":
        ref, absref = ref / deg.clamp_min(1), absref / deg.clamp_min(1)
    if rows is not None:
        r = rows.long()
        ref, absref, deg = ref[r], absref[r], deg[r]
    return ref, absref, deg


def extreme_reference(edge_index, n, x, reduce, edge_weight=None, rows=None):
    """max/min of the messages w_e x[src_e] of each row (a float64 scatter over the edges); 0 for empty rows."""
    msgs = x.double()[edge_index[0]]
    if edge_weight is not None:
        msgs = msgs * edge_weight.double()[:, None]
    fill = float("-inf") if reduce == "max" else float("inf")
    ref = torch.full((n, x.shape[1]), fill, dtype=torch.float64).scatter_reduce(
        0, edge_index[1][:, None].expand_as(msgs), msgs, "amax" if reduce == "max" else "amin")
    ref = torch.where(torch.isinf(ref), torch.zeros_like(ref), ref)
    return ref if rows is None else ref[rows.long()]


def make_graph(n, num_edges, generator, dtype, index_dtype, weighted, isolated=5):
    """A power-law graph with a hub (node 0), self loops and duplicates; the last `isolated` nodes have no edges."""
    edge_index = random_edge_index(n - isolated, num_edges, generator, power_law=True, hub=True)
    ew = (torch.rand(edge_index.shape[1], generator=generator) + 0.1).to(dtype) if weighted else None
    return edge_index, ew, Graph.from_edge_index(edge_index, n, ew, index_dtype=index_dtype)


def rand(*shape, generator, dtype):
    return torch.randn(*shape, generator=generator).to(dtype)


# bfloat16 / float16 rows: 128-channel tiles, then 64-channel tiles where they cover the rest, then the generic
# pass. 16, 32 = generic, 64 = small tile, 128 = tile, 192 = tile + small, 200 = tile + generic.
@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("index_dtype, weighted, use_rows", [(torch.int64, False, False), (torch.int32, True, False),
                                                             (torch.int64, True, True), (torch.int32, False, True)])
@pytest.mark.parametrize("channels", [16, 32, 64, 128, 192, 200])
def test_aggregate(dtype, reduce, index_dtype, weighted, use_rows, channels, generator):
    n = 120
    edge_index, ew, g = make_graph(n, 1500, generator, dtype, index_dtype, weighted)
    x = rand(n, channels, generator=generator, dtype=dtype)
    rows = torch.cat([torch.randint(n, (40,), generator=generator), torch.tensor([0, n - 1, 0])]) if use_rows else None
    got = aggregate(g.rowptr, g.col, x, reduce, g.edge_weight, rows)
    if reduce in ("sum", "mean"):
        ref, absref, deg = sum_reference(edge_index, n, x, reduce, ew, rows)
        bound = unit(dtype) * ref.abs() + gamma(deg + 1) * absref
    else:
        ref = extreme_reference(edge_index, n, x, reduce, ew, rows)
        # unweighted: one stored value returned as it is; weighted: one float32 product, rounded once more
        bound = unit(dtype) * ref.abs() + gamma(1) * ref.abs() if weighted else torch.zeros_like(ref)
    assert_within(got, ref, bound, dtype, f"aggregate {reduce}")
    assert (got[(rows if rows is not None else torch.arange(n)) >= n - 5] == 0).all()  # isolated rows give 0


@pytest.mark.parametrize("dtype", REDUCED)
def test_hub_needs_float32_accumulation(dtype, generator):
    """5000 positive messages into one row: the float32 accumulator stays within the bound; summing in the
    storage dtype (what a kernel without acc_type would do) stagnates far outside it."""
    n, hub_edges, channels = 400, 5000, 48
    src = torch.randint(n, (hub_edges,), generator=generator)
    edge_index = torch.cat([torch.stack([src, torch.zeros_like(src)]), random_edge_index(n, 500, generator)], 1)
    g = Graph.from_edge_index(edge_index, n)
    x = torch.rand(n, channels, generator=generator).to(dtype)
    for reduce in ("sum", "mean"):
        got = aggregate(g.rowptr, g.col, x, reduce)
        ref, absref, deg = sum_reference(edge_index, n, x, reduce)
        bound = unit(dtype) * ref.abs() + gamma(deg + 1) * absref
        assert_within(got, ref, bound, dtype, f"hub {reduce}")
        # The naive storage-dtype accumulation, in the kernel's edge order.
        naive = torch.zeros(channels, dtype=dtype)
        for j in g.col[g.rowptr[0]:g.rowptr[1]].tolist():
            naive = naive + x[j]
        if reduce == "mean":
            naive = naive / hub_edges
        naive_err = (naive.double() - ref[0]).abs().max().item()
        assert naive_err > 10 * bound[0].max().item(), (naive_err, bound[0].max().item())


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("n, num_edges", [(0, 0), (7, 0)])
def test_empty_graph(dtype, n, num_edges):
    g = Graph.from_edge_index(torch.empty(2, num_edges, dtype=torch.long), n)
    x = torch.ones(n, 6, dtype=dtype)
    w, b = torch.ones(12, 3, dtype=dtype), torch.full((3,), 0.5, dtype=dtype)
    for reduce in ("sum", "mean", "max", "min"):
        out = aggregate(g.rowptr, g.col, x, reduce)
        assert out.dtype == dtype and out.shape == (n, 6) and (out == 0).all()
    with torch.no_grad():
        out = sage_fused(g.rowptr, g.col, x, w, b)
        # empty rows: 0 @ w_l + x @ w_r + b = 6.5
        assert out.dtype == dtype and out.shape == (n, 3) and (out == 6.5).all()
        out = sage_projected(g.rowptr, g.col, x[:, :3], x[:, :3], b)
        assert out.dtype == dtype and out.shape == (n, 3) and (out == 1.5).all()


def gemm_bound(z: torch.Tensor, w: torch.Tensor, b, dtype) -> torch.Tensor:
    """gamma(K + 1) (|z| @ |W| + |b|): a length-K dot product plus bias in float32."""
    out = z.double().abs() @ w.double().abs()
    if b is not None:
        out = out + b.double().abs()
    return gamma(z.shape[1] + 1) * out


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("root, weighted, use_rows, index_dtype, use_bias",
                         [(True, False, False, torch.int64, True), (False, True, False, torch.int32, False),
                          (True, True, True, torch.int64, True), (True, False, True, torch.int32, False)])
def test_sage_fused(dtype, reduce, root, weighted, use_rows, index_dtype, use_bias, generator):
    n, c, d = 700, 40, 48  # several row blocks
    edge_index, ew, g = make_graph(n, 5000, generator, dtype, index_dtype, weighted)
    x = rand(n, c, generator=generator, dtype=dtype)
    w = rand(c * (2 if root else 1), d, generator=generator, dtype=dtype)
    b = rand(d, generator=generator, dtype=dtype) if use_bias else None
    rows = torch.cat([torch.randint(n, (300,), generator=generator), torch.tensor([0, n - 1])]) if use_rows else None
    with torch.no_grad():
        got = sage_fused(g.rowptr, g.col, x, w, b, g.edge_weight, rows, reduce, root)
    agg, absagg, deg = sum_reference(edge_index, n, x, reduce, ew, rows)
    z = torch.cat([agg, x.double()[rows.long()] if rows is not None else x.double()], 1) if root else agg
    ref = z @ w.double() + (b.double() if b is not None else 0)
    # The aggregated block: float32 sum (gamma(deg + 1)), then for bfloat16 rounded for the bfloat16 GEMM;
    # float16 multiplies the float32 block (no rounding).
    u_z = unit(dtype) if dtype == torch.bfloat16 else 0.0
    dz = u_z * agg.abs() + gamma(deg + 1) * absagg
    if root:
        dz = torch.cat([dz, torch.zeros_like(agg)], 1)
    bound = unit(dtype) * ref.abs() + dz @ w.double().abs() + gemm_bound(z, w, b, dtype)
    assert_within(got, ref, bound, dtype, "sage_fused")


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("with_root, weighted, use_rows, index_dtype, use_bias, d",
                         [(True, False, False, torch.int64, True, 16), (False, True, False, torch.int32, False, 64),
                          (True, True, True, torch.int64, True, 200), (True, False, True, torch.int32, False, 33)])
def test_sage_projected(dtype, reduce, with_root, weighted, use_rows, index_dtype, use_bias, d, generator):
    n = 300
    edge_index, ew, g = make_graph(n, 3000, generator, dtype, index_dtype, weighted)
    wide = rand(n, 2 * d, generator=generator, dtype=dtype)
    xw = wide[:, :d]  # a column block of a wider matrix
    rows = torch.cat([torch.randint(n, (100,), generator=generator), torch.tensor([0, n - 1])]) if use_rows else None
    num_out = rows.shape[0] if rows is not None else n
    root = rand(num_out, d, generator=generator, dtype=dtype) if with_root else None
    b = rand(d, generator=generator, dtype=dtype) if use_bias else None
    got = sage_projected(g.rowptr, g.col, xw, root, b, g.edge_weight, rows, reduce)
    agg, absagg, deg = sum_reference(edge_index, n, xw, reduce, ew, rows)
    extra = [t.double() for t in (root, b) if t is not None]
    ref = agg + sum(extra) if extra else agg
    abs_all = absagg + sum(t.abs() for t in extra) if extra else absagg
    bound = unit(dtype) * ref.abs() + gamma(deg + 3) * abs_all
    assert_within(got, ref, bound, dtype, "sage_projected")


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("use_rows, use_keep, use_bias, index_dtype",
                         [(False, False, True, torch.int64), (True, False, False, torch.int32),
                          (False, True, True, torch.int32), (True, True, True, torch.int64)])
def test_pruned_linear(dtype, use_rows, use_keep, use_bias, index_dtype, generator):
    n, c, d = 3000, 96, 40  # several row blocks
    x = rand(n, c, generator=generator, dtype=dtype)
    rows = torch.randint(n, (1000,), generator=generator).to(index_dtype) if use_rows else None
    keep = torch.randint(c, (50,), generator=generator).to(index_dtype) if use_keep else None  # duplicates too
    w = rand(keep.shape[0] if use_keep else c, d, generator=generator, dtype=dtype)
    b = rand(d, generator=generator, dtype=dtype) if use_bias else None
    got = pruned_linear(x, w, b, rows, keep)
    z = x.double() if rows is None else x.double()[rows.long()]
    z = z if keep is None else z[:, keep.long()]
    ref = z @ w.double() + (b.double() if b is not None else 0)
    assert_within(got, ref, unit(dtype) * ref.abs() + gemm_bound(z, w, b, dtype), dtype, "pruned_linear")


@pytest.mark.parametrize("dtype", REDUCED)
def test_fused_layer_uses_the_reduced_kernels(dtype, generator):
    """ops.fused_layer (the layers' entry) in bfloat16 / float16, fused and composed paths."""
    n, c, d = 200, 24, 20
    edge_index, _, g = make_graph(n, 2000, generator, dtype, torch.int64, False)
    x = rand(n, c, generator=generator, dtype=dtype)
    wl, wr, b = (rand(c, d, generator=generator, dtype=dtype), rand(c, d, generator=generator, dtype=dtype),
                 rand(d, generator=generator, dtype=dtype))
    agg, absagg, deg = sum_reference(edge_index, n, x, "mean")
    ref = agg @ wl.double() + x.double() @ wr.double() + b.double()
    u_z = unit(dtype)  # bfloat16 rounds the aggregated block; the composed path rounds aggregate's output
    dz = u_z * agg.abs() + gamma(deg + 1) * absagg
    z = torch.cat([agg, x.double()], 1)
    w = torch.cat([wl, wr], 0)
    # composed path: two GEMM outputs rounded before their sum (2 more roundings of the partial products)
    partial = (agg @ wl.double()).abs() + (x.double() @ wr.double()).abs() + b.double().abs()
    bound = unit(dtype) * ref.abs() + dz @ wl.double().abs() + gemm_bound(z, w, b, dtype) + 2 * unit(dtype) * partial
    with torch.no_grad():
        assert_within(fused_layer(g.rowptr, g.col, x, wl, wr, b), ref, bound, dtype, "fused_layer (fused)")
        keep = torch.arange(c)
        got = fused_layer(g.rowptr, g.col, x, wl, wr, b, neigh_keep=keep, self_keep=keep)
        assert_within(got, ref, bound, dtype, "fused_layer (composed)")


@pytest.mark.parametrize("dtype", REDUCED)
def test_torch_backend_agrees(dtype, generator):
    """The "torch" composition computes in float32 and rounds once, as the kernels do."""
    n = 150
    edge_index, ew, g = make_graph(n, 3000, generator, dtype, torch.int64, True)
    x = rand(n, 40, generator=generator, dtype=dtype)
    ref, absref, deg = sum_reference(edge_index, n, x, "mean", ew)
    bound = unit(dtype) * ref.abs() + gamma(deg + 1) * absref
    with gnnaccel.use_backend("torch"):
        got_t = aggregate(g.rowptr, g.col, x, "mean", g.edge_weight)
        got_p = sage_projected(g.rowptr, g.col, x, None, None, g.edge_weight, None, "mean")
        w = rand(40, 8, generator=generator, dtype=dtype)
        got_l = pruned_linear(x, w)
    assert_within(got_t, ref, bound, dtype, "torch backend aggregate")
    assert_within(got_p, ref, bound, dtype, "torch backend sage_projected")
    lref = x.double() @ w.double()
    assert_within(got_l, lref, unit(dtype) * lref.abs() + gemm_bound(x, w, None, dtype), dtype, "torch pruned_linear")


# ------------------------------------------------------------------------------------------------ autograd
@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_aggregate_backward(dtype, reduce, generator):
    n, c = 150, 24
    edge_index, ew, g = make_graph(n, 3000, generator, dtype, torch.int64, True)
    x = rand(n, c, generator=generator, dtype=dtype).requires_grad_()
    w = g.edge_weight.clone().requires_grad_()
    upstream = rand(n, c, generator=generator, dtype=dtype)
    (aggregate(g.rowptr, g.col, x, reduce, w) * upstream).sum().backward()
    A = dense_adjacency(edge_index, n, ew)
    deg = torch.bincount(edge_index[1], minlength=n).double()[:, None]
    scale = 1 / deg.clamp_min(1) if reduce == "mean" else torch.ones_like(deg)
    up = upstream.double() * scale  # d loss / d (weighted sum of row i)
    ref_x = A.t() @ up
    abs_x = dense_adjacency(edge_index, n, ew.abs()).t() @ up.abs()
    in_deg = torch.bincount(edge_index[0], minlength=n).double()[:, None]
    # the per-edge factor (scale * w) is rounded to the storage dtype for the transposed aggregation: u_f per term
    assert_within(x.grad, ref_x, unit(dtype) * ref_x.abs() + (unit(dtype) + gamma(in_deg + 2)) * abs_x, dtype,
                  "grad x")
    # d loss / d w_e = <upstream[dst] * scale[dst], x[src]> for the CSR's edge order
    rowptr = g.rowptr.long()
    dst = torch.repeat_interleave(torch.arange(n), rowptr[1:] - rowptr[:-1])
    terms = up[dst] * x.detach().double()[g.col.long()]
    ref_w = terms.sum(1)
    assert_within(w.grad, ref_w, unit(dtype) * ref_w.abs() + gamma(c + 2) * terms.abs().sum(1), dtype, "grad w")


@pytest.mark.parametrize("dtype", REDUCED)
def test_pruned_linear_backward(dtype, generator):
    n, c, d = 200, 30, 12
    x = rand(n, c, generator=generator, dtype=dtype).requires_grad_()
    w = rand(12, d, generator=generator, dtype=dtype).requires_grad_()
    b = rand(d, generator=generator, dtype=dtype).requires_grad_()
    rows = torch.randint(n, (300,), generator=generator)  # duplicates: their gradients add up
    keep = torch.randint(c, (12,), generator=generator)
    upstream = rand(300, d, generator=generator, dtype=dtype)
    (pruned_linear(x, w, b, rows, keep) * upstream).sum().backward()
    one = torch.ones((), dtype=torch.float64)
    P = torch.zeros(300, n, dtype=torch.float64).index_put_((torch.arange(300), rows), one.expand(300), accumulate=True)
    K = torch.zeros(c, 12, dtype=torch.float64).index_put_((keep, torch.arange(12)), one.expand(12), accumulate=True)
    up, xd, wd = upstream.double(), x.detach().double(), w.detach().double()
    ref_x = P.t() @ up @ wd.t() @ K.t()
    abs_x = P.t() @ up.abs() @ wd.abs().t() @ K.t()
    # grad of the gathered block: a GEMM rounded to the storage dtype (u_f), then index sums in float32
    rows_per_x = P.sum(0)[:, None]
    assert_within(x.grad, ref_x, unit(dtype) * ref_x.abs() + (unit(dtype) + gamma(d + rows_per_x + 2)) * abs_x,
                  dtype, "grad x")
    z = (P @ xd @ K)
    ref_w = z.t() @ up
    assert_within(w.grad, ref_w, unit(dtype) * ref_w.abs() + gamma(301) * (z.abs().t() @ up.abs()), dtype, "grad w")
    ref_b = up.sum(0)
    assert_within(b.grad, ref_b, unit(dtype) * ref_b.abs() + gamma(301) * up.abs().sum(0), dtype, "grad b")


# ------------------------------------------------------------------------------------- opcheck, compile, errors
@pytest.mark.parametrize("dtype", REDUCED)
def test_opcheck(dtype, generator):
    n = 15
    g = Graph.from_edge_index(random_edge_index(n, 60, generator), n)
    x = rand(n, 5, generator=generator, dtype=dtype)
    ew = torch.rand(g.num_edges, generator=generator).to(dtype)
    rows = torch.tensor([2, 2, 14, 0])
    for reduce in ("sum", "mean", "max", "min"):
        torch.library.opcheck(torch.ops.gnnaccel.aggregate.default,
                              (g.rowptr, g.col, x.clone().requires_grad_(), ew.clone().requires_grad_(), rows,
                               reduce, True))
        torch.library.opcheck(torch.ops.gnnaccel.aggregate.default,
                              (g.rowptr.int(), g.col.int(), x, None, rows.int(), reduce, False))
    w, b = rand(10, 4, generator=generator, dtype=dtype), rand(4, generator=generator, dtype=dtype)
    torch.library.opcheck(torch.ops.gnnaccel.sage_fused.default, (g.rowptr, g.col, x, ew, w, b, rows, "mean", True))
    torch.library.opcheck(torch.ops.gnnaccel.sage_fused.default,
                          (g.rowptr.int(), g.col.int(), x, None, w[:5], None, None, "sum", False))
    torch.library.opcheck(torch.ops.gnnaccel.sage_projected.default,
                          (g.rowptr, g.col, x, x[rows], ew, x[0], rows, "mean"))
    torch.library.opcheck(torch.ops.gnnaccel.pruned_linear.default,
                          (x.clone().requires_grad_(), w[:5].clone().requires_grad_(), b.clone().requires_grad_(),
                           rows, None))
    torch.library.opcheck(torch.ops.gnnaccel.pruned_linear.default, (x, w[:3], None, None, torch.tensor([4, 0, 4])))


@pytest.mark.parametrize("dtype", REDUCED)
def test_torch_compile_fullgraph(dtype, generator):
    n = 40
    g = Graph.from_edge_index(random_edge_index(n, 200, generator), n)
    x = rand(n, 8, generator=generator, dtype=dtype)
    w, b = rand(16, 4, generator=generator, dtype=dtype), rand(4, generator=generator, dtype=dtype)

    def layer(x, w, b):
        h = sage_fused(g.rowptr, g.col, x, w, b) + pruned_linear(aggregate(g.rowptr, g.col, x, "max"), w[:8])
        return torch.relu(sage_projected(g.rowptr, g.col, h, None, None, None, None, "mean"))

    with torch.no_grad():
        expected = layer(x, w, b)
        got = torch.compile(layer, fullgraph=True)(x, w, b)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


MIXED = [
    ("aggregate edge_weight", lambda g, x: aggregate(g.rowptr, g.col, x, "sum", torch.ones(g.num_edges))),
    ("sage_fused weight", lambda g, x: sage_fused(g.rowptr, g.col, x, torch.ones(4, 2))),
    ("sage_fused bias", lambda g, x: sage_fused(g.rowptr, g.col, x, torch.ones(4, 2, dtype=x.dtype), torch.ones(2))),
    ("sage_projected root", lambda g, x: sage_projected(g.rowptr, g.col, x, torch.ones(3, 2))),
    ("sage_projected bias", lambda g, x: sage_projected(g.rowptr, g.col, x, None, torch.ones(2))),
    ("pruned_linear weight", lambda g, x: pruned_linear(x, torch.ones(2, 2))),
    ("pruned_linear bias", lambda g, x: pruned_linear(x, torch.ones(2, 2, dtype=x.dtype), torch.ones(2))),
    ("bfloat16 with float16", lambda g, x: pruned_linear(x, torch.ones(2, 2, dtype=(
        torch.float16 if x.dtype == torch.bfloat16 else torch.bfloat16)))),
]


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("name, call", MIXED, ids=[m[0] for m in MIXED])
def test_mixed_dtypes_raise(dtype, name, call):
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    with torch.no_grad(), pytest.raises(TypeError, match="dtype"):
        call(g, torch.ones(3, 2, dtype=dtype))


# ------------------------------------------------------------------------- Triton kernels (interpreted on CPU)
@pytest.mark.parametrize("dtype", REDUCED)
def test_triton_kernels(dtype, generator):
    """The Triton kernels load bfloat16 / float16 and accumulate in float32 (the GEMM tiles too: tl.dot in
    float32), under TRITON_INTERPRET=1 on CPU tensors (tests/conftest.py sets it on a machine without CUDA)."""
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("CPU tensors run Triton kernels only under TRITON_INTERPRET=1 (tests/test_triton_gpu.py on GPU)")
    if not gnnaccel.backend.triton_available():
        pytest.skip(f"triton unavailable: {gnnaccel.backend.triton_error()}")
    # Triton's interpreter stores float32 as bfloat16 by truncating the low 16 bits (numpy has no bfloat16;
    # checked: its outputs equal the truncated float32 sums, 40% of them differ from round-to-nearest), an
    # error of up to eps instead of eps / 2. Compiled for a GPU, .to(tl.bfloat16) rounds to nearest.
    u_out = 2 * unit(dtype) if dtype == torch.bfloat16 else unit(dtype)
    n, c, d = 60, 20, 12
    edge_index, ew, g = make_graph(n, 600, generator, dtype, torch.int32, True)
    x = rand(n, c, generator=generator, dtype=dtype)
    wl, wr, b = (rand(c, d, generator=generator, dtype=dtype), rand(c, d, generator=generator, dtype=dtype),
                 rand(d, generator=generator, dtype=dtype))
    rows = torch.tensor([0, 3, n - 1, 0], dtype=torch.int32)
    with gnnaccel.use_backend("triton"), torch.no_grad():
        got_agg = aggregate(g.rowptr, g.col, x, "sum", g.edge_weight, rows)
        got_max = aggregate(g.rowptr, g.col, x, "max", None, rows)
        got_proj = sage_projected(g.rowptr, g.col, x, x[rows.long()], b[:1].expand(c).contiguous(), g.edge_weight,
                                  rows, "mean")
        got_fused = fused_layer(g.rowptr, g.col, x, wl, wr, b, g.edge_weight)
        got_lin = pruned_linear(x, wl, b, rows)
    ref, absref, deg = sum_reference(edge_index, n, x, "sum", ew, rows)
    assert_within(got_agg, ref, u_out * ref.abs() + gamma(deg + 1) * absref, dtype, "triton aggregate")
    ref_max = extreme_reference(edge_index, n, x, "max", None, rows)
    assert_within(got_max, ref_max, torch.zeros_like(ref_max), dtype, "triton max")
    ref, absref, deg = sum_reference(edge_index, n, x, "mean", ew, rows)
    extra = x.double()[rows.long()] + b.double()[0]
    ref_p = ref + extra
    assert_within(got_proj, ref_p, u_out * ref_p.abs() + gamma(deg + 3) * (absref + extra.abs()), dtype,
                  "triton sage_projected")
    agg, absagg, deg = sum_reference(edge_index, n, x, "mean", ew)
    z, w = torch.cat([agg, x.double()], 1), torch.cat([wl, wr], 0)
    ref_f = z @ w.double() + b.double()
    dz = torch.cat([gamma(deg + 1) * absagg, torch.zeros_like(agg)], 1)  # float32 block, no rounding
    assert_within(got_fused, ref_f, u_out * ref_f.abs() + dz @ w.double().abs() + gemm_bound(z, w, b, dtype),
                  dtype, "triton fused_layer")
    xs = x.double()[rows.long()]
    ref_l = xs @ wl.double() + b.double()
    assert_within(got_lin, ref_l, u_out * ref_l.abs() + gemm_bound(xs, wl, b, dtype), dtype,
                  "triton pruned_linear")


# ------------------------------------------------------------------------------------------------ gat_aggregate
def gat_reference(edge_index, n, xw, a_src, a_dst, slope=0.2):
    """float64 edge-list softmax aggregation (out, per-row max |logit|, sum_e p_e |xw[src_e]|, row degree)."""
    src, dst = edge_index
    heads, channels = a_src.shape[1], xw.shape[1]
    per = channels // heads
    z = a_src.double()[src] + a_dst.double()[dst]
    z = torch.where(z > 0, z, z * slope)
    index = dst[:, None].expand_as(z)
    m = torch.full((n, heads), float("-inf"), dtype=torch.float64).scatter_reduce(0, index, z, "amax")
    p = torch.exp(z - m[dst])
    p = p / torch.zeros(n, heads, dtype=torch.float64).index_add(0, dst, p)[dst]
    pc = p.repeat_interleave(per, 1)
    x = xw.double()[src]
    out = torch.zeros(n, channels, dtype=torch.float64).index_add(0, dst, pc * x)
    absout = torch.zeros(n, channels, dtype=torch.float64).index_add(0, dst, pc * x.abs())
    zmax = torch.zeros(n, heads, dtype=torch.float64).scatter_reduce(0, index, z.abs(), "amax")
    deg = torch.bincount(dst, minlength=n).double()[:, None]
    return out, zmax.repeat_interleave(per, 1), absout, deg


@pytest.mark.parametrize("dtype", REDUCED)
@pytest.mark.parametrize("use_rows", [False, True])
def test_gat_aggregate(dtype, use_rows, generator):
    """The float32 part of the bound: each logit is a rounded sum and product (2 u32 |z|), z - max another
    (|z| + |max| <= 2 L with L the row's largest |logit|: 6 L u32 in all), exp and every online rescale
    within 2 ulps (2 + 2 deg), the softmax sum and the weighted sum gamma(deg) each: (6 L + 4 deg + 4) u32
    times sum_e p_e |xw_e|."""
    from gnnaccel.ops.gat_aggregate import gat_aggregate
    n, heads, per = 300, 4, 24
    edge_index, _, g = make_graph(n, 6000, generator, dtype, torch.int64, False)  # hub: ~3000 edges into node 0
    xw = rand(n, heads * per, generator=generator, dtype=dtype)
    a_src, a_dst_all = (3 * torch.randn(n, heads, generator=generator)).to(dtype), \
        (3 * torch.randn(n, heads, generator=generator)).to(dtype)
    rows = torch.cat([torch.randint(n, (50,), generator=generator), torch.tensor([0, n - 1])]) if use_rows else None
    a_dst = a_dst_all[rows] if rows is not None else a_dst_all
    got = gat_aggregate(g.rowptr, g.col, xw, a_src, a_dst, rows=rows)
    ref, zmax, absout, deg = gat_reference(edge_index, n, xw, a_src, a_dst_all)
    if rows is not None:
        ref, zmax, absout, deg = ref[rows], zmax[rows], absout[rows], deg[rows]
    bound = unit(dtype) * ref.abs() + (6 * zmax + 4 * deg + 4) * U32 * absout
    assert_within(got, ref, bound, dtype, "gat_aggregate")
    with gnnaccel.use_backend("torch"):
        got_t = gat_aggregate(g.rowptr, g.col, xw, a_src, a_dst, rows=rows)
    assert_within(got_t, ref, bound, dtype, "gat_aggregate torch backend")


@pytest.mark.parametrize("dtype", REDUCED)
def test_gat_aggregate_backward_and_opcheck(dtype, generator):
    """Gradients from the float32 backward (lse kept in float32) against float64 autograd of the reference on
    the same rounded inputs. The backward reads the rounded output (u_f |out| in the softmax term) and rounds
    its results (u_f): within 4 u_f of the largest gradient entry (normwise: two roundings, each of a term at
    most the size of the gradient's largest entry, doubled for the products of the coefficients)."""
    from gnnaccel.ops.gat_aggregate import gat_aggregate
    n, heads, per = 60, 2, 8
    edge_index, _, g = make_graph(n, 600, generator, dtype, torch.int64, False)
    xw = rand(n, heads * per, generator=generator, dtype=dtype).requires_grad_()
    a_src = rand(n, heads, generator=generator, dtype=dtype).requires_grad_()
    a_dst = rand(n, heads, generator=generator, dtype=dtype).requires_grad_()
    upstream = rand(n, heads * per, generator=generator, dtype=dtype)
    (gat_aggregate(g.rowptr, g.col, xw, a_src, a_dst) * upstream).sum().backward()
    leaves = [t.detach().double().requires_grad_() for t in (xw, a_src, a_dst)]
    (gat_reference(edge_index, n, *leaves)[0] * upstream.double()).sum().backward()
    for name, got, ref in zip(("xw", "alpha_src", "alpha_dst"), (xw, a_src, a_dst), leaves):
        assert got.grad.dtype == dtype
        err = (got.grad.double() - ref.grad).abs().max().item()
        assert err <= 4 * unit(dtype) * ref.grad.abs().max().item() + tiny(dtype), (name, err)
    out, lse = torch.ops.gnnaccel.gat_aggregate(g.rowptr, g.col, xw.detach(), a_src.detach(), a_dst.detach(), None,
                                                None, 0.2)
    assert out.dtype == dtype and lse.dtype == torch.float32
    torch.library.opcheck(torch.ops.gnnaccel.gat_aggregate.default,
                          (g.rowptr, g.col, xw.detach().clone().requires_grad_(), a_src.detach(),
                           a_dst.detach()[:3], torch.tensor([3, 3, 0]), None, 0.2))
