"""PyG's own layer tests for SAGEConv and GCNConv, adapted to gnnaccel's drop-in layers (issue 13 item 18).

Adapted from pyg-team/pytorch_geometric (MIT licence), test/nn/conv/test_sage_conv.py and
test/nn/conv/test_gcn_conv.py as of PyG 2.8: the same inputs, calls and expected sizes / reprs / equalities,
with PyG's ``assert_module`` and TorchScript parts replaced by what applies to gnnaccel (torch sparse ``adj_t``
instead of torch_sparse, torch.compile instead of jit), plus a numerical comparison with PyG's own layer with
the same weights. Parts that do not apply (LSTM / MLP / multi aggregations, decomposed layers, message hooks,
``flow="target_to_source"``, 3-D static-graph inputs, sparse feature matrices) are checked to be rejected
with a clear error instead.
"""
import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.utils import to_torch_csc_tensor

from gnnaccel.nn import GCNConv, SAGEConv


@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("aggr", ["mean", "sum"])
def test_sage_conv(project, aggr):
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    if project:  # not supported by gnnaccel: a clear error (PyG's test exercises it)
        with pytest.raises(ValueError, match="project=True"):
            SAGEConv(8, 32, project=project, aggr=aggr)
        return

    conv = SAGEConv(8, 32, project=project, aggr=aggr)
    assert str(conv) == f"SAGEConv(8, 32, aggr={aggr})"
    out = conv(x, edge_index)
    assert out.size() == (4, 32)
    assert torch.allclose(conv(x, edge_index, size=(4, 4)), out, atol=1e-6)
    assert torch.allclose(conv(x, edge_index, (4, 4)), out, atol=1e-6)  # size is PyG's third positional argument
    adj = to_torch_csc_tensor(edge_index, size=(4, 4))
    assert torch.allclose(conv(x, adj.t()), out, atol=1e-6)
    with torch.no_grad():
        ref = pyg_nn.SAGEConv(8, 32, aggr=aggr)
        ref.lin_l.weight.copy_(conv.lin_l.weight)
        ref.lin_l.bias.copy_(conv.lin_l.bias)
        ref.lin_r.weight.copy_(conv.lin_r.weight)
        assert torch.allclose(ref(x, edge_index), out, atol=1e-6)

    # Test bipartite message passing:
    x1 = torch.randn(4, 8)
    x2 = torch.randn(2, 16)

    conv = SAGEConv((8, 16), 32, project=project, aggr=aggr)
    assert str(conv) == f"SAGEConv((8, 16), 32, aggr={aggr})"

    out1 = conv((x1, x2), edge_index)
    out2 = conv((x1, None), edge_index, size=(4, 2))
    assert out1.size() == (2, 32)
    assert out2.size() == (2, 32)
    assert torch.allclose(conv((x1, x2), edge_index, (4, 2)), out1, atol=1e-6)
    adj = to_torch_csc_tensor(edge_index, size=(4, 2))
    assert torch.allclose(conv((x1, x2), adj.t()), out1, atol=1e-6)
    assert torch.allclose(conv((x1, None), adj.t()), out2, atol=1e-6)
    with torch.no_grad():
        ref = pyg_nn.SAGEConv((8, 16), 32, aggr=aggr)
        ref.lin_l.weight.copy_(conv.lin_l.weight)
        ref.lin_l.bias.copy_(conv.lin_l.bias)
        ref.lin_r.weight.copy_(conv.lin_r.weight)
        assert torch.allclose(ref((x1, x2), edge_index), out1, atol=1e-6)
        assert torch.allclose(ref((x1, None), edge_index, (4, 2)), out2, atol=1e-6)


@pytest.mark.parametrize("project", [False, True])
def test_lazy_sage_conv(project):
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])

    if project:
        with pytest.raises(ValueError, match="project=True"):
            SAGEConv(-1, 32, project=project)
    else:
        conv = SAGEConv(-1, 32, project=project)
        assert str(conv) == "SAGEConv(-1, 32, aggr=mean)"

        out = conv(x, edge_index)
        assert out.size() == (4, 32)
        assert conv.in_channels == 8 and conv.lin_l.weight.shape == (32, 8)
        assert torch.allclose(conv(x, edge_index), out)


