// CUDA kernel of gnnaccel::sage_fused: the aggregation runs through gnnaccel::aggregate's CUDA kernel and the
// projection is one cuBLAS call on [aggregated || root] (on the GPU the intermediate is cheap; the fusion that
// matters there is the Triton kernel in kernels/).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>

#include "../sage_fused_common.h"

namespace gnnaccel {
namespace {

at::Tensor sage_fused_cuda(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                           const std::optional<at::Tensor>& edge_weight, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& rows,
                           c10::string_view reduce_name, bool root) {
  check_sage_fused_inputs(rowptr, col, x, edge_weight, weight, bias, rows, reduce_name, root);
  const c10::cuda::CUDAGuard guard(x.device());
  static auto aggregate = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("gnnaccel::aggregate", "")
                              .typed<std::tuple<at::Tensor, at::Tensor>(
                                  const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                  c10::string_view, bool)>();
  at::Tensor z = std::get<0>(aggregate.call(rowptr, col, x, edge_weight, rows, reduce_name, /*compute_arg=*/false));
  if (root) {
    at::Tensor self = rows.has_value() ? x.index_select(0, *rows) : x.narrow(0, 0, rowptr.numel() - 1);
    z = at::cat({z, self}, 1);
  }
  if (bias.has_value()) return at::addmm(*bias, z, weight);
  return at::mm(z, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) { m.impl("sage_fused", &sage_fused_cuda); }

}  // namespace gnnaccel
