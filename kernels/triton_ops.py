"""Registers every Triton operator of gnnaccel (``torch.ops.gnnaccel.triton_*``); imports triton.

Imported lazily by :func:`gnnaccel.backend.triton_available`, which treats any failure here (triton missing
or broken) as "no Triton backend" instead of an import error of the package.
"""
from .aggregate import triton_aggregate
from .fused_layer import triton_fused_layer, triton_pruned_linear
from .gat_aggregate import triton_gat_aggregate

__all__ = ["triton_aggregate", "triton_fused_layer", "triton_pruned_linear", "triton_gat_aggregate"]
