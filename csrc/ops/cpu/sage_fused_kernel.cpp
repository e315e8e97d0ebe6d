// CPU kernel of gnnaccel::sage_fused. Rows are split into chunks of roughly equal work (edges + rows), one
// OpenMP task per chunk, as in aggregate. Within a chunk, blocks of rows are aggregated (and their root
// features copied) into a thread-local buffer of about 256 KiB, which one BLAS call (single-threaded inside
// the parallel region) multiplies by the stacked weight, writing straight into the output slice. The
// aggregated matrix therefore never goes through main memory. bfloat16 / float16 features are gathered at
// half width and accumulated in float32; the block is then rounded to bfloat16 for a bfloat16 GEMM, or kept in
// float32 for float16 (whose GEMM runs in float32 on a float32 copy of the weight; see cpu::gemm_type).
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "host_memory.h"
#include "ops/cpu/reduced_float.h"
#include "ops/sage_fused_common.h"

namespace gnnaccel {
namespace {

constexpr int64_t kBlockBytes = 256 * 1024;
constexpr int64_t kPrefetchDistance = 4;

// z += w * xr (outside the dispatch lambdas: a #pragma cannot sit inside a macro argument)
template <typename scalar_t>
inline void accumulate_row(cpu::acc_type<scalar_t>* __restrict__ z, const scalar_t* __restrict__ xr,
                           cpu::acc_type<scalar_t> w, int64_t channels) {
  if constexpr (cpu::is_reduced_float<scalar_t>) {
    if (w == 1.0f) cpu::axpy<true>(z, xr, w, channels); else cpu::axpy<false>(z, xr, w, channels);
  } else if (w == scalar_t(1)) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) z[c] += xr[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) z[c] += w * xr[c];
  }
}

