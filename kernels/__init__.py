"""Triton kernels of gnnaccel (installed as ``gnnaccel.kernels``)."""
