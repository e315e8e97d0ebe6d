"""gnnaccel.nn layers: parity with PyG (outputs and gradients), adjacency kinds, compile, pruning protocol."""
import pytest
import torch
import torch_geometric.nn as pyg_nn

import gnnaccel
from gnnaccel import Graph
from gnnaccel.nn import Dense, GCNConv, SAGEConv, SAINTConv, as_graph
from gnnaccel.nn.protocol import graph_block
from conftest import dense_aggregate, random_edge_index

REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()


def assert_rel(out, ref, dtype):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    err = rel_err(out, ref)
    assert err <= REL_TOL[dtype], f"relative error {err:.3e} > {REL_TOL[dtype]}"


def make_graph(generator, n=80, e=600, loops=True):
    """Random edges (duplicates), explicit self loops, power-law degrees and 5 isolated nodes (the last ones)."""
    ei = random_edge_index(n - 5, e, generator, power_law=True, hub=True)
    if loops:
        extra = torch.tensor([[1, 1, 2, 7], [1, 1, 2, 7]])  # self loops, one duplicated
        ei = torch.cat([ei, extra], 1)
    return ei, n


def adjacency_kinds(ei, n):
    g = Graph.from_edge_index(ei, n)
    return {"edge_index": ei, "graph": g, "csr": g.to_torch_sparse()}


# ------------------------------------------------------------------------------------------- SAGEConv
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aggr", ["mean", "sum", "max"])
@pytest.mark.parametrize("in_c, out_c", [(12, 5), (6, 16)])  # project-first and aggregate-first (fused)
@pytest.mark.parametrize("root_weight, normalize, bias", [(True, False, True), (False, True, False)])
def test_sage_matches_pyg(dtype, aggr, in_c, out_c, root_weight, normalize, bias, generator):
    ei, n = make_graph(generator)
    pyg = pyg_nn.SAGEConv(in_c, out_c, aggr=aggr, root_weight=root_weight, normalize=normalize, bias=bias).to(dtype)
    ours = SAGEConv(in_c, out_c, aggr=aggr, root_weight=root_weight, normalize=normalize, bias=bias).to(dtype)
    ours.load_state_dict(pyg.state_dict())  # PyG names load unchanged
    x = torch.randn(n, in_c, generator=generator, dtype=dtype)
    ref = pyg(x, ei)
    for kind, adj in adjacency_kinds(ei, n).items():
        assert_rel(ours(x, adj), ref, dtype)
        with torch.no_grad():  # no-grad path: the fused op when aggregating first
            assert_rel(ours(x, adj), ref, dtype)


@pytest.mark.parametrize("aggr", ["mean", "sum"])
@pytest.mark.parametrize("root_weight", [True, False])
def test_sage_wide_project_first_inference_matches_pyg(aggr, root_weight, generator):
    """out >= SAGEConv.COMBINED_PROJECTION_MIN_WIDTH: inference projects both branches with one GEMM and
    aggregates the left half of [x W_l | x W_r] in place; also when run in row chunks (full_inference)."""
    from gnnaccel.inference import full_inference
    from gnnaccel.models import GraphSAGE

    ei, n = make_graph(generator)
    d = SAGEConv.COMBINED_PROJECTION_MIN_WIDTH
    pyg = pyg_nn.SAGEConv(2 * d + 3, d, aggr=aggr, root_weight=root_weight).double()
    ours = SAGEConv(2 * d + 3, d, aggr=aggr, root_weight=root_weight).double()
    ours.load_state_dict(pyg.state_dict())
    x = torch.randn(n, 2 * d + 3, generator=generator, dtype=torch.float64)
    ref = pyg(x, ei)
    g = Graph.from_edge_index(ei, n)
    with torch.no_grad():
        if root_weight:
            # the combined layout is the one under test
            assert ours.block_plan(x, graph_block(ours, g, x.dtype)).shape == (n, 2 * d)
        assert_rel(ours(x, g), ref, torch.float64)
        assert_rel(ours(x, g, rows=torch.tensor([3, 0, 3])), ref[[3, 0, 3]], torch.float64)
    if root_weight:  # GraphSAGE's layers have a root weight
        model = GraphSAGE(2 * d + 3, d, d, num_layers=1, aggr=aggr).double()
        model.convs[0].load_state_dict(ours.state_dict())
        assert_rel(full_inference(model, g, x, chunk_size=7, progress=False), ref, torch.float64)


