// The CPU coordinate-descent solver of the Gram-form LASSO, shared by gnnaccel::lasso_cd (one solve) and
// gnnaccel::lasso_select (a lambda path over working sets). See ../lasso_cd.cpp for the problem, the duality
// gap and the pass schedule. A tight sequential coordinate loop in float64: G is symmetric, so the column
// update g -= G[:, i] d reads the contiguous row i; a coordinate that does not move costs O(1), one that
// moves costs one axpy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace gnnaccel {

// g -= sum_{i in rows} b_i G[i, :] for G row-major [c, c], four rows per pass over g (g is loaded and stored
// once per four rows instead of once per row).
inline void subtract_scaled_rows(const double* G, int64_t c, const std::vector<int64_t>& rows, const double* b,
                                 double* g) {
  size_t t = 0;
  for (; t + 4 <= rows.size(); t += 4) {
    const double *r0 = G + rows[t] * c, *r1 = G + rows[t + 1] * c, *r2 = G + rows[t + 2] * c,
                 *r3 = G + rows[t + 3] * c;
    const double b0 = b[rows[t]], b1 = b[rows[t + 1]], b2 = b[rows[t + 2]], b3 = b[rows[t + 3]];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] -= b0 * r0[j] + b1 * r1[j] + b2 * r2[j] + b3 * r3[j];
  }
  for (; t < rows.size(); ++t) {
    const double* row = G + rows[t] * c;
    const double bi = b[rows[t]];
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] -= bi * row[j];
  }
}

struct LassoGaps {
  double full;    // gap of the whole problem
  double active;  // gap of the problem restricted to the active coordinates (others held at 0)
};

// One problem (G [c, c] row-major, q, p, y_sq, the unpenalised block U with pinv(G_UU)) at one lambda at a
// time. The arrays are borrowed, not copied; `b` (beta) and `g` (= q - G b) belong to the caller.
class CpuLassoSolver {
 public:
  CpuLassoSolver(const double* G, const double* q, const double* p, double y_sq, const int64_t* unpen, int64_t nu,
                 const double* pinv, int64_t c)
      : G_(G), q_(q), p_(p), y_sq_(y_sq), unpen_(unpen), nu_(nu), pinv_(pinv), c_(c), in_active_(c, 0), d_(nu),
        gu_(nu), diag_(c), thr_(c) {
    // The diagonal and the thresholds, contiguous: read on every coordinate and every gap evaluation, while
    // the diagonal of G itself is one cache line (often one page) per entry.
    for (int64_t i = 0; i < c; ++i) diag_[i] = G[i * c + i];
  }

  void set_lambda(double lam) {
    lam_ = lam;
    for (int64_t i = 0; i < c_; ++i) thr_[i] = lam * p_[i];
  }
  double lambda() const { return lam_; }
  bool alive(int64_t i) const { return diag_[i] > 0; }
  double diag(int64_t i) const { return diag_[i]; }
  double y_sq() const { return y_sq_; }
  int64_t size() const { return c_; }

  // g = q - G b; dead coordinates are removed from the problem (b_i = 0).
  void init(double* b, double* g) const {
    std::vector<int64_t> nonzero;
    for (int64_t i = 0; i < c_; ++i) {
      if (!(diag_[i] > 0)) b[i] = 0;
      if (b[i] != 0) nonzero.push_back(i);
    }
    std::copy(q_, q_ + c_, g);
    subtract_scaled_rows(G_, c_, nonzero, b, g);
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

  LassoGaps gaps(const double* b, const double* g) const {
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
  double lam_ = 0, y_sq_;
  const int64_t* unpen_;
  int64_t nu_;
  const double* pinv_;
  int64_t c_;
  std::vector<char> in_active_;
  std::vector<double> d_, gu_, diag_, thr_;
};

struct CdOutcome {
  double gap;
  int64_t sweeps;
  int64_t violation = 0;  // LassoViolationKind (../lasso_cd_common.h): 0, or what the contract excludes
  double value = 0, reference = 0;
};

// The solver's share of the contract checks (see lasso_check_outcome in ../lasso_cd_common.h): the step d of
// every pass (with its unpenalised step) must have d'Gd = d'(g_before - g_after) >= -curvature_rtol *
// sum_i G_ii d_i^2, and every gap must be >= gap_floor (a small negative number). O(c) per pass.
struct CdContract {
  double curvature_rtol;
  double gap_floor;
};

// The pass schedule of ../lasso_cd.cpp from a consistent (b, g = q - G b): passes over the active set, with a
// full pass whenever the active subproblem's own gap is below tolerance (and every 10th pass, against an
// active set that stalls), until the full gap is <= tol_abs or max_sweeps passes ran. Stops at once, with
// `violation` set, when a pass or a gap shows that G is not PSD.
inline CdOutcome run_coordinate_descent(CpuLassoSolver& solver, double* b, double* g, double tol_abs,
                                        int64_t max_sweeps, const CdContract& contract) {
  const int64_t c = solver.size();
  std::vector<int64_t> alive, active;
  std::vector<double> b0(b, b + c), g0(g, g + c);
  solver.all_alive(alive);
  solver.rebuild_active(b, active);
  solver.unpenalized_step(b, g);
  LassoGaps gap = solver.gaps(b, g);
  int64_t sweeps = 0, since_full = 0;
  bool need_full = true;
  auto violated = [&](CdOutcome& out) {
    if (gap.full < contract.gap_floor) {
      out = {gap.full, sweeps, 2, gap.full, solver.y_sq()};
      return true;
    }
    double curv = 0, diag_curv = 0;
    for (int64_t i = 0; i < c; ++i) {
      const double d = b[i] - b0[i];
      if (d != 0) {
        curv += d * (g0[i] - g[i]);
        diag_curv += solver.diag(i) * d * d;
      }
    }
    if (curv < -contract.curvature_rtol * diag_curv) {
      out = {gap.full, sweeps, 1, curv, diag_curv};
      return true;
    }
    return false;
  };
  CdOutcome out{gap.full, 0};
  if (violated(out)) return out;
  while (gap.full > tol_abs && sweeps < max_sweeps) {
    std::copy(b, b + c, b0.begin());
    std::copy(g, g + c, g0.begin());
    if (need_full || since_full >= 10) {
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
    if (violated(out)) return out;
    need_full = gap.active <= 0.5 * tol_abs;
  }
  return {gap.full, sweeps};
}

}  // namespace gnnaccel
