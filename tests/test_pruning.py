"""gnnaccel.pruning: Gram construction against explicit rank-1 blocks, exact-budget selection, planted
support recovery, greedy vs brute force on the refit objective, refit against lstsq on explicit inputs,
baselines, bad inputs."""
import pytest
import torch

from gnnaccel.pruning import (SecondMoment, branch_penalty, cross_linear_term, gram_from_moments, lambda_max,
                              output_relative_error, refit, select_channels, select_greedy, select_greedy_or_refined,
                              select_magnitude, select_random, split_branch_coordinates)
from gnnaccel.ops import lasso_cd
from gnnaccel.ops.lasso import lasso_duality_gap, lasso_objective

F64 = torch.float64


def _layer(generator, n=400, c=10, widths=(6, 6), dead=()):
    """Two branches: Z_self and a correlated Z_neigh [n, c], weights [c, d_b]."""
    zs = torch.randn(n, c, generator=generator, dtype=F64)
    zn = 0.5 * zs + torch.randn(n, c, generator=generator, dtype=F64)
    for j in dead:
        zs[:, j] = 0
        zn[:, j] = 0
    ws = [torch.randn(c, d, generator=generator, dtype=F64) for d in widths]
    return [zs, zn], ws


def _placed(ws, form):
    if form == "sum":
        return list(ws), [torch.arange(ws[0].shape[1])] * len(ws)
    d = sum(w.shape[1] for w in ws)
    out, cols, start = [], [], 0
    for w in ws:
        full = torch.zeros(w.shape[0], d, dtype=F64)
        full[:, start:start + w.shape[1]] = w
        out.append(full)
        cols.append(torch.arange(start, start + w.shape[1]))
        start += w.shape[1]
    return out, cols


def _blocks(zs, ws, form, layout):
    """Explicit rank-1 blocks C as columns of a design matrix [n*d, coords]."""
    placed, _ = _placed(ws, form)
    c = zs[0].shape[1]
    cols = []
    if layout == "channel":
        for i in range(c):
            cols.append(sum(torch.outer(z[:, i], w[i]) for z, w in zip(zs, placed)).flatten())
    else:
        for z, w in zip(zs, placed):
            for i in range(c):
                cols.append(torch.outer(z[:, i], w[i]).flatten())
    return torch.stack(cols, 1)


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("layout", ["channel", "branch"])
def test_gram_matches_explicit_rank1_blocks(form, layout, generator):
    widths = (5, 5) if form == "sum" else (4, 7)
    zs, ws = _layer(generator, n=50, c=7, widths=widths, dead=(3,))
    n = zs[0].shape[0]
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    G, q, y_sq = gram_from_moments(S, ws, form=form, layout=layout)
    X = _blocks(zs, ws, form, layout)
    Y = X.sum(1)  # the unpruned output, flattened
    torch.testing.assert_close(G, X.T @ X / n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q, X.T @ Y / n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_sq, Y @ Y / n, rtol=1e-12, atol=1e-12)
    assert torch.equal(G, G.T)


@pytest.mark.parametrize("form", ["sum", "concat"])
def test_cross_linear_term_matches_explicit(form, generator):
    zs, ws = _layer(generator, n=40, c=6, widths=(3, 3))
    zs0, ws0 = _layer(generator, n=40, c=5, widths=(3, 3))
    n = 40
    T = torch.cat(zs, 1).T @ torch.cat(zs0, 1) / n
    placed0, _ = _placed(ws0, form)
    Y0 = sum(z @ w for z, w in zip(zs0, placed0)).flatten()
    for layout in ("channel", "branch"):
        X = _blocks(zs, ws, form, layout)
        torch.testing.assert_close(cross_linear_term(T, ws, ws0, form=form, layout=layout), X.T @ Y0 / n)


def test_second_moment_streaming_equals_one_shot(generator):
    zs, _ = _layer(generator, n=333, c=9)
    Z = torch.cat(zs, 1)
    acc = SecondMoment(18)
    for start in range(0, 333, 50):
        acc.update(zs[0][start:start + 50].float(), zs[1][start:start + 50].float())
    one = SecondMoment(18).update(Z.float())
    assert acc.count == one.count == 333
    torch.testing.assert_close(acc.moment, one.moment, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.moment, Z.float().double().T @ Z.float().double() / 333, rtol=1e-12, atol=1e-12)
    assert acc.sum.dtype == F64
    torch.testing.assert_close(acc.mean, Z.float().double().mean(0), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="18"):
        acc.update(Z[:, :5])
    with pytest.raises(ValueError, match="same number of rows"):
        acc.update(zs[0][:3], zs[1][:4])
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.full((2, 18), float("nan")))
    with pytest.raises(ValueError, match="no rows"):
        SecondMoment(3).moment
    with pytest.raises(ValueError, match="no rows"):
        SecondMoment(3).mean


def test_about_mean_is_the_covariance_and_pools_over_folds(generator):
    from gnnaccel.pruning.refit import about_mean

    A = torch.randn(200, 6, generator=generator, dtype=F64) + 3.0
    B = torch.randn(200, 4, generator=generator, dtype=F64) - 1.0
    ma, mb = A.mean(0), B.mean(0)
    torch.testing.assert_close(about_mean(A.T @ B / 200, ma, mb), (A - ma).T @ (B - mb) / 200)
    folds = [torch.arange(0, 70), torch.arange(70, 200)]  # unequal folds: each about the *global* means
    for f in folds:
        got = about_mean(A[f].T @ B[f] / f.numel(), ma, mb, A[f].mean(0), B[f].mean(0))
        torch.testing.assert_close(got, (A[f] - ma).T @ (B[f] - mb) / f.numel())


def test_about_mean_zeroes_constant_channels_exactly(generator):
    """A constant channel (a dead ReLU unit shifted by BatchNorm) is centred to an exactly-zero row and column,
    not to rounding residue that the LASSO's PSD contract would read as a negative 2 x 2 minor."""
    from gnnaccel.pruning import select_channels
    from gnnaccel.pruning.refit import about_mean

    A = torch.rand(500, 16, generator=generator, dtype=torch.float32)
    A[:, [3, 9]] = torch.tensor([0.3183, 1.7071])  # constants with no exact binary mean
    A = A.double()
    m = A.mean(0)
    S = about_mean(A.T @ A / 500, m, m)
    ref = (A - m).T @ (A - m) / 500
    for c in (3, 9):
        assert torch.count_nonzero(S[c]) == 0 and torch.count_nonzero(S[:, c]) == 0
    live = torch.tensor([i for i in range(16) if i not in (3, 9)])
    torch.testing.assert_close(S[live][:, live], ref[live][:, live])
    chosen = select_channels(S, S.sum(1), 5, check_psd=True)  # the contract accepts it
    assert chosen.numel() == 5 and not set(chosen.tolist()) & {3, 9}


