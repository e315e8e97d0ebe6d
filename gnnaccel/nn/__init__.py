"""Drop-in GNN layers (PyG-compatible parameters and semantics) built on gnnaccel operators."""
from .adjacency import as_graph
from .conv import Dense, GCNConv, SAGEConv, SAINTConv, gcn_normalized_graph
from .parts import Branch, LinearParts

__all__ = ["Branch", "LinearParts", "SAGEConv", "GCNConv", "SAINTConv", "Dense", "as_graph", "gcn_normalized_graph"]
