"""Full-graph inference of a 2-layer GraphSAGE: gnnaccel vs PyG with the same weights, in one run.

    PYTHONPATH=$PWD python -m pytest -q benchmarks/bench_full_inference.py --benchmark-only \
        --benchmark-columns=min,median,rounds -s

Baselines: PyG's GraphSAGE on ``edge_index`` (its default scatter path) and on a torch sparse CSR ``adj_t``
(its SpMM path, the faster one). The 1M-node graph runs only the CSR baseline: PyG's edge_index path
materialises a message per edge (20M x 128 floats = 10 GB). ``pruned_linear`` is compared with
``x[rows][:, keep] @ W``. Ratios of minimum times (same process, same run) are printed at the end.
"""
from __future__ import annotations

import pytest
import torch

import gnnaccel
from gnnaccel.datasets import synthetic
from gnnaccel.inference import full_inference
from gnnaccel.ops import pruned_linear

pyg_nn = pytest.importorskip("torch_geometric.nn")

CONFIGS = {
    # name: (nodes, average degree, features, hidden, out)
    "100k-2M-f128-h256": (100_000, 20, 128, 256, 16),
    "100k-2M-f128-h256-out256": (100_000, 20, 128, 256, 256),  # no project-first benefit on layer 2
    "1M-20M-f64-h128": (1_000_000, 20, 64, 128, 16),
}
_times: dict = {}


@pytest.fixture(scope="module", params=list(CONFIGS))
def setup(request):
    n, deg, f, h, out = CONFIGS[request.param]
    data = synthetic(n, deg, f, num_classes=out, seed=0)
    torch.manual_seed(0)
    pyg = pyg_nn.models.GraphSAGE(f, h, 2, out_channels=out).eval()
    ours = gnnaccel.from_pyg(pyg)
    graph = data.graph
    adj_t = graph.to_torch_sparse()
    with torch.inference_mode():
        ref = pyg(data.x, adj_t)
        got = full_inference(ours, graph, data.x, progress=False)
        err = ((got - ref).norm() / ref.norm()).item()
    assert err < 1e-5, f"outputs differ: relative error {err:.2e}"
    yield request.param, data, graph, pyg, ours, adj_t
    del data, adj_t


def _record(benchmark, config, who):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        _times[(config, who)] = stats.stats.min


def _run(benchmark, fn, rounds):
    with torch.inference_mode():
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def test_gnnaccel(benchmark, setup):
    config, data, graph, _, ours, _ = setup
    benchmark.group = f"full-inference {config}"
    _run(benchmark, lambda: full_inference(ours, graph, data.x, progress=False), 5)
    _record(benchmark, config, "gnnaccel")


def test_pyg_sparse_csr(benchmark, setup):
    config, data, _, pyg, _, adj_t = setup
    benchmark.group = f"full-inference {config}"
    _run(benchmark, lambda: pyg(data.x, adj_t), 5)
    _record(benchmark, config, "pyg-csr")


def test_pyg_edge_index(benchmark, setup):
    config, data, graph, pyg, _, _ = setup
    if CONFIGS[config][0] > 200_000:
        pytest.skip("PyG's edge_index path needs a message per edge (about 10 GB here)")
    edge_index = graph.edge_index
    benchmark.group = f"full-inference {config}"
    _run(benchmark, lambda: pyg(data.x, edge_index), 3)
    _record(benchmark, config, "pyg-edge_index")


# ------------------------------------------------------------------------------------------- pruned_linear
PL_CONFIGS = {"rows50k-keep128of256": (200_000, 256, 50_000, 128, 128),
              "allrows-keep64of256": (200_000, 256, None, 64, 128)}


@pytest.fixture(scope="module", params=list(PL_CONFIGS))
def pl_setup(request):
    n, c, r, k, d = PL_CONFIGS[request.param]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g)
    rows = torch.randint(n, (r,), generator=g) if r else None
    keep = torch.randperm(c, generator=g)[:k]
    w, b = torch.randn(k, d, generator=g), torch.randn(d, generator=g)
    return request.param, x, rows, keep, w, b


def _dense(x, rows, keep, w, b):
    z = x[rows] if rows is not None else x
    return torch.addmm(b, z[:, keep], w)


def test_pruned_linear(benchmark, pl_setup):
    config, x, rows, keep, w, b = pl_setup
    torch.testing.assert_close(pruned_linear(x, w, b, rows, keep), _dense(x, rows, keep, w, b), rtol=1e-4, atol=1e-4)
    benchmark.group = f"pruned_linear {config}"
    _run(benchmark, lambda: pruned_linear(x, w, b, rows, keep), 20)
    _record(benchmark, config, "pruned_linear")


def test_dense_gather_matmul(benchmark, pl_setup):
    config, x, rows, keep, w, b = pl_setup
    benchmark.group = f"pruned_linear {config}"
    _run(benchmark, lambda: _dense(x, rows, keep, w, b), 20)
    _record(benchmark, config, "x[rows][:, keep] @ W")


def test_zz_report_ratios():
    """Print baseline / gnnaccel ratios of the minimum times measured above (same process)."""
    if not _times:
        pytest.skip("benchmarks disabled: no timings")
    lines = []
    for config in CONFIGS:
        ours = _times.get((config, "gnnaccel"))
        for who in ("pyg-csr", "pyg-edge_index"):
            if ours and (config, who) in _times:
                lines.append(f"{config}: {who} / gnnaccel = {_times[(config, who)] / ours:.2f}x")
    for config in PL_CONFIGS:
        ours = _times.get((config, "pruned_linear"))
        base = _times.get((config, "x[rows][:, keep] @ W"))
        if ours and base:
            lines.append(f"{config}: (x[rows][:, keep] @ W) / pruned_linear = {base / ours:.2f}x")
    print("\n" + "\n".join(lines))
