"""Time of the batched scheme's first-layer LASSO selection on CiteSeer (3703 raw features -> 7406 branch
coordinates, the 3703 self-branch ones unpenalised): Schur elimination of the unpenalised block
(``select_channels`` default) vs carrying the block through every solve (``eliminate_unpenalized=False``).

    PYTHONPATH=$PWD python benchmarks/prune_schur_citeseer.py [--dataset CiteSeer] [--keep 0.25] [--full-limit 900]

Trains the GraphSAGE of benchmarks/accuracy.py (hidden 256, BatchNorm, seed 0), folds BatchNorm, builds layer
0's Gram (branch layout) from up to 8000 non-test calibration nodes, then runs both selections once each and
checks that they pick the same features. The full solve is abandoned after --full-limit seconds.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import torch

from gnnaccel.datasets import load
from gnnaccel.pruning import branch_penalty, gram_from_moments, layer_second_moment, select_channels
from gnnaccel.pruning.prune import _as_gnnaccel_model
from gnnaccel.train import train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from accuracy import build  # noqa: E402


class _Timeout(Exception):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="CiteSeer")
    ap.add_argument("--keep", type=float, default=0.25)
    ap.add_argument("--full-limit", type=int, default=900)
    args = ap.parse_args(argv)
    data = load(args.dataset)
    gen = torch.Generator().manual_seed(0)
    cand = torch.nonzero(~data.test_mask).flatten()
    calib = cand[torch.randperm(cand.numel(), generator=gen)[:8000]].sort().values
    torch.manual_seed(0)
    model = build("GraphSAGE", data, 256)
    train(model, data.graph, data.x, data.y, data.train_mask, data.val_mask, epochs=100, lr=0.01,
          weight_decay=5e-4, patience=30)
    model = _as_gnnaccel_model(model.eval())
    conv = model.convs[0]
    parts = conv.linear_parts()
    names = [b.name for b in parts.branches]
    c = parts.in_channels
    t0 = time.perf_counter()
    S = layer_second_moment(conv, data.graph, data.x, calib, progress=False)
    weights = [b.weight.detach().double() for b in parts.branches]
    G, q, y_sq = gram_from_moments(S, weights, parts.form, "branch", [b.cols for b in parts.branches])
    t_gram = time.perf_counter() - t0
    p = branch_penalty(c, len(names), (names.index("self"),))
    k = max(1, round(args.keep * c))
    dead = int((G.diagonal() <= 0).sum())
    print(f"{args.dataset}: c = {c}, {G.shape[0]} coordinates ({int((p == 0).sum())} unpenalised, {dead} dead), "
          f"k = {k}; S + Gram {t_gram:.1f} s", flush=True)
    t0 = time.perf_counter()
    sel_r, info_r = select_channels(G, q, k, penalty=p, y_sq=y_sq, return_info=True)
    t_r = time.perf_counter() - t0
    print(f"schur-reduced: {t_r:.1f} s (reduction {info_r['reduce_s']:.1f} s via {info_r['reduce_factor']}), "
          f"{info_r['solves']} solves, {info_r['sweeps']} sweeps, "
          f"lam {info_r['lam']:.4g}, nnz {info_r['nnz']}", flush=True)

    def _alarm(*_):
        raise _Timeout

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.full_limit)
    t0 = time.perf_counter()
    try:
        sel_f, info_f = select_channels(G, q, k, penalty=p, y_sq=y_sq, return_info=True,
                                        eliminate_unpenalized=False)
    except _Timeout:
        print(f"full (unpenalised block carried): not finished after {args.full_limit} s "
              f"(speedup > {args.full_limit / t_r:.0f}x)")
        return 0
    finally:
        signal.alarm(0)
    t_f = time.perf_counter() - t0
    same = torch.equal(sel_r, sel_f)
    overlap = len(set(sel_r.tolist()) & set(sel_f.tolist())) / k
    print(f"full (unpenalised block carried): {t_f:.1f} s, {info_f['solves']} solves, {info_f['sweeps']} sweeps, "
          f"lam {info_f['lam']:.4g}; speedup {t_f / t_r:.1f}x; same selection: {same} (overlap {overlap:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
