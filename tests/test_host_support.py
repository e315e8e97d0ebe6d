"""BatchedEngine(support="host"): the index side (support expansion, masks, cache bookkeeping) on the host, the
features, layers and cached values on the device, and predict reading nothing back from the device.

Without a GPU the split is checked with the ``meta`` device as "the device": meta tensors hold no data, so any
read of device data on the host (a size that depends on device values, ``nonzero``, ``.item()``, a copy to the
host) raises. The gpu-marked test counts real synchronisations on CUDA (``make gpu-check``)."""
from __future__ import annotations

import warnings

import pytest
import torch

from gnnaccel import BatchedEngine, Graph
from gnnaccel.cache import FeatureCache
from gnnaccel.inference import full_inference
from test_batched import MODELS, _graph, _model

TOL = dict(atol=1e-5, rtol=1e-5)


def _cache(kind: str, model, n: int, device="cpu", index_device="cpu"):
    if kind == "none":
        return None
    dims = [conv.out_channels for conv in model.convs[:-1]]
    return FeatureCache(n, dims, capacity=None if kind == "full" else 20, device=device, index_device=index_device)


def _updates(engine, generator, c: int, features_device="cpu"):
    """A growth (features on the host, where they are checked for NaN), an edge insertion and a feature update
    (values on ``features_device``)."""
    n0 = engine.num_nodes
    engine.add_nodes(torch.randn(2, c, generator=generator), torch.tensor([[n0, 0, n0 + 1, 5], [1, n0, n0, n0 + 1]]))
    engine.add_edges(torch.tensor([[2, 7], [n0 + 1, 3]]))
    engine.update_features(torch.tensor([4, n0]), torch.randn(2, c, generator=generator).to(features_device))


@pytest.mark.parametrize("cache_kind", ["none", "full", "bounded"])
@pytest.mark.parametrize("name", list(MODELS))
def test_host_and_device_support_agree_on_cpu(name, cache_kind, generator):
    """Same answers from both supports (exact: equal to full inference; sampled: equal to each other), before
    and after updates; the host engine's cache keeps its bookkeeping on the host."""
    n, c = 90, 6
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model(name, c)
    for fanouts in (None, [3] * len(model.convs)):
        engines = [BatchedEngine(model, graph, x, fanouts=fanouts, support=s, cache=_cache(cache_kind, model, n))
                   for s in ("host", "device")]
        assert [e.support for e in engines] == ["host", "device"]
        for step in range(3):
            if step:
                for e in engines:
                    _updates(e, torch.Generator().manual_seed(step), c)
            reference = full_inference(model, engines[0].graph, engines[0].x, progress=False)
            for _ in range(3):
                targets = torch.randint(engines[0].num_nodes, (12,), generator=generator)
                host, device = (e.predict(targets) for e in engines)
                torch.testing.assert_close(host, device, rtol=0, atol=0)
                if fanouts is None:
                    torch.testing.assert_close(host, reference[targets], **TOL)


def test_default_support_per_device_and_checks(generator):
    n, c = 30, 4
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model("sage2", c)
    assert BatchedEngine(model, graph, x).support == "device"  # CPU: host and device are the same
    with pytest.raises(ValueError, match="support must be"):
        BatchedEngine(model, graph, x, support="gpu")
    meta_cache = FeatureCache(n, [10], device="cpu", index_device="meta")
    with pytest.raises(ValueError, match="index_device"):
        BatchedEngine(model, graph, x, cache=meta_cache)
    engine = BatchedEngine(model.to("meta"), graph, x.to("meta"), cache=True, support="host")
    assert engine.cache.device.type == "meta" and engine.cache.index_device.type == "cpu"


@pytest.mark.parametrize("cache_kind", ["none", "full", "bounded"])
@pytest.mark.parametrize("name", list(MODELS))
def test_host_support_never_reads_the_device(name, cache_kind, generator):
    """Features, model and cached values on the meta device, the index side on the host: predict (exact and
    sampled, targets as a tensor, a list or numpy, with a warm cache, after add_nodes / add_edges /
    update_features) completes, i.e. nothing in it reads device data on the host."""
    n, c = 70, 5
    graph = _graph(n, generator)
    x = torch.randn(n, c, generator=generator)
    model = _model(name, c).to("meta")
    for fanouts in (None, [2] * len(model.convs)):
        cache = _cache(cache_kind, model, n, device="meta")
        engine = BatchedEngine(model, graph, x.to("meta"), fanouts=fanouts, cache=cache, support="host")
        for step in range(3):
            if step:
                _updates(engine, generator, c, features_device="meta")
            for targets in (torch.randint(engine.num_nodes, (9,), generator=generator), [0, 3, 3],
                            torch.randint(engine.num_nodes, (4,), generator=generator).numpy()):
                out = engine.predict(targets)
                assert out.device.type == "meta" and out.shape == (len(targets), model.convs[-1].out_channels)
        if cache is not None:
            assert cache.stats()["hits"] > 0  # the cached path really ran (bookkeeping readable on the host)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_kind", ["none", "full", "bounded"])
@pytest.mark.parametrize("name", ["sage2", "gcn2", "saint3"])
def test_cuda_predict_synchronises_at_most_once(name, cache_kind):
    """On CUDA (support="host", the default there): predict with targets on the GPU synchronises once (the
    targets' copy to the host), with host targets never; exact and sampled, with the cache, after add_nodes /
    add_edges / update_features; exact answers equal full inference and the device-support engine's."""
    gen = torch.Generator().manual_seed(0)
    n, c = 300, 8
    graph = _graph(n, gen)
    x = torch.randn(n, c, generator=gen)
    model = _model(name, c)
    dev = torch.device("cuda")
    for fanouts in (None, [4] * len(model.convs)):
        engine = BatchedEngine(model.to(dev), graph, x.to(dev), fanouts=fanouts,
                               cache=_cache(cache_kind, model, n, device=dev))
        assert engine.support == "host"
        device_engine = BatchedEngine(model, graph, x.to(dev), fanouts=fanouts, support="device",
                                      cache=_cache(cache_kind, model, n, device=dev, index_device=dev))
        for step in range(3):
            if step:
                for e in (engine, device_engine):
                    _updates(e, torch.Generator().manual_seed(step), c)
            for _ in range(3):
                host_targets = torch.randint(engine.num_nodes, (32,), generator=gen)
                for targets, allowed in ((host_targets.to(dev), 1), (host_targets, 0), (host_targets.tolist(), 0)):
                    torch.cuda.synchronize()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        torch.cuda.set_sync_debug_mode("warn")
                        try:
                            out = engine.predict(targets)
                        finally:
                            torch.cuda.set_sync_debug_mode("default")
                    syncs = [w for w in caught if "synchroniz" in str(w.message)]
                    assert len(syncs) <= allowed, [str(w.message) for w in syncs]
                    assert out.device.type == "cuda"
                torch.testing.assert_close(out, device_engine.predict(host_targets.to(dev)), **TOL)
                if fanouts is None:
                    reference = full_inference(model, engine.graph, engine.x, progress=False)
                    torch.testing.assert_close(out, reference[host_targets.to(dev)], **TOL)
