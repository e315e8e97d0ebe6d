"""Models, from_pyg (with BatchNorm folding), full-graph inference and the trainer."""
import pytest
import torch
import torch_geometric.nn as pyg_nn
from sklearn.metrics import f1_score

import gnnaccel
from gnnaccel import Graph
from gnnaccel.datasets import synthetic
from gnnaccel.inference import full_inference
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE, from_pyg
from gnnaccel.train import evaluate, f1_micro, train
from conftest import random_edge_index

REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def assert_rel(out, ref, dtype):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    err = ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()
    assert err <= REL_TOL[dtype], f"relative error {err:.3e} > {REL_TOL[dtype]}"


def make_graph(generator, n=90, e=700):
    ei = random_edge_index(n - 4, e, generator, power_law=True, hub=True)  # last 4 nodes isolated
    ei = torch.cat([ei, torch.tensor([[3, 3, 5], [3, 3, 5]])], 1)  # duplicated self loops
    return ei, n


def randomise_batchnorm(module, generator):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.normal_(generator=generator)
                m.bias.normal_(generator=generator)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["sage", "gcn"])
@pytest.mark.parametrize("num_layers, norm", [(1, None), (2, "batch_norm"), (3, None), (3, "batch_norm")])
def test_from_pyg_model_matches(dtype, kind, num_layers, norm, generator):
    ei, n = make_graph(generator)
    cls = pyg_nn.models.GraphSAGE if kind == "sage" else pyg_nn.models.GCN
    pyg = cls(12, 20, num_layers, out_channels=6, norm=norm, dropout=0.3).to(dtype)
    randomise_batchnorm(pyg, generator)
    pyg.eval()
    ours = from_pyg(pyg)
    assert not ours.training and isinstance(ours, GraphSAGE if kind == "sage" else GCN)
    assert all(isinstance(m, torch.nn.Identity) for m in ours.norms)  # BatchNorm folded
    x = torch.randn(n, 12, generator=generator, dtype=dtype)
    ref = pyg(x, ei)
    assert_rel(ours(x, ei), ref, dtype)
    g = Graph.from_edge_index(ei, n)
    assert_rel(full_inference(ours, g, x, progress=False), ref, dtype)


@pytest.mark.parametrize("kind", ["sage_mean", "sage_max", "gcn"])
def test_from_pyg_layer_matches(kind, generator):
    ei, n = make_graph(generator)
    pyg = (pyg_nn.GCNConv(7, 5) if kind == "gcn" else pyg_nn.SAGEConv(7, 5, aggr=kind.split("_")[1])).double()
    ours = from_pyg(pyg)
    x = torch.randn(n, 7, generator=generator, dtype=torch.float64)
    assert_rel(ours(x, ei), pyg(x, ei), torch.float64)


def test_from_pyg_rejects_unsupported():
    with pytest.raises(TypeError, match="from_pyg supports"):
        from_pyg(pyg_nn.GATv2Conv(4, 4))
    with pytest.raises(TypeError, match="from_pyg supports"):
        from_pyg(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="jumping knowledge"):
        from_pyg(pyg_nn.models.GraphSAGE(4, 8, 2, out_channels=3, jk="cat"))
    with pytest.raises(ValueError, match="mode='graph'"):
        from_pyg(pyg_nn.models.GraphSAGE(4, 8, 2, out_channels=3, norm="layer_norm"))
    with pytest.raises(ValueError, match="not supported"):
        from_pyg(pyg_nn.models.GraphSAGE(4, 8, 2, out_channels=3, norm="instance_norm"))
    with pytest.raises(ValueError, match="aggregation"):
        from_pyg(pyg_nn.SAGEConv(4, 4, aggr="std"))
    with pytest.raises(ValueError, match="project=True"):
        from_pyg(pyg_nn.SAGEConv(4, 4, project=True))


@pytest.mark.parametrize("cls", [GraphSAGE, GCN, SAINTGraphSAGE])
def test_fold_batchnorm_keeps_eval_output(cls, generator):
    ei, n = make_graph(generator)
    model = cls(10, 16, 5, num_layers=2, norm="batchnorm").double()
    randomise_batchnorm(model, generator)
    model.eval()
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    before = model(x, ei)
    model.fold_batchnorm()
    assert all(isinstance(m, torch.nn.Identity) for m in model.norms)
    assert_rel(model(x, ei), before, torch.float64)


def test_model_structure(generator):
    m = SAINTGraphSAGE(10, 16, 5, num_layers=2, dropout=0.5, norm="batchnorm")
    assert len(m.convs) == 3 and len(m.norms) == 3 and isinstance(m.norms[-1], torch.nn.Identity)
    assert [c.out_channels for c in m.convs] == [16, 16, 5]
    g = GraphSAGE(10, 16, 5, num_layers=3, norm="batchnorm")
    assert [type(n).__name__ for n in g.norms] == ["BatchNorm1d", "BatchNorm1d", "Identity"]
    ei, n = make_graph(generator)
    out = m(torch.randn(n, 10, generator=generator), ei)
    assert out.shape == (n, 5)
    with pytest.raises(ValueError, match="norm must be"):
        GraphSAGE(4, 8, 2, norm="groupnorm")


