"""gnnaccel.save / gnnaccel.load of GAT models: every variant (unpruned, BatchNorm folded or kept, residual,
averaged hidden heads, jk="last", converted from PyG, pruned in both schemes: explicit logit projections,
intercept, per-channel heads, per-branch input indices) comes back with the same state and the same
full_inference output bit for bit; damaged files and crafted attention tensors / options give clear errors."""
from __future__ import annotations

import pytest
import torch

import gnnaccel
from conftest import random_edge_index
from gnnaccel import Graph
from gnnaccel.inference import full_inference
from gnnaccel.models import GAT
from gnnaccel.pruning import prune
from gnnaccel.serialize import ModelFileError, _digest


@pytest.fixture(autouse=True)
def _own_rng():
    with torch.random.fork_rng():
        yield


def _data(n=48, in_ch=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = random_edge_index(n - 2, 6 * n, g, power_law=True)  # two isolated nodes at the end
    ei = torch.cat([ei, torch.tensor([[3, 3, 5], [3, 3, 6]])], 1)  # a duplicated self loop, a duplicate edge
    return Graph.from_edge_index(ei, n), torch.randn(n, in_ch, generator=g)


def _trained_like(model):
    """Non-trivial biases and BatchNorm statistics (fresh ones are zeros / identity)."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for conv in model.convs:
            if getattr(conv, "bias", None) is not None:
                conv.bias.copy_(torch.rand(conv.bias.shape, generator=gen) - 0.5)
        for norm in model.norms:
            if isinstance(norm, torch.nn.BatchNorm1d):
                norm.running_mean.copy_(torch.randn(norm.num_features, generator=gen))
                norm.running_var.copy_(torch.rand(norm.num_features, generator=gen) + 0.5)
                norm.weight.copy_(torch.randn(norm.num_features, generator=gen))
    return model.eval()


def _permute_hidden(model):
    """Keep every output of layer 0 in a shuffled order (its value channels then mix heads: head_index)."""
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(model.convs[0].out_channels, generator=gen)
    parts = model.convs[1].linear_parts()
    bias = torch.randn(parts.out_channels, generator=gen) * 0.1
    model.convs[0].prune_outputs(perm)
    model.convs[1].load_pruned({"neigh": perm, "self": perm}, {b.name: b.weight[perm] for b in parts.branches}, bias)
    assert model.convs[0].head_index is not None and model.convs[1].lin_bias is not None
    return model


def _variant(name, graph, x):
    torch.manual_seed(0)
    c = x.shape[1]
    if name == "unpruned":
        return _trained_like(GAT(c, 16, 3, num_layers=2, heads=4))
    if name == "batchnorm_kept":
        return _trained_like(GAT(c, 16, 3, num_layers=2, heads=4, norm="batchnorm"))
    if name == "batchnorm_folded":
        model = _trained_like(GAT(c, 16, 3, num_layers=2, heads=4, norm="batchnorm")).fold_batchnorm()
        assert model.convs[0].lin_att_src is not None
        return model
    if name == "residual_concat_false":
        return _trained_like(GAT(c, 6, 3, num_layers=3, heads=2, residual=True, concat=False, negative_slope=0.3))
    if name == "jk_last_no_self_loops":
        return _trained_like(GAT(c, 8, 3, num_layers=2, heads=2, jk="last", add_self_loops=False))
    if name == "head_index":
        return _permute_hidden(_trained_like(GAT(c, 16, 3, num_layers=2, heads=4, residual=True)))
    scheme, base = name.split("_", 1)
    model = {"plain": lambda: _trained_like(GAT(c, 16, 3, num_layers=3, heads=4, norm="batchnorm")),
             "residual": lambda: _trained_like(GAT(c, 6, 3, num_layers=2, heads=2, residual=True, concat=False))}[base]()
    pruned = prune(model, graph, x, keep=0.5, scheme=scheme, min_kept=1, progress=False)
    assert pruned.pruning_info["scheme"] == scheme
    return pruned


VARIANTS = ["unpruned", "batchnorm_kept", "batchnorm_folded", "residual_concat_false", "jk_last_no_self_loops",
            "head_index", "full_plain", "full_residual", "batched_plain", "batched_residual"]


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def _same_tree(a, b) -> bool:
    """Equal nested dicts / lists / tensors (pruning_info holds tensors of kept channels)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_tree, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trip_is_exact(tmp_path, name):
    graph, x = _data()
    model = _variant(name, graph, x)
    path = tmp_path / "gat.pt"
    gnnaccel.save(model, path)
    loaded = gnnaccel.load(path)
    assert type(loaded) is GAT and _same_state(loaded, model)
    assert [(c.in_channels, c.out_channels, getattr(c, "concat", None)) for c in loaded.convs] == \
        [(c.in_channels, c.out_channels, getattr(c, "concat", None)) for c in model.convs]
    assert _same_tree(getattr(loaded, "pruning_info", None), getattr(model, "pruning_info", None))
    with torch.inference_mode():
        expected = full_inference(model, graph, x, progress=False)
        assert torch.equal(full_inference(loaded, graph, x, progress=False), expected)
        assert torch.equal(full_inference(loaded, graph, x, chunk_size=7, progress=False),
                           full_inference(model, graph, x, chunk_size=7, progress=False))
    if name.startswith("batched"):
        assert any(c.input_index_neigh is not None for c in loaded.convs)
    meta = gnnaccel.load(path, map_location="meta")
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs", [dict(heads=2), dict(heads=3, concat=False, residual=True),
                                    dict(heads=2, norm="batch_norm"), dict(heads=2, jk="last")])
