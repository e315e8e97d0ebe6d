// Coordinate descent for the Gram-form LASSO with penalty factors (channel selection, DESIGN.md section 3).
//
//   min_b  F(b) = 1/2 b'Gb - q'b + lam * sum_i p_i |b_i|                  G symmetric PSD [c, c], q [c]
//
// This equals 1/2 ||y - Xb||^2 + lam ||p.b||_1 (minus the constant 1/2 ||y||^2) for any X, y with
// X'X = G, X'y = q, ||y||^2 = y_sq; y_sq enters only the duality gap and its tolerance.
//
// Inputs: G [c, c] and q [c] (float32/float64; solved in float64), lam 0-dim (>= 0), beta0 [c] warm start,
// penalty [c] (p_i >= 0; 0 = unpenalised coordinate, as glmnet) or None (all 1), y_sq 0-dim, unpenalized_pinv
// [u, u] = pinv(G[U, U]) for U = {i : G_ii > 0 and lam * p_i == 0} in increasing order, or None (computed
// here when U is non-empty), tol (stop when gap <= tol * y_sq), max_sweeps (coordinate passes).
// Outputs: beta [c] (dtype of G), gap 0-dim (dtype of G, absolute, same units as F), sweeps 0-dim int64.
//
// Contract (lasso_check_gram in lasso_cd_common.h, shared by both ops and both devices; ValueError
// otherwise): G symmetric PSD up to the rounding of the input dtype (rtol 1e-8 for float64, 1e-4 for float32,
// relative to max G_ii). Checked at entry: symmetry of every pair, no negative diagonal entry, no negative
// 2 x 2 minor (O(c^2), messages name the entries), then a Cholesky factorisation of G + rtol * max G_ii * I
// (O(c^3 / 3): the certificate; check_psd=False skips only this step, for callers whose G is PSD by
// construction, e.g. the pruner's Grams built from second moments). The solvers also raise on a pass step with negative curvature or a negative
// duality gap (a y_sq below q' pinv(G) q, i.e. no target y with ||y||^2 = y_sq, gives one too).
// Dead coordinates (G_ii <= 0: a channel that is zero on every calibration row) are removed from the
// problem: beta_i = 0, never divided by, and they do not enter the gap.
//
// Duality gap (derivation). Let r = y - Xb, g = X'r = q - Gb (kept up to date by the solver). The dual of
// the LASSO with penalty factors is  max_t D(t) = t'y - 1/2 ||t||^2  s.t. |X_i't| <= lam p_i for every i,
// i.e. X_U't = 0 for unpenalised coordinates. In Gram terms, with t = s r:
//   ||r||^2 = y_sq - 2 q'b + b'Gb = y_sq - q'b - g'b,   y'r = y_sq - q'b,   X't = s g,
//   D(s r) = s y'r - s^2/2 ||r||^2,   P(b) = 1/2 ||r||^2 + lam sum p_i |b_i|,   gap = P(b) - D(s r) >= P - P*.
// s must satisfy |s| <= s_max = min_{i penalised, g_i != 0} lam p_i / |g_i|; the best such s is
// clip(y'r / ||r||^2, -s_max, s_max) (tighter than sklearn's s = min(1, s_max)). The unpenalised
// constraints X_U't = 0 need g_U = 0: before every gap evaluation the solver minimises F exactly over the
// unpenalised block (b_U += d, d = pinv(G_UU) g_U, then g -= G[:, U] d; g_U lies in range(G_UU) because
// g_U = X_U'r), after which g_U = 0 up to rounding and the penalised-only s_max gives a valid gap.
// Passes alternate between the active set (non-zero or unpenalised coordinates) and full sweeps: a full
// sweep follows whenever the active subproblem's own gap is below tolerance, so the returned gap is always
// the full problem's.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("lasso_cd(Tensor G, Tensor q, Tensor lam, Tensor beta0, Tensor? penalty, Tensor y_sq, "
        "Tensor? unpenalized_pinv, float tol, int max_sweeps, bool check_psd=True) -> (Tensor, Tensor, Tensor)");
}
