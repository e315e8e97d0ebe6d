"""gnnaccel.save / gnnaccel.load: integrity (checksum), validation of crafted files, map_location."""
from __future__ import annotations

import io
import zipfile

import pytest
import torch

import gnnaccel
from gnnaccel import Graph
from gnnaccel.models import GCN, GraphSAGE, SAINTGraphSAGE
from gnnaccel.serialize import ModelFileError, _digest

MODELS = {"sage": GraphSAGE, "gcn": GCN, "saint": SAINTGraphSAGE}


def _graph(n=40, e=200, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Graph.from_edge_index(torch.randint(n, (2, e), generator=gen), n), gen


def _pruned(kind="sage", scheme="batched", in_ch=6, hidden=8, out=3):
    graph, gen = _graph()
    x = torch.randn(graph.num_nodes, in_ch, generator=gen)
    torch.manual_seed(0)
    model = MODELS[kind](in_ch, hidden, out, num_layers=2, norm="batchnorm").eval()
    if scheme is not None:
        model = gnnaccel.prune(model, graph, x, keep=0.5, scheme=scheme, progress=False, min_kept=1)
    return model, graph, x


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k].cpu(), sb[k].cpu())
                                          for k in sa)


def _payload(model, tmp_path):
    path = tmp_path / "orig.pt"
    gnnaccel.save(model, path)
    return torch.load(path, weights_only=True)


def _write(payload, path, checksum=True):
    """Write a crafted payload; with a valid checksum, so that it reaches the configuration checks (the
    checksum guards against corruption, not against an author who recomputes it)."""
    payload = dict(payload)
    payload.pop("sha256", None)
    if checksum:
        payload["sha256"] = _digest(payload, budget=1 << 40)
    torch.save(payload, path)
    return path


# --------------------------------------------------------------------------------------------- integrity
@pytest.mark.filterwarnings("ignore")  # flipped pickle headers make torch warn about odd protocols
def test_every_sampled_byte_flip_is_rejected_or_harmless(tmp_path):
    model, graph, x = _pruned("sage", "batched")
    path = tmp_path / "m.pt"
    gnnaccel.save(model, path)
    data = path.read_bytes()
    # A seeded sample over the whole file plus every byte of the pickled payload (config, keys, checksum).
    with zipfile.ZipFile(path) as zf:
        pkl = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    start = pkl.header_offset + 30 + len(pkl.filename.encode()) + len(pkl.extra)
    gen = torch.Generator().manual_seed(0)
    positions = sorted(set(torch.randint(len(data), (300,), generator=gen).tolist())
                       | set(range(start, start + pkl.file_size, 3)))
    flipped = tmp_path / "flipped.pt"
    rejected = harmless = 0
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 1 + int(torch.randint(255, (1,), generator=gen))
        flipped.write_bytes(bytes(damaged))
        try:
            loaded = gnnaccel.load(flipped)
        except ModelFileError as exc:
            assert "flipped.pt" in str(exc)
            rejected += 1
            continue
        # Loaded: then nothing that matters changed (zip metadata the reader ignores).
        assert _same_state(loaded, model), f"flip at byte {pos} loaded different weights"
        assert [c.in_channels for c in loaded.convs] == [c.in_channels for c in model.convs]
        assert torch.equal(loaded(x, graph), model(x, graph))
        harmless += 1
    assert rejected > len(positions) // 2 and rejected + harmless == len(positions)


def test_checksum_detects_a_changed_weight(tmp_path):
    model, _, _ = _pruned("gcn", "full")
    payload = _payload(model, tmp_path)
    key = "convs.1.lin.weight"
    payload["state_dict"][key] = payload["state_dict"][key].clone()
    payload["state_dict"][key][0, 0] += 694.0
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)  # still carries the checksum of the original weights
    with pytest.raises(ModelFileError, match="bad.pt.*SHA-256"):
        gnnaccel.load(bad)
    del payload["sha256"]
    torch.save(payload, bad)
    with pytest.raises(ModelFileError, match="no checksum"):
        gnnaccel.load(bad)


def test_version_1_files_need_allow_unverified(tmp_path):
    model, graph, x = _pruned("saint", "batched")
    payload = _payload(model, tmp_path)
    payload["version"] = 1
    old = _write(payload, tmp_path / "old.pt", checksum=False)
    with pytest.raises(ModelFileError, match="old.pt.*allow_unverified=True"):
        gnnaccel.load(old)
    with pytest.warns(UserWarning, match="without a checksum"):
        loaded = gnnaccel.load(old, allow_unverified=True)
    assert _same_state(loaded, model) and torch.equal(loaded(x, graph), model(x, graph))
    # A version-1 header on a file that carries a checksum is a damaged header, not an old file.
    _write(payload, old)
    with pytest.raises(ModelFileError, match="cannot carry a checksum"):
        gnnaccel.load(old, allow_unverified=True)


