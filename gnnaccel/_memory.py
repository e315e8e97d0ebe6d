"""Host buffers that neighbour aggregation gathers from, backed by transparent huge pages where possible.

Aggregation reads one row per edge at a random address; over a buffer of hundreds of MB most of those reads
miss the TLB when the buffer sits on 4 KiB pages. On Linux with transparent huge pages in "madvise" mode
(the common default) a buffer advised with MADV_HUGEPAGE *before it is first written* is backed by 2 MiB
pages, which removes most of those misses (11-27% less time per gather-bound pass in single-thread A/B runs
on the development machine). PyTorch can do this for every allocation (environment variable
THP_MEM_ALLOC_ENABLE=1, read once at start-up); this module does it for the buffers gnnaccel itself creates
to be gathered from, so that users get it without that setting. Anything unusual (another OS, a device
tensor, a small buffer, madvise failing) simply yields an ordinary tensor.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Optional, Sequence

import torch
from torch import Tensor

_MADV_HUGEPAGE = 14
_HUGE_PAGE = 2 << 20
_MIN_BYTES = 4 * _HUGE_PAGE  # below this the TLB covers the buffer anyway
_madvise = None


def _libc_madvise():
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.madvise
                fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                _madvise = False
    return _madvise or None


def advise_huge_pages(t: Tensor) -> bool:
    """Ask the kernel to back the 2 MiB-aligned interior of ``t``'s (not yet written) memory with huge pages.
    Returns whether the advice was given. Never raises."""
    if t.device.type != "cpu" or t.untyped_storage().nbytes() < _MIN_BYTES or torch.compiler.is_compiling():
        return False
    madvise = _libc_madvise()
    if madvise is None:
        return False
    start = t.untyped_storage().data_ptr()
    end = start + t.untyped_storage().nbytes()
    aligned_start = (start + _HUGE_PAGE - 1) // _HUGE_PAGE * _HUGE_PAGE
    aligned_end = end // _HUGE_PAGE * _HUGE_PAGE
    if aligned_end <= aligned_start:
        return False
    return madvise(aligned_start, aligned_end - aligned_start, _MADV_HUGEPAGE) == 0


def empty_for_gather(shape: Sequence[int], like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.empty(shape)`` on ``like``'s device, advised to use huge pages when it is a large host buffer."""
    out = torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)
    advise_huge_pages(out)
    return out


def gemm_dtype(x: Tensor) -> torch.dtype:
    """The dtype a dense GEMM of ``x`` runs in: float32 for float16 on the CPU (whose float16 GEMM is an order
    of magnitude slower than float32; the result is rounded back once), else ``x.dtype`` (bfloat16 runs in
    bfloat16 through oneDNN)."""
    return torch.float32 if x.dtype == torch.float16 and x.device.type == "cpu" else x.dtype


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` in :func:`gemm_dtype` (the result in ``x.dtype``).

    Args:
        x: [..., in]. weight: [out, in]. bias: [out] or None.
    Returns:
        [..., out] in ``x.dtype``.
    """
    dt = gemm_dtype(x)
    if dt == x.dtype:
        return torch.nn.functional.linear(x, weight, bias)
    return torch.nn.functional.linear(x.to(dt), weight.to(dt), None if bias is None else bias.to(dt)).to(x.dtype)


def project_for_gather(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.t()`` (weight [out, in], as nn.Linear stores it) written into a huge-page buffer, for an
    inference projection that aggregation will gather from. Falls back to :func:`linear` where out= cannot be
    used (autograd recording, compile tracing)."""
    if (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)) or torch.compiler.is_compiling() \
            or x.dim() != 2 or gemm_dtype(x) != x.dtype:
        return linear(x, weight)
    out = empty_for_gather((x.shape[0], weight.shape[0]), x)
    return torch.mm(x, weight.t(), out=out)


def as_huge_pages(x: Tensor) -> Tensor:
    """``x`` copied into a huge-page-backed buffer when it is a large host tensor (else ``x`` itself).

    For node features that many inference calls aggregate (gather rows from) directly: call it once and keep
    the copy. Buffers that gnnaccel creates itself (projections, operator outputs, synthetic datasets) are
    already advised."""
    if x.device.type != "cpu" or x.untyped_storage().nbytes() < _MIN_BYTES or torch.compiler.is_compiling():
        return x
    out = empty_for_gather(x.shape, x)
    return out.copy_(x)


def available_memory_bytes(device) -> Optional[int]:
    """Memory that an allocation on ``device`` can still get, in bytes (None when unknown).

    Host: ``MemAvailable`` + ``SwapFree`` of /proc/meminfo (else the physical memory); an allocation beyond it
    would be refused or, with overcommit, get the process killed while being filled. CUDA: the device's total
    memory (the caching allocator raises a clean out-of-memory error below that). For checks that turn an absurd
    user-given size into an error naming it, before anything is allocated.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory if torch.cuda.is_available() else None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return fields["MemAvailable"] + fields.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
