"""Every Triton kernel and every CUDA (.cu) kernel of the op entry points on CUDA tensors, against the C++
CPU path (float32: within 1e-5 of the terms' magnitude; float64: 1e-12). Marked ``gpu``: they skip without
a GPU and run in ``make gpu-check``. The same kernels' logic is tested without a GPU under Triton's
interpreter (tests/test_triton_kernels.py).
"""
from __future__ import annotations

import pytest
import torch

import gnnaccel
from gnnaccel import backend
from gnnaccel.ops import aggregate, fused_layer, pruned_linear, sage_projected

from test_fused_layer import assert_close_to, make_case, reference, reference_aggregate

pytestmark = pytest.mark.gpu
GPU_BACKENDS = ("triton", "cpp")  # cpp on CUDA tensors = the .cu kernels


def _cuda(t):
    return t.cuda() if isinstance(t, torch.Tensor) else t


def _on(name, fn, *args, **kwargs):
    with gnnaccel.use_backend(name), torch.no_grad():
        return fn(*[_cuda(a) for a in args], **{k: _cuda(v) for k, v in kwargs.items()})


def test_auto_picks_triton_on_cuda():
    assert backend.triton_available(), backend.triton_error()
    assert backend.kernel_backend(torch.device("cuda")) == "triton"


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("seed", range(40))
def test_fused_layer_cuda_matches_cpu(name, seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(seed, dtype=dtype, hub=5000 if seed % 10 == 0 else 0)
    with gnnaccel.use_backend("cpp"), torch.no_grad():
        cpu = fused_layer(case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    got = _on(name, fused_layer, case.rowptr, case.col, case.x, case.w_neigh, **case.kwargs())
    scale = reference(case, absolute=True)
    assert_close_to(got, cpu.double(), scale, dtype)
    assert_close_to(got, reference(case), scale, dtype)


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("seed", range(24))
def test_aggregate_cuda_matches_cpu(name, seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(2000 + seed, dtype=dtype, hub=5000 if seed == 7 else 0)
    reduce = ("sum", "mean", "max", "min")[seed % 4]
    args = (case.rowptr, case.col, case.x, reduce, case.edge_weight, case.rows)
    with gnnaccel.use_backend("cpp"):
        cpu = aggregate(*args)
    got = _on(name, aggregate, *args)
    scale = reference_aggregate(case.rowptr, case.col, case.x, reduce, case.edge_weight, case.rows, absolute=True)
    assert_close_to(got, cpu.double(), scale, dtype)


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_aggregate_half_precision(name, dtype, reduce):
    case = make_case(77, dtype=torch.float32, num_rows=50, channels=33, weighted=False, rows=False)
    with gnnaccel.use_backend("cpp"):
        cpu = aggregate(case.rowptr, case.col, case.x.to(dtype).float(), reduce)
    got = _on(name, aggregate, case.rowptr, case.col, case.x.to(dtype), reduce).float().cpu()
    torch.testing.assert_close(got, cpu, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("seed", range(12))
def test_sage_projected_cuda_matches_cpu(name, seed):
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    case = make_case(3000 + seed, dtype=dtype, reduce=("sum", "mean")[seed % 2])
    gen = torch.Generator().manual_seed(seed)
    num_out = case.rows.shape[0] if case.rows is not None else case.rowptr.shape[0] - 1
    d = case.x.shape[1]
    root = torch.randn(num_out, d, generator=gen, dtype=torch.float64).to(dtype) if seed % 3 else None
    bias = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype) if seed % 2 else None
    args = (case.rowptr, case.col, case.x, root, bias, case.edge_weight, case.rows, case.reduce)
    with gnnaccel.use_backend("cpp"), torch.no_grad():
        cpu = sage_projected(*args)
    got = _on(name, sage_projected, *args)
    scale = reference_aggregate(case.rowptr, case.col, case.x, case.reduce, case.edge_weight, case.rows, True)
    for extra in (root, bias):
        if extra is not None:
            scale = scale + extra.double().abs()
    assert_close_to(got, cpu.double(), scale, dtype)


@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("seed", range(12))
def test_pruned_linear_cuda_matches_cpu(name, seed):
    gen = torch.Generator().manual_seed(4000 + seed)
    dtype = torch.float64 if seed % 5 == 4 else torch.float32
    n, c, d = 300, 77, 45
    x = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    rows = torch.randint(n, (123,), generator=gen) if seed % 3 else None
    keep = torch.randperm(c, generator=gen)[:1 if seed % 4 == 1 else 30] if seed % 4 else None
    w = torch.randn(keep.shape[0] if keep is not None else c, d, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype) if seed % 2 else None
    with gnnaccel.use_backend("cpp"):
        cpu = pruned_linear(x, w, b, rows, keep)
    got = _on(name, pruned_linear, x, w, b, rows, keep)
    z = x.double() if rows is None else x.double()[rows]
    z = z if keep is None else z[:, keep]
    scale = z.abs() @ w.double().abs() + (b.double().abs() if b is not None else 0)
    assert_close_to(got, cpu.double(), scale, dtype)


def test_triton_opcheck_on_cuda():
    c = make_case(9, num_rows=40, channels=16, out=16, num_edges=160, rows=False, self_branch=True,
                  self_rows=False, neigh_keep=True, self_keep=False, weighted=True, bias=True)
    c = type(c)(*[_cuda(getattr(c, f)) for f in c.__dataclass_fields__])
    torch.library.opcheck(torch.ops.gnnaccel.triton_fused_layer.default, c.args())
    torch.library.opcheck(torch.ops.gnnaccel.triton_aggregate.default,
                          (c.rowptr, c.col, c.x, c.edge_weight, None, None, None, "max"))
    torch.library.opcheck(torch.ops.gnnaccel.triton_pruned_linear.default,
                          (c.x, c.w_self, c.bias, torch.tensor([1, 1, 5], device="cuda"), None))


def test_inductor_compiles_a_model_on_the_triton_backend():
    from gnnaccel.models import GraphSAGE
    gen = torch.Generator().manual_seed(0)
    n = 500
    g = gnnaccel.Graph.from_edge_index(torch.randint(n, (2, 5000), generator=gen), n)
    x = torch.randn(n, 64, generator=gen)
    model = GraphSAGE(64, 48, 7, num_layers=2).eval()
    with torch.no_grad(), gnnaccel.use_backend("cpp"):
        expected = model(x, g)
    model_cuda, g_cuda = model.cuda(), g.to("cuda")
    with torch.no_grad(), gnnaccel.use_backend("triton"):
        got = torch.compile(model_cuda, fullgraph=True)(x.cuda(), g_cuda)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)
