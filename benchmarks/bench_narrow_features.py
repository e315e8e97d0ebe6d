"""Pruning a model whose raw features are narrow (Tolokers: 10 features), scheme batched: the default floor on
the kept channels (``min_kept``, :data:`gnnaccel.pruning.prune.MIN_KEPT_CHANNELS`) against the plain budget
(``min_kept=1``: round(keep * 10) neighbour features, i.e. 2 at keep 1/4 and 1 at keep 1/8).

Tolokers (``../shared/data/heterophilous/tolokers/raw/tolokers.npz``, the HeterophilousGraphDataset file;
11,758 nodes, 519,000 undirected edges, binary labels), its first split; a 2-layer GraphSAGE as
``benchmarks/accuracy.py`` builds it (hidden 256, BatchNorm), trained per seed; calibration on up to 8000
non-test nodes. Reports test F1-micro and ROC-AUC (positive-class probability) of the unpruned and pruned
models, and the relative test-logit error.

    PYTHONPATH=$PWD python benchmarks/bench_narrow_features.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

import gnnaccel
from gnnaccel.datasets.base import GraphData
from gnnaccel.datasets.real import default_root
from gnnaccel.graph import Graph
from gnnaccel.inference import full_inference
from gnnaccel.pruning.report import logit_relative_error
from gnnaccel.train import f1_micro, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import build  # noqa: E402


def load_tolokers(split: int = 0) -> GraphData:
    path = default_root() / "heterophilous" / "tolokers" / "raw" / "tolokers.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Tolokers not found at {path} (set GNNACCEL_DATA to the folder holding "
                                "'heterophilous/')")
    z = np.load(path)
    x = torch.from_numpy(z["node_features"]).float().contiguous()
    y = torch.from_numpy(z["node_labels"]).long()
    e = torch.from_numpy(z["edges"]).long().T
    e = torch.unique(torch.cat([e, e.flip(0)], 1), dim=1)  # undirected, as PyG's loader makes it
    n = x.shape[0]
    masks = [torch.from_numpy(z[f"{m}_masks"][split]).bool() for m in ("train", "val", "test")]
    return GraphData(Graph.from_edge_index(e, n), x, y, *masks, 2, name="Tolokers")


def roc_auc(logits: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y.numpy(), torch.softmax(logits.double(), 1)[:, 1].numpy()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.125])
    p.add_argument("--methods", nargs="+", default=["auto"])
    p.add_argument("--min-kept", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--calib", type=int, default=8000)
    args = p.parse_args(argv)
    data = load_tolokers()
    gen = torch.Generator().manual_seed(0)
    candidates = torch.nonzero(~data.test_mask).flatten()
    calib = candidates[torch.randperm(candidates.numel(), generator=gen)[:args.calib]].sort().values
    mask = data.test_mask
    print("| seed | keep | method | min_kept | neighbour features kept | F1 (unpruned) | F1 | ROC-AUC (unpruned) | "
          "ROC-AUC | AUC drop | logit err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = build("GraphSAGE", data, 256)
        train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=args.epochs, lr=0.01,
              weight_decay=5e-4, patience=30)
        model.eval()
        base = full_inference(model, data.graph, data.x, progress=False)[mask]
        f1_0, auc_0 = f1_micro(base, data.y[mask]), roc_auc(base, data.y[mask])
        for keep in args.ratios:
            for method in args.methods:
                for mk in args.min_kept:
                    pruned = gnnaccel.prune(model, data.graph, data.x, keep=keep, scheme="batched", method=method,
                                            calib_nodes=calib, progress=False, min_kept=mk)
                    out = full_inference(pruned, data.graph, data.x, progress=False)[mask]
                    auc = roc_auc(out, data.y[mask])
                    kept = pruned.pruning_info["layers"][0]["kept"]["neigh"].numel()
                    print(f"| {seed} | {keep:g} | {method} | {mk} | {kept} | {f1_0:.4f} | "
                          f"{f1_micro(out, data.y[mask]):.4f} | {auc_0:.4f} | {auc:.4f} | {auc_0 - auc:+.4f} | "
                          f"{logit_relative_error(base, out):.4f} |", flush=True)


if __name__ == "__main__":
    main()
