// Argument checks of gnnaccel::gat_aggregate (see gat_aggregate.cpp for the contract), shared by its kernels.
#pragma once

#include "csr_checks.h"

namespace gnnaccel {

inline void check_unit_channel_stride(const at::Tensor& t, const char* name) {
  TORCH_CHECK((t.size(1) <= 1 || t.stride(1) == 1) && (t.size(0) <= 1 || t.stride(0) >= t.size(1)), name,
              " must be row-major with contiguous channels (stride(1) == 1, stride(0) >= size(1)), got strides ",
              t.strides());
}

// Returns the number of heads.
inline int64_t check_gat_args(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& xw,
                              const at::Tensor& alpha_src, const at::Tensor& alpha_dst,
                              const std::optional<at::Tensor>& rows, const std::optional<at::Tensor>& head_index) {
  check_csr_features(rowptr, col, xw, std::nullopt, rows, /*x_row_strided_ok=*/true);
  GNNACCEL_CHECK_2D(alpha_src, "alpha_src");
  GNNACCEL_CHECK_2D(alpha_dst, "alpha_dst");
  TORCH_CHECK(xw.scalar_type() == at::kFloat || xw.scalar_type() == at::kDouble ||
                  xw.scalar_type() == at::kBFloat16 || xw.scalar_type() == at::kHalf,
              "gat_aggregate supports float32, float64, bfloat16 and float16 xw, got ", xw.scalar_type());
  TORCH_CHECK(alpha_src.scalar_type() == xw.scalar_type() && alpha_dst.scalar_type() == xw.scalar_type(),
              "alpha_src and alpha_dst must have xw's dtype ", xw.scalar_type(), ", got ", alpha_src.scalar_type(),
              " and ", alpha_dst.scalar_type());
  GNNACCEL_CHECK_SAME_DEVICE(alpha_src, xw, "alpha_src", "xw");
  GNNACCEL_CHECK_SAME_DEVICE(alpha_dst, xw, "alpha_dst", "xw");
  check_unit_channel_stride(alpha_src, "alpha_src");
  check_unit_channel_stride(alpha_dst, "alpha_dst");
  const int64_t heads = alpha_src.size(1);
  TORCH_CHECK(alpha_src.size(0) == xw.size(0), "alpha_src has ", alpha_src.size(0), " rows but xw has ",
              xw.size(0), " (one per source row)");
  TORCH_CHECK(alpha_dst.size(1) == heads, "alpha_dst has ", alpha_dst.size(1), " heads but alpha_src has ", heads);
  const int64_t num_out = rows.has_value() ? rows->numel() : rowptr.numel() - 1;
  TORCH_CHECK(alpha_dst.size(0) == num_out, "alpha_dst has ", alpha_dst.size(0), " rows but there are ", num_out,
              " output rows");
  const int64_t channels = xw.size(1);
  if (head_index.has_value()) {
    GNNACCEL_CHECK_1D(*head_index, "head_index");
    TORCH_CHECK(head_index->scalar_type() == at::kLong, "head_index must be int64, got ", head_index->scalar_type());
    TORCH_CHECK(head_index->numel() == channels, "head_index has ", head_index->numel(), " entries but xw has ",
                channels, " channels");
    GNNACCEL_CHECK_SAME_DEVICE(*head_index, xw, "head_index", "xw");
    GNNACCEL_CHECK_CONTIGUOUS(*head_index, "head_index");
  } else {
    TORCH_CHECK(heads > 0 ? channels % heads == 0 : channels == 0, "xw has ", channels,
                " channels, which is not a multiple of the ", heads, " heads (pass head_index for other layouts)");
  }
  return heads;
}

}  // namespace gnnaccel
