// Argument checks shared by the CPU and CUDA kernels of gnnaccel::sage_fused.
#pragma once

#include "csr_checks.h"

namespace gnnaccel {

inline void check_sage_fused_inputs(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                                    const std::optional<at::Tensor>& edge_weight, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& rows,
                                    c10::string_view reduce_name, bool root) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  TORCH_CHECK(reduce == Reduce::kSum || reduce == Reduce::kMean, "sage_fused supports reduce 'sum' and 'mean', got '",
              std::string(reduce_name), "'");
  check_csr_features(rowptr, col, x, edge_weight, rows);
  GNNACCEL_CHECK_2D(weight, "weight");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight dtype must match x dtype");
  GNNACCEL_CHECK_SAME_DEVICE(weight, x, "weight", "x");
  const int64_t width = x.size(1) * (root ? 2 : 1);
  TORCH_CHECK(weight.size(0) == width, "weight must have ", width, " rows (x channels", root ? " times 2 with root" : "",
              "), got ", weight.size(0));
  if (bias.has_value()) {
    GNNACCEL_CHECK_1D(*bias, "bias");
    TORCH_CHECK(bias->numel() == weight.size(1), "bias must have ", weight.size(1), " entries, got ", bias->numel());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "bias dtype must match x dtype");
    GNNACCEL_CHECK_SAME_DEVICE(*bias, x, "bias", "x");
  }
}

}  // namespace gnnaccel
