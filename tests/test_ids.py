"""gnnaccel.ids.as_node_ids: the one node-id validator, and the entry points that use it."""
import numpy as np
import pytest
import torch

from gnnaccel.ids import as_node_ids


@pytest.mark.parametrize("make", [
    lambda v: v, tuple, lambda v: range(v[0], v[0] + 1) if len(v) == 1 else v,
    lambda v: np.asarray(v, dtype=np.int64), lambda v: np.asarray(v, dtype=np.int32),
    lambda v: np.asarray(v, dtype=np.uint16), lambda v: torch.tensor(v, dtype=torch.int32),
    lambda v: torch.tensor(v, dtype=torch.int64), lambda v: torch.tensor(v, dtype=torch.int16),
    lambda v: torch.tensor(v, dtype=torch.uint8),
])
def test_accepts_integer_ids_in_every_form(make):
    gen = np.random.default_rng(0)
    values = gen.integers(0, 100, size=17).tolist()
    got = as_node_ids(make(values), 100, "targets")
    assert got.dtype == torch.int64 and got.dim() == 1 and got.is_contiguous()
    assert got.tolist() == values


def test_numpy_scalars_in_a_list():
    assert as_node_ids([np.int64(3), np.int32(1)], 5, "rows").tolist() == [3, 1]


@pytest.mark.parametrize("bad, kind", [
    ([1.0, 2.0], "float"), (torch.tensor([1.0, 2.0]), "float"), (np.array([1.5, 2.0]), "float"),
    (torch.tensor([True, False]), "bool"), ([True, False], "bool"), (np.array([True, False]), "bool"),
    (torch.tensor([1 + 0j]), "complex"), (np.array([1 + 1j]), "complex"), ([1, "2"], "str"),
    (3, "scalar"), (2.5, "scalar"), ("0,1", "str"), (None, "NoneType"),
])
def test_rejects_non_integer_ids_naming_the_argument(bad, kind):
    with pytest.raises(TypeError, match="my_ids"):
        as_node_ids(bad, 10, "my_ids")


def test_rejects_bool_mask_with_a_hint():
    with pytest.raises(TypeError, match="nonzero"):
        as_node_ids(torch.tensor([True, False, True]), 3, "rows")


@pytest.mark.parametrize("bad", [[0, 10], [-1, 2], torch.tensor([5, 10]), np.array([-3]),
                                 torch.tensor([2 ** 32 + 1], dtype=torch.int64),
                                 torch.tensor([2 ** 31], dtype=torch.int64), [2 ** 40]])
def test_out_of_range(bad):
    with pytest.raises(ValueError, match=r"nodes.*\[0, 10\)"):
        as_node_ids(bad, 10, "nodes")


def test_int64_id_beyond_int32_never_wraps():
    # 2**32 + 3 would wrap to 3 if narrowed to int32: it must be rejected, not mapped to node 3.
    with pytest.raises(ValueError):
        as_node_ids(torch.tensor([2 ** 32 + 3]), 10, "rows")
    with pytest.raises(ValueError):
        as_node_ids(np.array([2 ** 63 + 5], dtype=np.uint64), 10, "rows")
    with pytest.raises(ValueError):
        as_node_ids([2 ** 70], 10, "rows")


def test_shape_and_empty():
    with pytest.raises(ValueError, match="1-D"):
        as_node_ids(torch.zeros(2, 2, dtype=torch.long), 10, "rows")
    for empty in ([], (), np.array([], dtype=np.int64), torch.empty(0, dtype=torch.int32)):
        got = as_node_ids(empty, 10, "rows")
        assert got.dtype == torch.int64 and got.numel() == 0
        with pytest.raises(ValueError, match="rows is empty"):
            as_node_ids(empty, 10, "rows", allow_empty=False)
    assert as_node_ids([], 0, "rows").numel() == 0
    with pytest.raises(ValueError):
        as_node_ids([0], 0, "rows")


def test_device_and_identity():
    t = torch.arange(5)
    assert as_node_ids(t, 5, "r") is t  # already a valid contiguous LongTensor: no copy
    assert as_node_ids([1, 2], 5, "r", device="cpu").device.type == "cpu"
    assert as_node_ids(torch.arange(10)[::2], 10, "r").is_contiguous()


# ------------------------------------------------------------------ entry points that take ids
def _small(index_dtype=torch.int32):
    import gnnaccel

    gen = torch.Generator().manual_seed(3)
    n = 12
    g = gnnaccel.Graph.from_edge_index(torch.randint(n, (2, 40), generator=gen), n, index_dtype=index_dtype)
    return g, torch.randn(n, 5, generator=gen)


@pytest.mark.parametrize("kind", ["sage", "gcn", "saint", "dense"])
def test_layer_rows_validated_not_cast(kind):
    from gnnaccel.nn import Dense, GCNConv, SAGEConv, SAINTConv

    g, x = _small()
    torch.manual_seed(0)
    conv = {"sage": lambda: SAGEConv(5, 3), "gcn": lambda: GCNConv(5, 3), "saint": lambda: SAINTConv(5, 4),
            "dense": lambda: Dense(5, 3)}[kind]().eval()
    with torch.no_grad():
        full = conv(x, g)
        torch.testing.assert_close(conv(x, g, rows=[4, 0, 4]), full[[4, 0, 4]])
        torch.testing.assert_close(conv(x, g, rows=np.array([7, 1])), full[[7, 1]])
        for bad, err in ((torch.tensor([1.0, 2.0]), TypeError), (torch.ones(12, dtype=torch.bool), TypeError),
                         (torch.tensor([2 ** 32 + 1]), ValueError), ([12], ValueError), ([-1], ValueError)):
            with pytest.raises(err, match="rows"):
                conv(x, g, rows=bad)


def test_model_layer_rows_validated():
    from gnnaccel.models import GraphSAGE

    g, x = _small(torch.int64)
    model = GraphSAGE(5, 8, 3, 2).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.layer(0, x, g, rows=[2, 3]), model.layer(0, x, g)[[2, 3]])
        with pytest.raises(TypeError, match="rows"):
            model.layer(0, x, g, rows=torch.tensor([0.5]))
        with pytest.raises(ValueError, match="layer index"):
            model.layer(2, x, g)
