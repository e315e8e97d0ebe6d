// CPU kernel of gnnaccel::gat_aggregate (contract: gat_aggregate.cpp).
//
// Rows are split into chunks of roughly equal work (edges + rows), one OpenMP task per chunk. Each row walks
// its edges once: per head a running maximum m and sum s of exp(z - m); when a logit raises the maximum, the
// row's accumulator of that head is rescaled by exp(m_old - m_new) (online softmax). The accumulator is a
// thread-local [D] buffer; the row is written once. Indices are validated on the fly: a bad column, row or
// head index, or a non-monotone rowptr raises after the parallel region instead of reading out of bounds.
// bfloat16 / float16 inputs are read at half width; logits, softmax and accumulator are float32 (acc_type), the
// output is rounded once, and lse is returned in float32 (the backward recomputes the coefficients from it).
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "host_memory.h"
#include "ops/cpu/aggregate_rows.h"
#include "ops/cpu/reduced_float.h"
#include "ops/gat_aggregate_common.h"

namespace gnnaccel {
namespace {

using cpu::kPrefetchDistance;
using cpu::prefetch_bytes;

template <typename scalar_t, typename index_t, bool kHeadIndex>
void gat_rows(const index_t* rowptr, const index_t* col, const index_t* rows, const scalar_t* xw, int64_t sx,
              const scalar_t* a_src, int64_t sa, const scalar_t* a_dst, int64_t sd, const int64_t* head_index,
              int64_t num_out, int64_t num_graph_rows, int64_t num_src, int64_t num_edges, int64_t heads,
              int64_t channels, cpu::acc_type<scalar_t> slope, scalar_t* out, cpu::acc_type<scalar_t>* lse) {
  using acc_t = cpu::acc_type<scalar_t>;
  const int64_t per_head = kHeadIndex || heads == 0 ? 0 : channels / heads;
  std::atomic<int> error{0};  // 1: bad rowptr, 2: bad col, 3: bad rows, 4: bad head_index
  if constexpr (kHeadIndex) {
    for (int64_t k = 0; k < channels; ++k) {
      TORCH_CHECK(head_index[k] >= 0 && head_index[k] < heads, "gat_aggregate: head_index holds ", head_index[k],
                  ", outside [0, ", heads, ")");
    }
  }
  const std::vector<int64_t> bounds = cpu::row_chunk_bounds(rowptr, num_out, rows == nullptr);
  const int64_t num_chunks = static_cast<int64_t>(bounds.size()) - 1;
  const int64_t row_bytes = channels * static_cast<int64_t>(sizeof(scalar_t));

  at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> acc(channels), m(heads), s(heads), p(heads), scale(heads);
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      for (int64_t r = bounds[chunk]; r < bounds[chunk + 1]; ++r) {
        int64_t row = r;
        if (rows != nullptr) {
          row = rows[r];
          if (row < 0 || row >= num_graph_rows) { error = 3; continue; }
        }
        const int64_t begin = rowptr[row], end = rowptr[row + 1];
        if (begin < 0 || end < begin || end > num_edges) { error = 1; continue; }
        const scalar_t* ad = a_dst + r * sd;
        for (int64_t h = 0; h < heads; ++h) {
          m[h] = -std::numeric_limits<acc_t>::infinity();
          s[h] = acc_t(0);
        }
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t e = begin; e < end; ++e) {
          const int64_t pe = e + kPrefetchDistance;
          if (pe < end) {
            const int64_t ahead = col[pe];
            if (ahead >= 0 && ahead < num_src) {
              prefetch_bytes(xw + ahead * sx, row_bytes);
              __builtin_prefetch(a_src + ahead * sa);
            }
          }
          const int64_t j = col[e];
          if (j < 0 || j >= num_src) { error = 2; break; }
          const scalar_t* as = a_src + j * sa;
          for (int64_t h = 0; h < heads; ++h) {
            acc_t z = cpu::to_acc(as[h]) + cpu::to_acc(ad[h]);
            z = z > acc_t(0) ? z : z * slope;
            if (z > m[h]) {  // a new maximum: rescale what the row accumulated for this head
              scale[h] = std::exp(m[h] - z);
              s[h] *= scale[h];
              m[h] = z;
            } else {
              scale[h] = acc_t(1);
            }
            p[h] = std::exp(z - m[h]);
            s[h] += p[h];
          }
          const scalar_t* xr = xw + j * sx;
          if constexpr (kHeadIndex) {
            for (int64_t k = 0; k < channels; ++k) {
              const int64_t h = head_index[k];
              acc[k] = acc[k] * scale[h] + p[h] * cpu::to_acc(xr[k]);
            }
          } else {
            for (int64_t h = 0; h < heads; ++h) {
              acc_t* a = acc.data() + h * per_head;
              const scalar_t* x = xr + h * per_head;
              const acc_t ph = p[h];
              if (scale[h] != acc_t(1)) {
                const acc_t sc = scale[h];
#pragma omp simd
                for (int64_t c = 0; c < per_head; ++c) a[c] = a[c] * sc + ph * cpu::to_acc(x[c]);
              } else {
                cpu::axpy<false>(a, x, ph, per_head);
              }
            }
          }
        }
        scalar_t* o = out + r * channels;
        for (int64_t h = 0; h < heads; ++h) {
          const bool any = end > begin;
          lse[r * heads + h] = any ? m[h] + std::log(s[h]) : acc_t(0);
          scale[h] = any ? acc_t(1) / s[h] : acc_t(0);
        }
        if constexpr (kHeadIndex) {
          for (int64_t k = 0; k < channels; ++k) o[k] = static_cast<scalar_t>(acc[k] * scale[head_index[k]]);
        } else {
          for (int64_t h = 0; h < heads; ++h) {
            const acc_t inv = scale[h];
#pragma omp simd
            for (int64_t c = 0; c < per_head; ++c) o[h * per_head + c] = static_cast<scalar_t>(acc[h * per_head + c] * inv);
          }
        }
      }
    }
  });
  const int err = error.load();
  TORCH_CHECK(err != 1, "gat_aggregate: rowptr must start at 0, be non-decreasing and end at col.numel()");
  TORCH_CHECK(err != 2, "gat_aggregate: col holds an index outside [0, xw.size(0)) = [0, ", num_src, ")");
  TORCH_CHECK(err != 3, "gat_aggregate: rows holds an index outside [0, rowptr.numel() - 1) = [0, ", num_graph_rows, ")");
}

