"""gnnaccel::gat_aggregate (the fused attention aggregation): C++ kernel, torch composition and Triton kernel
(under Triton's interpreter) against a float64 per-row reference written with torch.softmax; edge cases (empty
rows, no edges, a hub of thousands of edges with large logits, row subsets, int32 graphs, strided inputs,
per-channel heads); opcheck, gradients, torch.compile(fullgraph=True), bad inputs."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import gnnaccel
from gnnaccel.graph import Graph
from gnnaccel.ops.gat_aggregate import gat_aggregate, gat_aggregate_torch

from conftest import random_edge_index

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(autouse=True)
def _own_rng():
    """These tests seed the global RNG: restore it afterwards, so the seeds later test modules draw stay theirs."""
    with torch.random.fork_rng():
        yield


def reference(rowptr, col, xw, a_src, a_dst, rows, head_index, slope):
    """Float64: per output row, per head, torch.softmax over the row's edges."""
    xw, a_src, a_dst = xw.double(), a_src.double(), a_dst.double()
    heads = a_src.shape[1]
    d = xw.shape[1]
    head = head_index if head_index is not None else torch.arange(d) // (d // heads)
    num_out = a_dst.shape[0]
    out = torch.zeros(num_out, d, dtype=torch.float64)
    for i in range(num_out):
        r = int(rows[i]) if rows is not None else i
        src = col[int(rowptr[r]):int(rowptr[r + 1])].long()
        if src.numel() == 0:
            continue
        p = torch.softmax(F.leaky_relu(a_src[src] + a_dst[i], slope), dim=0)  # [deg, H]
        out[i] = (p[:, head] * xw[src]).sum(0)
    return out


def make_case(seed, n=40, num_edges=160, heads=3, per_head=5, dtype=torch.float64, hub=0, rows=False,
              index_dtype=torch.int64, head_map=False, scale=1.0, strided=False):
    g = torch.Generator().manual_seed(seed)
    ei = random_edge_index(n, num_edges, g, power_law=True)
    if hub:
        ei = torch.cat([ei, torch.stack([torch.randint(n, (hub,), generator=g), torch.full((hub,), 1)])], 1)
    graph = Graph.from_edge_index(ei, n, index_dtype=index_dtype)  # the last nodes are often isolated
    d = heads * per_head
    wide = torch.randn(n, d + heads + 3, generator=g, dtype=torch.float64).to(dtype)
    xw = wide[:, :d] if strided else wide[:, :d].contiguous()
    a_src = (wide[:, d:d + heads] * scale) if strided else (wide[:, d:d + heads] * scale).contiguous()
    r = torch.randint(n, (17,), generator=g).to(index_dtype) if rows else None
    num_out = 17 if rows else n
    a_dst = (torch.randn(num_out, heads, generator=g, dtype=torch.float64) * scale).to(dtype)
    head_index = torch.randint(heads, (d,), generator=g) if head_map else None
    return graph.rowptr, graph.col, xw, a_src, a_dst, r, head_index


