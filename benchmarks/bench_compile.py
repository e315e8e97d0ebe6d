"""torch.compile(fullgraph=True) against eager for full-graph inference of gnnaccel models, in one process.

    PYTHONPATH=$PWD python benchmarks/bench_compile.py [--nodes 20000 --degree 20 --features 128 --rounds 15]

Models: 2-layer GraphSAGE and GCN (random weights, eval, no_grad), unpruned and pruned (keep 1/2). Inputs: a
prebuilt ``Graph`` (converted once, outside the model) and a plain ``edge_index`` (converted on every call;
compiled, the conversion is traced into the graph). Eager and compiled calls alternate round by round
(``InterleavedBest``); the printed figure is eager / compiled on the best times (> 1: compiled is faster).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import InterleavedBest, synthetic_graph  # noqa: E402

import gnnaccel  # noqa: E402
from gnnaccel.models import GCN, GraphSAGE  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=20_000)
    p.add_argument("--degree", type=float, default=20)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    data = synthetic_graph(args.nodes, args.degree, args.features)
    g, x = data.graph, data.x
    edge_index = g.edge_index
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {g}, x {list(x.shape)}")
    for cls in (GraphSAGE, GCN):
        base = cls(args.features, args.hidden, 16, 2).eval()
        pruned = gnnaccel.prune(base, g, x, keep=0.5, method="lasso", calib_nodes=2000, progress=False)
        for label, model in (("unpruned", base), ("pruned 1/2", pruned)):
            for adj_name, adj in (("Graph", g), ("edge_index", edge_index)):
                torch._dynamo.reset()
                compiled = torch.compile(model, fullgraph=True)
                with torch.no_grad():
                    start = time.perf_counter()
                    compiled(x, adj)
                    compile_s = time.perf_counter() - start
                    err = (compiled(x, adj) - model(x, adj)).abs().max().item()
                    best = InterleavedBest({"eager": lambda: model(x, adj),
                                            "compiled": lambda: compiled(x, adj)}).run(args.rounds)
                print(f"{cls.__name__:9s} {label:10s} {adj_name:10s} eager {best['eager'] * 1e3:8.1f} ms  "
                      f"compiled {best['compiled'] * 1e3:8.1f} ms  eager/compiled {best['eager'] / best['compiled']:.2f}x"
                      f"  (first compiled call {compile_s:.1f} s, max |diff| {err:.1e})")


if __name__ == "__main__":
    main()