def test_pyg_gat_round_trip_matches_pyg(tmp_path, kwargs):
    pyg_models = pytest.importorskip("torch_geometric.nn.models")
    torch.manual_seed(0)
    graph, x = _data(in_ch=5)
    pyg = pyg_models.GAT(5, 6, 2, out_channels=3, **kwargs).eval()
    with torch.no_grad():
        for conv in pyg.convs:
            conv.bias.uniform_(-0.5, 0.5)
        for norm in pyg.norms:  # PyG's BatchNorm wraps torch's: give it statistics
            if hasattr(norm, "module"):
                norm.module.running_mean.uniform_(-1, 1)
                norm.module.running_var.uniform_(0.5, 1.5)
    model = gnnaccel.from_pyg(pyg)
    gnnaccel.save(model, tmp_path / "m.pt")
    loaded = gnnaccel.load(tmp_path / "m.pt")
    ei = torch.stack([graph.row_of_edge(), graph.col.long()])[[1, 0]]
    with torch.no_grad():
        out = loaded(x, ei)
        assert torch.equal(out, model(x, ei))
        torch.testing.assert_close(out, pyg(x, ei), rtol=1e-5, atol=1e-5)


def test_changed_weight_byte_is_caught_by_the_checksum(tmp_path):
    graph, x = _data()
    model = _variant("head_index", graph, x)
    path = tmp_path / "m.pt"
    gnnaccel.save(model, path)
    data = bytearray(path.read_bytes())
    target = model.convs[1].lin_att_src.detach().numpy().tobytes()
    pos = bytes(data).find(target)
    assert pos >= 0
    data[pos + 5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        gnnaccel.load(path)


def _write(payload, path):
    payload = dict(payload)
    payload.pop("sha256", None)
    payload["sha256"] = _digest(payload, budget=1 << 40)  # valid checksum: reaches the configuration checks
    torch.save(payload, path)
    return path


def _set(key, value):
    return lambda p: p["state_dict"].__setitem__(key, value(p["state_dict"]) if callable(value) else value)


@pytest.mark.parametrize("change, match", [
    (_set("convs.0.att_src", lambda s: torch.zeros(1, 4, 5)), r"att_src has shape \[1, 4, 5\], expected \[1, 4, 4\]"),
    (_set("convs.1.lin_att_src", lambda s: torch.zeros(4, 7)), r"lin_att_src has shape \[4, 7\], expected \[4, 16\]"),
    (lambda p: p["state_dict"].pop("convs.1.lin_att_dst"), "stored together|lacks"),
    (_set("convs.1.lin_bias", lambda s: torch.zeros(5)), r"lin_bias has shape \[5\]"),
    (_set("convs.0.head_index", lambda s: s["convs.0.head_index"].clone().fill_(4)), "head_index must hold the head"),
    (_set("convs.0.head_index", lambda s: s["convs.0.head_index"][:-1].clone()), "head_index must hold the head"),
    (_set("convs.0.head_index", lambda s: s["convs.0.head_index"].double()), "1-D int64"),
    (_set("convs.0.bias", lambda s: torch.zeros(3)), r"bias has shape \[3\], expected \[16\]"),
    (_set("convs.0.lin.weight", lambda s: torch.zeros(15, 10)), "value channels|shape"),
    (lambda p: p["init"].update(heads=2), "has shape"),
    (lambda p: p["init"].update(concat=False), "value channels|shape"),
    (lambda p: p["init"].update(negative_slope=float("nan")), "not finite"),
    (lambda p: p["init"].update(edge_dim=3), "edge features"),
    (lambda p: p["init"].update(heads=0), "heads must be a positive int"),
    (lambda p: p["init"].update(attention="evil"), "unknown arguments"),
])
def test_crafted_gat_files_are_rejected(tmp_path, change, match):
    graph, x = _data()
    model = _variant("head_index", graph, x)
    gnnaccel.save(model, tmp_path / "orig.pt")
    payload = torch.load(tmp_path / "orig.pt", weights_only=True)
    change(payload)
    with pytest.raises(ModelFileError, match=match) as info:
        gnnaccel.load(_write(payload, tmp_path / "crafted.pt"))
    assert "crafted.pt" in str(info.value)


def test_save_refuses_gat_models_it_could_not_rebuild(tmp_path):
    model = GAT(5, 8, 3, num_layers=2, heads=2).eval()
    model.convs[1] = gnnaccel.nn.GATConv(8, 3, heads=2, concat=True)  # an output layer GAT(...) never builds
    with pytest.raises(ValueError, match=r"convs.1.concat = True"):
        gnnaccel.save(model, tmp_path / "m.pt")
    model = GAT(5, 8, 3, num_layers=2, heads=2).eval()
    model.convs[1] = gnnaccel.nn.GATConv(8, 3, heads=2, concat=False, bias=False)
    with pytest.raises(ValueError, match="differ in bias"):
        gnnaccel.save(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