def test_sage_matches_pyg_on_weighted_sparse(generator):
    # PyG's sparse path scales messages by the adjacency values; so does a weighted Graph.
    ei, n = make_graph(generator, loops=False)
    g = Graph.from_edge_index(ei, n, torch.rand(ei.shape[1], generator=generator, dtype=torch.float64) + 0.5)
    adj = g.to_torch_sparse(torch.float64)
    pyg = pyg_nn.SAGEConv(6, 9, aggr="sum").double()
    ours = SAGEConv(6, 9, aggr="sum").double()
    ours.load_state_dict(pyg.state_dict())
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    ref = pyg(x, adj)
    assert_rel(ours(x, adj), ref, torch.float64)
    with torch.no_grad():
        assert_rel(ours(x, g), ref, torch.float64)


def test_sage_rows_subset(generator):
    ei, n = make_graph(generator)
    x = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    rows = torch.tensor([0, n - 1, 3, 3, 1])
    for out_c in (4, 20):
        conv = SAGEConv(10, out_c).double()
        full = conv(x, ei)
        assert_rel(conv(x, ei, rows=rows), full[rows], torch.float64)
        with torch.no_grad():
            assert_rel(conv(x, ei, rows=rows), full[rows], torch.float64)


# ------------------------------------------------------------------------------------------- GCNConv
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_c, out_c", [(12, 5), (6, 16)])
@pytest.mark.parametrize("add_self_loops, normalize, bias, weighted",
                         [(True, True, True, False), (True, True, False, True), (False, True, True, True),
                          (False, False, True, True), (None, False, True, False)])
def test_gcn_matches_pyg(dtype, in_c, out_c, add_self_loops, normalize, bias, weighted, generator):
    ei, n = make_graph(generator)
    w = torch.rand(ei.shape[1], generator=generator, dtype=dtype) + 0.1 if weighted else None
    pyg = pyg_nn.GCNConv(in_c, out_c, add_self_loops=add_self_loops, normalize=normalize, bias=bias).to(dtype)
    with torch.no_grad():
        if bias:
            pyg.bias.normal_(generator=generator)
    ours = GCNConv(in_c, out_c, add_self_loops=add_self_loops, normalize=normalize, bias=bias).to(dtype)
    ours.load_state_dict(pyg.state_dict())
    x = torch.randn(n, in_c, generator=generator, dtype=dtype)
    ref = pyg(x, ei, w)
    g = Graph.from_edge_index(ei, n, w)
    assert_rel(ours(x, g), ref, dtype)
    with torch.no_grad():
        assert_rel(ours(x, g), ref, dtype)
    if not weighted:
        assert_rel(ours(x, ei), ref, dtype)
    assert any(k[0] == "gcn_norm" for k in g.cache) == normalize  # memoised on the graph


