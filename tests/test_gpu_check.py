"""The GPU check's CPU-runnable parts: scripts/gpu_check.sh refuses clearly without a GPU, and
benchmarks/gpu_bench.py (argument parsing, stages at tiny sizes, failure recording, JSON and markdown report)
works on the CPU, so a GPU session does not discover a typo."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO_ROOT / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_check_script_says_there_is_no_gpu_and_builds_nothing(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(tmp_path / "gpu_check"))
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and "torch.cuda.is_available() is False" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # stopped before the build: no log, no report


def test_makefile_gpu_check_calls_the_script_and_test_excludes_gpu():
    text = (REPO_ROOT / "Makefile").read_text()
    target = text.split("\ngpu-check:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/gpu_check.sh" in target and "venv" not in target and "pip" not in target
    test_recipe = text.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert '-m "not gpu"' in test_recipe


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_bench_on_cuda_without_gpu_exits_with_a_message(capsys):
    assert _gpu_bench().main(["--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_gpu_bench_rejects_unknown_stage():
    with pytest.raises(SystemExit):
        _gpu_bench().main(["--device", "cpu", "--stages", "inference,bogus"])


@pytest.mark.parametrize("stage", ["inference", "aggregate", "batched"])
def test_gpu_bench_stages_run_tiny_on_cpu(stage):
    bench = _gpu_bench()
    rows = bench.STAGE_FNS[stage]("cpu", True)
    assert rows
    for row in rows:
        assert {"config", "impl", "min_ms", "median_ms", "p99_ms", "rounds", "speedup", "speedup_vs"} <= set(row)
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p99_ms"]
        assert row["rounds"] == bench.SIZES[True][stage]["rounds"]
        assert row["speedup"] > 0
    impls = {row["impl"] for row in rows}
    if stage == "inference":  # same weights as PyG: outputs agree before timing
        assert any("pruned" in i for i in impls) and any("unpruned" in i for i in impls)
        assert all(row["max_rel_err_vs_pyg"] < 1e-5 for row in rows)
    if stage == "aggregate":
        assert "torch.sparse.mm" in impls
        assert all(row["max_abs_err_vs_spmm"] < 1e-4 for row in rows if row["impl"] != "torch.sparse.mm")
    if stage == "batched":
        assert {"unpruned", "pruned 1/4", "unpruned +cache", "pruned 1/4 +cache"} == impls


def test_gpu_bench_driver_records_failures_continues_and_writes_reports(tmp_path):
    """A stage that runs out of time is recorded and the next stage still runs; the build and test steps of
    the shell script are reported from their exit status and JUnit file."""
    bench = _gpu_bench()
    junit = tmp_path / "tests.xml"
    junit.write_text('<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
                     '<testcase classname="tests.test_x" name="test_ok"/>'
                     '<testcase classname="tests.test_x" name="test_bad"><failure message="boom"/></testcase>'
                     '<testcase classname="tests.test_x" name="test_skip"><skipped/></testcase>'
                     '</testsuite></testsuites>')
    out = tmp_path / "report"
    rc = bench.main(["--device", "cpu", "--tiny", "--stages", "aggregate,batched", "--timeout", "0.2", "--out",
                     str(out), "--build-exit", "0", "--build-seconds", "12", "--tests-exit", "1",
                     "--tests-seconds", "30", "--tests-junit", str(junit)])
    assert rc == 1
    report = json.loads(out.with_suffix(".json").read_text())
    assert list(report["stages"]) == ["aggregate", "batched"]
    for st in report["stages"].values():
        assert st["status"] == "timeout" and st["results"] == [] and "ran past" in st["error"]
    assert report["checks"]["build"]["status"] == "ok"
    tests = report["checks"]["tests"]
    assert tests["status"] == "failed" and tests["failed"] == ["tests.test_x::test_bad"]
    assert tests["summary"] == "1 passed, 1 failed, 0 errors, 1 skipped"
    assert report["environment"]["device"] == "cpu" and report["tiny"] is True
    md = out.with_suffix(".md").read_text()
    assert "## aggregate: timeout" in md and "## batched: timeout" in md and "tests.test_x::test_bad" in md


def test_gpu_bench_driver_ok_stage_in_a_subprocess(tmp_path):
    bench = _gpu_bench()
    out = tmp_path / "report"
    assert bench.main(["--device", "cpu", "--tiny", "--stages", "aggregate", "--timeout", "300", "--out",
                       str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    st = report["stages"]["aggregate"]
    assert st["status"] == "ok" and st["error"] is None and len(st["results"]) >= 4
    md = out.with_suffix(".md").read_text()
    assert "## aggregate: ok" in md and "| config | impl | median_ms |" in md and "torch.sparse.mm" in md
