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


class InterleavedBest:
    """Best-of-rounds times of several implementations run alternately, one call each per round.

    Alternating within a round exposes every implementation to the same load on a shared machine, so the
    ratios of the minima are the figures to quote. Call the object once per round (e.g. as the unit that
    ``benchmark.pedantic`` times); read ``best[name]`` afterwards.
    """

    def __init__(self, fns):
        import time

        self._clock = time.perf_counter
        self.fns = dict(fns)
        self.best = {name: float("inf") for name in self.fns}

    def warm_up(self):
        for fn in self.fns.values():
            fn()

    def __call__(self):
        for name, fn in self.fns.items():
            start = self._clock()
            fn()
            self.best[name] = min(self.best[name], self._clock() - start)

    def run(self, rounds: int):
        self.warm_up()
        for _ in range(rounds):
            self()
        return self.best
