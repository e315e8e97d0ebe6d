"""gnnaccel.prune (calibration, selection, refit over whole models), save/load, finetune, keep_ratio_sweep."""
import pytest
import torch
import torch_geometric.nn as pyg_nn

import gnnaccel
from gnnaccel import Graph
from gnnaccel.datasets import synthetic
from gnnaccel.inference import full_inference
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE, from_pyg
from gnnaccel.nn import GCNConv
from gnnaccel.pruning import finetune, layer_second_moment
from gnnaccel.pruning.report import keep_ratio_sweep, logit_relative_error
from gnnaccel.train import train
from conftest import dense_aggregate, random_edge_index

MODELS = {"sage": GraphSAGE, "gcn": GCN, "saint": SAINTGraphSAGE}


def make_graph(generator, n=120, e=900):
    ei = random_edge_index(n - 4, e, generator, power_law=True, hub=True)  # last 4 nodes isolated
    ei = torch.cat([ei, torch.tensor([[3, 3, 5], [3, 3, 5]])], 1)  # duplicated self loops
    return Graph.from_edge_index(ei, n), ei


def forward(model, graph, x):
    with torch.no_grad():
        return model(x, graph)


def rel(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def plant_informative_channels(model, k, generator):
    """Make every hidden layer's input depend on exactly ``k`` channels: the next layer's weights on the other
    input channels are zeroed, the kept ones are shifted to stay alive through the ReLU. Returns the sets."""
    informative = []
    with torch.no_grad():
        for l in range(1, len(model.convs)):
            c = model.convs[l].in_channels
            keep = torch.sort(torch.randperm(c, generator=generator)[:k]).values
            drop = torch.ones(c, dtype=torch.bool)
            drop[keep] = False
            for lin in model.convs[l].modules():
                if isinstance(lin, torch.nn.Linear):
                    lin.weight[:, drop] = 0
            shift = torch.zeros(c, dtype=torch.float64)
            shift[keep] = 5.0
            model.convs[l - 1].scale_outputs(torch.ones(c, dtype=torch.float64), shift)
            informative.append(keep)
    return informative


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint"])
@pytest.mark.parametrize("method", ["lasso", "auto"])
def test_exact_recovery_of_planted_channels(kind, method, generator):
    """(Greedy alone, forward selection then single swaps, misses the planted set on a few draws out of 30:
    a local optimum; "auto" keeps the better of it and the swap-refined LASSO selection.)"""
    graph, _ = make_graph(generator)
    model = MODELS[kind](10, 24, 5, num_layers=3 if kind != "saint" else 2).double().eval()
    informative = plant_informative_channels(model, 6, generator)
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    pruned = gnnaccel.prune(model, graph, x, keep=0.25, method=method, ridge=0.0, progress=False, min_kept=1)
    for l, keep in enumerate(informative, start=1):
        kept = pruned.pruning_info["layers"][l]["kept"]
        assert all(torch.equal(kb, keep) for kb in kept.values()), (l, kept, keep)
        assert pruned.convs[l].in_channels == 6
    assert rel(forward(pruned, graph, x), forward(model, graph, x)) < 1e-6


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint"])
@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_keep_one_reproduces_model(kind, scheme, generator):
    graph, _ = make_graph(generator)
    model = MODELS[kind](10, 16, 4, num_layers=2, norm="batchnorm").eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator)
    pruned = gnnaccel.prune(model, graph, x, keep=1.0, scheme=scheme, progress=False, min_kept=1)
    assert pruned is not model and isinstance(model.norms[0], torch.nn.BatchNorm1d)  # original untouched
    assert rel(forward(pruned, graph, x), forward(model, graph, x)) < 1e-5


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint"])
@pytest.mark.parametrize("scheme", ["full", "batched"])
@pytest.mark.parametrize("method", ["lasso", "greedy", "random", "magnitude"])
def test_schemes_shapes_and_inference(kind, scheme, method, generator):
    graph, _ = make_graph(generator)
    model = MODELS[kind](12, 16, 4, num_layers=2, norm="batchnorm").eval()
    x = torch.randn(graph.num_nodes, 12, generator=generator)
    pruned = gnnaccel.prune(model, graph, x, keep=[None, 0.25] + [0.5] * (len(model.convs) - 2)
                            if scheme == "full" else 0.25, scheme=scheme, method=method, progress=False, min_kept=1)
    info = pruned.pruning_info
    assert info["scheme"] == scheme and info["method"] == method
    for l, (conv, layer) in enumerate(zip(pruned.convs, info["layers"])):
        parts = conv.linear_parts()
        for b in parts.branches:
            assert b.weight.shape[0] == layer["kept"][b.name].numel()
        assert 0 <= layer["output_rel_error"] < 1.5
        if l > 0:
            assert conv.in_channels == pruned.convs[l - 1].out_channels == layer["k"]
    first = info["layers"][0]["kept"]
    if scheme == "batched" and kind != "gcn":
        assert first["self"].numel() == 12 and first["neigh"].numel() == 3  # round(0.25 * 12)
        assert pruned.convs[0].in_channels == 12
    else:
        assert all(kb.numel() == 12 for kb in first.values())
    assert pruned.convs[1].in_channels == 4  # 0.25 * 16
    out = full_inference(pruned, graph, x, progress=False)
    assert out.shape == (graph.num_nodes, 4)
    assert rel(out, forward(pruned, graph, x)) < 1e-5
    assert rel(full_inference(pruned, graph, x, chunk_size=37, progress=False), out) < 1e-5


