"""The on-disk format of a partitioned graph and of the per-rank outputs of distributed inference.

A partition directory holds ``manifest.json`` (the whole partition: node ranges, the halo count matrix, edge
cut) and one directory ``part_<p>`` per part with ``part.json`` (its sizes, and the byte size and SHA-256 of
each of its files), ``graph.pt`` and ``features.pt``. The ``.pt`` files are ``torch.save`` of a flat dict of
plain tensors, read back with ``weights_only=True`` after their size and checksum match ``part.json``: loading
never runs code from a file, and a truncated or altered file is named in a :class:`PartitionFileError`.

``graph.pt`` of part ``p`` (owning the renumbered ids ``start <= g < stop``, ``n = stop - start`` rows, ``H``
halo nodes, local ids ``0..n-1`` = owned rows, ``n..n+H-1`` = halo nodes):

* ``rowptr`` [n+1], ``col`` [E] (int64, local ids), ``edge_weight`` [E] (only for a weighted graph): the full
  in-edge list of every owned row (row = target, col = source, as :class:`gnnaccel.Graph`).
* ``halo`` [H]: the renumbered global ids of the halo nodes, increasing (so grouped by owner);
  ``halo_owner`` [H]: the part owning each.
* ``send_idx`` [S]: the owned rows (local ids) other parts read, grouped by destination part in part order,
  each group in the destination's halo order; ``part.json`` has ``send_counts`` / ``recv_counts`` [P], so a
  halo exchange needs no size exchange.
* ``orig_ids`` [n]: the original (caller's) node id of each owned row.
* ``halo_in_weight`` [H] (float64): each halo node's weighted in-degree in the whole graph without self loops
  (edge count when unweighted); ``halo_loop_weight`` [H] (float64): the weight of its self loop, NaN if none.
  With these, a degree-normalised layer's message graph over the part equals the global one on owned rows.

``features.pt``: ``x`` [n, C], the owned rows of the node features.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor

PathLike = Union[str, os.PathLike]

PARTITION_FORMAT = "gnnaccel-partition"
PART_FORMAT = "gnnaccel-part"
OUTPUT_FORMAT = "gnnaccel-dist-output"
VERSION = 1
MANIFEST = "manifest.json"
GRAPH_FILE = "graph.pt"
FEATURES_FILE = "features.pt"
_INDEX_KEYS = ("rowptr", "col", "halo", "halo_owner", "send_idx", "orig_ids")
_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


class PartitionFileError(ValueError):
    """A partition or output file that is missing, corrupt or inconsistent with its manifest."""


def new_partition_id() -> str:
    return uuid.uuid4().hex


def part_dir(root: PathLike, p: int) -> Path:
    return Path(root) / f"part_{p}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(path: Path, tensors: Dict[str, Tensor]) -> dict:
    """``torch.save`` a flat dict of contiguous CPU tensors; returns its ``{"bytes", "sha256"}`` record."""
    torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def load_tensors(path: Path, record: dict, keys, what: str) -> Dict[str, Tensor]:
    """Load a file written by :func:`save_tensors` after checking its size and SHA-256 against ``record``;
    ``keys`` = (required, optional) key sets."""
    if not path.is_file():
        raise PartitionFileError(f"{what}: {path} is missing")
    if not isinstance(record, dict) or not isinstance(record.get("bytes"), int) or not isinstance(
            record.get("sha256"), str):
        raise PartitionFileError(f"{what}: the manifest has no size/checksum record for {path.name}")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise PartitionFileError(f"{what}: {path} has {size} bytes, its manifest says {record['bytes']} "
                                 "(truncated or replaced)")
    if _sha256(path) != record["sha256"]:
        raise PartitionFileError(f"{what}: {path} fails its SHA-256 check (corrupt)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an archive that matches its checksum but is no tensor dict
        raise PartitionFileError(f"{what}: {path} is not a tensor file ({e})") from e
    required, optional = keys
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise PartitionFileError(f"{what}: {path} must hold a dict of tensors")
    missing, extra = set(required) - set(data), set(data) - set(required) - set(optional)
    if missing or extra:
        raise PartitionFileError(f"{what}: {path} lacks {sorted(missing)} / has unexpected {sorted(extra)}")
    return data


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_json(path: Path, fmt: str, what: str) -> dict:
    if not path.is_file():
        raise PartitionFileError(f"{what}: {path} is missing")
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise PartitionFileError(f"{what}: {path} is not valid JSON ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise PartitionFileError(f"{what}: {path} is not a {fmt} file")
    if obj.get("version") != VERSION:
        raise PartitionFileError(f"{what}: {path} has format version {obj.get('version')!r}, this gnnaccel "
                                 f"reads version {VERSION}")
    return obj


def _ints(obj: dict, key: str, what: str, length: Optional[int] = None) -> List[int]:
    v = obj.get(key)
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v) \
            or (length is not None and len(v) != length):
        raise PartitionFileError(f"{what}: '{key}' must be a list of {length or ''} non-negative ints")
    return v


def read_manifest(root: PathLike) -> dict:
    """The checked ``manifest.json`` of a partition directory.

    Returns:
        the manifest dict (``num_parts``, ``num_nodes``, ``ranges`` [[start, stop]], ``halo_counts`` [P][P],
        ``edge_cut``, ``partition_id``, ``num_features``, ``dtype``, ...).
    """
    what = "partition manifest"
    m = read_json(Path(root) / MANIFEST, PARTITION_FORMAT, what)
    p = m.get("num_parts")
    n = m.get("num_nodes")
    if not isinstance(p, int) or p < 1 or not isinstance(n, int) or n < 0:
        raise PartitionFileError(f"{what}: num_parts / num_nodes are missing or invalid")
    if not isinstance(m.get("partition_id"), str) or m.get("dtype") not in _DTYPES:
        raise PartitionFileError(f"{what}: partition_id / dtype are missing or invalid")
    if not isinstance(m.get("num_features"), int) or m["num_features"] < 0:
        raise PartitionFileError(f"{what}: num_features is missing or invalid")
    ranges = m.get("ranges")
    if not isinstance(ranges, list) or len(ranges) != p:
        raise PartitionFileError(f"{what}: 'ranges' must hold one [start, stop] per part")
    stop = 0
    for r in ranges:
        if not (isinstance(r, list) and len(r) == 2 and r[0] == stop and isinstance(r[1], int) and r[1] >= r[0]):
            raise PartitionFileError(f"{what}: the part ranges must be contiguous [start, stop) pairs from 0")
        stop = r[1]
    if stop != n:
        raise PartitionFileError(f"{what}: the part ranges cover {stop} nodes, num_nodes is {n}")
    counts = m.get("halo_counts")
    if not isinstance(counts, list) or len(counts) != p:
        raise PartitionFileError(f"{what}: 'halo_counts' must be a {p}x{p} matrix")
    for row in counts:
        if not isinstance(row, list):
            raise PartitionFileError(f"{what}: 'halo_counts' must be a {p}x{p} matrix")
        _ints({"r": row}, "r", what, p)
    return m


class Part:
    """One part as loaded by a rank (see the module docstring for the fields)."""

    def __init__(self, meta: dict, graph: Dict[str, Tensor], x: Tensor):
        self.meta = meta
        self.index = meta["part"]
        self.start, self.stop = meta["start"], meta["stop"]
        self.num_owned = self.stop - self.start
        self.num_halo = meta["num_halo"]
        self.send_counts: List[int] = meta["send_counts"]
        self.recv_counts: List[int] = meta["recv_counts"]
        self.rowptr, self.col = graph["rowptr"], graph["col"]
        self.edge_weight = graph.get("edge_weight")
        self.halo, self.halo_owner = graph["halo"], graph["halo_owner"]
        self.send_idx, self.orig_ids = graph["send_idx"], graph["orig_ids"]
        self.halo_in_weight, self.halo_loop_weight = graph["halo_in_weight"], graph["halo_loop_weight"]
        self.x = x

    @property
    def num_local(self) -> int:
        return self.num_owned + self.num_halo


def load_part(root: PathLike, p: int, manifest: Optional[dict] = None) -> Part:
    """Read and check part ``p`` of the partition in ``root`` (only that part's files are read).

    Args:
        root: the partition directory. p: the part index. manifest: :func:`read_manifest`'s result (read if
        None).
    Returns:
        a :class:`Part`. Raises :class:`PartitionFileError` naming the file and the problem.
    """
    m = read_manifest(root) if manifest is None else manifest
    P = m["num_parts"]
    if not 0 <= p < P:
        raise PartitionFileError(f"part {p} does not exist: the partition has {P} parts")
    d = part_dir(root, p)
    what = f"part {p}"
    meta = read_json(d / "part.json", PART_FORMAT, what)
    if meta.get("partition_id") != m["partition_id"]:
        raise PartitionFileError(f"{what}: {d / 'part.json'} belongs to another partition than {root}/{MANIFEST}")
    start, stop = m["ranges"][p]
    if meta.get("part") != p or meta.get("start") != start or meta.get("stop") != stop:
        raise PartitionFileError(f"{what}: part.json disagrees with the manifest on the part's node range")
    for key in ("num_halo", "num_edges", "num_send"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise PartitionFileError(f"{what}: part.json has no valid '{key}'")
    send = _ints(meta, "send_counts", what, P)
    recv = _ints(meta, "recv_counts", what, P)
    if recv != m["halo_counts"][p] or send != [m["halo_counts"][q][p] for q in range(P)]:
        raise PartitionFileError(f"{what}: its send/receive counts disagree with the manifest's halo matrix")
    if sum(send) != meta["num_send"] or sum(recv) != meta["num_halo"]:
        raise PartitionFileError(f"{what}: send/receive counts do not add up to num_send / num_halo")
    files = meta.get("files") or {}
    weighted = bool(m.get("weighted"))
    g = load_tensors(d / GRAPH_FILE, files.get(GRAPH_FILE), (
        _INDEX_KEYS + ("halo_in_weight", "halo_loop_weight") + (("edge_weight",) if weighted else ()), ()), what)
    feats = load_tensors(d / FEATURES_FILE, files.get(FEATURES_FILE), (("x",), ()), what)
    n, H, E, S = stop - start, meta["num_halo"], meta["num_edges"], meta["num_send"]
    shapes = {"rowptr": (n + 1,), "col": (E,), "halo": (H,), "halo_owner": (H,), "send_idx": (S,),
              "orig_ids": (n,), "halo_in_weight": (H,), "halo_loop_weight": (H,), "edge_weight": (E,)}
    for key, t in g.items():
        if tuple(t.shape) != shapes[key]:
            raise PartitionFileError(f"{what}: {key} has shape {list(t.shape)}, expected {list(shapes[key])}")
        if key in _INDEX_KEYS and t.dtype != torch.int64:
            raise PartitionFileError(f"{what}: {key} must be int64, got {t.dtype}")
        if key not in _INDEX_KEYS and not t.is_floating_point():
            raise PartitionFileError(f"{what}: {key} must be floating point, got {t.dtype}")
    x = feats["x"]
    if x.dim() != 2 or x.shape != (n, m["num_features"]) or str(x.dtype) != m["dtype"]:
        raise PartitionFileError(f"{what}: features have shape {list(x.shape)} {x.dtype}, the manifest says "
                                 f"[{n}, {m['num_features']}] {m['dtype']}")
    _check_structure(g, n, H, start, stop, m, P, send, recv, what)
    return Part(meta, g, x)


def _check_structure(g, n, H, start, stop, m, P, send, recv, what) -> None:
    """Index ranges and orderings: what a checksum-valid but wrongly written part could still get wrong."""
    rowptr, col, halo = g["rowptr"], g["col"], g["halo"]
    if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel() or bool((rowptr[1:] < rowptr[:-1]).any()):
        raise PartitionFileError(f"{what}: rowptr is not a valid CSR row pointer")
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= n + H):
        raise PartitionFileError(f"{what}: col holds ids outside the {n} owned + {H} halo local ids")
    if H:
        if bool((halo[1:] <= halo[:-1]).any()) or int(halo[0]) < 0 or int(halo[-1]) >= m["num_nodes"]:
            raise PartitionFileError(f"{what}: halo ids must be increasing node ids")
        if bool(((halo >= start) & (halo < stop)).any()):
            raise PartitionFileError(f"{what}: a halo id is owned by the part itself")
        bounds = torch.tensor([r[1] for r in m["ranges"]], dtype=torch.long)
        if not torch.equal(torch.searchsorted(bounds, halo, right=True), g["halo_owner"]):
            raise PartitionFileError(f"{what}: halo_owner disagrees with the part ranges")
    if g["halo_owner"].numel() and torch.bincount(g["halo_owner"], minlength=P).tolist() != recv:
        raise PartitionFileError(f"{what}: recv_counts disagree with halo_owner")
    s = g["send_idx"]
    if s.numel() and (int(s.min()) < 0 or int(s.max()) >= n):
        raise PartitionFileError(f"{what}: send_idx holds ids outside the {n} owned rows")
    if g["orig_ids"].numel() and (int(g["orig_ids"].min()) < 0 or int(g["orig_ids"].max()) >= m["num_nodes"]):
        raise PartitionFileError(f"{what}: orig_ids hold ids outside [0, {m['num_nodes']})")


# ------------------------------------------------------------------------------------ per-rank outputs
def output_paths(out_dir: PathLike, rank: int):
    d = Path(out_dir)
    return d / f"rank_{rank}.pt", d / f"rank_{rank}.json"


def write_output(out_dir: PathLike, rank: int, manifest: dict, out: Tensor, orig_ids: Tensor) -> None:
    """Write one rank's output rows (and their original node ids) with a checksummed record."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    pt, js = output_paths(d, rank)
    rec = save_tensors(pt, {"out": out, "orig_ids": orig_ids})
    write_json(js, {"format": OUTPUT_FORMAT, "version": VERSION, "partition_id": manifest["partition_id"],
                    "rank": rank, "rows": int(out.shape[0]), "channels": int(out.shape[1]),
                    "dtype": str(out.dtype), "file": rec})


