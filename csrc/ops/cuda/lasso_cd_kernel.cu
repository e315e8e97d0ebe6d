// CUDA kernel of gnnaccel::lasso_cd: ONE thread block owns the whole solve (see ../lasso_cd.cpp for the
// problem, the gap and the pass schedule, which this kernel follows step for step like the CPU kernel).
// The coordinate loop is sequential; every thread evaluates the same (uniform) coordinate update, and the
// O(c) update g -= G[:, i] * delta is split across threads (G symmetric: row i, coalesced). The gap's dot
// products and minima are block reductions through shared memory. Everything is float64; a solve is a single
// launch, so a lambda path costs one launch per lambda and no host round trip inside a solve.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <math_constants.h>

#include <limits>

#include "../lasso_cd_common.h"
#include "../lasso_select_path.h"

namespace gnnaccel {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_min(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmin(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / min; every thread gets the result. `scratch` holds kWarps doubles.
__device__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = threadIdx.x < kWarps ? scratch[threadIdx.x] : 0.0;
  if (warp == 0) v = warp_sum(v);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}
__device__ double block_min(double v, double* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_min(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = threadIdx.x < kWarps ? scratch[threadIdx.x] : CUDART_INF;
  if (warp == 0) v = warp_min(v);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

struct DeviceGaps {
  double full, active;
};

__global__ void __launch_bounds__(kThreads) lasso_cd_kernel(
    const double* __restrict__ G, const double* __restrict__ q, const double* __restrict__ p,
    const double* __restrict__ lam_ptr, const double* __restrict__ y_sq_ptr, const int64_t* __restrict__ unpen,
    int64_t nu, const double* __restrict__ pinv, int64_t c, double tol, int64_t max_sweeps, double curvature_rtol,
    double rtol, double* b, double* g, double* d, int64_t* active, int* in_active, double* b0, double* g0,
    double* gap_out, int64_t* sweeps_out, double* violation_out) {
  __shared__ double scratch[kWarps];
  __shared__ int64_t num_active;
  const int tid = threadIdx.x;
  const double lam = *lam_ptr, y_sq = *y_sq_ptr;
  const double tol_abs = tol * y_sq;
  const double gap_floor = -(tol_abs + rtol * y_sq);  // the contract checks: see lasso_check_outcome

  // g = q - G b over the non-zero warm start; dead coordinates start (and stay) at 0.
  for (int64_t j = tid; j < c; j += kThreads) {
    if (!(G[j * c + j] > 0)) b[j] = 0;
    g[j] = q[j];
  }
  __syncthreads();
  for (int64_t i = 0; i < c; ++i) {
    const double bi = b[i];
    if (bi == 0) continue;
    const double* row = G + i * c;
    for (int64_t j = tid; j < c; j += kThreads) g[j] -= bi * row[j];
  }
  __syncthreads();

  auto rebuild_active = [&]() {
    for (int64_t i = tid; i < c; i += kThreads)
      in_active[i] = (G[i * c + i] > 0 && (b[i] != 0 || p[i] == 0)) ? 1 : 0;
    __syncthreads();
    if (tid == 0) {  // O(c) compaction by one thread: negligible next to a pass
      int64_t n = 0;
      for (int64_t i = 0; i < c; ++i)
        if (in_active[i]) active[n++] = i;
      num_active = n;
    }
    __syncthreads();
  };

  // One coordinate step; uniform control flow (every thread computes the same nb).
  auto coordinate = [&](int64_t i) {
    const double* row = G + i * c;
    const double gii = row[i];
    if (!(gii > 0)) return;
    const double old = b[i];
    const double z = g[i] + gii * old;
    __syncthreads();  // everyone has read g[i], b[i] before anyone writes
    const double az = fabs(z) - lam * p[i];
    const double nb = az > 0 ? copysign(az, z) / gii : 0.0;
    if (nb != old) {
      const double delta = old - nb;
      for (int64_t j = tid; j < c; j += kThreads) g[j] += delta * row[j];
      if (tid == 0) b[i] = nb;
      __syncthreads();
    }
  };

  auto unpenalized_step = [&]() {
    if (nu == 0) return;
    for (int64_t k = tid; k < nu; k += kThreads) {
      const double* mrow = pinv + k * nu;
      double acc = 0;
      for (int64_t l = 0; l < nu; ++l) acc += mrow[l] * g[unpen[l]];
      d[k] = acc;
    }
    __syncthreads();
    for (int64_t j = tid; j < c; j += kThreads) {
      double acc = 0;
      for (int64_t k = 0; k < nu; ++k) acc += G[unpen[k] * c + j] * d[k];  // G symmetric: G[j, U_k]
      g[j] -= acc;
    }
    for (int64_t k = tid; k < nu; k += kThreads) b[unpen[k]] += d[k];
    __syncthreads();
  };

  auto gaps = [&]() {
    double qb = 0, gb = 0, l1 = 0;
    double smax = CUDART_INF, smax_active = CUDART_INF;
    for (int64_t i = tid; i < c; i += kThreads) {
      const double bi = b[i], gi = g[i];
      if (bi != 0) {
        qb += q[i] * bi;
        gb += gi * bi;
        l1 += p[i] * fabs(bi);
      }
      if (p[i] > 0 && G[i * c + i] > 0 && gi != 0) {
        const double s = lam * p[i] / fabs(gi);
        smax = fmin(smax, s);
        if (in_active[i]) smax_active = fmin(smax_active, s);
      }
    }
    qb = block_sum(qb, scratch);
    gb = block_sum(gb, scratch);
    l1 = block_sum(l1, scratch);
    smax = block_min(smax, scratch);
    smax_active = block_min(smax_active, scratch);
    const double rr = y_sq - qb - gb, yr = y_sq - qb;
    const double primal = 0.5 * rr + lam * l1;
    auto gap_for = [&](double bound) {
      double s = 0;
      if (rr > 0) s = fmax(-bound, fmin(bound, yr / rr));
      return primal - (s * yr - 0.5 * s * s * rr);
    };
    return DeviceGaps{gap_for(smax), gap_for(smax_active)};
  };

  auto snapshot = [&]() {
    for (int64_t j = tid; j < c; j += kThreads) {
      b0[j] = b[j];
      g0[j] = g[j];
    }
    __syncthreads();
  };
  // The solver's share of the contract checks (as the CPU solver's run_coordinate_descent): a negative gap, or
  // a step since the snapshot with d'Gd = d'(g0 - g) < -curvature_rtol * sum_i G_ii d_i^2. Uniform result.
  int64_t sweeps = 0;
  auto violated = [&](const DeviceGaps& gp) {
    if (gp.full < gap_floor) {
      if (tid == 0) {
        violation_out[0] = 2;
        violation_out[1] = gp.full;
        violation_out[2] = y_sq;
        *gap_out = gp.full;
        *sweeps_out = sweeps;
      }
      return true;
    }
    double curv = 0, diag_curv = 0;
    for (int64_t j = tid; j < c; j += kThreads) {
      const double dj = b[j] - b0[j];
      if (dj != 0) {
        curv += dj * (g0[j] - g[j]);
        diag_curv += G[j * c + j] * dj * dj;
      }
    }
    curv = block_sum(curv, scratch);
    diag_curv = block_sum(diag_curv, scratch);
    if (curv < -curvature_rtol * diag_curv) {
      if (tid == 0) {
        violation_out[0] = 1;
        violation_out[1] = curv;
        violation_out[2] = diag_curv;
        *gap_out = gp.full;
        *sweeps_out = sweeps;
      }
      return true;
    }
    return false;
  };

  if (tid == 0) violation_out[0] = 0;
  snapshot();
  rebuild_active();
  unpenalized_step();
  DeviceGaps gap = gaps();
  if (violated(gap)) return;
  int64_t since_full = 0;
  bool need_full = true;
  while (gap.full > tol_abs && sweeps < max_sweeps) {
    snapshot();
    if (need_full || since_full >= 10) {
      for (int64_t i = 0; i < c; ++i) coordinate(i);
      __syncthreads();
      rebuild_active();
      since_full = 0;
    } else {
      const int64_t n = num_active;
      for (int64_t t = 0; t < n; ++t) coordinate(active[t]);
      __syncthreads();
      ++since_full;
    }
    ++sweeps;
    unpenalized_step();
    gap = gaps();
    if (violated(gap)) return;
    need_full = gap.active <= 0.5 * tol_abs;
  }
  if (tid == 0) {
    *gap_out = gap.full;
    *sweeps_out = sweeps;
  }
}

// Raises the contract violation a solve wrote to `violation` [kind, value, reference] (one host sync).
void check_violation(const at::Tensor& violation, const char* op) {
  const at::Tensor v = violation.cpu();
  const double* h = v.data_ptr<double>();
  lasso_check_outcome(static_cast<int64_t>(h[0]), h[1], h[2], op);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lasso_cd_cuda(const at::Tensor& G, const at::Tensor& q,
                                                             const at::Tensor& lam, const at::Tensor& beta0,
                                                             const std::optional<at::Tensor>& penalty,
                                                             const at::Tensor& y_sq,
                                                             const std::optional<at::Tensor>& unpenalized_pinv,
                                                             double tol, int64_t max_sweeps, bool check_psd) {
  TORCH_CHECK(G.is_cuda(), "lasso_cd_cuda got a non-CUDA tensor");
  const c10::cuda::CUDAGuard guard(G.device());
  LassoPrepared in = lasso_prepare(G, q, lam, beta0, penalty, y_sq, unpenalized_pinv, tol, max_sweeps, check_psd);
  const int64_t c = in.G.size(0);
  auto opts = in.G.options();
  at::Tensor beta = in.beta0.clone();
  at::Tensor grad = at::empty({c}, opts);
  at::Tensor d = at::empty({std::max<int64_t>(in.unpen_idx.numel(), 1)}, opts);
  at::Tensor active = at::empty({std::max<int64_t>(c, 1)}, opts.dtype(at::kLong));
  at::Tensor in_active = at::empty({std::max<int64_t>(c, 1)}, opts.dtype(at::kInt));
  at::Tensor snap = at::empty({2, std::max<int64_t>(c, 1)}, opts);
  at::Tensor gap = at::empty({}, opts);
  at::Tensor sweeps = at::empty({}, opts.dtype(at::kLong));
  at::Tensor violation = at::empty({3}, opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  lasso_cd_kernel<<<1, kThreads, 0, stream>>>(
      in.G.data_ptr<double>(), in.q.data_ptr<double>(), in.penalty.data_ptr<double>(), in.lam.data_ptr<double>(),
      in.y_sq.data_ptr<double>(), in.unpen_idx.data_ptr<int64_t>(), in.unpen_idx.numel(),
      in.unpen_pinv.data_ptr<double>(), c, tol, max_sweeps, kLassoCurvatureRtol * in.rtol, in.rtol,
      beta.data_ptr<double>(), grad.data_ptr<double>(), d.data_ptr<double>(), active.data_ptr<int64_t>(),
      in_active.data_ptr<int>(), snap[0].data_ptr<double>(), snap[1].data_ptr<double>(), gap.data_ptr<double>(),
      sweeps.data_ptr<int64_t>(), violation.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  check_violation(violation, "lasso_cd");  // one host sync
  return {beta.to(G.scalar_type()), gap.to(G.scalar_type()), sweeps};
}

// gnnaccel::lasso_select on CUDA: the host walks the path of ../lasso_select_path.h and launches one solve
// per lambda (the full problem each time: the one-block kernel keeps its own active set); beta and the
// gradient come back to the host after each solve to count the non-zeros and pick the next lambda.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lasso_select_cuda(
    const at::Tensor& G, const at::Tensor& q, int64_t k, const std::optional<at::Tensor>& penalty,
    const at::Tensor& y_sq, const std::optional<at::Tensor>& unpenalized_pinv, double tol, double path_ratio,
    int64_t max_bisections, int64_t max_sweeps, double lambda_min_ratio, bool check_psd) {
  TORCH_CHECK(G.is_cuda(), "lasso_select_cuda got a non-CUDA tensor");
  const c10::cuda::CUDAGuard guard(G.device());
  const LassoPrepared in = lasso_select_prepare(G, q, k, penalty, y_sq, unpenalized_pinv, tol, path_ratio,
                                                max_bisections, max_sweeps, lambda_min_ratio, check_psd);
  const PathCoordinates coords = path_coordinates(in);
  const int64_t c = in.G.size(0), nu = in.unpen_idx.numel();
  auto opts = in.G.options();
  at::Tensor beta = at::zeros({c}, opts);
  at::Tensor grad = at::empty({c}, opts);
  at::Tensor d = at::empty({std::max<int64_t>(nu, 1)}, opts);
  at::Tensor active = at::empty({std::max<int64_t>(c, 1)}, opts.dtype(at::kLong));
  at::Tensor in_active = at::empty({std::max<int64_t>(c, 1)}, opts.dtype(at::kInt));
  at::Tensor snap = at::empty({2, std::max<int64_t>(c, 1)}, opts);
  at::Tensor gap = at::empty({}, opts);
  at::Tensor sweeps = at::empty({}, opts.dtype(at::kLong));
  at::Tensor violation = at::empty({3}, opts);
  at::Tensor lam = at::empty({}, opts);
  auto to_host = [c](const at::Tensor& t) {
    const at::Tensor h = t.cpu();
    return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + c);
  };
  PathPoint start;  // the unpenalised optimum b_U = pinv(G_UU) q_U
  if (nu > 0) beta.index_put_({in.unpen_idx}, at::mv(in.unpen_pinv, in.q.index_select(0, in.unpen_idx)));
  start.b = to_host(beta);
  start.g = to_host(in.q - at::mv(in.G, beta));
  auto stream = at::cuda::getCurrentCUDAStream();
  auto solve = [&](double lam_v, const PathPoint& from, PathPoint& to) -> int64_t {
    beta.copy_(at::from_blob(const_cast<double*>(from.b.data()), {c}, at::TensorOptions().dtype(at::kDouble)));
    lam.fill_(lam_v);
    lasso_cd_kernel<<<1, kThreads, 0, stream>>>(
        in.G.data_ptr<double>(), in.q.data_ptr<double>(), in.penalty.data_ptr<double>(), lam.data_ptr<double>(),
        in.y_sq.data_ptr<double>(), in.unpen_idx.data_ptr<int64_t>(), nu, in.unpen_pinv.data_ptr<double>(), c, tol,
        max_sweeps, kLassoCurvatureRtol * in.rtol, in.rtol, beta.data_ptr<double>(), grad.data_ptr<double>(),
        d.data_ptr<double>(), active.data_ptr<int64_t>(), in_active.data_ptr<int>(), snap[0].data_ptr<double>(),
        snap[1].data_ptr<double>(), gap.data_ptr<double>(), sweeps.data_ptr<int64_t>(), violation.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    check_violation(violation, "lasso_select");
    to.b = to_host(beta);
    to.g = to_host(grad);
    return sweeps.item<int64_t>();
  };
  const PathOutcome out = walk_lasso_path(solve, std::move(start), coords,
                                          PathSettings{k, path_ratio, max_bisections, lambda_min_ratio});
  return lasso_select_outputs(out, coords, k, G.scalar_type(), G.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) {
  m.impl("lasso_cd", &lasso_cd_cuda);
  m.impl("lasso_select", &lasso_select_cuda);
}

}  // namespace gnnaccel
