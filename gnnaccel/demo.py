"""The end-to-end demo (``python -m gnnaccel demo``).

The demo walks through what gnnaccel does on a synthetic power-law graph, each step side by side with the
baseline in the same process (ratios are the figures that matter on a shared machine):

1. sparse aggregation vs ``torch.sparse.mm``;
2. a trained 2-layer GraphSAGE: full-graph inference vs PyG (when installed);
3. channel pruning at keep 1/2, 1/4, 1/8: test F1-micro, logit error and full-inference speedup;
4. real-time batched inference: p50/p99 latency per batch without/with pruning and the feature cache.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

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
        from .batched import BatchedEngine
    except ImportError:
        print("the batched engine is not available in this build")
        return
    demo_latency_table(model, data, batch_size=512, progress=progress)


def demo_latency_table(model, data, batch_size: int = 512, num_batches: int = 20, keep: float = 0.25,
                       fanouts: Sequence[Optional[int]] = (32, None), progress: bool = False) -> Dict[str, dict]:
    """The demo's table: p50/p99 per batch for unpruned / pruned (``gnnaccel.prune(keep, scheme="batched")``,
    when available) x without / with a cache, and the speedups over unpruned without cache. Prints and returns
    :func:`compare_latency`'s result."""
    from .batched import BatchedEngine
    from .cache import FeatureCache
    from .latency import compare_latency

    graph, x = data.graph, data.x
    models = {"unpruned": model}
    try:
        from .pruning.prune import prune
    except ImportError:
        prune = None
    if prune is not None:
        models["pruned"] = prune(model, graph, x, keep=keep, scheme="batched", progress=progress)
    engines = {}
    for name, m in models.items():
        engines[name] = BatchedEngine(m, graph, x, fanouts=list(fanouts))
        dims = [conv.out_channels for conv in m.convs[:-1]]
        engines[name + "+cache"] = BatchedEngine(m, graph, x, fanouts=list(fanouts),
                                                 cache=FeatureCache(graph.num_nodes, dims, dtype=x.dtype))
    result = compare_latency(engines, num_batches, batch_size, progress=progress)
    base = result["unpruned"]
    print(f"{'config':>16} {'p50 ms':>8} {'p99 ms':>8} {'speedup p50':>12} {'hit rate':>9} {'support reduction':>18}")
    for name, r in result.items():
        hit = f"{r['hit_rate']:9.2f}" if "hit_rate" in r else f"{'-':>9}"
        red = f"{r['support_reduction']:17.1f}x" if "support_reduction" in r else f"{'-':>18}"
        print(f"{name:>16} {r['p50']:8.2f} {r['p99']:8.2f} {base['p50'] / r['p50']:11.2f}x {hit} {red}")
    if prune is None:
        print("(pruning is not available in this build: pruned rows omitted)")
    print(f"cache: streaming, warmed by {graph.num_nodes // 4} random targets; {num_batches} timed batches of "
          f"{batch_size}, configurations interleaved per batch")
    return result


def run_demo(nodes: int = 30_000, degree: float = 20.0, features: int = 128, classes: int = 8, hidden: int = 256,
             epochs: int = 30, progress: bool = False) -> None:
    """Run the whole demo on a synthetic power-law graph and print each step's table.

    Args:
        nodes, degree, features, classes: the synthetic graph (``gnnaccel.datasets.synthetic``).
        hidden, epochs: the GraphSAGE trained for the demo.
        progress: show tqdm progress bars.
    """
    from .datasets import synthetic

    torch.manual_seed(0)
    data = synthetic(nodes, degree, features, num_classes=classes, seed=0, feature_signal=0.1)
    demo_aggregation(data, progress)
    model = demo_full_inference(data, hidden, epochs, progress)
    demo_pruning(model, data, progress)
    demo_batched(model, data, progress)
