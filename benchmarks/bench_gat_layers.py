"""Where a pruned GAT's full inference spends its time (issue 17 item 5, the keep-1/4 target): per layer, the
projection GEMM vs the attention aggregation (with norm and activation; total = their sum), for the unpruned
and the keep-1/4 model, with PyG's models.GAT layout (output layer 8 heads x 16 averaged) and the GAT paper's
(output layer 1 head); and the per-edge cost of the ``gat_aggregate`` kernel split into its attention part (H
logits + exponentials per edge) and its value part (per value channel), from kernel calls with the same graph
and 8 heads at several value widths.
Interleaved rounds in one process; ratios of the best times.

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/bench_gat_layers.py [--nodes 100000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import warnings

import torch

warnings.filterwarnings("ignore")

import gnnaccel  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from gnnaccel.nn.protocol import graph_block  # noqa: E402
from gnnaccel.ops.gat_aggregate import gat_aggregate  # noqa: E402
from gnnaccel.pruning.report import logit_relative_error  # noqa: E402
from conftest import InterleavedBest, synthetic_graph  # noqa: E402
import torch_geometric.nn as pyg_nn  # noqa: E402


def _models(data):
    """{layout: (unpruned, pruned keep 1/4)} for the two output-layer layouts (same hidden layer weights)."""
    torch.manual_seed(0)
    pyg = pyg_nn.models.GAT(128, 256, 2, out_channels=16, heads=8).eval()
    out = {}
    for layout in ("out 8 heads", "out 1 head"):
        if layout == "out 1 head":
            torch.manual_seed(1)
            pyg.convs[1] = pyg_nn.GATConv(256, 16, heads=1, concat=False).eval()
        model = gnnaccel.from_pyg(pyg)
        pruned = gnnaccel.prune(model, data.graph, data.x, keep=0.25, scheme="full", progress=False,
                                calib_nodes=5000)
        out[layout] = (model, pruned)
    return out


def _layer_fns(tag, model, graph, x):
    """Per layer: the projection (block_plan) and the aggregation given the plan (forward_block + norm/act)."""
    fns, h = {}, x
    for i, conv in enumerate(model.convs):
        block = graph_block(conv, graph, h.dtype)
        plan = conv.block_plan(h, block)
        fns[f"{tag} L{i} project"] = (lambda c=conv, hh=h, b=block: c.block_plan(hh, b))
        fns[f"{tag} L{i} aggregate"] = (lambda i=i, hh=h, b=block, p=plan: model.layer_block(i, hh, b, plan=p))
        h = model.layer(i, h, graph)
    return fns


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--degree", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    data = synthetic_graph(args.nodes, args.degree, 128)
    g = data.graph
    print(f"graph: {g.num_nodes} nodes, {g.num_edges} edges, threads {torch.get_num_threads()}")
    models = _models(data)
    with torch.inference_mode():
        for layout, (model, pruned) in models.items():
            ref = full_inference(model, g, data.x, progress=False)
            got = full_inference(pruned, g, data.x, progress=False)
            heads = [getattr(c, "head_index", None) is not None for c in pruned.convs]
            print(f"{layout}: pruned widths {[(c.in_channels, c.value_channels) for c in pruned.convs]} "
                  f"(in, value channels), head_index per layer {heads}, logit error "
                  f"{logit_relative_error(ref, got):.3f}")
        fns = {}
        for layout, (model, pruned) in models.items():
            fns[f"{layout} unpruned full"] = (lambda m=model: full_inference(m, g, data.x, progress=False))
            fns[f"{layout} pruned full"] = (lambda m=pruned: full_inference(m, g, data.x, progress=False))
            fns.update(_layer_fns(f"{layout} unpruned", model, g, data.x))
            fns.update(_layer_fns(f"{layout} pruned", pruned, g, data.x))
        # Kernel alone: the message graph of layer 0, 8 heads, value widths 8..256 (contiguous heads) and 64 with
        # a per-channel head index (what output pruning leaves).
        conv = models["out 8 heads"][0].convs[0]
        mg = conv.message_graph(g, torch.float32)
        gen = torch.Generator().manual_seed(0)
        xw = torch.randn(g.num_nodes, 256, generator=gen)
        a_src, a_dst = torch.randn(g.num_nodes, 8, generator=gen), torch.randn(g.num_nodes, 8, generator=gen)
        for d in (8, 64, 128, 256):
            v = xw[:, :d].contiguous()
            fns[f"kernel H=8 D={d}"] = (lambda v=v: gat_aggregate(mg.rowptr, mg.col, v, a_src, a_dst))
        v64 = xw[:, :64].contiguous()
        hidx = torch.randint(8, (64,), generator=gen)
        fns["kernel H=8 D=64 head_index"] = (lambda: gat_aggregate(mg.rowptr, mg.col, v64, a_src, a_dst,
                                                                    head_index=hidx))
        v16 = xw[:, :16].contiguous()
        fns["kernel H=1 D=16"] = (lambda: gat_aggregate(mg.rowptr, mg.col, v16, a_src[:, :1].contiguous(),
                                                         a_dst[:, :1].contiguous()))
        best = InterleavedBest(fns).run(args.rounds)
    for k, v in best.items():
        print(f"  {k}: {v:.3f} s")
    print(f"edges in the message graph: {mg.col.numel()}")
    for layout in models:
        u, p = best[f"{layout} unpruned full"], best[f"{layout} pruned full"]
        print(f"{layout}: unpruned/pruned full inference {u / p:.2f}x (target >= 3)")
        for i in range(2):
            t = {key: {w: best[f"{layout} {key} L{i} {w}"] for w in ("project", "aggregate")}
                 for key in ("unpruned", "pruned")}
            for key in t:
                t[key]["total"] = t[key]["project"] + t[key]["aggregate"]
            print(f"  layer {i}: " + ", ".join(
                f"{w} {t['unpruned'][w] / t['pruned'][w]:.2f}x ({t['unpruned'][w]:.3f} -> {t['pruned'][w]:.3f} s)"
                for w in ("total", "project", "aggregate")))
    k8, k256 = best["kernel H=8 D=8"], best["kernel H=8 D=256"]
    per_ch = (k256 - k8) / 248
    hidx = best["kernel H=8 D=64 head_index"] / best["kernel H=8 D=64"]
    print(f"kernel: attention part (H=8 logits + exps, D=8) {k8:.3f} s; value part {per_ch * 1e3:.3f} ms per "
          f"channel -> D=64 {64 * per_ch:.3f} s, D=128 {128 * per_ch:.3f} s; D=64 head_index / contiguous "
          f"{hidx:.2f}x; H=1 D=16 {best['kernel H=1 D=16']:.3f} s")

if __name__ == "__main__":
    main()
