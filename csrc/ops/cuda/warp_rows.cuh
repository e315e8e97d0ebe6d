// One warp per output row: the mapping the CSR kernels (aggregate, sage_projected) share.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace gnnaccel {

// The calling warp's output row `out_row`, its graph row (rows[out_row], or out_row without a row subset)
// and its lane. False for the warps past the last output row. A graph row out of range trips a device assert.
template <typename index_t>
__device__ __forceinline__ bool warp_output_row(const index_t* __restrict__ rows, int64_t num_out,
                                                int64_t num_graph_rows, int64_t& out_row, int64_t& graph_row,
                                                int& lane) {
  out_row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  lane = threadIdx.x % 32;
  if (out_row >= num_out) return false;
  graph_row = out_row;
  if (rows != nullptr) {
    graph_row = rows[out_row];
    CUDA_KERNEL_ASSERT(graph_row >= 0 && graph_row < num_graph_rows);
  }
  return true;
}

}  // namespace gnnaccel
