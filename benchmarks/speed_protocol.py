"""CPU speed check of issue 12 (full inference vs PyG, pruned vs unpruned, batched p50), ratios of interleaved rounds,
and the batched engine at controlled cache hit rates with fresh targets (issue 16).

Usage (results: RESULTS.md), from the root of the tree to measure (this script also runs against older trees):
    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py            # both parts
    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py batched 40  # batched p50s as JSON
    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py hits       # hit-rate table
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402

import gnnaccel  # noqa: E402
from gnnaccel.batched import BatchedEngine  # noqa: E402
from gnnaccel.inference import full_inference  # noqa: E402
from conftest import InterleavedBest, synthetic_graph  # noqa: E402


def full(rounds: int = 7) -> None:
    """Full inference: 100k nodes, 2M edges, f128 h256 out16 (the RESULTS config, fewer rounds)."""
    import torch_geometric.nn as pyg_nn

    torch.manual_seed(0)
    data = synthetic_graph(100_000, 20, 128)
    pyg = pyg_nn.models.GraphSAGE(128, 256, 2, out_channels=16).eval()
    ours = gnnaccel.from_pyg(pyg)
    pruned = gnnaccel.prune(ours, data.graph, data.x, keep=0.25, scheme="full", method="lasso", progress=False,
                            calib_nodes=5000)
    adj_t = data.graph.to_torch_sparse()
    with torch.inference_mode():
        fns = {"gnnaccel": lambda: full_inference(ours, data.graph, data.x, progress=False),
               "pruned": lambda: full_inference(pruned, data.graph, data.x, progress=False),
               "chunked": lambda: full_inference(ours, data.graph, data.x, progress=False, chunk_size=20000),
               "pyg-csr": lambda: pyg(data.x, adj_t)}
        best = InterleavedBest(fns).run(rounds)
    print(f"full: pyg-csr/gnnaccel {best['pyg-csr']/best['gnnaccel']:.2f}x  unpruned/pruned "
          f"{best['gnnaccel']/best['pruned']:.2f}x  chunked/unchunked {best['chunked']/best['gnnaccel']:.2f}x  "
          "(min s: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + ")")


def batched(rounds: int = 60) -> dict:
    """Batched p50 (ms): synthetic 50k nodes deg 25 f512, GraphSAGE hidden 256, fanouts (10, 25), batch 512;
    unpruned, pruned (keep 1/4, scheme batched), pruned + cache (warmed by 20 batches), exact; engines in
    shuffled order every round."""
    d2 = synthetic_graph(50_000, 25, 512)
    torch.manual_seed(0)
    m = gnnaccel.models.GraphSAGE(512, 256, d2.num_classes, 2).eval()
    pm = gnnaccel.prune(m, d2.graph, d2.x, keep=0.25, scheme="batched", method="lasso", progress=False,
                        calib_nodes=5000)
    engines = {"unpruned": BatchedEngine(m, d2.graph, d2.x, fanouts=[10, 25]),
               "pruned": BatchedEngine(pm, d2.graph, d2.x, fanouts=[10, 25]),
               "pruned+cache": BatchedEngine(pm, d2.graph, d2.x, fanouts=[10, 25], cache=True),
               "exact": BatchedEngine(m, d2.graph, d2.x)}
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        engines["pruned+cache"].predict(torch.randint(d2.graph.num_nodes, (512,), generator=gen))
    times = {k: [] for k in engines}
    for _ in range(rounds):
        t = torch.randint(d2.graph.num_nodes, (512,), generator=gen)
        for k in [list(engines)[i] for i in torch.randperm(len(engines), generator=gen).tolist()]:
            s = time.perf_counter()
            engines[k].predict(t)
            times[k].append(time.perf_counter() - s)
    return {k: float(torch.tensor(v).median()) * 1e3 for k, v in times.items()}


class HitRateScenario:
    """Issue 16's batched scenario: a Reddit-like synthetic graph (200k nodes, 5M edges, 512 features), 2-layer
    GraphSAGE hidden 128 (random weights: latency does not depend on their values), fanouts [32, all], targets
    drawn without replacement from a pool of 6% of the nodes that no cache ever holds (fresh targets, each asked
    once), and caches of layer-0 outputs warmed (``warm_cache``) on a random fraction of the other nodes.

    The pruned model keeps 1/4 in scheme "batched" (layer 0's neighbour branch 128 of 512 raw channels, its self
    branch all 512, hidden 32 of 128): ``bench_batched``'s first-k model of the same widths (same cost as LASSO-
    selected channels: the engine reads layer 0 through its table plan or a compact copy either way).

    Hit rate = the fraction of the supporting nodes (the rows of layer 0 that the targets' last layer reads: the
    targets and their neighbours) whose hidden features are cached, measured from the cache's hit/miss counters
    over the timed batches. Construction: the warm fraction of the non-pool nodes starts at
    ``rate / (1 - pool share)`` and is rescaled once by the rate measured on 4 probe batches of 512 (reserved
    pool nodes), since the targets themselves never hit. After each timed call a cache engine's cache is put
    back to its warm set (untimed), so every batch sees the constructed rate.
    """

    POOL = 0.06

    BASE = ("unpruned (raw rows)", "unpruned", "pruned")

    def __init__(self, num_nodes: int = 200_000, rates=(0.0, 0.5, 0.9), extra=(), base=BASE):
        """``extra``: (rate, dtype) pairs of further pruned+cache engines (e.g. ``(0.5, torch.bfloat16)``);
        ``base``: which engines without a cache to build (of :attr:`BASE`)."""
        import os

        os.environ["GNNACCEL_BENCH_FIRST_K"] = "1"
        from bench_batched import _pruned

        self.data = synthetic_graph(num_nodes, 25, 512)
        torch.manual_seed(0)
        model = gnnaccel.models.GraphSAGE(512, 128, self.data.num_classes, 2).eval()
        self.pruned = _pruned(model, self.data)[0]
        g, x = self.data.graph, self.data.x
        perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(0))
        pool = perm[: int(num_nodes * self.POOL)]
        self.probe, self.pool, self.others = pool[:2048], pool[2048:], perm[pool.numel():]
        fan = [32, None]
        make = {"unpruned (raw rows)": lambda: BatchedEngine(model, g, x, fanouts=fan, project_first=False),
                "unpruned": lambda: BatchedEngine(model, g, x, fanouts=fan),
                "pruned": lambda: BatchedEngine(self.pruned, g, x, fanouts=fan)}
        self.engines = {name: make[name]() for name in base}
        self.warm = {}
        for rate, dtype in [(r, None) for r in rates] + list(extra):
            name = f"pruned+cache {rate:.0%}" + ("" if dtype is None else f" {str(dtype)[6:]}")
            frac = min(1.0, rate / (1 - self.POOL))
            try:
                self._build(name, frac, dtype)
            except (RuntimeError, TypeError) as exc:  # e.g. no bfloat16 CPU kernels in this tree yet
                print(f"(skipped {name}: {exc})", file=sys.stderr)
                continue
            if rate > 0:
                measured = self._probe_rate(name)
                self._build(name, min(1.0, frac * rate / max(measured, 1e-9)), dtype)
        self.next_target = 0

    def _build(self, name: str, frac: float, dtype) -> None:
        from gnnaccel.cache import FeatureCache
        from gnnaccel.inference import warm_cache

        g, x = self.data.graph, self.data.x
        cache = FeatureCache(g.num_nodes, [self.pruned.convs[0].out_channels],
                             **({} if dtype is None else {"dtype": dtype}))
        nodes = self.others[: int(frac * self.others.numel())]
        if nodes.numel():
            warm_cache(cache, self.pruned, g, x, nodes=nodes)
        kw = {} if dtype is None else {"dtype": dtype}
        self.engines[name] = BatchedEngine(self.pruned, g, x, fanouts=[32, None], cache=cache, **kw)
        self.warm[name] = cache.cached_nodes(0)

    def _probe_rate(self, name: str) -> float:
        engine = self.engines[name]
        engine.cache.reset_stats()
        for batch in self.probe.view(4, -1):
            engine.predict(batch)
            self.restore(name)
        return engine.cache.stats()["hit_rate"]

    def restore(self, name: str) -> None:
        """Put a cache engine's cache back to its warm set (drop what the last call inserted)."""
        cache = self.engines[name].cache
        cached = cache.cached_nodes(0)
        extra = cached[~torch.isin(cached, self.warm[name])]
        if extra.numel():
            cache.invalidate(extra, layer=0)

    def run(self, batch: int, rounds: int, seed: int = 0) -> dict:
        """p50 ms per engine over ``rounds`` fresh batches (engines in shuffled order every round, after one
        untimed round) and the measured hit rate of every cache engine."""
        gen = torch.Generator().manual_seed(seed)
        times = {k: [] for k in self.engines}
        names = list(self.engines)
        for r in range(rounds + 1):
            if r == 1:
                for e in self.engines.values():
                    if e.cache is not None:
                        e.cache.reset_stats()
            if self.next_target + batch > self.pool.numel():
                raise ValueError("the pool of fresh targets is exhausted: fewer rounds")
            targets = self.pool[self.next_target: self.next_target + batch]
            self.next_target += batch
            for k in [names[i] for i in torch.randperm(len(names), generator=gen).tolist()]:
                s = time.perf_counter()
                self.engines[k].predict(targets)
                if r:
                    times[k].append(time.perf_counter() - s)
                if k in self.warm:
                    self.restore(k)
        t = {k: torch.tensor(v, dtype=torch.float64) for k, v in times.items()}
        out = {"p50_ms": {k: float(v.median()) * 1e3 for k, v in t.items()}, "hit_rate": {},
               # speedup of k over base: the median over rounds of the per-round ratio (same batch, same load)
               "ratio": {base: {k: float((t[base] / v).median()) for k, v in t.items()} for base in t}}
        for k, e in self.engines.items():
            if e.cache is not None:
                out["hit_rate"][k] = e.cache.stats()["hit_rate"]
        return out


