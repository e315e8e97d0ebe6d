"""Prune to a target: the per-layer budget ``gnnaccel.prune(..., target_speedup=s)`` chooses against one keep
ratio for all layers at no higher predicted cost, and the measured full-inference speedup against the target.

For each dataset: a 3-layer GraphSAGE (hidden 256; trained once, weights cached in ``--cache``), pruned with
``target_speedup=s`` for each ``s`` in ``--targets``; the uniform baseline is the largest single keep ratio of
the hidden layers (any kept count, same selection and refit) whose predicted cost is at most the target cost,
and the per-layer budget is allocated once more at exactly the uniform keep's predicted cost ("per-layer at
uniform's cost": never predicted slower than the uniform keep), the equal-cost comparison. Logit error:
relative Frobenius error of the logits against the unpruned model on the calibration nodes (every node) and on
the test nodes. Speed: ``full_inference`` of the unpruned and every pruned model in ``--rounds`` interleaved rounds
(``gnnaccel.latency.interleaved_times``), median per-round ratio [IQR].

    GNNACCEL_DATA=/work/shared/data OMP_NUM_THREADS=1 PYTHONPATH=$PWD \\
        python benchmarks/bench_prune_target.py --datasets Cora CiteSeer Computers CS --targets 2 4
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
from gnnaccel.latency import format_speedup, interleaved_times, speedup
from gnnaccel.models import GraphSAGE
from gnnaccel.pruning import target as T
from gnnaccel.pruning.prune import MIN_KEPT_CHANNELS, _as_gnnaccel_model
from gnnaccel.pruning.report import logit_relative_error
from gnnaccel.train import f1_micro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prune_default import load_or_train  # noqa: E402


def trained_model(name: str, data, args):
    torch.manual_seed(args.seed)
    model = GraphSAGE(data.x.shape[1], args.hidden, data.num_classes, num_layers=args.layers, norm="batchnorm",
                      dropout=0.5)
    path = os.path.join(args.cache, f"{name}_SAGE{args.layers}_h{args.hidden}_s{args.seed}.pt")
    return load_or_train(model, path, data, args.epochs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", default=["Cora", "CiteSeer", "Computers", "CS"])
    p.add_argument("--targets", nargs="*", type=float, default=[2.0, 4.0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "models"))
    args = p.parse_args(argv)
    print(f"threads={torch.get_num_threads()}  machine coefficients: {T.calibrate_machine()}")
    for name in args.datasets:
        data = load(name)
        model = trained_model(name, data, args)
        g, x = data.graph, data.x
        with torch.no_grad():
            base = full_inference(model, g, x, progress=False)
        test = data.test_mask
        f1_base = f1_micro(base[test], data.y[test])
        # the cost model prune_to_target uses, for the uniform baseline
        folded = _as_gnnaccel_model(model)
        shapes = T.layer_shapes(folded, g, x.dtype)
        machine = T.calibrate_machine(x.dtype)
        candidates = T.candidate_counts(shapes, "full", MIN_KEPT_CHANNELS)
        base_seconds = T.predicted_seconds(shapes, T.kept_widths(shapes, [c[0] for c in candidates], "full"), machine)
        ratios = lambda a: [k / sh.in_channels for k, sh in zip(a.ks, shapes)]  # noqa: E731
        print(f"\n## {name}: n={g.num_nodes} E={g.num_edges} F={x.shape[1]} classes={data.num_classes} "
              f"test F1 {f1_base:.4f}; predicted unpruned {base_seconds * 1e3:.1f} ms")
        print("| target | budget | keep per layer | predicted speedup | logit err (calib) | logit err (test) "
              "| test F1 | prune s |")
        print("|---|---|---|---|---|---|---|---|")
        timed = {"unpruned": model}
        for s in args.targets:
            t0 = time.perf_counter()
            chosen = gnnaccel.prune(model, g, x, target_speedup=s, progress=False)
            t_prune = time.perf_counter() - t0
            info = chosen.pruning_info["target"]
            uni = T.uniform_allocation(shapes, candidates, machine, base_seconds / s, "full")
            uniform = gnnaccel.prune(model, g, x, keep=ratios(uni), min_kept=1, progress=False)
            # the per-layer budget asked for exactly the uniform keep's predicted speedup: equal predicted cost
            same_model = gnnaccel.prune(model, g, x, target_speedup=base_seconds / uni.seconds, progress=False)
            same = same_model.pruning_info["target"]
            for label, m, keeps, pred in (("per-layer", chosen, info["keep_per_layer"], info["predicted_speedup"]),
                                          ("uniform", uniform, ratios(uni), base_seconds / uni.seconds),
                                          ("per-layer at uniform's cost", same_model, same["keep_per_layer"],
                                           same["predicted_speedup"])):
                with torch.no_grad():
                    out = full_inference(m, g, x, progress=False)
                print(f"| {s:g}x | {label} | {[round(k, 4) for k in keeps]} | {pred:.2f}x | "
                      f"{logit_relative_error(base, out):.4f} | {logit_relative_error(base[test], out[test]):.4f} | "
                      f"{f1_micro(out[test], data.y[test]):.4f} | "
                      f"{f'{t_prune:.1f}' if label == 'per-layer' else '-'} |")
            timed[f"target {s:g}x"] = chosen
        times = interleaved_times({k: (lambda m=m: full_inference(m, g, x, progress=False)) for k, m in timed.items()},
                                  rounds=args.rounds)
        for s in args.targets:
            sp = speedup(times["unpruned"], times[f"target {s:g}x"])
            verdict = "met" if abs(sp["median"] / s - 1) <= 0.15 else "MISSED"
            print(f"measured speedup, target {s:g}x: {format_speedup(sp)} ({sp['median'] / s - 1:+.1%} of the "
                  f"target: {verdict} the 15% band)")


if __name__ == "__main__":
    main()
