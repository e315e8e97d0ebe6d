"""Loading of the compiled extension ``gnnaccel._C``.

Importing gnnaccel never fails because the extension is missing (a source checkout that was not built, a
wheel for another torch): it warns once, and calling an operator raises :class:`ExtensionNotBuiltError`
saying how to build it.
"""
from __future__ import annotations

import warnings

import torch

BUILD_HINT = ("build it with `pip install -e . --no-build-isolation` (or `make build`) in the gnnaccel source "
              "tree, against the torch you run")


class ExtensionNotBuiltError(RuntimeError):
    """Raised when an operator is called but ``gnnaccel._C`` could not be loaded."""


try:
    from . import _C  # noqa: F401  (loading the .so registers the operators)
    EXTENSION_LOADED = True
    EXTENSION_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only without a build
    EXTENSION_LOADED = False
    EXTENSION_ERROR = str(exc)
    warnings.warn(f"gnnaccel._C could not be loaded ({exc}); operators are unavailable: {BUILD_HINT}",
                  RuntimeWarning, stacklevel=2)


def require_extension() -> None:
    if not EXTENSION_LOADED:
        raise ExtensionNotBuiltError(f"gnnaccel._C is not available ({EXTENSION_ERROR}): {BUILD_HINT}")


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``gnnaccel::<op>`` has a kernel for ``dispatch_key`` ('CPU', 'CUDA')."""
    if not EXTENSION_LOADED:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"gnnaccel::{op}", dispatch_key)


def registered_ops() -> list:
    """Names of the operators that gnnaccel._C registered."""
    if not EXTENSION_LOADED:
        return []
    return sorted({name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
                   if name.startswith("gnnaccel::")})


# Operators that run on the CPU by design (none at present: every operator has a CUDA kernel).
CPU_ONLY_OPS = frozenset()


def cuda_kernel_report() -> bool:
    """Print, per operator, which kernels are registered; True when every operator outside CPU_ONLY_OPS has
    a CUDA kernel (the check `make cuda-check` runs against a CUDA build of torch)."""
    ops = registered_ops()
    ok = bool(ops)
    for op in ops:
        has_cuda = has_kernel(op, "CUDA")
        expected = op not in CPU_ONLY_OPS
        ok &= has_cuda or not expected
        note = "" if expected else " (CPU-only by design)"
        print(f"gnnaccel::{op}: CPU={has_kernel(op, 'CPU')} CUDA={has_cuda}{note}")
    return ok
