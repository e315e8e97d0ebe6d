"""The whole inference pipeline through ``use_backend("triton")`` under Triton's interpreter, against the C++
CPU path (float32: within 1e-5 relative to the output's magnitude): each layer (with row subsets), the models,
``full_inference`` (chunked), ``BatchedEngine`` in exact mode with cache and after updates, and models pruned
by ``gnnaccel.prune`` in both schemes. How the interpreter is switched on: see test_triton_kernels.py.
"""
from __future__ import annotations

import os

import pytest
import torch

import gnnaccel
from gnnaccel import BatchedEngine, Graph
from gnnaccel.inference import full_inference
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE
from gnnaccel.nn import GCNConv, SAGEConv, SAINTConv

from conftest import random_edge_index
from torch.utils._python_dispatch import TorchDispatchMode

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="CPU tensors run Triton kernels only under TRITON_INTERPRET=1")


def assert_agrees(got: torch.Tensor, expected: torch.Tensor) -> None:
    """float32 within 1e-5 relative (elementwise, with the output's largest magnitude as the floor)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-30))


def _graph(n: int, gen: torch.Generator, weighted: bool = False, index_dtype=torch.int64) -> Graph:
    """Power-law degrees with a hub, self loops, duplicate edges and isolated nodes (the last 5)."""
    ei = random_edge_index(n - 5, 5 * n, gen, power_law=True, hub=True)
    ei = torch.cat([ei, torch.tensor([[3, 3, 1], [3, 3, 1]])], 1)
    w = torch.rand(ei.shape[1], generator=gen) + 0.5 if weighted else None
    return Graph.from_edge_index(ei, n, w, index_dtype=index_dtype)


class _OpLog(TorchDispatchMode):
    """Records the gnnaccel operators that run."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "gnnaccel":
            self.ops.add(func._opname)
        return func(*args, **(kwargs or {}))


# Compiled ops that run under the triton backend by design: the batch support's k-hop expansion.
HOST_OPS = {"expand_hop"}


def _triton(fn):
    """fn() on the triton backend, checking that only Triton kernels computed it."""
    log = _OpLog()
    with gnnaccel.use_backend("triton"), torch.no_grad(), log:
        out = fn()
    compiled = {op for op in log.ops if not op.startswith("triton_")} - HOST_OPS
    assert not compiled, f"compiled (non-Triton) ops ran on the triton backend: {compiled}"
    assert any(op.startswith("triton_") for op in log.ops), log.ops
    return out


def _both(fn):
    """(triton result, cpp result) of fn() under no_grad."""
    got = _triton(fn)
    with gnnaccel.use_backend("cpp"), torch.no_grad():
        return got, fn()


LAYERS = {
    "sage mean, aggregate first": lambda: SAGEConv(12, 20),
    "sage mean, project first": lambda: SAGEConv(40, 9),
    "sage sum, no root": lambda: SAGEConv(12, 7, aggr="sum", root_weight=False),
    "sage max": lambda: SAGEConv(12, 17, aggr="max"),
    "sage normalize": lambda: SAGEConv(12, 8, normalize=True),
    "gcn aggregate first": lambda: GCNConv(12, 20),
    "gcn project first": lambda: GCNConv(40, 6),
    "saint": lambda: SAINTConv(12, 10),
}


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("subset", [False, True])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer(name, subset, index_dtype):
    gen = torch.Generator().manual_seed(len(name) + 7 * subset)
    torch.manual_seed(len(name))
    conv = LAYERS[name]().eval()
    c = conv.in_channels
    n = 45
    g = _graph(n, gen, weighted=name.startswith("gcn"), index_dtype=index_dtype)
    x = torch.randn(n, c, generator=gen)
    rows = torch.tensor([n - 1, 0, 3, 3, 17]).to(index_dtype) if subset else None
    got, expected = _both(lambda: conv(x, g, rows=rows))
    assert_agrees(got, expected)


MODELS = {
    "sage2": lambda c: GraphSAGE(c, 16, 5, 2),
    "sage3 max": lambda c: GraphSAGE(c, 10, 5, 3, aggr="max"),
    "gcn2": lambda c: GCN(c, 16, 5, 2),
    "saint2": lambda c: SAINTGraphSAGE(c, 10, 5, 2),
}


def _model(name: str, c: int):
    torch.manual_seed(3)
    model = MODELS[name](c).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_model_and_full_inference(name):
    gen = torch.Generator().manual_seed(11)
    n, c = 60, 24
    g = _graph(n, gen, weighted=name.startswith("gcn"))
    x = torch.randn(n, c, generator=gen)
    model = _model(name, c)
    got, expected = _both(lambda: model(x, g))
    assert_agrees(got, expected)
    got, expected = _both(lambda: full_inference(model, g, x, chunk_size=17, progress=False))
    assert_agrees(got, expected)


@pytest.mark.parametrize("name", list(MODELS))
def test_batched_engine_exact_with_cache_and_updates(name):
    gen = torch.Generator().manual_seed(13)
    n, c = 60, 10
    g = _graph(n, gen)
    x = torch.randn(n, c, generator=gen)
    model = _model(name, c)
    with torch.no_grad(), gnnaccel.use_backend("cpp"):
        reference = full_inference(model, g, x, progress=False)
    with gnnaccel.use_backend("triton"):
        engine = BatchedEngine(model, g, x, cache=True)
    for targets in (torch.tensor([n - 1, 3, 3, 0]), torch.randint(n, (9,), generator=gen).int(),
                    torch.randint(n, (9,), generator=gen)):  # the second and third hit the cache
        assert_agrees(_triton(lambda: engine.predict(targets)), reference[targets.long()])
    engine.add_edges(torch.tensor([[0, 5, 9], [n - 1, n - 2, 4]]))
    nodes = torch.tensor([2, 9])
    values = torch.randn(2, c, generator=gen)
    engine.update_features(nodes, values)
    got = _triton(lambda: engine.predict(torch.arange(n)))
    x2 = x.clone()
    x2[nodes] = values
    with torch.no_grad(), gnnaccel.use_backend("cpp"):
        reference = full_inference(model, engine.graph, x2, progress=False)
    assert_agrees(got, reference)
    assert engine.cache.stats()["hits"] > 0


@pytest.mark.parametrize("scheme", ["full", "batched"])
@pytest.mark.parametrize("name", ["sage2", "gcn2", "saint2"])
def test_pruned_models(name, scheme):
    gen = torch.Generator().manual_seed(17)
    n, c = 60, 16
    g = _graph(n, gen)
    x = torch.randn(n, c, generator=gen)
    with gnnaccel.use_backend("cpp"):
        pruned = gnnaccel.prune(_model(name, c), g, x, keep=0.25, scheme=scheme, method="magnitude",
                                progress=False)
    got, expected = _both(lambda: pruned(x, g))
    assert_agrees(got, expected)
    got, expected = _both(lambda: full_inference(pruned, g, x, chunk_size=25, progress=False))
    assert_agrees(got, expected)
    with gnnaccel.use_backend("cpp"):
        expected = BatchedEngine(pruned, g, x, cache=True).predict(torch.arange(n))
    with gnnaccel.use_backend("triton"):
        engine = BatchedEngine(pruned, g, x, cache=True)
    _triton(lambda: engine.predict(torch.randint(n, (7,), generator=gen)))  # warm part of the cache
    got = _triton(lambda: engine.predict(torch.arange(n)))
    assert_agrees(got, expected)
