"""Accuracy of pruning GAT models on the development datasets (issue 17 item 3).

For each dataset and GAT width: train a 2-layer gnnaccel GAT (PyG's models.GAT layout: hidden = heads x
per-head channels concatenated, the output layer averages the heads; dropout 0.5, also on the attention),
then prune without retraining at keep 1/2, 1/4, 1/8 with the default selection ("auto") and with random and
magnitude selection, all with the same ridge least-squares refit, in both schemes; report test F1-micro, its
drop, and the relative error of the test logits against the unpruned model. Calibration: up to --calib random
non-test nodes (no labels). Writes benchmarks/out/gat_accuracy_<datasets>.{md,csv}, prints the markdown table.

    OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/gat_accuracy.py [--datasets Cora CiteSeer Computers CS]
        [--widths 8x8 8x32] [--schemes full batched] [--epochs 150]
"""
from __future__ import annotations

import argparse
import csv
import os
import time

import torch

from gnnaccel.datasets import load
from gnnaccel.inference import full_inference
from gnnaccel.models import GAT
from gnnaccel.pruning import prune
from gnnaccel.pruning.report import logit_relative_error
from gnnaccel.train import f1_micro, train

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
RATIOS = (1 / 2, 1 / 4, 1 / 8)
METHODS = ("auto", "random", "magnitude")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer", "Computers", "CS"])
    ap.add_argument("--widths", nargs="+", default=["8x8", "8x32"], help="heads x per-head channels")
    ap.add_argument("--schemes", nargs="+", default=["full", "batched"])
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--calib", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for name in args.datasets:
        data = load(name)
        gen = torch.Generator().manual_seed(0)
        candidates = torch.nonzero(~data.test_mask).flatten()
        calib = candidates[torch.randperm(candidates.numel(), generator=gen)[:args.calib]].sort().values
        test = data.test_mask
        for width in args.widths:
            heads, per_head = (int(v) for v in width.split("x"))
            torch.manual_seed(args.seed)
            model = GAT(data.x.shape[1], heads * per_head, data.num_classes, num_layers=2, heads=heads, dropout=0.5)
            t0 = time.perf_counter()
            train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=args.epochs, lr=0.005,
                  weight_decay=5e-4, patience=30)
            train_s = time.perf_counter() - t0
            with torch.inference_mode():
                ref = full_inference(model, data.graph, data.x, progress=False)
            base = f1_micro(ref[test], data.y[test])
            print(f"{name} GAT {width}: test F1 {base:.4f} (trained in {train_s:.0f} s)", flush=True)
            for scheme in args.schemes:
                for keep in RATIOS:
                    for method in METHODS:
                        t0 = time.perf_counter()
                        pruned = prune(model, data.graph, data.x, keep=keep, scheme=scheme, method=method,
                                       calib_nodes=calib, progress=False, seed=args.seed)
                        prune_s = time.perf_counter() - t0
                        with torch.inference_mode():
                            out = full_inference(pruned, data.graph, data.x, progress=False)
                        f1 = f1_micro(out[test], data.y[test])
                        err = logit_relative_error(ref[test], out[test])
                        picked = [layer.get("method") for layer in pruned.pruning_info["layers"]]
                        rows.append(dict(dataset=name, width=width, scheme=scheme, keep=f"1/{round(1 / keep)}",
                                         method=method, selected=",".join(str(p) for p in picked),
                                         f1_unpruned=round(base, 4), f1=round(f1, 4), drop=round(base - f1, 4),
                                         logit_err=round(err, 4), prune_s=round(prune_s, 1)))
                        print("  " + " ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    keys = list(rows[0])
    tag = "_".join(args.datasets)
    with open(os.path.join(OUT, f"gat_accuracy_{tag}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    with open(os.path.join(OUT, f"gat_accuracy_{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