# -------------------------------------------------------------------------------- crafted configurations
def _small_payload(tmp_path):
    return _payload(GraphSAGE(3, 4, 2, num_layers=2).eval(), tmp_path)


def test_huge_layer_count_is_rejected_before_construction(tmp_path, monkeypatch):
    payload = _small_payload(tmp_path)
    payload["init"]["num_layers"] = 300_000
    path = _write(payload, tmp_path / "layers.pt")
    assert path.stat().st_size < 4096
    built = []
    monkeypatch.setattr(GraphSAGE, "_make_convs", lambda self: built.append(1) or [])
    with pytest.raises(ModelFileError, match="num_layers.*300000.*2 layers"):
        gnnaccel.load(path)
    assert not built


def test_huge_widths_are_built_on_meta_and_rejected(tmp_path, monkeypatch):
    payload = _small_payload(tmp_path)
    payload["init"].update(in_channels=30_000, hidden_channels=20_000)  # 2.4 GB if allocated
    path = _write(payload, tmp_path / "wide.pt")
    devices = []
    real_init = torch.nn.Linear.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        devices.append(self.weight.device.type)

    monkeypatch.setattr(torch.nn.Linear, "__init__", spy)
    with pytest.raises(ModelFileError, match="wide.pt.*shape"):
        gnnaccel.load(path)
    assert devices and set(devices) == {"meta"}


@pytest.mark.parametrize("widths", [
    {"convs.0": {"forward": 3}},
    {"convs.0.lin_l": {"weight": 5}},
    {"": {"training": 1}},
    {"convs.0": {"__class__": 1}},
    {"convs.0": {"aggr": 1}},
    {"convs.9": {"in_channels": 1}},
    {"convs.0": {"in_channels": 7}},  # wider than constructed: pruning only narrows
    {"convs.0": {"in_channels": -1}},
    {"convs.0": {"in_channels": True}},
    {"convs.0": "in_channels"},
])
def test_widths_name_only_width_attributes(tmp_path, widths):
    payload = _small_payload(tmp_path)
    payload["widths"] = widths
    with pytest.raises(ModelFileError, match="widths"):
        gnnaccel.load(_write(payload, tmp_path / "w.pt"))


@pytest.mark.parametrize("change, match", [
    (lambda p: p["init"].update(num_layers=2.0), "num_layers"),
    (lambda p: p["init"].update(num_layers=True), "num_layers"),
    (lambda p: p["init"].update(in_channels=0), "in_channels"),
    (lambda p: p["init"].update(hidden_channels=2 ** 40), "hidden_channels"),
    (lambda p: p["init"].update(act="os.system"), "act"),
    (lambda p: p["init"].update(dropout=float("nan")), "dropout"),
    (lambda p: p["init"].update(norm="layer"), "norm"),
    (lambda p: p["init"].update(conv_class="GCNConv"), "unknown arguments"),
    (lambda p: p["init"].update(aggr="lstm"), "aggr"),
    (lambda p: p["init"].update(bias=[1, 2]), "bias"),
    (lambda p: p.update({"class": "Linear"}), "unknown model class"),
    (lambda p: p.update({"class": ["GraphSAGE"]}), "unknown model class"),
    (lambda p: p.update(training="yes"), "training"),
    (lambda p: p.update(extra=1), "unknown entries"),
    (lambda p: p.update(state_dict=[1]), "state_dict"),
    (lambda p: p["state_dict"].update({"convs.0.evil": torch.zeros(1)}), "evil"),
    (lambda p: p["state_dict"].update({"convs.0.lin_l.weight": torch.zeros(4, 3, dtype=torch.int64)}),
     "floating"),
    (lambda p: p["state_dict"].update({"convs.1.lin_l.weight": torch.zeros(2, 3)}), "shape"),
    (lambda p: p["state_dict"].pop("convs.1.lin_l.bias"), "lacks"),
    (lambda p: p["state_dict"].update({"convs.0.input_index_neigh": torch.tensor([0, 5])}), "input index|does not fit"),
    (lambda p: p["state_dict"].update({"convs.0.input_index_neigh": torch.tensor([0.0])}), "int64"),
])
def test_crafted_configurations_are_rejected(tmp_path, change, match):
    payload = _small_payload(tmp_path)
    change(payload)
    with pytest.raises(ModelFileError, match=match):
        gnnaccel.load(_write(payload, tmp_path / "crafted.pt"))


