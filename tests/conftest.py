"""Shared fixtures: random graphs with the edge cases that matter, and float64 dense references."""
from __future__ import annotations

import os
from pathlib import Path

# Triton reads TRITON_INTERPRET when its own library functions (tl.max, ...) are decorated, i.e. at the first
# `import triton` anywhere in the process: set it before anything can import triton. Without a GPU the Triton
# kernels' logic is then checked by the interpreter on CPU tensors.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import ctypes.util
        _has_cuda_driver = ctypes.util.find_library("cuda") is not None
    except Exception:  # pragma: no cover
        _has_cuda_driver = False
    if not _has_cuda_driver:
        os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GNNACCEL_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def random_edge_index(num_nodes: int, num_edges: int, generator: torch.Generator, power_law: bool = False,
                      hub: bool = False) -> torch.Tensor:
    """Random directed edges; may contain self loops and duplicates. ``hub``: node 0 receives many edges."""
    if num_nodes == 0 or num_edges == 0:
        return torch.empty(2, 0, dtype=torch.long)
    if power_law:
        weights = torch.arange(1, num_nodes + 1, dtype=torch.float64).pow(-1.2)
        src = torch.multinomial(weights, num_edges, replacement=True, generator=generator)
        dst = torch.multinomial(weights, num_edges, replacement=True, generator=generator)
    else:
        src = torch.randint(num_nodes, (num_edges,), generator=generator)
        dst = torch.randint(num_nodes, (num_edges,), generator=generator)
    if hub:
        dst[: num_edges // 2] = 0
    return torch.stack([src, dst])


def dense_aggregate(edge_index: torch.Tensor, num_nodes: int, x: torch.Tensor, reduce: str,
                    edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Float64 reference: loop over target nodes, reduce the weighted messages of their in-edges."""
    x64 = x.double()
    out = torch.zeros(num_nodes, x.shape[1], dtype=torch.float64)
    src, dst = edge_index
    for i in range(num_nodes):
        sel = (dst == i).nonzero().flatten()
        if sel.numel() == 0:
            continue
        msgs = x64[src[sel]]
        if edge_weight is not None:
            msgs = msgs * edge_weight[sel].double().unsqueeze(1)
        if reduce == "sum":
            out[i] = msgs.sum(0)
        elif reduce == "mean":
            out[i] = msgs.mean(0)
        elif reduce == "max":
            out[i] = msgs.max(0).values
        elif reduce == "min":
            out[i] = msgs.min(0).values
    return out


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(torch.randint(0, 2**31 - 1, ()).item())


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set GNNACCEL_DATA)")
    return SHARED_DATA
