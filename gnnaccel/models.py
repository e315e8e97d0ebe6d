"""GNN models built from :mod:`gnnaccel.nn` layers, and conversion of PyG modules (:func:`from_pyg`).

Every model has ``convs`` (ModuleList of block-protocol layers, :mod:`gnnaccel.nn.protocol`), ``norms`` (ModuleList, same length, BatchNorm1d or
Identity; the last is always Identity), an activation between layers and none after the last. ``forward``
applies conv -> norm -> activation -> dropout (PyG's BasicGNN order with ``act_first=False``). Every path
(``forward``, ``layer``, ``full_inference``, ``BatchedEngine``) runs a layer through ``layer_block``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn.adjacency import Adjacency, as_graph
from .ids import as_node_ids
from .nn.conv import Dense, GCNConv, SAGEConv, SAINTConv, resolve_activation
from .nn.protocol import Block, graph_block


class _GNN(nn.Module):
    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int,
                 dropout: float = 0.0, act="relu", norm: Optional[str] = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if norm not in (None, "batchnorm", "batch_norm"):
            raise ValueError(f"norm must be None or 'batchnorm', got {norm!r}")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden_channels, out_channels
        self.num_layers, self.dropout = num_layers, float(dropout)
        self.act = resolve_activation(act)
        self.convs = nn.ModuleList(self._make_convs())
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(conv.out_channels) if norm is not None and i < len(self.convs) - 1 else nn.Identity()
            for i, conv in enumerate(self.convs))

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
            h = self.norms[i](h)
            if self.act is F.relu and not (torch.is_grad_enabled() and h.requires_grad):
                h = h.clamp_min_(0)  # inference: the conv's output is a fresh buffer, rectify it in place
            elif self.act is not None:
                h = self.act(h)
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

    @torch.no_grad()
    def fold_batchnorm(self) -> "_GNN":
        """Fold every BatchNorm1d (its running statistics, i.e. eval-mode behaviour) into the preceding conv's
        weights and bias, and replace it by Identity. Returns self."""
        for i, norm in enumerate(self.norms):
            if isinstance(norm, nn.Identity):
                continue
            if not isinstance(norm, nn.BatchNorm1d) or norm.running_mean is None:
                raise ValueError(f"norms[{i}] ({type(norm).__name__}) cannot be folded: need BatchNorm1d with "
                                 "running statistics")
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            shift = -norm.running_mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            self.convs[i].scale_outputs(scale, shift)
            self.norms[i] = nn.Identity()
        return self


class _ConvStack(_GNN):
    """``num_layers`` convolutions of one class (``conv_class``): in -> hidden -> ... -> out."""

    conv_class: type = None

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.0, act="relu", norm: Optional[str] = None, **conv_kwargs):
        self.conv_kwargs = conv_kwargs
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout, act, norm)

    def _make_convs(self):
        dims = [self.in_channels] + [self.hidden_channels] * (self.num_layers - 1) + [self.out_channels]
        return [self.conv_class(dims[i], dims[i + 1], **self.conv_kwargs) for i in range(self.num_layers)]


class GraphSAGE(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.SAGEConv` (``conv_kwargs``: aggr, root_weight, bias, normalize)."""

    conv_class = SAGEConv


class GCN(_ConvStack):
    """Stack of :class:`~gnnaccel.nn.GCNConv` (``conv_kwargs``: add_self_loops, normalize, bias)."""

    conv_class = GCNConv


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
    """Convert a PyG ``SAGEConv``, ``GCNConv``, ``models.GraphSAGE`` or ``models.GCN`` into the gnnaccel
    equivalent with the same weights (BatchNorm folded with its running statistics, i.e. matching the PyG
    module in eval mode). The result is in eval mode. Raises ValueError / TypeError for what it cannot map."""
    try:
        import torch_geometric.nn as pyg_nn
    except ImportError as exc:  # pragma: no cover
        raise ImportError("from_pyg needs torch_geometric installed") from exc

    if isinstance(module, pyg_nn.SAGEConv):
        return _sage_from_pyg(module).eval()
    if isinstance(module, pyg_nn.GCNConv):
        return _gcn_from_pyg(module).eval()
    if isinstance(module, (pyg_nn.models.GraphSAGE, pyg_nn.models.GCN)):
        return _model_from_pyg(module, pyg_nn).eval()
    raise TypeError(f"from_pyg supports torch_geometric SAGEConv, GCNConv, models.GraphSAGE and models.GCN, "
                    f"got {type(module).__module__}.{type(module).__name__}")