def test_second_moment_matches_dense_reference(generator):
    graph, ei = make_graph(generator)
    conv = GraphSAGE(7, 9, 3, num_layers=1).double().convs[0]
    h = torch.randn(graph.num_nodes, 7, generator=generator, dtype=torch.float64)
    rows = torch.randperm(graph.num_nodes, generator=generator)[:50]
    S = layer_second_moment(conv, graph, h, rows, batch_size=16, progress=False)
    Z = torch.cat([dense_aggregate(ei, graph.num_nodes, h, "mean"), h.double()], 1)[rows]
    torch.testing.assert_close(S, Z.T @ Z / 50, rtol=1e-10, atol=1e-12)


def test_from_pyg_model_prunes_like_its_conversion(generator):
    graph, ei = make_graph(generator)
    pyg = pyg_nn.models.GraphSAGE(10, 20, 2, out_channels=3, norm="batch_norm").eval()
    with torch.no_grad():
        for m in pyg.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
    x = torch.randn(graph.num_nodes, 10, generator=generator)
    a = gnnaccel.prune(pyg, graph, x, keep=0.5, scheme="batched", progress=False, min_kept=1)
    b = gnnaccel.prune(from_pyg(pyg), graph, x, keep=0.5, scheme="batched", progress=False, min_kept=1)
    assert rel(forward(a, graph, x), forward(b, graph, x)) < 1e-6
    assert rel(forward(a, graph, x), pyg(x, ei)) < 0.5  # still close to the original at keep 1/2


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = synthetic(800, 8, 64, 4, seed=3, feature_signal=0.5)
    model = GraphSAGE(64, 128, 4, num_layers=2, norm="batchnorm", dropout=0.2)
    train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=60, lr=0.01, patience=60)
    return model.eval(), data


@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_lasso_beats_random_and_magnitude_on_trained_model(trained, scheme):
    model, data = trained
    ref = full_inference(model, data.graph, data.x, progress=False)[data.test_mask]
    err = {}
    for method in ("lasso", "random", "magnitude"):
        pruned = gnnaccel.prune(model, data.graph, data.x, keep=0.25, scheme=scheme, method=method, progress=False,
                                min_kept=1)
        err[method] = logit_relative_error(ref, full_inference(pruned, data.graph, data.x,
                                                               progress=False)[data.test_mask])
    # Seeded model; at the time of writing lasso / best baseline was 0.86 (full) and 0.86 (batched).
    assert err["lasso"] < 0.95 * min(err["random"], err["magnitude"]), err


def test_finetune_and_sweep(trained):
    model, data = trained
    rows = keep_ratio_sweep(model, data, ratios=(0.5, 0.25), repeats=1)
    assert [r["keep"] for r in rows] == [0.5, 0.25]
    for r in rows:
        assert 0 <= r["f1"] <= 1 and r["logit_rel_error"] >= 0 and r["full_inference_speedup"] > 0
        assert r["model"].convs[1].in_channels == round(128 * r["keep"])
    pruned = rows[-1]["model"]
    from gnnaccel.train import evaluate
    before = evaluate(pruned, data.graph, data.x, data.y, data.val_mask)
    finetune(pruned, data, epochs=5, lr=1e-3)
    assert evaluate(pruned, data.graph, data.x, data.y, data.val_mask) >= before
    assert pruned.convs[1].in_channels == 32


# ---------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind, scheme", [("sage", "batched"), ("sage", "full"), ("gcn", "full"),
                                          ("saint", "batched"), ("sage", None)])
