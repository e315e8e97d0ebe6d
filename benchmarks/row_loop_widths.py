"""Best-of-7 times of the CPU row loop at a few widths: ``aggregate`` (mean) of a compact [N, C] matrix and
``sage_projected`` of the left half of an [N, 2C] matrix (root = right half, plus a bias), the way a
project-first layer calls it. 200k nodes / 4M edges (``datasets.synthetic(200_000, 20, 256)``).

    PYTHONPATH=$PWD python benchmarks/row_loop_widths.py [label]

Used for A/B runs of two builds of the extension (run once per build, alternating); prints one line.
"""
import sys
import time

import torch

from gnnaccel.datasets import synthetic
from gnnaccel.ops import aggregate, sage_projected

WIDTHS = (16, 24, 100, 128)


def main(label: str = "") -> None:
    graph = synthetic(200_000, 20, 256).graph
    rp, col = graph.rowptr, graph.col
    gen = torch.Generator().manual_seed(0)
    cases = {}
    for c in WIDTHS:
        xw = torch.randn(graph.num_nodes, 2 * c, generator=gen)
        compact = xw[:, :c].contiguous()
        bias = torch.randn(c, generator=gen)
        cases[f"aggregate {c}"] = lambda x=compact: aggregate(rp, col, x, "mean")
        cases[f"sage_projected {c}"] = lambda xw=xw, c=c, b=bias: sage_projected(rp, col, xw[:, :c], xw[:, c:], b)
    best = {}
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(7):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    print(label, ", ".join(f"{name} {1e3 * t:.1f} ms" for name, t in best.items()))


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]))
