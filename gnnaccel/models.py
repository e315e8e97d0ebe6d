"""GNN models built from :mod:`gnnaccel.nn` layers, and conversion of PyG modules (:func:`from_pyg`).

Every model has ``convs`` (ModuleList of block-protocol layers, :mod:`gnnaccel.nn.protocol`), ``norms`` (ModuleList, same length, BatchNorm1d or
Identity; the last is always Identity), an activation between layers and none after the last. ``forward``
applies conv -> norm -> activation -> dropout (PyG's BasicGNN order with ``act_first=False``). Every path
(``forward``, ``layer``, ``full_inference``, ``BatchedEngine``) runs a layer through ``layer_block``.
"""
from __future__ import annotations

import copy
import threading
import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import _tensor_signature
from .nn.adjacency import Adjacency, as_graph
from .ids import as_node_ids
from .nn.conv import Dense, GCNConv, SAGEConv, SAINTConv, resolve_activation
from .nn.gat import GATConv
from .nn.protocol import Block, graph_block
from .nn.relational import RelationalSAGEConv


_NORMS = {None: None, "batchnorm": nn.BatchNorm1d, "batch_norm": nn.BatchNorm1d,
          "layernorm": nn.LayerNorm, "layer_norm": nn.LayerNorm}


def _normalises_output(conv) -> bool:
    """Whether the conv L2-normalises its output rows (SAGEConv(normalize=True)), i.e. is not affine."""
    return isinstance(conv, SAGEConv) and conv.normalize


