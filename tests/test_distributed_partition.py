"""gnnaccel.distributed.partition and the part files: ownership, contiguous ranges, halo lists, send lists and
in-edge lists against references built from the edge list; edge cut; METIS quality; file checks."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import gnnaccel
from gnnaccel.distributed import PartitionFileError, load_part, partition, read_manifest
from gnnaccel.distributed.store import GRAPH_FILE

from conftest import random_edge_index

N = 80


def _graph(weighted: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ei = random_edge_index(N - 8, 400, gen, power_law=True)  # nodes N-8.. isolated; loops, duplicates
    ei = torch.cat([ei, torch.tensor([[2, 2, 2], [2, 2, 9]])], 1)
    w = torch.rand(ei.shape[1], generator=gen) + 0.5 if weighted else None
    return ei, w, torch.randn(N, 6, generator=gen)


def _reference_check(ei, w, info, root):
    """Compare every part with what the edge list says."""
    m = read_manifest(root)
    P = m["num_parts"]
    parts = [load_part(root, p, m) for p in range(P)]
    # every node owned exactly once; contiguous ranges in part order
    orig = torch.cat([p.orig_ids for p in parts])
    assert torch.equal(torch.sort(orig).values, torch.arange(N))
    assert [[p.start, p.stop] for p in parts] == info.ranges
    assert info.ranges[0][0] == 0 and info.ranges[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(info.ranges, info.ranges[1:]))
    new_of = torch.empty(N, dtype=torch.long)
    new_of[orig] = torch.arange(N)
    owner = torch.empty(N, dtype=torch.long)
    for p in parts:
        owner[p.orig_ids] = p.index
    src, dst = ei
    cut = 0
    for p in parts:
        own = set(p.orig_ids.tolist())
        # halo reference: sources of edges into owned nodes that the part does not own
        halo_ref = sorted({int(new_of[s]) for s, d in zip(src.tolist(), dst.tolist()) if d in own and s not in own})
        assert p.halo.tolist() == halo_ref
        assert p.halo_owner.tolist() == [int(owner[orig[h]]) for h in halo_ref]
        local_to_orig = torch.cat([p.orig_ids, orig[p.halo]])
        for i, node in enumerate(p.orig_ids.tolist()):
            sel = (dst == node).nonzero().flatten()
            want = sorted(zip(src[sel].tolist(), [1.0] * sel.numel() if w is None else w[sel].tolist()))
            e0, e1 = int(p.rowptr[i]), int(p.rowptr[i + 1])
            got_src = local_to_orig[p.col[e0:e1]].tolist()
            got_w = [1.0] * (e1 - e0) if p.edge_weight is None else p.edge_weight[e0:e1].tolist()
            assert sorted(zip(got_src, got_w)) == want
            cut += sum(1 for s in src[sel].tolist() if s not in own)
        # global in-degree data of the halo
        for k, h in enumerate(p.halo.tolist()):
            node = int(orig[h])
            sel = (dst == node) & (src != node)
            ww = torch.ones(ei.shape[1]) if w is None else w
            assert p.halo_in_weight[k].item() == pytest.approx(float(ww[sel].double().sum()), rel=1e-12)
            loops = (dst == node) & (src == node)
            assert bool(torch.isnan(p.halo_loop_weight[k])) == (not bool(loops.any()))
    assert info.edge_cut == cut
    assert info.halo_sizes == [p.num_halo for p in parts]
    # send lists: what p sends q is q's halo entries owned by p, in q's order
    for p in parts:
        off = 0
        for q in parts:
            want = [h - p.start for h, o in zip(q.halo.tolist(), q.halo_owner.tolist()) if o == p.index]
            assert p.send_counts[q.index] == len(want) == q.recv_counts[p.index]
            assert p.send_idx[off:off + len(want)].tolist() == want
            off += len(want)
    # features: the owned rows
    return parts


@pytest.mark.parametrize("method", ["range", "random", "metis"])
@pytest.mark.parametrize("num_parts", [1, 2, 3, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_partition_matches_edge_list(tmp_path, method, num_parts, weighted):
    ei, w, x = _graph(weighted, seed=num_parts)
    g = gnnaccel.Graph.from_edge_index(ei, N, w)
    info = partition(g, x, num_parts, tmp_path / "p", method, seed=1)
    parts = _reference_check(ei, w, info, tmp_path / "p")
    for p in parts:
        assert torch.equal(p.x, x[p.orig_ids])
    sizes = [b - a for a, b in info.ranges]
    if method in ("range", "random"):
        assert max(sizes) - min(sizes) <= 1
    if method == "range":
        assert torch.equal(torch.cat([p.orig_ids for p in parts]), torch.arange(N))


def test_explicit_assignment_with_an_empty_part(tmp_path):
    ei, w, x = _graph(False)
    a = torch.randint(1, 3, (N,), generator=torch.Generator().manual_seed(3))  # part 0 and 3 empty
    info = partition(ei, x, 4, tmp_path / "p", assignment=a)
    assert info.ranges[0] == [0, 0] and info.ranges[3][0] == info.ranges[3][1] == N
    _reference_check(ei, w, info, tmp_path / "p")


def test_metis_cuts_fewer_edges_than_random_on_clustered_graph(tmp_path):
    gen = torch.Generator().manual_seed(0)
    blocks = [random_edge_index(100, 800, gen) + 100 * b for b in range(4)]
    noise = random_edge_index(400, 40, gen)
    ei = torch.cat(blocks + [noise], 1)
    ei = torch.cat([ei, ei.flip(0)], 1)
    x = torch.randn(400, 4)
    metis = partition(ei, x, 4, tmp_path / "m", "metis")
    rnd = partition(ei, x, 4, tmp_path / "r", "random")
    assert metis.edge_cut < 0.2 * rnd.edge_cut
    sizes = [b - a for a, b in metis.ranges]
    assert max(sizes) <= 1.1 * 100


def test_metis_without_pymetis_is_a_clear_error_and_others_still_work(tmp_path, monkeypatch):
    ei, _, x = _graph(False)
    monkeypatch.setitem(sys.modules, "pymetis", None)
    with pytest.raises(ImportError, match="pip install pymetis"):
        partition(ei, x, 2, tmp_path / "m", "metis")
    partition(ei, x, 2, tmp_path / "r", "random")
    partition(ei, x, 2, tmp_path / "g", "range")


def test_bad_arguments(tmp_path):
    ei, _, x = _graph(False)
    with pytest.raises(ValueError, match="num_parts"):
        partition(ei, x, 0, tmp_path / "a", "range")
    with pytest.raises(ValueError, match="method"):
        partition(ei, x, 2, tmp_path / "a", "spectral")
    with pytest.raises(ValueError, match="assignment"):
        partition(ei, x, 2, tmp_path / "a", assignment=torch.full((N,), 2))
    with pytest.raises(ValueError, match="node index"):  # the edges name nodes beyond x's rows
        partition(ei, x[:50], 2, tmp_path / "a", "range")
    with pytest.raises(ValueError, match="floating-point"):
        partition(ei, x.long(), 2, tmp_path / "a", "range")
    partition(ei, x, 2, tmp_path / "b", "range")
    with pytest.raises(FileExistsError, match="overwrite"):
        partition(ei, x, 2, tmp_path / "b", "range")
    partition(ei, x, 3, tmp_path / "b", "range", overwrite=True)
    assert read_manifest(tmp_path / "b")["num_parts"] == 3


def test_damaged_part_files_are_named(tmp_path):
    ei, _, x = _graph(False)
    root = tmp_path / "p"
    partition(ei, x, 2, root, "random")
    f = root / "part_1" / GRAPH_FILE
    good = f.read_bytes()
    f.write_bytes(good[:-10])
    with pytest.raises(PartitionFileError, match="bytes.*truncated"):
        load_part(root, 1)
    data = bytearray(good)
    data[len(data) // 3] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(PartitionFileError, match="SHA-256"):
        load_part(root, 1)
    f.unlink()
    with pytest.raises(PartitionFileError, match="missing"):
        load_part(root, 1)
    load_part(root, 0)  # the other part is intact
    with pytest.raises(PartitionFileError, match="has 2 parts"):
        load_part(root, 2)
    meta = json.loads((root / "part_0" / "part.json").read_text())
    meta["partition_id"] = "other"
    (root / "part_0" / "part.json").write_text(json.dumps(meta))
    with pytest.raises(PartitionFileError, match="another partition"):
        load_part(root, 0)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(PartitionFileError, match="not valid JSON"):
        read_manifest(root)


def test_checksum_valid_but_inconsistent_part_is_rejected(tmp_path):
    """A part file rewritten with a consistent checksum but out-of-range ids still fails its checks."""
    from gnnaccel.distributed.store import save_tensors

    ei, _, x = _graph(False)
    root = tmp_path / "p"
    partition(ei, x, 2, root, "random")
    d = root / "part_0"
    t = torch.load(d / GRAPH_FILE, weights_only=True)
    t["col"] = t["col"].clone()
    t["col"][0] = 10 ** 6
    meta = json.loads((d / "part.json").read_text())
    meta["files"][GRAPH_FILE] = save_tensors(d / GRAPH_FILE, t)
    (d / "part.json").write_text(json.dumps(meta))
    with pytest.raises(PartitionFileError, match="col holds ids outside"):
        load_part(root, 0)
