"""Shared benchmark fixtures: synthetic graphs built once per session (generation takes seconds at 1M nodes)."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks")


@functools.lru_cache(maxsize=4)
def synthetic_graph(num_nodes: int, avg_degree: float, num_features: int, seed: int = 0):
    from gnnaccel.datasets import synthetic

    return synthetic(num_nodes, avg_degree, num_features, seed=seed)


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="small graphs only (smoke run of the suites)")


@pytest.fixture(scope="session")
def quick(request):
    return request.config.getoption("--quick")