@pytest.mark.parametrize("k", [0, 1, 5, 17, 40])
def test_select_channels_returns_exactly_k(k, generator):
    zs, ws = _layer(generator, n=300, c=40, widths=(8, 8), dead=(2, 11))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 300
    G, q, y_sq = gram_from_moments(S, ws)
    sel = select_channels(G, q, k, y_sq=y_sq)
    assert sel.dtype == torch.long and sel.numel() == k
    assert torch.equal(sel, torch.unique(sel))  # sorted, distinct
    if k <= 38:
        assert 2 not in sel.tolist() and 11 not in sel.tolist()  # dead channels only as a last resort
    greedy = select_greedy(S, ws, k)
    assert len(greedy) == 2 and torch.equal(greedy[0], greedy[1])
    assert greedy[0].numel() == k and torch.equal(greedy[0], torch.unique(greedy[0]))
    if k <= 38:
        assert 2 not in greedy[0].tolist() and 11 not in greedy[0].tolist()


def _planted(generator, n=3000, c=48, k=6, d=8):
    """Target built from k true channels only: Y = sum_{i in T} C_i, so q = G[:, T] 1 (exact recovery)."""
    zs, ws = _layer(generator, n=n, c=c, widths=(d, d))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    G, _, _ = gram_from_moments(S, ws)
    true = torch.sort(torch.randperm(c, generator=generator)[:k]).values
    q = G[:, true].sum(1)
    y_sq = G[true][:, true].sum()
    return G, q, y_sq, true


def test_select_channels_recovers_a_planted_support(generator):
    G, q, y_sq, true = _planted(generator)
    sel, info = select_channels(G, q, true.numel(), y_sq=y_sq, return_info=True)
    assert torch.equal(sel, true)
    assert info["nnz"] >= true.numel() and info["solves"] >= 1


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("keep_whole", [None, 0])
def test_greedy_recovers_planted_channels(form, keep_whole, generator):
    """The output depends on k channels only (the other rows of the penalised branches' weights are 0): the
    refit on them is exact, and forward selection on the refit objective finds them (with the self branch
    kept whole, only the neighbour branch is planted)."""
    c, k = 40, 5
    zs, ws = _layer(generator, n=2000, c=c, widths=(6, 6) if form == "sum" else (4, 6))
    true = torch.sort(torch.randperm(c, generator=generator)[:k]).values
    off = torch.ones(c, dtype=torch.bool)
    off[true] = False
    for b, w in enumerate(ws):
        if b != keep_whole:
            w[off] = 0
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 2000
    cols = None if form == "sum" else _placed(ws, form)[1]
    keeps = select_greedy(S, ws, k, form, cols, keep_whole=keep_whole)
    assert torch.equal(keeps[1], true)
    assert torch.equal(keeps[0], torch.arange(c) if keep_whole == 0 else true)
    new = refit(S, keeps, ws, form, 1e-9, cols)
    assert output_relative_error(S, ws, new, keeps, form, cols) < 1e-6


def test_select_channels_with_unpenalized_branch_recovers_planted_neighbours(generator):
    """Branch layout (batched scheme): self branch unpenalised and kept whole; the target also uses every
    self channel, and only the planted neighbour channels, which the LASSO must find."""
    c, k = 30, 5
    zs, ws = _layer(generator, n=3000, c=c, widths=(8, 8))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 3000
    G, _, _ = gram_from_moments(S, ws, layout="branch")
    true = torch.sort(torch.randperm(c, generator=generator)[:k]).values
    used = torch.cat([torch.arange(c), c + true])
    q, y_sq = G[:, used].sum(1), G[used][:, used].sum()
    p = branch_penalty(c, 2, unpenalized=(0,))
    sel = select_channels(G, q, k, penalty=p, y_sq=y_sq)
    assert torch.equal(sel, c + true)
    assert torch.equal(split_branch_coordinates(sel, c, 2)[1], true)
    with pytest.raises(ValueError, match=r"k must be in \[0, 30\]"):
        select_channels(G, q, c + 1, penalty=p)


def test_lambda_max_is_the_first_nonzero(generator):
    zs, ws = _layer(generator, n=200, c=15)
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 200
    for layout, p in (("channel", None), ("branch", branch_penalty(15, 2))):
        G, q, y_sq = gram_from_moments(S, ws, layout=layout)
        lmax = lambda_max(G, q, p)
        pen = torch.ones(G.shape[0], dtype=torch.bool) if p is None else p > 0
        at, _, _ = lasso_cd(G, q, lmax * 1.0001, penalty=p, y_sq=y_sq, tol=1e-12)
        below, _, _ = lasso_cd(G, q, lmax * 0.99, penalty=p, y_sq=y_sq, tol=1e-12)
        assert int((at[pen] != 0).sum()) == 0 and int((below[pen] != 0).sum()) >= 1


