"""Full-graph inference: every node's output, layer by layer, optionally in row chunks to bound memory."""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from .models import HALF_DTYPES, as_features, as_model
from .nn.adjacency import Adjacency, as_graph
from .nn.protocol import Block, check_layer, graph_block


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rows", disable=not (enabled and sys.stderr.isatty()), leave=False)


def full_inference(model: torch.nn.Module, graph: Adjacency, x: Tensor, chunk_size: Optional[int] = None,
                   progress: bool = True, return_hidden: bool = False, dtype: Optional[torch.dtype] = None
                   ) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
    """Outputs of ``model`` (a gnnaccel model: ``convs`` of block-protocol layers and ``layer_block``, see
    :mod:`gnnaccel.nn.protocol`) for all nodes.

    Runs in eval mode under ``torch.inference_mode`` one layer at a time. With ``chunk_size``, each layer's
    output is filled ``chunk_size`` rows at a time (``rows=`` aggregation), so besides the model the peak
    memory is about the layer's input and output buffers (plus, for a layer that projects before
    aggregating, its projected input, which is narrower than the input). With ``return_hidden`` also returns
    ``[h_0, ..., h_{L-1}]``, the output of every layer (``hidden[l]`` = output of layer ``l`` = input of layer
    ``l + 1``; the last one is the returned output), the convention of :func:`warm_cache`.
    The model's training flag is restored afterwards.

    Args:
        model, graph, x: the model (or a PyG GraphSAGE / GCN / GAT), the graph, the node features [N, C].
        chunk_size: rows per chunk (None: each layer at once).
        progress: show a progress bar on a terminal (chunked runs).
        return_hidden: also return every layer's output.
        dtype: None (x's dtype, as the model's weights) or the dtype to run in: with ``torch.bfloat16`` /
            ``torch.float16`` the features and every hidden activation are stored at half width and a copy of
            the model converted through its modules (``Module.to``; memoised per model and dtype, see
            :func:`~gnnaccel.models.as_model`) is used; the caller's model is not modified. float32 / float64
            run the same way at that width.
    Returns:
        the output [N, out] (float32 for a half-width ``dtype``, else ``dtype`` / x's dtype), and with
        ``return_hidden`` the hidden outputs in the dtype they were computed in.
    Raises:
        ValueError: ``dtype`` is not one of those above, or ``chunk_size`` is not a positive int.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    # A PyG GraphSAGE / GCN: converted (once, memoised) with from_pyg; with dtype, a converted copy (memoised).
    model = as_model(model, dtype)
    if not hasattr(model, "convs") or not hasattr(model, "layer_block"):
        raise TypeError("full_inference expects a gnnaccel model (with .convs and .layer_block) or a PyG "
                        "GraphSAGE / GCN")
    for conv in model.convs:
        check_layer(conv, "full_inference")
    g = as_graph(graph, x.shape[0])
    if dtype is not None:
        x = as_features(x, dtype, "x")
    was_training = model.training
    model.eval()
    hidden: List[Tensor] = []
    try:
        with torch.inference_mode():
            h = x
            n = g.num_nodes
            for i, conv in enumerate(model.convs):
                block = graph_block(conv, g, h.dtype)
                if chunk_size is None or chunk_size >= n:
                    h = model.layer_block(i, h, block)
                else:
                    h = _layer_in_chunks(model, i, h, block, chunk_size, progress)
                if return_hidden:
                    hidden.append(h)
    finally:
        model.train(was_training)
    if dtype in HALF_DTYPES:
        h = h.float()
    return (h, hidden) if return_hidden else h


def _layer_in_chunks(model, i: int, h: Tensor, block: Block, chunk_size: int, progress: bool) -> Tensor:
    n = block.num_rows
    # What the layer can share between chunks (e.g. a project-first layer's projection of every node) is
    # computed once, by the layer.
    plan = model.convs[i].block_plan(h, block, n)
    out = None
    with _progress(n, progress, f"layer {i + 1}/{len(model.convs)}") as bar:
        for start in range(0, n, chunk_size):
            rows = torch.arange(start, min(n, start + chunk_size), device=h.device)
            part = model.layer_block(i, h, block, rows, plan=plan)
            if out is None:
                out = h.new_empty((n, part.shape[1]))
            out[start:start + rows.numel()] = part
            bar.update(rows.numel())
    return out


from .batched import BatchedEngine  # noqa: E402  (re-export: the batched scenario)
from .latency import latency_stream  # noqa: E402


def warm_cache(cache, model: torch.nn.Module, graph: Adjacency, x: Tensor, nodes: Optional[Tensor] = None
               ) -> Tensor:
    """Fill a :class:`~gnnaccel.cache.FeatureCache` from one full-inference pass and bind it to ``(model, x)``.

    Args:
        cache: the cache; its layer ``l`` receives the output of model layer ``l`` (``hidden[l]`` of
            :func:`full_inference`, run in the cache's dtype when that is bfloat16 / float16).
        model, graph, x: as for :func:`full_inference`.
        nodes: which nodes to store (default: all; with a capacity, the ``capacity`` nodes of highest
            out-degree, i.e. those that the most other nodes aggregate from, inserted last so that they are the
            last to be evicted). Entries that another model or other features left in the cache are dropped
            first (see ``FeatureCache.check_owner``).

    Returns:
        the model output for every node.
    """
    from .cache import FeatureCache

    if not isinstance(cache, FeatureCache):
        raise TypeError(f"cache must be a FeatureCache, got {type(cache).__name__}")
    g = as_graph(graph, x.shape[0])
    if g.num_nodes != cache.num_nodes:
        raise ValueError(f"graph has {g.num_nodes} nodes, the cache {cache.num_nodes}")
    if nodes is None:
        if cache.capacity is not None and cache.capacity < cache.num_nodes:
            top = torch.topk(g.out_degree(), cache.capacity, sorted=True).indices
            nodes = top.flip(0)  # highest degree inserted last = most recently used
        else:
            nodes = torch.arange(cache.num_nodes, device=cache.device)
    try:
        cache.check_owner(model, x)
    except ValueError:  # filled by another model or from other features: start afresh
        cache.invalidate_all()
    token = cache.epoch
    # A half-width cache is filled the way an engine in that dtype computes (BatchedEngine(..., dtype=)).
    dtype = cache.dtype if cache.dtype in HALF_DTYPES and cache.dtype != x.dtype else None
    out, hidden = full_inference(model, g, x, progress=False, return_hidden=True, dtype=dtype)
    if len(hidden) < cache.num_layers:
        raise ValueError(f"the model has {len(hidden)} layers, the cache caches {cache.num_layers}")
    for l in range(cache.num_layers):
        h = hidden[l]
        if h.shape != (cache.num_nodes, cache.dims[l]):
            raise ValueError(f"hidden layer {l} has shape {list(h.shape)}, the cache expects "
                             f"[{cache.num_nodes}, {cache.dims[l]}]")
    for l in range(cache.num_layers):
        cache.insert(l, nodes, hidden[l].index_select(0, nodes.to(hidden[l].device).long()), since=token)
    cache.bind(model, x)
    return out