def hits(rounds=None) -> None:
    """Markdown table of :class:`HitRateScenario` at batch 1, 16, 512: p50 ms, speedups over both unpruned
    engines (layer 0 on raw rows, as before the table plan; and the default engine) as the median of per-round
    ratios, measured hit rates."""
    import inspect

    extra = [(0.5, torch.bfloat16)] if "dtype" in inspect.signature(BatchedEngine).parameters else []
    sc = HitRateScenario(extra=extra)
    rounds = rounds or {1: 200, 16: 100, 512: 14}
    names = list(sc.engines)
    print("| batch | | " + " | ".join(names) + " |")
    print("|---:|---|" + "---:|" * len(names))
    for batch, n in rounds.items():
        r = sc.run(batch, n, seed=batch)
        p50 = r["p50_ms"]
        print(f"| {batch} | p50 ms | " + " | ".join(f"{p50[k]:.2f}" for k in names) + " |")
        for base in ("unpruned (raw rows)", "unpruned"):
            ratio = r["ratio"][base]
            print(f"| {batch} | speedup vs {base} | " + " | ".join(f"{ratio[k]:.2f}x" for k in names) + " |")
        print(f"| {batch} | hit rate | " + " | ".join(f"{r['hit_rate'][k]:.3f}" if k in r["hit_rate"] else "-"
                                                      for k in names) + " |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["hits"]:
        hits()
    elif sys.argv[1:2] == ["batched"]:
        print(json.dumps(batched(int(sys.argv[2]) if len(sys.argv) > 2 else 60)))
    else:
        full()
        p50 = batched()
        print("batched p50 ms: " + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()) +
              f"  | unpruned/pruned {p50['unpruned']/p50['pruned']:.2f}x unpruned/pruned+cache "
              f"{p50['unpruned']/p50['pruned+cache']:.2f}x")
