"""A relation-aware GraphSAGE layer for multi-relation graphs (e.g. YelpChi's R-U-R, R-S-R, R-T-R):
one neighbour branch per relation,

    out_i = x_i W_self + sum_r mean_{j in N_r(i)} x_j W_r + b,

an empty relation contributing 0 (PyG's convention for an empty mean).

How the layer knows each edge's relation: the graph it runs on is the *union* of the relations, one CSR edge
per related pair, whose per-edge value (``edge_weight``) is the pair's **relation bitmask** (bit ``r`` set
when the pair is related by relation ``r``; build it with :func:`relation_graph`). That value is exactly
what the block protocol already carries (:attr:`Block.edge_weight` is the message graph's per-edge values,
sliced by the engines with the block's edge ids, and ``BatchedEngine.add_nodes`` / ``add_edges`` take the
values of new edges), so engines, caches, sampling and graph growth need nothing relation-specific, and a
pair in several relations (same product, same rating, same month) is one edge visited once by hop
expansion. The layer splits a block by relation (one CSR per relation, the edges whose bitmask has that
bit) and takes a plain mean over each, so the per-edge values do not depend on degrees
(``degree_normalised = False``: an inserted edge changes only its target's aggregation).

Bitmask values are small integers stored in the features' float dtype (exact up to 2**24 in float32).
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..graph import Graph
from ..ops.aggregate import aggregate
from ..ops.fused_layer import fused_layer
from .adjacency import Adjacency, as_graph
from .conv import (_PrunableConv, _as_index, _check_features, _fold_bias, _select_rows, _self_term, _set_bias,
                   _rows)
from .parts import Branch, LinearParts
from .protocol import Block

__all__ = ["RelationalSAGEConv", "relation_graph", "split_relations", "MAX_RELATIONS"]

MAX_RELATIONS = 16


def _check_num_relations(num_relations) -> int:
    if isinstance(num_relations, bool) or not isinstance(num_relations, int) or not 1 <= num_relations <= MAX_RELATIONS:
        raise ValueError(f"num_relations must be an int in [1, {MAX_RELATIONS}], got {num_relations!r}")
    return num_relations


def relation_graph(relations: Sequence[Tensor], num_nodes: int, dtype: torch.dtype = torch.float32) -> Graph:
    """The union graph of ``relations`` with each edge's relation bitmask as its value.

    Args:
        relations: one edge_index [2, E_r] per relation (PyG flow; duplicates within a relation are merged).
        num_nodes: N.
        dtype: floating dtype of the bitmask values.
    Returns:
        A Graph with one edge per distinct (source, target) pair of the union, ``edge_weight`` = sum of
        ``2**r`` over the relations ``r`` holding the pair.
    """
    _check_num_relations(len(relations))
    keys, bits = [], []
    for r, ei in enumerate(relations):
        ei = torch.as_tensor(ei)
        if ei.dim() != 2 or ei.shape[0] != 2:
            raise ValueError(f"relation {r}: edge_index must have shape [2, E], got {list(ei.shape)}")
        ei = ei.long()
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
            raise ValueError(f"relation {r}: edge_index holds a node id outside [0, {num_nodes})")
        k = torch.unique(ei[1] * num_nodes + ei[0])
        keys.append(k)
        bits.append(torch.full_like(k, 1 << r))
    key = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)
    uniq, inverse = torch.unique(key, return_inverse=True)
    mask = torch.zeros(uniq.numel(), dtype=torch.long).index_add_(0, inverse, torch.cat(bits) if bits else key)
    edge_index = torch.stack([uniq % num_nodes, uniq // num_nodes]) if num_nodes else uniq.view(2, 0)
    return Graph.from_edge_index(edge_index, num_nodes, mask.to(dtype))


# The split of a block by relation, memoised while its tensors live and are not modified in place (training
# and full-graph inference run every step on the same graph; the split is also what makes aggregate's
# memoised transpose of each relation's CSR hit). Keyed by id(edge values) with weak references, like the
# transposes of gnnaccel.ops.aggregate; inference tensors (the engine's per-batch blocks) are not memoised.
_SPLITS: Dict[int, tuple] = {}


def _split(rowptr: Tensor, col: Tensor, values: Tensor, num_relations: int) -> List[Tuple[Tensor, Tensor]]:
    mask = values.to(torch.int64)
    starts = rowptr.long()
    out = []
    for r in range(num_relations):
        bit = (mask >> r) & 1
        # rowptr_r[i] = edges of relation r before row i's first edge: the prefix count at rowptr[i]
        prefix = torch.cat([bit.new_zeros(1), torch.cumsum(bit, 0)])
        out.append((prefix.index_select(0, starts).to(rowptr.dtype),
                    col.index_select(0, torch.nonzero(bit).flatten())))
    return out


def split_relations(rowptr: Tensor, col: Tensor, values: Tensor, num_relations: int) -> List[Tuple[Tensor, Tensor]]:
    """A relation-bitmask CSR split by relation.

    Args:
        rowptr, col: the CSR (rows = targets). values: [E] relation bitmask of each edge (float or int).
        num_relations: R.
    Returns:
        For each relation ``r``: ``(rowptr_r, col_r)``, the edges whose bitmask has bit ``r`` (same rows, edge
        order kept). Aggregating each with a plain mean costs that relation's edges only.
    """
    tensors = (rowptr, col, values)
    if any(type(t) is not Tensor for t in tensors) or torch.compiler.is_compiling():
        return _split(rowptr, col, values, num_relations)
    try:
        stamp = tuple(t._version for t in tensors) + (num_relations,)
    except RuntimeError:  # inference tensors keep no version counter: do not memoise
        return _split(rowptr, col, values, num_relations)
    hit = _SPLITS.get(id(values))
    if hit is not None and all(ref() is t for ref, t in zip(hit[0], tensors)) and hit[1] == stamp:
        return hit[2]
    result = _split(rowptr, col, values, num_relations)
    if hit is None or hit[0][2]() is not values:
        weakref.finalize(values, _SPLITS.pop, id(values), None)
    _SPLITS[id(values)] = (tuple(weakref.ref(t) for t in tensors), stamp, result)
    return result


class RelationalSAGEConv(_PrunableConv):
    r"""``out_i = x_i W_self + sum_r mean_{j in N_r(i)} x_j W_r + b`` over a :func:`relation_graph` (module doc).

    Parameters: ``lin_self`` (with the bias ``b``) and ``lins[r]`` (no bias). Block protocol: aggregates
    first (the block split into one CSR per relation, each through the fused-layer op entry with a mean).
    Pruning protocol: branches ``"self"`` (identity) and ``"rel0" .. "rel{R-1}"`` (mean over that relation),
    sum form; the batched scheme keeps the self branch's raw features whole and prunes each relation branch.
    """

    reads_self = True
    degree_normalised = False

    def __init__(self, in_channels: int, out_channels: int, num_relations: int = 3, bias: bool = True):
        super().__init__()
        self.num_relations = _check_num_relations(num_relations)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.branch_names = ("self",) + tuple(f"rel{r}" for r in range(num_relations))
        self.lin_self = nn.Linear(in_channels, out_channels, bias=bias)
        self.lins = nn.ModuleList(nn.Linear(in_channels, out_channels, bias=False) for _ in range(num_relations))
        self._init_input_index()

    def reset_parameters(self):
        self.lin_self.reset_parameters()
        for lin in self.lins:
            lin.reset_parameters()

    def forward(self, x: Tensor, adj: Adjacency, rows=None) -> Tensor:
        """Output rows ``rows`` (node ids; all if None) on ``adj``, a Graph whose ``edge_weight`` holds the
        relation bitmask of every edge (:func:`relation_graph`)."""
        _check_features(x)
        graph = as_graph(adj, x.shape[0])
        self._check_relation_values(graph.edge_weight)
        return self._forward_graph(x, graph, rows)

    def _check_relation_values(self, values: Optional[Tensor]) -> None:
        if values is None:
            raise ValueError("RelationalSAGEConv needs the relation bitmask of every edge as the graph's "
                             "edge_weight (build the graph with gnnaccel.nn.relational.relation_graph)")
        if values.numel():
            bad = (values < 0) | (values >= 2 ** self.num_relations) | (values != torch.floor(values))
            if bool(bad.any()):
                raise ValueError(f"edge values must be relation bitmasks: integers in [0, {2 ** self.num_relations})"
                                 f" for {self.num_relations} relations")

    # ------------------------------------------------------------------ block protocol
    def neighbour_channels(self) -> Optional[Tensor]:
        """None: each relation branch may read its own channel subset (it slices ``x`` itself)."""
        return None

    def _relation_blocks(self, block: Block) -> List[Tuple[Tensor, Tensor]]:
        """The block split by relation (:func:`split_relations`), memoised for a whole graph's block."""
        if block.edge_weight is None:
            raise ValueError("RelationalSAGEConv needs the relation bitmask of every edge as the block's "
                             "edge_weight (the graph must be built with relation_graph)")
        return split_relations(block.rowptr, block.col, block.edge_weight, self.num_relations)

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: ``x_i W_self + b + sum_r mean_{j in N_r(i)} x_j W_r`` for the asked rows (the first
        relation's call carries the self term and the bias)."""
        self_rows = None
        if block.self_rows is not None:
            self_rows = block.self_rows if rows is None else block.self_rows.index_select(0, rows)
        elif rows is None and x.shape[0] != block.num_rows:
            self_rows = torch.arange(block.num_rows, device=x.device)
        out = None
        for r, ((rowptr, col), lin) in enumerate(zip(self._relation_blocks(block), self.lins)):
            if out is None:
                out = fused_layer(rowptr, col, x, lin.weight.t(), self.lin_self.weight.t(), self.lin_self.bias,
                                  None, rows, self_rows, self._input_index(f"rel{r}"), self._input_index("self"),
                                  "mean")
            else:
                out = out + fused_layer(rowptr, col, x, lin.weight.t(), None, None, None, rows, None,
                                        self._input_index(f"rel{r}"), None, "mean")
        return out

    # ------------------------------------------------------------------ pruning protocol
    def linear_parts(self) -> LinearParts:
        cols = torch.arange(self.out_channels, device=self.lin_self.weight.device)
        branches = [Branch("self", self.lin_self.weight.t(), cols, "identity")]
        branches += [Branch(f"rel{r}", lin.weight.t(), cols, "mean") for r, lin in enumerate(self.lins)]
        return LinearParts(self.in_channels, self.out_channels, branches, self.lin_self.bias, "sum",
                           {"input_index": {n: self._input_index(n) for n in self.branch_names}})

    def branch_inputs(self, graph: Adjacency, h: Tensor, rows: Optional[Tensor] = None) -> Dict[str, Tensor]:
        rows = _rows(rows, h)
        graph = as_graph(graph, h.shape[0])
        self._check_relation_values(graph.edge_weight)
        block = Block(graph.num_nodes, graph.rowptr, graph.col, graph.edge_weight)
        out = {"self": _select_rows(self._branch_input(h, "self"), rows)}
        for r, (rowptr, col) in enumerate(self._relation_blocks(block)):
            z = self._branch_input(h, f"rel{r}").contiguous()
            out[f"rel{r}"] = aggregate(rowptr, col, z, "mean", None, rows)
        return out

    @torch.no_grad()
    def load_pruned(self, input_keep, weights, bias=None):
        keeps = self._check_load(input_keep, weights, {n: self.out_channels for n in self.branch_names})
        dev, dt = self.lin_self.weight.device, self.lin_self.weight.dtype
        for name, lin in zip(self.branch_names, [self.lin_self, *self.lins]):
            lin.weight = nn.Parameter(weights[name].t().to(dev, dt).contiguous())
            lin.in_features = keeps[name].numel()
        _set_bias(self.lin_self, "bias", bias, self.out_channels)
        self._install_input_index(keeps)

    @torch.no_grad()
    def prune_outputs(self, keep):
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin_self.weight.device)
        for lin in [self.lin_self, *self.lins]:
            lin.weight = nn.Parameter(lin.weight[keep].contiguous())
            lin.out_features = keep.numel()
        if self.lin_self.bias is not None:
            self.lin_self.bias = nn.Parameter(self.lin_self.bias[keep].contiguous())
        self.out_channels = keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale: Tensor, shift: Tensor) -> None:
        for lin in [self.lin_self, *self.lins]:
            lin.weight.mul_(scale.unsqueeze(1).to(lin.weight))
        _fold_bias(self.lin_self, "bias", scale, shift)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"num_relations={self.num_relations}{self._pruned_repr()})")