def gather(parts: PathLike, out_dir: PathLike, out_file: Optional[PathLike] = None) -> Tensor:
    """Assemble the per-rank outputs of ``python -m gnnaccel.distributed infer`` in the original node order.

    Args:
        parts: the partition directory. out_dir: the directory the ranks wrote. out_file: optional path to
        ``torch.save`` the result to.
    Returns:
        [num_nodes, out_channels]: row ``i`` = the output of the caller's node ``i``.
    """
    m = read_manifest(parts)
    N, P = m["num_nodes"], m["num_parts"]
    result, seen = None, torch.zeros(N, dtype=torch.bool)
    for r in range(P):
        pt, js = output_paths(out_dir, r)
        what = f"output of rank {r}"
        rec = read_json(js, OUTPUT_FORMAT, what)
        if rec.get("partition_id") != m["partition_id"]:
            raise PartitionFileError(f"{what}: {js} was computed on another partition than {parts}")
        start, stop = m["ranges"][r]
        data = load_tensors(pt, rec.get("file"), (("out", "orig_ids"), ()), what)
        out, ids = data["out"], data["orig_ids"]
        if out.dim() != 2 or out.shape[0] != stop - start or ids.shape != (stop - start,) or ids.dtype != torch.int64:
            raise PartitionFileError(f"{what}: {pt} holds {list(out.shape)} rows, part {r} owns {stop - start}")
        if result is None:
            result = torch.empty(N, out.shape[1], dtype=out.dtype)
        elif out.shape[1] != result.shape[1] or out.dtype != result.dtype:
            raise PartitionFileError(f"{what}: {list(out.shape)} {out.dtype} does not match rank 0's width/dtype")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= N or bool(seen[ids].any())):
            raise PartitionFileError(f"{what}: its node ids are out of range or already covered by another rank")
        seen[ids] = True
        result[ids] = out
    if not bool(seen.all()):
        raise PartitionFileError(f"the outputs cover {int(seen.sum())} of {N} nodes")
    if out_file is not None:
        torch.save(result, out_file)
    return result

