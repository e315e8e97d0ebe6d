"""PyG interop beyond single layers (issue 13 items 2, 14, 18): kept norms and the pruner, PyG models accepted
by full_inference / BatchedEngine / save, lazy and bipartite layers, reprs of pruned models."""
import pytest
import torch
import torch_geometric.nn as pyg_nn

import gnnaccel
from gnnaccel import Graph
from gnnaccel.batched import BatchedEngine
from gnnaccel.inference import full_inference
from gnnaccel.models import as_model, from_pyg
from gnnaccel.nn import GCNConv, SAGEConv
from conftest import random_edge_index


def _graph(generator, n=120, e=900):
    edge_index = random_edge_index(n, e, generator)
    return edge_index, Graph.from_edge_index(edge_index, n), torch.randn(n, 12, generator=generator)


def _random_bn_stats(model, generator):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize("kwargs", [dict(act_first=True, norm="batch_norm"),
                                    dict(normalize=True, norm="batch_norm")])
def test_prune_keeps_unfoldable_batchnorm(kwargs, generator):
    """BatchNorm that cannot be folded stays a separate step; the pruner slices it with the conv's outputs."""
    edge_index, g, x = _graph(generator)
    pyg = _random_bn_stats(pyg_nn.models.GraphSAGE(12, 16, num_layers=3, out_channels=4, **kwargs), generator)
    ours = from_pyg(pyg)
    assert any(isinstance(n, torch.nn.BatchNorm1d) for n in ours.norms)
    with torch.no_grad():
        expected = pyg(x, edge_index)
    if kwargs.get("normalize"):  # L2-normalised hidden layers: output channels cannot be dropped (unchanged)
        with pytest.raises(ValueError, match="normalise"):
            gnnaccel.prune(pyg, g, x, keep=0.5, progress=False)
        return
    full = gnnaccel.prune(pyg, g, x, keep=1.0, progress=False)
    with torch.no_grad():
        assert torch.allclose(full(x, g), expected, atol=1e-4, rtol=1e-4)
    half = gnnaccel.prune(pyg, g, x, keep=0.5, progress=False)
    for conv, norm in zip(half.convs[:-1], half.norms[:-1]):
        assert isinstance(norm, torch.nn.BatchNorm1d) and norm.num_features == conv.out_channels == 8
    with torch.no_grad():
        err = (half(x, g) - expected).norm() / expected.norm()
    assert err < 0.5  # a refit at half the channels stays close (a wrong BN slice gives errors > 1)


def test_prune_rejects_layernorm_hidden_layers(generator):
    _, g, x = _graph(generator)
    pyg = pyg_nn.models.GraphSAGE(12, 16, num_layers=2, out_channels=4, norm="layer_norm",
                                  norm_kwargs={"mode": "node"}).eval()
    with pytest.raises(ValueError, match="LayerNorm"):
        gnnaccel.prune(pyg, g, x, keep=0.5, progress=False)


def test_pyg_models_accepted_directly(generator, tmp_path):
    edge_index, g, x = _graph(generator)
    pyg = _random_bn_stats(pyg_nn.models.GraphSAGE(12, 16, num_layers=2, out_channels=4, norm="batch_norm"),
                           generator)
    with torch.no_grad():
        expected = pyg(x, edge_index)
    assert torch.allclose(full_inference(pyg, g, x, progress=False), expected, atol=1e-5)
    assert as_model(pyg) is as_model(pyg)  # converted once
    engine = BatchedEngine(pyg, g, x)
    assert pyg.training is False and torch.allclose(engine.predict([3, 7, 11]), expected[[3, 7, 11]], atol=1e-5)
    gnnaccel.save(pyg, tmp_path / "m.pt")
    loaded = gnnaccel.load(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x, g), expected, atol=1e-5)
    with torch.no_grad():  # a change to the PyG model is seen (no stale conversion)
        pyg.convs[0].lin_l.weight.mul_(2)
        expected = pyg(x, edge_index)
    assert torch.allclose(full_inference(pyg, g, x, progress=False), expected, atol=1e-5)


