// Channel selection under an exact budget: the LASSO path of gnnaccel::lasso_cd's problem (lasso_cd.cpp),
// walked inside one op call.
//
//   min_b  1/2 b'Gb - q'b + lam * sum_i p_i |b_i|,   lam from lambda_max down until k coordinates are non-zero
//
// Inputs: G [c, c] symmetric PSD and q [c] (float32/float64; solved in float64), k (0 <= k <= number of
// penalised coordinates), penalty [c] or None (all 1; 0 = unpenalised: always in the model, never counted in
// k nor returned), y_sq 0-dim (||Y||^2: the stopping rule of every solve is gap <= tol * y_sq),
// unpenalized_pinv [u, u] or None (as lasso_cd), tol, path_ratio in (0, 1), max_bisections, max_sweeps (per
// solve), lambda_min_ratio in (0, 1).
// Path (lasso_select_path.h): start at the unpenalised optimum and lambda_max = max |g_i| / p_i over alive
// penalised i; step lambda down (by path_ratio at most) until >= k penalised coordinates are non-zero (giving
// up below lambda_max * lambda_min_ratio), then narrow the bracket in log lambda (regula falsi alternating
// with bisection) until exactly k, a bracket 0.1% wide, or max_bisections solves. Each solve warm-starts from
// the last solution with fewer than k.
// Outputs: chosen [k] int64 (increasing: the k largest |beta| among penalised alive coordinates; when fewer are
// non-zero, the rest by |gradient| / penalty, then by index), beta [c] (dtype of G) at the chosen lambda, lam
// 0-dim (dtype of G), nnz, solves, sweeps (0-dim int64).
// Empty cases: k = 0 or lambda_max = 0 (q orthogonal to every penalised alive coordinate) run no solve and
// return the unpenalised optimum; c = 0 returns empty tensors.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("lasso_select(Tensor G, Tensor q, int k, Tensor? penalty, Tensor y_sq, Tensor? unpenalized_pinv, "
        "float tol, float path_ratio, int max_bisections, int max_sweeps, float lambda_min_ratio, "
        "bool check_psd=True) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
