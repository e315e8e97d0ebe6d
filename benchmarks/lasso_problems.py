"""Realistic channel-selection problems for the solver benchmark, and their scikit-learn equivalent."""
from __future__ import annotations

import functools

import numpy as np
import torch

from gnnaccel.pruning import SecondMoment, gram_from_moments


@functools.lru_cache(maxsize=4)
def selection_problem(c: int, out: int = 128, rows: int = 8192, seed: int = 0):
    """(G, q, y_sq) of a SAGE-like sum-form layer: ReLU hidden activations with correlated channels of
    unequal scale as the self branch, a neighbour mean (self mixed with other rows) as the second branch."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=gen) / c ** 0.5 + torch.eye(c)
    scale = torch.rand(c, generator=gen) * 2 + 0.1
    acc = SecondMoment(2 * c)
    for _ in range(rows // 1024):
        h = torch.relu(torch.randn(1024, c, generator=gen) @ mix + 0.2) * scale
        neigh = 0.6 * h + 0.4 * torch.relu(torch.randn(1024, c, generator=gen) @ mix) * scale
        acc.update(h, neigh)
    weights = [torch.randn(c, out, generator=gen) / c ** 0.5 for _ in range(2)]
    return gram_from_moments(acc.moment, weights, form="sum")


def sklearn_equivalent(G: torch.Tensor, q: torch.Tensor):
    """X, y with X'X / m = G and X'y / m = q (m = c rows, from a Cholesky factor), the Gram and Xy in
    sklearn's unscaled convention, and y_sq = ||y||^2 / m, so both solvers see the very same problem."""
    G64 = G.double().numpy()
    m = G64.shape[0]
    L = np.linalg.cholesky(G64)
    X = np.sqrt(m) * L.T
    y = np.sqrt(m) * np.linalg.solve(L, q.double().numpy())
    X = np.asfortranarray(X)
    return X, y, X.T @ X, X.T @ y, float(y @ y / m)
