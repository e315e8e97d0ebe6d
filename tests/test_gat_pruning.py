"""Pruning GATConv through its linear part (x W and the attention terms): load_pruned / prune_outputs install
weights that a dense float64 attention reference (written here from the installed branch weights) reproduces;
keeping every channel in a permuted order leaves the model's output unchanged (per-channel heads after output
pruning); the refit's intercept folds exactly into the bias; prune() in both schemes records its choices and
gives models that full_inference and BatchedEngine serve exactly; BatchNorm folding; bad refit option."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import random_edge_index
from gnnaccel import BatchedEngine, Graph
from gnnaccel.inference import full_inference
from gnnaccel.models import GAT
from gnnaccel.nn import GATConv
from gnnaccel.pruning import prune


@pytest.fixture(autouse=True)
def _own_rng():
    """These tests seed the global RNG: restore it afterwards, so the seeds later test modules draw stay theirs."""
    with torch.random.fork_rng():
        yield


def _graph(n, g):
    ei = random_edge_index(n - 3, 6 * n, g, power_law=True)  # isolated nodes at the end
    ei = torch.cat([ei, torch.tensor([[4, 4], [4, 4]])], 1)
    return Graph.from_edge_index(ei, n)


def dense_attention(conv: GATConv, h: torch.Tensor, graph: Graph, intercept=None) -> torch.Tensor:
    """The layer's output from its linear parts: per row a softmax over its message-graph edges."""
    parts = conv.linear_parts()
    idx = parts.extra["input_index"]
    z = {b.name: (h if idx[b.name] is None else h[:, idx[b.name]]).double() @ b.weight.double()
         for b in parts.branches}
    d, heads = conv.value_channels, conv.heads
    lin = torch.cat([z["neigh"], z["self"]], 1)
    if intercept is not None:
        lin = lin + intercept
    xw, a_src, a_dst, res = lin[:, :d], lin[:, d:d + heads], lin[:, d + heads:d + 2 * heads], lin[:, d + 2 * heads:]
    head = conv._value_heads()
    mg = conv.message_graph(graph, torch.float64)
    out = torch.zeros(h.shape[0], d, dtype=torch.float64)
    for i in range(h.shape[0]):
        src = mg.col[int(mg.rowptr[i]):int(mg.rowptr[i + 1])].long()
        if src.numel():
            p = torch.softmax(F.leaky_relu(a_src[src] + a_dst[i], conv.negative_slope), 0)
            out[i] = (p[:, head] * xw[src]).sum(0)
    if not conv.concat:
        out = out.view(h.shape[0], heads, -1).mean(1)
    if conv.res is not None:
        out = out + res
    return out + (conv.bias.double() if conv.bias is not None else 0)


def _model(residual=False, concat_last=False, seed=0, in_channels=20):
    torch.manual_seed(seed)
    model = GAT(in_channels, 16, 4, num_layers=3, heads=2, residual=residual).double().eval()
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.uniform_(-0.5, 0.5)
            conv.att_src.mul_(2)
    return model


@pytest.mark.parametrize("residual", [False, True])
def test_permuted_keep_all_is_exact(residual):
    """prune_outputs(perm) on layer 0 and load_pruned(perm, permuted weights) on layer 1 change nothing (layer 0
    then holds value channels of mixed heads: head_index)."""
    g = torch.Generator().manual_seed(1)
    n = 40
    graph = _graph(n, g)
    model = _model(residual)
    x = torch.randn(n, 20, generator=g, dtype=torch.float64)
    expected = model(x, graph)
    perm = torch.randperm(16, generator=g)
    parts = model.convs[1].linear_parts()
    model.convs[0].prune_outputs(perm)
    assert model.convs[0].head_index is not None
    bias = torch.zeros(parts.out_channels, dtype=torch.float64)
    model.convs[1].load_pruned({"neigh": perm, "self": perm}, {b.name: b.weight[perm] for b in parts.branches},
                               bias)
    assert torch.allclose(model(x, graph), expected, atol=1e-12)
    assert torch.allclose(full_inference(model, graph, x, chunk_size=9, progress=False), expected, atol=1e-12)