def test_save_load_round_trip(kind, scheme, tmp_path, generator):
    graph, _ = make_graph(generator)
    model = MODELS[kind](10, 16, 4, num_layers=2, norm="batchnorm", dropout=0.1).eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator)
    if scheme is not None:
        model = gnnaccel.prune(model, graph, x, keep=0.25, scheme=scheme, progress=False, min_kept=1)
    path = tmp_path / "model.pt"
    gnnaccel.save(model, path)
    loaded = gnnaccel.load(path)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(forward(loaded, graph, x), forward(model, graph, x))
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [c.in_channels for c in loaded.convs] == [c.in_channels for c in model.convs]
    if scheme is not None:
        for la, lb in zip(model.pruning_info["layers"], loaded.pruning_info["layers"]):
            assert la["kept"].keys() == lb["kept"].keys()
            assert all(torch.equal(la["kept"][n], lb["kept"][n]) for n in la["kept"])


def test_load_rejects_bad_files(tmp_path, generator):
    graph, _ = make_graph(generator)
    model = GraphSAGE(10, 16, 4).eval()
    good = tmp_path / "good.pt"
    gnnaccel.save(model, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "text.pt"
    text.write_text("not a model")
    for path in (truncated, foreign, text):
        with pytest.raises(ValueError, match=path.name):
            gnnaccel.load(path)
    payload = torch.load(good, weights_only=True)
    payload["version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(ValueError, match="version"):
        gnnaccel.load(future)
    payload["version"] = 1
    payload["state_dict"]["convs.1.lin_l.weight"] = torch.zeros(4, 3)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(ValueError, match="mismatched.pt"):
        gnnaccel.load(mismatched)
    with pytest.raises(TypeError, match="save supports"):
        gnnaccel.save(torch.nn.Linear(2, 2), tmp_path / "linear.pt")


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs(generator):
    graph, _ = make_graph(generator)
    model = GraphSAGE(10, 16, 4, num_layers=2).eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator)
    for keep in (0.0, 1.5, -0.25, float("nan"), [0.5]):
        with pytest.raises(ValueError, match="keep"):
            gnnaccel.prune(model, graph, x, keep=keep, progress=False, min_kept=1)
    with pytest.raises(ValueError, match="keep\\[0\\]"):
        gnnaccel.prune(model, graph, x, keep=[0.5, 0.5], scheme="full", progress=False, min_kept=1)
    with pytest.raises(ValueError, match="scheme"):
        gnnaccel.prune(model, graph, x, scheme="partial", progress=False, min_kept=1)
    with pytest.raises(ValueError, match="method"):
        gnnaccel.prune(model, graph, x, method="l0", progress=False, min_kept=1)
    for calib in (torch.tensor([0, graph.num_nodes]), torch.tensor([-1]), graph.num_nodes + 1,
                  torch.ones(graph.num_nodes + 1, dtype=torch.bool)):
        with pytest.raises(ValueError, match="calib_nodes"):
            gnnaccel.prune(model, graph, x, calib_nodes=calib, progress=False, min_kept=1)
    bad = GraphSAGE(10, 16, 4, num_layers=2).eval()
    bad.convs[1] = torch.nn.Linear(16, 4)
    with pytest.raises(TypeError, match="layer 1 \\(Linear\\)"):
        gnnaccel.prune(bad, graph, x, progress=False, min_kept=1)
    nan_model = GraphSAGE(10, 16, 4, num_layers=2).eval()
    with torch.no_grad():
        nan_model.convs[0].lin_l.weight[3, 0] = float("nan")
    with pytest.raises(ValueError, match="layer 1 \\(SAGEConv\\).*NaN"):
        gnnaccel.prune(nan_model, graph, x, progress=False, min_kept=1)
    x_nan = x.clone()
    x_nan[5, 2] = float("nan")
    with pytest.raises(ValueError, match="layer 0.*NaN"):
        gnnaccel.prune(model, graph, x_nan, scheme="batched", progress=False, min_kept=1)
    normalized = GraphSAGE(10, 16, 4, num_layers=2, normalize=True).eval()
    with pytest.raises(ValueError, match="layer 0 \\(SAGEConv\\).*normali"):
        gnnaccel.prune(normalized, graph, x, progress=False, min_kept=1)
    pruned = gnnaccel.prune(model, graph, x, keep=0.5, scheme="batched", progress=False, min_kept=1)
    with pytest.raises(ValueError, match="layer 0"):
        gnnaccel.prune(pruned, graph, x, progress=False, min_kept=1)


def test_save_load_model_converted_from_pyg(tmp_path, generator):
    pyg_models = pytest.importorskip("torch_geometric.nn.models")
    graph, _ = make_graph(generator)
    x = torch.randn(graph.num_nodes, 10, generator=generator)
    torch.manual_seed(0)
    pyg = pyg_models.GraphSAGE(10, 16, 2, out_channels=4).eval()  # carries torch.nn.ReLU() as its activation
    model = gnnaccel.prune(gnnaccel.from_pyg(pyg), graph, x, keep=0.5, progress=False, min_kept=1)
    gnnaccel.save(model, tmp_path / "m.pt")
    assert torch.equal(forward(gnnaccel.load(tmp_path / "m.pt"), graph, x), forward(model, graph, x))


# ------------------------------------------------------------------ error-compensating (sequential) refit
def _dense_branches(conv, h, ei, n):
    """Independent float64 reference of a layer's linear part from its nn.Linear modules and a dense loop
    aggregation: list of (input Z_b [n, c], weight [c, d_b], first output column)."""
    h = h.double()
    if hasattr(conv, "lin_l"):  # SAGEConv (mean): Y = mean_agg(h) W_l + h W_r
        return [(dense_aggregate(ei, n, h, "mean"), conv.lin_l.weight.double().T, 0),
                (h, conv.lin_r.weight.double().T, 0)]
    if hasattr(conv, "lin_self"):  # SAINTConv: [h W_self || mean_agg(h) W_neigh]
        return [(h, conv.lin_self.weight.double().T, 0),
                (dense_aggregate(ei, n, h, "mean"), conv.lin_neigh.weight.double().T, conv.self_channels)]
    if isinstance(conv, GCNConv):  # normalised by PyG's gcn_norm, the reference of that layer
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        assert conv.normalize
        norm_ei, norm_w = gcn_norm(ei, None, n, add_self_loops=True, dtype=torch.float64)
        return [(dense_aggregate(norm_ei, n, h, "sum", norm_w), conv.lin.weight.double().T, 0)]
    return [(h, conv.lin.weight.double().T, 0)]  # Dense


def _dense_linear(branches, d):
    Y = torch.zeros(branches[0][0].shape[0], d, dtype=torch.float64)
    for Z, W, start in branches:
        Y[:, start:start + W.shape[1]] += Z @ W
    return Y


def _lstsq_fit(Z, Y, rows, fit_bias):
    """Z @ W (+ intercept) fitted by an explicit lstsq on the calibration rows, evaluated on every row."""
    A = torch.cat([Z, torch.ones(Z.shape[0], 1, dtype=Z.dtype)], 1) if fit_bias else Z
    return A @ torch.linalg.lstsq(A[rows], Y[rows]).solution


def _reference_sequential(model, ei, n, x, info, rows, fit_bias):
    """Float64 dense reference of the sequential refit: every layer's kept weights (and, with ``fit_bias``, an
    intercept added to its bias) by an explicit lstsq on materialised activations of the (reference) pruned
    model, target = the unpruned layer's pre-activation output on the kept output channels; returns the
    reference pruned model's output on all nodes."""
    L = len(model.convs)
    h_old, h_new = x.double(), x.double()
    for l, conv in enumerate(model.convs):
        kept = info["layers"][l]["kept"]
        out_keep = (info["layers"][l + 1]["kept"][info["layers"][l + 1]["branches"][0]] if l + 1 < L
                    else torch.arange(conv.out_channels))
        d = conv.out_channels
        old = _dense_branches(conv, h_old, ei, n)
        Y = _dense_linear(old, d)[:, out_keep]
        # the pruned layer's inputs: the pruned model's activations placed back at their original channels
        c = h_old.shape[1]
        h_emb = h_new if h_new.shape[1] == c else torch.zeros(n, c, dtype=torch.float64).index_copy_(
            1, info["layers"][l]["kept"][info["layers"][l]["branches"][0]], h_new)
        new = _dense_branches(conv, h_emb, ei, n)
        names = list(conv.branch_names)
        cols = []
        for (Z, W, start) in new:
            full = torch.zeros(d, dtype=torch.bool)
            full[start:start + W.shape[1]] = True
            cols.append(full[out_keep])
        Zk = [Z[:, kept[nm]] for (Z, _, _), nm in zip(new, names)]
        Ynew = torch.zeros(n, out_keep.numel(), dtype=torch.float64)
        if len(names) == 2 and not torch.equal(cols[0], cols[1]):  # concat: each branch its own columns
            for Zb, cb in zip(Zk, cols):
                Ynew[:, cb] += _lstsq_fit(Zb, Y[:, cb], rows, fit_bias)
        else:  # sum form: all branches jointly
            Ynew += _lstsq_fit(torch.cat(Zk, 1), Y, rows, fit_bias)
        b = (conv._bias() if hasattr(conv, "_bias") else
             (conv.lin_l.bias if hasattr(conv, "lin_l") else conv.lin.bias)).double()
        pre_new = Ynew + b[out_keep]
        pre_old = _dense_linear(old, d) + b
        if l + 1 < L:
            h_new, h_old = torch.relu(pre_new), torch.relu(pre_old)
        else:
            return pre_new, pre_old


@pytest.mark.parametrize("kind", ["sage", "saint"])
@pytest.mark.parametrize("scheme", ["full", "batched"])
@pytest.mark.parametrize("fit_bias", [True, False])
def test_sequential_refit_matches_dense_lstsq_reference(kind, scheme, fit_bias, generator):
    graph, ei = make_graph(generator)
    n = graph.num_nodes
    model = MODELS[kind](10, 16, 5, num_layers=3 if kind == "sage" else 2).double().eval()
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    rows = torch.sort(torch.randperm(n, generator=generator)[:90]).values
    pruned = gnnaccel.prune(model, graph, x, keep=0.5, scheme=scheme, calib_nodes=rows, ridge=0.0,
                            refit="sequential", fit_bias=fit_bias, progress=False, min_kept=1)
    local = gnnaccel.prune(model, graph, x, keep=0.5, scheme=scheme, calib_nodes=rows, ridge=0.0,
                           fit_bias=fit_bias, progress=False, min_kept=1)
    info = pruned.pruning_info
    assert info["refit"] == "sequential" and local.pruning_info["refit"] == "local"
    for a, b in zip(info["layers"], local.pruning_info["layers"]):  # the refit does not change the selection
        assert all(torch.equal(a["kept"][nm], b["kept"][nm]) for nm in a["kept"])
    ref, unpruned = _reference_sequential(model, ei, n, x, info, rows, fit_bias)
    torch.testing.assert_close(unpruned, forward(model, graph, x), rtol=1e-10, atol=1e-10)  # reference sanity
    out = forward(pruned, graph, x)
    assert rel(out, ref) < 1e-8
    # the recorded last-layer error is the calibration logit error (bias cancels)
    # the refit is not the local one, and it lowers the calibration logit error
    assert rel(forward(local, graph, x), ref) > 1e-3
    err_cal = rel(out[rows], unpruned[rows])
    assert err_cal < rel(forward(local, graph, x)[rows], unpruned[rows])
    # the recorded last-layer error is the calibration logit error relative to the bias-free logits
    last = model.convs[-1]
    bias = (last.lin_l.bias if hasattr(last, "lin_l") else last.lin.bias).detach().double()
    assert info["layers"][-1]["output_rel_error_sequential"] == pytest.approx(
        float(((out[rows] - unpruned[rows]).norm() / (unpruned[rows] - bias).norm()).detach()), rel=1e-6)


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint"])
@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_sequential_refit_keep_one_reproduces_model(kind, scheme, generator):
    graph, _ = make_graph(generator)
    model = MODELS[kind](10, 16, 4, num_layers=3, norm="batchnorm").double().eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    pruned = gnnaccel.prune(model, graph, x, keep=1.0, scheme=scheme, refit="sequential", progress=False, min_kept=1)
    assert rel(forward(pruned, graph, x), forward(model, graph, x)) < 1e-12


@pytest.mark.parametrize("kind", ["sage", "gcn"])
def test_sequential_equals_local_when_only_the_last_layer_is_refit(kind, generator):
    """Two conv layers, scheme full: layer 0 keeps every raw feature, so the last layer's input in the pruned
    model is exactly the unpruned one restricted to the kept channels and both refits coincide."""
    graph, _ = make_graph(generator)
    model = MODELS[kind](10, 16, 4, num_layers=2).double().eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    a = gnnaccel.prune(model, graph, x, keep=0.25, refit="sequential", progress=False, min_kept=1)
    b = gnnaccel.prune(model, graph, x, keep=0.25, refit="local", progress=False, min_kept=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="refit must be one of"):
        gnnaccel.prune(model, graph, x, refit="global", progress=False, min_kept=1)


@pytest.mark.parametrize("refit_mode", ["local", "sequential"])
def test_ridge_auto_picks_a_candidate_per_refit_layer(refit_mode, generator):
    from gnnaccel.pruning.refit import RIDGE_CANDIDATES

    graph, _ = make_graph(generator)
    model = MODELS["sage"](10, 16, 4, num_layers=3).double().eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    pruned = gnnaccel.prune(model, graph, x, keep=0.5, scheme="batched", ridge="auto", refit=refit_mode,
                            progress=False, min_kept=1)
    for layer in pruned.pruning_info["layers"]:
        assert layer["ridge"] in RIDGE_CANDIDATES and set(layer["ridge_cv"]) == set(RIDGE_CANDIDATES)
        assert min(layer["ridge_cv"].values()) == layer["ridge_cv"][layer["ridge"]]
        if refit_mode == "sequential" and layer["layer"] > 0:
            assert layer["ridge_sequential"] in RIDGE_CANDIDATES
    assert bool(torch.isfinite(forward(pruned, graph, x)).all())
    for bad in ("cv", -1.0, True):
        with pytest.raises(ValueError, match="ridge must be"):
            gnnaccel.prune(model, graph, x, ridge=bad, progress=False, min_kept=1)
    with pytest.raises(ValueError, match="at least 3"):
        gnnaccel.prune(model, graph, x, ridge="auto", calib_nodes=torch.tensor([0, 1]), progress=False, min_kept=1)


def _layer_input(model, graph, x, l):
    h = x
    with torch.no_grad():
        for i in range(l):
            h = model.layer(i, h, graph)
    return h.double()


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint"])
@pytest.mark.parametrize("fit_bias", [True, False])
def test_local_refit_matches_dense_lstsq_with_and_without_intercept(kind, fit_bias, generator):
    """Each pruned layer, fed the unpruned model's input restricted to its kept channels, gives the explicit
    lstsq fit (with an intercept when fit_bias) of the unpruned layer's output on its kept output channels."""
    graph, ei = make_graph(generator)
    n = graph.num_nodes
    model = MODELS[kind](10, 16, 5, num_layers=3 if kind != "saint" else 2).double().eval()
    with torch.no_grad():  # post-ReLU inputs with clearly non-zero means: what the intercept is for
        for conv in model.convs[:-1]:
            conv.scale_outputs(torch.ones(conv.out_channels, dtype=torch.float64),
                               torch.rand(conv.out_channels, generator=generator, dtype=torch.float64))
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    rows = torch.sort(torch.randperm(n, generator=generator)[:100]).values
    pruned = gnnaccel.prune(model, graph, x, keep=0.5, calib_nodes=rows, ridge=0.0, fit_bias=fit_bias,
                            progress=False, min_kept=1)
    info = pruned.pruning_info
    assert info["fit_bias"] is fit_bias
    L = len(model.convs)
    for l in range(1, L):
        kept = info["layers"][l]["kept"][info["layers"][l]["branches"][0]]
        out_keep = (info["layers"][l + 1]["kept"][info["layers"][l + 1]["branches"][0]] if l + 1 < L
                    else torch.arange(model.convs[l].out_channels))
        h = _layer_input(model, graph, x, l)
        old = _dense_branches(model.convs[l], h, ei, n)
        d = model.convs[l].out_channels
        Y = _dense_linear(old, d)[:, out_keep]
        new = _dense_branches(pruned.convs[l], h[:, kept], ei, n)
        got = _dense_linear(new, pruned.convs[l].out_channels) + pruned.convs[l].linear_parts().bias.double()
        b = model.convs[l].linear_parts().bias.double()[out_keep]
        if len(old) == 2 and old[1][2] != 0:  # concat: each branch fits its own output columns
            ref = torch.zeros_like(Y)
            for (Z, W, start), (_, _, new_start) in zip(old, new):
                cb = torch.zeros(d, dtype=torch.bool)
                cb[start:start + W.shape[1]] = True
                cb = cb[out_keep]
                ref[:, cb] = _lstsq_fit(Z[:, kept], Y[:, cb], rows, fit_bias)
        else:
            ref = _lstsq_fit(torch.cat([Z[:, kept] for Z, _, _ in old], 1), Y, rows, fit_bias)
        assert rel(got, ref + b) < 1e-8, l
    if fit_bias:  # on the same channels (magnitude selection) the intercept can only lower the calibration error
        errors = [gnnaccel.prune(model, graph, x, keep=0.5, calib_nodes=rows, ridge=0.0, fit_bias=fb,
                                 method="magnitude", progress=False,
                                 min_kept=1).pruning_info["layers"][-1]["output_rel_error"]
                  for fb in (True, False)]
        assert errors[0] <= errors[1] + 1e-12


def test_next_layer_objective_selects_on_the_gram_of_what_the_next_layer_reads(generator):
    """objective="next_layer": layer 1's LASSO runs on the Gram of the channel contributions mapped through
    layer 2's (pruned) branch weights, built here from materialised, centred float64 branch inputs."""
    from gnnaccel.pruning import select_channels

    graph, ei = make_graph(generator)
    n = graph.num_nodes
    model = MODELS["sage"](10, 24, 5, num_layers=3).double().eval()
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    pruned = gnnaccel.prune(model, graph, x, keep=0.25, ridge=0.0, method="lasso", progress=False, min_kept=1)
    layer_obj = gnnaccel.prune(model, graph, x, keep=0.25, ridge=0.0, objective="layer", method="lasso",
                               progress=False, min_kept=1)
    info = pruned.pruning_info
    assert info["objective"] == "next_layer" and layer_obj.pruning_info["objective"] == "layer"
    # layer 2 is the last: same selection and weights in both
    assert torch.equal(info["layers"][2]["kept"]["neigh"], layer_obj.pruning_info["layers"][2]["kept"]["neigh"])
    out_keep = info["layers"][2]["kept"]["neigh"]
    M = torch.cat([b.weight.detach().double() for b in pruned.convs[2].linear_parts().branches], 1)
    h = _layer_input(model, graph, x, 1)
    branches = _dense_branches(model.convs[1], h, ei, n)
    C = torch.zeros(24, n, M.shape[1], dtype=torch.float64)  # contribution of each input channel
    for Z, W, _ in branches:
        Zc = Z - Z.mean(0)
        C += Zc.T.unsqueeze(2) * (W[:, out_keep] @ M).unsqueeze(1)
    G = torch.einsum("inm,jnm->ij", C, C) / n
    expected = select_channels(G, G.sum(1), 6, y_sq=G.sum())
    assert torch.equal(info["layers"][1]["kept"]["neigh"], expected)
    with pytest.raises(ValueError, match="objective must be one of"):
        gnnaccel.prune(model, graph, x, objective="logits", progress=False, min_kept=1)
    with pytest.raises(TypeError, match="fit_bias must be a bool"):
        gnnaccel.prune(model, graph, x, fit_bias="yes", progress=False, min_kept=1)



@pytest.mark.parametrize("kind", ["sage", "saint"])
def test_greedy_selects_on_the_centred_refit_objective_in_the_next_layer_metric(kind, generator):
    """method="greedy": layer 1's selection is the forward selection on the moment of its materialised,
    centred float64 branch inputs (fit_bias) with its kept output columns as targets and layer 2's pruned
    branch weights as the metric (objective "next_layer"); select_greedy itself is checked against brute
    force in test_pruning."""
    from gnnaccel.pruning import select_greedy

    graph, ei = make_graph(generator)
    n = graph.num_nodes
    model = MODELS[kind](10, 24, 5, num_layers=3 if kind == "sage" else 2).double().eval()
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    pruned = gnnaccel.prune(model, graph, x, keep=0.25, method="greedy", progress=False, min_kept=1)
    info = pruned.pruning_info["layers"]
    out_keep = next(iter(info[2]["kept"].values()))
    M = torch.cat([b.weight.detach().double() for b in pruned.convs[2].linear_parts().branches], 1)
    branches = _dense_branches(model.convs[1], _layer_input(model, graph, x, 1), ei, n)
    Z = torch.cat([Zb.detach() for Zb, _, _ in branches], 1)
    Z = Z - Z.mean(0)
    d = sum(W.shape[1] for _, W, _ in branches) if kind == "saint" else branches[0][1].shape[1]
    placed = []
    for _, W, start in branches:  # each branch's weight in the layer's output columns, kept columns only
        full = torch.zeros(W.shape[0], d, dtype=torch.float64)
        full[:, start:start + W.shape[1]] = W.detach()
        placed.append(full[:, out_keep])
    cols = None
    if kind == "saint":  # concat form: each branch its own (kept) columns, refit separately
        cols = [torch.nonzero(w.abs().sum(0) > 0).flatten() for w in placed]
        placed = [w[:, cl] for w, cl in zip(placed, cols)]
    expected = select_greedy(Z.T @ Z / n, placed, 6, "sum" if cols is None else "concat", cols, metric=M)
    assert all(torch.equal(kb, expected[0]) for kb in info[1]["kept"].values())
    assert pruned.convs[1].in_channels == 6


def test_auto_method_runs_greedy_where_calibration_rows_outnumber_the_regressors(generator):
    """method="auto" (default): on a layer with at least AUTO_GREEDY_ROWS_PER_REGRESSOR calibration rows per
    kept input coordinate the better of greedy and the swap-refined LASSO selection, the LASSO path
    elsewhere; pruning_info records the method of each layer."""
    from gnnaccel.pruning.prune import AUTO_GREEDY_ROWS_PER_REGRESSOR as RATIO

    graph, _ = make_graph(generator)
    model = MODELS["sage"](10, 16, 4, num_layers=2).double().eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    # scheme batched, keep 1/4: layer 0 refits 10 self + 2 neighbour coordinates, layer 1 2 x 4
    rows = torch.arange(RATIO * 12 - 1)  # enough rows for layer 1 (8 regressors) only, not for layer 0 (12)
    auto = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", calib_nodes=rows, progress=False, min_kept=1)
    greedy = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", calib_nodes=rows, method="greedy",
                            progress=False, min_kept=1)
    info = auto.pruning_info
    assert info["method"] == "auto"
    first, second = (layer["method"] for layer in info["layers"])
    assert first == "lasso" and second in ("greedy", "lasso+swaps")
    lasso = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", calib_nodes=rows, method="lasso",
                           progress=False, min_kept=1)
    if second == "greedy":
        assert torch.equal(info["layers"][1]["kept"]["neigh"], greedy.pruning_info["layers"][1]["kept"]["neigh"])
    # the one kept leaves the lower refit error on the calibration rows (the last layer: no metric)
    errors = {name: p.pruning_info["layers"][1]["output_rel_error"] for name, p in
              (("auto", auto), ("greedy", greedy), ("lasso", lasso))}
    assert errors["auto"] <= min(errors["greedy"], errors["lasso"]) * (1 + 1e-9)
    everything = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", progress=False, min_kept=1)  # 120 rows
    assert all(layer["method"] in ("greedy", "lasso+swaps") for layer in everything.pruning_info["layers"])
    with pytest.raises(ValueError, match="method must be one of"):
        gnnaccel.prune(model, graph, x, method="forward", progress=False, min_kept=1)