@pytest.mark.parametrize("cls, hidden, out", [(GraphSAGE, 16, 3), (GraphSAGE, 4, 24), (GCN, 16, 3),
                                              (SAINTGraphSAGE, 16, 3), (SAINTGraphSAGE, 6, 3)])
@pytest.mark.parametrize("chunk_size", [None, 7, 1000])
def test_full_inference_matches_forward(cls, hidden, out, chunk_size, generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    model = cls(12, hidden, out, num_layers=2, dropout=0.5, norm="batchnorm").double()
    randomise_batchnorm(model, generator)
    model.train()
    x = torch.randn(n, 12, generator=generator, dtype=torch.float64)
    model.eval()
    ref = model(x, g)
    model.train()
    result, hidden_states = full_inference(model, g, x, chunk_size=chunk_size, progress=False, return_hidden=True)
    assert model.training  # restored
    assert_rel(result, ref, torch.float64)
    assert len(hidden_states) == len(model.convs)  # hidden[l] = output of layer l
    assert torch.equal(hidden_states[-1], result)
    model.eval()
    h = x
    for i in range(len(model.convs)):  # every layer's hidden features
        h = model.layer(i, h, g)
        assert_rel(hidden_states[i], h, torch.float64)


def test_full_inference_float32_and_bad_args(generator):
    ei, n = make_graph(generator)
    model = GraphSAGE(12, 32, 4, num_layers=2)
    x = torch.randn(n, 12, generator=generator)
    ref = model.eval()(x, ei)
    assert_rel(full_inference(model, ei, x, chunk_size=10, progress=False), ref, torch.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        full_inference(model, ei, x, chunk_size=0)
    with pytest.raises(TypeError, match="gnnaccel model"):
        full_inference(torch.nn.Linear(12, 8), ei, x)
    with pytest.raises(TypeError, match="PyG models.GraphSAGE"):
        full_inference(pyg_nn.models.GIN(12, 8, 2), ei, x)


def test_f1_micro_matches_sklearn(generator):
    logits = torch.randn(50, 4, generator=generator)
    y = torch.randint(4, (50,), generator=generator)
    assert f1_micro(logits, y) == pytest.approx(f1_score(y, logits.argmax(1), average="micro"))
    y_multi = (torch.rand(50, 4, generator=generator) > 0.6).float()
    assert f1_micro(logits, y_multi) == pytest.approx(f1_score(y_multi, (logits > 0).int(), average="micro"))


@pytest.mark.parametrize("multilabel", [False, True])
def test_train_learns_and_restores_best(multilabel):
    data = synthetic(600, 8, 16, 4, seed=1)
    y = torch.nn.functional.one_hot(data.y, 4).float() if multilabel else data.y
    torch.manual_seed(0)
    model = GraphSAGE(16, 32, 4, num_layers=2, dropout=0.2)
    result = train(model, data.graph, data.x, y, data.train_mask, data.val_mask, epochs=60, patience=15)
    assert not model.training
    assert evaluate(model, data.graph, data.x, y, data.val_mask) == pytest.approx(result.best_val)
    assert result.best_val > 0.6  # 4 balanced classes: chance is about 0.25
    assert result.history[result.best_epoch]["val_f1"] == result.best_val


def test_models_compile_fullgraph(generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    x = torch.randn(n, 12, generator=generator)
    for cls in (GraphSAGE, GCN, SAINTGraphSAGE):
        model = cls(12, 16, 4, num_layers=2).eval()
        with torch.no_grad():
            expected = model(x, g)
            torch.testing.assert_close(torch.compile(model, fullgraph=True)(x, g), expected, rtol=1e-5, atol=1e-5)


def test_full_inference_warms_feature_cache(generator):
    from gnnaccel.cache import FeatureCache
    from gnnaccel.inference import warm_cache

    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    model = GraphSAGE(12, 12, 3, num_layers=2).double().eval()  # hidden width = input width: no shape hint
    x = torch.randn(n, 12, generator=generator, dtype=torch.float64)
    cache = FeatureCache(n, [12], dtype=torch.float64)
    out = warm_cache(cache, model, g, x)
    assert_rel(out, model(x, g), torch.float64)
    hit, values = cache.lookup(0, torch.arange(n))
    assert bool(hit.all())
    assert_rel(values, model.layer(0, x, g), torch.float64)


def test_models_do_not_import_serialize():
    """Dependencies point one way: serialize imports models, never the reverse (issue 12 item 8)."""
    import ast
    import pathlib

    import gnnaccel.models as models

    tree = ast.parse(pathlib.Path(models.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[-1])
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[-1] for a in node.names)
    assert "serialize" not in imported and "save" not in imported
    assert not hasattr(models.GraphSAGE, "save")  # gnnaccel.save(model, path) is the one writer
