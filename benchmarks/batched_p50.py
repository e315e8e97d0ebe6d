"""Batched p50 of speed_protocol.py (its batched part only: 50k nodes, deg 25, f512, GraphSAGE h256, fanouts [10, 25], batch 512), as JSON.
Run from a tree root: OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/batched_p50.py [rounds]; results in RESULTS.md."""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
import gnnaccel
from gnnaccel.batched import BatchedEngine
from conftest import synthetic_graph
torch.manual_seed(0)
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
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 60):
    t = torch.randint(d2.graph.num_nodes, (512,), generator=gen)
    for k in [list(engines)[i] for i in torch.randperm(len(engines), generator=gen).tolist()]:
        s = time.perf_counter(); engines[k].predict(t); times[k].append(time.perf_counter() - s)
p50 = {k: float(torch.tensor(v).median()) * 1e3 for k, v in times.items()}
print(json.dumps(p50))