@pytest.mark.parametrize("method", ["lasso", "auto"])
def test_min_kept_floor_on_a_narrow_first_layer(method, generator):
    """Batched scheme on a model with 10 raw features: by default the neighbour branch keeps MIN_KEPT_CHANNELS
    features instead of round(keep * 10), recorded in pruning_info, with a lower refit error on that layer;
    min_kept=1 gives the plain budget; a layer narrower than the floor is not pruned."""
    from gnnaccel.pruning.prune import MIN_KEPT_CHANNELS

    graph, _ = make_graph(generator, n=400, e=3000)
    model = MODELS["sage"](10, 32, 3, num_layers=2).double().eval()
    x = torch.randn(graph.num_nodes, 10, generator=generator, dtype=torch.float64)
    x[:, 5:] += 0.8 * x[:, :5]  # correlated features: the refit can partly stand in for dropped ones
    default = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", method=method, progress=False)
    plain = gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", method=method, progress=False, min_kept=1)
    first, first_plain = default.pruning_info["layers"][0], plain.pruning_info["layers"][0]
    assert default.pruning_info["min_kept"] == MIN_KEPT_CHANNELS and plain.pruning_info["min_kept"] == 1
    assert first["k"] == min(10, MIN_KEPT_CHANNELS) and first["k_floored"]
    assert first["kept"]["neigh"].numel() == first["k"] and first["kept"]["self"].numel() == 10
    assert first_plain["k"] == 2 and not first_plain["k_floored"] and first_plain["kept"]["neigh"].numel() == 2
    assert first["output_rel_error"] < first_plain["output_rel_error"]
    hidden = default.pruning_info["layers"][1]
    assert hidden["k"] == 8 and not hidden["k_floored"]  # 0.25 * 32 meets the floor
    assert rel(full_inference(default, graph, x, progress=False), forward(default, graph, x)) < 1e-9
    # more kept features, closer to the unpruned model
    assert rel(forward(default, graph, x), forward(model, graph, x)) < rel(forward(plain, graph, x),
                                                                           forward(model, graph, x))
    # a branch narrower than the floor keeps everything (nothing to select on that layer)
    narrow = MODELS["sage"](6, 32, 3, num_layers=2).double().eval()
    out = gnnaccel.prune(narrow, graph, x[:, :6], keep=0.25, scheme="batched", method=method, progress=False)
    assert out.pruning_info["layers"][0]["k"] == 6 and out.pruning_info["layers"][0]["kept"]["neigh"].numel() == 6
    for bad in (0, -1, 2.0, True, "8"):
        with pytest.raises(ValueError, match="min_kept"):
            gnnaccel.prune(model, graph, x, keep=0.25, scheme="batched", progress=False, min_kept=bad)
