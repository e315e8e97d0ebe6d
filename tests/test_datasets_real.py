"""gnnaccel.datasets.load on the offline collection (skipped when ../shared/data is absent)."""
import pytest
import torch

from gnnaccel import datasets

# name: (nodes, features, classes, directed edges as PyG stores them)
EXPECTED = {
    "Cora": (2708, 1433, 7, 10556),
    "CiteSeer": (3327, 3703, 6, 9104),
    "Photo": (7650, 745, 8, 238162),
    "CS": (18333, 6805, 15, 163788),
}


@pytest.mark.data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_load_matches_pyg_statistics(name, shared_data):
    data = datasets.load(name, root=shared_data)
    n, f, k, e = EXPECTED[name]
    assert (data.num_nodes, data.num_features, data.num_classes, data.graph.num_edges) == (n, f, k, e)
    assert data.x.dtype == torch.float32 and data.y.shape == (n,)
    data.graph.validate()
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert int((masks.sum(0) > 1).sum()) == 0  # disjoint
    if name in ("Cora", "CiteSeer"):  # Planetoid public split: 20 per class, 500 val, 1000 test
        assert (int(data.train_mask.sum()), int(data.val_mask.sum()), int(data.test_mask.sum())) == (20 * k, 500, 1000)
    else:  # seeded 60/20/20 over all nodes, reproducible
        assert int(data.train_mask.sum()) == int(0.6 * n) and bool((masks.sum(0) == 1).all())
        again = datasets.load(name.lower(), root=shared_data)
        assert torch.equal(again.train_mask, data.train_mask) and torch.equal(again.x, data.x)


def test_missing_files_and_unknown_names_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset Cora: .*ind\.cora\.x.*" + str(tmp_path)):
        datasets.load("cora", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'pubmed'"):
        datasets.load("pubmed", root=tmp_path)


def test_default_root_follows_env(monkeypatch, tmp_path):
    from gnnaccel.datasets.real import default_root

    monkeypatch.setenv("GNNACCEL_DATA", str(tmp_path))
    assert default_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        datasets.load("photo")
