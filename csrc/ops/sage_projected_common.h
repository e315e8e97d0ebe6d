// Argument checks and output allocation shared by the CPU and CUDA kernels of gnnaccel::sage_projected.
#pragma once

#include "csr_checks.h"

namespace gnnaccel {

// Returns D, the output width (xw holds D neighbour columns, then D root columns when root is set).
inline int64_t check_sage_projected_inputs(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& xw,
                                           const std::optional<at::Tensor>& edge_weight,
                                           const std::optional<at::Tensor>& bias,
                                           const std::optional<at::Tensor>& rows, c10::string_view reduce_name,
                                           bool root) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  TORCH_CHECK(reduce == Reduce::kSum || reduce == Reduce::kMean,
              "sage_projected supports reduce 'sum' and 'mean', got '", std::string(reduce_name), "'");
  check_csr_features(rowptr, col, xw, edge_weight, rows);
  TORCH_CHECK(at::isFloatingType(xw.scalar_type()), "xw must be floating point, got ", xw.scalar_type());
  TORCH_CHECK(!root || xw.size(1) % 2 == 0,
              "with root, xw must hold [neighbour || root] projections of equal width, got an odd width ",
              xw.size(1));
  const int64_t width = root ? xw.size(1) / 2 : xw.size(1);
  if (bias.has_value()) {
    GNNACCEL_CHECK_1D(*bias, "bias");
    TORCH_CHECK(bias->numel() == width, "bias must have ", width, " entries (the output width), got ",
                bias->numel());
    TORCH_CHECK(bias->scalar_type() == xw.scalar_type(), "bias dtype ", bias->scalar_type(), " must match xw dtype ",
                xw.scalar_type());
    GNNACCEL_CHECK_SAME_DEVICE(*bias, xw, "bias", "xw");
    GNNACCEL_CHECK_CONTIGUOUS(*bias, "bias");
  }
  return width;
}

}  // namespace gnnaccel
