"""Drop-in GNN layers (PyG-compatible parameters and semantics) built on gnnaccel operators; the block
protocol that models and engines run them through is documented in :mod:`gnnaccel.nn.protocol`."""
from .adjacency import as_graph
from .conv import Dense, GCNConv, SAGEConv, SAINTConv, gcn_normalized_graph
from .gat import GATConv
from .parts import Branch, LinearParts
from .protocol import Block, graph_block

__all__ = ["Block", "graph_block", "Branch", "LinearParts", "SAGEConv", "GCNConv", "SAINTConv", "GATConv", "Dense", "as_graph", "gcn_normalized_graph"]
