"""Time split of ``BatchedEngine.predict`` in issue 16's batched scenario (speed_protocol.HitRateScenario: 200k
nodes / 5M edges / 512 features, GraphSAGE hidden 128 pruned to keep 1/4 in scheme "batched", fanouts [32, all],
fresh targets, a cache at a given hit rate), one thread, by wall-clock timers wrapped around the engine's pieces.

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/batched_split.py [batch=512] [rate=0.5] [rounds=16]

Runs against older trees too (measure a tree by putting it first on PYTHONPATH, this file's directory after it):
pieces a tree lacks are simply not reported. Nested pieces (the layer ops inside ``layer_block``) are subtracted
from their parent; "rest of predict" is everything not wrapped (masks, nonzero, index copies, Python).
"""
import collections
import functools
import sys
import time

import torch

import gnnaccel.batched as batched
import gnnaccel.cache as cache
import gnnaccel.growth as growth
import gnnaccel.models as models
import gnnaccel.nn.conv as conv
from speed_protocol import HitRateScenario

TIMES = collections.defaultdict(float)
SIZES = collections.defaultdict(int)


def _wrap(owner, name: str, label: str) -> None:
    f = getattr(owner, name, None)
    if f is None:
        return

    @functools.wraps(f)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
    setattr(owner, name, timed)


def _wrap_expand() -> None:
    expand = growth.GrowingCSR.expand

    def timed(self, seeds, fanout, random_seed, skip=None):
        start = time.perf_counter()
        hop = expand(self, seeds, fanout, random_seed, skip)
        label = "expand_hop, last layer (targets, all neighbours)" if fanout < 0 else \
            "expand_hop, layer 0 (S1 rows, sampled)"
        TIMES[label] += time.perf_counter() - start
        SIZES[label + ": seeds"] += seeds.numel()
        SIZES[label + ": skipped (cached)"] += 0 if skip is None else int(skip.sum())
        SIZES[label + ": edges"] += hop.col.numel()
        SIZES[label + ": frontier"] += hop.frontier.numel()
        return hop
    growth.GrowingCSR.expand = timed


LAYER_OPS = {"_fused": "layer 0/1 aggregate-first (sage_fused: gather input rows + GEMM)",
             "_self_term": "layer self branch (pruned_linear: gather full-width rows + GEMM)",
             "_finish_projected": "layer projected aggregation (sage_projected: gather plan rows)"}


def main(batch: int = 512, rate: float = 0.5, rounds: int = 16) -> None:
    torch.set_num_threads(1)
    _wrap_expand()  # before the engine binds its graph's methods
    _wrap(growth.GrowingCSR, "sources", "col[edge_ids] (layer-0 sources)")
    _wrap(cache.FeatureCache, "lookup", "cache lookup")
    _wrap(cache.FeatureCache, "insert", "cache insert")
    _wrap(batched.BatchedEngine, "_block", "blocks (_block)")
    _wrap(batched.BatchedEngine, "_record_support", "support statistics")
    for op, label in LAYER_OPS.items():
        _wrap(conv, op, label)
    _wrap(models.GraphSAGE, "layer_block", "layer_block")
    sc = HitRateScenario(rates=(rate,), base=())
    name = next(iter(sc.engines))
    engine = sc.engines[name]
    for r in range(rounds + 2):
        if r == 2:
            TIMES.clear()
            SIZES.clear()
            engine.cache.reset_stats()
            total = 0.0
        targets = sc.pool[sc.next_target: sc.next_target + batch]
        sc.next_target += batch
        start = time.perf_counter()
        engine.predict(targets)
        if r >= 2:
            total += time.perf_counter() - start
        sc.restore(name)
    nested = sum(TIMES.get(label, 0.0) for label in LAYER_OPS.values())
    TIMES["layer_block (norm, activation, root rows, Python)"] = TIMES.pop("layer_block", 0.0) - nested
    if "blocks (_block)" in TIMES:  # older trees read the layer-0 sources inside _block
        TIMES["blocks (_block)"] -= TIMES.get("col[edge_ids] (layer-0 sources)", 0.0)
    TIMES["rest of predict (masks, nonzero, index copies, Python)"] = total - sum(TIMES.values())
    print(f"{name}: batch {batch}, measured hit rate {engine.cache.stats()['hit_rate']:.3f}, "
          f"mean predict {total / rounds * 1e3:.2f} ms over {rounds} batches\n")
    print("| piece | ms per batch | share |\n|---|---:|---:|")
    for label, t in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {t / rounds * 1e3:.2f} | {100 * t / total:.0f}% |")
    print()
    for label, n in SIZES.items():
        print(f"{label}: {n / rounds:.0f} per batch")


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    main(int(args[0]) if args else 512, args[1] if len(args) > 1 else 0.5, int(args[2]) if len(args) > 2 else 16)
