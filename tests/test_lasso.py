"""gnnaccel::lasso_cd against scikit-learn's Lasso (Gram form), a profiled reference for unpenalised
coordinates, and the pure-torch reference; warm starts, dead coordinates, opcheck, compile, bad inputs."""
import numpy as np
import pytest
import torch

from gnnaccel._library import has_kernel
from gnnaccel.ops import lasso_cd, lasso_select
from gnnaccel.ops.lasso import lasso_cd_reference, lasso_duality_gap, lasso_objective

sklearn_lm = pytest.importorskip("sklearn.linear_model")

# The parity tests run on both solvers: the CPU one everywhere, the CUDA one in the GPU check (`make gpu-check`
# runs every gpu-marked test). Inputs are built on the CPU and moved; results are compared on the CPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _on(device, *tensors):
    return [None if t is None else t.to(device) for t in tensors]


def _cpu(out):
    return tuple(t.cpu() for t in out)


def _data(generator, n=120, c=30, dead=(), correlated=True):
    X = torch.randn(n, c, generator=generator, dtype=torch.float64)
    if correlated:  # neighbouring columns correlate, as channels of real activations do
        X[:, 1:] += 0.5 * X[:, :-1].clone()
    for j in dead:
        X[:, j] = 0
    true = torch.zeros(c, dtype=torch.float64)
    true[: c // 4] = torch.randn(c // 4, generator=generator, dtype=torch.float64)
    y = X @ true + 0.3 * torch.randn(n, generator=generator, dtype=torch.float64)
    return X, y


def _gram(X, y):
    n = X.shape[0]
    return X.T @ X / n, X.T @ y / n, float(y @ y / n)


def _sklearn(X, y, alpha):
    model = sklearn_lm.Lasso(alpha=alpha, fit_intercept=False, precompute=True, tol=1e-14, max_iter=200_000)
    model.fit(X.numpy(), y.numpy())
    return torch.from_numpy(model.coef_.copy())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha_frac", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("dead", [(), (0, 7)])
def test_matches_sklearn(alpha_frac, dead, device, generator):
    X, y = _data(generator, dead=dead)
    G, q, y_sq = _gram(X, y)
    alpha = alpha_frac * float(q.abs().max())
    expected = _sklearn(X, y, alpha)
    beta, gap, sweeps = _cpu(lasso_cd(*_on(device, G, q), alpha, y_sq=y_sq, tol=1e-14, max_sweeps=100_000))
    torch.testing.assert_close(beta, expected, rtol=0, atol=1e-5)
    assert torch.equal(beta != 0, expected != 0)
    assert float(gap) <= 1e-14 * y_sq and int(sweeps) >= 1
    for j in dead:
        assert beta[j] == 0


@pytest.mark.parametrize("device", DEVICES)
def test_warm_start_reaches_the_same_solution(device, generator):
    X, y = _data(generator, dead=(3,))
    G, q, y_sq = _gram(X, y)
    alpha = 0.05 * float(q.abs().max())
    expected = _sklearn(X, y, alpha)
    G, q = _on(device, G, q)
    for beta0 in (_sklearn(X, y, 4 * alpha), torch.randn(G.shape[0], generator=generator, dtype=torch.float64)):
        beta, gap, _ = _cpu(lasso_cd(G, q, alpha, beta0=beta0.to(device), y_sq=y_sq, tol=1e-14, max_sweeps=100_000))
        torch.testing.assert_close(beta, expected, rtol=0, atol=1e-5)
        assert beta[3] == 0  # a non-zero warm start on a dead coordinate is dropped
    # Warm start at the optimum: no pass is needed.
    beta, gap, sweeps = _cpu(lasso_cd(G, q, alpha, beta0=beta.to(device), y_sq=y_sq, tol=1e-10))
    assert int(sweeps) == 0 and float(gap) <= 1e-10 * y_sq


@pytest.mark.parametrize("device", DEVICES)
def test_penalty_factors_match_profiled_sklearn(device, generator):
    """Unpenalised coordinates U and weighted penalties P, checked against sklearn on the problem with U
    profiled out (project X_P and y off span(X_U)) and columns rescaled by 1/p_i."""
    X, y = _data(generator, n=150, c=24, dead=(20,))
    c = X.shape[1]
    p = 0.5 + torch.rand(c, generator=generator, dtype=torch.float64)
    U = torch.tensor([1, 4, 9, 13])
    p[U] = 0
    P = torch.tensor([i for i in range(c) if i not in U.tolist()])
    G, q, y_sq = _gram(X, y)
    alpha = 0.1 * float((q[P].abs() / p[P]).max())
    beta, gap, _ = _cpu(lasso_cd(*_on(device, G, q), alpha, penalty=p.to(device), y_sq=y_sq, tol=1e-14,
                                 max_sweeps=100_000))

    XU = X[:, U]
    proj = XU @ torch.linalg.pinv(XU)
    XP = (X[:, P] - proj @ X[:, P]) / p[P]
    yP = y - proj @ y
    bP = _sklearn(XP, yP, alpha) / p[P]
    bU = torch.linalg.lstsq(XU, (y - X[:, P] @ bP).unsqueeze(1)).solution.flatten()
    torch.testing.assert_close(beta[P], bP, rtol=0, atol=1e-5)
    torch.testing.assert_close(beta[U], bU, rtol=0, atol=1e-5)
    assert torch.equal(beta[P] != 0, bP != 0)
    assert float(gap) <= 1e-14 * y_sq


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_unpenalized", [False, True])
def test_matches_torch_reference_and_gap_bounds_suboptimality(with_unpenalized, device, generator):
    X, y = _data(generator, n=80, c=40, dead=(5,))
    G, q, _ = _gram(X, y)
    p = torch.rand(40, generator=generator, dtype=torch.float64) + 0.2
    if with_unpenalized:
        p[[0, 2, 30]] = 0
    G = G.float().double()  # exact float32 values, so the float32 call below sees the same problem
    q = q.float().double()
    lam = 0.05 * float(q.abs().max())
    ref, ref_gap, _ = lasso_cd_reference(G, q, lam, penalty=p, tol=1e-13)
    Gd, qd, pd = _on(device, G, q, p)
    beta, gap, _ = _cpu(lasso_cd(Gd, qd, lam, penalty=pd, tol=1e-13, max_sweeps=100_000))
    torch.testing.assert_close(beta, ref, rtol=0, atol=1e-6)
    # The reported gap bounds the suboptimality of a loose solve, and matches the dense formula.
    loose, loose_gap, _ = _cpu(lasso_cd(Gd, qd, lam, penalty=pd, tol=1e-3, max_sweeps=100_000))
    excess = float(lasso_objective(G, q, lam, loose, p) - lasso_objective(G, q, lam, ref, p))
    assert -1e-12 <= excess <= float(loose_gap) + 1e-12
    torch.testing.assert_close(loose_gap, lasso_duality_gap(G, q, lam, loose, p), rtol=1e-6, atol=1e-12)
    # float32 inputs: solved in float64, returned in float32.
    b32, g32, _ = _cpu(lasso_cd(Gd.float(), qd.float(), lam, penalty=pd.float(), tol=1e-13, max_sweeps=100_000))
    assert b32.dtype == torch.float32 and g32.dtype == torch.float32
    torch.testing.assert_close(b32.double(), ref, rtol=0, atol=1e-6)


def test_max_sweeps_zero_and_all_dead():
    G = torch.diag(torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64))
    q = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    beta, gap, sweeps = lasso_cd(G, q, 0.1, beta0=torch.tensor([5.0, 0.0, 1.0], dtype=torch.float64), max_sweeps=0)
    assert torch.equal(beta, torch.zeros(3, dtype=torch.float64)) and int(sweeps) == 0
    beta, gap, sweeps = lasso_cd(G, q, 0.1, tol=1e-12)
    torch.testing.assert_close(beta, torch.tensor([0.0, 0.45, 0.0], dtype=torch.float64))  # soft(1, .1) / 2
    zero = torch.zeros(4, 4, dtype=torch.float64)
    beta, gap, sweeps = lasso_cd(zero, torch.zeros(4, dtype=torch.float64), 1.0, y_sq=0.0)
    assert torch.equal(beta, torch.zeros(4, dtype=torch.float64)) and float(gap) == 0