@pytest.mark.parametrize("aggr", ["lstm", ["mean", "max", "sum", "softmax"]])
def test_unsupported_aggregations_are_rejected(aggr):
    # PyG's test_lstm_aggr_sage_conv / test_multi_aggr_sage_conv / test_mlp_sage_conv: not supported by gnnaccel.
    with pytest.raises(ValueError, match="aggr must be"):
        SAGEConv(8, 32, aggr=aggr)


def test_compile_sage_conv():
    # PyG's test_compile_multi_aggr_sage_conv, for gnnaccel's aggregations: no graph break.
    import torch._dynamo as dynamo

    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    for aggr in ("mean", "sum", "max"):
        conv = SAGEConv(8, 32, aggr=aggr)
        dynamo.reset()
        explanation = dynamo.explain(conv)(x, edge_index)
        assert explanation.graph_break_count == 0
        expected = conv(x, edge_index)
        assert torch.allclose(torch.compile(conv)(x, edge_index), expected, atol=1e-6)


def test_gcn_conv():
    x = torch.randn(4, 16)
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])
    value = torch.rand(edge_index.size(1))
    adj1 = to_torch_csc_tensor(edge_index, size=(4, 4))
    adj2 = to_torch_csc_tensor(edge_index, value, size=(4, 4))

    conv = GCNConv(16, 32)
    assert str(conv) == "GCNConv(16, 32)"

    out1 = conv(x, edge_index)
    assert out1.size() == (4, 32)
    assert torch.allclose(conv(x, adj1.t()), out1, atol=1e-6)

    out2 = conv(x, edge_index, value)  # PyG's positional edge weight
    assert out2.size() == (4, 32)
    assert torch.allclose(conv(x, adj2.t()), out2, atol=1e-6)

    with torch.no_grad():
        ref = pyg_nn.GCNConv(16, 32)
        ref.lin.weight.copy_(conv.lin.weight)
        ref.bias.copy_(conv.bias)
        assert torch.allclose(ref(x, edge_index), out1, atol=1e-6)
        assert torch.allclose(ref(x, edge_index, value), out2, atol=1e-6)
        assert not torch.allclose(out1, out2, atol=1e-3)

    conv.cached = True
    conv(x, edge_index)
    assert torch.allclose(conv(x, edge_index), out1, atol=1e-6)
    assert torch.allclose(conv(x, adj1.t()), out1, atol=1e-6)


@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_conv_improved(improved, weighted):
    x = torch.randn(5, 16)
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3, 4], [1, 2, 3, 0, 0, 0, 4]])
    value = torch.rand(edge_index.size(1)) + 0.1 if weighted else None
    conv = GCNConv(16, 32, improved=improved)
    # PyG's weighted path and its adj_t path implement A + 2I; its unweighted edge_index path ignores
    # improved (see tests/test_graph.py), so the reference gets explicit unit weights.
    w = value if weighted else torch.ones(edge_index.size(1))
    with torch.no_grad():
        ref = pyg_nn.GCNConv(16, 32, improved=improved)
        ref.lin.weight.copy_(conv.lin.weight)
        ref.bias.copy_(conv.bias)
        assert torch.allclose(conv(x, edge_index, value), ref(x, edge_index, w), atol=1e-6)
    assert str(conv) == "GCNConv(16, 32)"


def test_gcn_conv_error():
    with pytest.raises(ValueError, match="self-loops|self loops|add_self_loops"):
        GCNConv(16, 32, normalize=False, add_self_loops=True)


def test_gcn_conv_inputs_that_do_not_apply():
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])
    conv = GCNConv(16, 32)
    with pytest.raises(ValueError, match="2-D"):  # PyG's test_static_gcn_conv
        conv(torch.randn(3, 4, 16), edge_index)
    sparse_x = torch.sparse_coo_tensor(torch.tensor([[0, 0], [0, 1]]), torch.tensor([1.0, 1.0]), (4, 16))
    with pytest.raises((TypeError, ValueError), match="dense|sparse"):  # PyG's sparse input features
        conv(sparse_x, edge_index)
    with pytest.raises(TypeError):  # PyG's flow="target_to_source"
        GCNConv(16, 32, flow="target_to_source")
