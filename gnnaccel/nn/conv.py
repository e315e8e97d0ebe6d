"""Drop-in GNN layers with PyG semantics and parameter names, implementing the block protocol of
:mod:`.protocol` (how models and engines run them) and the pruning protocol of :mod:`.parts`.

Common conventions:

* ``forward(x, adj, rows=None)``: ``x`` holds the layer input of all nodes; ``rows`` (optional node ids,
  validated) restricts the output to those nodes. It is ``forward_block`` on the block of the whole graph.
* ``forward_block(x, block, rows, x_neigh=, plan=)``: the one place where a layer's math is written (see
  :mod:`.protocol`). A layer picks between aggregating first and projecting first by the cost of both on
  the block it is given (:func:`_projects_first`), and calls op entry points only.
* Pruning: ``linear_parts``, ``branch_inputs``, ``load_pruned``, ``prune_outputs`` (see parts.py). A branch
  may read a subset of the input channels (``input_index_<branch>`` buffer, None = all).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._memory import empty_for_gather, linear, project_for_gather
from ..graph import Graph, tracing
from ..ids import as_node_ids
from ..ops.aggregate import aggregate
from ..ops.fused_layer import fused_layer
from ..ops.pruned_linear import pruned_linear
from ..ops.sage_projected import sage_projected
from .adjacency import Adjacency, as_graph
from .parts import Branch, LinearParts
from .protocol import Block, graph_block

_ACTIVATIONS = {"relu": F.relu, "elu": F.elu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                "leaky_relu": F.leaky_relu, None: None, "identity": None}
_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _canonical_module_activation(act):
    """torch.nn activation modules with default settings (as PyG models carry them) -> their functional form,
    so that converted models behave and serialise like ones built from an activation name."""
    if isinstance(act, nn.ReLU):
        return F.relu
    if isinstance(act, nn.ELU) and act.alpha == 1.0:
        return F.elu
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return F.gelu
    if isinstance(act, nn.Tanh):
        return torch.tanh
    if isinstance(act, nn.Sigmoid):
        return torch.sigmoid
    if isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.01:
        return F.leaky_relu
    return act


def resolve_activation(act):
    if callable(act):
        return _canonical_module_activation(act)
    if act is None:
        return act
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {[k for k in _ACTIVATIONS if k]} or a callable")
    return _ACTIVATIONS[act]


def _edge_weight(graph: Graph, dtype: torch.dtype) -> Optional[Tensor]:
    w = graph.edge_weight
    return w.to(dtype) if w is not None and w.dtype != dtype else w


def _propagate(graph: Graph, x: Tensor, reduce: str, rows: Optional[Tensor],
               edge_weight: Optional[Tensor] = None) -> Tensor:
    if edge_weight is None:
        edge_weight = _edge_weight(graph, x.dtype)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"x must have {graph.num_nodes} rows (one per node), got {x.shape[0]}")
    return aggregate(graph.rowptr, graph.col, x.contiguous(), reduce, edge_weight, rows)


def _rows(rows, x: Tensor) -> Optional[Tensor]:
    """Validated output rows (node ids into ``x``) or None: the layers' ``rows=`` argument."""
    return None if rows is None else as_node_ids(rows, x.shape[0], "rows", device=x.device)


