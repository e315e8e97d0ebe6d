// CPU kernel of gnnaccel::lasso_cd: a tight sequential coordinate loop in float64 (see ../lasso_cd.cpp for
// the problem, the duality gap and the pass schedule). G is symmetric, so the column update g -= G[:, i] d
// reads the contiguous row i. A coordinate that does not move costs O(1); one that moves costs one axpy.
#include <cmath>
#include <limits>
#include <vector>

#include "../lasso_cd_common.h"

namespace gnnaccel {
namespace {

struct Gaps {
  double full;    // gap of the whole problem
  double active;  // gap of the problem restricted to the active coordinates (others held at 0)
};

class CpuLassoSolver {
 public:
  CpuLassoSolver(const double* G, const double* q, const double* p, double lam, double y_sq, const int64_t* unpen,
                 int64_t nu, const double* pinv, int64_t c)
      : G_(G), q_(q), p_(p), lam_(lam), y_sq_(y_sq), unpen_(unpen), nu_(nu), pinv_(pinv), c_(c),
        in_active_(c, 0), d_(nu), gu_(nu), diag_(c), thr_(c) {
    // The diagonal and the thresholds, contiguous: read on every coordinate and every gap evaluation, while
    // the diagonal of G itself is one cache line (often one page) per entry.
    for (int64_t i = 0; i < c; ++i) {
      diag_[i] = G[i * c + i];
      thr_[i] = lam * p[i];
    }
  }

  void init(double* b, double* g) {
    for (int64_t j = 0; j < c_; ++j) g[j] = q_[j];
    for (int64_t i = 0; i < c_; ++i) {
      if (!(diag_[i] > 0)) b[i] = 0;  // dead coordinate: removed from the problem
      if (b[i] != 0) axpy(-b[i], G_ + i * c_, g);
    }
  }

  void pass(const std::vector<int64_t>& coords, double* b, double* g) const {
    for (const int64_t i : coords) {
      const double gii = diag_[i];
      const double old = b[i];
      const double z = g[i] + gii * old;
      const double az = std::abs(z) - thr_[i];
      const double nb = az > 0 ? std::copysign(az, z) / gii : 0.0;
      if (nb != old) {
        axpy(old - nb, G_ + i * c_, g);
        b[i] = nb;
      }
    }
  }

  // Exact minimisation over the unpenalised block: b_U += pinv(G_UU) g_U, then g -= G[:, U] d.
  void unpenalized_step(double* b, double* g) {
    if (nu_ == 0) return;
    for (int64_t k = 0; k < nu_; ++k) gu_[k] = g[unpen_[k]];
    for (int64_t k = 0; k < nu_; ++k) {
      const double* mrow = pinv_ + k * nu_;
      double acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t l = 0; l < nu_; ++l) acc += mrow[l] * gu_[l];
      d_[k] = acc;
    }
    for (int64_t k = 0; k < nu_; ++k) {
      if (d_[k] == 0) continue;
      b[unpen_[k]] += d_[k];
      axpy(-d_[k], G_ + unpen_[k] * c_, g);
    }
  }

  Gaps gaps(const double* b, const double* g) const {
    double qb = 0, gb = 0, l1 = 0;
    double smax = std::numeric_limits<double>::infinity(), smax_active = smax;
    for (int64_t i = 0; i < c_; ++i) {
      if (b[i] != 0) {
        qb += q_[i] * b[i];
        gb += g[i] * b[i];
        l1 += p_[i] * std::abs(b[i]);
      }
      if (p_[i] > 0 && diag_[i] > 0 && g[i] != 0) {
        const double s = lam_ * p_[i] / std::abs(g[i]);
        smax = std::min(smax, s);
        if (in_active_[i]) smax_active = std::min(smax_active, s);
      }
    }
    const double rr = y_sq_ - qb - gb, yr = y_sq_ - qb;
    const double primal = 0.5 * rr + lam_ * l1;
    auto gap_for = [&](double bound) {
      double s = 0;
      if (rr > 0) s = std::max(-bound, std::min(bound, yr / rr));
      return primal - (s * yr - 0.5 * s * s * rr);
    };
    return {gap_for(smax), gap_for(smax_active)};
  }

