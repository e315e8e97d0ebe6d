"""Loading of the compiled extension ``gnnaccel._C``.

Importing gnnaccel never fails because the extension is missing (a source checkout that was not built, a
wheel for another torch): it warns once, and calling an operator raises :class:`ExtensionNotBuiltError`
saying how to build it. The extension is compiled against one torch release and crashes under another (the
C++ ABI changes between releases), so the build records its torch version (``gnnaccel/_build_info.py``,
written by setup.py's build_ext) and ``_C`` is not even loaded under a different torch: same warning, same
error on use, naming both versions.
"""
from __future__ import annotations

import warnings

import torch

BUILD_HINT = ("build it with `pip install -e . --no-build-isolation` (or `make build`) in the gnnaccel source "
              "tree, against the torch you run")


class ExtensionNotBuiltError(RuntimeError):
    """Raised when an operator is called but ``gnnaccel._C`` could not be loaded."""


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def build_torch_version() -> str | None:
    """The torch version gnnaccel._C was built against (None for a build that did not record it)."""
    try:
        from ._build_info import TORCH_VERSION
    except ImportError:
        return None
    return TORCH_VERSION


def torch_mismatch(built: str | None, running: str) -> str | None:
    """Why ``_C`` built against torch ``built`` must not be loaded under ``running`` (None when it may): the
    release must match (local labels such as +cpu / +cu130 aside, as the wheel's requirement)."""
    if built is None or _public(built) == _public(running):
        return None
    return (f"it was built against torch {built} but torch {running} is running (the C++ ABI differs between "
            f"torch releases: loading it would crash); install torch=={_public(built)} or rebuild gnnaccel")


def _load() -> str | None:
    """Load _C (registering the operators); the reason it is unavailable, or None."""
    mismatch = torch_mismatch(build_torch_version(), torch.__version__)
    if mismatch is not None:
        return mismatch
    try:
        from . import _C  # noqa: F401  (loading the .so registers the operators)
    except ImportError as exc:
        return str(exc)
    return None


EXTENSION_ERROR: str | None = _load()
EXTENSION_LOADED = EXTENSION_ERROR is None
if not EXTENSION_LOADED:
    warnings.warn(f"gnnaccel._C could not be loaded ({EXTENSION_ERROR}); operators are unavailable: {BUILD_HINT}",
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


# Operators without a CUDA kernel: gat_aggregate's GPU path is its Triton kernel (kernels/gat_aggregate.py),
# and a PyTorch composition where triton is missing.
CPU_ONLY_OPS = frozenset({"gat_aggregate"})


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
