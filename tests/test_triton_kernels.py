"""Every Triton kernel of gnnaccel, run by Triton's interpreter on CPU tensors, against the C++ CPU kernels
(float32: within 1e-5 of the terms' magnitude) and a float64 reference.

How the interpreter is switched on inside the normal ``make test`` run: Triton reads ``TRITON_INTERPRET`` when
it is first imported, so the variable must be set before anything imports triton. ``tests/conftest.py`` sets
``TRITON_INTERPRET=1`` at its own import when the machine has no CUDA driver; pytest imports conftest.py
before it imports any test module, and gnnaccel imports triton only lazily (on the first Triton op), so the
order holds in one ordinary pytest process, with no subprocess. ``test_interpreter_is_active`` fails (it
does not skip) when a machine without CUDA ends up without the interpreter, so this file can never be
skipped silently. On a GPU machine the interpreter is off and these CPU-tensor tests skip; the ``gpu`` tests
(tests/test_triton_gpu.py) run the same kernels on CUDA tensors there.

Case counts: ``pytest --collect-only -q tests/test_triton_kernels.py`` lists one item per generated case.
"""
from __future__ import annotations

import os

import pytest
import torch

import gnnaccel
from gnnaccel import backend
from gnnaccel.ops import aggregate, fused_layer, pruned_linear, sage_projected

from test_fused_layer import assert_close_to, make_case, reference, reference_aggregate

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not INTERPRETING, reason="CPU tensors run Triton kernels only under "
                                       "TRITON_INTERPRET=1 (a GPU machine runs tests/test_triton_gpu.py instead)")


def test_interpreter_is_active():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the Triton kernels are tested on CUDA tensors (tests/test_triton_gpu.py)")
    assert INTERPRETING, "no GPU and TRITON_INTERPRET is not 1: tests/conftest.py must set it before triton loads"
    assert backend.triton_available(), backend.triton_error()
    from triton.runtime.interpreter import InterpretedFunction
    from gnnaccel.kernels import aggregate as agg_kernels, fused_layer as fused_kernels
    assert isinstance(fused_kernels._fused_layer_kernel, InterpretedFunction)
    assert isinstance(agg_kernels._aggregate_kernel, InterpretedFunction)


def _run(name, fn, *args, **kwargs):
    with gnnaccel.use_backend(name):
        return fn(*args, **kwargs)


def _check_against_cpp_and_reference(triton_out, cpp_out, expected, scale, dtype):
    assert_close_to(triton_out, expected, scale, dtype)
    if cpp_out is not None:  # the C++ CPU path: same tolerance, measured against the same scale
        assert_close_to(triton_out, cpp_out.double(), scale, dtype)


# ------------------------------------------------------------------------------------------------ fused_layer
FUSED_SEEDS = range(90)