def _refit_objective(zs, ws, cols, metric, keep_whole, ridge):
    """(objective, units): the refit's objective of a selection by explicit solves on materialised inputs
    -- per column group (branches sharing output columns) the ridge least-squares refit of the group's
    targets (in the metric) on the kept inputs, residual + ridge term, ridge relative to the group's mean
    diagonal -- and the selectable units: channels, or (branch, channel) pairs of the branches not kept
    whole."""
    B, c, n = len(zs), zs[0].shape[1], zs[0].shape[0]
    d = int(max(int(cl.max()) for cl in cols)) + 1
    Y = sum(z @ torch.zeros(c, d, dtype=F64).index_copy(1, cl, w) for z, w, cl in zip(zs, ws, cols))
    M = torch.eye(d, dtype=F64) if metric is None else metric
    groups = []
    for b in range(B):  # branches sharing a column, merged
        merged = [g for g in groups if any(set(cols[b].tolist()) & set(cols[o].tolist()) for o in g)]
        groups = [g for g in groups if g not in merged] + [sum(merged, []) + [b]]
    units = list(range(c)) if keep_whole is None else [(b, j) for b in range(B) if b != keep_whole
                                                        for j in range(c)]

    def objective(sel):
        total = 0.0
        for grp in groups:
            gc = torch.unique(torch.cat([cols[b] for b in grp]))
            target = Y[:, gc] @ M[gc]
            inputs = [zs[b][:, j] for b in grp for j in range(c)
                      if (keep_whole is None and j in sel) or b == keep_whole or (b, j) in sel]
            everything = torch.cat([zs[b] for b in grp], 1)
            r = ridge * float((everything * everything).sum(0).mean()) / n
            if not inputs:
                total += float((target * target).sum()) / n
                continue
            X = torch.stack(inputs, 1)
            beta = torch.linalg.solve(X.T @ X / n + r * torch.eye(X.shape[1], dtype=F64), X.T @ target / n)
            res = target - X @ beta
            total += float((res * res).sum()) / n + r * float((beta * beta).sum())
        return total

    return objective, units


def _as_keeps(chosen, keep_whole, B, c):
    if keep_whole is None:
        return [torch.sort(torch.tensor(chosen)).values] * B
    return [torch.arange(c) if b == keep_whole else
            torch.sort(torch.tensor([j for bb, j in chosen if bb == b], dtype=torch.long)).values
            for b in range(B)]


def _naive_greedy_refit(zs, ws, cols, k, metric, keep_whole, ridge):
    """Forward selection by brute force: at each step the unit whose addition gives the lowest explicit
    refit objective (:func:`_refit_objective`)."""
    objective, units = _refit_objective(zs, ws, cols, metric, keep_whole, ridge)
    chosen = []
    for _ in range(k):
        chosen.append(min((u for u in units if u not in chosen), key=lambda u: objective(chosen + [u])))
    return _as_keeps(chosen, keep_whole, len(zs), zs[0].shape[1])


