"""Partition a graph for distributed full inference: assign nodes to parts (METIS, random, contiguous
ranges), renumber them so that each part owns a contiguous id range, and write one directory per part
(format: :mod:`gnnaccel.distributed.store`)."""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from torch import Tensor

from ..nn.adjacency import Adjacency, as_graph
from .store import (FEATURES_FILE, GRAPH_FILE, MANIFEST, PART_FORMAT, PARTITION_FORMAT, VERSION, PathLike,
                    new_partition_id, part_dir, save_tensors, write_json)

METHODS = ("metis", "random", "range")


@dataclass
class PartitionInfo:
    """What :func:`partition` wrote: sizes, the edge cut and the halo sizes."""

    path: str
    partition_id: str
    method: str
    num_parts: int
    num_nodes: int
    num_edges: int
    ranges: List[List[int]]
    edge_cut: int  # directed edges whose source and target are owned by different parts
    halo_sizes: List[int]  # halo nodes per part
    halo_counts: List[List[int]] = field(repr=False)  # [p][q]: halo nodes of part p owned by part q
    edges_per_part: List[int] = field(default_factory=list)

    @property
    def edge_cut_fraction(self) -> float:
        return self.edge_cut / self.num_edges if self.num_edges else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _import_pymetis():
    try:
        import pymetis
    except ImportError as e:  # an optional extra
        raise ImportError("partition(method='metis') needs pymetis: pip install pymetis (or "
                          "pip install gnnaccel[distributed]); method='random' or 'range' work without it") from e
    return pymetis


def range_assignment(num_nodes: int, num_parts: int) -> Tensor:
    """Part of each node for contiguous, equal-sized (within one) ranges in the given order."""
    bounds = torch.div(torch.arange(1, num_parts + 1) * num_nodes, num_parts, rounding_mode="floor")
    return torch.searchsorted(bounds, torch.arange(num_nodes), right=True)


def random_assignment(num_nodes: int, num_parts: int, seed: int = 0) -> Tensor:
    """A uniformly random balanced assignment (part sizes differ by at most one), seeded."""
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    a = torch.empty(num_nodes, dtype=torch.long)
    a[perm] = range_assignment(num_nodes, num_parts)
    return a


def metis_assignment(graph, num_parts: int, seed: int = 0) -> Tensor:
    """METIS k-way partition of the symmetrised graph (self loops and duplicate edges dropped) minimising the
    edge cut, balanced on ``1 + in-degree`` per node (node count plus in-edges: what a part stores and
    aggregates)."""
    n = graph.num_nodes
    if num_parts == 1 or n == 0 or graph.num_edges == 0:
        return range_assignment(n, num_parts)
    pymetis = _import_pymetis()
    dst = graph.row_of_edge().long()
    src = graph.col.long()
    keep = src != dst
    a, b = torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])
    key = torch.unique(a * n + b)  # sorted by a, then b: a CSR of the undirected graph
    a, b = torch.div(key, n, rounding_mode="floor"), key % n
    del key
    xadj = torch.zeros(n + 1, dtype=torch.long)
    xadj[1:] = torch.cumsum(torch.bincount(a, minlength=n), 0)
    in_deg = (graph.rowptr[1:] - graph.rowptr[:-1]).long()
    # One weight per node: 1 + its in-degree, so that parts carry similar node + in-edge totals (the rows they
    # store and the edges they aggregate). pymetis (2025.2) passes METIS a single balance constraint.
    vweights = 1 + in_deg
    opts = pymetis.Options(seed=seed)
    adjacency = pymetis.CSRAdjacency(xadj.numpy(), b.numpy())
    _, parts = pymetis.part_graph(num_parts, adjacency, vweights=vweights.numpy(), options=opts)
    return torch.as_tensor(parts, dtype=torch.long)


def _assignment(g, num_parts: int, method: str, assignment, seed: int) -> Tensor:
    n = g.num_nodes
    if assignment is not None:
        a = torch.as_tensor(assignment)
        if a.dtype.is_floating_point or a.dtype == torch.bool or a.shape != (n,):
            raise ValueError(f"assignment must be an integer tensor with one part per node ({n}), got "
                             f"{a.dtype} of shape {list(a.shape)}")
        a = a.long()
        if n and (int(a.min()) < 0 or int(a.max()) >= num_parts):
            raise ValueError(f"assignment holds parts outside [0, {num_parts})")
        return a
    if method == "range":
        return range_assignment(n, num_parts)
    if method == "random":
        return random_assignment(n, num_parts, seed)
    return metis_assignment(g, num_parts, seed)


