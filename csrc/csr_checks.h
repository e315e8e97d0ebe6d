// Argument checks shared by every operator that reads a CSR graph (rowptr, col, optional edge weights and
// row subset) together with a node-feature matrix x: the CPU and CUDA kernels of aggregate and sage_fused.
#pragma once

#include "utils.h"

namespace gnnaccel {

// x must be contiguous, or with x_row_strided_ok only row-major with unit channel stride (a column block
// of a wider matrix, e.g. the first D columns of [x W_l | x W_r]).
inline void check_csr_features(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                               const std::optional<at::Tensor>& edge_weight, const std::optional<at::Tensor>& rows,
                               bool x_row_strided_ok = false) {
  GNNACCEL_CHECK_1D(rowptr, "rowptr");
  GNNACCEL_CHECK_1D(col, "col");
  GNNACCEL_CHECK_2D(x, "x");
  GNNACCEL_CHECK_INDEX(rowptr, "rowptr");
  TORCH_CHECK(col.scalar_type() == rowptr.scalar_type(), "col and rowptr must share a dtype, got ",
              col.scalar_type(), " and ", rowptr.scalar_type());
  TORCH_CHECK(rowptr.numel() >= 1, "rowptr must have at least one entry (num_rows + 1)");
  GNNACCEL_CHECK_SAME_DEVICE(rowptr, x, "rowptr", "x");
  GNNACCEL_CHECK_SAME_DEVICE(col, x, "col", "x");
  GNNACCEL_CHECK_CONTIGUOUS(rowptr, "rowptr");
  GNNACCEL_CHECK_CONTIGUOUS(col, "col");
  if (x_row_strided_ok) {
    TORCH_CHECK((x.size(1) <= 1 || x.stride(1) == 1) && (x.size(0) <= 1 || x.stride(0) >= x.size(1)),
                "x must be row-major with contiguous channels (stride(1) == 1, stride(0) >= size(1)), got strides ",
                x.strides());
  } else {
    GNNACCEL_CHECK_CONTIGUOUS(x, "x");
  }
  if (edge_weight.has_value()) {
    GNNACCEL_CHECK_1D(*edge_weight, "edge_weight");
    TORCH_CHECK(edge_weight->numel() == col.numel(), "edge_weight has ", edge_weight->numel(),
                " entries but the graph has ", col.numel(), " edges");
    TORCH_CHECK(edge_weight->scalar_type() == x.scalar_type(), "edge_weight dtype ", edge_weight->scalar_type(),
                " must match x dtype ", x.scalar_type());
    GNNACCEL_CHECK_SAME_DEVICE(*edge_weight, x, "edge_weight", "x");
    GNNACCEL_CHECK_CONTIGUOUS(*edge_weight, "edge_weight");
  }
  if (rows.has_value()) {
    GNNACCEL_CHECK_1D(*rows, "rows");
    TORCH_CHECK(rows->scalar_type() == rowptr.scalar_type(), "rows dtype ", rows->scalar_type(),
                " must match rowptr dtype ", rowptr.scalar_type());
    GNNACCEL_CHECK_SAME_DEVICE(*rows, x, "rows", "x");
    GNNACCEL_CHECK_CONTIGUOUS(*rows, "rows");
  }
}

}  // namespace gnnaccel
