"""The demo's batched-latency table (gnnaccel.demo)."""
from __future__ import annotations

import torch

from gnnaccel.models import GraphSAGE


def test_demo_latency_table(capsys):
    from gnnaccel.datasets import synthetic
    from gnnaccel.demo import demo_latency_table

    data = synthetic(400, 6, 8, num_classes=3, seed=1)
    torch.manual_seed(0)
    model = GraphSAGE(8, 16, 3, 2, norm="batchnorm").eval()
    result = demo_latency_table(model, data, batch_size=16, num_batches=4)
    out = capsys.readouterr().out
    assert "unpruned+cache" in out and "p50" in out
    assert {"unpruned", "unpruned+cache"} <= set(result)
    for name, r in result.items():
        assert 0 < r["p50"] <= r["p99"]
        if name.endswith("+cache"):
            assert 0 <= r["hit_rate"] <= 1 and r["support_reduction"] >= 1
