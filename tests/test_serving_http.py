"""The real server (`python -m gnnaccel serve` in a subprocess, on a free loopback port) spoken to over HTTP: the
routes, bad requests and a clean shutdown; and a bounded load test (8 concurrent clients, 5,000 mixed /predict
and /nodes requests) whose every answer is checked against full inference on the graph of the version it carries,
rebuilt from scratch offline from the answered /nodes requests."""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import gnnaccel  # noqa: E402
from gnnaccel import Graph  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from gnnaccel.models import GraphSAGE  # noqa: E402
from test_serving import _reference, model_inputs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = dict(atol=1e-5, rtol=1e-5)
START_DEADLINE_S = 180  # imports on a loaded 2-core machine
LOAD_REQUESTS, LOAD_CLIENTS, LOAD_NODES_SHARE, LOAD_DEADLINE_S = 5000, 8, 0.2, 240


def _inputs(n: int, f: int, seed: int):
    return model_inputs(n, f, seed, GraphSAGE, hidden=32)


class Server:
    """`python -m gnnaccel serve ... --port 0` as a subprocess; ``url`` once /healthz answers; always stopped."""

    def __init__(self, tmp_path, model, edge_index, x, *extra, npy: bool = False):
        gnnaccel.save(model, tmp_path / "model.pt")
        torch.save({"edge_index": edge_index, "num_nodes": x.shape[0]}, tmp_path / "graph.pt")
        if npy:  # float64: the command converts it to the model's float32
            features = tmp_path / "x.npy"
            np.save(features, x.double().numpy())
        else:
            features = tmp_path / "x.pt"
            torch.save(x, features)
        self.argv = [sys.executable, "-m", "gnnaccel", "serve", "--model", str(tmp_path / "model.pt"),
                     "--graph", str(tmp_path / "graph.pt"), "--features", str(features),
                     "--host", "127.0.0.1", "--port", "0", *map(str, extra)]
        self.out_path, self.err_path = tmp_path / "server.out", tmp_path / "server.err"

    def __enter__(self):
        env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=REPO, env=env)
        try:
            self.url = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + START_DEADLINE_S
        url = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            if url is None:
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.out_path.read_text())
                url = m.group(1) if m else None
            if url is not None:
                try:
                    if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not answer /healthz within {START_DEADLINE_S} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def __exit__(self, *exc):
        self.stop()


def test_real_server(tmp_path):
    n, f = 60, 8
    edge_index, x, model = _inputs(n, f, seed=11)
    with Server(tmp_path, model, edge_index, x, "--cache", "all", "--max-body-bytes", 65536,
                "--max-batch", 100, npy=True) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            ids = [0, 5, 5, n - 1]
            r = c.post("/predict", json={"nodes": ids})
            assert r.status_code == 200 and r.json()["version"] == 0
            torch.testing.assert_close(torch.tensor(r.json()["scores"]), _reference(model, edge_index, x, ids), **TOL)

            new_x = torch.randn(2, f)
            r = c.post("/nodes", json={"features": new_x.tolist(),
                                       "edges": [[3, {"new": 0}], [{"new": 0}, 3], [{"new": 0}, {"new": 1}]]})
            assert r.status_code == 200 and r.json() == {"ids": [n, n + 1], "version": 1}
            edge_index = torch.cat([edge_index, torch.tensor([[3, n, n], [n, 3, n + 1]])], 1)
            x = torch.cat([x, new_x])
            ids = [3, n, n + 1]
            r = c.post("/predict", json={"nodes": ids})
            assert r.json()["version"] == 1
            torch.testing.assert_close(torch.tensor(r.json()["scores"]), _reference(model, edge_index, x, ids), **TOL)

            bad = [("/predict", b'{"nodes": [1,', 400), ("/predict", b'{"nodes": [NaN]}', 400),
                   ("/predict", b'{"nodes": [-1]}', 422), ("/predict", b'{"nodes": [%d]}' % (n + 2), 422),
                   ("/predict", b'{"nodes": [true]}', 422), ("/predict", b'{"nodes": []}', 422),
                   ("/predict", json.dumps({"nodes": [0] * 101}).encode(), 422),
                   ("/predict", b'{"nodes": [' + b"0, " * 40000 + b"0]}", 413),
                   ("/nodes", json.dumps({"features": [[0.0] * (f + 1)]}).encode(), 422),
                   ("/nodes", b'{"features": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', 400),
                   ("/nodes", json.dumps({"features": [[0.0] * f], "edges": [[n + 2, {"new": 0}]]}).encode(), 422)]
            for route, body, status in bad:
                r = c.post(route, content=body, headers={"content-type": "application/json"})
                assert r.status_code == status and r.json()["detail"], (route, body[:40], r.text)
            host, port = server.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # a broken client: answered or dropped, not fatal
                raw.recv(1024)
            health = c.get("/healthz").json()
            assert health == {"status": "ok", "num_nodes": n + 2, "version": 1}  # the bad requests changed nothing
            stats = c.get("/stats").json()
            assert stats["routes"]["/predict"]["requests"] == 2 + 8
            assert stats["routes"]["/predict"]["client_errors"] == 8
            assert stats["routes"]["/nodes"]["client_errors"] == 3
            assert all(r["server_errors"] == 0 for r in stats["routes"].values())
            assert stats["engine"]["num_edges"] == edge_index.shape[1]
        assert server.stop() == 0  # SIGTERM: a clean shutdown
    assert "Traceback" not in server.log()


