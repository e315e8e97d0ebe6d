"""Operators of gnnaccel (``torch.ops.gnnaccel.*``) with their Python entry points.

Each operator has its schema and kernels in C++ (csrc/ops), and its fake kernel and autograd formula
registered here, so that it works under ``torch.compile(fullgraph=True)`` and trains.
"""
from .aggregate import aggregate
from .lasso import lasso_cd

__all__ = ["aggregate", "lasso_cd"]
