"""CPU speed check of issue 12 (full inference vs PyG, pruned vs unpruned, batched p50), ratios of interleaved rounds.

Usage (results: RESULTS.md), from the root of the tree to measure (this script also runs against older trees):
    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py            # both parts
    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py batched 40  # batched p50s as JSON
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["batched"]:
        print(json.dumps(batched(int(sys.argv[2]) if len(sys.argv) > 2 else 60)))
    else:
        full()
        p50 = batched()
        print("batched p50 ms: " + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()) +
              f"  | unpruned/pruned {p50['unpruned']/p50['pruned']:.2f}x unpruned/pruned+cache "
              f"{p50['unpruned']/p50['pruned+cache']:.2f}x")
