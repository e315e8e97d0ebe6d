"""select_channels vs scikit-learn's lasso_path to the same support size, side by side in one run.

    python -m pytest benchmarks/bench_lasso.py --benchmark-only --benchmark-columns=min,median,mean,rounds

Problem: the Gram form of a SAGE-like sum-form layer (ReLU activations with correlated channels of unequal
scale, two branches, 128 outputs, 8192 calibration rows), c = 512 and 1024 channels, k = c / 4.
scikit-learn gets the very same problem (X, y with X'X/m = G, X'y/m = q from a Cholesky factor, precomputed
Gram and Xy, same tolerance relative to ||y||^2) and its default 100-point geometric alpha grid, running from
alpha_max down to the lambda at which select_channels reached k non-zeros -- i.e. the shortest default-grid
path that reaches the same support size (the full default grid would continue to 1e-3 alpha_max).

Both run on one thread: select_channels' solver is sequential, and scikit-learn's coordinate descent is too,
but its BLAS calls (OpenBLAS) otherwise start a thread pool that competes with torch's OpenMP pool for the same
cores and makes its time swing 20x from run to run (30 ms to 800 ms at c = 1024 on 2 cores), so it runs under
``threadpoolctl.threadpool_limits(1)``.
"""
from __future__ import annotations

import numpy as np
import pytest

from lasso_problems import selection_problem, sklearn_equivalent

TOL = 1e-5
SIZES = [512, 1024]
_times = {}


@pytest.fixture(scope="module", params=SIZES, ids=lambda c: f"c{c}")
def problem(request, quick):
    c = 256 if quick else request.param
    G, q, _ = selection_problem(c)
    X, y, gram, xy, y_sq = sklearn_equivalent(G, q)
    from gnnaccel.pruning import select_channels

    # check_psd=False: the solver's time, as scikit-learn's (which verifies nothing); the O(c^3) certificate's
    # cost is measured on its own in RESULTS.md ("LASSO contract checks")
    keep, info = select_channels(G, q, c // 4, y_sq=y_sq, tol=TOL, return_info=True, check_psd=False)
    return dict(c=c, G=G, q=q, X=X, y=y, gram=gram, xy=xy, y_sq=y_sq, keep=keep, lam=info["lam"])


@pytest.mark.parametrize("impl", ["gnnaccel", "sklearn"])
def test_select_channels_speed(benchmark, problem, impl):
    c, k = problem["c"], problem["c"] // 4
    benchmark.group = f"select k=c/4 c={c}"
    benchmark.extra_info.update(c=c, k=k, impl=impl)
    if impl == "gnnaccel":
        from gnnaccel.pruning import select_channels

        fn = lambda: select_channels(problem["G"], problem["q"], k, y_sq=problem["y_sq"], tol=TOL,  # noqa: E731
                                     check_psd=False)
        keep = benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=1)
        assert keep.numel() == k
    else:
        lasso_path = pytest.importorskip("sklearn.linear_model").lasso_path
        alpha_max = float(np.abs(problem["xy"]).max()) / c
        alphas = np.geomspace(alpha_max, problem["lam"], 100)

        threadpool_limits = pytest.importorskip("threadpoolctl").threadpool_limits

        def fn():
            with threadpool_limits(limits=1):
                return lasso_path(problem["X"], problem["y"], alphas=alphas, precompute=problem["gram"],
                                  Xy=problem["xy"], tol=TOL, check_input=False)

        _, coefs, _ = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
        nnz = (coefs != 0).sum(0)
        assert nnz[-1] >= k  # the same support size is reached
        top = np.sort(np.argsort(-np.abs(coefs[:, int(np.argmax(nnz >= k))]))[:k])
        benchmark.extra_info["support_overlap"] = len(set(top.tolist()) & set(problem["keep"].tolist())) / k
    _times[(c, impl)] = benchmark.stats.stats.median
    if (c, "gnnaccel") in _times and (c, "sklearn") in _times:
        ratio = _times[(c, "sklearn")] / _times[(c, "gnnaccel")]
        benchmark.extra_info["speedup_vs_sklearn"] = ratio
        print(f"\nc={c}: select_channels {_times[(c, 'gnnaccel')] * 1e3:.1f} ms, sklearn lasso_path "
              f"{_times[(c, 'sklearn')] * 1e3:.1f} ms, speedup {ratio:.1f}x")
