"""gnnaccel.serving in process (FastAPI's TestClient): every route against full inference on a graph built from
scratch, every kind of bad request (status, message, and that nothing changed), engine failures, arguments, and
the `serve` command's input errors."""
from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch

pytest.importorskip("fastapi")
with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency on import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import gnnaccel  # noqa: E402
from conftest import random_edge_index  # noqa: E402
from gnnaccel import BatchedEngine, Graph  # noqa: E402
from gnnaccel.cli import main  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from gnnaccel.models import GCN, GraphSAGE  # noqa: E402
from gnnaccel.serving import create_app  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
N, F = 40, 6
MAX_BODY, MAX_BATCH = 8192, 16


def model_inputs(n: int, f: int, seed: int, model_cls=GraphSAGE, hidden: int = 12):
    """A graph of ``n`` nodes with a hub, self loops, duplicate edges and isolated nodes (the last 5), random
    features [n, f] and a 2-layer eval-mode model with non-trivial biases."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.cat([random_edge_index(n - 5, 4 * n, gen, hub=True), torch.tensor([[2, 2], [2, 2]])], 1)
    x = torch.randn(n, f, generator=gen)
    torch.manual_seed(seed)
    model = model_cls(f, hidden, 3, 2).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    return edge_index, x, model


def _inputs(seed: int, model_cls=GraphSAGE):
    return model_inputs(N, F, seed, model_cls)


@pytest.fixture(params=["sage-cache", "gcn-nocache"])
def served(request):
    """(client, engine, model, edge_index, x): an app over an engine the tests can inspect."""
    model_cls, cache = (GraphSAGE, True) if request.param == "sage-cache" else (GCN, None)
    edge_index, x, model = _inputs(7, model_cls)
    engine = BatchedEngine(model, Graph.from_edge_index(edge_index, N), x, cache=cache)
    with TestClient(create_app(engine, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)) as client:
        yield client, engine, model, edge_index, x


def _reference(model, edge_index, x, ids):
    return full_inference(model, Graph.from_edge_index(edge_index, x.shape[0]), x, progress=False)[ids]


def _state(engine):
    return (engine.version, engine.num_nodes, engine.num_edges, engine.x.clone(),
            engine.graph.edge_index.clone())


def _same_state(a, b):
    return a[:3] == b[:3] and torch.equal(a[3], b[3]) and torch.equal(a[4], b[4])


def test_predict_matches_full_inference(served):
    client, engine, model, edge_index, x = served
    gen = torch.Generator().manual_seed(1)
    for ids in ([0], [N - 1, 2, 2, 0], torch.randint(N, (MAX_BATCH,), generator=gen).tolist()):
        r = client.post("/predict", json={"nodes": ids})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == 0
        torch.testing.assert_close(torch.tensor(body["scores"]), _reference(model, edge_index, x, ids), **TOL)


def test_nodes_grow_the_graph(served):
    client, engine, model, edge_index, x = served
    gen = torch.Generator().manual_seed(2)
    client.post("/predict", json={"nodes": list(range(N))})  # fills the cache before the growth
    new_x = torch.randn(3, F, generator=gen)
    # new <-> existing both ways, new -> new, a self loop on a new node, existing -> existing, a duplicate edge
    edges = [[0, {"new": 0}], [{"new": 0}, 0], [{"new": 0}, {"new": 1}], [{"new": 1}, {"new": 1}],
             [5, 7], [5, 7], [{"new": 2}, 3]]
    r = client.post("/nodes", json={"features": new_x.tolist(), "edges": edges})
    assert r.status_code == 200, r.text
    assert r.json() == {"ids": [N, N + 1, N + 2], "version": 1}
    resolved = torch.tensor([[s if isinstance(s, int) else N + s["new"] for s in e] for e in edges]).t()
    edge_index, x = torch.cat([edge_index, resolved], 1), torch.cat([x, new_x])
    r = client.post("/nodes", json={"features": [[0.5] * F]})  # no edges: an isolated node
    assert r.json() == {"ids": [N + 3], "version": 2}
    x = torch.cat([x, torch.full((1, F), 0.5)])
    assert (engine.num_nodes, engine.num_edges) == (N + 4, edge_index.shape[1])
    ids = list(range(N + 4))
    for chunk in (ids[:MAX_BATCH], ids[MAX_BATCH:2 * MAX_BATCH], ids[2 * MAX_BATCH:]):
        body = client.post("/predict", json={"nodes": chunk}).json()
        assert body["version"] == 2
        torch.testing.assert_close(torch.tensor(body["scores"]), _reference(model, edge_index, x, chunk), **TOL)


def test_stats_and_healthz(served):
    client, engine, model, edge_index, x = served
    assert client.get("/healthz").json() == {"status": "ok", "num_nodes": N, "version": 0}
    for _ in range(3):
        assert client.post("/predict", json={"nodes": [1, 2, 3]}).status_code == 200
    if engine.cache is not None:  # the second and third predict of the same nodes hit
        assert 0 < client.get("/stats").json()["engine"]["hit_rate"] <= 1
    assert client.post("/predict", json={"nodes": [N]}).status_code == 422
    assert client.post("/nodes", json={"features": [[1.0] * F], "edges": [[0, {"new": 0}]]}).status_code == 200
    assert client.get("/no-such-route").status_code == 404
    stats = client.get("/stats").json()
    routes = stats["routes"]
    assert routes["/predict"]["requests"] == 4 and routes["/predict"]["client_errors"] == 1
    assert routes["/predict"]["server_errors"] == 0
    assert routes["/nodes"]["requests"] == 1 and routes["/nodes"]["client_errors"] == 0
    assert routes["/healthz"]["requests"] == 1 and routes["other"]["client_errors"] == 1
    assert routes["/stats"]["requests"] == (engine.cache is not None)
    lat = routes["/predict"]["latency_ms"]
    assert lat["samples"] == 4 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert stats["limits"] == {"max_batch": MAX_BATCH, "max_body_bytes": MAX_BODY}
    eng = stats["engine"]
    assert (eng["num_nodes"], eng["num_edges"], eng["version"]) == (N + 1, edge_index.shape[1] + 1, 1)
    assert client.get("/stats").json()["routes"]["/stats"]["requests"] == 1 + (engine.cache is not None)


def _edges_ok():
    return [[0, {"new": 0}]]


BAD = {  # name: (route, raw body, status, words the message must contain)
    "malformed json": ("/predict", b'{"nodes": [1,', 400, "malformed JSON"),
    "nan token": ("/predict", b'{"nodes": [NaN]}', 400, "NaN"),
    "infinity token": ("/nodes", b'{"features": [[Infinity, 0, 0, 0, 0, 0]]}', 400, "Infinity"),
    "empty body": ("/predict", b"", 400, "empty"),
    "not utf-8": ("/predict", b"\xff\xfe", 400, "UTF-8"),
    "not an object": ("/predict", b"[1, 2]", 422, "JSON object"),
    "missing field": ("/predict", b"{}", 422, "nodes"),
    "unknown field": ("/predict", b'{"nodes": [1], "seed": 3}', 422, "seed"),
    "empty nodes": ("/predict", b'{"nodes": []}', 422, "at least 1"),
    "negative id": ("/predict", b'{"nodes": [3, -1]}', 422, "nodes[1]"),
    "unknown id": ("/predict", b'{"nodes": [0, %d]}' % N, 422, "unknown node id %d" % N),
    "huge id": ("/predict", b'{"nodes": [%d]}' % 10 ** 30, 422, "unknown node id"),
    "overlong integer": ("/predict", b'{"nodes": [' + b"9" * 5000 + b"]}", 400, "digits"),
    "bool id": ("/predict", b'{"nodes": [true]}', 422, "nodes[0]"),
    "float id": ("/predict", b'{"nodes": [1.0]}', 422, "nodes[0]"),
    "string id": ("/predict", b'{"nodes": ["1"]}', 422, "nodes[0]"),
    "nodes not a list": ("/predict", b'{"nodes": 3}', 422, "nodes"),
    "too many nodes": ("/predict", json.dumps({"nodes": [0] * (MAX_BATCH + 1)}).encode(), 422, "too many"),
    "oversized body": ("/predict", json.dumps({"nodes": [0] * MAX_BODY}).encode(), 413, "exceeds the limit"),
    "wrong width": ("/nodes", json.dumps({"features": [[0.0] * (F - 1)]}).encode(), 422, f"reads {F} features"),
    "ragged rows": ("/nodes", json.dumps({"features": [[0.0] * F, [0.0] * (F + 1)]}).encode(), 422,
                    "features[1]"),
    "empty features": ("/nodes", b'{"features": []}', 422, "at least 1"),
    "empty row": ("/nodes", b'{"features": [[]]}', 422, "features[0]"),
    "missing features": ("/nodes", b'{"edges": []}', 422, "features"),
    "bool feature": ("/nodes", b'{"features": [[true, 0, 0, 0, 0, 0]]}', 422, "features[0][0]"),
    "string feature": ("/nodes", b'{"features": [["1", 0, 0, 0, 0, 0]]}', 422, "features[0][0]"),
    "overflowing feature": ("/nodes", b'{"features": [[1e400, 0, 0, 0, 0, 0]]}', 422, "finite"),
    "float32 overflow": ("/nodes", b'{"features": [[0, 1e39, 0, 0, 0, 0]]}', 422, "features[0][1]"),
    "too many new nodes": ("/nodes", json.dumps({"features": [[0.0] * F] * (MAX_BATCH + 1)}).encode(), 422,
                           "too many"),
    "huge endpoint": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[%d, {"new": 0}]]}' % 10 ** 30,
                      422, "edges[0][0]: unknown node id"),
    "unknown endpoint": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, {"new": 0}], [%d, 1]]}' % N,
                         422, "edges[1][0]: unknown node id"),
    "negative endpoint": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[-2, {"new": 0}]]}', 422,
                          "negative"),
    "bool endpoint": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, false]]}', 422,
                      "edges[0][1]"),
    "float endpoint": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0.0, 1]]}', 422, "edges[0][0]"),
    "new out of range": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, {"new": 1}]]}', 422,
                         '{"new": 1}'),
    "negative new": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, {"new": -1}]]}', 422,
                     '{"new": -1}'),
    "bool new": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, {"new": true}]]}', 422,
                 "edges[0][1]"),
    "new with extra key": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, {"new": 0, "w": 1}]]}',
                           422, "edges[0][1]"),
    "three endpoints": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [[0, 1, 2]]}', 422, "edges[0]"),
    "edge not a list": ("/nodes", b'{"features": [[0, 0, 0, 0, 0, 0]], "edges": [3]}', 422, "edges[0]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_change_nothing(served, case):
    client, engine, model, edge_index, x = served
    route, body, status, words = BAD[case]
    before = _state(engine)
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert _same_state(before, _state(engine))
    stats = client.get("/stats").json()["routes"][route]
    assert stats["client_errors"] == 1 and stats["server_errors"] == 0
    ok = client.post("/predict", json={"nodes": [0, N - 1]})  # still serving, on the same graph
    assert ok.status_code == 200 and ok.json()["version"] == 0
    torch.testing.assert_close(torch.tensor(ok.json()["scores"]), _reference(model, edge_index, x, [0, N - 1]),
                               **TOL)


def test_oversized_streamed_body(served):
    """No Content-Length (chunked upload): the body is refused once the bytes that arrived pass the limit."""
    client, engine, model, edge_index, x = served
    before = _state(engine)
    chunks = iter([b'{"features": [' + b"[0, 0, 0, 0, 0, 0], " * 1000, b"[0, 0, 0, 0, 0, 0]]}"])
    r = client.post("/nodes", content=chunks)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    r = client.post("/predict", content=b'{"nodes": [1]}', headers={"content-length": "x1"})
    assert r.status_code == 400 and "Content-Length" in r.json()["detail"]
    assert _same_state(before, _state(engine))


def test_deeply_nested_json():
    edge_index, x, model = _inputs(3)
    engine = BatchedEngine(model, Graph.from_edge_index(edge_index, N), x)
    with TestClient(create_app(engine, max_body_bytes=1 << 20)) as client:
        r = client.post("/nodes", content=b"[" * 200_000 + b"]" * 200_000)
        assert r.status_code == 400 and "nested" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_wrong_methods_and_routes(served):
    client = served[0]
    assert client.get("/predict").status_code == 405
    assert client.post("/healthz").status_code == 405
    assert client.get("/nope").status_code == 404


def test_engine_failure_is_a_500_and_the_server_keeps_serving(served, monkeypatch):
    client, engine, model, edge_index, x = served
    real = engine.predict
    calls = []

    def failing(ids):
        if not calls:
            calls.append(1)
            raise RuntimeError("simulated kernel failure")
        return real(ids)

    monkeypatch.setattr(engine, "predict", failing)
    r = client.post("/predict", json={"nodes": [1]})
    assert r.status_code == 500 and "simulated kernel failure" in r.json()["detail"]
    assert client.post("/predict", json={"nodes": [1]}).status_code == 200
    assert client.get("/stats").json()["routes"]["/predict"]["server_errors"] == 1


def test_prediction_that_overlaps_an_update_is_recomputed(served, monkeypatch):
    """The version an answer carries is the graph it was computed on: an update landing during the first
    attempt (simulated here) makes the service compute again, on the new graph."""
    client, engine, model, edge_index, x = served
    real = engine.predict
    new_x = torch.randn(1, F)

    def racing(ids):
        out = real(ids)
        if engine.version == 0:
            engine.add_nodes(new_x, torch.tensor([[N], [0]]))
        return out

    monkeypatch.setattr(engine, "predict", racing)
    body = client.post("/predict", json={"nodes": [0, 1]}).json()
    assert body["version"] == 1
    grown = torch.cat([edge_index, torch.tensor([[N], [0]])], 1)
    torch.testing.assert_close(torch.tensor(body["scores"]),
                               _reference(model, grown, torch.cat([x, new_x]), [0, 1]), **TOL)


def test_update_raced_by_another_writer_is_redone(served, monkeypatch):
    """A node added directly to the engine between the service's reading of num_nodes and its update: the
    compare-and-swap (first_id) fails, the service resolves {"new": k} against the new node count and retries."""
    client, engine, model, edge_index, x = served
    real = engine.add_nodes
    outside_x = torch.randn(1, F)

    def raced(features, edge_index=None, edge_weight=None, *, first_id=None):
        if engine.num_nodes == N:
            real(outside_x, torch.tensor([[0], [N]]))
        return real(features, edge_index, edge_weight, first_id=first_id)

    monkeypatch.setattr(engine, "add_nodes", raced)
    new_x = torch.randn(1, F)
    r = client.post("/nodes", json={"features": new_x.tolist(), "edges": [[{"new": 0}, 1], [3, {"new": 0}]]})
    assert r.status_code == 200 and r.json() == {"ids": [N + 1], "version": 2}, r.text
    grown = torch.cat([edge_index, torch.tensor([[0, N + 1, 3], [N, 1, N + 1]])], 1)
    ids = [0, 1, N, N + 1]
    torch.testing.assert_close(torch.tensor(client.post("/predict", json={"nodes": ids}).json()["scores"]),
                               _reference(model, grown, torch.cat([x, outside_x, new_x]), ids), **TOL)


def test_create_app_arguments():
    edge_index, x, model = _inputs(5)
    engine = BatchedEngine(model, Graph.from_edge_index(edge_index, N), x)
    for kwargs in ({"max_batch": 0}, {"max_body_bytes": -1}, {"max_batch": True}, {"latency_window": 1.5}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            create_app(engine, **kwargs)
    with pytest.raises(TypeError, match="BatchedEngine"):
        create_app(model)


def test_serve_command_input_errors(tmp_path, capsys):
    edge_index, x, model = _inputs(4)
    gnnaccel.save(model, tmp_path / "model.pt")
    torch.save({"edge_index": edge_index, "x": x}, tmp_path / "graph.pt")
    torch.save({"edge_index": edge_index, "num_nodes": N}, tmp_path / "edges.pt")
    torch.save(x[:-1], tmp_path / "short.pt")
    torch.save(x, tmp_path / "x.pt")
    torch.save(torch.randn(N, F + 1), tmp_path / "wide.pt")
    torch.save(x.clone().index_fill_(0, torch.tensor([3]), float("nan")), tmp_path / "nan.pt")
    torch.save({"edge_index": edge_index, "x": x.double().index_fill_(0, torch.tensor([1]), 1e39)},
               tmp_path / "overflow.pt")  # finite in float64, not in the model's float32
    base = ["serve", "--model", tmp_path / "model.pt", "--port", "0"]
    cases = [
        (["--graph", tmp_path / "graph.pt", "--features", tmp_path / "x.pt"], "give one"),
        (["--graph", tmp_path / "edges.pt"], "missing ['x']"),
        (["--graph", tmp_path / "edges.pt", "--features", tmp_path / "short.pt"], "num_nodes"),
        (["--graph", tmp_path / "edges.pt", "--features", tmp_path / "wide.pt"], "features but the model reads"),
        (["--graph", tmp_path / "edges.pt", "--features", tmp_path / "nan.pt"], "NaN"),
        (["--graph", tmp_path / "edges.pt", "--features", tmp_path / "missing.npy"], "does not exist"),
        (["--graph", tmp_path / "edges.pt", "--features", tmp_path / "graph.pt"], "2-D float tensor"),
        (["--graph", tmp_path / "overflow.pt"], "infinite values (in torch.float32)"),
        (["--graph", tmp_path / "graph.pt", "--fanouts", "3", "4", "5"], "fanouts"),
    ]
    for extra, words in cases:
        rc = main([str(a) for a in base + extra])
        err = capsys.readouterr().err
        assert rc == 1 and words in err, (extra, err)
    with socket.socket() as busy:  # a port in use: a clear error, not a traceback
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = main([str(a) for a in ["serve", "--model", tmp_path / "model.pt", "--graph", tmp_path / "graph.pt",
                                    "--port", port]])
        err = capsys.readouterr().err
        assert rc == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    for bad in (["--port", "70000"], ["--cache", "0"], ["--fanouts", "0"], ["--max-batch", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in ["serve", "--model", tmp_path / "model.pt", "--graph", tmp_path / "graph.pt"]
                  + bad])
        assert exc.value.code == 2


def test_read_features(tmp_path):
    import numpy as np

    from gnnaccel.cli import InputError, read_features

    x = np.random.default_rng(0).standard_normal((7, 3))
    np.save(tmp_path / "x.npy", x)
    got = read_features(str(tmp_path / "x.npy"), torch.float32)
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(x).float())
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    assert torch.equal(read_features(str(tmp_path / "x.pt")), torch.from_numpy(x))
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(2, 3))
    np.save(tmp_path / "flat.npy", x[0])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, words in (("ints.npy", "2-D float"), ("flat.npy", "2-D float"), ("objects.npy", "not a readable"),
                        ("x.npz", "expected a .pt or .npy"), ("absent.npy", "does not exist")):
        with pytest.raises(InputError, match=words):
            read_features(str(tmp_path / name))


def test_nodes_with_edge_weight_on_a_weighted_graph():
    """A weighted graph grows through /nodes with per-edge values (e.g. the YelpChi relation bitmasks): answers
    equal full inference on the grown weighted graph; a missing, short or non-finite edge_weight is a 422 and
    changes nothing; edge_weight on an unweighted graph is a 422."""
    edge_index, x, model = _inputs(11, GCN)
    gen = torch.Generator().manual_seed(3)
    weight = torch.rand(edge_index.shape[1], generator=gen) + 0.5
    engine = BatchedEngine(model, Graph.from_edge_index(edge_index, N, weight), x, cache=True)
    with TestClient(create_app(engine, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)) as client:
        feats = torch.randn(2, F, generator=gen)
        edges = [[0, {"new": 0}], [{"new": 0}, 0], [{"new": 1}, 3], [3, {"new": 1}], [{"new": 0}, {"new": 1}]]
        values = [0.5, 2.0, 1.25, 0.75, 3.0]
        before = _state(engine)
        for bad, message in (({"edge_weight": values[:3]}, "3 values for 5 edges"),
                             ({}, "edge_weight"),
                             ({"edge_weight": values[:4] + [1e39]}, "not finite")):
            r = client.post("/nodes", json={"features": feats.tolist(), "edges": edges, **bad})
            assert r.status_code == 422 and message in r.text, r.text
            assert _same_state(before, _state(engine))
        r = client.post("/nodes", json={"features": feats.tolist(), "edges": edges, "edge_weight": values})
        assert r.status_code == 200, r.text
        assert r.json()["ids"] == [N, N + 1]
        new_edges = torch.tensor([[0, N, N + 1, 3, N], [N, 0, 3, N + 1, N + 1]])
        grown = Graph.from_edge_index(torch.cat([edge_index, new_edges], 1), N + 2,
                                      torch.cat([weight, torch.tensor(values)]))
        ids = [N, N + 1, 0, 3, 5]
        expected = full_inference(model, grown, torch.cat([x, feats]), progress=False)[ids]
        r = client.post("/predict", json={"nodes": ids})
        torch.testing.assert_close(torch.tensor(r.json()["scores"]), expected, **TOL)
    unweighted = BatchedEngine(model, Graph.from_edge_index(edge_index, N), x)
    with TestClient(create_app(unweighted)) as client:
        r = client.post("/nodes", json={"features": feats.tolist(), "edges": [[0, {"new": 0}]], "edge_weight": [1.0]})
        assert r.status_code == 422 and "weighted" in r.text, r.text
        assert unweighted.num_nodes == N


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_width_engine_served(dtype):
    """An engine storing features at half width (BatchedEngine(dtype=)) behind the app: /nodes converts the
    features (a value beyond float16's range is a 422 naming the dtype, and changes nothing), edge weights stay
    float32, /predict answers the engine's float32 scores, within the precision bound of tests/test_dtype.py
    of the float64 model on the grown weighted graph."""
    from test_dtype import _assert_within, _bound, _reference

    edge_index, x, model = _inputs(13, GCN)
    gen = torch.Generator().manual_seed(5)
    weight = torch.rand(edge_index.shape[1], generator=gen) + 0.5
    engine = BatchedEngine(model, Graph.from_edge_index(edge_index, N, weight), x, cache=True, dtype=dtype)
    with TestClient(create_app(engine, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)) as client:
        feats = torch.randn(2, F, generator=gen)
        edges = [[0, {"new": 0}], [{"new": 0}, 0], [{"new": 1}, 3], [{"new": 0}, {"new": 1}]]
        values = [0.5, 2.0, 1.25, 3.0]
        if dtype == torch.float16:
            before = _state(engine)
            big = feats.clone()
            big[1, 2] = 1e5
            r = client.post("/nodes", json={"features": big.tolist(), "edges": edges, "edge_weight": values})
            assert r.status_code == 422 and "float16" in r.text, r.text
            assert _same_state(before, _state(engine))
        r = client.post("/nodes", json={"features": feats.tolist(), "edges": edges, "edge_weight": values})
        assert r.status_code == 200, r.text
        assert engine.x.dtype == dtype
        ids = [N, N + 1, 0, 3, 5]
        r = client.post("/predict", json={"nodes": ids})
        scores = torch.tensor(r.json()["scores"], dtype=torch.float32)
        assert torch.equal(scores, engine.predict(ids))
        new_edges = torch.tensor([[0, N, N + 1, N], [N, 0, 3, N + 1]])
        grown = Graph.from_edge_index(torch.cat([edge_index, new_edges], 1), N + 2,
                                      torch.cat([weight, torch.tensor(values)]))
        x2 = torch.cat([x, feats])
        ref, magnitude = _reference(model, grown, x2)
        _assert_within(scores, ref[ids], _bound(model, grown, x2, dtype, magnitude)[ids], "served")