def test_pruned_repr_shows_scheme_and_widths(generator):
    _, g, x = _graph(generator)
    model = gnnaccel.models.GraphSAGE(12, 16, 4, num_layers=2).eval()
    pruned = gnnaccel.prune(model, g, x, keep=0.5, scheme="batched", progress=False, min_kept=1)
    text = repr(pruned)
    assert "scheme=batched" in text and "keep=" in text
    assert "inputs: neigh 6/12, self 12/12" in text
    assert "SAGEConv(12, 8, aggr=mean" in text and "SAGEConv(8, 4, aggr=mean)" in text


def test_lazy_gcn_and_keyword_rows(generator):
    edge_index, g, x = _graph(generator)
    conv = GCNConv(-1, 5)
    assert repr(conv) == "GCNConv(-1, 5)"
    out = conv(x, edge_index)
    assert conv.in_channels == 12 and repr(conv) == "GCNConv(12, 5)"
    rows = [4, 0, 9]
    assert torch.allclose(conv(x, g, rows=rows), out[rows], atol=1e-6)
    with pytest.raises(ValueError, match="edge_weight goes with an edge_index"):
        conv(x, g, torch.ones(g.num_edges))
    sage = SAGEConv(12, 5)
    with pytest.raises(ValueError, match="size"):  # PyG's third positional argument is size, not rows
        sage(x, g, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lazy"):
        SAGEConv(-1, 4).linear_parts()


def test_bipartite_sage_matches_pyg_on_a_sampled_block(generator):
    """PyG's mini-batch layer-wise call: x_src of a hop's sources, x_dst = its first rows (the targets)."""
    n_src, n_dst = 50, 12
    src = torch.randint(n_src, (300,), generator=generator)
    dst = torch.randint(n_dst, (300,), generator=generator)
    edge_index = torch.stack([src, dst])
    x_src = torch.randn(n_src, 6, generator=generator)
    for aggr in ("mean", "sum", "max"):
        ours = SAGEConv(6, 4, aggr=aggr)
        ref = pyg_nn.SAGEConv(6, 4, aggr=aggr)
        ref.load_state_dict(ours.state_dict())
        with torch.no_grad():
            expected = ref((x_src, x_src[:n_dst]), edge_index)
            assert torch.allclose(ours((x_src, x_src[:n_dst]), edge_index), expected, atol=1e-5)
            assert torch.allclose(ours((x_src, x_src[:n_dst]), edge_index, (n_src, n_dst)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="source node"):
        ours((x_src[:10], x_src[:n_dst]), edge_index)
    with pytest.raises(ValueError, match="size="):
        ours((x_src, None), edge_index)


@pytest.mark.parametrize("kwargs", [dict(jk="last"), dict(act_first=True, norm="batch_norm"),
                                    dict(norm="layer_norm", norm_kwargs={"mode": "node"}),
                                    dict(normalize=True, norm="batch_norm", jk="last")])
def test_save_load_keeps_pyg_options(kwargs, generator, tmp_path):
    edge_index, g, x = _graph(generator)
    pyg = _random_bn_stats(pyg_nn.models.GraphSAGE(12, 16, num_layers=3, out_channels=4, **kwargs), generator)
    with torch.no_grad():
        expected = pyg(x, edge_index)
        gnnaccel.save(pyg, tmp_path / "m.pt")
        loaded = gnnaccel.load(tmp_path / "m.pt")
        assert torch.allclose(loaded(x, g), expected, atol=1e-5)
        assert torch.allclose(full_inference(loaded, g, x, chunk_size=50, progress=False), expected, atol=1e-5)
    nodes = [0, 5, 77, 119]
    assert torch.allclose(BatchedEngine(loaded, g, x).predict(nodes), expected[nodes], atol=1e-5)
