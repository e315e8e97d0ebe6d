// CPU kernel of gnnaccel::lasso_select (see ../lasso_select.cpp): the path of ../lasso_select_path.h, each
// lambda solved on a working set.
//
// Why a working set: at a budget of k of c coordinates, a solve moves ~k coordinates, and each move updates
// the gradient of all c coordinates (an axpy over a row of G that lives in L3 or DRAM for c >= 1024). On the
// working set W the same moves touch only |W| entries of a compact copy of G[W, W] that stays in L2, and the
// full gradient is rebuilt once per check instead of once per move.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "../lasso_select_path.h"
#include "lasso_cd_solver.h"

namespace gnnaccel {
namespace {

// One lambda: W = the coordinates that are non-zero or unpenalised, plus those that violate the optimality
// condition |g_i| <= lam p_i at the warm start (the ones that want to enter); the subproblem on W is the full
// problem with b = 0 off W. After it converges (gap <= tol / 2 on W), the full gradient is rebuilt;
// coordinates off W that now violate the condition join W and the subproblem runs again. Done when the full
// problem's gap is <= tol * y_sq (the op's stopping rule, as lasso_cd's). Should the full gap stay above
// tolerance with no violator (it only can through the dual scaling of near-violators), the solve finishes on
// all coordinates. (The sequential strong rule, |g_i| >= p_i (2 lam - lam_prev), keeps 1.5-2.5x more
// coordinates on this path's steps and was slower: the working set is re-gathered whenever it changes.)
class WorkingSetSolver {
 public:
  WorkingSetSolver(const LassoPrepared& in, double tol, int64_t max_sweeps)
      : G_(in.G.data_ptr<double>()), q_(in.q.data_ptr<double>()), p_(in.penalty.data_ptr<double>()),
        c_(in.G.size(0)), y_sq_(*in.y_sq.data_ptr<double>()), tol_abs_(tol * y_sq_), max_sweeps_(max_sweeps),
        contract_{kLassoCurvatureRtol * in.rtol, -(tol_abs_ + in.rtol * y_sq_)},
        nu_(in.unpen_idx.numel()), pinv_(in.unpen_pinv.data_ptr<double>()),
        full_(G_, q_, p_, y_sq_, in.unpen_idx.data_ptr<int64_t>(), nu_, pinv_, c_), in_w_(c_) {}

  // The unpenalised optimum: b_U = pinv(G_UU) q_U, g = q - G b (the path's first point).
  PathPoint start() {
    PathPoint pt;
    pt.b.assign(c_, 0.0);
    pt.g.assign(c_, 0.0);
    full_.init(pt.b.data(), pt.g.data());
    full_.unpenalized_step(pt.b.data(), pt.g.data());
    return pt;
  }

  int64_t solve(double lam, const PathPoint& from, PathPoint& out) {
    out.b = from.b;
    out.g = from.g;
    double* b = out.b.data();
    double* g = out.g.data();
    full_.set_lambda(lam);
    for (int64_t i = 0; i < c_; ++i)
      in_w_[i] = full_.alive(i) && (b[i] != 0 || p_[i] == 0 || std::abs(g[i]) > lam * p_[i]);
    double tol_sub = 0.5 * tol_abs_;
    int64_t sweeps = 0;
    bool all_coordinates = false;
    while (true) {
      sweeps += solve_working_set(lam, tol_sub, max_sweeps_ - sweeps, b);
      rebuild_gradient(b, g);
      // On all coordinates the subproblem is the problem: its converged gap is final (the rebuilt gradient
      // may differ from the solver's running one by rounding only).
      const double full_gap = full_.gaps(b, g).full;
      lasso_check_outcome(full_gap < contract_.gap_floor ? kLassoNegativeGap : kLassoOk, full_gap, y_sq_,
                          "lasso_select");
      if (all_coordinates || full_gap <= tol_abs_ || sweeps >= max_sweeps_) break;
      bool grew = false;
      for (int64_t i = 0; i < c_; ++i) {
        if (!in_w_[i] && full_.alive(i) && p_[i] > 0 && std::abs(g[i]) > lam * p_[i]) {
          in_w_[i] = 1;
          grew = true;
        }
      }
      if (!grew) {
        for (int64_t i = 0; i < c_; ++i) in_w_[i] = full_.alive(i);
        tol_sub = tol_abs_;
        all_coordinates = true;
      }
    }
    return sweeps;
  }

