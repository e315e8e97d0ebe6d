"""Which kernels the operator entry points (``gnnaccel.ops``) run: the backend switch.

    with gnnaccel.use_backend("triton"):   # "auto" (default), "cpp", "triton" or "torch"
        out = model(x, graph)

* ``"cpp"``: the compiled extension's kernels (C++/OpenMP on CPU tensors, the .cu kernels on CUDA tensors).
* ``"triton"``: the Triton kernels of ``gnnaccel.kernels``. On CPU tensors they run only under Triton's
  interpreter (``TRITON_INTERPRET=1`` set before triton is imported); otherwise the entry raises.
* ``"torch"``: a composition of PyTorch index ops, scatter-reduce and matmul; runs anywhere, differentiable.
* ``"auto"``: ``"cpp"`` on CPU tensors; on CUDA tensors ``"triton"`` when triton imports, else ``"cpp"``
  (with one warning saying why).

The selection is a thread-local stack of ``use_backend`` blocks over a process-wide default
(``set_default_backend``). Only the op entry points consult it (``kernel_backend``); layers, models and
engines never pick kernels by device themselves. torch.compile guards on the selection, so a compiled
function recompiles when it is called under another backend.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Iterator, Optional, Union

import torch

BACKENDS = ("auto", "cpp", "triton", "torch")

class _ThreadState(threading.local):
    def __init__(self):
        self.stack = []  # always present: a missing attribute of a thread-local costs a microsecond per lookup


_default = ["auto"]
_local = _ThreadState()
_triton_state: dict = {}  # "ok": bool, "error": str, "warned": bool


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the ops of this thread on backend ``name`` inside the ``with`` block (blocks nest).

    Args:
        name: "auto", "cpp", "triton" or "torch".
    Returns:
        A context manager yielding ``name``.
    """
    _check_name(name)
    stack = _local.stack
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


def set_default_backend(name: str) -> None:
    """Set the backend used outside any ``use_backend`` block, in every thread.

    Args:
        name: "auto", "cpp", "triton" or "torch".
    """
    _default[0] = _check_name(name)


def current_backend() -> str:
    """The backend selected now in this thread (innermost ``use_backend``, else the process default).

    Returns:
        "auto", "cpp", "triton" or "torch".
    """
    stack = _local.stack
    return stack[-1] if stack else _default[0]


def triton_interpreting() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET=1``): Triton kernels then run on CPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Whether triton and gnnaccel's Triton kernels import (checked once; a broken triton counts as absent).

    Returns:
        True when ``gnnaccel.kernels.triton_ops`` imported.
    """
    if "ok" not in _triton_state:
        try:
            from .kernels import triton_ops  # noqa: F401  (registers the gnnaccel::triton_* operators)
            _triton_state["ok"] = True
        except Exception as exc:  # a missing or broken triton must never break the package
            _triton_state["ok"] = False
            _triton_state["error"] = f"{type(exc).__name__}: {exc}"
    return _triton_state["ok"]


def triton_error() -> Optional[str]:
    """Why the Triton kernels did not import (None when they did or were not tried yet)."""
    return _triton_state.get("error")


def _warn_triton_fallback() -> None:
    if not _triton_state.get("warned"):
        _triton_state["warned"] = True
        warnings.warn(f"gnnaccel: triton is unavailable ({triton_error()}); CUDA tensors run the compiled .cu "
                      "kernels instead of the Triton kernels", RuntimeWarning, stacklevel=3)


def kernel_backend(device: Union[torch.device, str]) -> str:
    """The kernels an op entry point runs now for tensors on ``device``.

    Args:
        device: the device of the op's input tensors.
    Returns:
        "cpp", "triton" or "torch".
    Raises:
        RuntimeError: the Triton backend was asked for and cannot run here (triton broken or missing, or CPU
            tensors without ``TRITON_INTERPRET=1``).
    """
    stack = _local.stack
    name = stack[-1] if stack else _default[0]
    if name == "cpp" or name == "torch":
        return name
    dev_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    if name == "auto":
        if dev_type == "cuda":
            if triton_available():
                return "triton"
            _warn_triton_fallback()
        return "cpp"
    if name == "triton":
        if dev_type != "cuda" and not triton_interpreting():
            raise RuntimeError(f"the triton backend runs on CUDA tensors; on {dev_type} tensors it needs Triton's "
                               "interpreter: set TRITON_INTERPRET=1 in the environment before triton is imported")
        if not triton_available():
            raise RuntimeError(f"the triton backend was selected but triton is unavailable ({triton_error()})")
    return name
