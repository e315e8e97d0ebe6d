// Host-side argument checks and preparation shared by the CPU and CUDA kernels of gnnaccel::lasso_cd and
// gnnaccel::lasso_select.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "../utils.h"

namespace gnnaccel {

// Relative cut-off of the pseudo-inverse of G[U, U]: eigen-directions below it carry only rounding noise.
constexpr double kLassoPinvRtol = 1e-10;

struct LassoPrepared {
  at::Tensor G, q, lam, beta0, penalty, y_sq;  // float64, contiguous, on the input device
  double rtol = 1e-8;                           // the contract's tolerance for the input dtype
  at::Tensor unpen_idx;                         // int64 [u]: alive coordinates with penalty 0, increasing
  at::Tensor unpen_pinv;                        // float64 [u, u]
};

// The contract on G (see ../lasso_cd.cpp): symmetric positive semi-definite, up to the rounding of the
// input's own precision. One check for both ops and both devices (lasso_check_gram, from lasso_prepare):
//  - O(c^2) entry checks that name the offending entries: symmetry of every pair, no negative diagonal entry,
//    no negative 2 x 2 principal minor;
//  - the certificate: a Cholesky factorisation of G + rtol * max_i G_ii * I succeeds exactly when G has no
//    eigenvalue below about -rtol * max_i G_ii. O(c^3 / 3): 16 ms at c = 745, 0.14 s at c = 1500 on one core
//    of the development machine (a whole lasso_select path there: 10 ms and 30 ms); once per op call, i.e.
//    once per op call (skipped with check_psd=False by callers whose G is PSD by construction: the pruner's
//    Grams of second moments). Cheaper partial tests miss what matters: an indefinite direction that no 2 x 2
//    minor shows and that the path never steps along leaves a KKT point with gap 0, a wrong answer certified;
//  - in the solvers (O(c) per pass): a pass step d with negative curvature d'Gd, or a negative duality gap
//    (weak duality excludes it; a y_sq below q' pinv(G) q also gives one) raises (lasso_check_outcome).
//
// Relative tolerance of the contract for an input of dtype `t` (symmetry and minors relative to max |G_ii|).
inline double lasso_contract_rtol(at::ScalarType t) {
  return t == at::kDouble ? 1e-8 : (t == at::kFloat ? 1e-4 : 1e-2);
}

// Entry checks of the contract on the float64 copy of G, on the CPU: every diagonal entry >= -tol, every pair
// |G_ij - G_ji| <= tol and G_ij^2 <= G_ii G_jj (1 + rtol) + tol^2 (a negative 2 x 2 principal minor proves G
// indefinite; with G_ii = 0 it says a dead coordinate's row must be 0), tol = rtol * max_i |G_ii|. The pairs
// are visited in 64 x 64 tiles of the upper triangle (the transposed reads of a tile stay in cache).
inline void lasso_check_gram_cpu(const at::Tensor& G, double rtol, const char* op) {
  const int64_t c = G.size(0);
  const double* a = G.data_ptr<double>();
  std::vector<double> d(c);
  double scale = 0;
  for (int64_t i = 0; i < c; ++i) scale = std::max(scale, std::abs(a[i * c + i]));
  const double tol = rtol * scale, tol_sq = tol * tol, grow = 1 + rtol;
  for (int64_t i = 0; i < c; ++i) {
    const double gii = a[i * c + i];
    TORCH_CHECK_VALUE(gii >= -tol, op, ": G must be positive semi-definite, but G[", i, ", ", i, "] = ", gii,
                      " is negative");
    d[i] = std::max(gii, 0.0);
  }
  constexpr int64_t kTile = 64;
  int64_t bad = 0;
  for (int64_t i0 = 0; i0 < c; i0 += kTile) {
    const int64_t i1 = std::min(c, i0 + kTile);
    for (int64_t j0 = i0; j0 < c; j0 += kTile) {
      const int64_t j1 = std::min(c, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        const double* row = a + i * c;
        const double di = d[i] * grow;
        for (int64_t j = std::max(j0, i + 1); j < j1; ++j) {
          const double x = row[j], y = a[j * c + i];
          bad += !(std::abs(x - y) <= tol) + !(x * x <= di * d[j] + tol_sq);
        }
      }
    }
  }
  if (bad == 0) return;
  for (int64_t i = 0; i < c; ++i) {  // name the first offending pair
    for (int64_t j = i + 1; j < c; ++j) {
      const double x = a[i * c + j], y = a[j * c + i];
      TORCH_CHECK_VALUE(std::abs(x - y) <= tol, op, ": G must be symmetric, but G[", i, ", ", j, "] = ", x,
                        " and G[", j, ", ", i, "] = ", y, " differ by more than ", rtol, " * max |G_ii|");
      TORCH_CHECK_VALUE(x * x <= d[i] * grow * d[j] + tol_sq, op, ": G must be positive semi-definite, but G[", i,
                        ", ", j, "]^2 = ", x * x, " exceeds G[", i, ", ", i, "] * G[", j, ", ", j, "] = ",
                        d[i] * d[j], " (a negative 2 x 2 principal minor)");
    }
  }
}

// The same checks on a CUDA (or any non-CPU) G, as tensor reductions with one host sync.
inline void lasso_check_gram_device(const at::Tensor& G, double rtol, const char* op) {
  if (G.numel() == 0) return;
  const at::Tensor diag = G.diagonal();
  const at::Tensor tol = diag.abs().max() * rtol;
  const at::Tensor dp = diag.clamp_min(0);
  const at::Tensor flags = at::stack({(diag < -tol).any(), ((G - G.t()).abs() > tol).any(),
                                      (G.square() > at::outer(dp, dp) * (1 + rtol) + tol.square()).any()})
                               .cpu();
  const bool* f = flags.data_ptr<bool>();
  TORCH_CHECK_VALUE(!f[0], op, ": G must be positive semi-definite, but a diagonal entry is negative");
  TORCH_CHECK_VALUE(!f[1], op, ": G must be symmetric, but G[i, j] and G[j, i] differ by more than ", rtol,
                    " * max |G_ii| for some i, j");
  TORCH_CHECK_VALUE(!f[2], op, ": G must be positive semi-definite, but G[i, j]^2 > G[i, i] * G[j, j] for some "
                    "i, j (a negative 2 x 2 principal minor)");
}

// The PSD certificate (see above): Cholesky of G + rtol * max_i G_ii * I, on G's device (one host sync).
inline void lasso_certify_psd(const at::Tensor& G, double rtol, const char* op) {
  const int64_t c = G.size(0);
  if (c == 0) return;
  const double scale = G.diagonal().max().item<double>();
  if (!(scale > 0)) return;  // no positive diagonal entry: the minor checks left only G = 0
  const double shift = rtol * scale;
  const at::Tensor shifted = G + at::eye(c, G.options()) * shift;
  const auto factor = at::linalg_cholesky_ex(shifted, /*upper=*/false, /*check_errors=*/false);
  const int64_t info = std::get<1>(factor).item<int64_t>();
  TORCH_CHECK_VALUE(info == 0, op, ": G must be positive semi-definite, but it has an eigenvalue below -", shift,
                    " (= -", rtol, " * max G_ii): the Cholesky factorisation of G + ", shift,
                    " * I fails at pivot ", info);
}

// The contract checks of G at entry (see above), on the float64 copy, CPU or CUDA.
// `certify`: also the O(c^3) certificate (the ops' check_psd argument).
inline void lasso_check_gram(const at::Tensor& G, double rtol, bool certify, const char* op) {
  if (G.is_cpu())
    lasso_check_gram_cpu(G, rtol, op);
  else
    lasso_check_gram_device(G, rtol, op);
  if (certify) lasso_certify_psd(G, rtol, op);
}

// What a solve met that the contract excludes (written by the CPU and CUDA solvers alike).
enum LassoViolationKind : int64_t { kLassoOk = 0, kLassoNegativeCurvature = 1, kLassoNegativeGap = 2 };

// Thresholds of the solvers' contract checks. A pass's step d with d'Gd < -kLassoCurvatureRtol * rtol *
// sum_i G_ii d_i^2 (each coordinate move has curvature G_ii > 0, so only an indefinite G can give a negative
// sum beyond rounding); a gap < -(tol_abs + rtol * y_sq) (weak duality makes it >= 0 when X'X = G,
// ||y||^2 = y_sq exist, i.e. G PSD and y_sq >= q' pinv(G) q).
constexpr double kLassoCurvatureRtol = 10.0;

inline void lasso_check_outcome(int64_t kind, double value, double reference, const char* op) {
  TORCH_CHECK_VALUE(kind != kLassoNegativeCurvature, op,
                    ": G must be positive semi-definite, but coordinate descent met negative curvature: a step d "
                    "with d'Gd = ", value, " (sum_i G_ii d_i^2 = ", reference, ")");
  TORCH_CHECK_VALUE(kind != kLassoNegativeGap, op, ": the duality gap came out negative (", value,
                    "), impossible for a valid problem: G is not positive semi-definite, or y_sq = ", reference,
                    " is smaller than the target energy q' pinv(G) q (y_sq must be ||y||^2 of a target y with "
                    "X'y = q, X'X = G)");
}

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
                                   double tol, int64_t max_sweeps, bool check_psd, const char* op = "lasso_cd") {
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
  out.rtol = lasso_contract_rtol(G.scalar_type());
  lasso_check_gram(out.G, out.rtol, check_psd, op);
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
