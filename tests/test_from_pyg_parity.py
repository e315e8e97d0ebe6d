"""from_pyg parity over every PyG GraphSAGE / GCN option combination (issue 13 item 2): the converted model
gives PyG's eval-mode output, or the conversion raises a clear error for the documented unsupported options."""
import itertools

import pytest
import torch
import torch_geometric.nn as pyg_nn

from gnnaccel import Graph, from_pyg
from conftest import random_edge_index

NORMS = {"none": {}, "batch": {"norm": "batch_norm"},
         "layer_node": {"norm": "layer_norm", "norm_kwargs": {"mode": "node"}},
         "layer_graph": {"norm": "layer_norm"}}
JKS = [None, "last", "cat", "max", "lstm"]
ACTS = ["relu", "tanh"]
# Options gnnaccel rejects, with the words the error must contain.
UNSUPPORTED = {"project": "project=True", "jk_combine": "jk='(cat|max|lstm)'", "layer_graph": "mode='graph'"}

# Every combination of the options that change the conversion; the activation (a separate step in both models)
# varies over a smaller product below.
SAGE_CASES = list(itertools.product([False, True], NORMS, JKS, ["relu"], [True, False], ["mean", "sum", "max"],
                                    [True, False], [False, True]))
SAGE_CASES += list(itertools.product([False, True], NORMS, JKS, ["tanh", None], [True], ["mean"], [True], [False]))
GCN_CASES = list(itertools.product([True, False], NORMS, JKS, ACTS + [None], [True, False], [False, True]))


def _randomise_norms(model, generator):
    """Non-trivial running statistics and affine parameters, so that a wrong fold shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            if isinstance(module, (torch.nn.BatchNorm1d, pyg_nn.norm.LayerNorm, torch.nn.LayerNorm)):
                if getattr(module, "weight", None) is not None:
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator))


def _check(model, generator, unsupported, weighted=False):
    _randomise_norms(model, generator)
    model.eval()
    n = 30
    edge_index = torch.cat([random_edge_index(n - 3, 120, generator), torch.tensor([[4, 5], [4, 5]])], 1)
    x = torch.randn(n, 7, generator=generator)  # nodes 27..29 are isolated
    if unsupported:
        with pytest.raises((ValueError, TypeError), match="|".join(UNSUPPORTED[u] for u in unsupported)):
            from_pyg(model)
        return
    ours = from_pyg(model)
    with torch.no_grad():
        expected = model(x, edge_index)
        # GCN(improved=True) is A + 2I only with edge weights in PyG's edge_index path (see tests/test_graph.py).
        if not (weighted and model.convs[0].improved):
            assert torch.allclose(ours(x, edge_index), expected, atol=2e-5, rtol=1e-4)
        if weighted:
            w = torch.rand(edge_index.shape[1], generator=generator) + 0.2
            expected = model(x, edge_index, edge_weight=w)
            assert torch.allclose(ours(x, Graph.from_edge_index(edge_index, n, w)), expected, atol=2e-5, rtol=1e-4)
        else:
            assert torch.allclose(ours(x, Graph.from_edge_index(edge_index, n)), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("normalize, norm, jk, act, bias, aggr, root_weight, project", SAGE_CASES)
def test_graphsage_from_pyg_parity(normalize, norm, jk, act, bias, aggr, root_weight, project, generator):
    model = pyg_nn.models.GraphSAGE(7, 6, num_layers=3, out_channels=3, act=act, jk=jk, normalize=normalize,
                                    bias=bias, aggr=aggr, root_weight=root_weight, project=project,
                                    **NORMS[norm])
    unsupported = [u for u, on in (("project", project), ("jk_combine", jk in ("cat", "max", "lstm")),
                                   ("layer_graph", norm == "layer_graph")) if on]
    _check(model, generator, unsupported)


@pytest.mark.parametrize("normalize, norm, jk, act, bias, improved", GCN_CASES)
def test_gcn_from_pyg_parity(normalize, norm, jk, act, bias, improved, generator):
    model = pyg_nn.models.GCN(7, 6, num_layers=3, out_channels=3, act=act, jk=jk, normalize=normalize, bias=bias,
                              improved=improved, **NORMS[norm])
    unsupported = [u for u, on in (("jk_combine", jk in ("cat", "max", "lstm")),
                                   ("layer_graph", norm == "layer_graph")) if on]
    _check(model, generator, unsupported, weighted=True)


@pytest.mark.parametrize("norm", ["none", "batch", "layer_node"])
@pytest.mark.parametrize("normalize", [False, True])
def test_act_first_from_pyg_parity(norm, normalize, generator):
    model = pyg_nn.models.GraphSAGE(7, 6, num_layers=3, out_channels=3, act_first=True, normalize=normalize,
                                    **NORMS[norm])
    _check(model, generator, [])
