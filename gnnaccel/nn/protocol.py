"""The layer block protocol: how models, ``full_inference`` and ``BatchedEngine`` run a layer.

Each layer is the only author of its math. Callers never look at a layer's class: they hand it a *block* (a
CSR slice of the graph it aggregates over) and ask for output rows; what they need to know to build the block
they ask through the fields below.

A **block** (:class:`Block`) describes ``num_rows`` output rows:

* ``rowptr`` [R+1], ``col`` [E]: CSR; row ``r`` aggregates the source rows ``x[col[e]]``,
  ``rowptr[r] <= e < rowptr[r+1]``. ``col`` indexes rows of the source table ``x`` (which may have more
  rows than the block: the full feature table, or the frontier of a hop). None for a layer that reads no
  neighbours.
* ``edge_weight`` [E] or None: per-edge values of the layer's *message graph* (see ``message_graph``) for
  these edges, in ``x``'s dtype. A caller that cuts a block out of the message graph slices them with the
  block's global edge ids; it never computes them.
* ``self_rows`` [R] or None: the row of ``x`` that holds output row ``r``'s own input (None: row ``r``).

A **layer** (``SAGEConv``, ``GCNConv``, ``SAINTConv``, ``Dense``, or any user type) provides:

* ``in_channels``, ``out_channels`` (int).
* ``reads_neighbours`` (bool): whether the output of a row depends on its neighbours (callers expand a hop
  and pass a block with ``rowptr``/``col``); ``reads_self`` (bool): whether it reads its own row of ``x``
  (``self_rows``) besides the neighbours.
* ``message_graph(graph, dtype) -> Graph``: the CSR the layer aggregates over, with its per-edge values
  (e.g. GCN: the normalised graph with self loops over the *full* graph, memoised in ``graph.cache``).
  Only called when ``reads_neighbours``. Blocks are cut out of this graph, and its ``edge_weight`` is what
  ``Block.edge_weight`` slices.
* ``degree_normalised`` (bool): whether those per-edge values depend on node degrees, so that inserting an
  edge ``(j, i)`` also changes the values of the edges around ``i`` (an engine with a cache invalidates one
  hop further).
* ``neighbour_channels() -> Optional[LongTensor]``: the input channels the neighbour aggregation reads (None =
  all). An engine may keep a compact copy ``x[:, neighbour_channels()]`` of a raw feature table and pass it
  as ``x_neigh``.
* ``block_plan(x, block, num_out=None) -> Optional[Tensor]``: work that does not depend on which rows are
  asked (e.g. a project-first layer's projection of every source row), computed once and passed back as
  ``plan=`` for every row subset of the same ``(x, block)``; ``num_out`` = the total number of rows that
  will be asked (default: all of the block's). None when the layer has nothing to precompute.
* ``table_plan(x, x_neigh=None) -> Optional[Tensor]`` (optional): a plan over every row of a source *table*
  (e.g. the projections of every raw feature row), valid as ``plan=`` for every block whose ``col`` and
  ``self_rows`` index rows of ``x``, with row ``i`` depending on ``x[i]`` only (so an engine that keeps it
  alongside a feature table updates the rows it changes). None when the layer has none or it does not pay.
* ``forward_block(x, block, rows=None, *, x_neigh=None, plan=None) -> Tensor [len(rows) or R, out_channels]``:
  output rows ``rows`` (positions into the block's rows, int64, trusted: callers validate user ids with
  :func:`gnnaccel.ids.as_node_ids`), including the layer's own epilogue (bias, normalisation, activation).
  ``x_neigh``: the compact copy of ``x[:, neighbour_channels()]`` (same rows as ``x``), or None.
  Layers call op entry points only (:mod:`gnnaccel.ops`), which pick the kernel for the device/backend.

A **model** (``gnnaccel.models``) provides ``convs`` (the layers, in order) and
``layer_block(i, x, block, rows=None, *, x_neigh=None, plan=None)``: layer ``i``'s ``forward_block`` followed by
whatever the model applies between layers (norm, activation; nothing after the last). ``model.layer``,
``model.forward``, ``full_inference`` and ``BatchedEngine`` all run layers through it.

The pruning protocol (``linear_parts``, ``branch_inputs``, ``load_pruned``, ...) is separate: see
:mod:`gnnaccel.nn.parts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..graph import Graph

__all__ = ["Block", "graph_block", "check_layer"]

_LAYER_FIELDS = ("in_channels", "out_channels", "reads_neighbours", "reads_self", "message_graph",
                 "degree_normalised", "neighbour_channels", "block_plan", "forward_block")


@dataclass
class Block:
    """A CSR block of output rows (see the module docstring)."""

    num_rows: int
    rowptr: Optional[Tensor] = None
    col: Optional[Tensor] = None
    edge_weight: Optional[Tensor] = None
    self_rows: Optional[Tensor] = None

    @property
    def num_edges(self) -> int:
        return 0 if self.col is None else self.col.numel()


def graph_block(layer, graph: Graph, dtype: torch.dtype) -> Block:
    """The block of every node of ``graph`` for ``layer`` (full-graph inference): the layer's message graph
    as is, sources = nodes."""
    if not layer.reads_neighbours:
        return Block(graph.num_nodes)
    mg = layer.message_graph(graph, dtype)
    w = mg.edge_weight
    if w is not None and w.dtype != dtype:
        w = w.to(dtype)
    return Block(mg.num_nodes, mg.rowptr, mg.col, w)


def check_layer(layer, where: str) -> None:
    """Raise TypeError naming what ``layer`` lacks of the block protocol."""
    missing = [f for f in _LAYER_FIELDS if not hasattr(layer, f)]
    if missing:
        raise TypeError(f"{where} needs layers implementing the gnnaccel block protocol "
                        f"(gnnaccel.nn.protocol); {type(layer).__name__} lacks {missing}")
