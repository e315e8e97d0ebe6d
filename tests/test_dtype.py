"""Reduced-precision engines (``dtype=`` of full_inference and BatchedEngine): bfloat16 / float16 answers equal a
float64 reference of the same model within a bound derived from the format's precision and the depth.

The bound. Every model here is a stack of layers ``h' = act(A h W + h W_r + b)`` (BatchNorm folded into W, b; SAINT
concatenates two such branches; a pruned layer reads a subset of h's channels) with ``|act(z)| <= |z|`` and act
1-Lipschitz (ReLU). At half width every stored result is rounded once to the format, a relative error of at most
``u`` (unit roundoff: 2^-8 for bfloat16's 8 significant bits, 2^-11 for float16's 11); sums are accumulated in
float32 (the op contract: relative error at most ``k 2^-24`` for ``k`` terms). Count the roundings on the way to a
layer's output: its input (layer 0: the converted features; later: the previous output), its weights, the
per-edge weight (GCN) times the neighbour row, the aggregated sum, the mean's division, each branch's product,
the sum of the branches, the bias: at most ``R = 9``. Each of them perturbs a quantity whose magnitude, carried
through the rest of the layer by ``|A|, |W|``, is at most ``M' = |A| M |W| + M |W_r| + |b|``, the same layer run
on magnitudes. An error ``d`` of the input reaches the output as at most ``|A| d |W| + d |W_r|``. By induction
over the layers, elementwise

    |y - y_64| <= (gamma_{R L} + L k_max 2^-24) M_L,   gamma_n = n u / (1 - n u),

where ``M_L`` is the model with every weight replaced by its absolute value run on ``|x|`` in float64 (edge
weights here are non-negative), ``L`` the number of layers and ``k_max`` the longest float32 sum (the largest
in-degree plus the widest input). ``gamma_n`` (instead of ``n u``) covers the products of rounding factors. For
bfloat16 and two layers that is about 7.6% of the magnitude; a kernel that summed a hub's 450 neighbours in
bfloat16 (stalling once the sum reaches 256 times its increments) or skipped a conversion fails it.
"""
from __future__ import annotations

import copy

import pytest
import torch

import gnnaccel
from conftest import random_edge_index
from gnnaccel import BatchedEngine, Graph
from gnnaccel.cache import FeatureCache
from gnnaccel.inference import full_inference, warm_cache
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE, as_model

HALF = [torch.bfloat16, torch.float16]
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
ROUNDINGS_PER_LAYER = 9  # see the module docstring
FLOAT32_ROUNDOFF = 2.0 ** -24
# The op contract for half-width inputs (float32 accumulation) is the C++ kernels' (the default backend, "auto" on
# CPU); the "torch" composition accumulates index_add and matmul in float32 as well. Every test runs on both.
BACKENDS = ["auto", "torch"]


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request):
    """Every test runs under each backend."""
    with gnnaccel.use_backend(request.param):
        yield request.param


def _graph(n: int, generator, weighted: bool = False) -> Graph:
    """Power-law degrees, a hub receiving 3n edges, self loops, duplicate edges and 10 isolated nodes."""
    ei = random_edge_index(n - 10, 6 * n, generator, power_law=True, hub=True)
    ei = torch.cat([ei, torch.tensor([[3, 3, 5], [3, 3, 5]])], 1)
    weight = torch.rand(ei.shape[1], generator=generator) + 0.5 if weighted else None
    return Graph.from_edge_index(ei, n, weight)