def _check_features(x, name: str = "x") -> None:
    """Node features must be a dense 2-D floating-point tensor [num_nodes, channels]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got a sparse one ({x.layout}); call .to_dense() first")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [num_nodes, channels], got shape {list(x.shape)} (PyG's 3-D "
                         "static-graph batches are not supported)")


def _check_channels(value, name: str) -> int:
    """An int channel count > 0, or -1 (PyG's lazy size, set by the first forward)."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value > 0 or value == -1):
        raise ValueError(f"{name} must be a positive int or -1 (lazy: set from the first input), got {value!r}")
    return value


def _linear(in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    """``nn.Linear``, or ``nn.LazyLinear`` for PyG's lazy ``in_channels=-1`` (materialised by the first forward)."""
    if in_channels == -1:
        return nn.LazyLinear(out_channels, bias=bias)
    return nn.Linear(in_channels, out_channels, bias=bias)


def _materialise(lin: Optional[nn.Module], width: int) -> None:
    """Give a lazy linear its input width (outside inference mode: the weights must stay trainable)."""
    if isinstance(lin, nn.modules.lazy.LazyModuleMixin) and lin.has_uninitialized_params():
        with torch.inference_mode(False):
            lin.initialize_parameters(torch.empty(0, width))


def _check_size(size, num_src: int, num_dst: Optional[int]) -> Optional[int]:
    """PyG's ``size=(num_src, num_dst)``: checked against the inputs; returns num_dst (None if not given)."""
    if size is None:
        return num_dst
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be a pair (num_src_nodes, num_dst_nodes), got {size!r}")
    src, dst = size
    if src is not None and int(src) != num_src:
        raise ValueError(f"size[0] = {src} but x (the source features) has {num_src} rows")
    if dst is not None and num_dst is not None and int(dst) != num_dst:
        raise ValueError(f"size[1] = {dst} but the target features have {num_dst} rows")
    return num_dst if dst is None else int(dst)


def _bipartite_block(adj, num_src: int, num_dst: Optional[int], dtype: torch.dtype) -> Block:
    """The block of a bipartite adjacency: ``num_dst`` target rows aggregating source rows ``[0, num_src)``.

    ``adj``: an edge_index [2, E] / PyG EdgeIndex (row 0 = source, row 1 = target), a torch sparse ``adj_t``
    [num_dst, num_src] (CSR or COO), a torch_sparse SparseTensor ``adj_t``, or a square Graph."""
    if isinstance(adj, Graph):
        if num_dst is not None and (adj.num_nodes != num_src or adj.num_nodes != num_dst):
            raise ValueError(f"a Graph is square ({adj.num_nodes} nodes); bipartite inputs have {num_src} source "
                             f"and {num_dst} target rows: pass an edge_index or a sparse adj_t instead")
        return Block(adj.num_nodes, adj.rowptr, adj.col, _edge_weight(adj, dtype))
    if type(adj).__name__ == "SparseTensor" and type(adj).__module__.startswith("torch_sparse"):
        rowptr, col, value = adj.csr()
        n_rows, n_cols = adj.sizes()
        adj_rows, weight = n_rows, value
    elif isinstance(adj, Tensor) and adj.layout in (torch.sparse_csr, torch.sparse_coo):
        if adj.dim() != 2:
            raise ValueError(f"the sparse adjacency must be 2-D, got shape {list(adj.shape)}")
        csr = adj if adj.layout == torch.sparse_csr else adj.coalesce().to_sparse_csr()
        rowptr, col, weight = csr.crow_indices(), csr.col_indices(), csr.values()
        adj_rows, n_cols = adj.shape
        if weight.numel() and bool((weight == 1).all()):
            weight = None
    elif isinstance(adj, Tensor):
        if num_dst is None:
            raise ValueError("with (x_src, None) and an edge_index, pass size=(num_src_nodes, num_dst_nodes)")
        plain = adj.as_tensor() if hasattr(adj, "as_tensor") else adj  # PyG EdgeIndex
        if plain.dim() != 2 or plain.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, num_edges], got {list(plain.shape)}")
        if plain.shape[1] and not tracing():
            for row, bound, name in ((0, num_src, "source node"), (1, num_dst, "target node")):
                top = int(plain[row].max())
                if top >= bound:
                    raise ValueError(f"edge_index holds {name} {top} but there are {bound} "
                                     f"{'source (x_src)' if row == 0 else 'target'} rows")
        g = as_graph(adj, max(num_src, num_dst))
        return Block(num_dst, g.rowptr[: num_dst + 1], g.col, _edge_weight(g, dtype))
    else:
        raise TypeError(f"unsupported adjacency {type(adj).__name__} for bipartite inputs")
    if n_cols != num_src:
        raise ValueError(f"the adjacency has {n_cols} columns (sources) but x_src has {num_src} rows")
    if num_dst is not None and adj_rows != num_dst:
        raise ValueError(f"the adjacency has {adj_rows} rows (targets) but there are {num_dst} target rows")
    if weight is not None:
        weight = weight.to(dtype) if weight.is_floating_point() else weight.to(dtype)
    return Block(int(adj_rows), rowptr, col, weight)


def _select_rows(x: Tensor, rows: Optional[Tensor]) -> Tensor:
    return x if rows is None else x.index_select(0, rows.long())


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _project(x: Tensor, weight_t: Tensor, bias: Optional[Tensor], rows: Optional[Tensor],
             index: Optional[Tensor]) -> Tensor:
    """``x[rows][:, index] @ weight_t + bias``, gathering without a copy when rows/index are given."""
    if index is None and rows is None:
        if bias is None:  # a projection of every node, e.g. the one a project-first layer aggregates: huge pages
            return project_for_gather(x, weight_t.t())
        return linear(x, weight_t.t(), bias)
    return pruned_linear(x, weight_t, bias, rows, index)


# ------------------------------------------------------------------------------------ block math helpers
def _num_out(block: Block, rows: Optional[Tensor]) -> int:
    return block.num_rows if rows is None else rows.numel()


def _self_rows(block: Block, rows: Optional[Tensor]) -> Optional[Tensor]:
    """Rows of ``x`` holding the own input of the asked output rows (None: rows ``0 .. num_out-1``)."""
    if block.self_rows is None:
        return rows
    return block.self_rows if rows is None else block.self_rows.index_select(0, rows)


def _self_term(x: Tensor, weight_t: Tensor, bias: Optional[Tensor], block: Block, rows: Optional[Tensor],
               keep: Optional[Tensor]) -> Tensor:
    """``x[s_i][:, keep] @ weight_t + bias`` for the asked rows (a row gather inside ``pruned_linear``)."""
    s = _self_rows(block, rows)
    if s is None and x.shape[0] != block.num_rows:
        x = x[: block.num_rows]  # the block's own rows come first in its source table (a view, no copy)
    return _project(x, weight_t, bias, s, keep)


def _fused(x: Tensor, block: Block, rows: Optional[Tensor], w_neigh: Tensor, w_self: Optional[Tensor],
           bias: Optional[Tensor], neigh_keep: Optional[Tensor], self_keep: Optional[Tensor], reduce: str) -> Tensor:
    """``AGG_e (w_e x[col_e, neigh_keep]) @ w_neigh + x[s_i, self_keep] @ w_self + bias`` for the asked rows,
    aggregating first: the block's arguments to the fused-layer op entry point."""
    self_rows = None
    if w_self is not None and block.self_rows is not None:
        self_rows = block.self_rows if rows is None else block.self_rows.index_select(0, rows)
    return fused_layer(block.rowptr, block.col, x, w_neigh, w_self, bias, block.edge_weight, rows, self_rows,
                       neigh_keep, self_keep, reduce)


def _finish_projected(block: Block, projected: Tensor, rows: Optional[Tensor], root: Optional[Tensor],
                      bias: Optional[Tensor], reduce: str) -> Tensor:
    """A project-first layer's aggregation of the projected source rows, plus its root term and bias."""
    if projected.shape[1] > 1 and projected.stride(1) != 1:
        projected = projected.contiguous()
    if projected.dtype in _FUSED_DTYPES and not _needs_grad(projected, root, bias, block.edge_weight):
        return sage_projected(block.rowptr, block.col, projected, root, bias, block.edge_weight, rows, reduce)
    out = aggregate(block.rowptr, block.col, projected, reduce, block.edge_weight, rows)
    if bias is not None:
        out = out + bias
    return out if root is None else out + root


# Relative cost of aggregating one element (a scattered read) against one multiply-add of a streamed GEMM.
AGGREGATE_COST = 16


def _projects_first(width_in: int, width_out: int, block: Block, num_src: int, num_out: int, reduce: str) -> bool:
    """Whether projecting every source row before aggregating is cheaper than aggregating the input widths
    of the block's edges and projecting the output rows. On a whole graph (``num_src == num_out``) this is
    ``width_out < width_in``; on a small block cut from a large table it is aggregating first."""
    if reduce not in ("mean", "sum") or width_out >= width_in:
        return False
    project = num_src * width_in * width_out + AGGREGATE_COST * block.num_edges * width_out
    aggregate_first = AGGREGATE_COST * block.num_edges * width_in + num_out * width_in * width_out
    return project < aggregate_first


def _as_index(keep, name: str, bound: int) -> Tensor:
    keep = torch.as_tensor(keep, dtype=torch.long).flatten()
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= bound):
        raise IndexError(f"{name} holds an index outside [0, {bound})")
    if torch.unique(keep).numel() != keep.numel():
        raise ValueError(f"{name} holds duplicate channels")
    return keep


