"""The command line (gnnaccel.cli): --version, info, prune, bench, help texts and bad input."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import gnnaccel
from gnnaccel import Graph
from gnnaccel.cli import build_parser, main
from gnnaccel.inference import full_inference
from gnnaccel.models import GraphSAGE, SAINTGraphSAGE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def inputs(tmp_path):
    gen = torch.Generator().manual_seed(3)
    n, f = 60, 8
    edge_index = torch.randint(n, (2, 300), generator=gen)
    x = torch.randn(n, f, generator=gen)
    torch.save({"edge_index": edge_index, "x": x, "num_nodes": n}, tmp_path / "graph.pt")
    np.savez(tmp_path / "graph.npz", edge_index=edge_index.numpy(), x=x.numpy())
    torch.manual_seed(0)
    model = GraphSAGE(f, 16, 3, num_layers=2, norm="batchnorm").eval()
    gnnaccel.save(model, tmp_path / "model.pt")
    return tmp_path, model, Graph.from_edge_index(edge_index, n), x


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"gnnaccel {gnnaccel.__version__}" in out and torch.__version__ in out


def test_every_option_has_help():
    parser = build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    assert {"demo", "info", "prune", "bench", "serve"} <= set(subparsers.choices)
    for p in [parser, *subparsers.choices.values()]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{p.prog} {action.option_strings}"
    assert all(a.help for a in subparsers._choices_actions)


@pytest.mark.parametrize("graph_file", ["graph.pt", "graph.npz"])
@pytest.mark.parametrize("scheme", ["full", "batched"])
def test_prune_matches_the_library_call(inputs, capsys, graph_file, scheme):
    tmp_path, model, graph, x = inputs
    out_path = tmp_path / f"pruned-{scheme}.pt"
    rc, out, err = _run(capsys, ["prune", "--model", tmp_path / "model.pt", "--graph", tmp_path / graph_file,
                                 "--keep", "0.5", "--scheme", scheme, "--method", "lasso", "-o", out_path,
                                 "--no-progress"])
    assert rc == 0, err
    assert "wrote" in out and str(out_path) in out
    expected = gnnaccel.prune(model, graph, x, keep=0.5, scheme=scheme, method="lasso", progress=False)
    got = gnnaccel.load(out_path)
    assert _same_state(got, expected)
    assert torch.equal(got(x, graph), expected(x, graph))
    # The output is not overwritten without --force.
    rc, _, err = _run(capsys, ["prune", "--model", tmp_path / "model.pt", "--graph", tmp_path / graph_file,
                               "-o", out_path, "--no-progress"])
    assert rc == 1 and "--force" in err


def test_prune_from_a_pyg_checkpoint(inputs, capsys):
    pyg_models = pytest.importorskip("torch_geometric.nn.models")
    tmp_path, _, graph, x = inputs
    torch.manual_seed(1)
    pyg = pyg_models.GraphSAGE(8, 12, 2, out_channels=3, norm="batch_norm")
    with torch.no_grad():
        for bn in pyg.norms[:-1]:  # the last norm is an Identity
            bn.module.running_mean.normal_()
            bn.module.running_var.uniform_(0.5, 2.0)
    pyg.eval()
    torch.save({"model_state_dict": pyg.state_dict()}, tmp_path / "pyg.pt")
    out_path = tmp_path / "from_pyg.pt"
    rc, out, err = _run(capsys, ["prune", "--pyg-model", "GraphSAGE", "--in", 8, "--hidden", 12, "--layers", 2,
                                 "--out", 3, "--norm", "batchnorm", "--state-dict", tmp_path / "pyg.pt",
                                 "--graph", tmp_path / "graph.pt", "--keep", "0.5", "-o", out_path,
                                 "--no-progress"])
    assert rc == 0, err
    expected = gnnaccel.prune(gnnaccel.from_pyg(pyg), graph, x, keep=0.5, progress=False)
    assert _same_state(gnnaccel.load(out_path), expected)
    # A checkpoint that does not fit the stated architecture.
    rc, _, err = _run(capsys, ["prune", "--pyg-model", "GraphSAGE", "--in", 8, "--hidden", 13, "--layers", 2,
                               "--out", 3, "--norm", "batchnorm", "--state-dict", tmp_path / "pyg.pt",
                               "--graph", tmp_path / "graph.pt", "-o", tmp_path / "x.pt", "--no-progress"])
    assert rc == 1 and "does not fit" in err and "Traceback" not in err


def test_info(inputs, capsys):
    tmp_path, model, graph, x = inputs
    pruned = gnnaccel.prune(model, graph, x, keep=0.5, scheme="batched", progress=False)
    path = tmp_path / "pruned.pt"
    gnnaccel.save(pruned, path)
    rc, out, err = _run(capsys, ["info", path])
    assert rc == 0, err
    params = sum(p.numel() for p in pruned.parameters())
    assert f"{os.path.getsize(path):,} bytes" in out and f"{params:,} parameters" in out
    assert "GraphSAGE" in out and "pruned" in out and "scheme batched" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+SAGEConv", line)]
    assert [(int(r[2]), int(r[3])) for r in rows] == [(c.in_channels, c.out_channels) for c in pruned.convs]
    for row, conv in zip(rows, pruned.convs):
        for b in conv.linear_parts().branches:
            assert f"{b.name}/{b.propagation}:{b.weight.shape[0]}" in " ".join(row)
    rc, out, _ = _run(capsys, ["info", tmp_path / "model.pt"])
    assert rc == 0 and "not pruned" in out


def test_bench(inputs, capsys):
    pytest.importorskip("torch_geometric")
    tmp_path, *_ = inputs
    rc, out, err = _run(capsys, ["bench", "--model", tmp_path / "model.pt", "--graph", tmp_path / "graph.pt",
                                 "--rounds", 3, "--warmup", 1, "--no-progress"])
    assert rc == 0, err
    assert "speedup" in out and "PyG" in out
    diff = float(re.search(r"max \|output difference\| (\S+)", out).group(1))
    assert diff < 1e-4  # the PyG counterpart runs the same weights
    saint = tmp_path / "saint.pt"
    gnnaccel.save(SAINTGraphSAGE(8, 8, 3, num_layers=1).eval(), saint)
    rc, _, err = _run(capsys, ["bench", "--model", saint, "--graph", tmp_path / "graph.pt", "--no-progress"])
    assert rc == 1 and "no PyG counterpart" in err


def test_bench_dtype(inputs, capsys):
    """--dtype bfloat16: gnnaccel runs at half width (its answers differ from PyG's float32 by exactly what
    full_inference(dtype=torch.bfloat16) differs); a dtype the engines do not run in is a usage error."""
    pytest.importorskip("torch_geometric")
    tmp_path, model, graph, x = inputs
    rc, out, err = _run(capsys, ["bench", "--model", tmp_path / "model.pt", "--graph", tmp_path / "graph.pt",
                                 "--rounds", 2, "--warmup", 1, "--no-progress", "--dtype", "bfloat16"])
    assert rc == 0, err
    assert "bfloat16" in out
    diff = float(re.search(r"max \|output difference\| (\S+)", out).group(1))
    loaded = gnnaccel.load(tmp_path / "model.pt")
    expected = float((full_inference(loaded, graph, x, progress=False, dtype=torch.bfloat16)
                      - full_inference(loaded, graph, x, progress=False)).abs().max())
    assert expected > 0  # the half-width run really rounds
    assert abs(diff - expected) <= 1e-5 + 0.01 * expected  # printed with 3 digits; PyG equals ours within 1e-5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--model", "m.pt", "--graph", "g.pt", "--dtype", "int32"])


def _bad_graphs(tmp_path):
    n = 10
    yield "missing.pt", "does not exist"
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    yield "garbage.pt", "not a readable"
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    yield "garbage.npz", "not a readable"
    (tmp_path / "graph.txt").write_text("0 1")
    yield "graph.txt", ".pt or .npz"
    torch.save({"x": torch.randn(n, 8)}, tmp_path / "no_edges.pt")
    yield "no_edges.pt", "missing \\['edge_index'\\]"
    torch.save({"edge_index": torch.tensor([[0, 12], [1, 2]]), "x": torch.randn(n, 8)}, tmp_path / "range.pt")
    yield "range.pt", "range.pt"
    torch.save({"edge_index": torch.tensor([[0], [1]]), "x": torch.randn(n, 8), "num_nodes": 11},
               tmp_path / "count.pt")
    yield "count.pt", "num_nodes"
    torch.save({"edge_index": torch.tensor([[0], [1]]), "x": torch.randn(n, 5)}, tmp_path / "width.pt")
    yield "width.pt", "5 features but the model reads 8"
    torch.save({"edge_index": torch.tensor([[0], [1]]), "x": torch.ones(n, 8, dtype=torch.long)},
               tmp_path / "intx.pt")
    yield "intx.pt", "float"
    torch.save([1, 2], tmp_path / "list.pt")
    yield "list.pt", "dict"


def test_bad_graph_files(inputs, capsys):
    tmp_path, *_ = inputs
    for name, match in _bad_graphs(tmp_path):
        rc, _, err = _run(capsys, ["prune", "--model", tmp_path / "model.pt", "--graph", tmp_path / name,
                                   "-o", tmp_path / "out.pt", "--no-progress"])
        assert rc == 1, name
        assert re.search(match, err), (name, err)
        assert "Traceback" not in err
        assert not (tmp_path / "out.pt").exists()


def test_bad_model_files_and_options(inputs, capsys):
    tmp_path, *_ = inputs
    (tmp_path / "corrupt.pt").write_bytes((tmp_path / "model.pt").read_bytes()[:500])
    for argv, match in [
        (["info", tmp_path / "absent.pt"], "absent.pt"),
        (["info", tmp_path / "corrupt.pt"], "corrupt.pt"),
        (["info", tmp_path / "graph.pt"], "not a gnnaccel model"),
        (["bench", "--graph", tmp_path / "graph.pt"], "exactly one of --model"),
        (["bench", "--model", tmp_path / "model.pt", "--pyg-model", "GCN", "--graph", tmp_path / "graph.pt"],
         "exactly one of --model"),
        (["prune", "--pyg-model", "GCN", "--graph", tmp_path / "graph.pt", "-o", tmp_path / "o.pt"],
         "--state-dict"),
        (["prune", "--pyg-model", "GCN", "--state-dict", tmp_path / "corrupt.pt", "--in", 8, "--hidden", 4,
          "--layers", 2, "--out", 3, "--graph", tmp_path / "graph.pt", "-o", tmp_path / "o.pt"], "corrupt.pt"),
    ]:
        rc, _, err = _run(capsys, argv + ["--no-progress"] if argv[0] != "info" else argv)
        assert rc == 1 and re.search(re.escape(str(match)) if "/" in str(match) else match, err), (argv, err)
        assert "Traceback" not in err
    for argv in (["prune", "--model", "m.pt", "--graph", "g.pt", "-o", "o.pt", "--keep", "1.5"],
                 ["prune", "--model", "m.pt", "--graph", "g.pt", "-o", "o.pt", "--keep", "half"],
                 ["prune", "--model", "m.pt", "--graph", "g.pt", "-o", "o.pt", "--scheme", "partial"],
                 ["bench", "--model", "m.pt", "--graph", "g.pt", "--rounds", "0"],
                 ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        capsys.readouterr()


def test_module_entry_point_exit_codes(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    run = lambda *a: subprocess.run([sys.executable, "-m", "gnnaccel", *a], capture_output=True, text=True,  # noqa
                                    cwd=REPO, env=env, timeout=300)
    ok = run("--version")
    assert ok.returncode == 0 and "gnnaccel" in ok.stdout
    bad = run("info", str(tmp_path / "absent.pt"))
    assert bad.returncode == 1 and "absent.pt" in bad.stderr and "Traceback" not in bad.stderr
