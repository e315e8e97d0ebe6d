"""Drop-in GNN layers (PyG-compatible parameters and semantics) built on gnnaccel operators."""
from .parts import Branch, LinearParts

__all__ = ["Branch", "LinearParts"]