class _PrunableConv(nn.Module):
    """Shared bookkeeping: per-branch input index buffers, the pruning protocol's input handling, and the
    defaults of the block protocol (:mod:`.protocol`): a layer over the graph as given, not degree-normalised,
    ``forward`` = ``forward_block`` on the whole graph."""

    branch_names: tuple = ()
    reads_neighbours = True
    reads_self = True
    degree_normalised = False

    def _forward_graph(self, x: Tensor, adj: Adjacency, rows) -> Tensor:
        """``forward_block`` on the block of the whole graph ``adj``, for the node ids ``rows`` (all if None)."""
        block = graph_block(self, as_graph(adj, x.shape[0]), x.dtype) if self.reads_neighbours else Block(x.shape[0])
        return self.forward_block(x, block, _rows(rows, x))

    def message_graph(self, graph: Graph, dtype: torch.dtype) -> Graph:
        """The graph this layer aggregates over, with its per-edge values (block protocol)."""
        return graph

    def neighbour_channels(self) -> Optional[Tensor]:
        """Input channels read by the neighbour aggregation (None = all; block protocol)."""
        return self._input_index("neigh") if "neigh" in self.branch_names else None

    def block_plan(self, x: Tensor, block: Block, num_out: Optional[int] = None,
                   x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        return None

    def table_plan(self, x: Tensor, x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """A plan over every row of the source table ``x`` (block protocol, optional): None here."""
        return None

    def _init_input_index(self):
        for name in self.branch_names:
            self.register_buffer(f"input_index_{name}", None)

    def _input_index(self, name: str) -> Optional[Tensor]:
        return getattr(self, f"input_index_{name}")

    def _branch_width(self, name: str) -> int:
        idx = self._input_index(name)
        return self.in_channels if idx is None else idx.numel()

    def _check_load(self, input_keep: Dict[str, Tensor], weights: Dict[str, Tensor], out_cols: Dict[str, int]):
        missing = set(self.branch_names) - set(input_keep)
        if missing or set(input_keep) - set(self.branch_names):
            raise KeyError(f"input_keep must name exactly the branches {self.branch_names}, got {sorted(input_keep)}")
        keeps = {}
        for name in self.branch_names:
            keep = _as_index(input_keep[name], f"input_keep[{name!r}]", self.in_channels)
            w = weights[name]
            if w.dim() != 2 or w.shape != (keep.numel(), out_cols[name]):
                raise ValueError(f"weights[{name!r}] must have shape [{keep.numel()}, {out_cols[name]}] "
                                 f"(kept inputs x branch outputs), got {list(w.shape)}")
            keeps[name] = keep
        return keeps

    def _install_input_index(self, keeps: Dict[str, Tensor]) -> None:
        """Same keep everywhere: the layer becomes narrower (its input must be sliced by the caller, i.e. by
        the previous layer's prune_outputs). Different keeps: the input stays as wide, each branch slices."""
        first = keeps[self.branch_names[0]]
        same = all(torch.equal(k, first) for k in keeps.values())
        # Compose with an existing per-branch selection: new indices refer to the current input channels.
        if same:
            self.in_channels = first.numel()
            for name in self.branch_names:
                setattr(self, f"input_index_{name}", None)
        else:
            for name in self.branch_names:
                device = getattr(self, "_param_device")()
                setattr(self, f"input_index_{name}", keeps[name].to(device))

    def _pruned_repr(self) -> str:
        """``, inputs: neigh 186/745, self 745/745`` when branches read subsets of the input (batched scheme)."""
        widths = [(n, self._input_index(n)) for n in self.branch_names]
        if all(idx is None for _, idx in widths):
            return ""
        return ", inputs: " + ", ".join(f"{n} {self.in_channels if idx is None else idx.numel()}/{self.in_channels}"
                                        for n, idx in widths)

    def _param_device(self) -> torch.device:
        return next(self.parameters()).device

    def _branch_input(self, x: Tensor, name: str) -> Tensor:
        idx = self._input_index(name)
        return x if idx is None else x.index_select(1, idx)


class SAGEConv(_PrunableConv):
    r"""GraphSAGE layer, PyG's ``SAGEConv``: ``out = lin_l(aggr_{j in N(i)} x_j) + lin_r(x_i)``.

    Same constructor arguments and parameters (``lin_l`` with bias, ``lin_r`` without) as PyG, so a PyG
    state dict loads unchanged. Mean/sum aggregation projects before aggregating when that is cheaper on the
    block (over a whole graph: ``out < in``); under no-grad the aggregate-first case runs the fused op.
    Edge weights of a weighted Graph / sparse tensor scale the messages (as PyG's sparse path does).
    """

    branch_names = ("neigh", "self")

    def __init__(self, in_channels: Union[int, Tuple[int, int]], out_channels: int, aggr: str = "mean",
                 normalize: bool = False, root_weight: bool = True, project: bool = False, bias: bool = True):
        """PyG's constructor (same argument order).

        Args:
            in_channels: input width, ``-1`` (lazy: taken from the first input), or a pair ``(source width,
                target width)`` for bipartite inputs ``(x_src, x_dst)`` (each may be -1).
            out_channels: output width.
            aggr: "mean", "sum" (or "add") or "max" (PyG's LSTM / MLP / multi aggregations are rejected).
            normalize: L2-normalise each output row.
            root_weight: add ``lin_r(x_i)``.
            project: not supported (rejected).
            bias: ``lin_l``'s bias.
        """
        super().__init__()
        if project:
            raise ValueError("SAGEConv(project=True) is not supported by gnnaccel (its ReLU projection of the "
                             "source features precedes the aggregation)")
        if not isinstance(aggr, str) or aggr not in ("mean", "sum", "add", "max"):
            raise ValueError(f"aggr must be 'mean', 'sum' ('add') or 'max', got {aggr!r} (PyG's LSTM, MLP and "
                             "multi aggregations are not supported by gnnaccel)")
        if isinstance(in_channels, (tuple, list)):
            if len(in_channels) != 2:
                raise ValueError(f"bipartite in_channels must be a pair (source, target), got {in_channels!r}")
            in_src = _check_channels(in_channels[0], "in_channels[0]")
            in_dst = _check_channels(in_channels[1], "in_channels[1]")
            self.in_channels_spec = (in_src, in_dst)
        else:
            in_src = in_dst = _check_channels(in_channels, "in_channels")
            self.in_channels_spec = in_src
        self.in_channels, self.out_channels = in_src, int(out_channels)
        self.aggr, self.root_weight, self.normalize = "sum" if aggr == "add" else aggr, bool(root_weight), bool(normalize)
        self.branch_names = ("neigh", "self") if root_weight else ("neigh",)
        self.lin_l = _linear(in_src, self.out_channels, bias)
        self.lin_r = _linear(in_dst, self.out_channels, False) if root_weight else None
        self._init_input_index()

    def _materialise(self, x_src: Tensor, x_dst: Optional[Tensor]) -> None:
        """Lazy widths (``-1``) from the first input; then a width check."""
        if self.in_channels == -1:
            _materialise(self.lin_l, x_src.shape[1])
            self.in_channels = x_src.shape[1]
        if self.lin_r is not None and x_dst is not None:
            _materialise(self.lin_r, x_dst.shape[1])

    def forward(self, x: Union[Tensor, Tuple[Tensor, Optional[Tensor]]], edge_index: Adjacency,
                size: Optional[Tuple[int, int]] = None, *, rows=None) -> Tensor:
        """PyG's call: ``conv(x, edge_index, size=None)``.

        Args:
            x: node features [N, in], or bipartite ``(x_src, x_dst)`` / ``(x_src, None)`` (then no root term,
                as in PyG).
            edge_index: a Graph, edge_index [2, E] / PyG EdgeIndex, torch sparse or torch_sparse ``adj_t``.
            size: PyG's ``(num_src_nodes, num_dst_nodes)``; checked against the inputs.
            rows: (keyword only; not bipartite) node ids of the output rows (all if None).
        Returns:
            [N or num_dst or len(rows), out_channels].
        """
        if isinstance(x, (tuple, list)):
            if rows is not None:
                raise ValueError("rows= is not supported with bipartite (x_src, x_dst) inputs")
            return self._forward_bipartite(x, edge_index, size)
        _check_features(x)
        _check_size(size, x.shape[0], x.shape[0])
        self._materialise(x, x)
        self._check_protocol_widths()
        return self._forward_graph(x, edge_index, rows)

    def _root_materialised(self) -> bool:
        return self.lin_r is not None and not (isinstance(self.lin_r, nn.modules.lazy.LazyModuleMixin)
                                               and self.lin_r.has_uninitialized_params())

    def _check_protocol_widths(self) -> None:
        """The block and pruning protocols read one x for both branches: equal, known widths."""
        if self.in_channels == -1:
            raise ValueError("this SAGEConv has a lazy input width (-1): run one forward first")
        if (isinstance(self.in_channels_spec, tuple) and self.root_weight and self._root_materialised()
                and self.lin_r.in_features != self.in_channels):
            raise ValueError(f"this SAGEConv is bipartite with source width {self.in_channels} and target width "
                             f"{self.lin_r.in_features}: call it with (x_src, x_dst); it cannot run on one x or be "
                             "pruned")

    def _forward_bipartite(self, x, adj, size) -> Tensor:
        if len(x) != 2:
            raise ValueError("bipartite inputs must be a pair (x_src, x_dst)")
        x_src, x_dst = x
        _check_features(x_src, "x_src")
        if x_dst is not None:
            _check_features(x_dst, "x_dst")
        num_dst = _check_size(size, x_src.shape[0], None if x_dst is None else x_dst.shape[0])
        self._materialise(x_src, x_dst)
        if any(self._input_index(n) is not None for n in self.branch_names):
            raise ValueError("a batched-pruned SAGEConv (per-branch input channels) takes a single x, not a pair")
        block = _bipartite_block(adj, x_src.shape[0], num_dst, x_src.dtype)
        if x_dst is not None and x_dst.shape[0] != block.num_rows:
            raise ValueError(f"x_dst has {x_dst.shape[0]} rows but the adjacency has {block.num_rows} targets")
        out = _fused(x_src, block, None, self.lin_l.weight.t(), None, self.lin_l.bias, None, None, self.aggr)
        if self.root_weight and x_dst is not None:
            out = out + _project(x_dst, self.lin_r.weight.t(), None, None, None)
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    @property
    def reads_self(self) -> bool:
        return self.root_weight

    def _root_index(self) -> Optional[Tensor]:
        return self.input_index_self if self.root_weight else None

    def reset_parameters(self):
        self.lin_l.reset_parameters()
        if self.lin_r is not None:
            self.lin_r.reset_parameters()

    def _projects_first(self, x: Tensor, block: Block, num_out: Optional[int]) -> bool:
        num_out = block.num_rows if num_out is None else num_out
        return _projects_first(self._branch_width("neigh"), self.out_channels, block, x.shape[0], num_out,
                               self.aggr)

    def _params(self):
        return (self.lin_l.weight, self.lin_l.bias, self.lin_r.weight if self.root_weight else None)

    # Inference of a project-first layer over a whole graph projects both branches with one GEMM into
    # [x W_l | x W_r] (x read once) and aggregates its left half in place, unless the layer is narrow on both
    # sides: then reading x twice is cheap and a compact neighbour projection keeps the gather source small
    # enough for the cache (measurements: benchmarks/RESULTS.md, "combined projection").
    COMBINED_PROJECTION_MIN_WIDTH = 64
    COMBINED_PROJECTION_MIN_INPUT = 256

    def _combined_projection(self) -> bool:
        return (self.out_channels >= self.COMBINED_PROJECTION_MIN_WIDTH
                or self._branch_width("neigh") >= self.COMBINED_PROJECTION_MIN_INPUT)

    def block_plan(self, x: Tensor, block: Block, num_out: Optional[int] = None,
                   x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """When projecting first is cheaper on this block: the neighbour projections of every source row,
        ``x[:, idx] @ W_l`` [S, out], or (inference over a whole graph, both branches reading all of x)
        ``x @ [W_l | W_r]`` [S, 2 out] (``forward_block`` tells them apart by width). Else None."""
        if not self._projects_first(x, block, num_out):
            return None
        if x_neigh is not None:
            return _project(x_neigh, self.lin_l.weight.t(), None, None, None)
        if (self.root_weight and self._combined_projection() and x.shape[0] <= (num_out or block.num_rows)
                and self.input_index_neigh is None and self._root_index() is None
                and x.dtype in _FUSED_DTYPES and not _needs_grad(x, *self._params())):
            return project_for_gather(x, torch.cat([self.lin_l.weight, self.lin_r.weight], 0))
        return _project(x, self.lin_l.weight.t(), None, None, self.input_index_neigh)

    def table_plan(self, x: Tensor, x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """Both branches' projections of every row of a source table, ``[x[:, neigh] W_l | x[:, root] W_r]``
        [N, 2 out] (``[x[:, neigh] W_l]`` without a root weight), when they are narrower than the neighbour
        branch's input (then a block gathers ``out`` instead of its input width per edge and runs no GEMM) and
        the aggregation is linear; else None. Row ``i`` depends on ``x[i]`` only (block protocol).

        Args:
            x: [N, in] source table. x_neigh: its compact copy ``x[:, neighbour_channels()]`` or None.
        Returns:
            the plan, valid as ``plan=`` of ``forward_block`` for every block whose ``col`` and ``self_rows``
            index rows of ``x``; or None.
        """
        if (self.aggr not in ("mean", "sum") or self.out_channels >= self._branch_width("neigh")
                or _needs_grad(x, *self._params())):
            return None
        if x_neigh is not None:
            neigh = _project(x_neigh, self.lin_l.weight.t(), None, None, None)
        else:
            neigh = _project(x, self.lin_l.weight.t(), None, None, self.input_index_neigh)
        if not self.root_weight:
            return neigh
        root = _project(x, self.lin_r.weight.t(), None, None, self._root_index())
        return torch.cat([neigh, root], 1, out=empty_for_gather((x.shape[0], 2 * self.out_channels), neigh))

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: ``lin_l(AGG x_j) + lin_r(x_i)`` (+ L2 normalisation) for the asked rows."""
        if plan is None:
            plan = self.block_plan(x, block, _num_out(block, rows), x_neigh)
        d, bias = self.out_channels, self.lin_l.bias
        w_self = self.lin_r.weight.t() if self.root_weight else None
        if plan is not None and self.root_weight and plan.shape[1] == 2 * d != 0:  # [x W_l | x W_r]
            s = _self_rows(block, rows)
            root = plan[: block.num_rows, d:] if s is None else plan[:, d:].index_select(0, s)
            out = _finish_projected(block, plan[:, :d], rows, root, bias, self.aggr)
        elif plan is not None:
            root = _self_term(x, w_self, None, block, rows, self._root_index()) if self.root_weight else None
            out = _finish_projected(block, plan, rows, root, bias, self.aggr)
        elif x_neigh is not None:
            out = _fused(x_neigh, block, rows, self.lin_l.weight.t(), None, bias, None, None, self.aggr)
            if self.root_weight:
                out = out + _self_term(x, w_self, None, block, rows, self._root_index())
        else:
            out = _fused(x, block, rows, self.lin_l.weight.t(), w_self, bias, self.input_index_neigh,
                         self._root_index(), self.aggr)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return out

    # ------------------------------------------------------------------ pruning protocol
    def linear_parts(self) -> LinearParts:
        self._check_protocol_widths()
        cols = torch.arange(self.out_channels, device=self.lin_l.weight.device)
        branches = [Branch("neigh", self.lin_l.weight.t(), cols, self.aggr)]
        if self.root_weight:
            branches.append(Branch("self", self.lin_r.weight.t(), cols, "identity"))
        return LinearParts(self.in_channels, self.out_channels, branches, self.lin_l.bias, "sum",
                           {"input_index": {n: self._input_index(n) for n in self.branch_names},
                            "normalize": self.normalize})

    def branch_inputs(self, graph: Adjacency, h: Tensor, rows: Optional[Tensor] = None) -> Dict[str, Tensor]:
        rows = _rows(rows, h)
        graph = as_graph(graph, h.shape[0])
        out = {"neigh": _propagate(graph, self._branch_input(h, "neigh"), self.aggr, rows)}
        if self.root_weight:
            out["self"] = _select_rows(self._branch_input(h, "self"), rows)
        return out

    @torch.no_grad()
    def load_pruned(self, input_keep: Dict[str, Tensor], weights: Dict[str, Tensor], bias: Optional[Tensor] = None):
        keeps = self._check_load(input_keep, weights, {n: self.out_channels for n in self.branch_names})
        dev, dt = self.lin_l.weight.device, self.lin_l.weight.dtype
        self.lin_l.weight = nn.Parameter(weights["neigh"].t().to(dev, dt).contiguous())
        self.lin_l.in_features = keeps["neigh"].numel()
        if self.root_weight:
            self.lin_r.weight = nn.Parameter(weights["self"].t().to(dev, dt).contiguous())
            self.lin_r.in_features = keeps["self"].numel()
        _set_bias(self.lin_l, "bias", bias, self.out_channels)
        self._install_input_index(keeps)

    @torch.no_grad()
    def prune_outputs(self, keep: Tensor) -> None:
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin_l.weight.device)
        for lin in (self.lin_l, self.lin_r):
            if lin is None:
                continue
            lin.weight = nn.Parameter(lin.weight[keep].contiguous())
            if lin.bias is not None:
                lin.bias = nn.Parameter(lin.bias[keep].contiguous())
            lin.out_features = keep.numel()
        self.out_channels = keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale: Tensor, shift: Tensor) -> None:
        """Fold a per-channel affine ``out * scale + shift`` into the weights (BatchNorm folding)."""
        for lin in (self.lin_l, self.lin_r):
            if lin is not None:
                lin.weight.mul_(scale.unsqueeze(1).to(lin.weight))
        _fold_bias(self.lin_l, "bias", scale, shift)

    def __repr__(self) -> str:
        """PyG's repr (``SAGEConv(8, 32, aggr=mean)``, ``SAGEConv((8, 16), 32, aggr=mean)``), plus the input
        channels each branch reads when it was pruned per branch."""
        spec = self.in_channels
        if isinstance(self.in_channels_spec, tuple):
            spec = (self.in_channels, self.lin_r.in_features if self._root_materialised() else self.in_channels_spec[1])
        return f"{type(self).__name__}({spec}, {self.out_channels}, aggr={self.aggr}{self._pruned_repr()})"


def _set_bias(module: nn.Module, attr: str, bias: Optional[Tensor], size: int) -> None:
    current = getattr(module, attr)
    if bias is None:
        if current is not None:
            raise ValueError("the layer has a bias: load_pruned needs the new bias")
        return
    bias = torch.as_tensor(bias)
    if bias.shape != (size,):
        raise ValueError(f"bias must have shape [{size}], got {list(bias.shape)}")
    ref = current if current is not None else next(module.parameters())
    setattr(module, attr, nn.Parameter(bias.to(ref.device, ref.dtype).clone()))


def _fold_bias(module: nn.Module, attr: str, scale: Tensor, shift: Tensor) -> None:
    current = getattr(module, attr)
    ref = next(module.parameters())
    new = shift.to(ref) if current is None else current * scale.to(ref) + shift.to(ref)
    setattr(module, attr, nn.Parameter(new.detach().clone()))


class GCNConv(_PrunableConv):
    r"""GCN layer, PyG's ``GCNConv``: ``out = D^-1/2 (A + I) D^-1/2 x W + b`` (parameters ``lin.weight``, ``bias``).

    ``add_self_loops=None`` means ``normalize`` (PyG's default). Self loops follow PyG's ``add_remaining_self_loops`` (existing self loops are replaced by one per node,
    keeping an existing loop's weight). The normalised graph (the layer's ``message_graph``) is memoised in
    ``graph.cache`` per dtype. Projects first when that is cheaper on the block (whole graph: ``out < in``).
    """

    branch_names = ("gcn",)

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: Optional[bool] = None, normalize: bool = True, bias: bool = True):
        """PyG's constructor (same argument order).

        Args:
            in_channels: input width, or -1 (lazy: taken from the first input).
            out_channels: output width.
            improved: self loops of weight 2 (A + 2I).
            cached: accepted for compatibility; the normalised graph is always memoised per Graph (and
                recomputed when the graph changes).
            add_self_loops: None = ``normalize`` (PyG's default); True needs ``normalize``.
            normalize: apply PyG's ``gcn_norm``; False: a plain weighted sum.
            bias: learnable bias.
        """
        super().__init__()
        if add_self_loops is None:  # PyG: self loops come with the normalisation
            add_self_loops = normalize
        if add_self_loops and not normalize:
            raise ValueError("GCNConv: add_self_loops=True needs normalize=True (PyG: 'does not support adding "
                             "self-loops to the graph when no on-the-fly normalization is applied')")
        self.in_channels, self.out_channels = _check_channels(in_channels, "in_channels"), int(out_channels)
        self.add_self_loops, self.normalize = bool(add_self_loops), bool(normalize)
        self.improved, self.cached = bool(improved), bool(cached)
        self.lin = _linear(self.in_channels, self.out_channels, False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._init_input_index()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.lin.weight)  # PyG's glorot
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Adjacency, edge_weight: Optional[Tensor] = None, *,
                rows=None) -> Tensor:
        """PyG's call: ``conv(x, edge_index, edge_weight=None)``.

        Args:
            x: node features [N, in].
            edge_index: a Graph, edge_index [2, E] / PyG EdgeIndex, torch sparse or torch_sparse ``adj_t``.
            edge_weight: [E] weights of ``edge_index``'s edges (only with an edge_index: a Graph or sparse
                adjacency carries its own weights).
            rows: (keyword only) node ids of the output rows (all if None).
        Returns:
            [N or len(rows), out_channels].
        """
        _check_features(x)
        if self.in_channels == -1:
            _materialise(self.lin, x.shape[1])
            self.in_channels = x.shape[1]
        if edge_weight is not None:
            if isinstance(edge_index, Graph) or not isinstance(edge_index, Tensor) or edge_index.layout != torch.strided:
                raise ValueError("edge_weight goes with an edge_index [2, E]; a Graph or sparse adjacency carries its "
                                 "own weights")
            if hasattr(edge_index, "as_tensor"):  # PyG EdgeIndex
                edge_index = edge_index.as_tensor()
            edge_index = Graph.from_edge_index(edge_index, x.shape[0], edge_weight)
        return self._forward_graph(x, edge_index, rows)

    def propagation(self) -> str:
        return "gcn" if self.normalize else "sum"

    reads_self = False  # its own row arrives through the self loop of the normalised graph

    @property
    def degree_normalised(self) -> bool:
        return self.normalize

    def message_graph(self, graph: Graph, dtype: torch.dtype) -> Graph:
        """The graph with PyG's ``gcn_norm`` weights over the whole ``graph`` (memoised in ``graph.cache``), or
        ``graph`` itself without normalisation."""
        if not self.normalize:
            return graph
        return graph.gcn_normalized(self.add_self_loops, dtype, self.improved)

    def neighbour_channels(self) -> Optional[Tensor]:
        return self.input_index_gcn

    def block_plan(self, x: Tensor, block: Block, num_out: Optional[int] = None,
                   x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """``x[:, idx] @ W`` [S, out] for every source row when projecting first is cheaper, else None."""
        num_out = block.num_rows if num_out is None else num_out
        if not _projects_first(self._branch_width("gcn"), self.out_channels, block, x.shape[0], num_out, "sum"):
            return None
        if x_neigh is not None:
            return _project(x_neigh, self.lin.weight.t(), None, None, None)
        return _project(x, self.lin.weight.t(), None, None, self.input_index_gcn)

    def table_plan(self, x: Tensor, x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """``x[:, idx] @ W`` [N, out] for every row of a source table when ``out`` is narrower than the read
        input channels, else None (block protocol; row ``i`` depends on ``x[i]`` only)."""
        if self.out_channels >= self._branch_width("gcn") or _needs_grad(x, self.lin.weight):
            return None
        if x_neigh is not None:
            return _project(x_neigh, self.lin.weight.t(), None, None, None)
        return _project(x, self.lin.weight.t(), None, None, self.input_index_gcn)

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: ``sum_j w_ij x_j W + b`` over the block of the message graph."""
        if plan is None:
            plan = self.block_plan(x, block, _num_out(block, rows), x_neigh)
        if plan is not None:
            return _finish_projected(block, plan, rows, None, self.bias, "sum")
        if x_neigh is not None:
            return _fused(x_neigh, block, rows, self.lin.weight.t(), None, self.bias, None, None, "sum")
        return _fused(x, block, rows, self.lin.weight.t(), None, self.bias, self.input_index_gcn, None, "sum")

    def linear_parts(self) -> LinearParts:
        if self.in_channels == -1:
            raise ValueError("this GCNConv has a lazy input width (-1): run one forward first")
        cols = torch.arange(self.out_channels, device=self.lin.weight.device)
        return LinearParts(self.in_channels, self.out_channels,
                           [Branch("gcn", self.lin.weight.t(), cols, self.propagation())], self.bias, "sum",
                           {"input_index": {"gcn": self.input_index_gcn}})

    def branch_inputs(self, graph: Adjacency, h: Tensor, rows: Optional[Tensor] = None) -> Dict[str, Tensor]:
        rows = _rows(rows, h)
        g = self.message_graph(as_graph(graph, h.shape[0]), h.dtype)
        return {"gcn": _propagate(g, self._branch_input(h, "gcn"), "sum", rows)}

    @torch.no_grad()
    def load_pruned(self, input_keep, weights, bias=None):
        keeps = self._check_load(input_keep, weights, {"gcn": self.out_channels})
        self.lin.weight = nn.Parameter(weights["gcn"].t().to(self.lin.weight).contiguous())
        self.lin.in_features = keeps["gcn"].numel()
        _set_bias(self, "bias", bias, self.out_channels)
        self._install_input_index(keeps)

    @torch.no_grad()
    def prune_outputs(self, keep):
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin.weight.device)
        self.lin.weight = nn.Parameter(self.lin.weight[keep].contiguous())
        self.lin.out_features = keep.numel()
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias[keep].contiguous())
        self.out_channels = keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale: Tensor, shift: Tensor) -> None:
        self.lin.weight.mul_(scale.unsqueeze(1).to(self.lin.weight))
        _fold_bias(self, "bias", scale, shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}{self._pruned_repr()})"


def gcn_normalized_graph(graph: Graph, add_self_loops: bool = True, dtype: torch.dtype = torch.float32) -> Graph:
    """The graph with PyG's ``gcn_norm`` edge weights; see :meth:`gnnaccel.Graph.gcn_normalized`."""
    return graph.gcn_normalized(add_self_loops, dtype)


class SAINTConv(_PrunableConv):
    r"""GraphSAINT's concat layer: ``[act(x W_self + b_self) || act((A x) W_neigh + b_neigh)]``, A = mean
    adjacency without added self loops. ``out_channels`` is the total width; the self half gets
    ``out_channels - out_channels // 2`` columns and the neighbour half ``out_channels // 2`` (or pass
    ``self_channels``). ``act=None`` leaves the output linear (the models apply norm and activation)."""

    branch_names = ("self", "neigh")

    def __init__(self, in_channels: int, out_channels: int, act="relu", bias: bool = True,
                 self_channels: Optional[int] = None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.self_channels = out_channels - out_channels // 2 if self_channels is None else int(self_channels)
        if not 0 <= self.self_channels <= out_channels:
            raise ValueError(f"self_channels must be in [0, {out_channels}]")
        self.act_name = act
        self.act = resolve_activation(act)
        self.lin_self = nn.Linear(in_channels, self.self_channels, bias=bias)
        self.lin_neigh = nn.Linear(in_channels, out_channels - self.self_channels, bias=bias)
        self._init_input_index()

    def reset_parameters(self):
        self.lin_self.reset_parameters()
        self.lin_neigh.reset_parameters()

    def forward(self, x: Tensor, adj: Adjacency, rows: Optional[Tensor] = None) -> Tensor:
        """Output rows ``rows`` (node ids; all nodes if None) of the layer applied to ``x`` [N, in] on ``adj``."""
        return self._forward_graph(x, adj, rows)

    def block_plan(self, x: Tensor, block: Block, num_out: Optional[int] = None,
                   x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """The neighbour branch's ``x[:, idx] @ W_neigh`` [S, neigh out] when projecting first is cheaper."""
        num_out = block.num_rows if num_out is None else num_out
        if not _projects_first(self._branch_width("neigh"), self.lin_neigh.out_features, block, x.shape[0],
                               num_out, "mean"):
            return None
        if x_neigh is not None:
            return _project(x_neigh, self.lin_neigh.weight.t(), None, None, None)
        return _project(x, self.lin_neigh.weight.t(), None, None, self.input_index_neigh)

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: ``act([x_i W_self + b_self || (mean_j x_j) W_neigh + b_neigh])``."""
        if plan is None:
            plan = self.block_plan(x, block, _num_out(block, rows), x_neigh)
        out_self = _self_term(x, self.lin_self.weight.t(), self.lin_self.bias, block, rows, self.input_index_self)
        w, b = self.lin_neigh.weight.t(), self.lin_neigh.bias
        if plan is not None:
            out_neigh = _finish_projected(block, plan, rows, None, b, "mean")
        elif x_neigh is not None:
            out_neigh = _fused(x_neigh, block, rows, w, None, b, None, None, "mean")
        else:
            out_neigh = _fused(x, block, rows, w, None, b, self.input_index_neigh, None, "mean")
        out = torch.cat([out_self, out_neigh], dim=1)
        return self.act(out) if self.act is not None else out

    def _bias(self) -> Optional[Tensor]:
        if self.lin_self.bias is None:
            return None
        return torch.cat([self.lin_self.bias, self.lin_neigh.bias])

    def linear_parts(self) -> LinearParts:
        dev = self.lin_self.weight.device
        return LinearParts(self.in_channels, self.out_channels, [
            Branch("self", self.lin_self.weight.t(), torch.arange(self.self_channels, device=dev), "identity"),
            Branch("neigh", self.lin_neigh.weight.t(),
                   torch.arange(self.self_channels, self.out_channels, device=dev), "mean"),
        ], self._bias(), "concat", {"input_index": {n: self._input_index(n) for n in self.branch_names},
                                    "activation": self.act_name})

    def branch_inputs(self, graph: Adjacency, h: Tensor, rows: Optional[Tensor] = None) -> Dict[str, Tensor]:
        rows = _rows(rows, h)
        graph = as_graph(graph, h.shape[0])
        return {"self": _select_rows(self._branch_input(h, "self"), rows),
                "neigh": _propagate(graph, self._branch_input(h, "neigh"), "mean", rows)}

    @torch.no_grad()
    def load_pruned(self, input_keep, weights, bias=None):
        keeps = self._check_load(input_keep, weights, {"self": self.self_channels,
                                                       "neigh": self.out_channels - self.self_channels})
        for name, lin in (("self", self.lin_self), ("neigh", self.lin_neigh)):
            lin.weight = nn.Parameter(weights[name].t().to(lin.weight).contiguous())
            lin.in_features = keeps[name].numel()
        if bias is None:
            if self.lin_self.bias is not None:
                raise ValueError("the layer has a bias: load_pruned needs the new bias")
        else:
            bias = torch.as_tensor(bias)
            if bias.shape != (self.out_channels,):
                raise ValueError(f"bias must have shape [{self.out_channels}], got {list(bias.shape)}")
            _set_bias(self.lin_self, "bias", bias[: self.self_channels], self.self_channels)
            _set_bias(self.lin_neigh, "bias", bias[self.self_channels:], self.out_channels - self.self_channels)
        self._install_input_index(keeps)

    @torch.no_grad()
    def prune_outputs(self, keep):
        """Keep output channels ``keep`` (strictly increasing, so that the self block stays first)."""
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin_self.weight.device)
        if keep.numel() > 1 and bool((keep[1:] <= keep[:-1]).any()):
            raise ValueError("SAINTConv.prune_outputs needs strictly increasing channel indices")
        keep_self = keep[keep < self.self_channels]
        keep_neigh = keep[keep >= self.self_channels] - self.self_channels
        for lin, k in ((self.lin_self, keep_self), (self.lin_neigh, keep_neigh)):
            lin.weight = nn.Parameter(lin.weight[k].contiguous())
            if lin.bias is not None:
                lin.bias = nn.Parameter(lin.bias[k].contiguous())
            lin.out_features = k.numel()
        self.self_channels, self.out_channels = keep_self.numel(), keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale: Tensor, shift: Tensor) -> None:
        s = self.self_channels
        for lin, sc, sh in ((self.lin_self, scale[:s], shift[:s]), (self.lin_neigh, scale[s:], shift[s:])):
            lin.weight.mul_(sc.unsqueeze(1).to(lin.weight))
            _fold_bias(lin, "bias", sc, sh)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, self={self.self_channels})"


class Dense(_PrunableConv):
    """A plain linear layer with the pruning protocol (one ``identity`` branch): the classifier of
    :class:`gnnaccel.models.SAINTGraphSAGE`. ``adj`` is accepted and ignored."""

    branch_names = ("self",)

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.lin = nn.Linear(in_channels, out_channels, bias=bias)
        self._init_input_index()

    reads_neighbours = False

    def forward(self, x: Tensor, adj: Optional[Adjacency] = None, rows: Optional[Tensor] = None) -> Tensor:
        return self.forward_block(x, Block(x.shape[0]), _rows(rows, x))

    def message_graph(self, graph: Graph, dtype: torch.dtype) -> Graph:
        raise TypeError("Dense reads no neighbours: it has no message graph")

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: ``x_i W + b`` for the asked rows."""
        return _self_term(x, self.lin.weight.t(), self.lin.bias, block, rows, self.input_index_self)

    def linear_parts(self) -> LinearParts:
        cols = torch.arange(self.out_channels, device=self.lin.weight.device)
        return LinearParts(self.in_channels, self.out_channels, [Branch("self", self.lin.weight.t(), cols, "identity")],
                           self.lin.bias, "sum", {"input_index": {"self": self.input_index_self}})

    def branch_inputs(self, graph, h, rows=None):
        rows = _rows(rows, h)
        return {"self": _select_rows(self._branch_input(h, "self"), rows)}

    @torch.no_grad()
    def load_pruned(self, input_keep, weights, bias=None):
        keeps = self._check_load(input_keep, weights, {"self": self.out_channels})
        self.lin.weight = nn.Parameter(weights["self"].t().to(self.lin.weight).contiguous())
        self.lin.in_features = keeps["self"].numel()
        _set_bias(self.lin, "bias", bias, self.out_channels)
        self._install_input_index(keeps)

    @torch.no_grad()
    def prune_outputs(self, keep):
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin.weight.device)
        self.lin.weight = nn.Parameter(self.lin.weight[keep].contiguous())
        if self.lin.bias is not None:
            self.lin.bias = nn.Parameter(self.lin.bias[keep].contiguous())
        self.lin.out_features = self.out_channels = keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale, shift):
        self.lin.weight.mul_(scale.unsqueeze(1).to(self.lin.weight))
        _fold_bias(self.lin, "bias", scale, shift)
