"""gnnaccel.latency: interleaved timings of callables and their spread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnaccel.latency import format_speedup, interleaved_times, speedup, spread


def test_interleaved_times_warms_up_then_interleaves():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved_times(fns, rounds=6, warmup=2, seed=1)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up first, untimed
    rounds = [calls[6 + 3 * r: 9 + 3 * r] for r in range(6)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every round calls each once
    assert len({tuple(r) for r in rounds}) > 1  # in shuffled orders
    assert set(times) == set(fns)
    for t in times.values():
        assert t.shape == (6,) and t.dtype == torch.float64 and bool((t >= 0).all())


def test_spread_and_speedup_match_numpy():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(11, generator=gen, dtype=torch.float64) + 0.5
    other = torch.rand(11, generator=gen, dtype=torch.float64) + 0.1
    s = spread(base)
    assert s["median"] == pytest.approx(np.percentile(base.numpy(), 50))
    assert s["p25"] == pytest.approx(np.percentile(base.numpy(), 25))
    assert s["p75"] == pytest.approx(np.percentile(base.numpy(), 75))
    r = speedup(base, other)
    ratios = base.numpy() / other.numpy()
    assert r["median"] == pytest.approx(np.median(ratios))
    assert r["p25"] <= r["median"] <= r["p75"]
    assert format_speedup(r) == f"{r['median']:.2f}x [{r['p25']:.2f}-{r['p75']:.2f}]"


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        interleaved_times({})
    with pytest.raises(ValueError, match="rounds"):
        interleaved_times({"a": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="same rounds"):
        speedup(torch.ones(3), torch.ones(4))
