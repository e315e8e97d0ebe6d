// Shared argument checks and small helpers for gnnaccel operators.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

namespace gnnaccel {

#define GNNACCEL_CHECK_1D(t, name) TORCH_CHECK((t).dim() == 1, name " must be 1-D, got shape ", (t).sizes())
#define GNNACCEL_CHECK_2D(t, name) TORCH_CHECK((t).dim() == 2, name " must be 2-D, got shape ", (t).sizes())
#define GNNACCEL_CHECK_CONTIGUOUS(t, name) TORCH_CHECK((t).is_contiguous(), name " must be contiguous")
#define GNNACCEL_CHECK_INDEX(t, name)                                                                \
  TORCH_CHECK((t).scalar_type() == at::kLong || (t).scalar_type() == at::kInt,                     \
              name " must be int32 or int64, got ", (t).scalar_type())
#define GNNACCEL_CHECK_SAME_DEVICE(a, b, name_a, name_b)                                             \
  TORCH_CHECK((a).device() == (b).device(), name_a " is on ", (a).device(), " but " name_b " is on ", \
              (b).device())

enum class Reduce { kSum, kMean, kMax, kMin };

inline Reduce parse_reduce(const std::string& reduce) {
  if (reduce == "sum" || reduce == "add") return Reduce::kSum;
  if (reduce == "mean") return Reduce::kMean;
  if (reduce == "max") return Reduce::kMax;
  if (reduce == "min") return Reduce::kMin;
  TORCH_CHECK(false, "reduce must be one of 'sum', 'mean', 'max', 'min', got '", reduce, "'");
}

inline bool reduce_has_arg(Reduce r) { return r == Reduce::kMax || r == Reduce::kMin; }

}  // namespace gnnaccel