 private:
  // Coordinate descent on W (marked in in_w_) from b restricted to W; writes b[W] back. Returns sweeps.
  int64_t solve_working_set(double lam, double tol_abs, int64_t max_sweeps, double* b) {
    next_w_.clear();
    for (int64_t i = 0; i < c_; ++i)
      if (in_w_[i]) next_w_.push_back(i);
    const int64_t w = static_cast<int64_t>(next_w_.size());
    if (next_w_ != W_) {  // G[W, W] again only when W changed (consecutive bracket solves often share it)
      gather_working_gram();
      W_.swap(next_w_);
      uw_.clear();
      for (int64_t r = 0; r < w; ++r)
        if (p_[W_[r]] == 0) uw_.push_back(r);  // U and W both increasing: pinv(G_UU) keeps its order
      qw_.resize(w);
      pw_.resize(w);
      bw_.resize(w);
      gw_.resize(w);
      for (int64_t r = 0; r < w; ++r) {
        qw_[r] = q_[W_[r]];
        pw_[r] = p_[W_[r]];
      }
    }
    for (int64_t r = 0; r < w; ++r) bw_[r] = b[W_[r]];
    CpuLassoSolver sub(Gw_.data(), qw_.data(), pw_.data(), y_sq_, uw_.data(), nu_, pinv_, w);
    sub.set_lambda(lam);
    sub.init(bw_.data(), gw_.data());
    const CdOutcome res = run_coordinate_descent(sub, bw_.data(), gw_.data(), tol_abs, max_sweeps, contract_);
    lasso_check_outcome(res.violation, res.value, res.reference, "lasso_select");
    for (int64_t r = 0; r < w; ++r) b[W_[r]] = bw_[r];
    return res.sweeps;
  }

  // G[next_w_, next_w_] into Gw_ (old W_ and its Gw_ still in place). Consecutive working sets share most
  // coordinates: an entry whose row and column were both in the old set is copied from the old compact
  // matrix, in runs of consecutive old columns (a memcpy), instead of gathered one by one from the rows of G.
  void gather_working_gram() {
    const int64_t w = static_cast<int64_t>(next_w_.size()), w_old = static_cast<int64_t>(W_.size());
    old_pos_.assign(w, -1);
    for (int64_t r = 0, o = 0; r < w; ++r) {  // both increasing: a merge
      while (o < w_old && W_[o] < next_w_[r]) ++o;
      if (o < w_old && W_[o] == next_w_[r]) old_pos_[r] = o;
    }
    // The column runs are the same for every row: [s, t) new columns = old columns from old_pos_[s] on, or a
    // single new column (old_pos_ -1).
    runs_.clear();
    for (int64_t s = 0; s < w;) {
      int64_t t = s + 1;
      if (old_pos_[s] >= 0)
        while (t < w && old_pos_[t] == old_pos_[t - 1] + 1) ++t;
      runs_.push_back({s, t});
      s = t;
    }
    next_gw_.resize(w * w);
    for (int64_t r = 0; r < w; ++r) {
      const double* g_row = G_ + next_w_[r] * c_;
      double* dst = next_gw_.data() + r * w;
      if (old_pos_[r] < 0) {
        for (int64_t s = 0; s < w; ++s) dst[s] = g_row[next_w_[s]];
        continue;
      }
      const double* old_row = Gw_.data() + old_pos_[r] * w_old;
      for (const auto& [s, t] : runs_) {
        if (old_pos_[s] < 0)
          dst[s] = g_row[next_w_[s]];
        else
          std::copy(old_row + old_pos_[s], old_row + old_pos_[s] + (t - s), dst + s);
      }
    }
    Gw_.swap(next_gw_);
  }

  // g = q - G b from scratch (G symmetric: row i is column i).
  void rebuild_gradient(const double* b, double* g) {
    std::copy(q_, q_ + c_, g);
    nonzero_.clear();
    for (int64_t i = 0; i < c_; ++i)
      if (b[i] != 0) nonzero_.push_back(i);
    subtract_scaled_rows(G_, c_, nonzero_, b, g);
  }

  const double *G_, *q_, *p_;
  int64_t c_;
  double y_sq_, tol_abs_;
  int64_t max_sweeps_;
  CdContract contract_;
  int64_t nu_;
  const double* pinv_;
  CpuLassoSolver full_;  // the full problem: gaps, liveness, the start point
  std::vector<char> in_w_;
  std::vector<int64_t> W_, next_w_, uw_, old_pos_, nonzero_;
  std::vector<std::pair<int64_t, int64_t>> runs_;
  std::vector<double> Gw_, next_gw_, qw_, pw_, bw_, gw_;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lasso_select_cpu(
    const at::Tensor& G, const at::Tensor& q, int64_t k, const std::optional<at::Tensor>& penalty,
    const at::Tensor& y_sq, const std::optional<at::Tensor>& unpenalized_pinv, double tol, double path_ratio,
    int64_t max_bisections, int64_t max_sweeps, double lambda_min_ratio, bool check_psd) {
  TORCH_CHECK(G.device().is_cpu(), "lasso_select_cpu got a non-CPU tensor");
  const LassoPrepared in = lasso_select_prepare(G, q, k, penalty, y_sq, unpenalized_pinv, tol, path_ratio,
                                                max_bisections, max_sweeps, lambda_min_ratio, check_psd);
  const PathCoordinates coords = path_coordinates(in);
  WorkingSetSolver solver(in, tol, max_sweeps);
  const PathOutcome out = walk_lasso_path(
      [&](double lam, const PathPoint& from, PathPoint& to) { return solver.solve(lam, from, to); }, solver.start(),
      coords, PathSettings{k, path_ratio, max_bisections, lambda_min_ratio});
  return lasso_select_outputs(out, coords, k, G.scalar_type(), G.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("lasso_select", &lasso_select_cpu); }

}  // namespace gnnaccel
