"""Cost and accuracy of the default selection (``method="auto"``) against the LASSO (``method="lasso"``).

For each dataset: train a 2-layer GraphSAGE as ``benchmarks/accuracy.py`` does (hidden 256, BatchNorm; the
trained weights are cached in ``--cache``, so a re-run after a code change prunes the same model), then prune
it with both methods, interleaved round by round in one process (auto, lasso, auto, lasso, ...), and report
the best wall time of each, their ratio, and the relative test-logit error of both against the unpruned
model. ``--synthetic`` adds the speed benchmark's model (``bench_prune_speed.py``: 200k nodes, random
GraphSAGE 256 -> 512 -> 16, 20k calibration nodes; time only: its weights are random).

    PYTHONPATH=$PWD python benchmarks/bench_prune_default.py --datasets Cora CiteSeer Computers CS --synthetic
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import gnnaccel
from gnnaccel.datasets import load
from gnnaccel.inference import full_inference
from gnnaccel.pruning.report import logit_relative_error
from gnnaccel.train import train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import build  # noqa: E402


def trained_model(name: str, data, args):
    torch.manual_seed(args.seed)
    model = build(args.model, data, args.hidden)
    return load_or_train(model, os.path.join(args.cache, f"{name}_{args.model}_h{args.hidden}_s{args.seed}.pt"),
                         data, args.epochs)


def load_or_train(model, path: str, data, epochs: int):
    """``model`` with the weights saved at ``path``, or trained on ``data`` (Adam lr 0.01, weight decay 5e-4,
    patience 30) and saved there. Returns the model in eval mode."""
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=epochs, lr=0.01,
              weight_decay=5e-4, patience=30)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def interleaved(fns: dict, rounds: int) -> dict:
    """Best wall time of each callable over ``rounds`` interleaved rounds, and its last result."""
    best = {k: float("inf") for k in fns}
    out = {}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            out[key] = fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", default=["Cora", "CiteSeer", "Computers", "CS"])
    p.add_argument("--synthetic", action="store_true", help="also the speed benchmark's 200k-node model")
    p.add_argument("--schemes", nargs="+", default=["full", "batched"])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.25])
    p.add_argument("--model", default="GraphSAGE", choices=["GraphSAGE", "SAINTGraphSAGE"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", type=int, default=8000, help="max calibration nodes (non-test nodes)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batched-max-features", type=int, default=2000)
    p.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "models"))
    args = p.parse_args(argv)
    print("| dataset | scheme | keep | auto s | lasso s | ratio | auto logit err | lasso logit err | auto layers |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [(name, None) for name in args.datasets] + ([("synthetic", None)] if args.synthetic else [])
    for name, _ in cases:
        if name == "synthetic":
            from conftest import synthetic_graph
            from gnnaccel.models import GraphSAGE

            data = synthetic_graph(200_000, 20, 256)
            torch.manual_seed(0)
            model = GraphSAGE(256, 512, 16, num_layers=2).eval()
            calib, mask = 20_000, None
        else:
            data = load(name)
            model = trained_model(name, data, args)
            gen = torch.Generator().manual_seed(0)
            candidates = torch.nonzero(~data.test_mask).flatten()
            calib = candidates[torch.randperm(candidates.numel(), generator=gen)[:args.calib]].sort().values
            mask = data.test_mask
        base = full_inference(model, data.graph, data.x, progress=False) if mask is not None else None
        for scheme in args.schemes:
            if scheme == "batched" and data.x.shape[1] > args.batched_max_features:
                continue
            for keep in args.ratios:
                fns = {m: (lambda m=m: gnnaccel.prune(model, data.graph, data.x, keep=keep, scheme=scheme,
                                                      method=m, calib_nodes=calib, progress=False))
                       for m in ("auto", "lasso")}
                best, pruned = interleaved(fns, args.rounds)
                errs = {}
                for m, pm in pruned.items():
                    if base is None:
                        errs[m] = float("nan")
                    else:
                        out = full_inference(pm, data.graph, data.x, progress=False)
                        errs[m] = logit_relative_error(base[mask], out[mask])
                layers = "/".join(str(layer.get("method", "-")) for layer in pruned["auto"].pruning_info["layers"])
                print(f"| {name} | {scheme} | {keep:g} | {best['auto']:.2f} | {best['lasso']:.2f} | "
                      f"{best['auto'] / best['lasso']:.2f}x | {errs['auto']:.4f} | {errs['lasso']:.4f} | {layers} |",
                      flush=True)


if __name__ == "__main__":
    main()
