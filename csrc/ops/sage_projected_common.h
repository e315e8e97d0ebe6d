// Argument checks shared by the CPU and CUDA kernels of gnnaccel::sage_projected.
#pragma once

#include "csr_checks.h"

namespace gnnaccel {

// Returns the number of output rows.
inline int64_t check_sage_projected_inputs(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& xw,
                                           const std::optional<at::Tensor>& root,
                                           const std::optional<at::Tensor>& edge_weight,
                                           const std::optional<at::Tensor>& bias,
                                           const std::optional<at::Tensor>& rows, c10::string_view reduce_name) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  TORCH_CHECK(reduce == Reduce::kSum || reduce == Reduce::kMean,
              "sage_projected supports reduce 'sum' and 'mean', got '", std::string(reduce_name), "'");
  check_csr_features(rowptr, col, xw, edge_weight, rows, /*x_row_strided_ok=*/true);
  TORCH_CHECK(at::isFloatingType(xw.scalar_type()), "xw must be floating point, got ", xw.scalar_type());
  const int64_t num_out = rows.has_value() ? rows->numel() : rowptr.numel() - 1;
  const int64_t width = xw.size(1);
  if (root.has_value()) {
    GNNACCEL_CHECK_2D(*root, "root");
    TORCH_CHECK(root->size(0) == num_out && root->size(1) == width, "root must be [", num_out, ", ", width,
                "] (one row per output row, xw's width), got ", root->sizes());
    TORCH_CHECK(root->scalar_type() == xw.scalar_type(), "root dtype ", root->scalar_type(), " must match xw dtype ",
                xw.scalar_type());
    GNNACCEL_CHECK_SAME_DEVICE(*root, xw, "root", "xw");
    TORCH_CHECK((width <= 1 || root->stride(1) == 1) && (num_out <= 1 || root->stride(0) >= width),
                "root must be row-major with contiguous channels (stride(1) == 1), got strides ", root->strides());
  }
  if (bias.has_value()) {
    GNNACCEL_CHECK_1D(*bias, "bias");
    TORCH_CHECK(bias->numel() == width, "bias must have ", width, " entries (xw's width), got ", bias->numel());
    TORCH_CHECK(bias->scalar_type() == xw.scalar_type(), "bias dtype ", bias->scalar_type(), " must match xw dtype ",
                xw.scalar_type());
    GNNACCEL_CHECK_SAME_DEVICE(*bias, xw, "bias", "xw");
    GNNACCEL_CHECK_CONTIGUOUS(*bias, "bias");
  }
  return num_out;
}

}  // namespace gnnaccel