def _opcheck_problem(generator):
    """The small problem the opcheck samples of both LASSO ops use: 12 channels, one dead (index 2), and a
    penalty that leaves coordinate 0 unpenalised. Returns G, q, y_sq (a float64 0-d tensor), penalty."""
    X, y = _data(generator, n=40, c=12, dead=(2,))
    G, q, y_sq = _gram(X, y)
    p = torch.ones(12, dtype=torch.float64)
    p[0] = 0
    return G, q, torch.tensor(y_sq, dtype=torch.float64), p


def _opcheck_samples(generator):
    G, q, y_sq, p = _opcheck_problem(generator)
    lam = torch.tensor(0.05 * float(q.abs().max()), dtype=torch.float64)
    yield (G, q, lam, torch.zeros(12, dtype=torch.float64), None, y_sq, None, 1e-10, 1000)
    yield (G.float(), q.float(), lam.float(), torch.ones(12), p.float(), y_sq.float(), None, 1e-8, 50)


def test_opcheck(generator):
    for args in _opcheck_samples(generator):
        torch.library.opcheck(torch.ops.gnnaccel.lasso_cd.default, args)


def test_torch_compile_fullgraph(generator):
    X, y = _data(generator, n=60, c=16)
    G, q, _ = _gram(X, y)

    def shrink_then_solve(G, q, lam):
        beta, gap, sweeps = lasso_cd(G, q, lam, tol=1e-12)
        return beta * 2, gap, sweeps + 1

    compiled = torch.compile(shrink_then_solve, fullgraph=True)
    lam = torch.tensor(0.1 * float(q.abs().max()), dtype=torch.float64)
    for got, want in zip(compiled(G, q, lam), shrink_then_solve(G, q, lam)):
        torch.testing.assert_close(got, want)