def _randomise(model, generator):
    """Non-trivial biases and BatchNorm statistics (fresh modules start at zero / identity)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=generator) - 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model


def _pruned(scheme: str, c: int, graph, x, generator):
    base = _randomise(GraphSAGE(c, 12, 4, 2), generator).eval()
    return gnnaccel.prune(base, graph, x, keep=0.25, scheme=scheme, progress=False)


MODELS = {
    "sage2": lambda c, g, x, gen: _randomise(GraphSAGE(c, 12, 4, 2), gen),
    "sage3": lambda c, g, x, gen: _randomise(GraphSAGE(c, 12, 4, 3), gen),
    "gcn2": lambda c, g, x, gen: _randomise(GCN(c, 12, 4, 2), gen),
    "saint2_bn_folded": lambda c, g, x, gen: _randomise(SAINTGraphSAGE(c, 12, 4, 2, norm="batchnorm"),
                                                        gen).eval().fold_batchnorm(),
    "sage2_bn_folded": lambda c, g, x, gen: _randomise(GraphSAGE(c, 12, 4, 2, norm="batchnorm"),
                                                       gen).eval().fold_batchnorm(),
    "pruned_full": lambda c, g, x, gen: _pruned("full", c, g, x, gen),
    "pruned_batched": lambda c, g, x, gen: _pruned("batched", c, g, x, gen),
}


def _setup(name: str, generator, n: int = 150, c: int = 16):
    graph = _graph(n, generator, weighted=name.startswith("gcn"))
    x = torch.randn(n, c, generator=generator)
    model = MODELS[name](c, graph, x, generator).eval()
    return model, graph, x


def _reference(model, graph, x):
    """The same model in float64 (a copy), its output, and the magnitude bound's ``M`` (abs weights on |x|)."""
    m64 = copy.deepcopy(model).double()
    ref = full_inference(m64, graph, x.double(), progress=False)
    with torch.no_grad():
        for p in m64.parameters():
            p.abs_()
    magnitude = full_inference(m64, graph, x.double().abs(), progress=False)
    return ref, magnitude


def _bound(model, graph, x, dtype, magnitude):
    layers = len(model.convs)
    n = ROUNDINGS_PER_LAYER * layers
    u = UNIT_ROUNDOFF[dtype]
    gamma = n * u / (1 - n * u)
    deg = graph.rowptr[1:] - graph.rowptr[:-1]
    k_max = int(deg.max()) + 1 + max(conv.in_channels for conv in model.convs)  # +1: GCN's added self loop
    return (gamma + layers * k_max * FLOAT32_ROUNDOFF) * magnitude


def _assert_within(out, ref, bound, what):
    assert out.dtype == torch.float32, f"{what}: outputs must be float32, got {out.dtype}"
    assert torch.isfinite(out).all(), what
    err = (out.double() - ref).abs()
    excess = err - bound
    worst = int(excess.flatten().argmax())
    assert bool((excess <= 0).all()), (f"{what}: |error| {err.flatten()[worst]:.3g} above the bound "
                                       f"{bound.flatten()[worst]:.3g} at flat index {worst}")


# ------------------------------------------------------------------------------------------------ GAT
# GAT is not of the form above (its attention is a softmax of logits computed from the input), and the same
# worst-case argument for it is vacuous: a logit error e scales every coefficient by up to exp(2e), and with
# magnitudes taken from |W|, |att| the bound exceeds the outputs themselves already for one bfloat16 layer
# (median bound 6.2 against max |output| 3.5 on these inputs). GAT is checked for the half-width plumbing only
# (test_gat_two_layers_half_width): dtypes of features, hidden outputs, cache, weights and answers.


def _gat_setup(generator, layers: int, n: int = 150, c: int = 16):
    from gnnaccel.models import GAT

    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _randomise(GAT(c, 12, 4, layers, heads=2), generator).eval()
    return model, graph, x


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_gat_two_layers_half_width(dtype, generator):
    model, graph, x = _gat_setup(generator, 2)
    before = _state(model)
    out, hidden = full_inference(model, graph, x, progress=False, return_hidden=True, dtype=dtype)
    assert out.dtype == torch.float32 and hidden[0].dtype == dtype and torch.isfinite(out).all()
    engine = BatchedEngine(model, graph, x, cache=True, dtype=dtype)
    assert engine.cache.dtype == dtype
    answer = engine.predict(torch.arange(x.shape[0]))
    assert answer.dtype == torch.float32 and torch.isfinite(answer).all()
    assert all(p.dtype == dtype for p in engine._model.parameters())
    _assert_unchanged(model, before, training=False)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before, training):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert model.training == training


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(MODELS))
def test_full_inference_within_precision_bound(name, dtype, backend, generator):
    model, graph, x = _setup(name, generator)
    ref, magnitude = _reference(model, graph, x)
    bound = _bound(model, graph, x, dtype, magnitude)
    model.train()  # the training flag and every parameter of the caller's model stay as they are
    before = _state(model)
    x_before = x.clone()
    out, hidden = full_inference(model, graph, x, progress=False, return_hidden=True, dtype=dtype)
    chunked = full_inference(model, graph, x, chunk_size=37, progress=False, dtype=dtype)
    assert all(h.dtype == dtype for h in hidden)  # every hidden activation is stored at half width
    _assert_within(out, ref, bound, f"{name} {dtype}")
    _assert_within(chunked, ref, bound, f"{name} {dtype} chunk_size=37")
    _assert_unchanged(model, before, training=True)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("cache", [False, True], ids=["nocache", "cache"])
