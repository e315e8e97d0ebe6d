"""Distributed full inference (gnnaccel.distributed) on gloo over loopback, in spawned processes with hard
timeouts: 1-4 ranks equal single-process full_inference for GraphSAGE, GCN and SAINTGraphSAGE, unpruned and
pruned (both schemes), METIS and random partitions (GAT, unpruned and pruned in both schemes: METIS on 2 and 3
ranks), a part without halo, a rank owning no node; bad inputs
give a clear error on every rank (and the group stays usable for the next run).

One spawn per world size runs every case (tests/dist_worker.py); the tests then check each case's outputs."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gnnaccel
from gnnaccel.distributed import gather, partition
from gnnaccel.inference import full_inference
from gnnaccel.models import GAT, GCN, GraphSAGE, SAINTGraphSAGE

from conftest import REPO_ROOT, random_edge_index

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORKER = Path(__file__).with_name("dist_worker.py")
SPAWN_TIMEOUT = 240  # seconds for one world size's spawn (all its cases); a hang fails the test, never CI
N, C, HIDDEN, OUT = 60, 12, 16, 5
WORLD_SIZES = (1, 2, 3, 4)
MODELS = ("sage", "gcn", "saint", "sage_full", "gcn_full", "saint_full", "sage_batched", "gcn_batched",
          "saint_batched")
ERROR_WORLDS = (2, 3)
GAT_MODELS = ("gat", "gat_full", "gat_batched")  # METIS partitions on 2 and 3 ranks (issue 17)
GAT_WORLDS = (2, 3)


def _cases(world: int):
    """(name, graph, model, partition kind, overlap) of every success case for one world size."""
    cases = [(f"{m}-{meth}", "main", m, meth, True) for m in MODELS for meth in ("metis", "random")]
    cases += [("sage-weighted", "weighted", "sage", "metis", True), ("gcn-weighted", "weighted", "gcn", "metis", True)]
    cases += [(f"{m}-nohalo", "components", m, "nohalo", True) for m in ("sage", "gcn_full", "saint_batched")]
    cases += [("gcn_batched-no_overlap", "main", "gcn_batched", "metis", False),
              ("sage_batched-no_overlap", "main", "sage_batched", "random", False)]
    if world >= 2:
        cases += [(f"{m}-empty_rank", "main", m, "empty", True) for m in ("sage_full", "gcn", "saint_batched")]
    if world in GAT_WORLDS:
        cases += [(f"{m}-metis", "main", m, "metis", True) for m in GAT_MODELS]
        cases += [("gat_batched-no_overlap", "main", "gat_batched", "metis", False)]
    return cases


ERRORS = {  # name -> (text every rank's error must contain)
    "missing_part_file": "is missing",
    "corrupt_part_file": "SHA-256",
    "model_mismatch": "input channels",
    "world_mismatch": "parts but the process group has",
    "corrupt_model": "ModelFileError",
}


def _graphs():
    gen = torch.Generator().manual_seed(7)
    ei = random_edge_index(N - 10, 300, gen)  # nodes N-10 .. N-1 are isolated
    ei = torch.cat([ei, torch.tensor([[3, 3, 5], [3, 3, 4]])], 1)  # a duplicated self loop, a duplicate edge
    w = torch.rand(ei.shape[1], generator=gen) + 0.1
    half = N // 2
    a = random_edge_index(half, 120, gen)
    comp = torch.cat([a, random_edge_index(N - half, 120, gen) + half], 1)  # two components
    x = torch.randn(N, C, generator=gen)
    return {"main": gnnaccel.Graph.from_edge_index(ei, N),
            "weighted": gnnaccel.Graph.from_edge_index(ei, N, w),
            "components": gnnaccel.Graph.from_edge_index(comp, N)}, x


def _models(g, x):
    with torch.random.fork_rng():  # leave the global RNG of the pytest process as it was
        torch.manual_seed(0)
        base = {"sage": GraphSAGE(C, HIDDEN, OUT, 2), "gcn": GCN(C, HIDDEN, OUT, 2),
                "saint": SAINTGraphSAGE(C, HIDDEN, OUT, 2), "gat": GAT(C, HIDDEN, OUT, 2, heads=4, residual=True)}
        with torch.no_grad():  # GAT's fresh biases are zeros and its attention nearly uniform: make both count
            for conv in base["gat"].convs:
                conv.bias.uniform_(-0.5, 0.5)
                conv.att_src.mul_(3)
                conv.att_dst.mul_(3)
    out = dict(base)
    for name, m in base.items():
        for scheme in ("full", "batched"):
            out[f"{name}_{scheme}"] = gnnaccel.prune(m, g, x, keep=0.25, scheme=scheme, progress=False,
                                                     min_kept=1)
    return {k: v.eval() for k, v in out.items()}


def _assignment(kind: str, world: int, gen: torch.Generator):
    if kind == "nohalo":  # component 0 -> part 0 (no halo); component 1 spread over the other parts
        if world == 1:
            return torch.zeros(N, dtype=torch.long)
        return torch.where(torch.arange(N) < N // 2, 0, 1 + torch.randint(world - 1, (N,), generator=gen))
    if kind == "empty":  # part 0 owns no node
        return 1 + torch.randint(world - 1, (N,), generator=gen)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, cases_file: Path, log_dir: Path, timeout: float = SPAWN_TIMEOUT) -> None:
    """Run ``world`` worker processes on the cases; fail (killing them) if they do not finish in time."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    port = _free_port()
    logs = [open(log_dir / f"rank{r}.log", "w") for r in range(world)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(port), str(cases_file)],
                              env=env, stdout=logs[r], stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
             for r in range(world)]
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [r for r, p in enumerate(procs) if p.poll() is None]
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    text = "\n".join(f"--- rank {r}:\n" + (log_dir / f"rank{r}.log").read_text()[-3000:] for r in range(world))
    assert not hung, f"ranks {hung} did not finish within {timeout}s (killed)\n{text}"
    bad = [r for r, p in enumerate(procs) if p.returncode != 0]
    assert not bad, f"ranks {bad} exited with an error\n{text}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    graphs, x = _graphs()
    models = _models(graphs["main"], x)
    paths, refs = {}, {}
    for name, m in models.items():
        paths[name] = str(root / f"{name}.pt")
        gnnaccel.save(m, paths[name])
        loaded = gnnaccel.load(paths[name])
        for gname, g in graphs.items():
            refs[name, gname] = full_inference(loaded, g, x, progress=False)
    return {"root": root, "graphs": graphs, "x": x, "paths": paths, "refs": refs, "runs": {}}


