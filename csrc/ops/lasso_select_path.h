// The lambda path of gnnaccel::lasso_select (see lasso_select.cpp), shared by the CPU and CUDA kernels: it
// runs on the host and calls a device solver once per lambda, so the whole path is one op call.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lasso_cd_common.h"

namespace gnnaccel {

// A solution on the path: beta, its gradient g = q - G beta, lambda and the number of non-zero penalised
// alive coordinates.
struct PathPoint {
  std::vector<double> b, g;
  double lam = 0;
  int64_t nnz = 0;
};

struct PathSettings {
  int64_t k;
  double path_ratio;
  int64_t max_bisections;
  double lambda_min_ratio;
};

struct PathOutcome {
  PathPoint chosen;  // the first solution with >= k non-zeros (exactly k when the bisection lands on it)
  int64_t solves = 0, sweeps = 0;
};

// Host copies of what the path needs per coordinate: penalty factor and whether it is alive (G_ii > 0).
struct PathCoordinates {
  std::vector<double> p;
  std::vector<char> alive;
  bool penalised_alive(int64_t i) const { return alive[i] && p[i] > 0; }
  int64_t count_nonzero(const std::vector<double>& b) const {
    int64_t n = 0;
    for (size_t i = 0; i < b.size(); ++i) n += (b[i] != 0 && penalised_alive(i)) ? 1 : 0;
    return n;
  }
};

// Relative width of the final lambda bracket: below it, the first point with >= k non-zeros is taken as is
// (its extra coordinates entered within 0.1% of lambda, so their |beta| is the smallest and they rank last).
// Without it, two coordinates entering at nearly the same lambda keep the bracket closing for ~20 solves.
constexpr double kLambdaBracketRtol = 1e-3;

// The log-lambda at which a line through (x0, n0) and (x1, n1) (non-zero counts at log lambdas) reaches
// `target`; nnz(lambda) is close to linear in log lambda over short spans of the path.
inline double interpolate_log_lambda(double x0, double n0, double x1, double n1, double target) {
  return x0 + (target - n0) * (x1 - x0) / (n1 - n0);
}

// Walk lambda down from lambda_max (the start point: the unpenalised optimum) until >= k non-zeros, then
// narrow the bracket between the last point with fewer and the first with at least k non-zeros, stopping at
// exactly k, when the bracket is narrower than kLambdaBracketRtol, or after max_bisections. The descent steps
// by path_ratio, or less once two points predict where k is reached (aiming just past it: an overshoot solves
// a bigger problem than the answer); the bracket steps are regula falsi in log lambda with every other step a
// plain bisection (the guard against slow one-sided convergence). Every solve warm-starts from the last point
// with fewer than k non-zeros. `solve(lam, from, out)` fills out.b / out.g and returns its sweeps.
template <class Solve>
PathOutcome walk_lasso_path(Solve&& solve, PathPoint start, const PathCoordinates& coords, const PathSettings& s) {
  const int64_t c = static_cast<int64_t>(start.b.size());
  double lam_top = 0;
  for (int64_t i = 0; i < c; ++i)
    if (coords.penalised_alive(i)) lam_top = std::max(lam_top, std::abs(start.g[i]) / coords.p[i]);
  start.lam = lam_top;
  start.nnz = coords.count_nonzero(start.b);
  PathOutcome out;
  if (s.k == 0 || !(lam_top > 0)) {
    out.chosen = std::move(start);
    return out;
  }
  auto run = [&](double lam, const PathPoint& from) {
    PathPoint next;
    next.lam = lam;
    out.sweeps += solve(lam, from, next);
    ++out.solves;
    next.nnz = coords.count_nonzero(next.b);
    return next;
  };
  const double target = static_cast<double>(s.k);
  PathPoint hi = std::move(start), lo;
  bool found = false, have_prev = false;
  double prev_x = 0, prev_n = 0;
  while (true) {  // descent until >= k non-zeros
    const double x = std::log(hi.lam);
    double next_x = x + std::log(s.path_ratio);
    if (have_prev && hi.nnz > prev_n)  // aim 2% past k; a step of at least 1% and at most path_ratio
      next_x = std::min(std::max(next_x, interpolate_log_lambda(prev_x, prev_n, x, hi.nnz, target * 1.02 + 1)),
                        x + std::log(0.99));
    prev_x = x;
    prev_n = static_cast<double>(hi.nnz);
    have_prev = true;
    PathPoint next = run(std::exp(next_x), hi);
    if (next.nnz >= s.k) {
      lo = std::move(next);
      found = true;
      break;
    }
    hi = std::move(next);
    if (hi.lam < s.lambda_min_ratio * lam_top) break;
  }
  if (!found) {  // rank of G below k: the caller fills the rest by gradient
    out.chosen = std::move(hi);
    return out;
  }
  for (int64_t it = 0; it < s.max_bisections; ++it) {
    if (lo.nnz == s.k || hi.lam / lo.lam < 1 + kLambdaBracketRtol) break;
    const double x_hi = std::log(hi.lam), x_lo = std::log(lo.lam);
    double x = 0.5 * (x_hi + x_lo);
    if (it % 2 == 0) {  // regula falsi, kept 10% inside the bracket
      const double f = interpolate_log_lambda(x_lo, lo.nnz, x_hi, hi.nnz, target - 0.5);
      x = std::min(std::max(f, x_lo + 0.1 * (x_hi - x_lo)), x_hi - 0.1 * (x_hi - x_lo));
    }
    PathPoint mid = run(std::exp(x), hi);
    if (mid.nnz >= s.k)
      lo = std::move(mid);
    else
      hi = std::move(mid);
  }
  out.chosen = std::move(lo);
  return out;
}

// The k selected penalised coordinates, increasing: ranked by |beta| (penalised alive ones), then by
// |gradient| / penalty (the coordinates next to enter, when fewer than k are non-zero), then alive before
// dead, then lower index first.
inline std::vector<int64_t> rank_selection(const PathPoint& pt, const PathCoordinates& coords, int64_t k) {
  const int64_t c = static_cast<int64_t>(pt.b.size());
  struct Key {
    double beta, grad;
    int alive;
    int64_t index;
  };
  std::vector<Key> keys;
  keys.reserve(c);
  for (int64_t i = 0; i < c; ++i) {
    if (!(coords.p[i] > 0)) continue;
    const bool pa = coords.penalised_alive(i);
    keys.push_back({pa ? std::abs(pt.b[i]) : 0.0, pa ? std::abs(pt.g[i]) / coords.p[i] : 0.0,
                    coords.alive[i] ? 1 : 0, i});
  }
  auto before = [](const Key& a, const Key& b) {  // descending keys, then the lower index
    if (a.beta != b.beta) return a.beta > b.beta;
    if (a.grad != b.grad) return a.grad > b.grad;
    if (a.alive != b.alive) return a.alive > b.alive;
    return a.index < b.index;
  };
  const size_t kk = static_cast<size_t>(k);
  std::partial_sort(keys.begin(), keys.begin() + kk, keys.end(), before);
  std::vector<int64_t> order(kk);
  for (size_t i = 0; i < kk; ++i) order[i] = keys[i].index;
  std::sort(order.begin(), order.end());
  return order;
}

// Argument checks of lasso_select on top of lasso_prepare's (which checks G's contract and gives U and
// pinv(G_UU)).
inline LassoPrepared lasso_select_prepare(const at::Tensor& G, const at::Tensor& q, int64_t k,
                                          const std::optional<at::Tensor>& penalty, const at::Tensor& y_sq,
                                          const std::optional<at::Tensor>& unpenalized_pinv, double tol,
                                          double path_ratio, int64_t max_bisections, int64_t max_sweeps,
                                          double lambda_min_ratio, bool check_psd) {
  TORCH_CHECK_VALUE(path_ratio > 0 && path_ratio < 1, "lasso_select: path_ratio must be in (0, 1), got ", path_ratio);
  TORCH_CHECK_VALUE(max_bisections >= 0, "lasso_select: max_bisections must be >= 0, got ", max_bisections);
  TORCH_CHECK_VALUE(lambda_min_ratio > 0 && lambda_min_ratio < 1, "lasso_select: lambda_min_ratio must be in (0, 1), got ",
              lambda_min_ratio);
  TORCH_CHECK(G.dim() == 2, "lasso_select: G must be 2-D, got shape ", G.sizes());
  const at::Tensor zero = at::zeros({}, G.options());
  LassoPrepared in = lasso_prepare(G, q, zero, at::zeros({G.size(0)}, G.options()), penalty, y_sq,
                                   unpenalized_pinv, tol, max_sweeps, check_psd, "lasso_select");
  int64_t penalised = 0;
  if (in.penalty.is_cpu()) {
    const double* p = in.penalty.data_ptr<double>();
    for (int64_t i = 0, n = in.penalty.numel(); i < n; ++i) penalised += p[i] > 0;
  } else {
    penalised = (in.penalty > 0).sum().item<int64_t>();
  }
  TORCH_CHECK_VALUE(k >= 0 && k <= penalised, "lasso_select: k must be in [0, ", penalised,
              "] (the number of penalised coordinates), got ", k);
  return in;
}

inline PathCoordinates path_coordinates(const LassoPrepared& in) {
  const at::Tensor p = in.penalty.cpu(), diag = in.G.diagonal().cpu().contiguous();
  const int64_t c = in.G.size(0);
  PathCoordinates coords;
  coords.p.assign(p.data_ptr<double>(), p.data_ptr<double>() + c);
  coords.alive.resize(c);
  const double* d = diag.data_ptr<double>();
  for (int64_t i = 0; i < c; ++i) coords.alive[i] = d[i] > 0;
  return coords;
}

// The op's outputs from the path's outcome (on `device`, beta and lam in `dtype`).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lasso_select_outputs(
    const PathOutcome& out, const PathCoordinates& coords, int64_t k, at::ScalarType dtype, at::Device device) {
  const std::vector<int64_t> chosen = rank_selection(out.chosen, coords, k);
  auto host_f64 = at::TensorOptions().dtype(at::kDouble);
  auto host_i64 = at::TensorOptions().dtype(at::kLong);
  const int64_t c = static_cast<int64_t>(out.chosen.b.size());
  at::Tensor chosen_t = at::empty({k}, host_i64);
  std::copy(chosen.begin(), chosen.end(), chosen_t.data_ptr<int64_t>());
  at::Tensor beta = at::empty({c}, host_f64);
  std::copy(out.chosen.b.begin(), out.chosen.b.end(), beta.data_ptr<double>());
  return {chosen_t.to(device), beta.to(device, dtype), at::scalar_tensor(out.chosen.lam, host_f64).to(device, dtype),
          at::scalar_tensor(out.chosen.nnz, host_i64).to(device), at::scalar_tensor(out.solves, host_i64).to(device),
          at::scalar_tensor(out.sweeps, host_i64).to(device)};
}

}  // namespace gnnaccel
