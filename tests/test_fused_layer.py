"""``gnnaccel.ops.fused_layer`` on the "cpp" and "torch" backends against a float64 reference.

The case generator and the reference live here and are shared with the Triton tests (test_triton_kernels.py):
random CSR blocks whose sources index a feature table that may be larger than the CSR, with empty rows,
isolated nodes, self loops, duplicate edges, an optional hub row of thousands of edges, row / self-row
subsets (with duplicates), kept-channel subsets (down to one channel), int32 and int64 indices.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import torch

import gnnaccel
from gnnaccel.ops import aggregate, fused_layer, pruned_linear, sage_fused, sage_projected

REDUCES = ("sum", "mean", "max")


@dataclasses.dataclass
class Case:
    rowptr: torch.Tensor
    col: torch.Tensor
    x: torch.Tensor
    w_neigh: torch.Tensor
    w_self: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    edge_weight: Optional[torch.Tensor]
    rows: Optional[torch.Tensor]
    self_rows: Optional[torch.Tensor]
    neigh_keep: Optional[torch.Tensor]
    self_keep: Optional[torch.Tensor]
    reduce: str

    def args(self):
        return (self.rowptr, self.col, self.x, self.w_neigh, self.w_self, self.bias, self.edge_weight, self.rows,
                self.self_rows, self.neigh_keep, self.self_keep, self.reduce)

    def kwargs(self):
        return dict(w_self=self.w_self, bias=self.bias, edge_weight=self.edge_weight, rows=self.rows,
                    self_rows=self.self_rows, neigh_keep=self.neigh_keep, self_keep=self.self_keep, reduce=self.reduce)


def random_csr(num_rows: int, num_src: int, num_edges: int, gen: torch.Generator, hub: int = 0,
               index_dtype=torch.int64):
    """CSR [num_rows] -> [num_src] with self loops, duplicates, empty rows (a third of the rows get no edge
    unless the graph is dense) and optionally row 0 with ``hub`` extra edges."""
    dst = torch.randint(max(num_rows, 1), (num_edges,), generator=gen) if num_rows else torch.empty(0, dtype=torch.long)
    if num_rows >= 3 and num_edges:
        dst = torch.where(dst % 3 == 1, (dst + 1) % num_rows, dst)  # rows = 1 mod 3 stay empty (mostly)
    src = torch.randint(max(num_src, 1), (num_edges,), generator=gen) if num_src else torch.empty(0, dtype=torch.long)
    if num_edges >= 4 and num_rows:
        k = num_edges // 4
        src[:k] = dst[:k] % num_src  # self loops (when the row is also a source)
        src[k:2 * k], dst[k:2 * k] = src[2 * k:3 * k], dst[2 * k:3 * k]  # duplicate edges
    if hub and num_rows:
        dst = torch.cat([dst, torch.zeros(hub, dtype=torch.long)])
        src = torch.cat([src, torch.randint(num_src, (hub,), generator=gen)])
    order = torch.argsort(dst, stable=True)
    counts = torch.bincount(dst, minlength=num_rows)
    rowptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    return rowptr.to(index_dtype), src[order].to(index_dtype)


def make_case(seed: int, *, num_rows=None, channels=None, out=None, reduce=None, hub=0, dtype=torch.float32,
              index_dtype=None, self_branch=None, rows=None, self_rows=None, neigh_keep=None, self_keep=None,
              weighted=None, bias=None, num_edges=None) -> Case:
    """A random fused-layer problem; every option left None is drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def pick(value, choices):
        return value if value is not None else choices[int(torch.randint(len(choices), (1,), generator=gen))]

    num_rows = pick(num_rows, [1, 7, 19, 33, 50])
    num_src = num_rows + pick(None, [0, 0, 5, 40])  # a feature table larger than the CSR
    channels = pick(channels, [1, 3, 16, 17, 40, 70])
    out = pick(out, [1, 5, 16, 24, 33, 80])
    reduce = pick(reduce, list(REDUCES))
    index_dtype = pick(index_dtype, [torch.int32, torch.int64])
    num_edges = pick(num_edges, [0, num_rows, 4 * num_rows, 10 * num_rows])
    rowptr, col = random_csr(num_rows, num_src, num_edges, gen, hub, index_dtype)
    x = torch.randn(num_src, channels, generator=gen, dtype=torch.float64).to(dtype)

    def subset(flag, size_choices, bound, dup=False):
        if not pick(flag, [False, True]):
            return None
        size = pick(None, size_choices)
        idx = (torch.randint(bound, (size,), generator=gen) if dup
               else torch.randperm(bound, generator=gen)[:size])
        return idx.to(pick(None, [torch.int32, torch.int64]))

    neigh_keep = subset(neigh_keep, [1, max(channels // 2, 1), channels], channels)
    self_keep = subset(self_keep, [1, max(channels // 3, 1), channels], channels)
    self_branch = pick(self_branch, [True, True, False])
    rows = subset(rows, [0, 1, 5, num_rows + 3], num_rows, dup=True)
    num_out = rows.shape[0] if rows is not None else num_rows
    if self_branch and pick(self_rows, [False, True]):
        self_rows = torch.randint(num_src, (num_out,), generator=gen).to(pick(None, [torch.int32, torch.int64]))
    else:
        self_rows = None
    k_n = neigh_keep.shape[0] if neigh_keep is not None else channels
    k_s = self_keep.shape[0] if self_keep is not None else channels
    w_neigh = torch.randn(k_n, out, generator=gen, dtype=torch.float64).to(dtype)
    w_self = torch.randn(k_s, out, generator=gen, dtype=torch.float64).to(dtype) if self_branch else None
    if not self_branch:
        self_keep = None
    b = torch.randn(out, generator=gen, dtype=torch.float64).to(dtype) if pick(bias, [False, True]) else None
    ew = (torch.rand(col.shape[0], generator=gen, dtype=torch.float64) + 0.25).to(dtype) \
        if pick(weighted, [False, True]) else None
    return Case(rowptr, col, x, w_neigh, w_self, b, ew, rows, self_rows, neigh_keep, self_keep, reduce)


def reference_aggregate(rowptr, col, x, reduce, edge_weight=None, rows=None, absolute=False) -> torch.Tensor:
    """Float64 loop over output rows: ``reduce_{e in row r_i} w_e x[col[e]]``, 0 for an empty row.
    ``absolute``: the same over |terms| (max and min: the largest |term|), the scale of rounding errors."""
    f = (lambda t: t.double().abs()) if absolute else (lambda t: t.double())
    rows = rows.long() if rows is not None else torch.arange(rowptr.shape[0] - 1)
    x = f(x)
    rp, col = rowptr.long(), col.long()
    agg = torch.zeros(rows.shape[0], x.shape[1], dtype=torch.float64)
    for i, r in enumerate(rows.tolist()):
        e0, e1 = int(rp[r]), int(rp[r + 1])
        if e1 == e0:
            continue
        msgs = x[col[e0:e1]]
        if edge_weight is not None:
            msgs = msgs * f(edge_weight[e0:e1])[:, None]
        if reduce == "sum":
            agg[i] = msgs.sum(0)
        elif reduce == "mean":
            agg[i] = msgs.mean(0)
        elif absolute:
            agg[i] = msgs.max(0).values
        else:
            agg[i] = msgs.max(0).values if reduce == "max" else msgs.min(0).values
    return agg


def reference(case: Case, absolute: bool = False) -> torch.Tensor:
    """Float64 fused layer. ``absolute``: the same over |terms| (the scale of rounding errors)."""
    f = (lambda t: t.double().abs()) if absolute else (lambda t: t.double())
    x = case.x if case.neigh_keep is None else case.x[:, case.neigh_keep.long()]
    out = reference_aggregate(case.rowptr, case.col, x, case.reduce, case.edge_weight, case.rows,
                              absolute) @ f(case.w_neigh)
    if case.w_self is not None:
        rows = case.rows.long() if case.rows is not None else torch.arange(case.rowptr.shape[0] - 1)
        srows = case.self_rows.long() if case.self_rows is not None else rows
        xs = f(case.x)[srows]
        xs = xs if case.self_keep is None else xs[:, case.self_keep.long()]
        out = out + xs @ f(case.w_self)
    if case.bias is not None:
        out = out + f(case.bias)
    return out


# Rounding tolerance relative to the magnitude of the terms (the float64 sum over |terms|).
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def assert_close_to(got: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    err = (got.double().cpu() - expected).abs()
    bound = RTOL[dtype] * scale  # exact where every term is 0
    assert (err <= bound).all(), f"max error {err.max().item():.3g}, worst ratio {(err / bound).max().item():.3g}"


CASE_SEEDS = range(60)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("seed", CASE_SEEDS)
def test_generated_cases_match_reference(backend, seed):
    dtype = torch.float64 if seed % 4 == 3 else torch.float32
    case = make_case(seed, dtype=dtype)
    with gnnaccel.use_backend(backend):
        got = fused_layer(case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    assert_close_to(got, reference(case), reference(case, absolute=True), dtype)


EDGE_CASES = {
    "no edges": dict(num_edges=0),
    "hub of 5000 edges": dict(hub=5000, num_rows=20, reduce="mean"),
    "hub max weighted": dict(hub=3000, num_rows=9, reduce="max", weighted=True),
    "keep size 1 both branches": dict(neigh_keep=True, self_keep=True, channels=1, self_branch=True),
    "rows and self rows": dict(rows=True, self_branch=True, self_rows=True, neigh_keep=True, self_keep=True),
    "empty row subset": dict(rows=True, num_rows=1, num_edges=0),
    "gcn weighted sum no self": dict(reduce="sum", weighted=True, self_branch=False, bias=True),
    "int32 indices everywhere": dict(index_dtype=torch.int32, rows=True, self_branch=True, self_rows=True),
}


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases(backend, name):
    for seed in range(3):
        case = make_case(1000 + seed, **EDGE_CASES[name])
        with gnnaccel.use_backend(backend):
            got = fused_layer(case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
        assert_close_to(got, reference(case), reference(case, absolute=True), torch.float32)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("reduce", REDUCES)
def test_gradients_match_reference(backend, reduce):
    """With grad, the entry composes differentiable ops; compare against autograd of the float64 reference."""
    case = make_case(7, num_rows=19, channels=6, out=5, reduce=reduce, dtype=torch.float64, self_branch=True,
                     neigh_keep=True, self_keep=True, rows=False, self_rows=False, weighted=True, bias=True,
                     num_edges=60)
    case.rows = torch.tensor([0, 5, 2, 5, 18, 1])  # duplicates and an empty row (1 mod 3)
    leaves = [t.clone().requires_grad_() for t in (case.x, case.w_neigh, case.w_self, case.bias, case.edge_weight)]
    x, wn, ws, b, ew = leaves
    with gnnaccel.use_backend(backend):
        got = fused_layer(case.rowptr, case.col, x, wn, ws, b, ew, case.rows, None, case.neigh_keep,
                          case.self_keep, reduce)
    upstream = torch.randn(got.shape, dtype=torch.float64)
    grads = torch.autograd.grad((got * upstream).sum(), leaves, allow_unused=True, materialize_grads=True)
    ref_leaves = [t.clone().requires_grad_() for t in leaves]
    ref_case = dataclasses.replace(case, x=ref_leaves[0], w_neigh=ref_leaves[1], w_self=ref_leaves[2],
                                   bias=ref_leaves[3], edge_weight=ref_leaves[4])
    expected = torch.autograd.grad((reference(ref_case) * upstream).sum(), ref_leaves, allow_unused=True,
                                   materialize_grads=True)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_compiles_fullgraph(backend):
    case = make_case(11, num_rows=30, channels=12, out=8, reduce="mean", self_branch=True, rows=True,
                     neigh_keep=True, self_keep=False, self_rows=False, weighted=True, bias=True, num_edges=120)

    def fn(x):
        return fused_layer(case.rowptr, case.col, x, case.w_neigh, **case.kwargs())

    with gnnaccel.use_backend(backend):
        expected = fn(case.x)
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        got = compiled(case.x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_backend_choice_inside_compiled_function_is_guarded():
    case = make_case(12, num_rows=10, channels=4, out=4, reduce="sum", self_branch=False, rows=False,
                     neigh_keep=False, weighted=False, bias=False, num_edges=30)
    compiled = torch.compile(lambda x: fused_layer(case.rowptr, case.col, x, case.w_neigh, reduce="sum"),
                             fullgraph=True)
    for backend in ("cpp", "torch", "cpp"):
        with gnnaccel.use_backend(backend):
            torch.testing.assert_close(compiled(case.x), reference(case).float(), rtol=1e-5, atol=1e-5)


def _tiny():
    rowptr = torch.tensor([0, 2, 3, 3])
    col = torch.tensor([1, 2, 0])
    return rowptr, col, torch.randn(3, 4), torch.randn(4, 2)


BAD_CALLS = [
    ("float rows", lambda r, c, x, w: fused_layer(r, c, x, w, rows=torch.tensor([1.5])), TypeError,
     "rows must hold int32 or int64"),
    ("bool rows", lambda r, c, x, w: fused_layer(r, c, x, w, rows=torch.tensor([True, False, True])), TypeError,
     "boolean mask"),
    ("list rows", lambda r, c, x, w: fused_layer(r, c, x, w, rows=[0, 1]), TypeError, "rows must be a 1-D"),
    ("float self_rows", lambda r, c, x, w: fused_layer(r, c, x, w, w, self_rows=torch.tensor([0., 1., 2.])),
     TypeError, "self_rows must hold"),
    ("self_rows length", lambda r, c, x, w: fused_layer(r, c, x, w, w, self_rows=torch.tensor([0])), ValueError,
     "one entry per output row"),
    ("self_rows without w_self", lambda r, c, x, w: fused_layer(r, c, x, w, self_rows=torch.tensor([0, 1, 2])),
     ValueError, "without w_self"),
    ("w_neigh rows", lambda r, c, x, w: fused_layer(r, c, x, w, neigh_keep=torch.tensor([0])), ValueError,
     "w_neigh must be"),
    ("w_self width", lambda r, c, x, w: fused_layer(r, c, x, w, torch.randn(4, 3)), ValueError, "w_self must be"),
    ("bias shape", lambda r, c, x, w: fused_layer(r, c, x, w, bias=torch.randn(3)), ValueError, "bias must have"),
    ("bias dtype", lambda r, c, x, w: fused_layer(r, c, x, w, bias=torch.randn(2).double()), TypeError, "bias must"),
    ("reduce min", lambda r, c, x, w: fused_layer(r, c, x, w, reduce="min"), ValueError, "fused_layer supports"),
    ("integer x", lambda r, c, x, w: fused_layer(r, c, x.long(), w), TypeError, "floating-point"),
    ("x too short for self", lambda r, c, x, w: fused_layer(r, c, x[:2], w, w), ValueError, "at least 3 rows"),
    ("int64 row 2**32 on int32 graph", lambda r, c, x, w: fused_layer(r.int(), c.int(), x, w, w,
                                                                      rows=torch.tensor([2 ** 32 + 1])),
     RuntimeError, "rows holds an index outside"),
    ("int64 row 2**32 on int32 graph, composed", lambda r, c, x, w: fused_layer(
        r.int(), c.int(), x, w, reduce="max", rows=torch.tensor([2 ** 32])), RuntimeError, "rows holds an index"),
    ("row out of range", lambda r, c, x, w: fused_layer(r, c, x, w, rows=torch.tensor([3])), RuntimeError,
     "rows holds an index outside"),
    ("sage_fused float rows", lambda r, c, x, w: sage_fused(r, c, x, torch.randn(8, 2), rows=torch.tensor([0.])),
     TypeError, "rows must hold"),
    ("sage_fused int64 row 2**32 on int32 graph", lambda r, c, x, w: sage_fused(
        r.int(), c.int(), x, torch.randn(8, 2), rows=torch.tensor([2 ** 32 + 2])), RuntimeError, "rows holds an index"),
    ("pruned_linear bool rows", lambda r, c, x, w: pruned_linear(x, w, rows=torch.tensor([True, True, False])),
     TypeError, "boolean mask"),
    ("pruned_linear float keep", lambda r, c, x, w: pruned_linear(x, w[:1], keep=torch.tensor([0.])), TypeError,
     "keep must hold"),
    ("sage_projected float rows", lambda r, c, x, w: sage_projected(r, c, x, rows=torch.tensor([0.])), TypeError,
     "rows must hold"),
    ("aggregate bool rows", lambda r, c, x, w: aggregate(r, c, x, rows=torch.tensor([True])), TypeError,
     "boolean mask"),
]


@pytest.mark.parametrize("name, call, exc, match", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_clear_error(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(*_tiny())


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_int32_graph_int64_rows_in_range(backend):
    """Narrowing rows onto an int32 graph keeps every valid row exact."""
    case = make_case(21, index_dtype=torch.int32, rows=True, self_branch=True, self_rows=False)
    case.rows = case.rows.long()
    with gnnaccel.use_backend(backend):
        got = fused_layer(case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    assert_close_to(got, reference(case), reference(case, absolute=True), torch.float32)


def test_sage_fused_matches_fused_layer_on_every_backend():
    case = make_case(31, num_rows=25, channels=9, out=7, reduce="mean", self_branch=True, rows=True, self_rows=False,
                     neigh_keep=False, self_keep=False, weighted=True, bias=True)
    weight = torch.cat([case.w_neigh, case.w_self], 0)
    for backend in ("cpp", "torch"):
        with gnnaccel.use_backend(backend):
            got = sage_fused(case.rowptr, case.col, case.x, weight, case.bias, case.edge_weight, case.rows, "mean")
        assert_close_to(got, reference(case), reference(case, absolute=True), torch.float32)