  // Coordinates that are alive; the active subset = non-zero or unpenalised.
  void all_alive(std::vector<int64_t>& out) const {
    out.clear();
    for (int64_t i = 0; i < c_; ++i)
      if (diag_[i] > 0) out.push_back(i);
  }
  void rebuild_active(const double* b, std::vector<int64_t>& out) {
    out.clear();
    for (int64_t i = 0; i < c_; ++i) {
      const bool a = diag_[i] > 0 && (b[i] != 0 || p_[i] == 0);
      in_active_[i] = a;
      if (a) out.push_back(i);
    }
  }

 private:
  void axpy(double a, const double* x, double* y) const {
#pragma omp simd
    for (int64_t j = 0; j < c_; ++j) y[j] += a * x[j];
  }

  const double *G_, *q_, *p_;
  double lam_, y_sq_;
  const int64_t* unpen_;
  int64_t nu_;
  const double* pinv_;
  int64_t c_;
  std::vector<char> in_active_;
  std::vector<double> d_, gu_, diag_, thr_;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> lasso_cd_cpu(const at::Tensor& G, const at::Tensor& q,
                                                            const at::Tensor& lam, const at::Tensor& beta0,
                                                            const std::optional<at::Tensor>& penalty,
                                                            const at::Tensor& y_sq,
                                                            const std::optional<at::Tensor>& unpenalized_pinv,
                                                            double tol, int64_t max_sweeps) {
  TORCH_CHECK(G.device().is_cpu(), "lasso_cd_cpu got a non-CPU tensor");
  LassoPrepared in = lasso_prepare(G, q, lam, beta0, penalty, y_sq, unpenalized_pinv, tol, max_sweeps);
  const int64_t c = in.G.size(0);
  const double lam_v = in.lam.item<double>(), y_sq_v = in.y_sq.item<double>();
  at::Tensor beta = in.beta0.clone();
  at::Tensor grad = at::empty({c}, in.G.options());
  double* b = beta.data_ptr<double>();
  double* g = grad.data_ptr<double>();
  CpuLassoSolver solver(in.G.data_ptr<double>(), in.q.data_ptr<double>(), in.penalty.data_ptr<double>(), lam_v, y_sq_v,
                        in.unpen_idx.data_ptr<int64_t>(), in.unpen_idx.numel(), in.unpen_pinv.data_ptr<double>(), c);
  const double tol_abs = tol * y_sq_v;
  std::vector<int64_t> alive, active;
  solver.all_alive(alive);
  solver.init(b, g);
  solver.rebuild_active(b, active);
  solver.unpenalized_step(b, g);
  Gaps gap = solver.gaps(b, g);
  int64_t sweeps = 0, since_full = 0;
  bool need_full = true;
  while (gap.full > tol_abs && sweeps < max_sweeps) {
    if (need_full || since_full >= 10) {  // a periodic full pass guards against an active set that stalls
      solver.pass(alive, b, g);
      solver.rebuild_active(b, active);
      since_full = 0;
    } else {
      solver.pass(active, b, g);
      ++since_full;
    }
    ++sweeps;
    solver.unpenalized_step(b, g);
    gap = solver.gaps(b, g);
    need_full = gap.active <= 0.5 * tol_abs;
  }
  auto gap_t = at::scalar_tensor(gap.full, in.G.options()).to(G.scalar_type());
  auto sweeps_t = at::scalar_tensor(sweeps, in.G.options().dtype(at::kLong));
  return {beta.to(G.scalar_type()), gap_t, sweeps_t};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("lasso_cd", &lasso_cd_cpu); }

}  // namespace gnnaccel
