"""The benchmark half of the GPU check (`make gpu-check` / scripts/gpu_check.sh): a short run on one GPU that
writes a JSON report and a markdown table.

    python3 benchmarks/gpu_bench.py                         # all stages on cuda, full sizes
    python3 benchmarks/gpu_bench.py --device cpu --tiny     # smoke run of the same code (what the tests run)

Stages, each in its own subprocess under its own time limit (a stage that fails or runs out of time is recorded
with its error, and the next one runs):

* ``inference``: full-graph inference of a 2-layer GraphSAGE (mean), unpruned vs pruned at keep 1/4 (scheme
  full) vs PyG's GraphSAGE on a sparse CSR adjacency (its SpMM path), same weights; gnnaccel once per kernel
  backend (``gnnaccel.use_backend``: "triton" = the Triton kernels, "cpp" = the CUDA .cu kernels).
  The pruned model is pruned on a small graph with the same feature width (which channels are kept does not
  change the cost) and moved to the device.
* ``aggregate``: neighbour mean and sum at 1M nodes / 20M edges, 64 channels: ``gnnaccel.ops.aggregate`` per
  backend vs ``torch.sparse.mm`` (cuSPARSE; the mean as an SpMM with 1/deg values).
* ``batched``: ``BatchedEngine.predict`` latency (p50 / p99 / mean) at batch 512, fanouts [32, all], unpruned
  and pruned, without and with a feature cache (warmed by a stream of random batches first).

Timings: every implementation of a stage runs once per round, rounds interleaved (the ratios come from one
run under the same conditions), after a warm-up call; CUDA work is synchronised before each clock read.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("inference", "aggregate", "batched")
# Seconds per stage (with scripts/gpu_check.sh's build 180 s and tests 110 s: 470 s in all at most).
DEFAULT_TIMEOUTS = {"inference": 65, "aggregate": 60, "batched": 55}

# Problem sizes: full (the GPU check) and tiny (a CPU smoke run in seconds).
SIZES = {
    False: {"inference": dict(nodes=500_000, degree=20, features=64, hidden=128, out=16, rounds=5),
            "aggregate": dict(nodes=1_000_000, degree=20, channels=64, rounds=10),
            "batched": dict(nodes=200_000, degree=25, features=512, hidden=256, batch=512, rounds=30,
                            warmup_batches=40),
            "prune_nodes": 20_000},
    True: {"inference": dict(nodes=2_000, degree=8, features=16, hidden=32, out=4, rounds=2),
           "aggregate": dict(nodes=3_000, degree=8, channels=8, rounds=2),
           "batched": dict(nodes=2_000, degree=8, features=16, hidden=32, batch=64, rounds=3, warmup_batches=2),
           "prune_nodes": 500},
}
KEEP = 0.25


# ------------------------------------------------------------------------------------------ measurement
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, device: str) -> Dict[str, List[float]]:
    """Seconds of every call of each function: one warm-up call each, then ``rounds`` rounds that call every
    function once (in the given order), synchronising the device around each call."""
    for fn in fns.values():
        fn()
    _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: List[float]) -> dict:
    """min / median / mean / p99 in milliseconds of a list of seconds."""
    ms = sorted(t * 1e3 for t in times)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return {"min_ms": ms[0], "median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "p99_ms": p99,
            "rounds": len(ms)}


def rows_with_ratios(times: Dict[str, List[float]], baseline: Optional[str], **common) -> List[dict]:
    """One result row per implementation, with ``speedup`` = baseline median / this median when the baseline
    was measured."""
    rows = []
    base = statistics.median(times[baseline]) if baseline in times else None
    for name, ts in times.items():
        row = {**common, "impl": name, **summarize(ts)}
        row["speedup_vs"] = baseline if base is not None else None
        row["speedup"] = base / statistics.median(ts) if base is not None else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ backends
def kernel_backends(device: str) -> List[str]:
    """The kernel backends to time gnnaccel with on ``device``: on CUDA "triton" (when triton imports) and "cpp"
    (the .cu kernels); on CPU "cpp" only (Triton runs there only in its interpreter, not a benchmark). Without
    the backend switch (``gnnaccel.use_backend``) there is one entry, "default"."""
    import gnnaccel

    if getattr(gnnaccel, "use_backend", None) is None:
        return ["default"]
    if not device.startswith("cuda"):
        return ["cpp"]
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton: the CUDA path falls back, nothing to time
        return ["cpp"]
    return ["triton", "cpp"]


def backend(name: str):
    """``gnnaccel.use_backend(name)``, or nothing for "default"."""
    import gnnaccel

    if name == "default":
        return contextlib.nullcontext()
    return gnnaccel.use_backend(name)


# ------------------------------------------------------------------------------------------ stages
def _synthetic(nodes: int, degree: float, features: int, device: str):
    from gnnaccel.datasets import synthetic

    data = synthetic(nodes, degree, features, seed=0)
    return data.graph.to(device), data.x.to(device)


def _pruned_copy(model, features: int, prune_nodes: int, device: str):
    """``model`` pruned at keep 1/4 (scheme full, LASSO) on a small CPU graph of the same feature width, moved
    to ``device`` (the kept channels do not change the cost)."""
    import copy

    import gnnaccel

    graph, x = _synthetic(prune_nodes, 10, features, "cpu")
    pruned = gnnaccel.prune(copy.deepcopy(model).cpu(), graph, x, keep=KEEP, scheme="full", method="lasso",
                            progress=False, calib_nodes=min(prune_nodes, 4096))
    return pruned.to(device).eval()


def stage_inference(device: str, tiny: bool) -> List[dict]:
    import torch
    import gnnaccel
    from gnnaccel.inference import full_inference

    s = SIZES[tiny]["inference"]
    graph, x = _synthetic(s["nodes"], s["degree"], s["features"], device)
    torch.manual_seed(0)
    fns: Dict[str, Callable[[], object]] = {}
    try:
        from torch_geometric.nn.models import GraphSAGE as PygSAGE

        pyg = PygSAGE(s["features"], s["hidden"], 2, out_channels=s["out"]).to(device).eval()
        model = gnnaccel.from_pyg(pyg).to(device).eval()
        adj_t = graph.to_torch_sparse()
        fns["pyg-csr"] = lambda: pyg(x, adj_t)
    except ImportError:
        pyg = None
        model = gnnaccel.models.GraphSAGE(s["features"], s["hidden"], s["out"], 2).to(device).eval()
    pruned = _pruned_copy(model, s["features"], SIZES[tiny]["prune_nodes"], device)
    notes = {}
    with torch.inference_mode():
        if pyg is not None:  # same weights: the outputs agree before anything is timed
            ref = pyg(x, adj_t)
            got = full_inference(model, graph, x, progress=False)
            notes["max_rel_err_vs_pyg"] = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
        for b in kernel_backends(device):
            def run(m, b=b):
                with backend(b):
                    return full_inference(m, graph, x, progress=False)
            fns[f"gnnaccel[{b}] unpruned"] = lambda run=run: run(model)
            fns[f"gnnaccel[{b}] pruned 1/4"] = lambda run=run: run(pruned)
        times = interleaved(fns, s["rounds"], device)
    base = "pyg-csr" if "pyg-csr" in times else next(iter(times))
    cfg = f"{s['nodes']} nodes, {s['nodes'] * s['degree']} edges, f{s['features']} h{s['hidden']} o{s['out']}"
    return [dict(row, **notes) for row in rows_with_ratios(times, base, config=cfg)]


def stage_aggregate(device: str, tiny: bool) -> List[dict]:
    import torch
    from gnnaccel.ops import aggregate

    s = SIZES[tiny]["aggregate"]
    graph, _ = _synthetic(s["nodes"], s["degree"], 1, device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(graph.num_nodes, s["channels"], generator=gen).to(device)
    adj_sum = graph.to_torch_sparse()
    deg = graph.in_degree().clamp_min(1).to(torch.float32)
    adj_mean = torch.sparse_csr_tensor(adj_sum.crow_indices(), adj_sum.col_indices(),
                                       (1.0 / deg).repeat_interleave(graph.in_degree().to(torch.long)),
                                       adj_sum.shape)
    rows = []
    cfg = f"{graph.num_nodes} nodes, {graph.num_edges} edges, c{s['channels']}"
    with torch.inference_mode():
        for reduce, adj in (("mean", adj_mean), ("sum", adj_sum)):
            fns: Dict[str, Callable[[], object]] = {}
            ref = torch.sparse.mm(adj, x)
            errs = {}
            for b in kernel_backends(device):
                def run(b=b, reduce=reduce):
                    with backend(b):
                        return aggregate(graph.rowptr, graph.col, x, reduce)
                errs[b] = float((run() - ref).abs().max())
                fns[f"gnnaccel[{b}]"] = run
            fns["torch.sparse.mm"] = lambda adj=adj: torch.sparse.mm(adj, x)
            times = interleaved(fns, s["rounds"], device)
            for row in rows_with_ratios(times, "torch.sparse.mm", config=f"{cfg} {reduce}"):
                key = row["impl"][len("gnnaccel["):-1] if row["impl"].startswith("gnnaccel[") else None
                if key is not None:
                    row["max_abs_err_vs_spmm"] = errs[key]
                rows.append(row)
    return rows


def stage_batched(device: str, tiny: bool) -> List[dict]:
    import torch
    import gnnaccel
    from gnnaccel import BatchedEngine

    s = SIZES[tiny]["batched"]
    graph, x = _synthetic(s["nodes"], s["degree"], s["features"], device)
    torch.manual_seed(0)
    model = gnnaccel.models.GraphSAGE(s["features"], s["hidden"], 8, 2).to(device).eval()
    pruned = _pruned_copy(model, s["features"], SIZES[tiny]["prune_nodes"], device)
    engines = {}
    for label, m in (("unpruned", model), ("pruned 1/4", pruned)):
        engines[label] = BatchedEngine(m, graph, x, fanouts=[32, None])
        engines[label + " +cache"] = BatchedEngine(m, graph, x, fanouts=[32, None], cache=True)
    gen = torch.Generator().manual_seed(1)

    def batch():
        return torch.randint(graph.num_nodes, (s["batch"],), generator=gen).to(device)

    for name, engine in engines.items():  # warm the caches with a stream of random batches
        if engine.cache is not None:
            for _ in range(s["warmup_batches"]):
                engine.predict(batch())
    targets = [batch() for _ in range(s["rounds"] + 1)]
    it = {name: iter(targets) for name in engines}
    fns = {name: (lambda e=e, name=name: e.predict(next(it[name]))) for name, e in engines.items()}
    times = interleaved(fns, s["rounds"], device)
    cfg = f"{s['nodes']} nodes, f{s['features']} h{s['hidden']}, batch {s['batch']}, fanouts [32, all]"
    return rows_with_ratios(times, "unpruned", config=cfg)


STAGE_FNS = {"inference": stage_inference, "aggregate": stage_aggregate, "batched": stage_batched}


# ------------------------------------------------------------------------------------------ report
def environment(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:
        info["triton"] = f"unavailable ({type(exc).__name__})"
    try:
        import gnnaccel

        info["gnnaccel_extension_loaded"] = bool(gnnaccel.EXTENSION_LOADED)
        info["backend_switch"] = getattr(gnnaccel, "use_backend", None) is not None
    except Exception as exc:
        info["gnnaccel"] = f"import failed: {exc}"
    return info


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def markdown(report: dict) -> str:
    """The report as markdown: environment, then one table per stage (or its failure)."""
    env = report["environment"]
    lines = ["# GPU check", "", " | ".join(f"{k}: {v}" for k, v in env.items()), ""]
    for name, check in report.get("checks", {}).items():
        lines.append(f"- {name}: {check['status']} (exit {check['exit_code']}, {check['seconds']} s)"
                     + (f": {check['summary']}" if check.get("summary") else ""))
        for failed in check.get("failed", [])[:30]:
            lines.append(f"  - failed: `{failed}`")
    if report.get("checks"):
        lines.append("")
    for name, st in report["stages"].items():
        lines.append(f"## {name}: {st['status']} ({st['seconds']:.1f} s)")
        lines.append("")
        if st["status"] != "ok":
            lines += ["```", (st.get("error") or "").strip()[-2000:], "```", ""]
            continue
        cols = ["config", "impl", "median_ms", "min_ms", "p99_ms", "speedup", "speedup_vs"]
        cols += sorted({k for r in st["results"] for k in r} - set(cols) - {"mean_ms", "rounds"})
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in st["results"]:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(markdown(report) + "\n")


def junit_summary(path: Path) -> dict:
    """Counts and failed test ids of a pytest JUnit XML file (empty when it is missing or unreadable)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    summary = (f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
               f"{counts['skipped']} skipped")
    return {"counts": counts, "failed": failed, "summary": summary}