# ------------------------------------------------------------------------------------------- SAINTConv
def saint_reference(x, ei, n, conv):
    z_neigh = dense_aggregate(ei, n, x, "mean")
    self_part = x.double() @ conv.lin_self.weight.double().t() + conv.lin_self.bias.double()
    neigh_part = z_neigh @ conv.lin_neigh.weight.double().t() + conv.lin_neigh.bias.double()
    return torch.relu(torch.cat([self_part, neigh_part], 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_c, out_c", [(12, 7), (6, 16)])
def test_saint_matches_dense_reference(dtype, in_c, out_c, generator):
    ei, n = make_graph(generator)
    conv = SAINTConv(in_c, out_c).to(dtype)
    assert conv.lin_self.out_features + conv.lin_neigh.out_features == out_c
    x = torch.randn(n, in_c, generator=generator, dtype=dtype)
    ref = saint_reference(x, ei, n, conv)
    for adj in adjacency_kinds(ei, n).values():
        assert_rel(conv(x, adj), ref, dtype)


# ------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("layer", ["sage_mean_narrow", "sage_mean_wide", "sage_max", "gcn_narrow", "gcn_wide"])
def test_gradients_match_pyg(layer, generator):
    ei, n = make_graph(generator)
    kind, *rest = layer.split("_")
    in_c, out_c = (10, 4) if rest[-1] == "narrow" else (5, 12)
    if kind == "sage":
        aggr = rest[0]
        pyg, ours = pyg_nn.SAGEConv(in_c, out_c, aggr=aggr).double(), SAGEConv(in_c, out_c, aggr=aggr).double()
    else:
        pyg, ours = pyg_nn.GCNConv(in_c, out_c).double(), GCNConv(in_c, out_c).double()
    ours.load_state_dict(pyg.state_dict())
    x = torch.randn(n, in_c, generator=generator, dtype=torch.float64)
    seed = torch.randn(n, out_c, generator=generator, dtype=torch.float64)
    grads = []
    for module in (pyg, ours):
        xi = x.clone().requires_grad_()
        (module(xi, ei) * seed).sum().backward()
        grads.append([xi.grad] + [p.grad for _, p in sorted(module.named_parameters())])
    for g_pyg, g_ours in zip(*grads):
        assert_rel(g_ours, g_pyg, torch.float64)


# ------------------------------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_layers(generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    x = torch.randn(n, 12, generator=generator)
    for conv in (SAGEConv(12, 16), SAGEConv(12, 4), GCNConv(12, 5), GCNConv(12, 16), SAINTConv(12, 8)):
        conv.eval()
        expected = conv(x, g)  # eager first: memoises the GCN normalisation on the graph
        compiled = torch.compile(conv, fullgraph=True)
        torch.testing.assert_close(compiled(x, g), expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # the fused inference path
            torch.testing.assert_close(compiled(x, g), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- adjacency
def test_adjacency_conversion_is_memoised_and_checked():
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    g1, g2 = as_graph(ei, 4), as_graph(ei, 4)
    assert g1 is g2 and g1.num_nodes == 4
    ei[0, 0] = 2  # in-place change bumps the version: converted again
    assert as_graph(ei, 4) is not g1 and as_graph(ei, 4).col.tolist() == [2, 2, 1]
    with pytest.raises(TypeError, match="adjacency must be"):
        as_graph([[0], [1]], 2)
    with pytest.raises(ValueError, match="the graph has 3 nodes but x has 5 rows"):
        as_graph(Graph.from_edge_index(torch.tensor([[0], [1]]), 3), 5)
    with pytest.raises(ValueError, match="node index"):
        SAGEConv(2, 3)(torch.ones(2, 2), torch.tensor([[0], [5]]))


def test_unsupported_options_raise():
    with pytest.raises(ValueError, match="aggr must be"):
        SAGEConv(2, 3, aggr="lstm")
    with pytest.raises(ValueError, match="project=True"):
        SAGEConv(2, 3, project=True)
    with pytest.raises(ValueError, match="needs normalize=True"):
        GCNConv(2, 3, add_self_loops=True, normalize=False)


# ------------------------------------------------------------------------------------------- protocol
def _layers():
    return {
        "sage_mean": lambda: SAGEConv(10, 6), "sage_sum": lambda: SAGEConv(10, 14, aggr="sum"),
        "sage_max": lambda: SAGEConv(10, 6, aggr="max"), "sage_noroot": lambda: SAGEConv(10, 6, root_weight=False),
        "gcn": lambda: GCNConv(10, 6), "gcn_plain": lambda: GCNConv(10, 12, normalize=False),
        "saint": lambda: SAINTConv(10, 7, act=None), "dense": lambda: Dense(10, 6),
    }


def _pre_activation(layer, x, adj, rows=None):
    if isinstance(layer, SAINTConv) and layer.act is not None:
        act, layer.act = layer.act, None
        try:
            return layer(x, adj, rows)
        finally:
            layer.act = act
    return layer(x, adj, rows=rows)


def _reconstruct(parts, z):
    out = torch.zeros(next(iter(z.values())).shape[0], parts.out_channels, dtype=torch.float64)
    for b in parts.branches:
        out[:, b.cols] += z[b.name].double() @ b.weight.double()
    return out + parts.bias.double() if parts.bias is not None else out


def _randomise_bias(layer, generator):
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(generator=generator)


@pytest.mark.parametrize("name", list(_layers()))
def test_linear_parts_reconstruct_output(name, generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    layer = _layers()[name]().double()
    _randomise_bias(layer, generator)
    h = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    parts = layer.linear_parts()
    assert parts.in_channels == 10 and parts.out_channels == layer.out_channels
    cols = torch.cat([b.cols for b in parts.branches])
    if parts.form == "sum":
        assert all(torch.equal(b.cols, torch.arange(parts.out_channels)) for b in parts.branches)
    else:
        assert torch.equal(torch.sort(cols).values, torch.arange(parts.out_channels))
    rows = torch.tensor([n - 1, 0, 5, 5])
    for r in (None, rows):
        z = layer.branch_inputs(g, h, r)
        assert set(z) == {b.name for b in parts.branches}
        expected = _pre_activation(layer, h, g, r)
        assert_rel(_reconstruct(parts, z), expected, torch.float64)


@pytest.mark.parametrize("name", [k for k in _layers() if k != "sage_max"])
def test_load_pruned_same_keep_narrows_layer(name, generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    layer = _layers()[name]().double()
    h = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    parts = layer.linear_parts()
    keep = torch.tensor([7, 1, 4, 9])
    weights = {b.name: torch.randn(4, b.cols.numel(), generator=generator, dtype=torch.float64)
               for b in parts.branches}
    bias = torch.randn(parts.out_channels, generator=generator, dtype=torch.float64)
    z_full = layer.branch_inputs(g, h)  # propagation is linear: Z(h[:, keep]) = Z(h)[:, keep]
    layer.load_pruned({b: keep for b in weights}, weights, bias)
    assert layer.in_channels == 4 and layer.linear_parts().in_channels == 4
    expected = sum(torch.zeros(n, parts.out_channels, dtype=torch.float64).index_add(
        1, b.cols, z_full[b.name][:, keep] @ weights[b.name]) for b in parts.branches) + bias
    h_small = h[:, keep]
    assert_rel(_pre_activation(layer, h_small, g), expected, torch.float64)
    assert_rel(_reconstruct(layer.linear_parts(), layer.branch_inputs(g, h_small)), expected, torch.float64)
    with torch.no_grad():
        assert_rel(_pre_activation(layer, h_small, g), expected, torch.float64)


@pytest.mark.parametrize("name", ["sage_mean", "sage_sum", "saint"])
def test_load_pruned_per_branch_keeps_slice_the_input(name, generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    layer = _layers()[name]().double()
    h = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    parts = layer.linear_parts()
    keeps = {"self": torch.arange(10), "neigh": torch.tensor([8, 2, 5])}  # batched scheme: prune neighbours only
    weights = {b.name: torch.randn(keeps[b.name].numel(), b.cols.numel(), generator=generator, dtype=torch.float64)
               for b in parts.branches}
    bias = torch.randn(parts.out_channels, generator=generator, dtype=torch.float64)
    z_full = layer.branch_inputs(g, h)
    layer.load_pruned(keeps, weights, bias)
    assert layer.in_channels == 10  # input stays as wide; each branch slices it
    assert torch.equal(layer.input_index_neigh, keeps["neigh"])
    expected = sum(torch.zeros(n, parts.out_channels, dtype=torch.float64).index_add(
        1, b.cols, z_full[b.name][:, keeps[b.name]] @ weights[b.name]) for b in parts.branches) + bias
    rows = torch.tensor([3, n - 1, 0])
    assert_rel(_pre_activation(layer, h, g), expected, torch.float64)
    assert_rel(_pre_activation(layer, h, g, rows), expected[rows], torch.float64)
    with torch.no_grad():
        assert_rel(_pre_activation(layer, h, g), expected, torch.float64)
    new_parts = layer.linear_parts()
    assert [b.weight.shape[0] for b in new_parts.branches] == [keeps[b.name].numel() for b in new_parts.branches]
    assert_rel(_reconstruct(new_parts, layer.branch_inputs(g, h)), expected, torch.float64)


@pytest.mark.parametrize("name", list(_layers()))
def test_prune_outputs_keeps_channels(name, generator):
    ei, n = make_graph(generator)
    g = Graph.from_edge_index(ei, n)
    layer = _layers()[name]().double()
    _randomise_bias(layer, generator)
    h = torch.randn(n, 10, generator=generator, dtype=torch.float64)
    before = _pre_activation(layer, h, g)
    keep = torch.tensor([0, 2, 3, 5])  # increasing, spans both halves of SAINT
    layer.prune_outputs(keep)
    assert layer.out_channels == 4 and layer.linear_parts().out_channels == 4
    assert_rel(_pre_activation(layer, h, g), before[:, keep], torch.float64)


def test_protocol_bad_inputs(generator):
    layer = SAGEConv(6, 4)
    w = {"neigh": torch.randn(2, 4), "self": torch.randn(2, 4)}
    with pytest.raises(KeyError, match="must name exactly the branches"):
        layer.load_pruned({"neigh": torch.tensor([0, 1])}, w, torch.zeros(4))
    with pytest.raises(ValueError, match=r"weights\['neigh'\] must have shape \[3, 4\]"):
        layer.load_pruned({"neigh": torch.tensor([0, 1, 2]), "self": torch.tensor([0, 1])}, w, torch.zeros(4))
    with pytest.raises(IndexError, match="outside"):
        layer.load_pruned({"neigh": torch.tensor([0, 6]), "self": torch.tensor([0, 1])}, w, torch.zeros(4))
    with pytest.raises(ValueError, match="duplicate"):
        layer.prune_outputs(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="needs the new bias"):
        layer.load_pruned({"neigh": torch.tensor([0, 1]), "self": torch.tensor([0, 1])}, w, None)
    with pytest.raises(ValueError, match="strictly increasing"):
        SAINTConv(6, 4).prune_outputs(torch.tensor([3, 0]))


def test_gcn_normalisation_memoised_in_inference_mode_still_trains():
    from gnnaccel.inference import full_inference
    from gnnaccel.models import GCN

    gen = torch.Generator().manual_seed(3)
    n = 40
    graph = Graph.from_edge_index(torch.randint(n, (2, 200), generator=gen), n)
    x = torch.randn(n, 6, generator=gen)
    model = GCN(6, 8, 3)
    expected = full_inference(model, graph, x, progress=False)  # memoises the normalised graph here
    model.train()
    out = model(x, graph)  # autograd on the same Graph
    out.sum().backward()
    assert model.convs[0].lin.weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, graph), expected)