CASES = {
    "plain": dict(),
    "float32": dict(dtype=torch.float32),
    "rows, int32": dict(rows=True, index_dtype=torch.int32),
    "head_index": dict(head_map=True),
    "strided xw and alpha_src": dict(strided=True),
    "one head": dict(heads=1, per_head=7),
    "hub of 5000 edges, logits ~ 200, float32": dict(hub=5000, scale=100.0, dtype=torch.float32),
    "no edges": dict(num_edges=0),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_matches_reference(name, backend):
    args = make_case(1, **CASES[name])
    expected = reference(*args, 0.2)
    with gnnaccel.use_backend(backend):
        got = gat_aggregate(*args, negative_slope=0.2)
    assert got.dtype == args[2].dtype
    tol = 1e-5 if args[2].dtype == torch.float32 else 1e-12
    scale = expected.abs().max().clamp_min(1.0)
    assert torch.allclose(got.double(), expected, atol=tol * scale, rtol=0), (got.double() - expected).abs().max()
    if CASES[name].get("num_edges") == 0:
        assert torch.equal(got, torch.zeros_like(got))


def test_lse_output():
    rowptr, col, xw, a_src, a_dst, rows, hi = make_case(2)
    _, lse = torch.ops.gnnaccel.gat_aggregate(rowptr, col, xw, a_src, a_dst, rows, hi, 0.3)
    for i in range(a_dst.shape[0]):
        src = col[int(rowptr[i]):int(rowptr[i + 1])]
        want = (torch.logsumexp(F.leaky_relu(a_src[src] + a_dst[i], 0.3), 0) if src.numel()
                else torch.zeros(a_src.shape[1], dtype=torch.float64))
        assert torch.allclose(lse[i], want, atol=1e-12)


@pytest.mark.skipif(not INTERPRETING, reason="CPU tensors run Triton kernels only under TRITON_INTERPRET=1")
@pytest.mark.parametrize("name", ["plain", "float32", "rows, int32", "head_index", "strided xw and alpha_src",
                                  "hub of 5000 edges, logits ~ 200, float32", "no edges"])
def test_triton_interpreter_matches_cpp(name):
    small = {"n": 24, "num_edges": 60} if "hub" not in name else {"hub": 400}  # the interpreter is slow
    args = make_case(3, **{**CASES[name], **small})
    with gnnaccel.use_backend("triton"):
        got = gat_aggregate(*args, negative_slope=0.2)
    with gnnaccel.use_backend("cpp"):
        cpp = gat_aggregate(*args, negative_slope=0.2)
    expected = reference(*args, 0.2)
    tol = 1e-5 if args[2].dtype == torch.float32 else 1e-12
    scale = expected.abs().max().clamp_min(1.0)
    assert torch.allclose(got.double(), expected, atol=tol * scale, rtol=0)
    assert torch.allclose(got.double(), cpp.double(), atol=tol * scale, rtol=0)


def test_opcheck():
    for kw in (dict(rows=True, index_dtype=torch.int32, head_map=True), dict(num_edges=0)):
        rowptr, col, xw, a_src, a_dst, rows, hi = make_case(4, **{"n": 12, "num_edges": 40, **kw})
        args = (rowptr, col, xw.requires_grad_(), a_src.requires_grad_(), a_dst.requires_grad_(), rows, hi, 0.2)
        torch.library.opcheck(torch.ops.gnnaccel.gat_aggregate.default, args)


@pytest.mark.parametrize("kw", [dict(), dict(rows=True), dict(head_map=True)])
def test_gradcheck(kw):
    rowptr, col, xw, a_src, a_dst, rows, hi = make_case(5, n=9, num_edges=30, heads=2, per_head=2, **kw)
    inputs = (xw.requires_grad_(), a_src.requires_grad_(), a_dst.requires_grad_())
    fn = lambda a, b, c: gat_aggregate(rowptr, col, a, b, c, rows, hi, 0.2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradient_matches_torch_composition():
    rowptr, col, xw, a_src, a_dst, rows, hi = make_case(6, rows=True)
    grads = []
    for fn in (gat_aggregate, gat_aggregate_torch):
        leaves = [t.detach().clone().requires_grad_() for t in (xw, a_src, a_dst)]
        out = fn(rowptr, col, *leaves, rows, hi, 0.2)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)


def test_dropout_only_in_training():
    args = make_case(7)
    base = gat_aggregate(*args)
    assert torch.equal(gat_aggregate(*args, dropout=0.5, training=False), base)
    torch.manual_seed(0)
    dropped = gat_aggregate(*args, dropout=0.5, training=True)
    assert not torch.allclose(dropped, base)


def test_compile_fullgraph():
    rowptr, col, xw, a_src, a_dst, _, _ = make_case(8, dtype=torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def fn(rowptr, col, xw, a_src, a_dst):
        return gat_aggregate(rowptr, col, xw, a_src, a_dst, None, None, 0.2) * 2

    assert torch.allclose(fn(rowptr, col, xw, a_src, a_dst), 2 * gat_aggregate(rowptr, col, xw, a_src, a_dst),
                          atol=1e-6)


def test_bad_inputs():
    rowptr, col, xw, a_src, a_dst, _, _ = make_case(9)
    with pytest.raises(ValueError, match="alpha_dst"):
        gat_aggregate(rowptr, col, xw, a_src, a_dst[:-1])
    with pytest.raises(ValueError, match="multiple"):
        gat_aggregate(rowptr, col, xw[:, :-1], a_src, a_dst)
    with pytest.raises(TypeError, match="dtype"):
        gat_aggregate(rowptr, col, xw, a_src.float(), a_dst)
    with pytest.raises(ValueError, match="alpha_src has"):
        gat_aggregate(rowptr, col, xw, a_src[:-1], a_dst)
    bad_col = col.clone()
    bad_col[0] = xw.shape[0]
    with pytest.raises(RuntimeError, match="col holds an index"):
        gat_aggregate(rowptr, bad_col, xw, a_src, a_dst)
    bad_head = torch.full((xw.shape[1],), a_src.shape[1])
    with pytest.raises(RuntimeError, match="head_index"):
        gat_aggregate(rowptr, col, xw, a_src, a_dst, None, bad_head)
    with pytest.raises(RuntimeError, match="rows holds"):
        gat_aggregate(rowptr, col, xw, a_src, a_dst[:1], torch.tensor([xw.shape[0] + 5]))
    with pytest.raises(TypeError, match="rows"):
        gat_aggregate(rowptr, col, xw, a_src, a_dst[:1], torch.tensor([0.0]))


COMPILE_SCRIPT = """
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from gnnaccel.kernels import gat_aggregate as ga

for dt, idx, full in (("fp32", "i64", True), ("fp64", "i32", False)):
    if True:
        ptrs = {n: dt for n in ("xw", "a_src", "a_dst", "out")}
        ptrs.update({n: idx for n in ("rowptr", "col", "rows")})
        ptrs["head_index"] = "i64"
        consts = dict(HAS_ROWS=full, HAS_HEAD_INDEX=full, F64=dt == "fp64", BLOCK_M=16, BLOCK_C=64 if full else 16)
        sig = {n: "constexpr" if n in consts else ("*" + ptrs[n] if n in ptrs else ("fp32" if n == "slope" else "i64"))
               for n in ga._gat_kernel.arg_names}
        kernel = triton.compile(ASTSource(ga._gat_kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": 4})
        assert kernel.asm.get("cubin"), (dt, full)
print("ok")
"""


def test_triton_kernel_compiles_for_sm90(tmp_path):
    """The Triton kernel goes through Triton's whole pipeline to an sm_90 cubin (no GPU needed)."""
    pytest.importorskip("triton")
    import subprocess
    import sys

    from conftest import REPO_ROOT

    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