def _sage_from_pyg(conv) -> SAGEConv:
    if not isinstance(conv.in_channels, int):
        raise ValueError("bipartite SAGEConv (tuple in_channels) is not supported")
    aggr = conv.aggr if isinstance(conv.aggr, str) else None
    if aggr not in ("mean", "add", "sum", "max"):
        raise ValueError(f"SAGEConv aggregation {conv.aggr!r} is not supported (use mean, sum/add or max)")
    if getattr(conv, "project", False):
        raise ValueError("SAGEConv(project=True) is not supported")
    ours = SAGEConv(conv.in_channels, conv.out_channels, aggr=aggr, root_weight=conv.root_weight,
                    bias=conv.lin_l.bias is not None, normalize=conv.normalize)
    ours.load_state_dict(_plain_state(conv.state_dict()))
    return ours.to(conv.lin_l.weight)


def _gcn_from_pyg(conv) -> GCNConv:
    if conv.improved:
        raise ValueError("GCNConv(improved=True) is not supported")
    ours = GCNConv(conv.in_channels, conv.out_channels, add_self_loops=conv.add_self_loops,
                   normalize=conv.normalize, bias=conv.bias is not None)
    ours.load_state_dict(_plain_state(conv.state_dict()))
    return ours.to(conv.lin.weight)


def _plain_state(state):
    # PyG's Linear stores the same tensors as torch.nn.Linear; drop anything non-parametric it may add.
    return {k: v for k, v in state.items() if k.endswith(("weight", "bias"))}


def _model_from_pyg(model, pyg_nn) -> _GNN:
    if getattr(model, "jk_mode", None) is not None or getattr(model, "jk", None) is not None:
        raise ValueError("PyG models with jumping knowledge (jk=...) are not supported")
    if getattr(model, "act_first", False) and any(not isinstance(n, nn.Identity) for n in model.norms or []):
        raise ValueError("act_first=True with a norm cannot be folded (the norm follows the activation)")
    if getattr(model, "supports_edge_attr", False):
        pass
    convs = [(_sage_from_pyg if isinstance(c, pyg_nn.SAGEConv) else _gcn_from_pyg)(c) for c in model.convs]
    for c in model.convs:
        if not isinstance(c, (pyg_nn.SAGEConv, pyg_nn.GCNConv)):
            raise TypeError(f"unsupported conv {type(c).__name__} inside {type(model).__name__}")
    dropout = model.dropout.p if isinstance(model.dropout, nn.Module) else float(model.dropout)
    cls = GraphSAGE if isinstance(model, pyg_nn.models.GraphSAGE) else GCN
    ours = cls(model.in_channels, model.hidden_channels, model.out_channels, model.num_layers, dropout=dropout,
               act=model.act if model.act is not None else None)
    ours.convs = nn.ModuleList(convs)
    norms = list(model.norms) if model.norms is not None else []
    for i, norm in enumerate(norms):
        inner = getattr(norm, "module", norm)
        if isinstance(inner, nn.Identity):
            continue
        if not isinstance(inner, nn.BatchNorm1d):
            raise ValueError(f"norm {type(norm).__name__} is not supported (only BatchNorm can be folded)")
        if inner.running_mean is None:
            raise ValueError("BatchNorm without running statistics cannot be folded")
        bn = nn.BatchNorm1d(inner.num_features, eps=inner.eps, affine=inner.affine).to(inner.running_mean)
        bn.load_state_dict(inner.state_dict())
        ours.norms[i] = bn
    ours.eval()
    return ours.fold_batchnorm()
