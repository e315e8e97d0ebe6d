"""A contextual stochastic block model with power-law degrees, generated in seconds at 1M nodes / 20M edges."""
from __future__ import annotations

import torch

from .._memory import empty_for_gather
from ..graph import Graph
from .base import GraphData, random_split_masks


def synthetic(num_nodes: int = 10_000, avg_degree: float = 10.0, num_features: int = 64, num_classes: int = 8,
              seed: int = 0, homophily: float = 0.7, power_law_exponent: float = 2.5,
              feature_signal: float = 1.0, index_dtype: torch.dtype = torch.int64) -> GraphData:
    """Generate an undirected graph whose nodes have power-law degrees and class-correlated features.

    Each node gets a class and a degree propensity theta ~ Pareto(power_law_exponent - 1). An edge picks its
    first end proportionally to theta and its second end, with probability ``homophily``, among nodes of the
    same class (again proportionally to theta), else among all nodes. Both directions are stored, so the
    average in-degree is ``avg_degree``. Features are ``feature_signal * mu[class] + N(0, 1)`` with random class
    centroids ``mu``. Splits are 60/20/20 at random. Everything depends only on ``seed``.
    """
    if num_nodes <= 0 or avg_degree < 0 or num_features <= 0 or num_classes <= 0:
        raise ValueError("num_nodes, num_features and num_classes must be positive and avg_degree non-negative")
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    if power_law_exponent <= 1.0:
        raise ValueError(f"power_law_exponent must exceed 1, got {power_law_exponent}")
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (num_nodes,), generator=gen)
    uniform = torch.rand(num_nodes, generator=gen, dtype=torch.float64).clamp_min(1e-12)
    theta = uniform.pow(-1.0 / (power_law_exponent - 1.0))  # Pareto, minimum 1
    theta = theta.clamp_max(theta.sum() ** 0.5)  # cap the largest degree near sqrt(total), as real graphs do

    # Nodes sorted by class give one cumulative distribution over which each class is a contiguous segment.
    by_class = torch.argsort(y, stable=True)
    cdf = torch.cumsum(theta[by_class], 0)
    total = float(cdf[-1])
    cdf = (cdf / total).clamp_max(1.0)
    class_counts = torch.bincount(y, minlength=num_classes)
    class_end = torch.cumsum(class_counts, 0)
    class_start = class_end - class_counts
    seg_lo = torch.where(class_start > 0, cdf[(class_start - 1).clamp_min(0)], torch.zeros((), dtype=cdf.dtype))
    seg_hi = cdf[(class_end - 1).clamp_min(0)]

    num_pairs = int(round(num_nodes * avg_degree / 2))
    u = torch.rand(num_pairs, generator=gen, dtype=torch.float64)
    first = by_class[torch.searchsorted(cdf, u).clamp_max(num_nodes - 1)]
    same = torch.rand(num_pairs, generator=gen) < homophily
    v = torch.rand(num_pairs, generator=gen, dtype=torch.float64)
    c = y[first]
    lo = torch.where(same, seg_lo[c], torch.zeros((), dtype=cdf.dtype))
    hi = torch.where(same, seg_hi[c], torch.ones((), dtype=cdf.dtype))
    second = by_class[torch.searchsorted(cdf, lo + v * (hi - lo)).clamp_max(num_nodes - 1)]
    del u, v, lo, hi, same, c
    edge_index = torch.cat([torch.stack([first, second]), torch.stack([second, first])], dim=1)
    graph = Graph.from_edge_index(edge_index, num_nodes, index_dtype=index_dtype)
    del edge_index

    centroids = torch.randn(num_classes, num_features, generator=gen)
    # The features are gathered row by row by every aggregate-first layer: back them with huge pages.
    x = torch.randn(num_nodes, num_features, generator=gen, out=empty_for_gather((num_nodes, num_features),
                                                                                  centroids))
    x.add_(feature_signal * centroids[y])
    train, val, test = random_split_masks(num_nodes, seed=seed)
    return GraphData(graph, x, y, train, val, test, num_classes, name=f"synthetic-{num_nodes}")
