// Host-side argument checks and preparation shared by the CPU and CUDA kernels of gnnaccel::lasso_cd and
// gnnaccel::lasso_select.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "../utils.h"

namespace gnnaccel {

// Relative cut-off of the pseudo-inverse of G[U, U]: eigen-directions below it carry only rounding noise.
constexpr double kLassoPinvRtol = 1e-10;

struct LassoPrepared {
  at::Tensor G, q, lam, beta0, penalty, y_sq;  // float64, contiguous, on the input device
  at::Tensor unpen_idx;                         // int64 [u]: alive coordinates with penalty 0, increasing
  at::Tensor unpen_pinv;                        // float64 [u, u]
};

// Plain loops: ATen's isfinite/all on a c x c matrix costs milliseconds on a busy machine (thread pool
// wake-ups), more than a whole warm-started solve.
inline void lasso_check_values_cpu(const LassoPrepared& in, const char* op) {
  auto all_finite = [](const at::Tensor& t) {
    const double* v = t.data_ptr<double>();
    const int64_t n = t.numel();
    // x * 0 is NaN exactly for NaN and +-Inf. 16 partial sums: four independent vector chains, so the scan
    // runs at load speed instead of at the latency of one chain of adds.
    double part[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
#pragma omp simd
      for (int k = 0; k < 16; ++k) part[k] += v[i + k] * 0.0;
    }
    double acc = 0;
    for (; i < n; ++i) acc += v[i] * 0.0;
    for (int k = 0; k < 16; ++k) acc += part[k];
    return acc == 0;
  };
  TORCH_CHECK_VALUE(all_finite(in.G), op, ": G contains NaN or Inf");
  TORCH_CHECK_VALUE(all_finite(in.q), op, ": q contains NaN or Inf");
  TORCH_CHECK_VALUE(all_finite(in.beta0), op, ": beta0 contains NaN or Inf");
  const double* p = in.penalty.data_ptr<double>();
  for (int64_t i = 0, n = in.penalty.numel(); i < n; ++i)
    TORCH_CHECK_VALUE(std::isfinite(p[i]) && p[i] >= 0, op, ": penalty factors must be finite and >= 0");
  const double lam_v = *in.lam.data_ptr<double>(), y_sq_v = *in.y_sq.data_ptr<double>();
  TORCH_CHECK_VALUE(std::isfinite(lam_v) && lam_v >= 0, op, ": lam must be finite and >= 0, got ", lam_v);
  TORCH_CHECK_VALUE(std::isfinite(y_sq_v) && y_sq_v >= 0, op, ": y_sq must be finite and >= 0, got ", y_sq_v);
}

// `op` names the calling op in the error messages. Bad values (NaN, negative penalties) raise ValueError.
inline LassoPrepared lasso_prepare(const at::Tensor& G, const at::Tensor& q, const at::Tensor& lam,
                                   const at::Tensor& beta0, const std::optional<at::Tensor>& penalty,
                                   const at::Tensor& y_sq, const std::optional<at::Tensor>& unpenalized_pinv,
                                   double tol, int64_t max_sweeps, const char* op = "lasso_cd") {
  TORCH_CHECK(G.dim() == 2, op, ": G must be 2-D, got shape ", G.sizes());
  TORCH_CHECK(G.size(0) == G.size(1), op, ": G must be square, got shape ", G.sizes());
  const int64_t c = G.size(0);
  TORCH_CHECK(q.dim() == 1, op, ": q must be 1-D, got shape ", q.sizes());
  TORCH_CHECK(beta0.dim() == 1, op, ": beta0 must be 1-D, got shape ", beta0.sizes());
  TORCH_CHECK(q.numel() == c, op, ": q has ", q.numel(), " entries but G is ", c, " x ", c);
  TORCH_CHECK(beta0.numel() == c, op, ": beta0 has ", beta0.numel(), " entries but G is ", c, " x ", c);
  TORCH_CHECK(lam.numel() == 1, op, ": lam must hold one value, got shape ", lam.sizes());
  TORCH_CHECK(y_sq.numel() == 1, op, ": y_sq must hold one value, got shape ", y_sq.sizes());
  TORCH_CHECK(tol >= 0.0, op, ": tol must be >= 0, got ", tol);
  TORCH_CHECK(max_sweeps >= 0, op, ": max_sweeps must be >= 0, got ", max_sweeps);
  for (const at::Tensor* t : {&G, &q, &lam, &beta0, &y_sq}) {
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": inputs must be floating point, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == G.device(), op, ": an input is on ", t->device(), " but G is on ", G.device());
  }
  LassoPrepared out;
  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).contiguous(); };
  out.G = f64(G);
  out.q = f64(q);
  out.lam = f64(lam.reshape({}));
  out.beta0 = f64(beta0);
  out.y_sq = f64(y_sq.reshape({}));
  if (penalty.has_value()) {
    TORCH_CHECK(penalty->dim() == 1, op, ": penalty must be 1-D, got shape ", penalty->sizes());
    TORCH_CHECK(penalty->numel() == c, op, ": penalty has ", penalty->numel(), " entries but G is ", c, " x ", c);
    TORCH_CHECK(at::isFloatingType(penalty->scalar_type()), op, ": penalty must be floating point");
    TORCH_CHECK(penalty->device() == G.device(), op, ": penalty is on ", penalty->device(), " but G is on ", G.device());
    out.penalty = f64(*penalty);
  } else {
    out.penalty = at::ones({c}, out.G.options());
  }
  if (out.G.is_cpu()) {
    lasso_check_values_cpu(out, op);
  } else {
    // Value checks (one host sync each on CUDA; a solve is sequential anyway): NaN must not reach the solver.
    TORCH_CHECK_VALUE(at::isfinite(out.G).all().item<bool>(), op, ": G contains NaN or Inf");
    TORCH_CHECK_VALUE(at::isfinite(out.q).all().item<bool>(), op, ": q contains NaN or Inf");
    TORCH_CHECK_VALUE(at::isfinite(out.beta0).all().item<bool>(), op, ": beta0 contains NaN or Inf");
    TORCH_CHECK_VALUE(((out.penalty >= 0) & at::isfinite(out.penalty)).all().item<bool>(), op,
                      ": penalty factors must be finite and >= 0");
    const double lam_v = out.lam.item<double>(), y_sq_v = out.y_sq.item<double>();
    TORCH_CHECK_VALUE(std::isfinite(lam_v) && lam_v >= 0, op, ": lam must be finite and >= 0, got ", lam_v);
    TORCH_CHECK_VALUE(std::isfinite(y_sq_v) && y_sq_v >= 0, op, ": y_sq must be finite and >= 0, got ", y_sq_v);
  }
  if (out.G.is_cpu()) {
    std::vector<int64_t> unpen;
    const double* g = out.G.data_ptr<double>();
    const double* p = out.penalty.data_ptr<double>();
    for (int64_t i = 0; i < c; ++i)
      if (g[i * c + i] > 0 && p[i] == 0) unpen.push_back(i);
    out.unpen_idx = at::tensor(unpen, out.G.options().dtype(at::kLong)).reshape({-1});
  } else {
    at::Tensor alive = out.G.diagonal() > 0;
    out.unpen_idx = at::nonzero(alive & (out.penalty == 0)).flatten().contiguous();  // host sync
  }
  const int64_t u = out.unpen_idx.numel();
  if (unpenalized_pinv.has_value()) {
    const at::Tensor& m = *unpenalized_pinv;
    TORCH_CHECK(m.dim() == 2 && m.size(0) == u && m.size(1) == u, op, ": unpenalized_pinv must be [", u, ", ", u,
                "] (pinv of G over the ", u, " alive coordinates with penalty 0), got shape ", m.sizes());
    TORCH_CHECK(m.device() == G.device(), op, ": unpenalized_pinv is on ", m.device(), " but G is on ", G.device());
    out.unpen_pinv = f64(m);
  } else if (u > 0) {
    at::Tensor sub = out.G.index_select(0, out.unpen_idx).index_select(1, out.unpen_idx);
    out.unpen_pinv = at::linalg_pinv(sub, std::nullopt, kLassoPinvRtol, /*hermitian=*/true).contiguous();
  } else {
    out.unpen_pinv = at::zeros({0, 0}, out.G.options());
  }
  return out;
}

}  // namespace gnnaccel