def partition(graph: Adjacency, x: Tensor, num_parts: int, out_dir: PathLike, method: str = "metis", *,
              assignment: Optional[Tensor] = None, seed: int = 0, overwrite: bool = False) -> PartitionInfo:
    """Split ``(graph, x)`` into ``num_parts`` parts written under ``out_dir`` (one ``part_<p>`` directory
    each, read by rank ``p`` of :func:`gnnaccel.distributed.full_inference`).

    Nodes are renumbered so that part ``p`` owns the contiguous ids ``ranges[p]`` (within a part, nodes keep
    their original order). Each part stores its rows' full in-edge lists in local numbering (owned rows first,
    then its halo: the other parts' nodes its rows read), the halo's global ids and owners, which of its rows
    every other part reads, its rows of ``x``, and the in-degree data that degree-normalised layers need for
    the halo (format: :mod:`gnnaccel.distributed.store`).

    Args:
        graph: a :class:`gnnaccel.Graph`, edge_index [2, E] or sparse adjacency (row = target).
        x: node features [N, C] (floating point).
        num_parts: number of parts (= ranks of the distributed run).
        out_dir: directory to create (must be empty or absent unless ``overwrite``).
        method: ``"metis"`` (pymetis, balanced on nodes + in-edges), ``"random"`` (balanced, seeded) or
            ``"range"`` (contiguous ranges of the original ids).
        assignment: explicit part of each node [N] (overrides ``method``; parts may be empty).
        seed: seed of the random and METIS assignments.
        overwrite: replace an existing non-empty ``out_dir``.
    Returns:
        a :class:`PartitionInfo` (edge cut, halo sizes, ranges), also recorded in ``out_dir/manifest.json``.
    """
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts must be a positive int, got {num_parts!r}")
    if assignment is None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor [num_nodes, channels]")
    g = as_graph(graph, x.shape[0])
    if g.num_nodes != x.shape[0]:
        raise ValueError(f"the graph has {g.num_nodes} nodes but x has {x.shape[0]} rows")
    g = g.to("cpu", torch.int64)
    x = x.detach().cpu()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    n, P, E = g.num_nodes, num_parts, g.num_edges
    a = _assignment(g, P, method, assignment, seed)
    order = torch.argsort(a, stable=True)  # new id -> original id
    inv = torch.empty(n, dtype=torch.long)
    inv[order] = torch.arange(n)
    bounds = torch.zeros(P + 1, dtype=torch.long)
    bounds[1:] = torch.cumsum(torch.bincount(a, minlength=P), 0)

    # The renumbered CSR: new row k = original row order[k], columns mapped through inv.
    deg = (g.rowptr[1:] - g.rowptr[:-1])[order]
    rowptr = torch.zeros(n + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(deg, 0)
    edge_ids = torch.repeat_interleave(g.rowptr[:-1][order] - rowptr[:-1], deg, output_size=E) + torch.arange(E)
    col = inv[g.col[edge_ids]]
    weight = g.edge_weight[edge_ids] if g.edge_weight is not None else None
    del edge_ids

    # Global in-degree data of every node (for the halo): non-loop weighted in-degree and self-loop weight.
    dst = torch.repeat_interleave(torch.arange(n), deg, output_size=E)
    w64 = weight.double() if weight is not None else torch.ones(E, dtype=torch.float64)
    loop = col == dst
    in_weight = torch.zeros(n, dtype=torch.float64).index_add_(0, dst[~loop], w64[~loop])
    loop_weight = torch.full((n,), float("nan"), dtype=torch.float64).index_put_((dst[loop],), w64[loop])
    del dst, w64, loop

    halos, locals_ = [], []
    for p in range(P):
        s, e = int(bounds[p]), int(bounds[p + 1])
        c = col[rowptr[s]:rowptr[e]]
        outside = (c < s) | (c >= e)
        halo = torch.unique(c[outside])
        local = torch.where(outside, (e - s) + torch.searchsorted(halo, c), c - s)
        halos.append(halo)
        locals_.append((local, int(outside.sum())))
    owners = [torch.searchsorted(bounds[1:], h, right=True) for h in halos]
    counts = [torch.bincount(o, minlength=P).tolist() for o in owners]

    pid = new_partition_id()
    edges_per_part = []
    for p in range(P):
        s, e = int(bounds[p]), int(bounds[p + 1])
        # Rows of p that part q reads, in q's halo order (increasing), grouped by q.
        sends = [halos[q][owners[q] == p] - s for q in range(P)]
        send_idx = torch.cat(sends) if sends else torch.empty(0, dtype=torch.long)
        local, _ = locals_[p]
        e0, e1 = int(rowptr[s]), int(rowptr[e])
        tensors = {"rowptr": rowptr[s:e + 1] - rowptr[s], "col": local, "halo": halos[p], "halo_owner": owners[p],
                   "send_idx": send_idx, "orig_ids": order[s:e],
                   "halo_in_weight": in_weight[halos[p]], "halo_loop_weight": loop_weight[halos[p]]}
        if weight is not None:
            tensors["edge_weight"] = weight[e0:e1]
        d = part_dir(out, p)
        d.mkdir()
        files = {GRAPH_FILE: save_tensors(d / GRAPH_FILE, tensors),
                 FEATURES_FILE: save_tensors(d / FEATURES_FILE, {"x": x[order[s:e]]})}
        edges_per_part.append(e1 - e0)
        write_json(d / "part.json", {
            "format": PART_FORMAT, "version": VERSION, "partition_id": pid, "part": p, "num_parts": P,
            "start": s, "stop": e, "num_halo": halos[p].numel(), "num_edges": e1 - e0,
            "num_send": send_idx.numel(), "send_counts": [counts[q][p] for q in range(P)],
            "recv_counts": counts[p], "files": files})
    info = PartitionInfo(str(out), pid, "assignment" if assignment is not None else method, P, n, E,
                         [[int(bounds[p]), int(bounds[p + 1])] for p in range(P)],
                         sum(c for _, c in locals_), [h.numel() for h in halos], counts, edges_per_part)
    write_json(out / MANIFEST, {"format": PARTITION_FORMAT, "version": VERSION, **info.to_dict(),
                                "num_features": x.shape[1], "dtype": str(x.dtype),
                                "weighted": weight is not None})
    return info