class _GNN(nn.Module):
    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int,
                 dropout: float = 0.0, act="relu", norm: Optional[str] = None, act_first: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be None, 'batchnorm' or 'layernorm', got {norm!r}")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden_channels, out_channels
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.act = resolve_activation(act)
        self.act_first = bool(act_first)
        self.convs = nn.ModuleList(self._make_convs())
        make_norm = _NORMS[norm]
        self.norms = nn.ModuleList(
            make_norm(conv.out_channels) if make_norm is not None and i < len(self.convs) - 1 else nn.Identity()
            for i, conv in enumerate(self.convs))

    def extra_repr(self) -> str:
        """A pruned model names its scheme and keep ratios (its convs show the widths)."""
        info = getattr(self, "pruning_info", None)
        if not info:
            return "act_first=True" if self.act_first else ""
        keep = info.get("keep")
        keep = [None if k is None else round(float(k), 4) for k in keep] if isinstance(keep, (list, tuple)) else keep
        return (f"pruned: scheme={info.get('scheme')}, method={info.get('method')}, keep={keep}"
                + (", act_first=True" if self.act_first else ""))

    def _make_convs(self):
        raise NotImplementedError

    def layer_block(self, i: int, x: Tensor, block: Block, rows: Optional[Tensor] = None, *,
                    x_neigh: Optional[Tensor] = None, plan: Optional[Tensor] = None) -> Tensor:
        """Layer ``i`` on a block (block protocol, :mod:`gnnaccel.nn.protocol`): the conv's ``forward_block``,
        then the model's norm and activation (none after the last layer; no dropout).

        Args:
            i: layer index. x, block, rows, x_neigh, plan: as ``convs[i].forward_block``.
        Returns:
            [len(rows) or block.num_rows, convs[i].out_channels].
        """
        h = self.convs[i].forward_block(x, block, rows, x_neigh=x_neigh, plan=plan)
        if i < len(self.convs) - 1:
            if not self.act_first:  # PyG's order: conv -> norm -> act (act_first: conv -> act -> norm)
                h = self.norms[i](h)
            if self.act is F.relu and not (torch.is_grad_enabled() and h.requires_grad):
                h = h.clamp_min_(0)  # inference: the conv's output is a fresh buffer, rectify it in place
            elif self.act is not None:
                h = self.act(h)
            if self.act_first:
                h = self.norms[i](h)
        return h

    def layer(self, i: int, h: Tensor, graph, rows: Optional[Tensor] = None) -> Tensor:
        """Output of layer ``i`` (conv, norm, activation; no dropout) for the node ids ``rows`` (all if None).

        Args:
            i: layer index. h: the layer's input for every node [N, in]. graph: adjacency (Graph, edge_index,
            sparse). rows: node ids (tensor, list or numpy array), validated.
        """
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.convs):
            raise ValueError(f"layer index must be an int in [0, {len(self.convs)}), got {i!r}")
        conv = self.convs[i]
        n = h.shape[0]
        block = graph_block(conv, as_graph(graph, n), h.dtype) if conv.reads_neighbours else Block(n)
        if rows is not None:
            rows = as_node_ids(rows, n, "rows", device=h.device)
        return self.layer_block(i, h, block, rows)

    def forward(self, x: Tensor, adj: Adjacency) -> Tensor:
        graph = as_graph(adj, x.shape[0])
        for i in range(len(self.convs)):
            x = self.layer(i, x, graph)
            if i < len(self.convs) - 1 and self.dropout > 0:
                x = F.dropout(x, p=self.dropout, training=self.training)
        return x

    def _foldable(self, i: int) -> bool:
        """Whether norms[i] (a BatchNorm1d with running statistics) folds exactly into convs[i]: only when it
        directly follows the conv's affine output (no activation first, no L2 normalisation in the conv)."""
        norm = self.norms[i]
        return (isinstance(norm, nn.BatchNorm1d) and norm.running_mean is not None and not self.act_first
                and hasattr(self.convs[i], "scale_outputs") and not _normalises_output(self.convs[i]))

    @torch.no_grad()
    def fold_batchnorm(self) -> "_GNN":
        """Fold each BatchNorm1d (its running statistics, i.e. eval-mode behaviour) into the preceding conv's
        weights and bias where that is exact, and replace it by Identity. Norms that cannot be folded exactly
        stay as separate steps: a BatchNorm after a conv that L2-normalises its output (``SAGEConv(normalize=
        True)``: BN(normalize(conv(x))) is not affine in the conv's weights) or after the activation
        (``act_first``), and LayerNorm. Returns self."""
        for i, norm in enumerate(self.norms):
            if isinstance(norm, nn.Identity) or not self._foldable(i):
                continue
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shift = -norm.running_mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            self.convs[i].scale_outputs(scale, shift)
            self.norms[i] = nn.Identity()
        return self

    @torch.no_grad()
    def prune_layer_outputs(self, i: int, keep: Tensor) -> None:
        """Keep output channels ``keep`` of layer ``i``: its conv and a per-channel norm after it (BatchNorm).

        Raises ValueError when layer ``i`` is followed by a LayerNorm (dropping channels changes its statistics).
        """
        norm = self.norms[i]
        if isinstance(norm, nn.LayerNorm):
            raise ValueError(f"layer {i} is followed by a LayerNorm, which normalises over all its output channels: "
                             "pruning them would change the normalisation; not supported")
        self.convs[i].prune_outputs(keep)
        if isinstance(norm, nn.BatchNorm1d):
            keep = torch.as_tensor(keep, dtype=torch.long, device=norm.running_mean.device
                                   if norm.running_mean is not None else None)
            bn = nn.BatchNorm1d(keep.numel(), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                                track_running_stats=norm.track_running_stats)
            state = {k: (v[keep] if v.dim() == 1 else v) for k, v in norm.state_dict().items()}
            bn.load_state_dict(state)
            self.norms[i] = bn.to(next(iter(state.values())).device).train(norm.training)


class _ConvStack(_GNN):
    """``num_layers`` convolutions of one class (``conv_class``): in -> hidden -> ... -> out; with ``jk="last"``
    (PyG's jumping knowledge "last"): in -> hidden -> ... -> hidden, each followed by norm and activation, then a
    linear head hidden -> out (a :class:`~gnnaccel.nn.Dense`, the last entry of ``convs``)."""

    conv_class: type = None

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0, act="relu", norm: Optional[str] = None, act_first: bool = False,
                 jk: Optional[str] = None, **conv_kwargs):
        if jk not in (None, "last"):
            raise ValueError(f"jk must be None or 'last', got {jk!r} (PyG's 'cat', 'max' and 'lstm' combine the "
                             "outputs of every layer, which layer-by-layer inference cannot; not supported)")
        self.conv_kwargs, self.jk = conv_kwargs, jk
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout, act, norm, act_first)

    def _make_convs(self):
        if self.jk == "last":
            dims = [self.in_channels] + [self.hidden_channels] * self.num_layers
            convs = [self.conv_class(dims[i], dims[i + 1], **self.conv_kwargs) for i in range(self.num_layers)]
            return convs + [Dense(self.hidden_channels, self.out_channels)]
        dims = [self.in_channels] + [self.hidden_channels] * (self.num_layers - 1) + [self.out_channels]
        return [self.conv_class(dims[i], dims[i + 1], **self.conv_kwargs) for i in range(self.num_layers)]


