"""torch.compile(fullgraph=True) and torch.export of gnnaccel models on their traceable inputs (a Graph, a plain
edge_index), and export of a pruned model for serving with the Graph's CSR tensors as inputs."""
import pytest
import torch

import gnnaccel
from gnnaccel import Graph
from gnnaccel.models import GCN, GraphSAGE
from conftest import random_edge_index


@pytest.mark.parametrize("cls, adj_kind", [(GraphSAGE, "graph"), (GCN, "edge_index")])
def test_compile_fullgraph_matches_eager(cls, adj_kind, generator):
    n = 60
    edge_index = random_edge_index(n, 300, generator, hub=True)
    adj = Graph.from_edge_index(edge_index, n) if adj_kind == "graph" else edge_index
    x = torch.randn(n, 12, generator=generator)
    model = cls(12, 16, 5, 2).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x, adj), model(x, adj), atol=1e-5)
        # A different graph of another size: same compiled code (no data-dependent specialisation), right answer.
        m = 45
        other = random_edge_index(m, 200, generator)
        other_adj = Graph.from_edge_index(other, m) if adj_kind == "graph" else other
        x2 = torch.randn(m, 12, generator=generator)
        assert torch.allclose(compiled(x2, other_adj), model(x2, other_adj), atol=1e-5)


@pytest.mark.parametrize("cls, scheme", [(GraphSAGE, "batched"), (GCN, "full")])
def test_export_pruned_model_with_graph_inputs(cls, scheme, generator):
    n = 80
    g = Graph.from_edge_index(random_edge_index(n, 400, generator), n)
    x = torch.randn(n, 12, generator=generator)
    pruned = gnnaccel.prune(cls(12, 16, 5, 2).eval(), g, x, keep=0.5, scheme=scheme, progress=False)
    nodes, edges = torch.export.Dim("nodes", min=2), torch.export.Dim("edges", min=1)
    # The Graph is a pytree of (rowptr, col, edge_weight): dynamic sizes for the CSR of any graph.
    with torch.no_grad():
        exported = torch.export.export(pruned, (x, g), dynamic_shapes=({0: nodes}, [{0: nodes + 1}, {0: edges}, None]))
    served = exported.module()
    m = 130
    g2 = Graph.from_edge_index(random_edge_index(m, 900, generator, hub=True), m)
    x2 = torch.randn(m, 12, generator=generator)
    with torch.no_grad():
        assert torch.allclose(served(x2, g2), pruned(x2, g2), atol=1e-5)
        assert torch.allclose(served(x, g), pruned(x, g), atol=1e-5)