at::Tensor sage_fused_cpu(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                          const std::optional<at::Tensor>& edge_weight, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& rows,
                          c10::string_view reduce_name, bool root) {
  check_sage_fused_inputs(rowptr, col, x, edge_weight, weight, bias, rows, reduce_name, root);
  TORCH_CHECK(cpu::is_cpu_feature_dtype(x.scalar_type()),
              "sage_fused on CPU supports float32, float64, bfloat16 and float16 x, got ", x.scalar_type());
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  const int64_t channels = x.size(1);
  const int64_t width = channels * (root ? 2 : 1);
  const int64_t out_channels = weight.size(1);
  const int64_t num_graph_rows = rowptr.numel() - 1;
  const int64_t num_out = rows.has_value() ? rows->numel() : num_graph_rows;
  const int64_t num_src = x.size(0);
  const int64_t num_edges = col.numel();
  if (root) TORCH_CHECK(num_src >= num_graph_rows, "with root=True x needs a row for every graph row (", num_graph_rows,
                        "), got ", num_src);
  auto out = empty_host_output({num_out, out_channels}, x.options());
  if (num_out == 0 || out_channels == 0) return out;
  if (width == 0) {
    if (bias.has_value()) out.copy_(bias->unsqueeze(0).expand_as(out)); else out.zero_();
    return out;
  }
  // Detached: the nested out= BLAS calls (also on OpenMP worker threads, which do not inherit dispatch TLS)
  // must not see tensors that require grad.
  // float16: the GEMM runs in float32 (cpu::gemm_type) on widened copies of the weight and bias.
  const at::ScalarType gemm_dtype = cpu::gemm_dtype(x.scalar_type());
  const at::Tensor w = weight.detach().to(gemm_dtype).contiguous();
  const std::optional<at::Tensor> bias_d =
      bias.has_value() ? std::optional<at::Tensor>(bias->detach().to(gemm_dtype)) : std::nullopt;
  std::atomic<int> error{0};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "sage_fused_cpu", [&] {
    using acc_t = cpu::acc_type<scalar_t>;
    using gemm_t = cpu::gemm_type<scalar_t>;
    constexpr bool kReduced = cpu::is_reduced_float<scalar_t>;
    constexpr bool kWidenOut = !std::is_same_v<gemm_t, scalar_t>;  // float16: float32 GEMM, rounded after
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "sage_fused_cpu_index", [&] {
      const index_t* rp = rowptr.data_ptr<index_t>();
      const index_t* cl = col.data_ptr<index_t>();
      const index_t* rw = rows.has_value() ? rows->data_ptr<index_t>() : nullptr;
      const scalar_t* ew = edge_weight.has_value() ? edge_weight->data_ptr<scalar_t>() : nullptr;
      const scalar_t* xp = x.data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      TORCH_CHECK(rp[0] == 0 && int64_t(rp[num_graph_rows]) == num_edges,
                  "sage_fused: rowptr must start at 0 and end at col.numel() = ", num_edges);
      const int64_t block = std::clamp<int64_t>(kBlockBytes / int64_t(sizeof(gemm_t) * width), 8, 512);

      // Chunk bounds by cumulative work (edges + rows) for the full graph; equal row counts for a subset.
      const int64_t num_threads = at::get_num_threads();
      const int64_t num_chunks = std::max<int64_t>(1, std::min<int64_t>((num_out + block - 1) / block, num_threads * 8));
      std::vector<int64_t> bounds(num_chunks + 1, num_out);
      bounds[0] = 0;
      if (rw == nullptr) {
        const int64_t total = int64_t(rp[num_out]) + num_out;
        int64_t r = 0;
        for (int64_t c = 1; c < num_chunks; ++c) {
          const int64_t target = total * c / num_chunks;
          while (r < num_out && int64_t(rp[r]) + r < target) ++r;
          bounds[c] = r;
        }
      } else {
        for (int64_t c = 1; c < num_chunks; ++c) bounds[c] = num_out * c / num_chunks;
      }

      const at::ThreadLocalState tls;  // OpenMP workers do not inherit inference mode / dispatch TLS
      at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
        at::ThreadLocalStateGuard tls_guard(tls);
        std::vector<gemm_t> storage(block * width);
        std::vector<acc_t> acc_row(kReduced ? channels : 0);  // a half-width row's float32 accumulator
        std::vector<float> widened(kWidenOut ? block * out_channels : 0);  // float16: the float32 GEMM result
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
          for (int64_t begin = bounds[chunk]; begin < bounds[chunk + 1]; begin += block) {
            const int64_t end = std::min(bounds[chunk + 1], begin + block);
            for (int64_t r = begin; r < end; ++r) {
              gemm_t* zrow = storage.data() + (r - begin) * width;
              // float32 / float64 accumulate straight into the block (gemm_t == acc_t there)
              acc_t* z = kReduced ? acc_row.data() : reinterpret_cast<acc_t*>(zrow);
              std::fill(z, z + channels, acc_t(0));
              int64_t row = r;
              if (rw != nullptr) {
                row = rw[r];
                if (row < 0 || row >= num_graph_rows) { error = 3; continue; }
              }
              const int64_t e0 = rp[row], e1 = rp[row + 1];
              if (e0 < 0 || e1 < e0 || e1 > num_edges) { error = 1; continue; }
              for (int64_t e = e0; e < e1; ++e) {
                if (e + kPrefetchDistance < e1) {
                  const int64_t ahead = cl[e + kPrefetchDistance];
                  if (ahead >= 0 && ahead < num_src) {
                    const char* p = reinterpret_cast<const char*>(xp + ahead * channels);
                    for (int64_t b = 0; b < channels * int64_t(sizeof(scalar_t)); b += 64) __builtin_prefetch(p + b);
                  }
                }
                const int64_t j = cl[e];
                if (j < 0 || j >= num_src) { error = 2; break; }
                accumulate_row(z, xp + j * channels, ew != nullptr ? cpu::to_acc(ew[e]) : acc_t(1), channels);
              }
              if (reduce == Reduce::kMean && e1 > e0) {
                const acc_t inv = acc_t(1) / acc_t(e1 - e0);
                for (int64_t c = 0; c < channels; ++c) z[c] *= inv;
              }
              if constexpr (kReduced) cpu::convert_row(zrow, z, channels);
              if (root) cpu::convert_row(zrow + channels, xp + row * channels, channels);
            }
            at::Tensor buf = at::from_blob(storage.data(), {end - begin, width}, x.options().dtype(gemm_dtype));
            at::Tensor dst = kWidenOut ? at::from_blob(widened.data(), {end - begin, out_channels},
                                                       x.options().dtype(at::kFloat))
                                       : out.narrow(0, begin, end - begin);
            if (bias_d.has_value()) at::addmm_out(dst, *bias_d, buf, w); else at::mm_out(dst, buf, w);
            if constexpr (kWidenOut) {
              cpu::convert_row(op + begin * out_channels, widened.data(), (end - begin) * out_channels);
            }
          }
        }
      });
    });
  });
  const int err = error.load();
  TORCH_CHECK(err != 1, "sage_fused: rowptr must start at 0, be non-decreasing and end at col.numel()");
  TORCH_CHECK(err != 2, "sage_fused: col holds an index outside [0, x.size(0)) = [0, ", num_src, ")");
  TORCH_CHECK(err != 3, "sage_fused: rows holds an index outside [0, rowptr.numel() - 1) = [0, ", num_graph_rows, ")");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("sage_fused", &sage_fused_cpu); }

}  // namespace gnnaccel
