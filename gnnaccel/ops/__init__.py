"""Operators of gnnaccel (``torch.ops.gnnaccel.*``) with their Python entry points.

Each operator has its schema and kernels in C++ (csrc/ops), and its fake kernel and autograd formula
registered here, so that it works under ``torch.compile(fullgraph=True)`` and trains. The entry points
(aggregate, fused_layer, sage_fused, sage_projected, pruned_linear) run the kernels of the backend that
:func:`gnnaccel.backend.kernel_backend` names: the compiled ops ("cpp"), the Triton ops of
``gnnaccel.kernels`` ("triton") or PyTorch compositions (``torch_backend``, "torch").
"""
from .aggregate import aggregate
from .fused_layer import fused_layer
from .expand_hop import ALL_NEIGHBOURS, HopBlock, expand_hop, hop_random_seed, k_hop_support
from .lasso import lasso_cd, lasso_select
from .pruned_linear import pruned_linear
from .sage_fused import sage_fused
from .sage_projected import sage_projected

__all__ = ["aggregate", "fused_layer", "expand_hop", "k_hop_support", "hop_random_seed", "HopBlock", "ALL_NEIGHBOURS",
           "lasso_cd", "lasso_select", "pruned_linear", "sage_fused", "sage_projected"]
