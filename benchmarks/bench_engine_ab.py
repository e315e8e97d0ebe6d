"""Batched predict, this checkout's engine and cache vs those of a git revision, interleaved in ONE process.

The revision's ``gnnaccel/batched.py`` and ``gnnaccel/cache.py`` are loaded from ``git show REV:...`` as
sibling modules of the package (the rest of the package, kernels included, is shared), so both engines run on
the same graph, features and kernels in alternating rounds. Prints p10 / p50 per configuration and the ratio
before / after (> 1: faster now).

    OMP_NUM_THREADS=1 python benchmarks/bench_engine_ab.py --base fcdee0e
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

import gnnaccel
from gnnaccel import BatchedEngine
from gnnaccel.models import GCN, GraphSAGE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_growth import power_law_graph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load_old(rev: str, name: str):
    source = subprocess.run(["git", "show", f"{rev}:gnnaccel/{name}.py"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    spec = importlib.util.spec_from_loader(f"gnnaccel._ab_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "gnnaccel"
    exec(compile(source, f"{rev}:gnnaccel/{name}.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="git revision of the 'before' engine and cache")
    parser.add_argument("--rounds", type=int, default=120)
    args = parser.parse_args()
    old_cache = _load_old(args.base, "cache")
    new_cache = sys.modules["gnnaccel.cache"]
    sys.modules["gnnaccel.cache"] = old_cache  # the old engine's `from .cache import ...` sees the old cache
    try:
        old_batched = _load_old(args.base, "batched")
    finally:
        sys.modules["gnnaccel.cache"] = new_cache
    torch.manual_seed(0)
    n, c = 30000, 128
    graph, x = power_law_graph(n, c)
    num_edges = 15 * n
    print(f"batch 64, {n} nodes / {num_edges} edges, {args.rounds} interleaved rounds; p10 and p50 in ms "
          f"(before {args.base} / after this checkout)")
    for mname, model in (("GraphSAGE", GraphSAGE(c, 64, 16, 2).eval()), ("GCN", GCN(c, 64, 16, 2).eval())):
        for fanouts in (None, [10, 10]):
            for cache in (False, True, 3000):
                sys.modules["gnnaccel.cache"] = old_cache
                try:
                    before = old_batched.BatchedEngine(model, graph, x, fanouts=fanouts, cache=cache)
                finally:
                    sys.modules["gnnaccel.cache"] = new_cache
                engines = {"before": before, "after": BatchedEngine(model, graph, x, fanouts=fanouts, cache=cache)}
                for e in engines.values():
                    warm = torch.Generator().manual_seed(7)
                    for _ in range(30 if cache else 3):
                        e.predict(torch.randint(n, (64,), generator=warm))
                times = {k: [] for k in engines}
                gen = torch.Generator().manual_seed(3)
                for r in range(args.rounds):
                    targets = torch.randint(n, (64,), generator=gen)
                    outs = {}
                    for k in (("before", "after") if r % 2 else ("after", "before")):
                        t0 = time.perf_counter()
                        outs[k] = engines[k].predict(targets)
                        times[k].append(time.perf_counter() - t0)
                    if fanouts is None:
                        torch.testing.assert_close(outs["before"], outs["after"])
                b, a = sorted(times["before"]), sorted(times["after"])
                q10, q50 = args.rounds // 10, args.rounds // 2
                print(f"  {mname:9s} fanouts={str(fanouts):8s} cache={str(cache):5s}: p10 {b[q10] * 1e3:.2f} / "
                      f"{a[q10] * 1e3:.2f} ({b[q10] / a[q10]:.3f}x)  p50 {b[q50] * 1e3:.2f} / {a[q50] * 1e3:.2f} "
                      f"({b[q50] / a[q50]:.3f}x)", flush=True)


if __name__ == "__main__":
    main()