def test_load_pruned_matches_dense_reference_with_intercept():
    g = torch.Generator().manual_seed(2)
    n = 35
    graph = _graph(n, g)
    conv = _model(residual=True).convs[0]
    h = torch.randn(n, 20, generator=g, dtype=torch.float64)
    parts = conv.linear_parts()
    keep = torch.tensor([3, 0, 7, 11, 19, 5])
    weights = {b.name: torch.randn(keep.numel(), b.weight.shape[1], generator=g, dtype=torch.float64)
               for b in parts.branches}
    intercept = torch.randn(parts.out_channels, generator=g, dtype=torch.float64)
    ref_conv = _model(residual=True).convs[0]
    ref_conv.load_pruned({"neigh": keep, "self": keep}, weights, torch.zeros_like(intercept))
    expected = dense_attention(ref_conv, h[:, keep], graph, intercept)
    conv.load_pruned({"neigh": keep, "self": keep}, weights, intercept)
    assert conv.in_channels == keep.numel()
    assert torch.allclose(conv(h[:, keep], graph), expected, atol=1e-12)


def test_per_branch_keeps_and_output_pruning_match_dense_reference():
    g = torch.Generator().manual_seed(3)
    n = 30
    graph = _graph(n, g)
    conv = _model(residual=True).convs[0]
    h = torch.randn(n, 20, generator=g, dtype=torch.float64)
    parts = conv.linear_parts()
    keeps = {"neigh": torch.tensor([1, 4, 9, 2]), "self": torch.arange(20)}
    weights = {b.name: torch.randn(keeps[b.name].numel(), b.weight.shape[1], generator=g, dtype=torch.float64)
               for b in parts.branches}
    conv.load_pruned(keeps, weights, torch.zeros(parts.out_channels, dtype=torch.float64))
    assert conv.in_channels == 20 and torch.equal(conv.neighbour_channels(), keeps["neigh"])
    conv.prune_outputs(torch.tensor([5, 0, 13, 2, 9]))
    assert torch.allclose(conv(h, graph), dense_attention(conv, h, graph), atol=1e-12)
    rows = torch.tensor([0, 7, 7, n - 1])
    assert torch.allclose(conv(h, graph, rows=rows), dense_attention(conv, h, graph)[rows], atol=1e-12)


@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_prune_end_to_end_served_exactly(scheme):
    g = torch.Generator().manual_seed(4)
    n = 200
    graph = _graph(n, g)
    model = _model(residual=(scheme == "batched"))
    x = torch.randn(n, 20, generator=g, dtype=torch.float64)
    unpruned = full_inference(model, graph, x, progress=False)
    same = prune(model, graph, x, keep=1.0, scheme=scheme, progress=False)
    assert torch.allclose(full_inference(same, graph, x, progress=False), unpruned, atol=1e-10)
    pruned = prune(model, graph, x, keep=0.5, scheme=scheme, min_kept=1, progress=False)
    info = pruned.pruning_info
    assert info["scheme"] == scheme and len(info["layers"]) == 3
    for layer in info["layers"][1:]:
        assert layer["branches"] == ["neigh", "self"] and layer["k"] == 8 and "method" in layer
        assert 0 <= layer["output_rel_error"] < 1
    if scheme == "batched":
        assert pruned.convs[0].neighbour_channels().numel() == 10  # raw features of the source branch
        assert pruned.convs[0].input_index_self is not None
    out = full_inference(pruned, graph, x, progress=False)
    assert torch.allclose(pruned(x, graph), out, atol=1e-10)
    rel = float((out - unpruned).norm() / unpruned.norm())
    assert rel < 0.5
    engine = BatchedEngine(pruned, graph, x, cache=True)
    targets = torch.randint(n, (30,), generator=g)
    assert torch.allclose(engine.predict(targets), out[targets], atol=1e-10)
    assert torch.allclose(engine.predict(torch.tensor([5])), out[[5]], atol=1e-10)


def test_batchnorm_folding_and_sequential_refit_refused():
    g = torch.Generator().manual_seed(5)
    n = 40
    graph = _graph(n, g)
    torch.manual_seed(5)
    model = GAT(20, 16, 4, num_layers=2, heads=2, norm="batchnorm").double().eval()
    with torch.no_grad():
        model.norms[0].running_mean.uniform_(-1, 1)
        model.norms[0].running_var.uniform_(0.5, 2)
        model.norms[0].weight.uniform_(0.5, 2)
    x = torch.randn(n, 20, generator=g, dtype=torch.float64)
    expected = model(x, graph)
    model.fold_batchnorm()
    assert isinstance(model.norms[0], torch.nn.Identity)
    assert torch.allclose(model(x, graph), expected, atol=1e-12)
    with pytest.raises(ValueError, match="sequential"):
        prune(model, graph, x, keep=0.5, refit="sequential", progress=False)