@pytest.mark.parametrize("name", list(MODELS))
def test_batched_engine_within_precision_bound(name, cache, dtype, backend, generator):
    model, graph, x = _setup(name, generator)
    before = _state(model)
    n, c = x.shape
    engine = BatchedEngine(model, graph, x, cache=cache, dtype=dtype)
    assert engine.x.dtype == dtype and engine.dtype == dtype
    if cache:
        assert engine.cache.dtype == dtype
    ref, magnitude = _reference(model, graph, x)
    bound = _bound(model, graph, x, dtype, magnitude)
    for targets in (torch.randint(n, (30,), generator=generator), torch.arange(n), torch.tensor([0, 0, n - 1])):
        _assert_within(engine.predict(targets), ref[targets], bound[targets], f"{name} {dtype} cache={cache}")
    # Growth: float32 features and edges to and from existing nodes (the hub among them) are converted.
    new_x = torch.randn(5, c, generator=generator)
    src = torch.randint(n + 5, (40,), generator=generator)
    dst = torch.cat([torch.arange(n, n + 5).repeat(4), torch.zeros(20, dtype=torch.long)])
    weight = torch.rand(40, generator=generator) + 0.5 if graph.edge_weight is not None else None
    engine.add_nodes(new_x, torch.stack([src, dst]), weight)
    engine.update_features(torch.tensor([1, n + 2]), torch.randn(2, c, generator=generator))
    x2 = torch.cat([x, new_x])
    x2[torch.tensor([1, n + 2])] = engine.x[torch.tensor([1, n + 2])].float()  # the converted update
    src0, dst0 = graph.col.long(), graph.row_of_edge()
    ei2 = torch.cat([torch.stack([src0, dst0]), torch.stack([src, dst])], 1)
    w2 = None if weight is None else torch.cat([graph.edge_weight, weight])
    graph2 = Graph.from_edge_index(ei2, n + 5, w2)
    ref2, magnitude2 = _reference(model, graph2, x2)
    bound2 = _bound(model, graph2, x2, dtype, magnitude2)
    targets = torch.arange(n + 5)
    _assert_within(engine.predict(targets), ref2, bound2, f"{name} {dtype} cache={cache} after add_nodes")
    _assert_unchanged(model, before, training=False)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_warm_half_width_cache(dtype, generator):
    """warm_cache fills a half-width cache the way the engine computes; the engine accepts it."""
    model, graph, x = _setup("sage3", generator)
    n = x.shape[0]
    cache = FeatureCache(n, [12, 12], dtype=dtype)
    out = warm_cache(cache, model, graph, x)
    engine = BatchedEngine(model, graph, x, cache=cache, dtype=dtype)
    ref, magnitude = _reference(model, graph, x)
    bound = _bound(model, graph, x, dtype, magnitude)
    _assert_within(out, ref, bound, "warm_cache output")
    targets = torch.arange(n)
    _assert_within(engine.predict(targets), ref, bound, "engine on a warmed cache")
    assert engine.cache.stats()["hit_rate"] > 0
    with pytest.raises(TypeError, match="cache stores"):
        BatchedEngine(model, graph, x, cache=FeatureCache(n, [12, 12]), dtype=dtype)


def test_converted_copy_memoised_and_invalidated(generator):
    model, graph, x = _setup("sage2", generator)
    first = as_model(model, torch.bfloat16)
    assert first is as_model(model, torch.bfloat16) and first is not model
    assert as_model(model, torch.float32) is model  # already in that dtype: no copy
    assert as_model(model, torch.float16) is not first
    assert all(p.dtype == torch.bfloat16 for p in first.parameters())
    out1 = full_inference(model, graph, x, progress=False, dtype=torch.bfloat16)
    with torch.no_grad():
        model.convs[1].lin_l.weight.mul_(2.0)  # an in-place change: the memoised copy is stale
    second = as_model(model, torch.bfloat16)
    assert second is not first
    assert torch.equal(second.convs[1].lin_l.weight, model.convs[1].lin_l.weight.bfloat16())
    out2 = full_inference(model, graph, x, progress=False, dtype=torch.bfloat16)
    ref, magnitude = _reference(model, graph, x)
    _assert_within(out2, ref, _bound(model, graph, x, torch.bfloat16, magnitude), "after an in-place change")
    assert not torch.equal(out1, out2)


