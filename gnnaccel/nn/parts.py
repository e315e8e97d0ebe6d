"""The small, uniform description of a layer's linear algebra that the pruner works on.

Every convolution in :mod:`gnnaccel.nn` computes its pre-activation output as a sum of branches

    y[:, branch.cols] += Z_branch @ branch.weight        (+ bias)

where ``Z_branch`` is the layer input ``h`` propagated by ``branch.propagation``:

* ``"identity"``: ``Z = h``                               (SAGE root/self branch)
* ``"mean"``:     ``Z = mean_{j in N(i)} h_j``            (SAGE neighbour branch, mean aggregation)
* ``"sum"``:      ``Z = sum_{j in N(i)} h_j``
* ``"max"``:      ``Z = max_{j in N(i)} h_j``  (not linear in h: pruned, but the Gram is only a surrogate)
* ``"gcn"``:      ``Z = D^-1/2 (A + I) D^-1/2 h``        (GCN)

Sum form (PyG SAGEConv, GCNConv): every branch writes all output columns. Concat form (GraphSAINT): each
branch writes its own block of columns. Removing input channel ``i`` of ``h`` removes row ``i`` of every
branch weight -- the rank-1 blocks of DESIGN.md section 3.

Pruning protocol (implemented by gnnaccel.nn.SAGEConv, GCNConv, SAINTConv, Dense; how layers are run is the
block protocol of :mod:`gnnaccel.nn.protocol`):

* ``linear_parts() -> LinearParts``: the current weights in [in, out] orientation.
* ``branch_inputs(graph, h, rows=None) -> Dict[str, Tensor]``: ``Z_branch`` for ``rows`` (all nodes if None),
  from the layer input ``h`` of all nodes.
* ``load_pruned(input_keep, weights, bias)``: install pruned weights. ``input_keep[name]`` (LongTensor) are
  the kept input channels of branch ``name`` (indices into the current input), ``weights[name]`` the new
  [len(keep), len(cols)] weight. When all branches keep the same channels the layer simply becomes narrower;
  otherwise (batched scheme, first layer) the layer stores per-branch input index buffers and slices.
* ``prune_outputs(keep)``: keep only the output channels ``keep`` (weights' columns, bias entries).

Details as implemented by the layers of :mod:`gnnaccel.nn.conv`:

* Per-branch input subsets: ``parts.extra["input_index"][name]`` is None (the branch reads every input
  channel) or the LongTensor of input channels it reads; then ``branch.weight`` has one row per entry.
  ``parts.in_channels`` is always the width of the ``h`` the layer is fed. ``branch_inputs`` returns each
  ``Z_branch`` already restricted to the branch's channels, so ``sum_b Z_b @ W_b (+ bias)`` is the layer's
  pre-activation output (``forward``; SAINTConv: ``forward`` with ``act=None``).
* ``load_pruned``: ``input_keep`` must name every branch; indices refer to the channels of the current ``h``
  (unique, in range); ``weights[name]`` is ``[len(keep), len(cols)]`` ([in, out] orientation); ``bias`` is
  required when the layer has one (it replaces it; SAINT: the concatenated ``[b_self || b_neigh]``).
  Equal keeps -> the layer is narrower (``in_channels = len(keep)``), no index buffers, and the caller must
  feed ``h[:, keep]`` (``prune_outputs(keep)`` on the previous layer). Different keeps -> ``in_channels``
  is unchanged and ``input_index_<branch>`` buffers hold the keeps; ``forward`` slices ``h`` per branch
  (root branch through ``pruned_linear``, neighbour branch aggregating only its channels).
* ``prune_outputs(keep)``: output order follows ``keep``; SAINTConv needs ``keep`` strictly increasing
  (the self block stays first). Duplicates are rejected.
* ``scale_outputs(scale, shift)``: folds a per-output-channel affine map (BatchNorm) into weights and bias.
* ``extra["outputs_are_layer_outputs"]`` (default True): False when the branches' outputs are not the layer's
  output channels (GATConv: ``x W`` and the attention terms, which the attention then combines); the pruner
  then selects without the next layer's metric and refuses ``refit="sequential"``. ``prune_outputs`` still
  takes the layer's own output channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from torch import Tensor

PROPAGATIONS = ("identity", "mean", "sum", "max", "gcn")


@dataclass
class Branch:
    name: str
    weight: Tensor  # [in_channels, len(cols)]
    cols: Tensor  # int64 output columns written by this branch
    propagation: str

    def __post_init__(self):
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"unknown propagation {self.propagation!r}; expected one of {PROPAGATIONS}")


@dataclass
class LinearParts:
    in_channels: int
    out_channels: int
    branches: List[Branch]
    bias: Optional[Tensor] = None  # [out_channels]
    form: str = "sum"  # "sum" or "concat"
    extra: Dict[str, object] = field(default_factory=dict)

    def branch(self, name: str) -> Branch:
        for b in self.branches:
            if b.name == name:
                return b
        raise KeyError(f"no branch named {name!r}; have {[b.name for b in self.branches]}")
