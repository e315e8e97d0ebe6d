"""CPU speed check of issue 12 item 1 (full inference vs PyG, pruned vs unpruned, batched p50), ratios of interleaved rounds.
Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/speed_protocol.py (results: RESULTS.md)."""
import time
import warnings
warnings.filterwarnings("ignore")
import torch
import gnnaccel
from gnnaccel.inference import full_inference
from gnnaccel.batched import BatchedEngine
from gnnaccel.cache import FeatureCache
from conftest import InterleavedBest, synthetic_graph
import torch_geometric.nn as pyg_nn

torch.manual_seed(0)
# full inference: 100k nodes, 2M edges, f128 h256 out16 (the RESULTS config, fewer rounds)
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
    best = InterleavedBest(fns).run(7)
print(f"full: pyg-csr/gnnaccel {best['pyg-csr']/best['gnnaccel']:.2f}x  unpruned/pruned {best['gnnaccel']/best['pruned']:.2f}x "
      f" chunked/unchunked {best['chunked']/best['gnnaccel']:.2f}x  (min s: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + ")")

# batched: synthetic 50k nodes deg 25 f512, GraphSAGE hidden 256, fanouts (10, 25) as bench_batched
d2 = synthetic_graph(50_000, 25, 512)
torch.manual_seed(0)
m = gnnaccel.models.GraphSAGE(512, 256, d2.num_classes, 2).eval()
pm = gnnaccel.prune(m, d2.graph, d2.x, keep=0.25, scheme="batched", method="lasso", progress=False, calib_nodes=5000)
engines = {"unpruned": BatchedEngine(m, d2.graph, d2.x, fanouts=[10, 25]),
           "pruned": BatchedEngine(pm, d2.graph, d2.x, fanouts=[10, 25]),
           "pruned+cache": BatchedEngine(pm, d2.graph, d2.x, fanouts=[10, 25], cache=True),
           "exact": BatchedEngine(m, d2.graph, d2.x)}
gen = torch.Generator().manual_seed(1)
for _ in range(20):
    engines["pruned+cache"].predict(torch.randint(d2.graph.num_nodes, (512,), generator=gen))
times = {k: [] for k in engines}
for r in range(60):
    t = torch.randint(d2.graph.num_nodes, (512,), generator=gen)
    for k in [list(engines)[i] for i in torch.randperm(len(engines), generator=gen).tolist()]:
        s = time.perf_counter(); engines[k].predict(t); times[k].append(time.perf_counter() - s)
p50 = {k: float(torch.tensor(v).median()) * 1e3 for k, v in times.items()}
print("batched p50 ms: " + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()) +
      f"  | unpruned/pruned {p50['unpruned']/p50['pruned']:.2f}x unpruned/pruned+cache {p50['unpruned']/p50['pruned+cache']:.2f}x")
