// CUDA kernel of gnnaccel::sage_projected: one warp per output row, lanes stride over the D output channels,
// accumulation in float32 for half/bfloat16 (acc_type), root term and bias added before the single store.
// Out-of-range indices trip a device assert, as in the aggregate kernel (Graph validates on construction).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../sage_projected_common.h"
#include "warp_rows.cuh"

namespace gnnaccel {
namespace {

template <typename scalar_t, typename index_t, bool kMean, bool kWeighted>
__global__ void sage_projected_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                                      const scalar_t* __restrict__ xw, const scalar_t* __restrict__ w,
                                      const scalar_t* __restrict__ root, const scalar_t* __restrict__ bias,
                                      const index_t* __restrict__ rows, int64_t num_out, int64_t num_graph_rows,
                                      int64_t num_src, int64_t width, int64_t xw_stride, int64_t root_stride,
                                      scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  int64_t warp, row;
  int lane;
  if (!warp_output_row(rows, num_out, num_graph_rows, warp, row, lane)) return;
  const int64_t begin = rowptr[row], end = rowptr[row + 1];
  for (int64_t c = lane; c < width; c += 32) {
    acc_t acc = 0;
    for (int64_t e = begin; e < end; ++e) {
      const int64_t j = col[e];
      CUDA_KERNEL_ASSERT(j >= 0 && j < num_src);
      acc_t v = static_cast<acc_t>(xw[j * xw_stride + c]);
      if (kWeighted) v *= static_cast<acc_t>(w[e]);
      acc += v;
    }
    if (kMean && end > begin) acc /= acc_t(end - begin);
    if (root != nullptr) acc += static_cast<acc_t>(root[warp * root_stride + c]);
    if (bias != nullptr) acc += static_cast<acc_t>(bias[c]);
    out[warp * width + c] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
struct ProjectedArgs {
  const index_t* rowptr;
  const index_t* col;
  const scalar_t* xw;
  const scalar_t* w;
  const scalar_t* root;
  const scalar_t* bias;
  const index_t* rows;
  int64_t num_out, num_graph_rows, num_src, width, xw_stride, root_stride;
  scalar_t* out;
};

// Launch outside the AT_DISPATCH lambdas: macros cannot be defined inside a macro argument.
template <bool kMean, typename scalar_t, typename index_t>
void launch(const ProjectedArgs<scalar_t, index_t>& a, int64_t blocks, int threads, cudaStream_t stream) {
  if (a.w != nullptr)
    sage_projected_kernel<scalar_t, index_t, kMean, true><<<blocks, threads, 0, stream>>>(
        a.rowptr, a.col, a.xw, a.w, a.root, a.bias, a.rows, a.num_out, a.num_graph_rows, a.num_src, a.width, a.xw_stride, a.root_stride,
        a.out);
  else
    sage_projected_kernel<scalar_t, index_t, kMean, false><<<blocks, threads, 0, stream>>>(
        a.rowptr, a.col, a.xw, a.w, a.root, a.bias, a.rows, a.num_out, a.num_graph_rows, a.num_src, a.width, a.xw_stride, a.root_stride,
        a.out);
}

at::Tensor sage_projected_cuda(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& xw,
                               const std::optional<at::Tensor>& root, const std::optional<at::Tensor>& edge_weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& rows,
                               c10::string_view reduce_name) {
  const int64_t num_out = check_sage_projected_inputs(rowptr, col, xw, root, edge_weight, bias, rows, reduce_name);
  const int64_t width = xw.size(1);
  const bool mean = parse_reduce(std::string(reduce_name)) == Reduce::kMean;
  const c10::cuda::CUDAGuard guard(xw.device());
  const int64_t num_graph_rows = rowptr.numel() - 1;
  auto out = at::empty({num_out, width}, xw.options());
  if (num_out == 0 || width == 0) return out;
  constexpr int kThreads = 256;
  const int64_t blocks = (num_out * 32 + kThreads - 1) / kThreads;
  auto stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xw.scalar_type(), "sage_projected_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "sage_projected_cuda_index", [&] {
      const ProjectedArgs<scalar_t, index_t> a{
          rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), xw.data_ptr<scalar_t>(),
          edge_weight.has_value() ? edge_weight->data_ptr<scalar_t>() : nullptr,
          root.has_value() ? root->data_ptr<scalar_t>() : nullptr,
          bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr,
          rows.has_value() ? rows->data_ptr<index_t>() : nullptr,
          num_out, num_graph_rows, xw.size(0), width, xw.stride(0), root.has_value() ? root->stride(0) : 0,
          out.data_ptr<scalar_t>()};
      if (mean) launch<true>(a, blocks, kThreads, stream);
      else launch<false>(a, blocks, kThreads, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) { m.impl("sage_projected", &sage_projected_cuda); }

}  // namespace gnnaccel
