"""Registration and launch helpers shared by the Triton kernels of gnnaccel (no triton import)."""
from __future__ import annotations

import os

import torch
from torch import Tensor

REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2, "min": 3}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(x: Tensor, op: str) -> None:
    if not (x.is_cuda or interpreting()):
        raise RuntimeError(f"{op} runs on CUDA tensors; on {x.device.type} tensors only under Triton's interpreter "
                           "(TRITON_INTERPRET=1 set before triton is imported)")


def skip_launch(x: Tensor) -> bool:
    """Under the interpreter a fake (tracing) tensor only needs the output's shape: the interpreter would run
    the kernel on it. (On CUDA the launch goes through ``wrap_triton``, which traces instead.)"""
    from torch._subclasses.fake_tensor import is_fake
    return interpreting() and is_fake(x)


def register_triton_op(name: str):
    """``torch.library.triton_op`` (torch.compile sees into the kernel); under Triton's interpreter, where
    ``wrap_triton`` cannot trace, an opaque ``custom_op`` with the same body as its fake kernel (the body
    skips the launch for fake tensors), so that ops and models still trace with ``fullgraph=True``."""
    def decorate(fn):
        if interpreting():
            op = torch.library.custom_op(name, fn, mutates_args=())
            op.register_fake(fn)
            return op
        return torch.library.triton_op(name, fn, mutates_args={})
    return decorate
