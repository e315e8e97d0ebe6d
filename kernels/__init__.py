"""Triton kernels of gnnaccel (installed as ``gnnaccel.kernels``).

Importing this package does not import triton: ``kernels.triton_ops`` does, and is imported on first use by
:mod:`gnnaccel.backend`, so that a missing or broken triton never breaks ``import gnnaccel``.
"""
