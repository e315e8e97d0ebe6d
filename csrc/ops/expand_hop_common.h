// Size arithmetic of gnnaccel::expand_hop shared by its CPU and CUDA kernels (contract in expand_hop.cpp).
//
// The number of local edges of a block is a sum over the seeds of `fanout` (sampled) or the row's degree
// (exact); a user-given fanout can be anything up to 2^63 - 1, so the sum is computed with overflow checks and
// the result is checked against the index dtype and the memory of the device before anything is allocated: an
// absurd fanout gets an error naming it, never a wrapped size, an allocator failure or a segfault.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

#include "utils.h"

namespace gnnaccel {

// total + count, or an error naming the fanout when the 64-bit count of local edges overflows.
inline int64_t expand_hop_add_edges(int64_t total, int64_t count, int64_t fanout, int64_t num_seeds) {
  int64_t sum = 0;
  TORCH_CHECK(count >= 0 && !__builtin_add_overflow(total, count, &sum), "expand_hop: fanout=", fanout, " over ",
              num_seeds, " seeds needs more than 2^63 sampled edges; use a smaller fanout");
  return sum;
}

// count * fanout (the local edges of `count` sampled rows), with the same error on overflow.
inline int64_t expand_hop_mul_edges(int64_t count, int64_t fanout, int64_t num_seeds) {
  int64_t product = 0;
  TORCH_CHECK(count >= 0 && fanout >= 0 && !__builtin_mul_overflow(count, fanout, &product), "expand_hop: fanout=",
              fanout, " over ", num_seeds, " seeds needs more than 2^63 sampled edges; use a smaller fanout");
  return product;
}

// The block of `total` local edges must be indexable by the index dtype and fit in `memory_bytes` (the
// device's memory: a bigger allocation can never succeed). `bytes_per_edge` covers every buffer that grows with
// the edges (local col, edge ids, their share of the frontier and of the de-duplication).
inline void expand_hop_check_block(int64_t total, int64_t num_seeds, int64_t fanout, int64_t index_max,
                                   int64_t bytes_per_edge, int64_t memory_bytes, const char* device) {
  int64_t entries = 0;
  TORCH_CHECK(!__builtin_add_overflow(total, num_seeds, &entries) && entries <= index_max, "expand_hop: fanout=",
              fanout, " over ", num_seeds, " seeds gives a block of ", total, " edges, more than the index dtype holds (",
              index_max, ")", index_max <= std::numeric_limits<int32_t>::max() ? "; use int64 indices" : "",
              " or a smaller fanout");
  int64_t bytes = 0;
  TORCH_CHECK(!__builtin_mul_overflow(entries, bytes_per_edge, &bytes) && (memory_bytes <= 0 || bytes <= memory_bytes),
              "expand_hop: fanout=", fanout, " over ", num_seeds, " seeds gives a block of ", total,
              " edges, which needs more memory than the ", device, " has available (", memory_bytes,
              " bytes); use a smaller fanout");
}

// Argument checks of both kernels (contract in expand_hop.cpp): 1-D contiguous index tensors of one dtype and
// device, a valid fanout, an optional bool `skip` mask over the seeds. Returns skip's data (nullptr without it).
inline const bool* expand_hop_check_args(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& seeds,
                                         int64_t fanout, const std::optional<at::Tensor>& skip) {
  GNNACCEL_CHECK_1D(rowptr, "rowptr");
  GNNACCEL_CHECK_1D(col, "col");
  GNNACCEL_CHECK_1D(seeds, "seeds");
  GNNACCEL_CHECK_INDEX(rowptr, "rowptr");
  TORCH_CHECK(col.scalar_type() == rowptr.scalar_type(), "col and rowptr must share a dtype, got ", col.scalar_type(),
              " and ", rowptr.scalar_type());
  TORCH_CHECK(seeds.scalar_type() == rowptr.scalar_type(), "seeds dtype ", seeds.scalar_type(),
              " must match rowptr dtype ", rowptr.scalar_type());
  TORCH_CHECK(rowptr.numel() >= 1, "rowptr must have at least one entry (num_nodes + 1)");
  TORCH_CHECK(fanout >= -1, "fanout must be -1 (all neighbours) or >= 0, got ", fanout);
  GNNACCEL_CHECK_SAME_DEVICE(col, rowptr, "col", "rowptr");
  GNNACCEL_CHECK_SAME_DEVICE(seeds, rowptr, "seeds", "rowptr");
  GNNACCEL_CHECK_CONTIGUOUS(rowptr, "rowptr");
  GNNACCEL_CHECK_CONTIGUOUS(col, "col");
  GNNACCEL_CHECK_CONTIGUOUS(seeds, "seeds");
  if (!skip.has_value()) return nullptr;
  GNNACCEL_CHECK_1D(*skip, "skip");
  TORCH_CHECK(skip->scalar_type() == at::kBool, "skip must be a bool mask over the seeds, got ", skip->scalar_type());
  TORCH_CHECK(skip->numel() == seeds.numel(), "skip has ", skip->numel(), " entries but there are ", seeds.numel(),
              " seeds");
  GNNACCEL_CHECK_SAME_DEVICE(*skip, rowptr, "skip", "rowptr");
  GNNACCEL_CHECK_CONTIGUOUS(*skip, "skip");
  return skip->data_ptr<bool>();
}

// Checks of the optional `row_end` (rows [rowptr[v], row_end[v]) of a graph with unpacked rows): 1-D, contiguous,
// rowptr's dtype and device, and no more rows than rowptr has entries. Returns the number of nodes.
inline int64_t expand_hop_check_row_end(const at::Tensor& rowptr, const std::optional<at::Tensor>& row_end) {
  if (!row_end.has_value()) return rowptr.numel() - 1;
  GNNACCEL_CHECK_1D(*row_end, "row_end");
  TORCH_CHECK(row_end->scalar_type() == rowptr.scalar_type(), "row_end dtype ", row_end->scalar_type(),
              " must match rowptr dtype ", rowptr.scalar_type());
  GNNACCEL_CHECK_SAME_DEVICE(*row_end, rowptr, "row_end", "rowptr");
  GNNACCEL_CHECK_CONTIGUOUS(*row_end, "row_end");
  TORCH_CHECK(rowptr.numel() >= row_end->numel(), "with row_end, rowptr (the row starts) needs at least one entry per "
              "row: ", rowptr.numel(), " < ", row_end->numel());
  return row_end->numel();
}

}  // namespace gnnaccel
