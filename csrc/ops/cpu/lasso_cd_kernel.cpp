// CPU kernel of gnnaccel::lasso_cd: one solve with the coordinate-descent solver of lasso_cd_solver.h (see
// ../lasso_cd.cpp for the problem, the duality gap and the pass schedule).
#include "../lasso_cd_common.h"
#include "lasso_cd_solver.h"

namespace gnnaccel {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lasso_cd_cpu(const at::Tensor& G, const at::Tensor& q,
                                                            const at::Tensor& lam, const at::Tensor& beta0,
                                                            const std::optional<at::Tensor>& penalty,
                                                            const at::Tensor& y_sq,
                                                            const std::optional<at::Tensor>& unpenalized_pinv,
                                                            double tol, int64_t max_sweeps, bool check_psd) {
  TORCH_CHECK(G.device().is_cpu(), "lasso_cd_cpu got a non-CPU tensor");
  LassoPrepared in = lasso_prepare(G, q, lam, beta0, penalty, y_sq, unpenalized_pinv, tol, max_sweeps, check_psd);
  const int64_t c = in.G.size(0);
  const double lam_v = in.lam.item<double>(), y_sq_v = in.y_sq.item<double>();
  at::Tensor beta = in.beta0.clone();
  at::Tensor grad = at::empty({c}, in.G.options());
  double* b = beta.data_ptr<double>();
  double* g = grad.data_ptr<double>();
  CpuLassoSolver solver(in.G.data_ptr<double>(), in.q.data_ptr<double>(), in.penalty.data_ptr<double>(), y_sq_v,
                        in.unpen_idx.data_ptr<int64_t>(), in.unpen_idx.numel(), in.unpen_pinv.data_ptr<double>(), c);
  solver.set_lambda(lam_v);
  solver.init(b, g);
  const double tol_abs = tol * y_sq_v;
  const CdOutcome res = run_coordinate_descent(
      solver, b, g, tol_abs, max_sweeps, CdContract{kLassoCurvatureRtol * in.rtol, -(tol_abs + in.rtol * y_sq_v)});
  lasso_check_outcome(res.violation, res.value, res.reference, "lasso_cd");
  auto gap_t = at::scalar_tensor(res.gap, in.G.options()).to(G.scalar_type());
  auto sweeps_t = at::scalar_tensor(res.sweeps, in.G.options().dtype(at::kLong));
  return {beta.to(G.scalar_type()), gap_t, sweeps_t};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("lasso_cd", &lasso_cd_cpu); }

}  // namespace gnnaccel
