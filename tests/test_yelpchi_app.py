"""YelpChi app: thresholds and metrics (against brute force / scikit-learn), batching, the stream against
offline inference on the causal graph, and a small end-to-end run of `python -m gnnaccel spam`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gnnaccel.apps.yelpchi.dataset import batches, day_cut, prepare
from gnnaccel.apps.yelpchi.metrics import best_f1_threshold, detection_metrics, recall_at_precision
from gnnaccel.apps.yelpchi.stream import Lane, run_stream
from gnnaccel.apps.yelpchi.training import Standardiser, spam_score
from gnnaccel.batched import BatchedEngine
from gnnaccel.cli import main
from gnnaccel.models import GraphSAGE, RelationalGraphSAGE
from gnnaccel.pruning import prune

from test_yelpchi_data import FRAUD, needs_data


def test_best_f1_threshold_is_brute_force_optimum():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng()
    for n in (1, 5, 60):
        y = rng.integers(0, 2, n)
        s = np.round(rng.normal(size=n) + y, 1)  # ties
        t = best_f1_threshold(y, s)
        f1 = lambda thr: f1_score(y, (s >= thr).astype(int), average="macro", zero_division=0)  # noqa: E731
        best = max(f1(c) for c in np.unique(s))
        assert t in s and f1(t) == pytest.approx(best, abs=1e-12)
        assert detection_metrics(y, s, t)["f1_macro"] == pytest.approx(best, abs=1e-12)


def test_recall_at_precision_brute_force():
    rng = np.random.default_rng()
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + 1.5 * y
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = int((pred & (y == 1)).sum())
        if pred.sum() and tp / pred.sum() >= 0.9:
            best = max(best, tp / y.sum())
    assert recall_at_precision(y, s, 0.9) == pytest.approx(best)


def test_day_cut_and_batches():
    day = np.array([0, 0, 1, 1, 1, 2, 5, 5, 9])

    class D:
        pass

    d = D()
    d.day = day
    assert day_cut(day, 0.3) == 2 and day_cut(day, 0.0) == 0
    assert batches(d, 0, 9, "day") == [(0, 2), (2, 5), (5, 6), (6, 8), (8, 9)]
    assert batches(d, 2, 9, 3) == [(2, 5), (5, 8), (8, 9)]
    with pytest.raises(ValueError, match="batch size"):
        batches(d, 0, 9, 0)


@pytest.fixture(scope="module")
def small():
    return prepare(FRAUD, max_days=45)


@needs_data
def test_split_is_causal(small):
    d = small
    assert d.day[d.train_end - 1] < d.day[d.train_end] and d.day[d.val_end - 1] < d.day[d.val_end]
    assert np.all(np.diff(d.day) >= 0)
    g = d.graph(d.train_end, True)  # training graph: no edge to a later review
    assert g.num_nodes == d.train_end and int(g.edge_index.max()) < d.train_end
    (ei, mask) = d.batch_edges(d.train_end, d.val_end)
    assert (np.maximum(ei[0], ei[1]) >= d.train_end).all() and (np.maximum(ei[0], ei[1]) < d.val_end).all()
    assert g.num_edges + ei.shape[1] == d.graph(d.val_end, False).num_edges


@needs_data
def test_stream_equals_offline_inference_on_the_causal_graph(small):
    """Each batch's scores equal the model on the graph of every review up to the batch's end."""
    d = small
    n = d.train_end
    x = torch.from_numpy(Standardiser.fit(d.raw[:n])(d.raw))
    torch.manual_seed(0)
    models = {"sage": (GraphSAGE(x.shape[1], 8, 2, num_layers=2).eval(), False),
              "rel": (RelationalGraphSAGE(x.shape[1], 8, 2, num_layers=2, num_relations=3).eval(), True)}
    rel_pruned = prune(models["rel"][0], d.graph(n, True), x[:n], keep=0.25, scheme="batched", progress=False)
    lanes = [Lane("sage", BatchedEngine(models["sage"][0], d.graph(n, False), x[:n]), False),
             Lane("rel", BatchedEngine(models["rel"][0], d.graph(n, True), x[:n]), True),
             Lane("rel pruned+cache", BatchedEngine(rel_pruned, d.graph(n, True), x[:n], cache=True), True)]
    ranges = batches(d, n, d.val_end, 97)[:6]
    run_stream(lanes, d, x, ranges, progress=False)
    for lane, model in zip(lanes, (models["sage"][0], models["rel"][0], rel_pruned)):
        for (a, b), got in zip(ranges, lane.scores):
            with torch.no_grad():
                want = spam_score(model(x[:b], d.graph(b, lane.relational))[a:b])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert lanes[2].engine.stats()["invalidated"] > 0


@needs_data
def test_cli_spam_small_run(tmp_path, capsys):
    out = tmp_path / "spam.json"
    rc = main(["spam", "--data", str(FRAUD), "--max-days", "40", "--epochs", "2", "--hidden", "8",
               "--batch", "50", "--json", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    names = {"logreg", "mlp", "sage", "sage pruned+cache", "relational", "relational pruned+cache"}
    assert set(result["variants"]) == names
    for name in names:
        assert name in text
        m = result["variants"][name]["metrics"]
        assert 0 <= m["roc_auc"] <= 1 and 0 <= m["f1_macro"] <= 1
    for name in names - {"logreg", "mlp"}:
        t = result["variants"][name]["timing"]
        assert t["p50_ms"] <= t["p99_ms"] and t["reviews_per_s"] > 0
    assert result["variants"]["relational pruned+cache"]["cache"]["invalidated"] >= 0
    assert "CARE-GNN" in text and result["default_model"] in ("sage", "relational")


def test_cli_spam_bad_data_dir(tmp_path, capsys):
    assert main(["spam", "--data", str(tmp_path), "--no-progress"]) == 1
    assert "metadata.gz" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("kind", ["sage", "relational"])
def test_spam_serving_engine_over_http(kind):
    """`spam serve`'s engine behind gnnaccel.serving (in process): scores equal the engine's, a new review
    joins with its edges."""
    pytest.importorskip("fastapi")
    import warnings

    from gnnaccel.apps.yelpchi.app import SpamConfig, build_serving_engine
    from gnnaccel.serving import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    engine, info = build_serving_engine(SpamConfig(data_dir=str(FRAUD), max_days=30, epochs=2, hidden=8,
                                                   progress=False), kind)
    assert info["model"] == kind and engine.num_nodes == info["nodes"]
    with TestClient(create_app(engine)) as client:
        assert client.get("/healthz").json()["num_nodes"] == engine.num_nodes
        ids = [0, 5, engine.num_nodes - 1]
        got = client.post("/predict", json={"nodes": ids}).json()["scores"]
        np.testing.assert_allclose(np.asarray(got), engine.predict(ids).numpy(), rtol=1e-6, atol=1e-6)
        before = engine.num_nodes
        review = {"features": engine.x[:1].tolist(), "edges": [[0, {"new": 0}], [{"new": 0}, 0]]}
        if kind == "relational":  # each edge's relation bitmask: same user and same product + month
            review["edge_weight"] = [5.0, 5.0]
        r = client.post("/nodes", json=review)
        assert r.status_code == 200 and r.json()["ids"] == [before] and engine.num_nodes == before + 1