# ------------------------------------------------------------------------------------------------ load test
async def _load(url: str, n0: int, f: int, seed: int):
    """LOAD_REQUESTS requests from LOAD_CLIENTS concurrent clients; every answer and its latency recorded."""
    issued = itertools.count()
    known = [n0]  # ids 0 .. known[0]-1 exist (ids are handed out contiguously)
    predicts, additions, errors = [], [], []

    async def client(w: int):
        rng = random.Random(seed * 1000 + w)
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while next(issued) < LOAD_REQUESTS:
                top = known[0]
                if rng.random() < LOAD_NODES_SHARE:
                    k = rng.randint(1, 3)
                    feats = [[rng.gauss(0, 1) for _ in range(f)] for _ in range(k)]
                    edges = []
                    for j in range(k):
                        for _ in range(rng.randint(0, 3)):  # to earlier nodes (recent ones, the hub), both ways
                            old = rng.choice((0, rng.randrange(top), rng.randrange(max(0, top - 30), top)))
                            edges += [[old, {"new": j}], [{"new": j}, old]]
                        if j and rng.random() < 0.5:
                            edges.append([{"new": j - 1}, {"new": j}])
                    route, body = "/nodes", {"features": feats, "edges": edges}
                else:
                    ids = [rng.randrange(top) if rng.random() < 0.5 else rng.randrange(max(0, top - 30), top)
                           for _ in range(rng.randint(1, 16))]
                    route, body = "/predict", {"nodes": ids}
                start = time.perf_counter()
                try:
                    r = await c.post(route, json=body)
                except httpx.HTTPError as exc:
                    errors.append((route, repr(exc)))
                    continue
                seconds = time.perf_counter() - start
                if r.status_code != 200:
                    errors.append((route, r.status_code, r.text[:200]))
                    continue
                answer = r.json()
                if route == "/nodes":
                    additions.append((answer["version"], answer["ids"], feats, edges, seconds))
                    known[0] = max(known[0], answer["ids"][-1] + 1)
                else:
                    predicts.append((answer["version"], ids, answer["scores"], seconds))

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client(w) for w in range(LOAD_CLIENTS))), LOAD_DEADLINE_S)
    return predicts, additions, errors, time.perf_counter() - start


def _quantiles_ms(seconds):
    q = torch.quantile(torch.tensor(seconds, dtype=torch.float64) * 1e3, torch.tensor([0.5, 0.99],
                                                                                       dtype=torch.float64))
    return q.tolist()


def test_load(tmp_path):
    n0, f = 300, 16
    edge_index, x, model = _inputs(n0, f, seed=5)
    with Server(tmp_path, model, edge_index, x, "--cache", "all") as server:
        predicts, additions, errors, wall = asyncio.run(_load(server.url, n0, f, seed=5))
        stats = httpx.get(server.url + "/stats", timeout=30).json()
        assert server.stop() == 0
    assert errors == [], f"{len(errors)} errors, first: {errors[:5]}\n{server.log()[-3000:]}"
    assert len(predicts) + len(additions) == LOAD_REQUESTS
    routes = stats["routes"]
    assert routes["/predict"]["requests"] + routes["/nodes"]["requests"] == LOAD_REQUESTS
    assert all(r["client_errors"] == r["server_errors"] == 0 for r in routes.values())

    # Replay: every update's version is distinct and they are consecutive, ids contiguous in version order.
    additions.sort(key=lambda a: a[0])
    assert [a[0] for a in additions] == list(range(1, len(additions) + 1))
    edges_at, x_at, num = [edge_index], [x], n0
    for version, ids, feats, edges, _ in additions:
        assert ids == list(range(num, num + len(feats)))
        if edges:
            edges_at.append(torch.tensor([[e if isinstance(e, int) else num + e["new"] for e in edge]
                                          for edge in edges]).t())
        x_at.append(torch.tensor(feats, dtype=torch.float32))
        num += len(feats)
    assert stats["engine"]["num_nodes"] == num

    # Every answer against full inference on the graph of its version, built from scratch.
    by_version = {}
    for version, ids, scores, _ in predicts:
        by_version.setdefault(version, []).append((ids, scores))
    nodes_at = list(itertools.accumulate([n0] + [len(a[2]) for a in additions]))
    edge_count = list(itertools.accumulate([edge_index.shape[1]] + [len(a[3]) for a in additions]))
    assert stats["engine"]["num_edges"] == edge_count[-1]
    all_edges, all_x = torch.cat(edges_at, 1), torch.cat(x_at)
    checked = 0
    for version, answers in sorted(by_version.items()):
        n = nodes_at[version]
        ref = full_inference(model, Graph.from_edge_index(all_edges[:, :edge_count[version]], n), all_x[:n],
                             progress=False)
        for ids, scores in answers:
            torch.testing.assert_close(torch.tensor(scores), ref[ids], **TOL)
            checked += 1
    assert checked == len(predicts)

    p_lat, n_lat = [p[3] for p in predicts], [a[4] for a in additions]
    (p50, p99), (pp50, pp99), (np50, np99) = map(_quantiles_ms, (p_lat + n_lat, p_lat, n_lat))
    server_p = routes["/predict"]["latency_ms"]
    print(f"\nload test: {LOAD_REQUESTS} requests ({len(predicts)} /predict, {len(additions)} /nodes adding "
          f"{num - n0} nodes) from {LOAD_CLIENTS} clients in {wall:.1f} s ({LOAD_REQUESTS / wall:.0f} req/s), "
          f"{len(errors)} errors; client-side latency p50/p99 all {p50:.1f}/{p99:.1f} ms, /predict "
          f"{pp50:.1f}/{pp99:.1f} ms, /nodes {np50:.1f}/{np99:.1f} ms; server-side /predict p50/p99 "
          f"{server_p['p50']:.1f}/{server_p['p99']:.1f} ms; {len(by_version)} graph versions checked against full "
          f"inference; cache hit rate {stats['engine']['hit_rate']:.3f}")
