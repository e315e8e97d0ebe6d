"""The node-classification dataset record shared by the synthetic generator and the real-data loaders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..graph import Graph


@dataclass
class GraphData:
    """A node-classification graph: structure, features, labels and a train/val/test split."""

    graph: Graph
    x: Tensor
    y: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int
    name: str = ""

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def to(self, device) -> "GraphData":
        return GraphData(self.graph.to(device), self.x.to(device), self.y.to(device), self.train_mask.to(device),
                         self.val_mask.to(device), self.test_mask.to(device), self.num_classes, self.name)


def random_split_masks(num_nodes: int, train: float = 0.6, val: float = 0.2, seed: int = 0,
                       labelled: Optional[Tensor] = None):
    """Seeded random train/val/test masks over the labelled nodes (all nodes when ``labelled`` is None)."""
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.arange(num_nodes) if labelled is None else torch.nonzero(labelled).flatten()
    perm = candidates[torch.randperm(candidates.numel(), generator=gen)]
    n_train, n_val = int(train * perm.numel()), int(val * perm.numel())
    masks = []
    for idx in (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[idx] = True
        masks.append(mask)
    return masks