def _run_world(setup, world: int) -> dict:
    """Partition, write the case list, spawn once; returns {case name: (parts dir, out dir)}."""
    if world in setup["runs"]:
        return setup["runs"][world]
    root = setup["root"] / f"world{world}"
    root.mkdir()
    gen = torch.Generator().manual_seed(world)
    graphs, x, paths = setup["graphs"], setup["x"], setup["paths"]
    parts = {}
    cases, result = [], {}
    for name, gname, model, kind, overlap in _cases(world):
        key = (gname, kind)
        if key not in parts:
            d = root / f"parts-{gname}-{kind}"
            method = kind if kind in ("metis", "random") else "range"
            partition(graphs[gname], x, world, d, method, assignment=_assignment(kind, world, gen), seed=world)
            parts[key] = d
        out = root / f"out-{name}"
        cases.append({"name": name, "parts": str(parts[key]), "model": paths[model], "out": str(out),
                      "overlap": overlap})
        result[name] = (parts[key], out, model, gname)
    if world in ERROR_WORLDS:
        errors = _error_cases(setup, root, parts[("main", "metis")], world)
        cases = errors + cases  # the group must stay usable after failed runs
        for c in errors:
            result[c["name"]] = (Path(c["parts"]), Path(c["out"]), None, None)
    cases_file = root / "cases.json"
    cases_file.write_text(json.dumps(cases))
    spawn(world, cases_file, root)
    setup["runs"][world] = result
    return result


