"""Command line: ``python -m gnnaccel demo`` (and ``gnnaccel demo`` once installed).

The demo walks through what gnnaccel does on a synthetic power-law graph, each step side by side with the
baseline in the same process (ratios are the figures that matter on a shared machine):

1. sparse aggregation vs ``torch.sparse.mm``;
2. a trained 2-layer GraphSAGE: full-graph inference vs PyG (when installed);
3. channel pruning at keep 1/2, 1/4, 1/8: test F1-micro, logit error and full-inference speedup;
4. real-time batched inference: p50/p99 latency per batch without/with pruning and the feature cache.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch


def _best_time(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _section(title: str) -> None:
    print(f"\n== {title}")


def demo_aggregation(data, progress: bool) -> None:
    from tqdm.auto import tqdm

    _section(f"1. Sparse aggregation ({data.num_nodes:,} nodes, {data.graph.num_edges:,} edges, "
             f"{data.num_features} channels)")
    graph = data.graph.to(index_dtype=torch.int32)
    adj = data.graph.to_torch_sparse()
    rows = []
    for reduce in tqdm(("sum", "mean", "max"), desc="aggregation", disable=not progress, leave=False):
        ours = _best_time(lambda: graph.aggregate(data.x, reduce))
        ref = _best_time(lambda: torch.sparse.mm(adj, data.x, reduce))
        rows.append((reduce, ours, ref))
    print(f"{'reduce':>8} {'gnnaccel ms':>12} {'sparse.mm ms':>13} {'speedup':>8}")
    for reduce, ours, ref in rows:
        print(f"{reduce:>8} {ours * 1e3:12.1f} {ref * 1e3:13.1f} {ref / ours:7.2f}x")


def demo_full_inference(data, hidden: int, epochs: int, progress: bool):
    from .inference import full_inference
    from .models import GraphSAGE
    from .train import evaluate, train

    _section(f"2. Train a 2-layer GraphSAGE (hidden {hidden}, BatchNorm) and run full-graph inference")
    torch.manual_seed(0)
    model = GraphSAGE(data.num_features, hidden, data.num_classes, num_layers=2, norm="batchnorm")
    start = time.perf_counter()
    result = train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=epochs, lr=0.01,
                   patience=10)
    print(f"trained {result.best_epoch + 1} epochs in {time.perf_counter() - start:.1f} s; "
          f"test F1-micro {evaluate(model, data.graph, data.x, data.y, data.test_mask):.4f}")
    ours = _best_time(lambda: full_inference(model, data.graph, data.x, progress=False))
    line = f"full inference: gnnaccel {ours * 1e3:.0f} ms"
    try:
        from torch_geometric.nn.models import GraphSAGE as PyGGraphSAGE
    except ImportError:
        print(line + " (install torch_geometric to compare with PyG)")
        return model
    pyg = PyGGraphSAGE(data.num_features, hidden, 2, out_channels=data.num_classes).eval()
    adj_t = data.graph.to_torch_sparse()
    with torch.inference_mode():
        ref = _best_time(lambda: pyg(data.x, adj_t))
    print(f"{line}, PyG (same architecture, sparse CSR) {ref * 1e3:.0f} ms: {ref / ours:.2f}x")
    return model


def demo_pruning(model, data, progress: bool) -> None:
    _section("3. Channel pruning (selection method 'auto' + least-squares refit, no retraining)")
    try:
        from .pruning.report import keep_ratio_sweep
    except ImportError:
        print("pruning is not available in this build")
        return
    rows = keep_ratio_sweep(model, data, ratios=(1 / 2, 1 / 4, 1 / 8), scheme="full", progress=progress)
    print(f"unpruned test F1-micro {rows[0]['f1_unpruned']:.4f}")
    print(f"{'keep':>6} {'test F1':>8} {'logit rel. err':>15} {'prune s':>8} {'full-inference speedup':>23}")
    for r in rows:
        print(f"{r['keep']:>6.3f} {r['f1']:8.4f} {r['logit_rel_error']:15.4f} {r.get('prune_seconds', float('nan')):8.2f} "
              f"{r['full_inference_speedup']:22.2f}x")


def demo_batched(model, data, progress: bool) -> None:
    _section("4. Real-time batched inference (fanouts [32, all]): latency per batch of 512 targets")
    try:
        from .batched import demo_latency_table
    except ImportError:
        print("the batched engine is not available in this build")
        return
    demo_latency_table(model, data, batch_size=512, progress=progress)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gnnaccel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on a synthetic graph")
    demo.add_argument("--nodes", type=int, default=30_000)
    demo.add_argument("--degree", type=float, default=20.0)
    demo.add_argument("--features", type=int, default=128)
    demo.add_argument("--classes", type=int, default=8)
    demo.add_argument("--hidden", type=int, default=256)
    demo.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "demo":
        warnings.filterwarnings("ignore", message="Sparse")
        from .datasets import synthetic

        progress = sys.stderr.isatty()
        torch.manual_seed(0)
        data = synthetic(args.nodes, args.degree, args.features, num_classes=args.classes, seed=0,
                         feature_signal=0.1)
        demo_aggregation(data, progress)
        model = demo_full_inference(data, args.hidden, args.epochs, progress)
        demo_pruning(model, data, progress)
        demo_batched(model, data, progress)


if __name__ == "__main__":
    main()
