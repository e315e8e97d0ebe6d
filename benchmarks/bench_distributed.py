"""Distributed full inference (gnnaccel.distributed): halo-exchange volume per layer, unpruned vs pruned, METIS vs
random partitions, and the compute / exchange time split, on gloo over loopback (one process per rank).

    PYTHONPATH=$PWD python benchmarks/bench_distributed.py                 # 1M nodes / 20M edges, 2 and 4 ranks
    PYTHONPATH=$PWD python benchmarks/bench_distributed.py --nodes 100000  # smaller

Graph: gnnaccel.datasets.synthetic (power-law degrees, 64 classes, homophily 0.7: the classes are the
communities a partitioner can find), 128 features. Model: 2-layer GraphSAGE 128 -> 256 -> 172 (random weights;
volumes and times do not depend on them) and its pruned copies, keep 1/4 (``method="random"`` selection: the
selection does not change volumes or times), schemes ``batched`` (layer 0's neighbour branch reads 32 of the
128 raw features) and ``full`` (raw features whole, hidden 256 -> 64).

Per configuration every model runs ``--rounds`` times in each mode, interleaved: ``overlap=False`` (exchange,
then compute: the two times measured apart) and ``overlap=True`` (interior rows computed during the exchange).
Also measured, in the parent with one thread: the aggregation rate (edge-channels/s of a mean aggregation of
the 128 raw features over the whole graph) and the GEMM rate (FLOP/s of [N,128] x [128,256]), the rates the
papers100M plan in RESULTS.md scales from. On a 2-core machine the ranks share cores, so wall-clock scaling is
not a figure here; volumes (exact) and the split are.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = ("unpruned", "pruned-batched", "pruned-full")


def _worker(rank: int, world: int, port: int, config: str) -> None:
    import torch.distributed as dist

    from gnnaccel.distributed import full_inference

    cfg = json.loads(Path(config).read_text())
    torch.set_num_threads(cfg["threads"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=900))
    import gnnaccel

    models = {name: gnnaccel.load(path) for name, path in cfg["models"].items()}
    results = []
    for rnd in range(cfg["rounds"]):
        for name, model in models.items():
            for overlap in (False, True):
                dist.barrier()
                t = time.perf_counter()
                out, _, stats = full_inference(model, cfg["parts"], overlap=overlap, return_stats=True)
                wall = time.perf_counter() - t
                dist.barrier()
                results.append({"round": rnd, "model": name, "overlap": overlap, "wall_s": wall,
                                "rows": out.shape[0], "layers": [vars(s) for s in stats.layers]})
    Path(cfg["out"]).joinpath(f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, config: Path, timeout: float) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(r), str(world), str(port), str(config)],
                              env=env) for r in range(world)]
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a rank failed: exit codes {[p.returncode for p in procs]}")


def _rates(graph, x, hidden: int) -> dict:
    """Single-thread aggregation and GEMM rates (best of 3)."""
    from gnnaccel.ops import aggregate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best_agg, best_mm = float("inf"), float("inf")
        w = torch.randn(x.shape[1], hidden)
        rows = min(x.shape[0], 200_000)
        for _ in range(3):
            t = time.perf_counter()
            aggregate(graph.rowptr, graph.col, x, "mean")
            best_agg = min(best_agg, time.perf_counter() - t)
            t = time.perf_counter()
            torch.mm(x[:rows], w)
            best_mm = min(best_mm, time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return {"aggregate_edge_channels_per_s": graph.num_edges * x.shape[1] / best_agg,
            "aggregate_s": best_agg, "gemm_flops_per_s": 2 * rows * x.shape[1] * hidden / best_mm}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--degree", type=float, default=20.0, help="average in-degree (edges = nodes * degree)")
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--classes", type=int, default=172)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--methods", nargs="+", default=["metis", "random"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--workdir", default="/tmp/gnnaccel-bench-distributed")
    ap.add_argument("--json", default="benchmarks/out/distributed.json")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    import gnnaccel
    from gnnaccel.datasets.synthetic import synthetic
    from gnnaccel.distributed import partition
    from gnnaccel.models import GraphSAGE

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    data = synthetic(args.nodes, avg_degree=args.degree, num_features=args.features, num_classes=64, seed=0)
    g, x = data.graph, data.x.contiguous()
    print(f"graph {g} features {list(x.shape)} ({time.perf_counter() - t:.0f} s)", flush=True)
    torch.manual_seed(0)
    model = GraphSAGE(args.features, args.hidden, args.classes, 2).eval()
    models = {"unpruned": model}
    for scheme in ("batched", "full"):
        models[f"pruned-{scheme}"] = gnnaccel.prune(model, g, x, keep=0.25, scheme=scheme, method="random",
                                                     calib_nodes=20_000, progress=False)
    paths = {}
    for name, m in models.items():
        paths[name] = str(work / f"{name}.pt")
        gnnaccel.save(m, paths[name])
        print(name, [repr(c) for c in m.convs], flush=True)
    rates = _rates(g, x, args.hidden)
    print("rates", rates, flush=True)
    report = {"command": " ".join(sys.argv), "nodes": g.num_nodes, "edges": g.num_edges,
              "features": args.features, "hidden": args.hidden, "classes": args.classes, "rates": rates,
              "configs": []}
    for method in args.methods:
        for world in args.ranks:
            pdir = work / f"parts-{method}-{world}"
            t = time.perf_counter()
            info = partition(g, x, world, pdir, method)
            t_part = time.perf_counter() - t
            out = work / f"out-{method}-{world}"
            out.mkdir()
            cfg = work / f"cfg-{method}-{world}.json"
            cfg.write_text(json.dumps({"parts": str(pdir), "models": paths, "rounds": args.rounds,
                                       "threads": args.threads, "out": str(out)}))
            t = time.perf_counter()
            _spawn(world, cfg, args.timeout)
            t_run = time.perf_counter() - t
            per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
            runs = [list(rr) for rr in zip(*per_rank)]  # runs[k] = [rank 0's k-th result, rank 1's, ...]
            summary = _summary_runs(runs)
            entry = {"method": method, "ranks": world, "edge_cut": info.edge_cut,
                     "edge_cut_fraction": info.edge_cut_fraction, "halo_sizes": info.halo_sizes,
                     "owned": [b - a for a, b in info.ranges], "edges_per_part": info.edges_per_part,
                     "partition_s": t_part, "run_s": t_run, "models": summary}
            report["configs"].append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "models"}), flush=True)
            for name, s in summary.items():
                print(f"  {name:15s} " + " | ".join(
                    f"L{l['layer']}: {l['channels']} ch, {l['bytes_sent_total'] / 2**20:.1f} MiB"
                    for l in s["layers"])
                      + f" | seq compute {s['sequential']['compute_s']:.2f}s exchange "
                        f"{s['sequential']['exchange_s']:.2f}s wall {s['sequential']['wall_s']:.2f}s"
                      + f" | overlap wall {s['overlapped']['wall_s']:.2f}s wait {s['overlapped']['wait_s']:.2f}s",
                      flush=True)
            shutil.rmtree(pdir)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


def _summary_runs(runs: list) -> dict:
    """runs: one list per run (its ranks' results). Volumes from the first run of each model, times the min
    over rounds of the slowest rank."""
    out = {}
    for model in MODELS:
        sel = [run for run in runs if run[0]["model"] == model]
        if not sel:
            continue
        first = sel[0]
        layers = []
        for i in range(len(first[0]["layers"])):
            st = [r["layers"][i] for r in first]
            layers.append({"layer": i, "channels": st[0]["channels"],
                           "rows_sent_total": sum(s["rows_sent"] for s in st),
                           "bytes_sent_total": sum(s["bytes_sent"] for s in st),
                           "bytes_sent_max_rank": max(s["bytes_sent"] for s in st),
                           "bytes_received_max_rank": max(s["bytes_received"] for s in st)})

        def best(overlap: bool, key: str) -> float:
            vals = []
            for run in sel:
                if run[0]["overlap"] != overlap:
                    continue
                if key == "wall_s":
                    vals.append(max(r["wall_s"] for r in run))
                else:
                    vals.append(max(sum(l[key] for l in r["layers"]) for r in run))
            return min(vals)

        out[model] = {"layers": layers,
                      "sequential": {"compute_s": best(False, "compute_s"), "exchange_s": best(False, "exchange_s"),
                                     "wall_s": best(False, "wall_s")},
                      "overlapped": {"compute_s": best(True, "compute_s"), "wait_s": best(True, "wait_s"),
                                     "wall_s": best(True, "wall_s")}}
    return out


if __name__ == "__main__":
    main()