def _units_of(keeps, keep_whole):
    if keep_whole is None:
        return keeps[0].tolist()
    return [(b, j) for b, kb in enumerate(keeps) if b != keep_whole for j in kb.tolist()]


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("with_metric", [False, True])
@pytest.mark.parametrize("keep_whole", [None, 0])
def test_greedy_matches_brute_force_on_the_refit_objective(form, with_metric, keep_whole, generator):
    widths = (5, 5) if form == "sum" else (4, 3)
    zs, ws = _layer(generator, n=200, c=9, widths=widths, dead=(4,))
    placed, cols = _placed(ws, form)
    d = placed[0].shape[1]
    metric = torch.randn(d, 3, generator=generator, dtype=F64) if with_metric else None
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 200
    for k in (1, 4, 7):
        got = select_greedy(S, ws, k, form, None if form == "sum" else cols, metric=metric,
                            keep_whole=keep_whole, ridge=1e-6, max_swaps=0)
        ref = _naive_greedy_refit(zs, ws, cols, k, metric, keep_whole, 1e-6)
        assert all(torch.equal(a, b) for a, b in zip(got, ref)), (k, got, ref)
        if keep_whole is None:
            assert 4 not in got[0].tolist()  # the dead channel comes last


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("with_metric", [False, True])
@pytest.mark.parametrize("keep_whole", [None, 0])
def test_greedy_swaps_end_where_no_single_exchange_improves(form, with_metric, keep_whole, generator):
    """With swaps run to convergence the selection is never worse than forward selection alone and no
    exchange of one kept for one dropped unit lowers the explicit refit objective. Inputs with strongly correlated
    channel pairs, where forward selection alone is often not such an optimum."""
    n, c = 120, 8
    base = torch.randn(n, c // 2, generator=generator, dtype=F64)
    zs0 = torch.cat([base, base + 0.3 * torch.randn(n, c // 2, generator=generator, dtype=F64)], 1)
    zs = [zs0, 0.5 * zs0 + torch.randn(n, c, generator=generator, dtype=F64)]
    widths = (5, 5) if form == "sum" else (4, 3)
    ws = [torch.randn(c, w, generator=generator, dtype=F64) for w in widths]
    placed, cols = _placed(ws, form)
    metric = torch.randn(placed[0].shape[1], 3, generator=generator, dtype=F64) if with_metric else None
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    objective, units = _refit_objective(zs, ws, cols, metric, keep_whole, 1e-6)
    for k in (2, 3, 5):
        kw = dict(metric=metric, keep_whole=keep_whole, ridge=1e-6)
        bc = None if form == "sum" else cols
        # max_swaps beyond the default (k) and no stopping tolerance: the assertions below need the swaps to
        # have converged
        swapped = _units_of(select_greedy(S, ws, k, form, bc, max_swaps=100, swap_tol=0, **kw), keep_whole)
        forward = _units_of(select_greedy(S, ws, k, form, bc, max_swaps=0, **kw), keep_whole)
        value = objective(swapped)
        assert len(swapped) == k and value <= objective(forward) * (1 + 1e-9)
        for i in range(k):
            for u in units:
                if u not in swapped:
                    exchanged = swapped[:i] + [u] + swapped[i + 1:]
                    assert objective(exchanged) >= value * (1 - 1e-7), (k, swapped, exchanged)
        # from a given start (e.g. the LASSO's): unchanged without swaps, swap-optimal with them; what the
        # kept set explains = objective with no selectable unit kept - objective of the set
        start = [units[i] for i in torch.randperm(len(units), generator=generator)[:k].tolist()]
        start_keeps = ([torch.tensor(sorted(start))] * 2 if keep_whole is None else
                       [torch.arange(c), torch.tensor(sorted(j for _, j in start))])
        same, explained = select_greedy(S, ws, k, form, bc, initial=start_keeps, max_swaps=0,
                                        return_explained=True, **kw)
        assert all(torch.equal(a, b) for a, b in zip(same, start_keeps))
        assert explained == pytest.approx(objective([]) - objective(start), rel=1e-8, abs=1e-12)
        refined, explained = select_greedy(S, ws, k, form, bc, initial=start_keeps, return_explained=True,
                                           max_swaps=100, swap_tol=0, **kw)
        refined = _units_of(refined, keep_whole)
        assert explained == pytest.approx(objective([]) - objective(refined), rel=1e-8, abs=1e-12)
        assert objective(refined) <= objective(start) * (1 + 1e-9)
        for i in range(k):
            for u in units:
                if u not in refined:
                    assert objective(refined[:i] + [u] + refined[i + 1:]) >= objective(refined) * (1 - 1e-7)


@pytest.mark.parametrize("form", ["sum", "concat"])
def test_greedy_swaps_on_a_larger_correlated_layer(form, generator):
    """Many consecutive exchanges (rank updates of the kept block's inverse): the end point is still one no
    single exchange improves, checked by explicit solves, and no worse than forward selection."""
    n, c, k = 300, 24, 8
    base = torch.randn(n, c // 3, generator=generator, dtype=F64)
    mix = torch.randn(c // 3, c, generator=generator, dtype=F64)
    z = base @ mix + 0.2 * torch.randn(n, c, generator=generator, dtype=F64)
    zs = [z, 0.3 * z + torch.randn(n, c, generator=generator, dtype=F64)]
    ws = [torch.randn(c, w, generator=generator, dtype=F64) for w in ((6, 6) if form == "sum" else (4, 5))]
    _, cols = _placed(ws, form)
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    objective, units = _refit_objective(zs, ws, cols, None, None, 1e-6)
    bc = None if form == "sum" else cols
    swapped = select_greedy(S, ws, k, form, bc, max_swaps=100, swap_tol=0)[0].tolist()
    forward = select_greedy(S, ws, k, form, bc, max_swaps=0)[0].tolist()
    value = objective(swapped)
    assert value <= objective(forward) * (1 + 1e-9)
    for i in range(k):
        for u in units:
            if u not in swapped:
                assert objective(swapped[:i] + [u] + swapped[i + 1:]) >= value * (1 - 1e-7)


@pytest.mark.parametrize("keep_whole", [None, 0])
def test_greedy_or_refined_is_the_better_of_the_two_selections(keep_whole, generator):
    """One setup for both starts gives what two select_greedy calls give: the selection explaining more,
    the refined start on ties (the start's own refinement compared with forward + swaps)."""
    zs, ws = _layer(generator, n=150, c=12, widths=(5, 5))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 150
    kw = dict(keep_whole=keep_whole, ridge=1e-6)
    for k in (2, 4, 7):
        chosen = torch.randperm(12, generator=generator)[:k].sort().values
        start = [chosen] * 2 if keep_whole is None else [torch.arange(12), chosen]
        keeps, start_won = select_greedy_or_refined(S, ws, k, start, **kw)
        forward, e_forward = select_greedy(S, ws, k, return_explained=True, **kw)
        refined, e_start = select_greedy(S, ws, k, initial=start, return_explained=True, **kw)
        assert start_won == (e_start >= e_forward)
        assert all(torch.equal(a, b) for a, b in zip(keeps, refined if start_won else forward))


def test_greedy_three_branches_with_one_kept_whole(generator):
    """(branch, channel) units of two penalised branches chosen jointly, k counted over both."""
    n, c = 150, 6
    base = torch.randn(n, c, generator=generator, dtype=F64)
    zs = [base, base + torch.randn(n, c, generator=generator, dtype=F64),
          torch.randn(n, c, generator=generator, dtype=F64)]
    ws = [torch.randn(c, 4, generator=generator, dtype=F64) for _ in range(3)]
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    cols = [torch.arange(4)] * 3
    for k in (2, 5):
        got = select_greedy(S, ws, k, keep_whole=1, max_swaps=0)
        assert sum(kb.numel() for b, kb in enumerate(got) if b != 1) == k
        ref = _naive_greedy_refit(zs, ws, cols, k, None, 1, 1e-6)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("form", ["sum", "concat"])
def test_refit_matches_lstsq_on_explicit_inputs(form, generator):
    widths = (5, 5) if form == "sum" else (4, 6)
    zs, ws = _layer(generator, n=120, c=9, widths=widths, dead=(0,))
    n = 120
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    placed, cols = _placed(ws, form)
    Y = sum(z @ w for z, w in zip(zs, placed))
    for keep in (torch.tensor([1, 4, 5, 8]), [torch.arange(9), torch.tensor([2, 3, 7])]):
        keeps = [keep, keep] if isinstance(keep, torch.Tensor) else keep
        new = refit(S, keep, ws, form=form, ridge=0.0)
        if form == "sum":  # joint least squares over both branches
            A = torch.cat([zs[0][:, keeps[0]], zs[1][:, keeps[1]]], 1)
            sol = torch.linalg.lstsq(A, Y, driver="gelsd").solution  # SVD: minimum norm with a dead column
            expected = [sol[: keeps[0].numel()], sol[keeps[0].numel():]]
        else:  # each branch writes its own columns
            expected = [torch.linalg.lstsq(zs[b][:, keeps[b]], Y[:, cols[b]], driver="gelsd").solution
                        for b in range(2)]
        for got, want in zip(new, expected):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
        Y_new = torch.zeros_like(Y)
        for b in range(2):
            Y_new[:, cols[b]] += zs[b][:, keeps[b]] @ new[b]
        err = output_relative_error(S, ws, new, keep, form=form)
        assert err == pytest.approx(float((Y - Y_new).norm() / Y.norm()), rel=1e-6, abs=1e-9)
    # Keeping every channel reproduces the layer exactly; a ridge only shrinks slightly.
    full = refit(S, torch.arange(9), ws, form=form, ridge=0.0)
    assert output_relative_error(S, ws, full, torch.arange(9), form=form) < 1e-7
    ridged = refit(S, torch.arange(9), ws, form=form, ridge=1e-6)
    assert output_relative_error(S, ws, ridged, torch.arange(9), form=form) < 1e-4


def test_dead_kept_channel_refits_to_zero_weight(generator):
    zs, ws = _layer(generator, n=100, c=6, dead=(2,))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 100
    new = refit(S, torch.tensor([1, 2, 3]), ws, ridge=0.0)
    assert bool(torch.isfinite(new[0]).all()) and float(new[0][1].abs().max()) < 1e-10


def test_baselines(generator):
    a, b = select_random(50, 10, seed=3), select_random(50, 10, seed=3)
    assert torch.equal(a, b) and torch.equal(a, torch.unique(a)) and a.numel() == 10
    assert not torch.equal(a, select_random(50, 10, seed=4))
    w1 = torch.randn(20, 4, generator=generator)
    w2 = torch.randn(20, 3, generator=generator)
    norms = torch.cat([w1, w2], 1).double().norm(dim=1)
    expected = torch.sort(torch.topk(norms, 6).indices).values
    assert torch.equal(select_magnitude([w1, w2], 6), expected)
    assert torch.equal(select_magnitude(w1, 20), torch.arange(20))


def test_lasso_beats_random_and_magnitude_on_refit_error(generator):
    """On a layer with unequal channel importance, the LASSO selection's refit error is below the baselines'."""
    n, c = 800, 32
    scale = torch.linspace(0.1, 3.0, c, dtype=F64)[torch.randperm(c, generator=generator)]
    zs = [torch.randn(n, c, generator=generator, dtype=F64) * scale for _ in range(2)]
    zs[1] = zs[1] + 0.8 * zs[0]
    ws = [torch.randn(c, 8, generator=generator, dtype=F64) / scale.sqrt().unsqueeze(1) for _ in range(2)]
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    G, q, y_sq = gram_from_moments(S, ws)
    errs = {}
    for name, keep in (("lasso", select_channels(G, q, 8, y_sq=y_sq)), ("magnitude", select_magnitude(ws, 8)),
                       ("random", select_random(c, 8, seed=0))):
        errs[name] = output_relative_error(S, ws, refit(S, keep, ws), keep)
    assert errs["lasso"] < errs["magnitude"] and errs["lasso"] < errs["random"], errs


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors(generator):
    zs, ws = _layer(generator, n=50, c=5)
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 50
    G, q, _ = gram_from_moments(S, ws)
    with pytest.raises(ValueError, match=r"k must be in \[0, 5\]"):
        select_channels(G, q, 6)
    with pytest.raises(ValueError, match=r"k must be in"):
        select_channels(G, q, -1)
    with pytest.raises(TypeError, match="k must be an int"):
        select_channels(G, q, 2.5)
    with pytest.raises(ValueError, match="square"):
        select_channels(G[:4], q, 2)
    with pytest.raises(ValueError, match="q must have shape"):
        select_channels(G, q[:4], 2)
    bad = G.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="G contains NaN"):
        select_channels(bad, q, 2)
    with pytest.raises(ValueError, match="S contains NaN"):
        select_greedy(torch.full_like(S, float("nan")), ws, 2)
    with pytest.raises(ValueError, match=r"k must be in \[0, 5\]"):
        select_greedy(S, ws, 6)
    with pytest.raises(ValueError, match=r"k must be in \[0, 5\]"):
        select_greedy(S, ws, 6, keep_whole=0)  # one penalised branch of 5 channels
    with pytest.raises(ValueError, match="keep_whole must be a branch index"):
        select_greedy(S, ws, 2, keep_whole=2)
    with pytest.raises(ValueError, match=r"metric must be \[6, m\]"):
        select_greedy(S, ws, 2, metric=torch.ones(5, 2, dtype=F64))
    with pytest.raises(ValueError, match="metric contains NaN"):
        select_greedy(S, ws, 2, metric=torch.full((6, 2), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="ridge must be a finite number > 0"):
        select_greedy(S, ws, 2, ridge=0.0)
    with pytest.raises(ValueError, match="max_swaps must be an int >= 0"):
        select_greedy(S, ws, 2, max_swaps=-1)
    with pytest.raises(ValueError, match=r"initial holds channel indices outside \[0, 5\)"):
        select_greedy(S, ws, 2, initial=[torch.tensor([0, 5])] * 2)
    with pytest.raises(ValueError, match="every branch must keep the same channels"):
        select_greedy(S, ws, 2, initial=[torch.tensor([0, 1]), torch.tensor([0, 2])])
    with pytest.raises(ValueError, match="initial must select 2 distinct units"):
        select_greedy(S, ws, 2, initial=[torch.tensor([1, 1])] * 2)
    with pytest.raises(ValueError, match="q contains NaN"):
        select_channels(G, torch.full_like(q, float("nan")), 2)
    with pytest.raises(ValueError, match="symmetric"):
        select_channels(G + torch.triu(torch.ones_like(G), 1), q, 2)
    with pytest.raises(ValueError, match="penalty factors"):
        select_channels(G, q, 2, penalty=-torch.ones(5, dtype=F64))
    with pytest.raises(ValueError, match="S is 10 x 10"):
        gram_from_moments(S, [ws[0][:4], ws[1][:4]])
    with pytest.raises(ValueError, match="sum form needs equal output widths"):
        gram_from_moments(S, [ws[0], ws[1][:, :3]])
    with pytest.raises(ValueError, match="form must be"):
        gram_from_moments(S, ws, form="stack")
    with pytest.raises(ValueError, match="S contains NaN"):
        gram_from_moments(torch.full_like(S, float("nan")), ws)
    with pytest.raises(ValueError, match="out of range"):
        refit(S, torch.tensor([0, 7]), ws)
    with pytest.raises(ValueError, match="distinct"):
        refit(S, torch.tensor([1, 1]), ws)
    with pytest.raises(ValueError, match="ridge"):
        refit(S, torch.tensor([1]), ws, ridge=-1.0)
    with pytest.raises(ValueError, match=r"k must be in \[0, 5\]"):
        select_magnitude(ws, 6)
    with pytest.raises(ValueError, match=r"k must be in \[0, 3\]"):
        select_random(3, 4)


# ------------------------------------------------------------ Schur elimination of unpenalised coordinates
def _unpenalized_problem(generator, n=500, u=12, r=20, y_in_span=False, duplicate=True):
    """Explicit data-space LASSO X [n, u + r], y with an unpenalised block that has a dead column and (if
    ``duplicate``) a duplicated column (rank-deficient among its alive columns), a penalised column lying in
    the span of the unpenalised ones and a dead penalised column; columns shuffled so that the two blocks
    interleave. Returns X, y, penalty, U, R."""
    XU = torch.randn(n, u, generator=generator, dtype=F64)
    XU[:, 3] = 0
    if duplicate:
        XU[:, u - 1] = XU[:, 2]
    XR = torch.randn(n, r, generator=generator, dtype=F64) + 0.6 * XU[:, torch.arange(r) % u]
    XR[:, 5] = XU[:, 0] - 2 * XU[:, 4]
    XR[:, 9] = 0
    X = torch.cat([XU, XR], 1)
    p = torch.cat([torch.zeros(u, dtype=F64), 0.5 + 1.5 * torch.rand(r, generator=generator, dtype=F64)])
    perm = torch.randperm(u + r, generator=generator)
    X, p = X[:, perm], p[perm]
    U, R = torch.nonzero(p == 0).flatten(), torch.nonzero(p > 0).flatten()
    y = XU @ torch.randn(u, generator=generator, dtype=F64)
    if not y_in_span:
        y = y + XR[:, [1, 6, r - 2]] @ torch.tensor([2.0, -1.5, 1.0], dtype=F64)
        y = y + 0.3 * torch.randn(n, generator=generator, dtype=F64)
    return X, y, p, U, R


def _project_out(XU, M):
    """M minus its least-squares projection on the columns of XU (rank-deficient XU: gelsd, min-norm)."""
    return M - XU @ torch.linalg.lstsq(XU, M, driver="gelsd").solution


@pytest.mark.parametrize("duplicate", [True, False])
def test_unpenalized_reduction_equals_data_space_projection(duplicate, generator):
    from gnnaccel.pruning.lasso import UnpenalizedReduction

    X, y, p, U, R = _unpenalized_problem(generator, duplicate=duplicate)
    n = X.shape[0]
    G, q, y_sq = X.T @ X / n, X.T @ y / n, y @ y / n
    red = UnpenalizedReduction(G, q, p, y_sq)
    assert red.factor == ("pinv" if duplicate else "cholesky")
    XUf = X[:, U]
    XR_t, y_t = _project_out(XUf, X[:, R]), _project_out(XUf, y.unsqueeze(1)).flatten()
    scale = float(G.diagonal().max())
    torch.testing.assert_close(red.G, XR_t.T @ XR_t / n, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(red.q, XR_t.T @ y_t / n, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(red.y_sq, y_t @ y_t / n, rtol=0, atol=1e-10 * float(y_sq))
    assert torch.equal(red.kept, R)
    # the in-span and the dead penalised column are dead in the reduced problem
    dead_r = torch.nonzero(red.G.diagonal() == 0).flatten()
    assert dead_r.numel() == 2 and bool((red.G[dead_r] == 0).all()) and bool((red.q[dead_r] == 0).all())
    assert int(red.unpen.numel()) == U.numel() - 1  # the dead unpenalised column is not in U


@pytest.mark.parametrize("duplicate", [True, False])
def test_reduced_lasso_matches_full_penalty0_solve_and_sklearn(duplicate, generator):
    """At a fixed lambda: the reduced solve (+ recovered unpenalised block) equals the full solve with
    penalty 0 on U, and scikit-learn's Lasso on the projected data (penalty factors by column scaling)."""
    from sklearn.linear_model import Lasso

    from gnnaccel.pruning.lasso import UnpenalizedReduction

    for trial in range(3):
        X, y, p, U, R = _unpenalized_problem(generator, duplicate=duplicate)
        n = X.shape[0]
        G, q, y_sq = X.T @ X / n, X.T @ y / n, y @ y / n
        red = UnpenalizedReduction(G, q, p, y_sq)
        lam = (0.05, 0.2, 0.6)[trial] * lambda_max(G, q, p)
        full, _, _ = lasso_cd(G, q, lam, penalty=p, y_sq=y_sq, tol=1e-13, max_sweeps=200_000)
        b_r, _, _ = lasso_cd(red.G, red.q, lam, penalty=red.penalty, y_sq=red.y_sq,
                             tol=1e-13 * float(y_sq / red.y_sq), max_sweeps=200_000)
        mine = red.full_beta(b_r)
        XR_t, y_t = _project_out(X[:, U], X[:, R]), _project_out(X[:, U], y.unsqueeze(1)).flatten()
        sk = Lasso(alpha=lam, fit_intercept=False, tol=1e-14, max_iter=1_000_000)
        sk.fit((XR_t / p[R]).numpy(), y_t.numpy())
        b_sk = torch.from_numpy(sk.coef_) / p[R]
        big = float(full.abs().max())
        torch.testing.assert_close(mine[R], full[R], rtol=0, atol=1e-6 * big)
        torch.testing.assert_close(mine[R], b_sk, rtol=0, atol=1e-6 * big)
        support = lambda b: torch.nonzero(b.abs() > 1e-6 * big).flatten()
        assert torch.equal(support(mine[R]), support(full[R])) and torch.equal(support(mine[R]), support(b_sk))
        assert support(mine[R]).numel() >= 1
        # unpenalised block: same fit as the full solve and as lstsq of the remaining residual
        fit_u = X[:, U] @ torch.linalg.lstsq(X[:, U], (y - X[:, R] @ mine[R]).unsqueeze(1),
                                             driver="gelsd").solution.flatten()
        ynorm = float(y.norm())
        torch.testing.assert_close(X[:, U] @ mine[U], X[:, U] @ full[U], rtol=0, atol=1e-6 * ynorm)
        torch.testing.assert_close(X[:, U] @ mine[U], fit_u, rtol=0, atol=1e-8 * ynorm)
        assert float(mine[U].norm()) <= float(full[U].norm()) * (1 + 1e-6)  # the minimum-norm b_U


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_channels_eliminated_equals_full_path(seed):
    """Branch layout with the self branch unpenalised and dead channels: the path on the reduced problem
    selects the same coordinates as the path carrying the unpenalised block (and the same beta)."""
    gen = torch.Generator().manual_seed(100 + seed)
    c = 40
    zs, ws = _layer(gen, n=600, c=c, widths=(8, 8), dead=(2, 11))
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / 600
    G, q, y_sq = gram_from_moments(S, ws, layout="branch")
    p = branch_penalty(c, 2, unpenalized=(0,))
    for k in (1, 4, 13, 30, 38, 40):
        a, ia = select_channels(G, q, k, penalty=p, y_sq=y_sq, tol=1e-9, return_info=True)
        b, ib = select_channels(G, q, k, penalty=p, y_sq=y_sq, tol=1e-9, return_info=True,
                                eliminate_unpenalized=False)
        assert torch.equal(a, b), (k, a, b)
        assert bool((a >= c).all()) and c + 2 not in a.tolist()[:k] or k > 38
        if k <= 30:
            # same lambda, and the recovered full beta is within the path's tolerance of the full problem's
            # optimum there (the duality gap of the full problem, from the dense float64 reference)
            assert ia["lam"] == pytest.approx(ib["lam"], rel=1e-9)
            gap = lasso_duality_gap(G, q, ia["lam"], ia["beta"], p, float(y_sq))
            assert float(gap) <= 1e-9 * float(y_sq) * (1 + 1e-6)
            fa = lasso_objective(G, q, ia["lam"], ia["beta"], p)
            fb = lasso_objective(G, q, ib["lam"], ib["beta"], p)
            assert abs(float(fa - fb)) <= 2e-9 * float(y_sq)


def test_select_with_unpenalized_block_edge_cases(generator):
    # target fully explained by the unpenalised block: nothing to select by the LASSO, the fill still
    # returns exactly k distinct penalised coordinates (never the dead ones first)
    X, y, p, U, R = _unpenalized_problem(generator, y_in_span=True)
    n = X.shape[0]
    G, q, y_sq = X.T @ X / n, X.T @ y / n, y @ y / n
    for k in (0, 3, 18):
        sel = select_channels(G, q, k, penalty=p, y_sq=y_sq)
        assert sel.numel() == k and bool((p[sel] > 0).all()) and torch.equal(sel, torch.unique(sel))
    # every unpenalised coordinate dead: the reduction is the problem on the penalised ones
    X, y, p, U, R = _unpenalized_problem(generator)
    X[:, U] = 0
    G, q, y_sq = X.T @ X / n, X.T @ y / n, y @ y / n
    sub = select_channels(G[R][:, R], q[R], 4, penalty=p[R], y_sq=y_sq)
    assert torch.equal(select_channels(G, q, 4, penalty=p, y_sq=y_sq), R[sub])
    # all coordinates unpenalised: only k = 0 is possible
    assert select_channels(G, q, 0, penalty=torch.zeros_like(p)).numel() == 0
    with pytest.raises(ValueError, match="k must be in"):
        select_channels(G, q, 1, penalty=torch.zeros_like(p))


@pytest.mark.parametrize("form", ["sum", "concat"])
def test_refit_with_cross_moment_matches_lstsq_on_other_inputs(form, generator):
    """Error-compensating refit: target from the original inputs Z0, regression on perturbed inputs Z
    (placed in the same frame, zero outside the kept channels), against an explicit lstsq."""
    widths = (5, 5) if form == "sum" else (4, 6)
    n, c = 150, 9
    z0, ws = _layer(generator, n=n, c=c, widths=widths, dead=(0,))
    placed, cols = _placed(ws, form)
    Y = sum(z @ w for z, w in zip(z0, placed))
    keeps = [torch.tensor([0, 2, 3, 7]), torch.tensor([1, 2, 5, 6, 8])]
    zp = []
    for b in range(2):
        z = torch.zeros(n, c, dtype=F64)
        z[:, keeps[b]] = z0[b][:, keeps[b]] + 0.3 * torch.randn(n, keeps[b].numel(), generator=generator, dtype=F64)
        zp.append(z)
    Zp, Z0 = torch.cat(zp, 1), torch.cat(z0, 1)
    S_new, T, S_old = Zp.T @ Zp / n, Zp.T @ Z0 / n, Z0.T @ Z0 / n
    new = refit(S_new, keeps, ws, form=form, ridge=0.0, cross=T)
    if form == "sum":
        A = torch.cat([zp[0][:, keeps[0]], zp[1][:, keeps[1]]], 1)
        sol = torch.linalg.lstsq(A, Y, driver="gelsd").solution
        expected = [sol[:4], sol[4:]]
    else:
        expected = [torch.linalg.lstsq(zp[b][:, keeps[b]], Y[:, cols[b]], driver="gelsd").solution for b in range(2)]
    for got, want in zip(new, expected):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    Y_new = torch.zeros_like(Y)
    for b in range(2):
        Y_new[:, cols[b]] += zp[b][:, keeps[b]] @ new[b]
    err = output_relative_error(S_old, ws, new, keeps, form=form, new_moment=S_new, cross=T)
    assert err == pytest.approx(float((Y - Y_new).norm() / Y.norm()), rel=1e-6)
    # cross = S is the local refit
    for a, b in zip(refit(S_new, keeps, ws, form=form, cross=S_new), refit(S_new, keeps, ws, form=form)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cross must be"):
        refit(S_new, keeps, ws, form=form, cross=T[:5])
    with pytest.raises(ValueError, match="cross contains NaN"):
        refit(S_new, keeps, ws, form=form, cross=torch.full_like(T, float("nan")))
    with pytest.raises(ValueError, match="go together"):
        output_relative_error(S_old, ws, new, keeps, form=form, cross=T)


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("with_cross", [False, True])
def test_choose_ridge_matches_explicit_cross_validation(form, with_cross, generator):
    from gnnaccel.pruning.refit import RIDGE_CANDIDATES, choose_ridge

    widths = (5, 5) if form == "sum" else (4, 6)
    n, c = 60, 9  # few rows for the kept regressors: the ridge matters
    z0, ws = _layer(generator, n=n, c=c, widths=widths, dead=(0,))
    placed, cols = _placed(ws, form)
    Y = sum(z @ w for z, w in zip(z0, placed))
    keeps = [torch.tensor([0, 1, 2, 3, 5, 7, 8]), torch.tensor([1, 2, 4, 5, 6, 8])]
    zp = z0
    if with_cross:
        zp = [z + 0.5 * torch.randn(n, c, generator=generator, dtype=F64) for z in z0]
    Zp = torch.cat([zp[b][:, keeps[b]] for b in range(2)], 1)  # kept regressors, materialised
    fold_idx = [torch.arange(f, n, 3) for f in range(3)]
    folds = []
    for idx in fold_idx:
        A, B0 = torch.cat(zp, 1)[idx], torch.cat(z0, 1)[idx]
        m = idx.numel()
        folds.append((m, A.T @ A / m, A.T @ B0 / m, B0.T @ B0 / m) if with_cross else (m, B0.T @ B0 / m))
    best, scores = choose_ridge(folds, keeps, ws, form=form)
    expected = {}
    for r in RIDGE_CANDIDATES:
        num = den = 0.0
        for f, idx in enumerate(fold_idx):
            rest = torch.cat([fold_idx[g] for g in range(3) if g != f])
            pred = torch.zeros(idx.numel(), Y.shape[1], dtype=F64)
            groups = [[0, 1]] if form == "sum" else [[0], [1]]
            for grp in groups:
                colsel = cols[grp[0]]
                sel = torch.cat([torch.arange(sum(keeps[b].numel() for b in range(g0)),
                                              sum(keeps[b].numel() for b in range(g0 + 1))) for g0 in grp])
                X = Zp[rest][:, sel]
                A = X.T @ X / rest.numel()
                A = A + r * float(A.diagonal().mean()) * torch.eye(A.shape[0], dtype=F64)
                W = torch.linalg.solve(A, X.T @ Y[rest][:, colsel] / rest.numel())
                pred[:, colsel] += Zp[idx][:, sel] @ W
            num += float(((Y[idx] - pred) ** 2).sum())
            den += float((Y[idx] ** 2).sum())
        expected[r] = (num / den) ** 0.5
    assert set(scores) == set(expected)
    for r in expected:
        assert scores[r] == pytest.approx(expected[r], rel=1e-7)
    assert best == min(expected, key=lambda r: (expected[r], r))
    with pytest.raises(ValueError, match="at least 2 folds"):
        choose_ridge(folds[:1], keeps, ws, form=form)
    with pytest.raises(ValueError, match="candidates"):
        choose_ridge(folds, keeps, ws, form=form, candidates=[-1.0])


@pytest.mark.parametrize("r", [1, 7, 1100])  # 1100: the blocked path (4 x 4 blocks, 10 products)
def test_symmetric_upper_update_equals_dense_product(r, generator):
    from gnnaccel.pruning._symmetric import add_upper_product_, mirror_upper_

    A = torch.randn(30, r, generator=generator, dtype=F64)
    M = torch.randn(r, r, generator=generator, dtype=F64)
    C0 = M + M.T
    C = C0.clone()
    add_upper_product_(C, A, A, alpha=-0.5)
    add_upper_product_(C, A, 2 * A)  # A' (2A) is symmetric too
    mirror_upper_(C)
    torch.testing.assert_close(C, C0 + 1.5 * A.T @ A, rtol=1e-12, atol=1e-10)
    assert torch.equal(C, C.T)


# What the default (bounded) swap search may lose against the exhaustive one (swap_tol=0) on small
# correlated layers: its refit objective is at most this factor above the exhaustive search's, and at most
# GLOBAL_FACTOR above the best selection found by trying every subset.
BOUNDED_SWAP_FACTOR = 1.02
GLOBAL_FACTOR = 1.10


@pytest.mark.parametrize("form", ["sum", "concat"])
@pytest.mark.parametrize("keep_whole", [None, 0])
def test_bounded_swap_search_against_exhaustive_and_global_optimum(form, keep_whole, generator):
    """The default swaps stop once the best exchange gains at most SWAP_STOP_RTOL of the objective: checked by
    explicit solves at the end point; the result is within BOUNDED_SWAP_FACTOR of the exhaustive search's
    objective and within GLOBAL_FACTOR of the best subset (brute force over all of them)."""
    import itertools

    from gnnaccel.pruning.greedy import SWAP_STOP_RTOL

    n, c = 150, 10
    widths = (5, 5) if form == "sum" else (4, 3)
    for _ in range(2):
        base = torch.randn(n, c // 2, generator=generator, dtype=F64)
        z0 = torch.cat([base, base + 0.3 * torch.randn(n, c // 2, generator=generator, dtype=F64)], 1)
        zs = [z0, 0.5 * z0 + torch.randn(n, c, generator=generator, dtype=F64)]
        ws = [torch.randn(c, w, generator=generator, dtype=F64) for w in widths]
        _, cols = _placed(ws, form)
        S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
        objective, units = _refit_objective(zs, ws, cols, None, keep_whole, 1e-6)
        bc = None if form == "sum" else cols
        for k in (3, 4):
            bounded = _units_of(select_greedy(S, ws, k, form, bc, keep_whole=keep_whole), keep_whole)
            exhaustive = _units_of(select_greedy(S, ws, k, form, bc, keep_whole=keep_whole, swap_tol=0,
                                                 max_swaps=100), keep_whole)
            value = objective(bounded)
            for i in range(k):
                for u in units:
                    if u not in bounded:
                        gain = value - objective(bounded[:i] + [u] + bounded[i + 1:])
                        assert gain <= SWAP_STOP_RTOL * value * (1 + 1e-6) + 1e-12, (k, bounded, u, gain / value)
            best = min(objective(list(s)) for s in itertools.combinations(units, k))
            assert value <= BOUNDED_SWAP_FACTOR * objective(exhaustive), (k, value, objective(exhaustive))
            assert value <= GLOBAL_FACTOR * best, (k, value, best)


def test_greedy_swaps_with_three_branch_units(generator):
    """Units of three coordinates (a three-branch layer in sum form, nb = 3: the stacked-block path of the swap
    scores): the exhaustive swap search ends where no single exchange improves the explicit objective."""
    n, c, k = 150, 8, 3
    base = torch.randn(n, c, generator=generator, dtype=F64)
    zs = [base, base + torch.randn(n, c, generator=generator, dtype=F64),
          torch.randn(n, c, generator=generator, dtype=F64)]
    ws = [torch.randn(c, 4, generator=generator, dtype=F64) for _ in range(3)]
    S = torch.cat(zs, 1).T @ torch.cat(zs, 1) / n
    objective, units = _refit_objective(zs, ws, [torch.arange(4)] * 3, None, None, 1e-6)
    got = select_greedy(S, ws, k, swap_tol=0, max_swaps=100)
    assert all(torch.equal(got[0], kb) for kb in got)
    swapped = got[0].tolist()
    value = objective(swapped)
    assert value <= objective(select_greedy(S, ws, k, max_swaps=0)[0].tolist()) * (1 + 1e-9)
    for i in range(k):
        for u in units:
            if u not in swapped:
                assert objective(swapped[:i] + [u] + swapped[i + 1:]) >= value * (1 - 1e-7)
