import pytest
import torch

from gnnaccel.datasets import synthetic


def test_synthetic_is_deterministic_and_well_formed():
    a = synthetic(2000, 10, 16, num_classes=5, seed=3)
    b = synthetic(2000, 10, 16, num_classes=5, seed=3)
    c = synthetic(2000, 10, 16, num_classes=5, seed=4)
    assert torch.equal(a.graph.col, b.graph.col) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.graph.col, c.graph.col)
    a.graph.validate()
    assert a.graph.num_edges == 2 * round(2000 * 10 / 2)
    assert a.x.shape == (2000, 16) and int(a.y.max()) < 5
    masks = torch.stack([a.train_mask, a.val_mask, a.test_mask])
    assert bool((masks.sum(0) == 1).all())  # disjoint and covering


def test_synthetic_is_undirected_homophilous_and_heavy_tailed():
    d = synthetic(20_000, 20, 8, num_classes=4, seed=0, homophily=0.8)
    src, dst = d.graph.edge_index
    # symmetric: the multiset of (src, dst) equals that of (dst, src)
    key = lambda s, t: torch.sort(s * d.num_nodes + t).values  # noqa: E731
    assert torch.equal(key(src, dst), key(dst, src))
    same = (d.y[src] == d.y[dst]).float().mean().item()
    assert same > 0.8  # homophily 0.8 plus chance agreement among the rest
    deg = d.graph.in_degree().float()
    assert deg.max() > 10 * deg.mean()  # power law: hubs far above the mean
    # class-correlated features: a nearest-centroid classifier beats chance clearly
    centroids = torch.stack([d.x[d.y == k].mean(0) for k in range(4)])
    acc = (torch.cdist(d.x, centroids).argmin(1) == d.y).float().mean().item()
    assert acc > 0.5


@pytest.mark.parametrize("kwargs", [dict(num_nodes=0), dict(avg_degree=-1), dict(homophily=1.5),
                                    dict(power_law_exponent=1.0), dict(num_classes=0)])
def test_synthetic_bad_arguments(kwargs):
    args = dict(num_nodes=100, avg_degree=5, num_features=4, num_classes=3)
    args.update(kwargs)
    with pytest.raises(ValueError):
        synthetic(**args)
