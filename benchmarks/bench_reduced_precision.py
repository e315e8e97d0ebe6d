"""bfloat16 / float16 storage against float32 in the CPU kernels, side by side in one process (issue 16 item 1).

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/bench_reduced_precision.py [--quick] [--rounds 7]

Per graph (200k nodes / 4M edges with 256 and with 64 features, synthetic power-law): aggregate mean,
sage_fused (root, mean, to hidden 256 / 64), sage_projected (mean, root + bias, width = features) and
pruned_linear (N/2 random rows of x, keep 1/4 of the columns, and the plain [N, C] @ [C, C] linear), each in
float32, bfloat16 and float16, interleaved round by round in a shuffled order (gnnaccel.latency). Prints the
median per-round time ratio float32 / dtype (> 1: the half-width kernel is faster) with its interquartile range.
"""
from __future__ import annotations

import argparse

import torch

from gnnaccel.latency import format_speedup, interleaved_times, speedup
from gnnaccel.ops import aggregate, pruned_linear, sage_fused, sage_projected
from conftest import synthetic_graph

GRAPHS = {"200k-4M-c256": (200_000, 20, 256), "200k-4M-c64": (200_000, 20, 64)}
QUICK_GRAPHS = {"20k-400k-c256": (20_000, 20, 256), "20k-400k-c64": (20_000, 20, 64)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cases(graph, x32, generator):
    """name -> dtype -> callable."""
    n, c = x32.shape
    g = graph.to(index_dtype=torch.int32)
    w_fused = torch.randn(2 * c, c, generator=generator) / c ** 0.5
    bias = torch.randn(c, generator=generator)
    root = torch.randn(n, c, generator=generator)
    rows = torch.randint(n, (n // 2,), generator=generator)
    keep = torch.randperm(c, generator=generator)[: c // 4]
    w_keep = torch.randn(c // 4, c, generator=generator)
    out = {}
    for name, dt in DTYPES.items():
        x, wf, b, r, wk = (t.to(dt) for t in (x32, w_fused, bias, root, w_keep))
        out.setdefault("aggregate mean", {})[name] = lambda x=x: aggregate(g.rowptr, g.col, x, "mean")
        out.setdefault("sage_fused mean root", {})[name] = \
            lambda x=x, wf=wf, b=b: sage_fused(g.rowptr, g.col, x, wf, b, reduce="mean", root=True)
        out.setdefault("sage_projected mean", {})[name] = \
            lambda x=x, r=r, b=b: sage_projected(g.rowptr, g.col, x, r, b, None, None, "mean")
        out.setdefault("pruned_linear rows+keep", {})[name] = lambda x=x, wk=wk: pruned_linear(x, wk, None, rows, keep)
        out.setdefault("linear [N,C]@[C,C]", {})[name] = lambda x=x, wf=wf, b=b: pruned_linear(x, wf[:c], b)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k-node graphs (smoke run)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
          f"cpu {torch.backends.cpu.get_cpu_capability()}")
    for gname, (n, deg, c) in (QUICK_GRAPHS if args.quick else GRAPHS).items():
        data = synthetic_graph(n, deg, c)
        with torch.inference_mode():
            for case, fns in cases(data.graph, data.x.float(), generator).items():
                times = interleaved_times(fns, rounds=args.rounds, warmup=1)
                base = times["float32"]
                cols = [f"float32 {base.median().item() * 1e3:8.1f} ms"]
                for name in ("bfloat16", "float16"):
                    cols.append(f"{name} {times[name].median().item() * 1e3:8.1f} ms "
                                f"({format_speedup(speedup(base, times[name]))})")
                print(f"{gname:>14} {case:<24} " + "  ".join(cols), flush=True)


if __name__ == "__main__":
    main()
