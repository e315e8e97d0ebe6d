"""Distributed full-graph inference over a partition (:func:`gnnaccel.distributed.partition`) on a
``torch.distributed`` process group: every rank computes the rows of its part, layer by layer, through the
model's block protocol (:mod:`gnnaccel.nn.protocol`), exactly as :func:`gnnaccel.inference.full_inference`.

Per layer that reads neighbours, each rank sends the rows of its layer input that other parts read (only
the channels the layer's neighbour aggregation reads: ``neighbour_channels()``, or the layer's input width)
with one ``all_to_all_single`` whose split sizes were fixed at partition time. While it is in flight the rank
computes its *interior* rows (those whose in-neighbours it owns), then, once the halo rows have arrived, its
*boundary* rows.

Failures never hang the group: a rank that fails to read its part or the model, or fails in a layer, still
takes part in the next agreement point (a one-int ``all_reduce``, then the error texts), and every rank
raises :class:`DistributedInferenceError` naming each failing rank's error.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from ..graph import Graph
from ..models import as_model
from ..nn.protocol import Block, check_layer
from .store import Part, PathLike, load_part, read_manifest

_MESSAGE_BYTES = 1024


class DistributedInferenceError(RuntimeError):
    """Raised on every rank when any rank of a distributed inference fails (with each failing rank's error)."""


@dataclass
class LayerStats:
    """Per-layer figures of one rank (bytes are of the halo exchange; times in seconds)."""

    layer: int
    channels: int = 0  # channels exchanged per halo row (0: the layer reads no neighbours)
    rows_sent: int = 0
    rows_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    interior_rows: int = 0
    boundary_rows: int = 0
    exchange_s: float = 0.0  # packing + posting + (non-overlapped) waiting for the all_to_all
    wait_s: float = 0.0  # time blocked in wait() after the interior rows (overlapped mode)
    compute_s: float = 0.0  # layer_block calls (interior + boundary)


@dataclass
class RunStats:
    rank: int
    world_size: int
    layers: List[LayerStats] = field(default_factory=list)


def _device_for(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agree(error: Optional[BaseException], group, device: torch.device, what: str) -> None:
    """Every rank calls this at the same point: raises DistributedInferenceError on every rank if any rank
    passed an error (the failing rank chains its own)."""
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag, group=group)
    if int(flag) == 0:
        return
    text = b"" if error is None else f"{type(error).__name__}: {error}".encode("utf-8", "replace")[:_MESSAGE_BYTES]
    mine = torch.zeros(_MESSAGE_BYTES + 1, dtype=torch.uint8, device=device)
    if error is not None:
        mine[0] = 1
        mine[1:1 + len(text)] = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(device)
    world = dist.get_world_size(group)
    got = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(got, mine, group=group)
    lines = []
    for r, t in enumerate(got):
        t = t.cpu()
        if int(t[0]):
            msg = bytes(t[1:].tolist()).rstrip(b"\0").decode("utf-8", "replace")
            lines.append(f"rank {r}: {msg}")
    raise DistributedInferenceError(f"distributed inference failed {what} on {len(lines)} of {world} rank(s):\n  "
                                    + "\n  ".join(lines)) from error


def _load_model(model, device):
    if isinstance(model, (str, os.PathLike)):
        from ..serialize import load

        model = load(model, map_location=device)
    model = as_model(model)
    if not hasattr(model, "convs") or not hasattr(model, "layer_block"):
        raise TypeError("distributed full_inference expects a gnnaccel model (with .convs and .layer_block), a "
                        "PyG GraphSAGE / GCN, or the path of a model saved with gnnaccel.save")
    for conv in model.convs:
        check_layer(conv, "distributed full_inference")
    return model


def _check_model(model, part: Part) -> None:
    first = model.convs[0]
    width = part.x.shape[1]
    if first.in_channels != width:
        raise ValueError(f"the model's first layer takes {first.in_channels} input channels but the partition's "
                         f"features have {width}")
    p = next(model.parameters(), None)
    if p is not None and p.dtype != part.x.dtype:
        raise ValueError(f"the model's parameters are {p.dtype} but the partition's features are {part.x.dtype}")


class _LocalGraph:
    """A part's graph over its local ids (owned rows, then halo rows), and the blocks layers run on."""

    def __init__(self, part: Part, device: torch.device):
        n, H = part.num_owned, part.num_halo
        self.n, self.H = n, H
        rowptr = torch.cat([part.rowptr, part.rowptr[-1:].expand(H)])  # halo rows: no in-edges
        self.plain = Graph(rowptr.to(device), part.col.to(device), n + H,
                           None if part.edge_weight is None else part.edge_weight.to(device), validate=False)
        self.part = part
        self.device = device
        self._degree: Optional[Graph] = None
        self._blocks: Dict[Tuple[int, torch.dtype], tuple] = {}

    def degree_graph(self) -> Graph:
        """The local graph plus, on each halo row, stand-in in-edges carrying the node's global weighted
        in-degree (one edge from another node) and its self loop: the message graph of a degree-normalised
        layer (normalised by the in-degrees of an edge's two ends) is then the global one on the owned rows."""
        if self._degree is None:
            p, n, H = self.part, self.n, self.H
            E = p.col.numel()
            w = (p.edge_weight.double() if p.edge_weight is not None else torch.ones(E, dtype=torch.float64))
            halo = torch.arange(n, n + H)
            has_in = p.halo_in_weight != 0
            has_loop = ~torch.isnan(p.halo_loop_weight)
            other = (halo + 1) % (n + H)  # any node but the halo node itself (n >= 1 whenever H >= 1)
            cnt = has_in.long() + has_loop.long()
            # Each halo row: [stand-in edge][self loop]
            src = torch.stack([other, halo], 1)[torch.stack([has_in, has_loop], 1)]
            wt = torch.stack([p.halo_in_weight, p.halo_loop_weight], 1)[torch.stack([has_in, has_loop], 1)]
            rowptr = torch.cat([p.rowptr, E + torch.cumsum(cnt, 0)])
            self._degree = Graph(rowptr.to(self.device), torch.cat([p.col, src]).to(self.device), n + H,
                                 torch.cat([w, wt]).to(self.device), validate=False)
        return self._degree

    def blocks(self, conv, dtype: torch.dtype):
        """(block of the owned rows, interior row ids, boundary row ids) for ``conv``: the rows of the layer's
        message graph over the local ids; a boundary row reads at least one halo node."""
        g = self.degree_graph() if conv.degree_normalised else self.plain
        mg = conv.message_graph(g, dtype)
        key = (id(mg), dtype)
        hit = self._blocks.get(key)
        if hit is not None and hit[0] is mg:
            return hit[1]
        n = self.n
        e_own = int(mg.rowptr[n])
        rowptr, col = mg.rowptr[: n + 1], mg.col[:e_own]
        w = mg.edge_weight
        w = None if w is None else w[:e_own].to(dtype)
        reads_halo = torch.zeros(n, dtype=torch.long, device=col.device)
        if e_own:
            row = torch.repeat_interleave(torch.arange(n, device=col.device), rowptr[1:] - rowptr[:-1],
                                          output_size=e_own)
            reads_halo.index_add_(0, row, (col >= n).long())
        blocks = (Block(n, rowptr, col, w), torch.nonzero(reads_halo == 0).flatten(),
                  torch.nonzero(reads_halo > 0).flatten())
        self._blocks[key] = (mg, blocks)
        return blocks


class _Exchange:
    """The halo exchange of one part: which rows go where (fixed at partition time)."""

    def __init__(self, part: Part, group, device: torch.device):
        self.send_idx = part.send_idx.to(device)
        self.send_counts, self.recv_counts = list(part.send_counts), list(part.recv_counts)
        self.group = group

    def start(self, table: Tensor, n: int, async_op: bool):
        """Send the owned rows ``table[send rows]`` that other parts read and receive the halo rows into
        ``table[n:]`` (rows ``0..n-1`` = owned). Returns (sent buffer, work handle or None, packing error or
        None): a rank that fails to pack still takes part, sending zeros, so that no rank waits forever."""
        error = None
        try:
            send = table.index_select(0, self.send_idx)
        except Exception as e:
            error = e
            send = table.new_zeros((sum(self.send_counts), table.shape[1]))
        work = dist.all_to_all_single(table[n:], send, self.recv_counts, self.send_counts, group=self.group,
                                      async_op=async_op)
        return send, work, error


def _table(h: Tensor, n: int, num_halo: int) -> Tensor:
    """A [n + num_halo, C] table whose first ``n`` rows are ``h`` (the halo rows are filled by the exchange)."""
    t = h.new_empty((n + num_halo, h.shape[1]))
    t[:n] = h[:n]
    return t


def full_inference(model: Union[torch.nn.Module, PathLike], parts: PathLike, *, group=None,
                   overlap: bool = True, return_stats: bool = False):
    """The model's output rows of this rank's part; call it on every rank of the process group.

    Args:
        model: a gnnaccel model (or PyG GraphSAGE / GCN), or the path of a file saved with ``gnnaccel.save``
            (loaded on every rank; a load failure is reported on every rank).
        parts: the partition directory written by :func:`gnnaccel.distributed.partition` with as many parts as
            the group has ranks; rank ``r`` reads ``part_<r>`` only.
        group: the process group (default: the world). gloo: CPU tensors; nccl: the current CUDA device.
        overlap: compute the interior rows while the halo exchange is in flight (False: exchange, then
            compute every row; the two times are then measured apart).
        return_stats: also return a :class:`RunStats` (per layer: bytes exchanged, rows, times).
    Returns:
        ``(out, orig_ids)``: ``out`` [rows owned by this rank, out_channels], row ``i`` being the output of
        node ``orig_ids[i]`` of the caller's graph; ``(out, orig_ids, stats)`` with ``return_stats``.
    Raises:
        DistributedInferenceError on every rank when any rank fails (bad part files, world size, model).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("distributed full_inference needs an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group, or launch with torchrun)")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    device = _device_for(group)
    error, part, net = None, None, None
    try:
        manifest = read_manifest(parts)
        if manifest["num_parts"] != world:
            raise ValueError(f"the partition in {parts} has {manifest['num_parts']} parts but the process group "
                             f"has {world} ranks: partition again with num_parts={world} or launch "
                             f"{manifest['num_parts']} ranks")
        part = load_part(parts, rank, manifest)
        net = _load_model(model, device)
        _check_model(net, part)
    except Exception as e:  # reported on every rank by _agree
        error = e
    _agree(error, group, device, "while loading the partition and the model")
    stats = RunStats(rank, world)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            out = _run(net, part, group, device, overlap, stats)
    finally:
        net.train(was_training)
    return (out, part.orig_ids, stats) if return_stats else (out, part.orig_ids)


def _run(model, part: Part, group, device, overlap: bool, stats: RunStats) -> Tensor:
    """The layers over this rank's rows. Each layer's input lives in a table over the local ids (owned rows,
    then halo rows; the halo rows are received in place), the layer runs on the block of the owned rows
    through ``model.layer_block`` with ``rows=`` (interior rows during the exchange, then boundary rows)."""
    local = _LocalGraph(part, device)
    exchange = _Exchange(part, group, device)
    n, H = part.num_owned, part.num_halo
    h = _table(part.x.to(device), n, H)  # layer input: [n + H, C]; rows >= n are filled per layer
    for i, conv in enumerate(model.convs):
        st = LayerStats(i)
        stats.layers.append(st)
        error, out = None, None
        if not conv.reads_neighbours:
            try:
                t = time.perf_counter()
                out = _table(model.layer_block(i, h, Block(n)), n, H) if i + 1 < len(model.convs) else \
                    model.layer_block(i, h, Block(n))
                st.compute_s = time.perf_counter() - t
            except Exception as e:
                error = e
            _agree(error, group, device, f"in layer {i}")
            h = out
            continue
        x_neigh = None
        try:
            block, inner, outer = local.blocks(conv, h.dtype)
            channels = conv.neighbour_channels()
            if channels is not None:  # exchange only the channels the neighbour aggregation reads
                x_neigh = h.new_empty((n + H, channels.numel()))
                x_neigh[:n] = h[:n].index_select(1, channels.to(device))
        except Exception as e:
            error = e
        _agree(error, group, device, f"preparing layer {i}")
        table = h if x_neigh is None else x_neigh
        t = time.perf_counter()
        send, work, error = exchange.start(table, n, async_op=overlap)
        st.exchange_s = time.perf_counter() - t
        st.channels = table.shape[1]
        st.rows_sent, st.rows_received = send.shape[0], H
        st.bytes_sent = send.numel() * send.element_size()
        st.bytes_received = H * table.shape[1] * table.element_size()
        st.interior_rows, st.boundary_rows = inner.numel(), outer.numel()
        last = i + 1 == len(model.convs)
        out = h.new_empty((n if last else n + H, conv.out_channels))
        try:
            if overlap and error is None and inner.numel():
                t = time.perf_counter()
                out[inner] = model.layer_block(i, h, block, inner, x_neigh=x_neigh)  # reads owned rows only
                st.compute_s = time.perf_counter() - t
        except Exception as e:
            error = e
        if work is not None:
            t = time.perf_counter()
            work.wait()  # always, so that the collective completes on every rank
            st.wait_s = time.perf_counter() - t
            st.exchange_s += st.wait_s
        try:
            if error is None and n:
                t = time.perf_counter()
                if not overlap:
                    out[:n] = model.layer_block(i, h, block, x_neigh=x_neigh)
                elif outer.numel():
                    out[outer] = model.layer_block(i, h, block, outer, x_neigh=x_neigh)
                st.compute_s += time.perf_counter() - t
        except Exception as e:
            error = e
        _agree(error, group, device, f"in layer {i}")
        h = out
    return h