def _error_cases(setup, root: Path, good: Path, world: int):
    x, paths = setup["x"], setup["paths"]
    cases = []

    def case(name, parts, model):
        cases.append({"name": name, "parts": str(parts), "model": model, "out": str(root / f"out-{name}")})

    d = root / "parts-missing"
    shutil.copytree(good, d)
    (d / f"part_{world - 1}" / "graph.pt").unlink()
    case("missing_part_file", d, paths["sage"])
    d = root / "parts-corrupt"
    shutil.copytree(good, d)
    f = d / "part_0" / "features.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    case("corrupt_part_file", d, paths["sage"])
    narrow = root / "narrow.pt"
    gnnaccel.save(GraphSAGE(C - 5, HIDDEN, OUT, 2), narrow)
    case("model_mismatch", good, str(narrow))
    d = root / "parts-world"
    partition(setup["graphs"]["main"], x, world + 1, d, "random")
    case("world_mismatch", d, paths["sage"])
    broken = root / "broken.pt"
    broken.write_bytes(Path(paths["gcn"]).read_bytes()[:-200])
    case("corrupt_model", good, str(broken))
    return cases


def _max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("world,case", [(w, c[0]) for w in WORLD_SIZES for c in _cases(w)])
def test_equals_single_process(setup, world, case):
    parts, out, model, gname = _run_world(setup, world)[case]
    errors = sorted(out.glob("error_rank*.txt"))
    assert not errors, errors[0].read_text()
    got = gather(parts, out)
    ref = setup["refs"][model, gname]
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert _max_rel_err(got, ref) <= 1e-5


def test_cases_cover_the_issue(setup):
    """The partitions of the cases include a part with no halo and a rank with no node."""
    run = _run_world(setup, 3)
    m = json.loads((run["sage-nohalo"][0] / "manifest.json").read_text())
    assert 0 in m["halo_sizes"] and m["edge_cut"] > 0
    m = json.loads((run["gcn-empty_rank"][0] / "manifest.json").read_text())
    assert m["ranges"][0] == [0, 0]


@pytest.mark.parametrize("world,case", [(w, e) for w in ERROR_WORLDS for e in ERRORS])
def test_bad_input_fails_on_every_rank(setup, world, case):
    parts, out, _, _ = _run_world(setup, world)[case]
    for r in range(world):
        f = out / f"error_rank{r}.txt"
        assert f.exists(), f"rank {r} did not fail on {case}"
        text = f.read_text()
        assert ERRORS[case] in text, text
        assert "distributed inference failed" in text
    assert not list(out.glob("rank_*.pt"))


def test_torchrun_launcher_and_gather(setup, tmp_path):
    """The README's commands: torchrun ... -m gnnaccel.distributed infer, then ... gather."""
    g, x = setup["graphs"]["main"], setup["x"]
    parts = tmp_path / "parts"
    partition(g, x, 2, parts, "metis")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "gnnaccel.distributed", "infer", "--parts", str(parts),
           "--model", setup["paths"]["sage_batched"], "--out", str(tmp_path / "out"), "--backend", "gloo",
           "--timeout", "60", "--stats"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SPAWN_TIMEOUT, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(s["rank"] for s in stats) == [0, 1]
    # layer 0 of the batched-pruned SAGE exchanges only the 3 raw features its neighbour branch reads
    assert all(s["layers"][0]["channels"] == 3 for s in stats)
    sent = sum(s["layers"][0]["rows_sent"] for s in stats)
    received = sum(s["layers"][0]["rows_received"] for s in stats)
    m = json.loads((parts / "manifest.json").read_text())
    assert sent == received == sum(m["halo_sizes"])
    proc = subprocess.run([sys.executable, "-m", "gnnaccel.distributed", "gather", "--parts", str(parts),
                           "--outputs", str(tmp_path / "out"), "--out", str(tmp_path / "all.pt")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "all.pt", weights_only=True)
    assert _max_rel_err(got, setup["refs"]["sage_batched", "main"]) <= 1e-5
