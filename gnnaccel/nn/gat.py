"""Graph attention: :class:`GATConv`, PyG's ``GATConv`` with the block protocol (:mod:`.protocol`) and the
pruning protocol (:mod:`.parts`).

The layer projects every source row once, ``x W`` (values) together with the per-head attention terms
``alpha_src = x W_h att_src_h`` and ``alpha_dst = x W_h att_dst_h`` (one GEMM against ``[W | V_src | V_dst]``,
``V = W_h att_h`` folded per head), then runs the fused attention aggregation op
(:func:`gnnaccel.ops.gat_aggregate`: per-edge logits, a stable segment softmax per row, the weighted sum).

Pruning: the attention depends on the input only through ``x W`` (``alpha`` are linear in it), so the layer's
linear part is the concatenation of two identity branches over the layer input: ``"neigh"`` = ``[W | V_src]``
(what a source row contributes) and ``"self"`` = ``[V_dst | W_res]`` (what the output row reads of its own
input: its attention term and the residual). Refitting both keeps ``x W`` and therefore the logits close.
The refit's intercept of ``[x W | alpha_src | alpha_dst]`` is kept as a projection bias (``lin_bias``: a
logit intercept sits inside the LeakyReLU, so it cannot be folded away); the residual's goes into ``bias``.
After pruning (or BatchNorm folding) the logit projections are stored explicitly (``lin_att_src``,
``lin_att_dst``), since they no longer follow from ``W`` and ``att_src`` / ``att_dst``; after its output
channels are pruned a head may keep any subset of its channels (``head_index``: the head of every value channel).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..graph import Graph, tracing
from ..ops.gat_aggregate import gat_aggregate
from .adjacency import Adjacency, as_graph
from .conv import (_PrunableConv, _as_index, _check_channels, _check_features, _check_size, _linear, _materialise,
                   _num_out, _project, _rows, _select_rows, _self_rows, _self_term)
from .parts import Branch, LinearParts
from .protocol import Block

# A block whose source table has more than this many times (edges + output rows) rows is served by projecting
# only the rows its edges read (a small batch cut from a large raw feature table) instead of every row.
COMPACT_SOURCE_RATIO = 2


def _glorot(t: Tensor) -> None:
    """PyG's glorot initialisation (uniform in +-sqrt(6 / (fan_in + fan_out)) over the last two dims)."""
    bound = (6.0 / (t.size(-2) + t.size(-1))) ** 0.5
    with torch.no_grad():
        t.uniform_(-bound, bound)


def _with_self_loops(graph: Graph) -> Graph:
    """PyG's ``remove_self_loops`` then ``add_self_loops``: one loop per node (last in its row), no weights."""
    n = graph.num_nodes
    src, dst = graph.col.long(), graph.row_of_edge()
    keep = src != dst
    nodes = torch.arange(n, device=src.device)
    dst_all = torch.cat([dst[keep], nodes])
    col = torch.cat([src[keep], nodes])[torch.argsort(dst_all, stable=True)]
    counts = torch.bincount(dst_all, minlength=n)
    rowptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return Graph(rowptr.to(graph.index_dtype), col.to(graph.index_dtype), n, None, validate=False)