@needs_interpreter
@pytest.mark.parametrize("seed", FUSED_SEEDS)
def test_fused_layer_generated(seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(seed, dtype=dtype)
    got = _run("triton", fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    cpp = _run("cpp", fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    _check_against_cpp_and_reference(got, cpp, reference(case), reference(case, absolute=True), dtype)


FUSED_EDGE_CASES = {
    "row of degree 5000, mean": dict(hub=5000, num_rows=17, reduce="mean", self_branch=True),
    "row of degree 5000, weighted max, rows": dict(hub=5000, num_rows=9, reduce="max", weighted=True, rows=True),
    "row of degree 5000, gcn sum": dict(hub=5000, num_rows=5, reduce="sum", weighted=True, self_branch=False),
    "no edges": dict(num_edges=0, self_branch=True),
    "keep size 1, width 1": dict(channels=1, neigh_keep=True, self_keep=True, self_branch=True, out=1),
    "keep size 1 of 70": dict(channels=70, neigh_keep=True, self_keep=True, self_branch=True, out=33),
    "rows + self rows, int32": dict(index_dtype=torch.int32, rows=True, self_rows=True, self_branch=True),
    "widths 17 -> 80 (not multiples of the blocks)": dict(channels=17, out=80, self_branch=True),
    "bf16-free float64 sum": dict(dtype=torch.float64, reduce="sum", weighted=True),
}


@needs_interpreter
@pytest.mark.parametrize("name", list(FUSED_EDGE_CASES))
def test_fused_layer_edge_cases(name):
    opts = dict(FUSED_EDGE_CASES[name])
    dtype = opts.pop("dtype", torch.float32)
    case = make_case(500 + len(name), dtype=dtype, **opts)
    got = _run("triton", fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    cpp = _run("cpp", fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    _check_against_cpp_and_reference(got, cpp, reference(case), reference(case, absolute=True), dtype)


@needs_interpreter
def test_fused_layer_zero_output_rows():
    case = make_case(3, rows=False, self_branch=True)
    case.rows = torch.empty(0, dtype=case.rowptr.dtype)
    case.self_rows = None
    got = _run("triton", fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    assert got.shape == (0, case.w_neigh.shape[1])


# -------------------------------------------------------------------------------------------------- aggregate
AGG_SEEDS = range(40)


@needs_interpreter
@pytest.mark.parametrize("seed", AGG_SEEDS)
def test_aggregate_generated(seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(2000 + seed, dtype=dtype, hub=5000 if seed == 7 else 0)
    reduce = ("sum", "mean", "max", "min")[seed % 4]
    args = (case.rowptr, case.col, case.x, reduce, case.edge_weight, case.rows)
    got = _run("triton", aggregate, *args)
    cpp = _run("cpp", aggregate, *args)
    expected = reference_aggregate(case.rowptr, case.col, case.x, reduce, case.edge_weight, case.rows)
    scale = reference_aggregate(case.rowptr, case.col, case.x, reduce, case.edge_weight, case.rows, absolute=True)
    _check_against_cpp_and_reference(got, cpp, expected, scale, dtype)


# --------------------------------------------------------------------------------------------- sage_projected
PROJ_SEEDS = range(25)


@needs_interpreter
@pytest.mark.parametrize("seed", PROJ_SEEDS)
def test_sage_projected_generated(seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(3000 + seed, dtype=dtype, reduce=("sum", "mean")[seed % 2], hub=5000 if seed == 3 else 0)
    gen = torch.Generator().manual_seed(seed)
    num_out = case.rows.shape[0] if case.rows is not None else case.rowptr.shape[0] - 1
    d = case.x.shape[1]
    if seed % 3 == 0:  # xw and root as column blocks of one wider matrix (a combined projection)
        wide = torch.randn(case.x.shape[0], 2 * d + 1, generator=gen, dtype=torch.float64).to(dtype)
        xw, root = wide[:, :d], wide[:num_out, d:2 * d] if num_out <= wide.shape[0] else None
    else:
        xw = case.x
        root = torch.randn(num_out, d, generator=gen, dtype=torch.float64).to(dtype) if seed % 3 == 1 else None
    bias = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype) if seed % 2 else None
    args = (case.rowptr, case.col, xw, root, bias, case.edge_weight, case.rows, case.reduce)
    with torch.no_grad():
        got = _run("triton", sage_projected, *args)
        cpp = _run("cpp", sage_projected, *args)
    expected = reference_aggregate(case.rowptr, case.col, xw, case.reduce, case.edge_weight, case.rows)
    scale = reference_aggregate(case.rowptr, case.col, xw, case.reduce, case.edge_weight, case.rows, absolute=True)
    for extra in (root, bias):
        if extra is not None:
            expected, scale = expected + extra.double(), scale + extra.double().abs()
    _check_against_cpp_and_reference(got, cpp, expected, scale, dtype)


# ---------------------------------------------------------------------------------------------- pruned_linear
LINEAR_SEEDS = range(30)


@needs_interpreter
@pytest.mark.parametrize("seed", LINEAR_SEEDS)
def test_pruned_linear_generated(seed):
    gen = torch.Generator().manual_seed(4000 + seed)
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    n, c, d = (int(v) for v in (torch.randint(1, 60, ()), torch.randint(1, 75, ()), torch.randint(1, 90, ())))
    x = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    index_dtype = (torch.int32, torch.int64)[seed % 2]
    rows = torch.randint(n, (int(torch.randint(0, 40, ())),), generator=gen).to(index_dtype) if seed % 3 else None
    keep = (torch.randperm(c, generator=gen)[:1 if seed % 4 == 1 else max(c // 2, 1)].to(index_dtype)
            if seed % 4 else None)
    k = keep.shape[0] if keep is not None else c
    w = torch.randn(k, d, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype) if seed % 2 else None
    got = _run("triton", pruned_linear, x, w, b, rows, keep)
    cpp = _run("cpp", pruned_linear, x, w, b, rows, keep)
    z = x.double() if rows is None else x.double()[rows.long()]
    z = z if keep is None else z[:, keep.long()]
    expected = z @ w.double() + (b.double() if b is not None else 0)
    scale = z.abs() @ w.double().abs() + (b.double().abs() if b is not None else 0)
    _check_against_cpp_and_reference(got, cpp, expected, scale, dtype)


# ------------------------------------------------------------------------------------- bad indices, no crash
@needs_interpreter
def test_out_of_range_indices_raise_in_the_entry_points():
    case = make_case(5, num_rows=10, rows=False, self_branch=True, self_rows=False, neigh_keep=False)
    with gnnaccel.use_backend("triton"):
        with pytest.raises(IndexError, match="rows holds index 10"):
            fused_layer(case.rowptr, case.col, case.x, case.w_neigh, rows=torch.tensor([10]))
        with pytest.raises(IndexError, match="neigh_keep holds index -1"):
            fused_layer(case.rowptr, case.col, case.x, case.w_neigh[:1], neigh_keep=torch.tensor([-1]))
        with pytest.raises(IndexError, match="rows holds index"):
            aggregate(case.rowptr, case.col, case.x, rows=torch.tensor([2 ** 32]))
        with pytest.raises(IndexError, match="keep holds index"):
            pruned_linear(case.x, case.w_neigh[:1], keep=torch.tensor([case.x.shape[1]]))


@needs_interpreter
def test_kernels_never_read_out_of_bounds():
    """Called directly (no entry-point check), the kernels mark a row that would read out of range as NaN and
    compute the others."""
    rowptr = torch.tensor([0, 2, 3, 3])
    col = torch.tensor([1, 99, 0])  # row 0 has an edge to node 99 of a 3-node table
    x = torch.randn(3, 4)
    w = torch.randn(4, 5)
    out = torch.ops.gnnaccel.triton_fused_layer(rowptr, col, x, w, None, None, None, None, None, None, None, "sum")
    assert out[0].isnan().all() and torch.isfinite(out[1:]).all()
    torch.testing.assert_close(out[1], x[0] @ w)
    agg = torch.ops.gnnaccel.triton_aggregate(rowptr, col, x, None, torch.tensor([2, 5, -1, 1]), None, None, "max")
    assert agg[1:3].isnan().all() and (agg[0] == 0).all() and torch.equal(agg[3], x[0])
    lin = torch.ops.gnnaccel.triton_pruned_linear(x, w[:2], None, torch.tensor([0, 3]), torch.tensor([1, 7]))
    assert lin.isnan().all()


# ------------------------------------------------------------------------------------- opcheck and compile
def _small_graph():
    case = make_case(9, num_rows=12, channels=16, out=16, num_edges=40, rows=False, self_branch=True,
                     self_rows=False, neigh_keep=False, self_keep=False, weighted=True, bias=True)
    return case


@needs_interpreter
@pytest.mark.parametrize("op", ["triton_fused_layer", "triton_aggregate", "triton_pruned_linear"])
def test_opcheck(op):
    c = _small_graph()
    args = {"triton_fused_layer": (c.rowptr, c.col, c.x, c.w_neigh, c.w_self, c.bias, c.edge_weight,
                                   torch.tensor([3, 0, 3]), None, None, None, "mean"),
            "triton_aggregate": (c.rowptr, c.col, c.x, c.edge_weight, None, None, c.bias, "max"),
            "triton_pruned_linear": (c.x, c.w_neigh[:4], c.bias, torch.tensor([1, 1, 5]), torch.tensor([0, 9, 2, 3]))}
    torch.library.opcheck(getattr(torch.ops.gnnaccel, op).default, args[op])


@needs_interpreter
def test_compiled_model_on_triton_backend():
    """torch.compile(fullgraph=True) over a two-layer model whose every op runs a Triton kernel. Under the
    interpreter the Triton ops are opaque to the compiler (aot_eager runs them); on a GPU Inductor sees into
    them (tests/test_triton_gpu.py)."""
    from gnnaccel.models import GraphSAGE
    gen = torch.Generator().manual_seed(0)
    n = 30
    g = gnnaccel.Graph.from_edge_index(torch.randint(n, (2, 120), generator=gen), n)
    x = torch.randn(n, 20, generator=gen)
    model = GraphSAGE(20, 24, 6, num_layers=2).eval()
    with torch.no_grad():
        expected = _run("cpp", model, x, g)
        with gnnaccel.use_backend("triton"):
            compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
            got = compiled(x, g)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