def test_input_index_out_of_range_or_duplicate(tmp_path):
    model, _, _ = _pruned("sage", "batched")
    payload = _payload(model, tmp_path)
    key = next(k for k, v in payload["state_dict"].items() if "input_index" in k and v.numel() >= 2)
    for bad in (torch.tensor([0, 6] + [1] * (payload["state_dict"][key].numel() - 2)),
                torch.zeros(payload["state_dict"][key].numel(), dtype=torch.long)):
        payload["state_dict"][key] = bad
        with pytest.raises(ModelFileError, match="distinct channels in \\[0, 6\\)"):
            gnnaccel.load(_write(payload, tmp_path / "index.pt"))


def test_shared_reference_and_deep_nesting_bombs(tmp_path):
    payload = _small_payload(tmp_path)
    inner = list(range(100))
    for _ in range(8):
        inner = [inner] * 100  # 100**9 leaves through shared references, a few KB on disk
    payload["pruning_info"] = {"layers": inner}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = tmp_path / "bomb.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelFileError, match="more objects than its size allows"):
        gnnaccel.load(path)
    deep = []
    for _ in range(200):
        deep = [deep]
    payload["pruning_info"] = deep
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="nested"):
        gnnaccel.load(path)


def test_compressed_archive_is_rejected(tmp_path):
    payload = _small_payload(tmp_path)
    path = _write(payload, tmp_path / "plain.pt")
    zipped = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(ModelFileError, match="compressed"):
        gnnaccel.load(zipped)


def test_missing_file_and_bad_map_location(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        gnnaccel.load(tmp_path / "nope.pt")
    path = _write(_small_payload(tmp_path), tmp_path / "m.pt")
    with pytest.raises(TypeError, match="map_location"):
        gnnaccel.load(path, map_location={"cpu": "cpu"})
    with pytest.raises(ValueError, match="map_location"):
        gnnaccel.load(path, map_location="nodevice")


# ----------------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("kind, scheme", [("sage", "batched"), ("saint", "batched"), ("gcn", "full"),
                                          ("sage", None)])
def test_round_trip_and_meta(tmp_path, kind, scheme):
    model, graph, x = _pruned(kind, scheme)
    path = tmp_path / "m.pt"
    gnnaccel.save(model, path)
    loaded = gnnaccel.load(path)
    assert _same_state(loaded, model) and torch.equal(loaded(x, graph), model(x, graph))
    meta = gnnaccel.load(path, map_location="meta")
    tensors = list(meta.parameters()) + list(meta.buffers())
    assert tensors and {t.device.type for t in tensors} == {"meta"}
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    # Saving only narrowed widths keeps the file small and the widths of the loaded model exact.
    assert [(c.in_channels, c.out_channels) for c in meta.convs] == \
        [(c.in_channels, c.out_channels) for c in model.convs]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_onto_cuda_puts_every_tensor_there(tmp_path):
    model, graph, x = _pruned("sage", "batched")
    path = tmp_path / "m.pt"
    gnnaccel.save(model, path)
    loaded = gnnaccel.load(path, map_location="cuda")
    tensors = list(loaded.parameters()) + list(loaded.buffers())
    assert {t.device.type for t in tensors} == {"cuda"}
    out = loaded(x.cuda(), graph.to("cuda"))
    torch.testing.assert_close(out.cpu(), model(x, graph), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls_name, kwargs", [("GraphSAGE", dict(root_weight=False)), ("GraphSAGE", dict(aggr="max")),
                                              ("GraphSAGE", dict(bias=False)), ("GCN", dict(add_self_loops=False)),
                                              ("GCN", dict(bias=False)), ("GCN", dict(normalize=False)),
                                              ("GraphSAGE", dict(norm="batch_norm"))])
def test_models_converted_from_pyg_keep_their_layer_options(tmp_path, cls_name, kwargs):
    pyg_models = pytest.importorskip("torch_geometric.nn.models")
    torch.manual_seed(0)
    pyg = getattr(pyg_models, cls_name)(5, 7, 2, out_channels=3, **kwargs).eval()
    model = gnnaccel.from_pyg(pyg)
    path = tmp_path / "m.pt"
    gnnaccel.save(model, path)
    loaded = gnnaccel.load(path)
    gen = torch.Generator().manual_seed(1)
    edge_index = torch.randint(12, (2, 40), generator=gen)
    x = torch.randn(12, 5, generator=gen)
    assert _same_state(loaded, model)
    assert torch.equal(loaded(x, edge_index), model(x, edge_index))  # aggr="max" must not come back as "mean"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, edge_index), pyg(x, edge_index), rtol=1e-5, atol=1e-5)


def test_save_refuses_what_it_could_not_load(tmp_path):
    model = GraphSAGE(5, 7, 3, num_layers=2).eval()
    model.convs[1] = gnnaccel.nn.SAGEConv(7, 3, bias=False)  # layers that no single constructor call builds
    with pytest.raises(ValueError, match="differ in bias"):
        gnnaccel.save(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
