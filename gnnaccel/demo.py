"""The end-to-end demo (``python -m gnnaccel demo``).

The demo walks through what gnnaccel does on a synthetic power-law graph, each step side by side with the
baseline in the same process (ratios are the figures that matter on a shared machine):

1. sparse aggregation vs ``torch.sparse.mm``;
2. a trained 2-layer GraphSAGE: full-graph inference vs PyG (when installed);
3. channel pruning at keep 1/2, 1/4, 1/8: test F1-micro, logit error and full-inference speedup;
4. real-time batched inference: p50/p99 latency per batch without/with pruning and the feature cache.

Every timing is warmed up, repeated and interleaved with its baseline (:mod:`gnnaccel.latency`); a speedup is
the median of the per-round ratios, printed with its interquartile range ``[p25-p75]``. The trained model's
BatchNorm is folded into its weights once, before any timing, so the unpruned baseline and the pruned models
run the same kind of layers.
"""
from __future__ import annotations

import copy
import time
from typing import Dict, Optional, Sequence

import torch

from .latency import compare_latency, format_speedup, interleaved_times, speedup, spread


def _section(title: str) -> None:
    print(f"\n== {title}")


def _ms(times: torch.Tensor) -> str:
    s = spread(times * 1e3)
    return f"{s['median']:.1f} [{s['p25']:.1f}-{s['p75']:.1f}]"


def demo_aggregation(data, progress: bool, rounds: int = 15) -> Dict[str, dict]:
    """Section 1: ``Graph.aggregate`` vs ``torch.sparse.mm`` per reduction, interleaved. Returns per reduction
    the :func:`~gnnaccel.latency.speedup` of gnnaccel over sparse.mm."""
    _section(f"1. Sparse aggregation ({data.num_nodes:,} nodes, {data.graph.num_edges:,} edges, "
             f"{data.num_features} channels)")
    graph = data.graph.to(index_dtype=torch.int32)
    adj = data.graph.to_torch_sparse()
    fns = {}
    for reduce in ("sum", "mean", "max"):
        fns[("ours", reduce)] = lambda reduce=reduce: graph.aggregate(data.x, reduce)
        fns[("ref", reduce)] = lambda reduce=reduce: torch.sparse.mm(adj, data.x, reduce)
    times = interleaved_times(fns, rounds=rounds, progress=progress)
    print(f"{'reduce':>8} {'gnnaccel ms [IQR]':>20} {'sparse.mm ms [IQR]':>20} {'speedup [IQR]':>20}")
    result = {}
    for reduce in ("sum", "mean", "max"):
        ours, ref = times[("ours", reduce)], times[("ref", reduce)]
        result[reduce] = speedup(ref, ours)
        print(f"{reduce:>8} {_ms(ours):>20} {_ms(ref):>20} {format_speedup(result[reduce]):>20}")
    return result


def demo_full_inference(data, hidden: int, epochs: int, progress: bool, rounds: int = 10):
    """Section 2: train a 2-layer GraphSAGE with BatchNorm, fold the BatchNorm, and time full-graph inference
    against PyG's GraphSAGE carrying the same weights. Returns the folded model (eval mode)."""
    from .inference import full_inference
    from .models import GraphSAGE
    from .train import evaluate, train

    _section(f"2. Train a 2-layer GraphSAGE (hidden {hidden}, BatchNorm) and run full-graph inference")
    torch.manual_seed(0)
    model = GraphSAGE(data.num_features, hidden, data.num_classes, num_layers=2, norm="batchnorm")
    start = time.perf_counter()
    result = train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=epochs, lr=0.01,
                   patience=10)
    print(f"trained {len(result.history)} epochs in {time.perf_counter() - start:.1f} s (best validation "
          f"F1-micro {result.best_val:.4f} at epoch {result.best_epoch + 1}, those weights kept); "
          f"test F1-micro {evaluate(model, data.graph, data.x, data.y, data.test_mask):.4f}")
    model = copy.deepcopy(model).eval().fold_batchnorm()
    ours = lambda: full_inference(model, data.graph, data.x, progress=False)  # noqa: E731
    try:
        from torch_geometric.nn.models import GraphSAGE as PyGGraphSAGE
    except ImportError:
        times = interleaved_times({"ours": ours}, rounds=rounds, progress=progress)
        print(f"full inference (BatchNorm folded): gnnaccel {_ms(times['ours'])} ms "
              "(install torch_geometric to compare with PyG)")
        return model
    pyg = PyGGraphSAGE(data.num_features, hidden, 2, out_channels=data.num_classes).eval()
    # Same parameter names: the PyG model runs the same (folded) weights, and the outputs must agree.
    missing, unexpected = pyg.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        print(f"(PyG model keeps its own random weights: parameter names differ {missing[:2]} {unexpected[:2]})")
    adj_t = data.graph.to_torch_sparse()

    def ref():
        with torch.inference_mode():
            return pyg(data.x, adj_t)

    diff = float((ours() - ref()).abs().max())
    times = interleaved_times({"ours": ours, "pyg": ref}, rounds=rounds, progress=progress)
    print(f"full inference, same folded weights on both sides (max |difference| {diff:.1e}), ms [IQR]: "
          f"gnnaccel {_ms(times['ours'])}, PyG (sparse CSR) {_ms(times['pyg'])}: "
          f"{format_speedup(speedup(times['pyg'], times['ours']))}")
    return model