class GraphSAGE(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.SAGEConv` (``conv_kwargs``: aggr, root_weight, bias, normalize)."""

    conv_class = SAGEConv


class GCN(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.GCNConv` (``conv_kwargs``: add_self_loops, normalize, bias)."""

    conv_class = GCNConv


class RelationalGraphSAGE(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.relational.RelationalSAGEConv` (one neighbour branch per relation) over a
    :func:`~gnnaccel.nn.relational.relation_graph` (``conv_kwargs``: num_relations, bias)."""

    conv_class = RelationalSAGEConv


class GAT(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.GATConv`, PyG's ``models.GAT``: ``hidden_channels`` is the total width of
    a hidden layer (``heads`` heads of ``hidden_channels // heads`` channels, concatenated); the last layer
    averages its heads (``concat=False``, ``out_channels`` wide) unless ``jk="last"`` (then every conv is a
    hidden one and a linear head follows). ``dropout`` is also the attention dropout of every conv (as in PyG).
    ``conv_kwargs``: heads, concat, negative_slope, add_self_loops, bias, residual."""

    conv_class = GATConv

    def _make_convs(self):
        kw = dict(self.conv_kwargs)
        heads, concat = kw.pop("heads", 1), kw.pop("concat", True)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int, got {heads!r}")
        if "dropout" in kw:
            raise ValueError("GAT: the attention dropout is the model's dropout (pass dropout=, not a conv dropout)")

        def conv(i_c: int, o_c: int, to_out: bool) -> GATConv:
            cat = concat and not to_out
            if cat and o_c % heads != 0:
                raise ValueError(f"GAT: the width {o_c} of a concatenating layer must be divisible by heads={heads}")
            return GATConv(i_c, o_c // heads if cat else o_c, heads=heads, concat=cat, dropout=self.dropout, **kw)

        h = self.hidden_channels
        if self.jk == "last":
            dims = [self.in_channels] + [h] * self.num_layers
            return [conv(dims[i], dims[i + 1], False) for i in range(self.num_layers)] + [Dense(h, self.out_channels)]
        dims = [self.in_channels] + [h] * (self.num_layers - 1) + [self.out_channels]
        return [conv(dims[i], dims[i + 1], i == self.num_layers - 1) for i in range(self.num_layers)]


class SAINTGraphSAGE(_GNN):
    """The paper's model: ``num_layers`` GraphSAINT concat layers (:class:`~gnnaccel.nn.SAINTConv`, each
    ``hidden_channels`` wide, half self / half neighbour) followed by a linear classifier
    (:class:`~gnnaccel.nn.Dense`). ``convs`` therefore has ``num_layers + 1`` entries."""

    def _make_convs(self):
        dims = [self.in_channels] + [self.hidden_channels] * self.num_layers
        convs = [SAINTConv(dims[i], dims[i + 1], act=None) for i in range(self.num_layers)]
        return convs + [Dense(self.hidden_channels, self.out_channels)]


# ---------------------------------------------------------------------------------------------- PyG import
def from_pyg(module: nn.Module) -> nn.Module:
    """Convert a PyG ``SAGEConv``, ``GCNConv``, ``GATConv``, ``models.GraphSAGE``, ``models.GCN`` or ``models.GAT``
    into the gnnaccel
    equivalent with the same weights, matching the PyG module in eval mode.

    Supported model options: ``act``, ``act_first``, ``dropout``, ``norm`` ("batch_norm", or "layer_norm" with
    ``norm_kwargs={"mode": "node"}``), ``jk`` None or "last", and the conv options (SAGE: ``aggr`` mean / sum
    / max, ``normalize``, ``root_weight``, ``bias``; GCN: ``improved``, ``add_self_loops``, ``normalize``,
    ``bias``). BatchNorm is folded into the conv where that is exact, else kept as a separate step (see
    :meth:`fold_batchnorm`); LayerNorm is kept. Rejected with a clear error: SAGE ``project=True``, other
    aggregations, ``jk`` "cat" / "max" / "lstm", LayerNorm ``mode="graph"`` and other norms.

    Args:
        module: the PyG module (its parameters must be initialised: run a lazy module once first).
    Returns:
        The gnnaccel module, in eval mode, on the module's device and dtype.
    """
    try:
        import torch_geometric.nn as pyg_nn
    except ImportError as exc:  # pragma: no cover
        raise ImportError("from_pyg needs torch_geometric installed") from exc

    if isinstance(module, pyg_nn.SAGEConv):
        return _sage_from_pyg(module).eval()
    if isinstance(module, pyg_nn.GCNConv):
        return _gcn_from_pyg(module).eval()
    if isinstance(module, pyg_nn.GATConv):
        return _gat_from_pyg(module).eval()
    if isinstance(module, (pyg_nn.models.GraphSAGE, pyg_nn.models.GCN, pyg_nn.models.GAT)):
        return _model_from_pyg(module, pyg_nn).eval()
    raise TypeError(f"from_pyg supports torch_geometric SAGEConv, GCNConv, GATConv, models.GraphSAGE, models.GCN "
                    f"and models.GAT, "
                    f"got {type(module).__module__}.{type(module).__name__}")


_PYG_MODELS = None
_DTYPE_COPIES = None  # model -> {dtype: (state fingerprint, converted copy)}, weakly keyed
_MEMO_LOCK = threading.Lock()

#: Dtypes the engines run in (``dtype=`` of ``full_inference`` / ``BatchedEngine``).
INFERENCE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: Storage formats whose engine outputs are returned in float32.
HALF_DTYPES = (torch.bfloat16, torch.float16)


def check_inference_dtype(dtype) -> Optional[torch.dtype]:
    """``dtype`` if the engines can run in it (None, float32, float64, bfloat16, float16), else ValueError.

    Args:
        dtype: the ``dtype=`` argument of an engine.
    Returns:
        ``dtype`` unchanged.
    """
    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be None, torch.float32, torch.float64, torch.bfloat16 or torch.float16, got "
                         f"{dtype!r}")
    return dtype


def as_features(x: Tensor, dtype: torch.dtype, name: str = "x") -> Tensor:
    """Node features ``x`` in ``dtype`` (``x`` itself when it already is; else a copy).

    Args:
        x: a floating-point tensor. dtype: one of :data:`INFERENCE_DTYPES`. name: what to call ``x`` in errors.
    Returns:
        ``x`` in ``dtype``.
    Raises:
        TypeError: ``x`` is not a floating-point tensor. ValueError: finite values overflow ``dtype`` (e.g.
        beyond float16's 65504).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    out = x.to(dtype)
    if (out is not x and out.numel() and torch.finfo(dtype).max < torch.finfo(x.dtype).max
            and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all())):
        raise ValueError(f"{name} holds values beyond the range of {dtype} (largest finite "
                         f"{torch.finfo(dtype).max:.6g}): rescale the features or use another dtype")
    return out


def _state_fingerprint(model: nn.Module) -> tuple:
    """Identity of a module's parameters and buffers: changes when one is replaced or modified in place."""
    return tuple((name, _tensor_signature(t)) for name, t in model.state_dict(keep_vars=True).items())


def _memoised(table, model: nn.Module, key, convert):
    """``convert()`` memoised in ``table`` (a WeakKeyDictionary) under ``(model, key)`` until the model's state
    changes (see :func:`_state_fingerprint`)."""
    state = _state_fingerprint(model)
    with _MEMO_LOCK:
        hit = table.get(model, {}).get(key)
    if hit is not None and hit[0] == state:
        return hit[1]
    converted = convert()
    with _MEMO_LOCK:
        table.setdefault(model, {})[key] = (state, converted)
    return converted


def _in_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy of ``model`` with its floating parameters and buffers in ``dtype`` (``Module.to``: index
    buffers such as a pruned layer's ``input_index_*`` stay integer); ``model`` itself when they already are."""
    floating = [t for t in model.state_dict().values() if t.is_floating_point()]
    if all(t.dtype == dtype for t in floating):
        return model
    with torch.no_grad():
        return copy.deepcopy(model).to(dtype).eval()


def as_model(model: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """``model`` itself if it is a gnnaccel model; a PyG ``models.GraphSAGE`` / ``models.GCN`` converted with
    :func:`from_pyg` (memoised per PyG module until its parameters or buffers change, so that repeated calls
    convert once). With ``dtype``, a copy in that dtype (eval mode; memoised the same way per ``(model,
    dtype)``; the caller's model is never modified), or the model itself when it is already in ``dtype``.

    Args:
        model: a gnnaccel model or a PyG GraphSAGE / GCN / GAT.
        dtype: None (keep the model's dtype) or one of :data:`INFERENCE_DTYPES`.
    Returns:
        A model with ``convs`` and ``layer_block``.
    """
    global _PYG_MODELS, _DTYPE_COPIES
    check_inference_dtype(dtype)
    if dtype is not None:
        base = as_model(model)
        if _DTYPE_COPIES is None:
            _DTYPE_COPIES = weakref.WeakKeyDictionary()
        return _memoised(_DTYPE_COPIES, base, dtype, lambda: _in_dtype(base, dtype))
    module = type(model).__module__ or ""
    if not module.startswith("torch_geometric"):
        return model
    import torch_geometric.nn as pyg_nn

    if not isinstance(model, (pyg_nn.models.GraphSAGE, pyg_nn.models.GCN, pyg_nn.models.GAT)):
        raise TypeError(f"expected a gnnaccel model or a PyG models.GraphSAGE / models.GCN / models.GAT, got "
                        f"{type(model).__module__}.{type(model).__name__}")
    if _PYG_MODELS is None:
        _PYG_MODELS = weakref.WeakKeyDictionary()
    return _memoised(_PYG_MODELS, model, None, lambda: from_pyg(model))


def _channels(value, what: str) -> int:
    if value == -1:
        raise ValueError(f"the PyG {what} has a lazy input width (-1): run one forward first, then convert")
    return value


def _sage_from_pyg(conv) -> SAGEConv:
    aggr = conv.aggr if isinstance(conv.aggr, str) else None
    if aggr not in ("mean", "add", "sum", "max"):
        raise ValueError(f"SAGEConv aggregation {conv.aggr!r} is not supported (use mean, sum/add or max)")
    if getattr(conv, "project", False):
        raise ValueError("SAGEConv(project=True) is not supported by gnnaccel (its ReLU projection of the source "
                         "features precedes the aggregation)")
    in_channels = conv.in_channels
    if isinstance(in_channels, (tuple, list)):
        in_channels = (_channels(in_channels[0], "SAGEConv"), _channels(in_channels[1], "SAGEConv"))
    else:
        in_channels = _channels(in_channels, "SAGEConv")
    ours = SAGEConv(in_channels, conv.out_channels, aggr=aggr, normalize=conv.normalize,
                    root_weight=conv.root_weight, bias=conv.lin_l.bias is not None)
    ours.load_state_dict(_plain_state(conv.state_dict()))
    return ours.to(conv.lin_l.weight)


def _gcn_from_pyg(conv) -> GCNConv:
    ours = GCNConv(_channels(conv.in_channels, "GCNConv"), conv.out_channels, improved=conv.improved,
                   add_self_loops=conv.add_self_loops, normalize=conv.normalize, bias=conv.bias is not None)
    ours.load_state_dict(_plain_state(conv.state_dict()))
    return ours.to(conv.lin.weight)


def _gat_from_pyg(conv) -> GATConv:
    if conv.lin is None:
        raise ValueError("GATConv with bipartite in_channels (lin_src / lin_dst) is not supported by gnnaccel")
    if conv.edge_dim is not None:
        raise ValueError("GATConv(edge_dim=...) (edge features in the attention) is not supported by gnnaccel")
    ours = GATConv(_channels(conv.in_channels, "GATConv"), conv.out_channels, heads=conv.heads, concat=conv.concat,
                   negative_slope=conv.negative_slope, dropout=conv.dropout, add_self_loops=conv.add_self_loops,
                   bias=conv.bias is not None, residual=conv.res is not None).to(conv.lin.weight)
    ours.load_state_dict(conv.state_dict())  # into parameters of the module's dtype: no rounding
    return ours


def _plain_state(state):
    # PyG's Linear stores the same tensors as torch.nn.Linear; drop anything non-parametric it may add.
    return {k: v for k, v in state.items() if k.endswith(("weight", "bias"))}


def _conv_kwargs(conv, pyg_nn) -> dict:
    """The gnnaccel constructor arguments of a converted conv (what ``save`` records to rebuild it)."""
    if isinstance(conv, SAGEConv):
        return {"aggr": conv.aggr, "normalize": conv.normalize, "root_weight": conv.root_weight,
                "bias": conv.lin_l.bias is not None}
    if isinstance(conv, GATConv):
        return {"heads": conv.heads, "negative_slope": conv.negative_slope, "add_self_loops": conv.add_self_loops,
                "bias": conv.bias is not None, "residual": conv.residual}
    return {"improved": conv.improved, "add_self_loops": conv.add_self_loops, "normalize": conv.normalize,
            "bias": conv.bias is not None}


def _norm_from_pyg(norm, pyg_nn, width: int):
    """A PyG norm module -> (gnnaccel norm name, module), or raise for what gnnaccel cannot keep."""
    inner = getattr(norm, "module", norm)  # PyG's BatchNorm wraps torch's
    if isinstance(inner, nn.Identity):
        return None, nn.Identity()
    if isinstance(inner, nn.BatchNorm1d):
        if inner.running_mean is None:
            raise ValueError("BatchNorm without running statistics (track_running_stats=False) normalises with "
                             "the statistics of each batch; not supported")
        bn = nn.BatchNorm1d(inner.num_features, eps=inner.eps, momentum=inner.momentum, affine=inner.affine)
        bn = bn.to(inner.running_mean)  # dtype and device first: loading into float32 would round float64
        bn.load_state_dict(inner.state_dict())
        return "batchnorm", bn
    if isinstance(norm, pyg_nn.norm.LayerNorm):
        if norm.mode != "node":
            raise ValueError(f"LayerNorm(mode={norm.mode!r}) normalises over all nodes of the graph at once, which "
                             "row-chunked and batched inference cannot reproduce; not supported (PyG's "
                             "norm='layer_norm' defaults to mode='graph': use norm_kwargs={'mode': 'node'})")
        ln = nn.LayerNorm(norm.in_channels, eps=norm.eps, elementwise_affine=norm.weight is not None)
        if norm.weight is not None:
            ln = ln.to(norm.weight)
            ln.load_state_dict({"weight": norm.weight.detach(), "bias": norm.bias.detach()})
        return "layernorm", ln
    raise ValueError(f"norm {type(norm).__name__} is not supported (supported: BatchNorm, LayerNorm(mode='node'))")


def _model_from_pyg(model, pyg_nn) -> _GNN:
    jk = getattr(model, "jk_mode", None)
    if jk not in (None, "last"):
        raise ValueError(f"PyG jumping knowledge jk={jk!r} is not supported: it combines the outputs of every layer, "
                         "which gnnaccel's layer-by-layer inference (full_inference chunks, BatchedEngine, the "
                         "pruner) cannot; jk=None and jk='last' are")
    converters = ((pyg_nn.SAGEConv, _sage_from_pyg), (pyg_nn.GCNConv, _gcn_from_pyg), (pyg_nn.GATConv, _gat_from_pyg))
    convs = []
    for c in model.convs:
        convert = next((f for cls, f in converters if isinstance(c, cls)), None)
        if convert is None:
            raise TypeError(f"unsupported conv {type(c).__name__} inside {type(model).__name__}")
        convs.append(convert(c))
    if isinstance(model.in_channels, (tuple, list)):
        raise ValueError("PyG models with bipartite (tuple) in_channels are not supported")
    norm_names, norms = set(), []
    for i, norm in enumerate(model.norms):
        name, module = _norm_from_pyg(norm, pyg_nn, convs[i].out_channels)
        norm_names.add(name)
        norms.append(module)
    norm_names.discard(None)
    dropout = model.dropout.p if isinstance(model.dropout, nn.Module) else float(model.dropout)
    cls = (GraphSAGE if isinstance(model, pyg_nn.models.GraphSAGE)
           else GAT if isinstance(model, pyg_nn.models.GAT) else GCN)
    kwargs = _conv_kwargs(convs[0], pyg_nn)
    if cls is GAT:  # PyG's model-level concat: that of its hidden convs (a lone output conv never concatenates)
        kwargs["concat"] = convs[0].concat if len(convs) > 1 or jk is not None else True
    ours = cls(model.in_channels, model.hidden_channels, model.out_channels, model.num_layers, dropout=dropout,
               act=model.act if model.act is not None else None, norm=next(iter(norm_names), None),
               act_first=bool(model.act_first), jk=jk, **kwargs)
    if jk == "last":
        head = Dense(model.lin.in_features, model.lin.out_features, bias=model.lin.bias is not None).to(
            model.lin.weight)
        head.lin.load_state_dict(_plain_state(model.lin.state_dict()))
        convs.append(head)
    norms.extend(nn.Identity() for _ in range(len(convs) - len(norms)))
    ours.convs = nn.ModuleList(convs)
    ours.norms = nn.ModuleList(norms)
    ours.eval()
    return ours.fold_batchnorm()