std::tuple<at::Tensor, at::Tensor> gat_aggregate_cpu(const at::Tensor& rowptr, const at::Tensor& col,
                                                     const at::Tensor& xw, const at::Tensor& alpha_src,
                                                     const at::Tensor& alpha_dst, const std::optional<at::Tensor>& rows,
                                                     const std::optional<at::Tensor>& head_index,
                                                     double negative_slope) {
  const int64_t heads = check_gat_args(rowptr, col, xw, alpha_src, alpha_dst, rows, head_index);
  const int64_t num_graph_rows = rowptr.numel() - 1;
  const int64_t num_out = rows.has_value() ? rows->numel() : num_graph_rows;
  const int64_t channels = xw.size(1);
  at::Tensor out = empty_host_output({num_out, channels}, xw.options());
  at::Tensor lse = at::empty({num_out, heads}, xw.options().dtype(at::toOpMathType(xw.scalar_type())));
  if (num_out == 0 || heads == 0) return {out, lse};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, xw.scalar_type(), "gat_aggregate_cpu", [&] {
    using acc_t = cpu::acc_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gat_aggregate_cpu_index", [&] {
      const index_t* rp = rowptr.data_ptr<index_t>();
      TORCH_CHECK(rp[0] == 0 && int64_t(rp[num_graph_rows]) == col.numel(),
                  "gat_aggregate: rowptr must start at 0 and end at col.numel() = ", col.numel());
      const index_t* rw = rows.has_value() ? rows->data_ptr<index_t>() : nullptr;
      auto run = [&](auto head_tag) {
        constexpr bool kHead = decltype(head_tag)::value;
        gat_rows<scalar_t, index_t, kHead>(
            rp, col.data_ptr<index_t>(), rw, xw.data_ptr<scalar_t>(), xw.size(0) > 1 ? xw.stride(0) : channels,
            alpha_src.data_ptr<scalar_t>(), alpha_src.size(0) > 1 ? alpha_src.stride(0) : heads,
            alpha_dst.data_ptr<scalar_t>(), alpha_dst.size(0) > 1 ? alpha_dst.stride(0) : heads,
            kHead ? head_index->data_ptr<int64_t>() : nullptr, num_out, num_graph_rows, xw.size(0), col.numel(),
            heads, channels, static_cast<acc_t>(negative_slope), out.data_ptr<scalar_t>(),
            lse.data_ptr<acc_t>());
      };
      if (head_index.has_value()) run(std::true_type{});
      else run(std::false_type{});
    });
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("gat_aggregate", &gat_aggregate_cpu); }

}  // namespace gnnaccel
