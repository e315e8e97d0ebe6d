"""GATConv and GAT: parity with PyG's GATConv / models.GAT (state dicts load unchanged; float64 rel <= 1e-10,
float32 <= 1e-5) on graphs with isolated nodes, self loops, duplicate edges, a hub of thousands of edges and no
edges; gradients; dropout only in training; full_inference (chunked) and BatchedEngine (exact mode with and
without a cache, small batches that project only the rows they read, after edge insertions) equal to the model;
bad arguments."""
from __future__ import annotations

import zlib

import pytest
import torch

pyg_nn = pytest.importorskip("torch_geometric.nn")

from conftest import random_edge_index  # noqa: E402
from gnnaccel import BatchedEngine, Graph  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from gnnaccel.models import GAT, from_pyg  # noqa: E402
from gnnaccel.nn import GATConv  # noqa: E402


@pytest.fixture(autouse=True)
def _own_rng():
    """These tests seed the global RNG: restore it afterwards, so the seeds later test modules draw stay theirs."""
    with torch.random.fork_rng():
        yield


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _tol(dtype):
    return 1e-10 if dtype == torch.float64 else 1e-5


def _edges(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "empty":
        return torch.empty(2, 0, dtype=torch.long)
    ei = random_edge_index(n - 5, 5 * n, g, power_law=True)  # the last 5 nodes are isolated
    extra = torch.tensor([[3, 3, 4, 4, 6], [3, 3, 5, 5, 6]])  # duplicate self loops, duplicate edges
    ei = torch.cat([ei, extra], 1)
    if kind == "hub":
        ei = torch.cat([ei, torch.stack([torch.randint(n, (3000,), generator=g), torch.full((3000,), 2)])], 1)
    return ei


def _pyg_conv(dtype, **kw):
    conv = pyg_nn.GATConv(12, 5, **kw).to(dtype).eval()
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias.uniform_(-0.5, 0.5)
        conv.att_src.mul_(3)  # peaked attention: the softmax matters
    return conv


CONV_KWARGS = {
    "3 heads": dict(heads=3),
    "mean of 2 heads": dict(heads=2, concat=False),
    "residual": dict(heads=2, residual=True),
    "residual mean": dict(heads=3, concat=False, residual=True),
    "no self loops": dict(heads=2, add_self_loops=False),
    "no bias, slope 0.5": dict(bias=False, negative_slope=0.5),
}


@pytest.mark.parametrize("graph_kind", ["random", "hub", "empty"])
@pytest.mark.parametrize("name", list(CONV_KWARGS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_matches_pyg(name, graph_kind, dtype):
    """PyG's GATConv state dict loads unchanged; the output at ``dtype`` matches PyG's layer evaluated in float64
    on the same (``dtype``-rounded) weights and inputs: float64 rel <= 1e-10, float32 rel <= 1e-5. (Against PyG's
    own float32 output, both sides' rounding adds up: two float32 sums over a 3000-edge hub differ by up to
    ~1.2e-5 while each is within ~5e-6 of the float64 value.)"""
    seed = zlib.crc32(f"{name}/{graph_kind}".encode())  # not hash(): str hashes differ per process
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)
    n = 60
    ei = _edges(graph_kind, n, g)
    pyg = _pyg_conv(dtype, **CONV_KWARGS[name])
    ours = GATConv(12, 5, **CONV_KWARGS[name]).to(dtype)
    ours.load_state_dict(pyg.state_dict())  # unchanged, strict
    ours.eval()
    reference = _pyg_conv(torch.float64, **CONV_KWARGS[name])
    reference.load_state_dict({k: v.double() for k, v in pyg.state_dict().items()})
    x = torch.randn(n, 12, generator=g, dtype=torch.float64).to(dtype)
    expected = reference(x.double(), ei)
    assert _rel(pyg(x, ei), expected) <= _tol(dtype)  # PyG itself at this dtype, for scale
    assert _rel(ours(x, ei), expected) <= _tol(dtype)
    assert _rel(from_pyg(pyg)(x, ei), expected) <= _tol(dtype)
    rows = torch.tensor([2, 0, n - 1, 2])
    assert _rel(ours(x, Graph.from_edge_index(ei, n), rows=rows), expected[rows]) <= _tol(dtype)


def test_conv_other_adjacencies_and_weights_ignored():
    g = torch.Generator().manual_seed(0)
    n = 30
    ei = _edges("random", n, g)
    pyg = _pyg_conv(torch.float64, heads=2)
    ours = from_pyg(pyg)
    x = torch.randn(n, 12, generator=g, dtype=torch.float64)
    expected = pyg(x, ei)
    weighted = Graph.from_edge_index(ei, n, torch.rand(ei.shape[1], generator=g, dtype=torch.float64) + 0.5)
    assert _rel(ours(x, weighted), expected) <= 1e-10  # GAT ignores edge weights, as PyG does
    adj_t = torch.sparse_coo_tensor(ei.flip(0), torch.ones(ei.shape[1], dtype=torch.float64), (n, n))
    assert _rel(ours(x, adj_t), pyg(x, adj_t.coalesce())) <= 1e-10  # PyG on a coalesced adjacency


def test_gradients_match_pyg():
    g = torch.Generator().manual_seed(1)
    n = 40
    ei = _edges("hub", n, g)
    pyg = _pyg_conv(torch.float64, heads=3, residual=True).train()
    ours = from_pyg(pyg).train()
    x1 = torch.randn(n, 12, generator=g, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    w = torch.randn(n, 15, generator=g, dtype=torch.float64)
    (pyg(x1, ei) * w).sum().backward()
    (ours(x2, ei) * w).sum().backward()
    assert _rel(x2.grad, x1.grad) <= 1e-10
    theirs = dict(pyg.named_parameters())
    for name, p in ours.named_parameters():
        assert _rel(p.grad, theirs[name].grad) <= 1e-10, name


def test_dropout_only_in_training():
    g = torch.Generator().manual_seed(2)
    n = 30
    ei = _edges("random", n, g)
    conv = GATConv(12, 4, heads=2, dropout=0.6).double()
    x = torch.randn(n, 12, generator=g, dtype=torch.float64)
    conv.eval()
    evaluated = conv(x, ei)
    reference = GATConv(12, 4, heads=2).double().eval()
    reference.load_state_dict(conv.state_dict())
    assert torch.equal(evaluated, reference(x, ei))
    conv.train()
    torch.manual_seed(0)
    assert not torch.allclose(conv(x, ei), evaluated)


MODEL_CASES = {
    "2 layers, 4 heads": dict(num_layers=2, heads=4),
    "3 layers, batch norm": dict(num_layers=3, heads=2, norm="batch_norm"),
    "jk last, residual": dict(num_layers=2, heads=2, jk="last", residual=True),
    "1 layer": dict(num_layers=1, heads=3),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_model_from_pyg(name):
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    n = 50
    ei = _edges("random", n, g)
    pyg = pyg_nn.models.GAT(12, 16, out_channels=3, **MODEL_CASES[name]).double().eval()
    with torch.no_grad():
        for norm in pyg.norms:
            bn = getattr(norm, "module", None)
            if isinstance(bn, torch.nn.BatchNorm1d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 2)
    x = torch.randn(n, 12, generator=g, dtype=torch.float64)
    expected = pyg(x, ei)
    ours = from_pyg(pyg)
    assert isinstance(ours, GAT)
    assert all(isinstance(m, torch.nn.Identity) for m in ours.norms)  # BatchNorm folded
    assert _rel(ours(x, ei), expected) <= 1e-10
    assert _rel(full_inference(ours, ei, x, chunk_size=7, progress=False), expected) <= 1e-10
    assert _rel(full_inference(pyg, ei, x, progress=False), expected) <= 1e-10  # as_model converts it
    # gnnaccel's own GAT builds the same layer shapes as PyG's
    mine = GAT(12, 16, 3, heads=MODEL_CASES[name]["heads"], num_layers=MODEL_CASES[name]["num_layers"],
               jk=MODEL_CASES[name].get("jk"), residual=MODEL_CASES[name].get("residual", False))
    assert [c.lin.weight.shape for c in mine.convs if isinstance(c, GATConv)] == \
           [c.lin.weight.shape for c in ours.convs if isinstance(c, GATConv)]


@pytest.mark.parametrize("cache", [False, True])
def test_batched_engine_exact_equals_full_inference(cache):
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    n = 300
    ei = _edges("hub", n, g)
    graph = Graph.from_edge_index(ei, n)
    model = GAT(16, 12, 4, num_layers=3, heads=3, residual=True).double().eval()
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.uniform_(-0.5, 0.5)
    x = torch.randn(n, 16, generator=g, dtype=torch.float64)
    full = full_inference(model, graph, x, progress=False)
    engine = BatchedEngine(model, graph, x, cache=True if cache else None)
    for targets in (torch.tensor([7]), torch.tensor([2, 2, 0, n - 1]), torch.randint(n, (120,), generator=g),
                    torch.arange(n)):
        assert _rel(engine.predict(targets), full[targets]) <= 1e-10
    new = torch.stack([torch.randint(n, (40,), generator=g), torch.randint(n, (40,), generator=g)])
    engine.add_edges(new)
    full = full_inference(model, Graph.from_edge_index(torch.cat([ei, new], 1), n), x, progress=False)
    for targets in (torch.unique(new[1])[:10], torch.randint(n, (50,), generator=g)):
        assert _rel(engine.predict(targets), full[targets]) <= 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="bipartite"):
        GATConv((4, 5), 3)
    with pytest.raises(ValueError, match="edge_dim"):
        GATConv(4, 3, edge_dim=2)
    with pytest.raises(ValueError, match="heads"):
        GATConv(4, 3, heads=0)
    with pytest.raises(ValueError, match="unsupported arguments"):
        GATConv(4, 3, aggr="max")
    conv = GATConv(4, 3)
    x = torch.randn(5, 4)
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="return_attention_weights"):
        conv(x, ei, return_attention_weights=True)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, ei, torch.ones(2, 1))
    with pytest.raises(ValueError, match="rows"):
        conv(x, ei, rows=[9])
    with pytest.raises(ValueError, match="2-D"):
        conv(x[None], ei)
    with pytest.raises(ValueError, match="divisible"):
        GAT(4, 10, 2, num_layers=2, heads=3)


def test_lazy_in_channels():
    conv = GATConv(-1, 3, heads=2).double().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    out = conv(x, torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert out.shape == (6, 6) and conv.in_channels == 5
