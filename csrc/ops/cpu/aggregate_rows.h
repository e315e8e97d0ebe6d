// The CPU row loop of gnnaccel::aggregate, shared with the fused operators that aggregate rows of a wider
// matrix (sage_projected reads the first `channels` columns of [x W_l || x W_r]) and finish each output row
// with an epilogue (root term, bias) while it is still in registers.
//
// Rows are split into chunks of roughly equal work (edges + rows), one OpenMP task per chunk, so that a
// power-law graph does not leave one thread with all the heavy rows. Each row accumulates into a small
// thread-local buffer (init / update / write, as a templated reducer) and is written once. Indices are
// validated on the fly: a bad column or a non-monotone rowptr raises after the parallel region instead of
// reading out of bounds.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "ops/cpu/reduced_float.h"
#include "utils.h"

namespace gnnaccel {
namespace cpu {

// Adds nothing: plain aggregation.
struct NoEpilogue {
  static constexpr bool kActive = false;
  template <typename scalar_t>
  scalar_t operator()(int64_t, int64_t) const { return scalar_t(0); }
};


template <typename acc_t, Reduce R>
struct Reducer {
  static inline acc_t init() {
    if constexpr (R == Reduce::kMax) return -std::numeric_limits<acc_t>::infinity();
    if constexpr (R == Reduce::kMin) return std::numeric_limits<acc_t>::infinity();
    return acc_t(0);
  }
  static inline acc_t write(acc_t acc, int64_t count) {
    if (count == 0) return acc_t(0);
    if constexpr (R == Reduce::kMean) return acc / acc_t(count);
    return acc;
  }
};

// Gathers are latency bound: ask for rows a few edges ahead. A tile of 256 bytes is 8 AVX2 registers.
constexpr int64_t kPrefetchDistance = 8;

// Work partition of `num_out` output rows into chunks (at most 16 per thread) for at::parallel_for over chunks:
// over a whole CSR (`whole_graph`: output row r is CSR row r) cut where the cumulative (edges + rows) crosses
// equal shares; over a row subset, equal row counts. Returns num_chunks + 1 bounds, bounds[0] = 0.
template <typename index_t>
inline std::vector<int64_t> row_chunk_bounds(const index_t* rowptr, int64_t num_out, bool whole_graph) {
  const int64_t num_threads = at::get_num_threads();
  const int64_t num_chunks = std::max<int64_t>(1, std::min<int64_t>(num_out, num_threads * 16));
  std::vector<int64_t> bounds(num_chunks + 1, num_out);
  bounds[0] = 0;
  if (whole_graph && num_out > 0) {
    const int64_t total = static_cast<int64_t>(rowptr[num_out]) + num_out;
    int64_t r = 0;
    for (int64_t c = 1; c < num_chunks; ++c) {
      const int64_t target = total * c / num_chunks;
      while (r < num_out && static_cast<int64_t>(rowptr[r]) + r < target) ++r;
      bounds[c] = r;
    }
  } else {
    for (int64_t c = 1; c < num_chunks; ++c) bounds[c] = num_out * c / num_chunks;
  }
  return bounds;
}

inline void prefetch_bytes(const void* ptr, int64_t bytes) {
  const char* p = static_cast<const char*>(ptr);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
}

// x is read as rows of `x_stride` elements of which the first `channels` are aggregated. The epilogue is
// called as epilogue<acc_t>(r, channel) -> value added to the reduced entry of output row r (after mean), in the
// accumulation type; the sum is rounded to scalar_t once. bfloat16 / float16 rows are read at half width and
// accumulated in float32 (acc_type); float32 accumulates in float32 as torch.sparse.mm does, float64 in float64.
template <typename scalar_t, typename index_t, Reduce R, bool kWeighted, bool kArg, typename Epilogue = NoEpilogue>
void aggregate_rows(const index_t* rowptr, const index_t* col, const scalar_t* x, const scalar_t* w,
                    const index_t* rows, int64_t num_out, int64_t num_graph_rows, int64_t num_src,
                    int64_t num_edges, int64_t channels, int64_t x_stride, scalar_t* out, int64_t* arg,
                    const Epilogue& epilogue = Epilogue(), const char* op_name = "aggregate") {
  using acc_t = acc_type<scalar_t>;
  constexpr bool kReduced = is_reduced_float<scalar_t>;
  // Tiles in channels: float32 / float64 256 and 64 bytes; bfloat16 / float16 128 and 64 channels (256 and 128
  // bytes: a 64-channel half-width row in one pass instead of two passes over the row's edges).
  constexpr int64_t kTile = 256 / sizeof(scalar_t);
  constexpr int64_t kSmallTile = kReduced ? 64 : 64 / sizeof(scalar_t);
  constexpr bool kTiled = (R == Reduce::kSum || R == Reduce::kMean) && !kArg;
  // What a row's first tile pass reads of each source row, which the cross-row prefetch asks for; 0 when the
  // generic pass is a row's first (and only) pass.
  int64_t first_tile_bytes = 0;
  if (kTiled && channels >= kTile) first_tile_bytes = kTile * sizeof(scalar_t);
  else if (kTiled && channels >= kSmallTile && channels % kSmallTile == 0) first_tile_bytes = kSmallTile * sizeof(scalar_t);
  std::atomic<int> error{0};  // 1: bad rowptr, 2: bad col, 3: bad rows

  const std::vector<int64_t> bounds = row_chunk_bounds(rowptr, num_out, rows == nullptr);
  const int64_t num_chunks = static_cast<int64_t>(bounds.size()) - 1;

  at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> acc(channels);
    std::vector<int64_t> best(kArg ? channels : 0);
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      // Over the whole graph the next row's edges follow this row's in col: the last tile pass of a row can
      // prefetch them, so short rows (degree < prefetch distance) do not start every row with cold misses.
      const int64_t next_rows_edge_end =
          rows == nullptr ? std::clamp<int64_t>(rowptr[bounds[chunk + 1]], 0, num_edges) : 0;
      for (int64_t r = bounds[chunk]; r < bounds[chunk + 1]; ++r) {
        int64_t row = r;
        if (rows != nullptr) {
          row = rows[r];
          if (row < 0 || row >= num_graph_rows) { error = 3; continue; }
        }
        const int64_t begin = rowptr[row], end = rowptr[row + 1];
        scalar_t* out_row = out + r * channels;
        if (begin < 0 || end < begin || end > num_edges) {
          error = 1;
          continue;
        }
        int64_t c_done = 0;
        if constexpr (kTiled) {
          // Full tiles accumulate in registers: 256-byte tiles, then 64-byte ones (a 16-channel float layer,
          // the output layer of most models); the remainder takes the generic path below.
          auto tile_pass = [&](auto width_tag) {
            constexpr int64_t kW = decltype(width_tag)::value;
            acc_t tile[kW];
            for (int64_t k = 0; k < kW; ++k) tile[k] = acc_t(0);
            const bool last_pass = c_done + kW == channels;
            for (int64_t e = begin; e < end; ++e) {
              const int64_t pe = e + kPrefetchDistance;
              if (pe < end) {
                const int64_t ahead = col[pe];
                if (ahead >= 0 && ahead < num_src) prefetch_bytes(x + ahead * x_stride + c_done, kW * sizeof(scalar_t));
              } else if (last_pass && pe < next_rows_edge_end) {
                const int64_t ahead = col[pe];  // a later row's edge: its first tile
                if (ahead >= 0 && ahead < num_src) prefetch_bytes(x + ahead * x_stride, first_tile_bytes);
              }
              const int64_t j = col[e];
              if (j < 0 || j >= num_src) { error = 2; break; }
              const scalar_t* xr = x + j * x_stride + c_done;
              const acc_t we = kWeighted ? to_acc(w[e]) : acc_t(1);
              if constexpr (kReduced) {
                axpy<!kWeighted>(tile, xr, we, kW);
              } else {
#pragma omp simd
                for (int64_t k = 0; k < kW; ++k) tile[k] += kWeighted ? we * xr[k] : xr[k];
              }
            }
            for (int64_t k = 0; k < kW; ++k) {
              acc_t v = Reducer<acc_t, R>::write(tile[k], end - begin);
              if constexpr (Epilogue::kActive) v += epilogue.template operator()<acc_t>(r, c_done + k);
              out_row[c_done + k] = static_cast<scalar_t>(v);
            }
            c_done += kW;
          };
          while (c_done + kTile <= channels) tile_pass(std::integral_constant<int64_t, kTile>{});
          // Small tiles only where they cover the rest: a tile pass plus a remainder pass would read the row's
          // edges once more than the generic pass alone.
          if ((channels - c_done) % kSmallTile == 0) {
            while (c_done < channels) tile_pass(std::integral_constant<int64_t, kSmallTile>{});
          }
          if (c_done == channels) continue;
        }
        for (int64_t c = c_done; c < channels; ++c) acc[c] = Reducer<acc_t, R>::init();
        if constexpr (kArg) std::fill(best.begin(), best.end(), int64_t(-1));
        for (int64_t e = begin; e < end; ++e) {
          const int64_t pe = e + kPrefetchDistance;
          if (pe < end) {
            const int64_t ahead = col[pe];
            if (ahead >= 0 && ahead < num_src) {
              prefetch_bytes(x + ahead * x_stride + c_done, (channels - c_done) * sizeof(scalar_t));
            }
          } else if (pe < next_rows_edge_end) {
            // A later row's edge (this pass is always a row's last): what that row's first pass reads.
            const int64_t ahead = col[pe];
            if (ahead >= 0 && ahead < num_src) {
              prefetch_bytes(x + ahead * x_stride, first_tile_bytes > 0 ? first_tile_bytes : channels * sizeof(scalar_t));
            }
          }
          const int64_t j = col[e];
          if (j < 0 || j >= num_src) { error = 2; break; }
          const scalar_t* xr = x + j * x_stride;
          if constexpr ((R == Reduce::kSum || R == Reduce::kMean) && kReduced) {
            axpy<!kWeighted>(acc.data() + c_done, xr + c_done, kWeighted ? to_acc(w[e]) : acc_t(1),
                             channels - c_done);
          } else if constexpr (R == Reduce::kSum || R == Reduce::kMean) {
            if constexpr (kWeighted) {
              const acc_t we = w[e];
#pragma omp simd
              for (int64_t c = c_done; c < channels; ++c) acc[c] += we * xr[c];
            } else {
#pragma omp simd
              for (int64_t c = c_done; c < channels; ++c) acc[c] += xr[c];
            }
          } else {
            // Branch-free select so that the channel loop vectorises; NaN propagates as in torch.max.
            const acc_t we = kWeighted ? to_acc(w[e]) : acc_t(1);
#pragma omp simd
            for (int64_t c = c_done; c < channels; ++c) {
              const acc_t v = kWeighted ? we * to_acc(xr[c]) : to_acc(xr[c]);
              const acc_t a = acc[c];
              const bool better = (R == Reduce::kMax ? v > a : v < a) | ((v != v) & (a == a));
              acc[c] = better ? v : a;
              if constexpr (kArg) best[c] = better ? e : best[c];
            }
          }
        }
        const int64_t count = end - begin;
        for (int64_t c = c_done; c < channels; ++c) {
          acc_t v = Reducer<acc_t, R>::write(acc[c], count);
          if constexpr (Epilogue::kActive) v += epilogue.template operator()<acc_t>(r, c);
          out_row[c] = static_cast<scalar_t>(v);
        }
        if constexpr (kArg) std::copy(best.begin(), best.end(), arg + r * channels);
      }
    }
  });
  const int err = error.load();
  TORCH_CHECK(err != 1, op_name, ": rowptr must start at 0, be non-decreasing and end at col.numel()");
  TORCH_CHECK(err != 2, op_name, ": col holds an index outside [0, x.size(0)) = [0, ", num_src, ")");
  TORCH_CHECK(err != 3, op_name, ": rows holds an index outside [0, rowptr.numel() - 1) = [0, ", num_graph_rows, ")");
}

}  // namespace cpu
}  // namespace gnnaccel
