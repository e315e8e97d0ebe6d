"""GAT full inference (issue 17 item 5): gnnaccel vs PyG's GATConv with the same weights, unpruned and pruned at
keep 1/4, interleaved rounds in one process (ratios of the best times).

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/bench_gat.py [--nodes 100000] [--degree 20] [--rounds 5]

Graph: ``synthetic`` (power-law), 128 features. Two models, both 8 heads x 32 channels:
* ``layer``: one GATConv(128, 32, heads=8) (PyG's call on ``edge_index`` vs gnnaccel's full_inference);
* ``model``: PyG's models.GAT(128, 256, 2 layers, out_channels=16, heads=8) -- hidden 8 x 32 concatenated, the
  output layer averages 8 heads of 16 -- converted with from_pyg, and the same model pruned with keep 1/4
  (scheme full: layer 1 reads 64 of the 256 hidden channels, so layer 0 aggregates 64 value channels instead
  of 256; its attention logits are kept whole). Calibration: 5000 random nodes.
The pruned model is a different function: its logit error against the unpruned one is printed too.
"""
from __future__ import annotations

import argparse
import warnings

import torch

warnings.filterwarnings("ignore")

import gnnaccel  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from gnnaccel.pruning.report import logit_relative_error  # noqa: E402
from conftest import InterleavedBest, synthetic_graph  # noqa: E402
import torch_geometric.nn as pyg_nn  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--degree", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    data = synthetic_graph(args.nodes, args.degree, 128)
    ei = data.graph.edge_index
    print(f"graph: {data.graph.num_nodes} nodes, {data.graph.num_edges} edges, threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    pyg_layer = pyg_nn.GATConv(128, 32, heads=8).eval()
    layer = gnnaccel.from_pyg(pyg_layer)
    pyg_model = pyg_nn.models.GAT(128, 256, 2, out_channels=16, heads=8).eval()
    model = gnnaccel.from_pyg(pyg_model)
    pruned = gnnaccel.prune(model, data.graph, data.x, keep=0.25, scheme="full", progress=False, calib_nodes=5000)
    with torch.inference_mode():
        ref_layer, ref_model = pyg_layer(data.x, ei), pyg_model(data.x, ei)
        got_layer = layer(data.x, data.graph)
        got_model = full_inference(model, data.graph, data.x, progress=False)
        got_pruned = full_inference(pruned, data.graph, data.x, progress=False)
        print(f"parity: layer rel {logit_relative_error(ref_layer, got_layer):.1e}, model rel "
              f"{logit_relative_error(ref_model, got_model):.1e}; pruned keep 1/4 logit error "
              f"{logit_relative_error(got_model, got_pruned):.3f}")
        fns = {"pyg layer": lambda: pyg_layer(data.x, ei),
               "gnnaccel layer": lambda: layer(data.x, data.graph),
               "pyg model": lambda: pyg_model(data.x, ei),
               "gnnaccel model": lambda: full_inference(model, data.graph, data.x, progress=False),
               "gnnaccel pruned 1/4": lambda: full_inference(pruned, data.graph, data.x, progress=False)}
        best = InterleavedBest(fns).run(args.rounds)
    print("best s: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()))
    print(f"layer: pyg/gnnaccel {best['pyg layer'] / best['gnnaccel layer']:.2f}x (target >= 2)")
    print(f"model: pyg/gnnaccel {best['pyg model'] / best['gnnaccel model']:.2f}x (target >= 2); "
          f"unpruned/pruned 1/4 {best['gnnaccel model'] / best['gnnaccel pruned 1/4']:.2f}x (target >= 3); "
          f"pyg/pruned {best['pyg model'] / best['gnnaccel pruned 1/4']:.2f}x")


if __name__ == "__main__":
    main()