class GATConv(_PrunableConv):
    r"""Graph attention layer, PyG's ``GATConv``:
    ``out_i = sum_{j in N(i)} a_ij x_j W (+ x_i W_res) + b`` with, per head,
    ``a_ij = softmax_j(leaky_relu(x_j W att_src + x_i W att_dst))``; heads concatenated (``concat``) or averaged.

    Same constructor arguments and parameters as PyG (``lin.weight``, ``att_src``, ``att_dst``, ``bias``,
    ``res.weight``), so a PyG state dict loads unchanged. Differences: ``out_channels`` (the attribute) is the
    layer's output width, ``heads * out_channels`` with ``concat`` (the block protocol's meaning); the per-head
    width is ``head_channels``. Bipartite inputs, ``edge_dim`` and ``return_attention_weights`` are rejected
    with a clear error; edge weights of the adjacency are ignored (as PyG does). ``dropout`` drops attention
    coefficients in training mode only.
    """

    branch_names = ("neigh", "self")
    reads_neighbours = True
    reads_self = True  # the attention term of the output row is computed from its own input
    degree_normalised = False  # a row's softmax runs over its own edges only

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: Optional[int] = None, fill_value="mean", bias: bool = True, residual: bool = False,
                 **kwargs):
        """PyG's constructor (same argument order).

        Args:
            in_channels: input width, or -1 (lazy: taken from the first input). Pairs (bipartite) are rejected.
            out_channels: width of each head.
            heads: number of attention heads.
            concat: concatenate the heads (output ``heads * out_channels``), else average them.
            negative_slope: LeakyReLU slope of the attention logits.
            dropout: dropout probability of the attention coefficients (training mode only).
            add_self_loops: replace existing self loops by one per node (PyG's remove + add).
            edge_dim: must be None (edge features are not supported).
            fill_value: accepted for compatibility (only used by PyG with edge features).
            bias: learnable output bias.
            residual: add ``x_i W_res`` (PyG's residual connection).
        """
        super().__init__()
        if isinstance(in_channels, (tuple, list)):
            raise ValueError("GATConv with bipartite in_channels (source, target) is not supported by gnnaccel")
        if edge_dim is not None:
            raise ValueError("GATConv(edge_dim=...) (edge features in the attention) is not supported by gnnaccel")
        unknown = sorted(k for k in kwargs if not (k == "aggr" and kwargs[k] in ("add", "sum")))
        if unknown:
            raise ValueError(f"GATConv: unsupported arguments {unknown}")
        for name, v in (("out_channels", out_channels), ("heads", heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = _check_channels(in_channels, "in_channels")
        self.heads, self.head_channels, self.concat = int(heads), int(out_channels), bool(concat)
        self.negative_slope, self.dropout = float(negative_slope), float(dropout)
        self.add_self_loops, self.residual, self.fill_value = bool(add_self_loops), bool(residual), fill_value
        self.out_channels = self.heads * self.head_channels if self.concat else self.head_channels
        self.lin = _linear(self.in_channels, self.heads * self.head_channels, False)
        self.att_src = nn.Parameter(torch.empty(1, self.heads, self.head_channels))
        self.att_dst = nn.Parameter(torch.empty(1, self.heads, self.head_channels))
        self.res = _linear(self.in_channels, self.out_channels, False) if residual else None
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        # Set by pruning / BatchNorm folding (see the module doc): explicit logit projections [H, in] and the
        # head of every value channel.
        self.register_parameter("lin_att_src", None)
        self.register_parameter("lin_att_dst", None)
        self.register_parameter("lin_bias", None)  # [D + 2H] intercept of [x W | alpha_src | alpha_dst]
        self.register_buffer("head_index", None)
        self._init_input_index()
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.lin, self.res):
            if lin is not None and not (isinstance(lin, nn.modules.lazy.LazyModuleMixin)
                                        and lin.has_uninitialized_params()):
                _glorot(lin.weight)
        _glorot(self.att_src)
        _glorot(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ------------------------------------------------------------------ weights
    @property
    def value_channels(self) -> int:
        """Width of the attention-weighted values ``x W`` (``heads * head_channels`` unless pruned)."""
        return self.lin.weight.shape[0]

    def _att_weights(self) -> Tuple[Tensor, Tensor]:
        """``V_src``, ``V_dst`` [in, H]: ``alpha = x V`` (folded from ``W`` and ``att_*`` unless stored)."""
        if self.lin_att_src is not None:
            return self.lin_att_src.t(), self.lin_att_dst.t()
        w = self.lin.weight.view(self.heads, self.head_channels, -1)
        return (torch.einsum("hci,hc->ih", w, self.att_src[0]), torch.einsum("hci,hc->ih", w, self.att_dst[0]))

    @torch.no_grad()
    def _decouple(self) -> None:
        """Store the logit projections explicitly (before the value weights change independently of them)."""
        if self.lin_att_src is None:
            v_src, v_dst = self._att_weights()
            self.lin_att_src = nn.Parameter(v_src.t().contiguous())
            self.lin_att_dst = nn.Parameter(v_dst.t().contiguous())

    # ------------------------------------------------------------------ PyG call
    def forward(self, x: Tensor, edge_index: Adjacency, edge_attr: Optional[Tensor] = None, size=None,
                return_attention_weights=None, *, rows=None) -> Tensor:
        """PyG's call: ``conv(x, edge_index)``.

        Args:
            x: node features [N, in].
            edge_index: a Graph, edge_index [2, E] / PyG EdgeIndex, torch sparse or torch_sparse ``adj_t``.
            edge_attr, return_attention_weights: must be None (not supported).
            size: PyG's ``(num_src_nodes, num_dst_nodes)``; checked against x.
            rows: (keyword only) node ids of the output rows (all if None).
        Returns:
            [N or len(rows), out_channels].
        """
        if isinstance(x, (tuple, list)):
            raise ValueError("GATConv with bipartite (x_src, x_dst) inputs is not supported by gnnaccel")
        if edge_attr is not None:
            raise ValueError("GATConv: edge_attr is not supported (no edge_dim)")
        if return_attention_weights is not None:
            raise ValueError("GATConv: return_attention_weights is not supported by gnnaccel")
        _check_features(x)
        _check_size(size, x.shape[0], x.shape[0])
        if self.in_channels == -1:
            _materialise(self.lin, x.shape[1])
            _materialise(self.res, x.shape[1])
            self.in_channels = x.shape[1]
            self.reset_parameters()
        return self._forward_graph(x, edge_index, rows)

    # ------------------------------------------------------------------ block protocol
    def message_graph(self, graph: Graph, dtype: torch.dtype) -> Graph:
        """The graph without edge weights and, with ``add_self_loops``, with exactly one self loop per node
        (memoised in ``graph.cache``)."""
        if self.add_self_loops:
            return graph.cached(("gat_self_loops",), lambda: _with_self_loops(graph), uses_weight=False)
        if graph.edge_weight is None:
            return graph
        return graph.cached(("unweighted",), lambda: Graph(graph.rowptr, graph.col, graph.num_nodes, None,
                                                           validate=False), uses_weight=False)

    def _same_inputs(self) -> bool:
        return self.input_index_neigh is None and self.input_index_self is None

    def _source_weight(self, with_dst: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """``[W | V_src]`` (+ ``V_dst``) [in, D + H (+ H)] and its intercept (None unless pruned with one)."""
        v_src, v_dst = self._att_weights()
        parts = [self.lin.weight.t(), v_src] + ([v_dst] if with_dst else [])
        width = self.value_channels + self.heads * (2 if with_dst else 1)
        return torch.cat(parts, 1), None if self.lin_bias is None else self.lin_bias[:width]

    def _dst_bias(self) -> Optional[Tensor]:
        return None if self.lin_bias is None else self.lin_bias[self.value_channels + self.heads:]

    def _compacts(self, x: Tensor, block: Block, num_out: int) -> bool:
        return (not tracing() and block.col is not None
                and x.shape[0] > COMPACT_SOURCE_RATIO * (block.num_edges + num_out))

    def _project_sources(self, x: Tensor, x_neigh: Optional[Tensor], rows: Optional[Tensor] = None,
                         with_dst: bool = True) -> Tensor:
        if x_neigh is not None:
            return _project(x_neigh, *self._source_weight(False), rows, None)
        if with_dst and self._same_inputs():
            return _project(x, *self._source_weight(True), rows, None)
        return _project(x, *self._source_weight(False), rows, self.input_index_neigh)

    def block_plan(self, x: Tensor, block: Block, num_out: Optional[int] = None,
                   x_neigh: Optional[Tensor] = None) -> Optional[Tensor]:
        """``x [W | V_src | V_dst]`` [S, D + 2H] of every source row (``[W | V_src]`` when the branches read
        different channels), or None for a small block cut from a much larger table (then ``forward_block``
        projects only the rows the block reads)."""
        num_out = block.num_rows if num_out is None else num_out
        if self._compacts(x, block, num_out):
            return None
        return self._project_sources(x, x_neigh)

    def forward_block(self, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                      x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Block protocol: attention aggregation of the block's sources (+ residual, bias) for the asked rows."""
        num_out = _num_out(block, rows)
        col = block.col
        if plan is None and self._compacts(x, block, num_out):
            read, inverse = torch.unique(col, return_inverse=True)
            plan = self._project_sources(x, x_neigh, read, with_dst=False)
            col = inverse.to(col.dtype)
        elif plan is None:
            plan = self._project_sources(x, x_neigh)
        d, h = self.value_channels, self.heads
        if plan.shape[1] == d + 2 * h:
            s = _self_rows(block, rows)
            a_dst = plan[: block.num_rows, d + h:] if s is None else plan[:, d + h:].index_select(0, s)
        else:
            a_dst = _self_term(x, self._att_weights()[1], self._dst_bias(), block, rows, self.input_index_self)
        out = gat_aggregate(block.rowptr, col, plan[:, :d], plan[:, d:d + h], a_dst, rows, self.head_index,
                            self.negative_slope, self.dropout, self.training)
        if not self.concat:
            out = out.view(out.shape[0], h, -1).mean(1)
        if self.res is not None:
            out = out + _self_term(x, self.res.weight.t(), None, block, rows, self.input_index_self)
        if self.bias is not None:
            out = out.add_(self.bias) if not (torch.is_grad_enabled() and (out.requires_grad or self.bias.requires_grad)) \
                else out + self.bias
        return out

    # ------------------------------------------------------------------ pruning protocol
    def _linear_bias(self) -> Optional[Tensor]:
        """The intercept of the linear part ``[x W | alpha_src | alpha_dst | x W_res]``: ``lin_bias`` (zeros
        before pruning) and zeros for the residual (folded into ``bias``); None without ``bias`` when there is a
        residual (its intercept would have nowhere to go)."""
        if self.bias is None and self.res is not None:
            return None
        ref = self.lin.weight
        lin = self.lin_bias if self.lin_bias is not None else ref.new_zeros(self.value_channels + 2 * self.heads)
        return torch.cat([lin, ref.new_zeros(self.out_channels if self.res is not None else 0)])

    def linear_parts(self) -> LinearParts:
        if self.in_channels == -1:
            raise ValueError("this GATConv has a lazy input width (-1): run one forward first")
        d, h = self.value_channels, self.heads
        v_src, v_dst = self._att_weights()
        w_self = v_dst if self.res is None else torch.cat([v_dst, self.res.weight.t()], 1)
        dev = self.lin.weight.device
        return LinearParts(self.in_channels, d + h + w_self.shape[1], [
            Branch("neigh", torch.cat([self.lin.weight.t(), v_src], 1), torch.arange(d + h, device=dev), "identity"),
            Branch("self", w_self, torch.arange(d + h, d + h + w_self.shape[1], device=dev), "identity"),
        ], self._linear_bias(), "concat", {"input_index": {n: self._input_index(n) for n in self.branch_names},
                                           "outputs_are_layer_outputs": False})

    def branch_inputs(self, graph: Adjacency, h: Tensor, rows: Optional[Tensor] = None) -> Dict[str, Tensor]:
        rows = _rows(rows, h)
        return {n: _select_rows(self._branch_input(h, n), rows) for n in self.branch_names}

    @torch.no_grad()
    def load_pruned(self, input_keep, weights, bias=None):
        d, h = self.value_channels, self.heads
        r = self.out_channels if self.res is not None else 0
        keeps = self._check_load(input_keep, weights, {"neigh": d + h, "self": h + r})
        ref = self.lin.weight
        w_n, w_s = weights["neigh"].to(ref), weights["self"].to(ref)
        if self._linear_bias() is not None:
            if bias is None:
                raise ValueError("the layer has a bias: load_pruned needs the new bias")
            bias = torch.as_tensor(bias).to(ref)
            if bias.shape != (d + 2 * h + r,):
                raise ValueError(f"bias must have shape [{d + 2 * h + r}], got {list(bias.shape)}")
            self.lin_bias = nn.Parameter(bias[:d + 2 * h].clone())
            if r:
                self.bias = nn.Parameter(self.bias.detach() + bias[d + 2 * h:])
        self.lin.weight = nn.Parameter(w_n[:, :d].t().contiguous())
        self.lin.in_features = keeps["neigh"].numel()
        self.lin_att_src = nn.Parameter(w_n[:, d:].t().contiguous())
        self.lin_att_dst = nn.Parameter(w_s[:, :h].t().contiguous())
        if self.res is not None:
            self.res.weight = nn.Parameter(w_s[:, h:].t().contiguous())
            self.res.in_features = keeps["self"].numel()
        self._install_input_index(keeps)

    def _value_heads(self) -> Tensor:
        """The head of every value channel [D]."""
        if self.head_index is not None:
            return self.head_index
        return torch.arange(self.heads, device=self.lin.weight.device).repeat_interleave(
            self.value_channels // self.heads)

    @torch.no_grad()
    def prune_outputs(self, keep) -> None:
        """Keep output channels ``keep`` (in that order). With ``concat`` a value channel is an output channel
        (the heads' attention stays whole: the logit projections are kept); averaged heads keep channel ``o``
        of every head."""
        keep = _as_index(keep, "keep", self.out_channels).to(self.lin.weight.device)
        self._decouple()
        if self.concat:
            value_keep, head_index = keep, self._value_heads().index_select(0, keep)
            uniform = torch.arange(self.heads, device=keep.device).repeat_interleave(keep.numel() // self.heads)
            self.head_index = None if (keep.numel() % self.heads == 0 and torch.equal(head_index, uniform)) \
                else head_index.contiguous()
        else:
            width = self.value_channels // self.heads
            value_keep = (torch.arange(self.heads, device=keep.device)[:, None] * width + keep[None, :]).flatten()
        if self.lin_bias is not None:
            self.lin_bias = nn.Parameter(torch.cat([self.lin_bias[value_keep], self.lin_bias[self.value_channels:]]))
        self.lin.weight = nn.Parameter(self.lin.weight[value_keep].contiguous())
        self.lin.out_features = value_keep.numel()
        if self.res is not None:
            self.res.weight = nn.Parameter(self.res.weight[keep].contiguous())
            self.res.out_features = keep.numel()
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias[keep].contiguous())
        self.out_channels = keep.numel()

    @torch.no_grad()
    def scale_outputs(self, scale: Tensor, shift: Tensor) -> None:
        """Fold a per-channel affine ``out * scale + shift`` into the weights (BatchNorm folding): the value
        weights and the residual are scaled, the attention (logit projections, kept explicitly) is not."""
        self._decouple()
        scale = scale.to(self.lin.weight)
        value_scale = scale if self.concat else scale.repeat(self.heads)
        self.lin.weight.mul_(value_scale.unsqueeze(1))
        if self.lin_bias is not None:
            self.lin_bias[: self.value_channels].mul_(value_scale)
        if self.res is not None:
            self.res.weight.mul_(scale.unsqueeze(1))
        bias = shift.to(scale) if self.bias is None else self.bias * scale + shift.to(scale)
        self.bias = nn.Parameter(bias.detach().clone())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.head_channels}, heads={self.heads}"
                f"{'' if self.concat else ', concat=False'}{self._pruned_repr()})")