def test_pruned_index_buffers_stay_integer(generator):
    model, graph, x = _setup("pruned_batched", generator)
    half = as_model(model, torch.bfloat16)
    buffers = dict(half.named_buffers())
    assert any("input_index" in k for k in buffers)
    for k, b in buffers.items():
        if "input_index" in k:
            assert b.dtype == dict(model.named_buffers())[k].dtype == torch.long


def test_float64_and_float32_dtypes(generator):
    model, graph, x = _setup("gcn2", generator)
    ref, _ = _reference(model, graph, x)
    out = full_inference(model, graph, x, progress=False, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    same = full_inference(model, graph, x.double(), progress=False, dtype=torch.float32)
    assert same.dtype == torch.float32
    torch.testing.assert_close(same, full_inference(model, graph, x, progress=False))
    engine = BatchedEngine(model, graph, x, dtype=torch.float64)
    assert engine.predict(torch.arange(5)).dtype == torch.float64


@pytest.mark.parametrize("bad", [torch.int32, torch.int64, torch.complex64, torch.bool, "bfloat16", 16])
def test_bad_dtype_is_a_clear_value_error(bad, generator):
    model, graph, x = _setup("sage2", generator)
    with pytest.raises(ValueError, match="dtype must be"):
        full_inference(model, graph, x, progress=False, dtype=bad)
    with pytest.raises(ValueError, match="dtype must be"):
        BatchedEngine(model, graph, x, dtype=bad)


def test_float16_overflow_and_bad_features(generator):
    model, graph, x = _setup("sage2", generator)
    big = x.clone()
    big[3, 2] = 1e6  # beyond float16's 65504
    with pytest.raises(ValueError, match="range of torch.float16"):
        full_inference(model, graph, big, progress=False, dtype=torch.float16)
    with pytest.raises(ValueError, match="range of torch.float16"):
        BatchedEngine(model, graph, big, dtype=torch.float16)
    engine = BatchedEngine(model, graph, x, dtype=torch.float16, cache=True)
    with pytest.raises(ValueError, match="range of torch.float16"):
        engine.add_nodes(torch.full((1, x.shape[1]), 1e6))
    with pytest.raises(ValueError, match="range of torch.float16"):
        engine.update_features(torch.tensor([0]), torch.full((1, x.shape[1]), -1e6))
    with pytest.raises(TypeError, match="floating-point"):
        engine.add_nodes(torch.ones(1, x.shape[1], dtype=torch.int64))
    assert engine.num_nodes == x.shape[0] and engine.version == 0
    # Without dtype= the engine keeps requiring the model's dtype.
    with pytest.raises(TypeError, match="dtype"):
        BatchedEngine(model, graph, x.bfloat16())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dense_linear_at_half_width_rounds_once(dtype):
    """Layers' dense GEMMs: float16 on the CPU runs in float32 and is rounded once, bfloat16 in bf16 (oneDNN,
    float32 accumulation); both stay within the format's rounding of a float64 reference on the same inputs."""
    from gnnaccel._memory import gemm_dtype, linear, project_for_gather
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(300, 96, generator=gen).to(dtype)
    w = torch.randn(40, 96, generator=gen).to(dtype)
    b = torch.randn(40, generator=gen).to(dtype)
    assert gemm_dtype(x) == (torch.float32 if dtype == torch.float16 else torch.bfloat16)
    ref = x.double() @ w.double().t() + b.double()
    scale = (x.double().abs() @ w.double().abs().t() + b.double().abs())
    u = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    for out in (linear(x, w, b), project_for_gather(x, w) + b):
        assert out.dtype == dtype
        # output rounding (u |ref|), the bias add's rounding in bf16 (u), float32 accumulation (96 * 2^-24)
        assert ((out.double() - ref).abs() <= (3 * u + 96 * 2.0 ** -24) * scale).all()