def check_record(exit_code: Optional[int], seconds: Optional[float], **extra) -> dict:
    """A build or test step of scripts/gpu_check.sh as reported: exit 124/137 is timeout(1)'s."""
    status = "ok" if exit_code == 0 else ("timeout" if exit_code in (124, 137) else "failed")
    return {"status": status, "exit_code": exit_code, "seconds": seconds, **extra}


# ------------------------------------------------------------------------------------------ driver
def run_stage_in_process(name: str, device: str, tiny: bool, result_path: Path) -> None:
    rows = STAGE_FNS[name](device, tiny)
    result_path.write_text(json.dumps(rows))


def run_stage(name: str, device: str, tiny: bool, timeout: float, workdir: Path) -> dict:
    """One stage in a subprocess under ``timeout`` seconds: {status, seconds, error, results}."""
    result = workdir / f"{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--device", device,
           "--result", str(result)] + (["--tiny"] if tiny else [])
    env = dict(os.environ)  # the stage imports the gnnaccel of this checkout, not an installed one
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
        status = "ok" if proc.returncode == 0 and result.exists() else "failed"
        error = None if status == "ok" else f"exit code {proc.returncode}\n{proc.stderr[-4000:]}"
    except subprocess.TimeoutExpired as exc:
        status, error = "timeout", f"ran past {timeout:.0f} s\n{(exc.stderr or b'')[-4000:]!r}"
    seconds = time.perf_counter() - start
    results = json.loads(result.read_text()) if status == "ok" else []
    return {"status": status, "seconds": seconds, "error": error, "results": results}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run of the code, seconds on a CPU")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--out", default="benchmarks/out/gpu_check", help="report path without suffix (.json, .md)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per stage (default: per-stage limits)")
    ap.add_argument("--build-exit", type=int, default=None, help="exit status of the build step (to report)")
    ap.add_argument("--build-seconds", type=float, default=None, help="duration of the build step")
    ap.add_argument("--build-log", default=None, help="log of the build step (its tail is reported on failure)")
    ap.add_argument("--tests-exit", type=int, default=None, help="exit status of the gpu-marked tests")
    ap.add_argument("--tests-seconds", type=float, default=None, help="duration of the test step")
    ap.add_argument("--tests-junit", default=None, help="JUnit XML of the test step (counts, failed tests)")
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)   # internal: run one stage in this process
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if args.stage is not None:
        if args.stage not in STAGES:
            ap.error(f"unknown stage {args.stage!r}")
        run_stage_in_process(args.stage, args.device, args.tiny, Path(args.result))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu_bench: no CUDA GPU visible (torch.cuda.is_available() is False); use --device cpu --tiny "
                  "for a smoke run", file=sys.stderr)
            return 2
    out = Path(args.out)
    workdir = out.parent / (out.name + ".stages")
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(args.device), "tiny": args.tiny, "stages": {}}
    checks = {}
    if args.build_exit is not None:
        tail = ""
        if args.build_exit != 0 and args.build_log and Path(args.build_log).exists():
            tail = Path(args.build_log).read_text(errors="replace")[-3000:]
        checks["build"] = check_record(args.build_exit, args.build_seconds, log_tail=tail)
    if args.tests_exit is not None:
        checks["tests"] = check_record(args.tests_exit, args.tests_seconds,
                                       **(junit_summary(Path(args.tests_junit)) if args.tests_junit else {}))
    if checks:
        report["checks"] = checks
    for name in stages:
        timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUTS[name]
        print(f"gpu_bench: stage {name} (limit {timeout:.0f} s)", flush=True)
        st = run_stage(name, args.device, args.tiny, timeout, workdir)
        report["stages"][name] = st
        print(f"gpu_bench: stage {name}: {st['status']} in {st['seconds']:.1f} s", flush=True)
        write_report(report, out)  # after every stage: a later hang loses nothing measured
    write_report(report, out)
    print(f"gpu_bench: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0 if all(st["status"] == "ok" for st in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