@pytest.mark.gpu
def test_cuda_matches_cpu(generator):
    assert has_kernel("lasso_cd", "CUDA")
    X, y = _data(generator, n=300, c=200, dead=(4, 77))
    G, q, y_sq = _gram(X, y)
    p = torch.ones(200, dtype=torch.float64)
    p[:30] = 0
    for penalty in (None, p):
        lam = 0.05 * float(q.abs().max())
        cpu = lasso_cd(G, q, lam, penalty=penalty, y_sq=y_sq, tol=1e-12, max_sweeps=100_000)
        gpu = lasso_cd(G.cuda(), q.cuda(), lam, penalty=None if penalty is None else penalty.cuda(), y_sq=y_sq,
                       tol=1e-12, max_sweeps=100_000)
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=0, atol=1e-8)
        assert float(gpu[1]) <= 1e-12 * y_sq


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    G = torch.eye(3, dtype=torch.float64)
    q = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        lasso_cd(torch.ones(3, 4, dtype=torch.float64), q, 0.1)
    with pytest.raises(ValueError, match="q must have shape"):
        lasso_cd(G, torch.ones(4, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        lasso_cd(G, q, -1.0)
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        lasso_cd(G, q, torch.tensor(-1.0))
    with pytest.raises(ValueError, match="beta0"):
        lasso_cd(G, q, 0.1, beta0=torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="penalty"):
        lasso_cd(G, q, 0.1, penalty=torch.ones(5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point"):
        lasso_cd(G.long(), q, 0.1)
    bad = G.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="G contains NaN"):
        lasso_cd(bad, q, 0.1)
    with pytest.raises(ValueError, match="q contains NaN"):
        lasso_cd(G, torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="penalty factors must be finite and >= 0"):
        lasso_cd(G, q, 0.1, penalty=torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="unpenalized_pinv must be"):
        lasso_cd(G, q, 0.1, penalty=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64),
                 unpenalized_pinv=torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_sweeps"):
        lasso_cd(G, q, 0.1, max_sweeps=-1)


# ------------------------------------------------------------------------------------------ lasso_select
def _top_k_reference(beta, grad, p, alive, k):
    """The selection rule, written out: penalised alive coordinates by |beta|, then by |grad| / p, then alive
    before dead, then lower index; the first k, sorted."""
    c = beta.numel()
    pen_alive = alive & (p > 0)
    keys = sorted((i for i in range(c) if p[i] > 0),
                  key=lambda i: (-(abs(float(beta[i])) if pen_alive[i] else 0.0),
                                 -(abs(float(grad[i])) / float(p[i]) if pen_alive[i] else 0.0), -int(alive[i]), i))
    return torch.tensor(sorted(keys[:k]), dtype=torch.long)


def _check_selection(G, q, k, p, y_sq, tol, out):
    """What lasso_select promises, checked with the dense float64 reference: beta is the LASSO solution at the
    returned lambda (gap within tol), nnz counts its non-zero penalised alive coordinates, and chosen is the
    top-k rule applied to it."""
    chosen, beta, lam, nnz, solves, sweeps = out
    c = G.shape[0]
    p = torch.ones(c, dtype=torch.float64) if p is None else p
    alive = G.diagonal() > 0
    assert chosen.dtype == torch.long and chosen.shape == (k,) and torch.equal(chosen, torch.unique(chosen))
    assert bool((p[chosen] > 0).all())
    gap = lasso_duality_gap(G, q, float(lam), beta, p, y_sq)
    assert float(gap) <= tol * y_sq * (1 + 1e-6) + 1e-12
    nonzero = (beta != 0) & alive & (p > 0)
    assert int(nnz) == int(nonzero.sum())
    grad = q - G @ beta
    assert torch.equal(chosen, _top_k_reference(beta, grad, p, alive, k))
    return int(nnz)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [1, 7, 40, 120])
def test_select_solution_is_optimal_and_ranked(seed, c, device):
    gen = torch.Generator().manual_seed(seed)
    X, y = _data(gen, n=3 * c + 10, c=c, dead=(c // 3,) if c > 3 else ())
    G, q, y_sq = _gram(X, y)
    alive = int((G.diagonal() > 0).sum())
    for k in sorted({0, 1, c // 4, c // 2, alive}):
        out = _cpu(lasso_select(*_on(device, G, q), k, y_sq=y_sq, tol=1e-9))
        nnz = _check_selection(G, q, k, None, y_sq, 1e-9, out)
        if 0 < k:
            assert nnz >= k  # full column rank here: the path reaches k
        # the bracket: lambda 0.2% higher is already on the other side (fewer than k), unless exactly k
        if 0 < k < alive and nnz > k:
            above, _, _ = lasso_cd(*_on(device, G, q), float(out[2]) * 1.002, y_sq=y_sq, tol=1e-12,
                                   max_sweeps=100_000)
            assert int((above.cpu() != 0).sum()) < nnz


@pytest.mark.parametrize("device", DEVICES)
def test_select_matches_sklearn_path_support(device):
    """The k-support at the first lambda with >= k non-zeros of scikit-learn's own path (fine grid)."""
    gen = torch.Generator().manual_seed(7)
    X, y = _data(gen, n=400, c=60, correlated=True)
    G, q, y_sq = _gram(X, y)
    for k in (3, 10, 25):
        chosen, beta, lam, nnz, _, _ = _cpu(lasso_select(*_on(device, G, q), k, y_sq=y_sq, tol=1e-12))
        alphas = np.geomspace(float(q.abs().max()), float(lam) * 0.9, 400)
        _, coefs, _ = sklearn_lm.lasso_path(X.numpy(), y.numpy(), alphas=alphas, precompute=(X.T @ X).numpy(),
                                            Xy=(X.T @ y).numpy(), tol=1e-12, max_iter=100_000)
        first = int(np.argmax((coefs != 0).sum(0) >= k))
        top = np.sort(np.argsort(-np.abs(coefs[:, first]), kind="stable")[:k])
        assert chosen.tolist() == top.tolist()


@pytest.mark.parametrize("device", DEVICES)
def test_select_with_unpenalized_and_dead_coordinates(device, generator):
    X, y = _data(generator, n=200, c=30, dead=(3, 20))
    G, q, y_sq = _gram(X, y)
    p = torch.ones(30, dtype=torch.float64)
    p[:8] = 0  # includes dead coordinate 3
    Gd, qd, pd = _on(device, G, q, p)
    for k in (0, 1, 5, 20, 22):
        out = _cpu(lasso_select(Gd, qd, k, pd, y_sq, tol=1e-10))
        _check_selection(G, q, k, p, y_sq, 1e-10, out)
        beta = out[1]
        # the unpenalised alive coordinates are at their optimum given the rest: g_U = 0
        grad = q - G @ beta
        U = torch.nonzero((p == 0) & (G.diagonal() > 0)).flatten()
        assert float(grad[U].abs().max()) <= 1e-6 * float(q.abs().max())
    # k = 22 penalised = all: the alive ones by |beta| / |grad|, the dead one (20) last
    chosen = lasso_select(Gd, qd, 22, pd, y_sq)[0].cpu()
    assert chosen.tolist() == list(range(8, 30))


def test_select_rank_deficient_and_degenerate_problems():
    # rank 3 in 10 coordinates: the path stalls at <= 3 non-zeros, the rest is filled by |gradient|, then index
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    X = B @ torch.randn(3, 10, generator=gen, dtype=torch.float64)
    y = X[:, 0] - X[:, 4]
    G, q, y_sq = _gram(X, y)
    out = lasso_select(G, q, 8, y_sq=y_sq, tol=1e-10, lambda_min_ratio=1e-4)
    _check_selection(G, q, 8, None, y_sq, 1e-10, out)
    # q = 0: lambda_max = 0, no solve, chosen by index among equals
    out = lasso_select(G, torch.zeros(10, dtype=torch.float64), 4, y_sq=1.0)
    assert out[0].tolist() == [0, 1, 2, 3] and int(out[4]) == 0 and float(out[2]) == 0.0
    # all dead
    out = lasso_select(torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), 2, y_sq=0.0)
    assert out[0].tolist() == [0, 1] and int(out[3]) == 0
    # empty problem
    out = lasso_select(torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), 0, y_sq=0.0)
    assert out[0].numel() == 0 and out[1].numel() == 0
    # float32 in: solved in float64, beta and lambda back in float32
    X, y = _data(gen, n=50, c=12)
    G, q, y_sq = _gram(X, y)
    out32 = lasso_select(G.float(), q.float(), 4, y_sq=y_sq, tol=1e-9)
    out64 = lasso_select(G.float().double(), q.float().double(), 4, y_sq=y_sq, tol=1e-9)
    assert out32[1].dtype == torch.float32 and out32[2].dtype == torch.float32
    assert torch.equal(out32[0], out64[0])


def _select_opcheck_samples(generator):
    G, q, y_sq, p = _opcheck_problem(generator)
    yield (G, q, 4, None, y_sq, None, 1e-10, 0.6, 30, 1000, 1e-7)
    yield (G.float(), q.float(), 3, p.float(), y_sq.float(), None, 1e-8, 0.5, 5, 100, 1e-5)


def test_select_opcheck(generator):
    for args in _select_opcheck_samples(generator):
        torch.library.opcheck(torch.ops.gnnaccel.lasso_select.default, args)


def test_select_torch_compile_fullgraph(generator):
    X, y = _data(generator, n=60, c=16)
    G, q, y_sq = _gram(X, y)

    def select_then_gather(G, q):
        chosen, beta, lam, nnz, solves, sweeps = lasso_select(G, q, 5, y_sq=y_sq, tol=1e-10)
        return G[chosen][:, chosen], beta[chosen], lam, nnz + 0

    compiled = torch.compile(select_then_gather, fullgraph=True)
    for got, want in zip(compiled(G, q), select_then_gather(G, q)):
        torch.testing.assert_close(got, want)


def test_select_bad_inputs_raise_clear_errors():
    G = torch.eye(4, dtype=torch.float64)
    q = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        lasso_select(G, q, 5)
    with pytest.raises(ValueError, match=r"k must be in \[0, 3\]"):
        lasso_select(G, q, 4, penalty=torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="k must be an int"):
        lasso_select(G, q, 2.0)
    with pytest.raises(ValueError, match="symmetric"):
        lasso_select(G + torch.triu(torch.ones_like(G), 1), q, 2)
    bad = G.clone()
    bad[2, 2] = float("inf")
    with pytest.raises(ValueError, match="lasso_select: G contains NaN or Inf"):
        lasso_select(bad, q, 2)
    with pytest.raises(ValueError, match="lasso_select: q contains NaN"):
        lasso_select(G, torch.full((4,), float("nan"), dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="penalty factors"):
        lasso_select(G, q, 2, penalty=-torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="path_ratio"):
        lasso_select(G, q, 2, path_ratio=1.0)
    with pytest.raises(ValueError, match="lambda_min_ratio"):  # 0 would let a rank-deficient path run forever
        lasso_select(G, q, 2, lambda_min_ratio=0.0)
    with pytest.raises(ValueError, match="y_sq must be finite"):
        lasso_select(G, q, 2, y_sq=float("nan"))
    with pytest.raises(RuntimeError, match="G must be square"):
        lasso_select(torch.ones(3, 4, dtype=torch.float64), q, 2)
    with pytest.raises(TypeError, match="floating point"):
        lasso_select(G.long(), q, 2)


@pytest.mark.gpu
def test_select_cuda_matches_cpu(generator):
    assert has_kernel("lasso_select", "CUDA")
    X, y = _data(generator, n=300, c=200, dead=(4, 77))
    G, q, y_sq = _gram(X, y)
    p = torch.ones(200, dtype=torch.float64)
    p[:30] = 0
    for penalty in (None, p):
        cpu = lasso_select(G, q, 40, penalty, y_sq, tol=1e-12)
        gpu = lasso_select(G.cuda(), q.cuda(), 40, None if penalty is None else penalty.cuda(), y_sq, tol=1e-12)
        assert torch.equal(gpu[0].cpu(), cpu[0])
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=0, atol=1e-8)


# ------------------------------------------------------------------- the contract on G (issue 13, item 7)
# G must be symmetric positive semi-definite (up to the rounding of its dtype). Both ops share one check
# (csrc/ops/lasso_cd_common.h): O(c^2) at entry (symmetry, diagonal, 2 x 2 minors), and in the solvers a pass
# with negative curvature or a negative duality gap raises.
def _indefinite_problems(gen):
    """(name, G, q) of problems whose G is not PSD, each caught by a different part of the check."""
    yield "2x2 minor", torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64), torch.tensor([1.0, 0.5])
    a = 0.6  # (1 + a) I - a J in 3 coordinates: every 2 x 2 minor > 0, eigenvalue 1 - 2a < 0 along ones
    G3 = (1 + a) * torch.eye(3, dtype=torch.float64) - a * torch.ones(3, 3, dtype=torch.float64)
    yield "3x3 curvature", G3, torch.ones(3, dtype=torch.float64)
    neg = torch.eye(4, dtype=torch.float64)
    neg[2, 2] = -0.5
    yield "negative diagonal", neg, torch.ones(4, dtype=torch.float64)
    dead = torch.eye(4, dtype=torch.float64)
    dead[1, 1] = 0.0
    dead[1, 3] = dead[3, 1] = 0.2  # a "dead" coordinate (G_ii = 0) whose row is not zero
    yield "dead row", dead, torch.ones(4, dtype=torch.float64)
    # a genuine Gram shifted to a negative smallest eigenvalue (fresh random)
    X, y = _data(gen, n=200, c=25)
    G, q, _ = _gram(X, y)
    ev = torch.linalg.eigvalsh(G)
    yield "shifted Gram", G - (ev[0] + 0.05 * ev[-1]) * torch.eye(25, dtype=torch.float64), q


@pytest.mark.parametrize("device", DEVICES)
def test_indefinite_G_raises_in_both_ops(device, generator):
    for name, G, q in _indefinite_problems(generator):
        G, q = _on(device, G, q.double())
        y_sq = 10.0 * float(q.abs().sum()) + 1.0  # large: the gap is not negative because y_sq is too small
        lam = 0.01 * float(q.abs().max())
        with pytest.raises(ValueError, match="positive semi-definite"):
            lasso_cd(G, q, lam, y_sq=y_sq, max_sweeps=10_000)
        with pytest.raises(ValueError, match="positive semi-definite"):
            lasso_select(G, q, min(2, G.shape[0] - 1), y_sq=y_sq)


@pytest.mark.parametrize("device", DEVICES)
def test_check_psd_false_skips_only_the_factorisation(device, generator):
    """check_psd=False (for a G that is PSD by construction) keeps the O(c^2) checks and the solver's."""
    problems = {name: (G, q.double()) for name, G, q in _indefinite_problems(generator)}
    for name, match in (("2x2 minor", "2 x 2"), ("negative diagonal", "is negative"), ("dead row", "2 x 2"),
                        ("3x3 curvature", "negative curvature|duality gap came out negative")):
        G, q = _on(device, *problems[name])
        with pytest.raises(ValueError, match=match):
            lasso_cd(G, q, 0.01, y_sq=100.0, check_psd=False)
        with pytest.raises(ValueError, match=match):
            lasso_select(G, q, 2, y_sq=100.0, check_psd=False)
    G, q = _on(device, *problems["shifted Gram"])  # what only the factorisation sees: caught by default
    with pytest.raises(ValueError, match="Cholesky"):
        lasso_select(G, q, 2, y_sq=1e3)
    X, y = _data(generator, n=100, c=20)  # a valid problem: same answer either way
    G, q, y_sq = _gram(X, y)
    a = lasso_select(*_on(device, G, q), 5, y_sq=y_sq, tol=1e-10)
    b = lasso_select(*_on(device, G, q), 5, y_sq=y_sq, tol=1e-10, check_psd=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("device", DEVICES)
def test_negative_gap_is_an_error_not_a_result(device, generator):
    """A y_sq below q' pinv(G) q is no ||y||^2 of a target with X'y = q: the gap would come out negative."""
    X, y = _data(generator, n=100, c=12)
    G, q, y_sq = _gram(X, y)
    too_small = 0.5 * float(q @ torch.linalg.solve(G, q))
    with pytest.raises(ValueError, match="duality gap came out negative"):
        lasso_cd(*_on(device, G, q), 0.01 * float(q.abs().max()), y_sq=too_small)


@pytest.mark.parametrize("device", DEVICES)
def test_non_symmetric_G_raises_in_both_ops(device, generator):
    G = torch.eye(3, dtype=torch.float64)
    G[0, 1] = 0.5
    q = torch.ones(3, dtype=torch.float64)
    for op in (lambda G, q: lasso_cd(G, q, 0.1), lambda G, q: lasso_select(G, q, 2)):
        with pytest.raises(ValueError, match="G must be symmetric"):
            op(*_on(device, G, q))
    # every pair is checked, not a sample of rows: one asymmetric pair anywhere in a 300 x 300 Gram
    X, y = _data(generator, n=400, c=300)
    G, q, y_sq = _gram(X, y)
    G[130, 210] += 1e-4 * float(G.diagonal().max())
    for op in (lambda G, q: lasso_cd(G, q, 0.1, y_sq=y_sq), lambda G, q: lasso_select(G, q, 20, y_sq=y_sq)):
        with pytest.raises(ValueError, match="G must be symmetric"):
            op(*_on(device, G, q))


@pytest.mark.parametrize("device", DEVICES)
def test_singular_psd_grams_are_accepted(device, generator):
    """Rounding must not trip the check: rank-deficient Grams with duplicated and nearly collinear channels,
    formed in float32, and exactly-zero dead channels, solve without error and agree with float64."""
    X, _ = _data(generator, n=60, c=40)  # n < c + extra columns: rank deficient
    X[:, 5] = X[:, 2]
    X[:, 7] = 2 * X[:, 3]
    X[:, 9] = X[:, 4] + 1e-4 * X[:, 8]
    X[:, 11] = 0
    y = X[:, :6].sum(1)
    X32 = X.float()
    G32, q32 = X32.T @ X32 / 60, X32.T @ y.float() / 60
    y_sq = float(y @ y / 60)
    lam = 0.01 * float(q32.abs().max())
    # (float32 G and q against a float64 y_sq: the gap stalls at float32 rounding; the objective is checked below)
    beta, gap, _ = _cpu(lasso_cd(*_on(device, G32, q32), lam, y_sq=y_sq, tol=1e-7, max_sweeps=5_000))
    assert 0 <= float(gap) <= 1e-5 * y_sq and beta[11] == 0
    chosen = lasso_select(*_on(device, G32, q32), 10, y_sq=y_sq, tol=1e-8)[0]
    assert chosen.numel() == 10
    G64, q64, _ = _gram(X, y)
    beta64, _, _ = _cpu(lasso_cd(*_on(device, G64, q64), lam, y_sq=y_sq, tol=1e-12, max_sweeps=100_000))
    obj = lambda b: float(lasso_objective(G64, q64, lam, b))  # noqa: E731
    assert obj(beta) - obj(beta64) <= 1e-4 * y_sq