def demo_pruning(model, data, progress: bool, rounds: int = 10) -> Optional[list]:
    """Section 3: prune at keep 1/2, 1/4, 1/8 (scheme "full") and time full inference of each pruned model
    interleaved with the unpruned (folded) one. Returns the sweep's rows with ``speedup`` added."""
    from .inference import full_inference

    _section("3. Channel pruning (selection method 'auto' + least-squares refit, no retraining)")
    try:
        from .pruning.report import keep_ratio_sweep
    except ImportError:
        print("pruning is not available in this build")
        return None
    rows = keep_ratio_sweep(model, data, ratios=(1 / 2, 1 / 4, 1 / 8), scheme="full", repeats=1,
                            progress=progress)
    fns = {"unpruned": lambda: full_inference(model, data.graph, data.x, progress=False)}
    for i, r in enumerate(rows):
        fns[i] = lambda m=r["model"]: full_inference(m, data.graph, data.x, progress=False)
    times = interleaved_times(fns, rounds=rounds, progress=progress)
    print(f"unpruned test F1-micro {rows[0]['f1_unpruned']:.4f}; unpruned full inference {_ms(times['unpruned'])} ms")
    print(f"{'keep':>6} {'test F1':>8} {'logit rel. err':>15} {'prune s':>8} {'ms [IQR]':>20} "
          f"{'speedup [IQR]':>20}")
    for i, r in enumerate(rows):
        r["speedup"] = speedup(times["unpruned"], times[i])
        print(f"{r['keep']:>6.3f} {r['f1']:8.4f} {r['logit_rel_error']:15.4f} {r['prune_seconds']:8.2f} "
              f"{_ms(times[i]):>20} {format_speedup(r['speedup']):>20}")
    return rows


def demo_batched(model, data, progress: bool) -> None:
    """Section 4: :func:`demo_latency_table` with batches of 512 targets."""
    _section("4. Real-time batched inference (fanouts [32, all]): latency per batch of 512 targets")
    demo_latency_table(model, data, batch_size=512, progress=progress)


def demo_latency_table(model, data, batch_size: int = 512, num_batches: int = 40, keep: float = 0.25,
                       fanouts: Sequence[Optional[int]] = (32, None), progress: bool = False) -> Dict[str, dict]:
    """The demo's table: p50 [IQR] / p99 per batch for unpruned / pruned (``gnnaccel.prune(keep,
    scheme="batched")``, when available) x without / with a cache, and the per-batch speedups over unpruned
    without cache. BatchNorm is folded on a copy of ``model`` first, so both sides run the same layers.

    Args:
        model: a trained gnnaccel model (eval mode is used; ``model`` itself is not changed).
        data: a GraphData (graph, x).
        batch_size, num_batches: targets per batch and timed batches.
        keep: keep ratio of the pruned model.
        fanouts: per-layer fanouts of the engines.
        progress: tqdm bars.

    Returns:
        :func:`~gnnaccel.latency.compare_latency`'s result (baseline ``"unpruned"``).
    """
    from .batched import BatchedEngine
    from .cache import FeatureCache

    graph, x = data.graph, data.x
    folded = copy.deepcopy(model).eval()
    if hasattr(folded, "fold_batchnorm"):
        folded.fold_batchnorm()
    models = {"unpruned": folded}
    try:
        from .pruning.prune import prune
    except ImportError:
        prune = None
    if prune is not None:
        models["pruned"] = prune(folded, graph, x, keep=keep, scheme="batched", progress=progress)
    engines = {}
    for name, m in models.items():
        engines[name] = BatchedEngine(m, graph, x, fanouts=list(fanouts))
        dims = [conv.out_channels for conv in m.convs[:-1]]
        engines[name + "+cache"] = BatchedEngine(m, graph, x, fanouts=list(fanouts),
                                                 cache=FeatureCache(graph.num_nodes, dims, dtype=x.dtype))
    result = compare_latency(engines, num_batches, batch_size, baseline="unpruned", progress=progress)
    print(f"{'config':>16} {'p50 ms [IQR]':>22} {'p99 ms':>8} {'speedup [IQR]':>20} {'hit rate':>9} "
          f"{'support reduction':>18}")
    for name, r in result.items():
        hit = f"{r['hit_rate']:9.2f}" if "hit_rate" in r else f"{'-':>9}"
        red = f"{r['support_reduction']:17.1f}x" if "support_reduction" in r else f"{'-':>18}"
        p50 = f"{r['p50']:.2f} [{r['p25']:.2f}-{r['p75']:.2f}]"
        print(f"{name:>16} {p50:>22} {r['p99']:8.2f} {format_speedup(r['speedup']):>20} {hit} {red}")
    if prune is None:
        print("(pruning is not available in this build: pruned rows omitted)")
    print(f"BatchNorm folded on every side; cache: streaming, warmed by {graph.num_nodes // 4} random targets; "
          f"every engine warmed by 2 batches; {num_batches} timed batches of {batch_size}, configurations "
          f"interleaved per batch; speedup = median of per-batch ratios to 'unpruned'")
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
