// CUDA kernel of gnnaccel::aggregate: one warp per output row, lanes stride over channels, accumulation in
// float32 for half/bfloat16 inputs (acc_type). Same empty-row contract as the CPU kernel (0 everywhere,
// arg = -1). Out-of-range indices trip a device assert: graphs built through gnnaccel.Graph are validated
// once on construction, so the hot loop does not pay for a host round trip.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "../aggregate_common.h"
#include "warp_rows.cuh"

namespace gnnaccel {
namespace {

template <typename acc_t, Reduce R>
struct DeviceReducer {
  static __device__ __forceinline__ acc_t init() {
    if (R == Reduce::kMax) return -std::numeric_limits<acc_t>::infinity();
    if (R == Reduce::kMin) return std::numeric_limits<acc_t>::infinity();
    return acc_t(0);
  }
  static __device__ __forceinline__ bool update(acc_t& acc, acc_t v) {
    if (R == Reduce::kMax) {
      if (v > acc || (v != v && acc == acc)) { acc = v; return true; }
      return false;
    }
    if (R == Reduce::kMin) {
      if (v < acc || (v != v && acc == acc)) { acc = v; return true; }
      return false;
    }
    acc += v;
    return false;
  }
  static __device__ __forceinline__ acc_t write(acc_t acc, int64_t count) {
    if (count == 0) return acc_t(0);
    if (R == Reduce::kMean) return acc / acc_t(count);
    return acc;
  }
};

template <typename scalar_t, typename index_t, Reduce R, bool kWeighted>
__global__ void aggregate_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                                 const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                 const index_t* __restrict__ rows, int64_t num_out, int64_t num_graph_rows,
                                 int64_t num_src, int64_t channels, scalar_t* __restrict__ out,
                                 int64_t* __restrict__ arg) {
  using acc_t = at::acc_type<scalar_t, true>;
  constexpr bool kArg = R == Reduce::kMax || R == Reduce::kMin;
  int64_t warp, row;
  int lane;
  if (!warp_output_row(rows, num_out, num_graph_rows, warp, row, lane)) return;
  const int64_t begin = rowptr[row], end = rowptr[row + 1];
  for (int64_t c = lane; c < channels; c += 32) {
    acc_t acc = DeviceReducer<acc_t, R>::init();
    int64_t best = -1;
    for (int64_t e = begin; e < end; ++e) {
      const int64_t j = col[e];
      CUDA_KERNEL_ASSERT(j >= 0 && j < num_src);
      acc_t v = static_cast<acc_t>(x[j * channels + c]);
      if (kWeighted) v *= static_cast<acc_t>(w[e]);
      if (DeviceReducer<acc_t, R>::update(acc, v)) best = e;
    }
    out[warp * channels + c] = static_cast<scalar_t>(DeviceReducer<acc_t, R>::write(acc, end - begin));
    if (kArg && arg != nullptr) arg[warp * channels + c] = best;
  }
}

template <typename scalar_t, typename index_t>
struct AggregateArgs {
  const index_t* rowptr;
  const index_t* col;
  const scalar_t* x;
  const scalar_t* w;
  const index_t* rows;
  int64_t num_out, num_graph_rows, num_src, channels;
  scalar_t* out;
  int64_t* arg;
};

// Launch outside the AT_DISPATCH lambdas: macros cannot be defined inside a macro argument.
template <Reduce R, typename scalar_t, typename index_t>
void launch(const AggregateArgs<scalar_t, index_t>& a, int64_t blocks, int threads, cudaStream_t stream) {
  if (a.w != nullptr)
    aggregate_kernel<scalar_t, index_t, R, true><<<blocks, threads, 0, stream>>>(
        a.rowptr, a.col, a.x, a.w, a.rows, a.num_out, a.num_graph_rows, a.num_src, a.channels, a.out, a.arg);
  else
    aggregate_kernel<scalar_t, index_t, R, false><<<blocks, threads, 0, stream>>>(
        a.rowptr, a.col, a.x, a.w, a.rows, a.num_out, a.num_graph_rows, a.num_src, a.channels, a.out, a.arg);
}

std::tuple<at::Tensor, at::Tensor> aggregate_cuda(const at::Tensor& rowptr, const at::Tensor& col,
                                                  const at::Tensor& x, const std::optional<at::Tensor>& edge_weight,
                                                  const std::optional<at::Tensor>& rows, c10::string_view reduce_name,
                                                  bool compute_arg) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  check_csr_features(rowptr, col, x, edge_weight, rows);
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x must be floating point, got ", x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t num_graph_rows = rowptr.numel() - 1;
  at::Tensor out, arg;
  std::tie(out, arg) = empty_aggregate_outputs(rowptr, x, rows, reduce, compute_arg);
  const int64_t num_out = out.size(0);
  const int64_t channels = x.size(1);
  const bool with_arg = compute_arg && reduce_has_arg(reduce);
  if (num_out == 0 || channels == 0) return {out, arg};
  constexpr int kThreads = 256;
  const int64_t blocks = (num_out * 32 + kThreads - 1) / kThreads;
  auto stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "aggregate_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "aggregate_cuda_index", [&] {
      const scalar_t* w = edge_weight.has_value() ? edge_weight->data_ptr<scalar_t>() : nullptr;
      const index_t* rw = rows.has_value() ? rows->data_ptr<index_t>() : nullptr;
      int64_t* arg_ptr = with_arg ? arg.data_ptr<int64_t>() : nullptr;
      const AggregateArgs<scalar_t, index_t> a{rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(),
                                               x.data_ptr<scalar_t>(), w, rw, num_out, num_graph_rows, x.size(0),
                                               channels, out.data_ptr<scalar_t>(), arg_ptr};
      switch (reduce) {
        case Reduce::kSum: launch<Reduce::kSum>(a, blocks, kThreads, stream); break;
        case Reduce::kMean: launch<Reduce::kMean>(a, blocks, kThreads, stream); break;
        case Reduce::kMax: launch<Reduce::kMax>(a, blocks, kThreads, stream); break;
        case Reduce::kMin: launch<Reduce::kMin>(a, blocks, kThreads, stream); break;
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, arg};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) { m.impl("aggregate", &aggregate_cuda); }

}  // namespace gnnaccel
