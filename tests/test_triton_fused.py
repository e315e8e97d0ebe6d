"""Logic of the Triton fused gather -> aggregate -> project kernel, run by Triton's interpreter on CPU."""
import os

import pytest
import torch

from gnnaccel import Graph
from conftest import random_edge_index

triton = pytest.importorskip("triton", reason="triton is not installed")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET was not set before triton was imported (see conftest.py)",
                allow_module_level=True)
from gnnaccel.kernels.fused_sage import fused_aggregate_project  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _reference(g, x, w_neigh, edge_weight, rows, neigh_keep, w_self, self_keep, bias, reduce):
    """Float64 dense math: aggregation as a dense matrix product, then both projections."""
    n = g.num_nodes
    adj = torch.zeros(n, n, dtype=torch.float64)
    dst = g.row_of_edge()
    weight = edge_weight.double() if edge_weight is not None else torch.ones(g.num_edges, dtype=torch.float64)
    adj.index_put_((dst, g.col.long()), weight, accumulate=True)
    if reduce == "mean":
        adj = adj / g.in_degree().clamp_min(1).double()[:, None]
    x64 = x.double()
    xn = x64 if neigh_keep is None else x64[:, neigh_keep]
    out = adj @ xn @ w_neigh.double()
    if w_self is not None:
        xs = x64 if self_keep is None else x64[:, self_keep]
        out = out + xs @ w_self.double()
    if bias is not None:
        out = out + bias.double()
    return out if rows is None else out[rows]


CASES = {
    "sage-mean": dict(reduce="mean", self_branch=True, bias=True),
    "sage-mean-pruned": dict(reduce="mean", self_branch=True, bias=True, neigh_keep=True, self_keep=True),
    "gcn-weighted-sum": dict(reduce="sum", weighted=True, bias=True),
    "rows-subset": dict(reduce="mean", self_branch=True, rows=True, neigh_keep=True),
    "sum-no-bias": dict(reduce="sum"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_matches_dense_reference(case, generator):
    opts = CASES[case]
    n, c, d = 37, 40, 24  # not multiples of the block sizes: masks matter
    edge_index = random_edge_index(n, 150, generator, power_law=True)  # includes isolated nodes
    edge_index = torch.cat([edge_index, torch.tensor([[3, 3, 5], [3, 3, 5]])], 1)  # self loops, duplicates
    g = Graph.from_edge_index(edge_index, n)
    x = torch.randn(n, c, generator=generator)
    neigh_keep = torch.randperm(c, generator=generator)[:19] if opts.get("neigh_keep") else None
    self_keep = torch.randperm(c, generator=generator)[:33] if opts.get("self_keep") else None
    k_n = neigh_keep.numel() if neigh_keep is not None else c
    k_s = self_keep.numel() if self_keep is not None else c
    w_neigh = torch.randn(k_n, d, generator=generator)
    w_self = torch.randn(k_s, d, generator=generator) if opts.get("self_branch") else None
    bias = torch.randn(d, generator=generator) if opts.get("bias") else None
    edge_weight = torch.rand(g.num_edges, generator=generator) if opts.get("weighted") else None
    rows = torch.tensor([0, 36, 5, 5, 12]) if opts.get("rows") else None
    args = (g.rowptr, g.col, x, w_neigh, edge_weight, rows, neigh_keep, w_self, self_keep, bias, opts["reduce"])
    expected = _reference(g, *args[2:])
    got = fused_aggregate_project(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
    torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-4, atol=1e-4)


def test_fused_empty_graph_and_no_rows():
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 4)
    x = torch.randn(4, 16)
    w = torch.randn(16, 16)
    out = fused_aggregate_project(g.rowptr, g.col, x, w, None, None, None, w, None, None, "mean")
    torch.testing.assert_close(out, x @ w)  # every row isolated: only the self branch remains
    empty = fused_aggregate_project(g.rowptr, g.col, x, w, None, torch.empty(0, dtype=torch.long), None, None,
                                    None, None, "sum")
    assert empty.shape == (0, 16)


def test_fused_bfloat16_accumulates_in_float32(generator):
    n = 20
    g = Graph.from_edge_index(random_edge_index(n, 80, generator), n)
    x = torch.randn(n, 32, generator=generator)
    w = torch.randn(32, 16, generator=generator)
    got = fused_aggregate_project(g.rowptr, g.col, x.bfloat16(), w.bfloat16(), None, None, None, None, None, None,
                                  "mean")
    expected = g.aggregate(x.bfloat16().float(), "mean") @ w.bfloat16().float()
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bad, match", [
    (dict(reduce="max"), "reduce"),
    (dict(w_neigh=torch.randn(7, 8)), "w_neigh"),
    (dict(w_self=torch.randn(3, 8)), "w_self"),
    (dict(bias=torch.randn(3)), "bias"),
])
def test_fused_bad_input(bad, match):
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    args = dict(rowptr=g.rowptr, col=g.col, x=torch.randn(2, 16), w_neigh=torch.randn(16, 8), reduce="mean")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        fused_aggregate_project(**args)


def _opcheck_args(generator, device):
    n = 12
    g = Graph.from_edge_index(random_edge_index(n, 40, generator), n).to(device)
    x = torch.randn(n, 16, generator=generator).to(device)
    w = torch.randn(16, 16, generator=generator).to(device)
    return (g.rowptr, g.col, x, w, None, None, None, w, None, None, "mean")


def test_fused_opcheck_schema(generator):
    # On CPU the interpreter runs the kernel on real storages, which fake-tensor tracing cannot provide;
    # the fake-tensor and AOT checks run on a GPU (test_fused_opcheck_gpu).
    torch.library.opcheck(torch.ops.gnnaccel.fused_aggregate_project.default, _opcheck_args(generator, DEVICE),
                          test_utils=("test_schema",))


@pytest.mark.gpu
def test_fused_opcheck_gpu(generator):
    torch.library.opcheck(torch.ops.gnnaccel.fused_aggregate_project.default, _opcheck_args(generator, "cuda"))


@pytest.mark.gpu
def test_fused_compiles_on_gpu(generator):
    n = 300
    g = Graph.from_edge_index(random_edge_index(n, 3000, generator), n).to("cuda")
    x = torch.randn(n, 64, device="cuda")
    w = torch.randn(64, 32, device="cuda")
    fn = torch.compile(lambda x_: fused_aggregate_project(g.rowptr, g.col, x_, w, reduce="mean"), fullgraph=True)
    torch.testing.assert_close(fn(x), g.aggregate(x, "mean") @ w, rtol=1e-3, atol=1e-3)
