// CUDA kernel of gnnaccel::pruned_linear. On the GPU the gathered matrix is cheap to form (bandwidth is
// plentiful and cuBLAS wants a dense operand), so this gathers with index_select and calls addmm. Indices are
// checked by index_select's device-side asserts (no host synchronisation).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include "../../utils.h"

namespace gnnaccel {
namespace {

at::Tensor pruned_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& rows, const std::optional<at::Tensor>& keep) {
  GNNACCEL_CHECK_2D(x, "x");
  GNNACCEL_CHECK_2D(weight, "weight");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x must be floating point, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight dtype must match x dtype");
  GNNACCEL_CHECK_SAME_DEVICE(weight, x, "weight", "x");
  const int64_t num_cols = keep.has_value() ? keep->numel() : x.size(1);
  TORCH_CHECK(weight.size(0) == num_cols, "weight has ", weight.size(0), " rows but ", num_cols,
              " input channels are selected");
  if (bias.has_value()) {
    GNNACCEL_CHECK_1D(*bias, "bias");
    TORCH_CHECK(bias->numel() == weight.size(1), "bias must have one entry per output channel");
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "bias dtype must match x dtype");
    GNNACCEL_CHECK_SAME_DEVICE(*bias, x, "bias", "x");
  }
  if (rows.has_value()) {
    GNNACCEL_CHECK_1D(*rows, "rows");
    GNNACCEL_CHECK_INDEX(*rows, "rows");
    GNNACCEL_CHECK_SAME_DEVICE(*rows, x, "rows", "x");
  }
  if (keep.has_value()) {
    GNNACCEL_CHECK_1D(*keep, "keep");
    GNNACCEL_CHECK_INDEX(*keep, "keep");
    GNNACCEL_CHECK_SAME_DEVICE(*keep, x, "keep", "x");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor z = x;
  if (rows.has_value()) z = z.index_select(0, *rows);
  if (keep.has_value()) z = z.index_select(1, *keep);
  if (bias.has_value()) return at::addmm(*bias, z, weight);
  return at::mm(z, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) { m.impl("pruned_linear", &pruned_linear_cuda); }

}  // namespace gnnaccel
